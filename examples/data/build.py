"""Rebuild every shipped corpus file from its Debian source package.

Run from the repository root (standard library only)::

    apt-get install -y python3.11-doc dict-foldoc
    python examples/data/build.py            # rewrite the files next to this script
    python examples/data/build.py --check    # rebuild in a temporary folder and compare

Sources:

- ``dict-foldoc``: the Free On-line Dictionary of Computing in dictd format
  (``/usr/share/dictd/foldoc.dict.dz`` + ``foldoc.index``), GFDL 1.1 or later.
- ``python3.11-doc``: the reStructuredText sources of the Python 3.11 documentation
  (``/usr/share/doc/python3.11/html/_sources``), PSF licence.

Outputs (gzip-compressed JSON lines, byte-for-byte reproducible from the same package versions):

- ``passages.jsonl.gz``: retrieval passages ``{id, title, text, source}`` of about 50-200 words.
- ``questions.jsonl.gz``: single-hop questions ``{id, kind, question, answer, gold_ids}``.
- ``multihop.jsonl.gz``: questions with 2-3 ``subquestions``, each with its own answer and gold
  passage ids.
- ``documents.jsonl.gz``: Python HOWTO documents ``{id, title, source, sections}``.
- ``ingest.jsonl.gz``: whole FOLDOC entries ``{id, title, text, source}`` for an ingest stream.
- ``MANIFEST.json``: package versions, record counts and SHA-256 of each file.

Every question and answer is derived from the text by the rules below; the build asserts that
each gold answer occurs verbatim in each of its gold passages.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
FOLDOC_DICT = Path("/usr/share/dictd/foldoc.dict.dz")
FOLDOC_INDEX = Path("/usr/share/dictd/foldoc.index")
PYDOC_ROOT = Path("/usr/share/doc/python3.11/html/_sources")
PACKAGES = ("dict-foldoc", "python3.11-doc")

DATA_FILES = (
    "passages.jsonl.gz",
    "questions.jsonl.gz",
    "multihop.jsonl.gz",
    "documents.jsonl.gz",
    "ingest.jsonl.gz",
)

# Sizes of what is shipped. Changing one changes the files (and the ids sampled from FOLDOC).
FOLDOC_PASSAGES = 1800  # FOLDOC entries in the passage corpus, before multi-hop additions
FOLDOC_QUESTIONS = 200
GLOSSARY_QUESTIONS = 100
MODULE_QUESTIONS = 100
FAQ_QUESTIONS = 100
MULTIHOP_QUESTIONS = 100
INGEST_DOCUMENTS = 5000
MIN_WORDS, MAX_WORDS = 50, 200  # passage length target
ANSWER_MIN_WORDS, ANSWER_MAX_WORDS = 6, 60
PYDOC_PASSAGE_DIRS = ("tutorial", "faq")
HOWTO_EXCLUDE = ("index", "cporting", "clinic", "logging-cookbook")  # index page, stub, two giants


# --------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------

_ABBREVIATIONS = frozenset(
    [
        "e.g",
        "i.e",
        "etc",
        "cf",
        "vs",
        "al",
        "approx",
        "esp",
        "fig",
        "no",
        "nos",
        "inc",
        "ltd",
        "co",
        "corp",
        "dr",
        "mr",
        "mrs",
        "ms",
        "prof",
        "st",
        "jr",
        "sr",
        "vol",
        "ed",
        "eds",
        "rev",
        "dept",
        "univ",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    ]
)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[A-Z0-9])")


def word_count(text: str) -> int:
    """Number of whitespace-separated words in ``text``."""
    return len(text.split())


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences, keeping abbreviations such as "e.g." inside a sentence.

    The pieces are substrings of ``text`` joined back by single spaces, so every sentence occurs
    verbatim in ``text`` once whitespace is normalized.
    """
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        candidate = text[start : match.start()].rstrip()
        last = candidate.rsplit(None, 1)[-1] if candidate.split() else ""
        stem = last.strip(".!?\"'()[]").lower()
        if last.endswith(".") and (
            stem in _ABBREVIATIONS
            or (len(stem) == 1 and stem.isalpha())
            or re.fullmatch(r"(\w\.)+\w?", stem)
        ):
            continue
        end = match.start() + len(match.group(0).rstrip())
        pieces.append(text[start:end].strip())
        start = match.end()
    tail = text[start:].strip()
    if tail:
        pieces.append(tail)
    return pieces


def lead_answer(text: str) -> str | None:
    """The shortest run of leading sentences with at least ``ANSWER_MIN_WORDS`` words.

    Returns None when that run is longer than ``ANSWER_MAX_WORDS`` words or does not end like a
    sentence (such text makes a poor gold answer).
    """
    chosen: list[str] = []
    for sentence in split_sentences(text):
        chosen.append(sentence)
        if word_count(" ".join(chosen)) >= ANSWER_MIN_WORDS:
            break
    answer = " ".join(chosen)
    if not ANSWER_MIN_WORDS <= word_count(answer) <= ANSWER_MAX_WORDS:
        return None
    if not re.search(r"[.!?][\"')\]]*$", answer):
        return None
    return answer


def cut_to_words(text: str, limit: int) -> str:
    """Whole leading sentences of ``text`` with at most ``limit`` words (at least one sentence)."""
    out: list[str] = []
    for sentence in split_sentences(text):
        if out and word_count(" ".join([*out, sentence])) > limit:
            break
        out.append(sentence)
    return " ".join(out)


def chunk_paragraphs(paragraphs: Sequence[str], limit: int = MAX_WORDS) -> list[str]:
    """Group paragraphs into chunks of at most ``limit`` words, splitting long ones by sentence.

    A chunk is closed when the next paragraph would push it past ``limit``; a trailing chunk
    shorter than ``MIN_WORDS`` is merged into the previous one when the sum stays under
    ``limit * 1.25``.
    """
    units: list[str] = []
    for paragraph in paragraphs:
        if word_count(paragraph) <= limit:
            units.append(paragraph)
            continue
        current: list[str] = []
        for sentence in split_sentences(paragraph):
            if current and word_count(" ".join([*current, sentence])) > limit:
                units.append(" ".join(current))
                current = []
            current.append(sentence)
        if current:
            units.append(" ".join(current))
    chunks: list[list[str]] = []
    size = 0
    for unit in units:
        n = word_count(unit)
        if chunks and size + n <= limit:
            chunks[-1].append(unit)
            size += n
        else:
            chunks.append([unit])
            size = n
    texts = ["\n\n".join(chunk) for chunk in chunks]
    if (
        len(texts) >= 2
        and word_count(texts[-1]) < MIN_WORDS
        and word_count(texts[-2]) + word_count(texts[-1]) <= limit * 1.25
    ):
        texts[-2:] = [texts[-2] + "\n\n" + texts[-1]]
    return texts


def slug(text: str) -> str:
    """Lower-case ASCII slug: runs of other characters become one hyphen."""
    value = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return value or "x"


def stable_order(key: str) -> str:
    """A deterministic pseudo-random sort key (SHA-1 of ``key``)."""
    return hashlib.sha1(key.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# FOLDOC (dictd format)
# --------------------------------------------------------------------------------------------

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_FOLDOC_DATE = re.compile(r"^\(\d{4}-\d{2}-\d{2}\)$")
_FOLDOC_TAG = re.compile(r"^((?:\d+\.\s*)?)<([^<>]{1,80})>\s*")
_FOLDOC_REF = re.compile(r"\{([^{}]*)\}")
_CLEAN_HEADWORD = re.compile(r"[A-Za-z][A-Za-z0-9 ./+#'-]{1,40}")
# Sense numbers ("1. "), pronunciations ("/gif/, occasionally /jif/") and asides ("(OS)") that
# open a definition.
_LEAD_NOISE = re.compile(
    r"^(?:\d+\.\s+|(?:/[^/\s][^/]{0,60}/|\([^()]{0,120}\))[,;]?\s*(?:(?:or|occasionally|and)\s+)?)+"
)

# FOLDOC keeps the Jargon File's profanity, slurs and sexual jokes ("tits on a keyboard", "FOAD",
# "SEX"). An entry whose headword, aliases or text hold one of these words is left out of every
# file, and so is never a passage, a question, a multi-hop link or an ingest document. Each item
# is a regular expression matched as a whole word, case-insensitively.
OFFENSIVE_WORDS = (
    # slurs
    r"nigger\w*",
    r"fag(?:s|gots?)?",
    r"kikes?",
    r"retard(?:ed|s)?",
    r"tranny",
    # profanity
    r"\w*fuck\w*",
    r"(?:bull)?shit\w*",
    r"cunts?",
    r"ass(?:holes?)?",
    r"arse(?:holes?)?",
    r"bastards?",
    r"bitch\w*",
    r"piss(?:ed)?",
    r"\w*wank\w*",
    # sexual
    r"tits",
    r"penis(?:es)?",
    r"\w*porn\w*",
    r"erotic\w*",
    r"orgasm\w*",
    r"masturbat\w*",
    r"\w*dildo\w*",
    r"nud(?:e|ity)",
    r"naked",
    r"strippers?",
    r"hookers?",
    r"condoms?",
    r"cybersex",
    r"sexual (?:intercourse|interaction|nature|habits)",
    r"(?:have|having|had|unsafe|immediate|animal) sex",
    r"sex (?:with|parties)",
)
# "sex" alone is a word of the trade in running text ("byte sex", the 6809's SEX instruction,
# "age and sex"), so on its own it marks only an entry named by it.
_OFFENSIVE = re.compile(r"\b(?:" + "|".join(OFFENSIVE_WORDS) + r")\b", re.IGNORECASE)
_OFFENSIVE_NAME = re.compile(r"\bsex\b", re.IGNORECASE)


def decode_dictd_number(value: str) -> int:
    """Decode a dictd index number (base 64, most significant digit first)."""
    number = 0
    for char in value:
        number = number * 64 + _B64.index(char)
    return number


@dataclass
class FoldocEntry:
    """One FOLDOC entry after cleaning.

    Attributes:
        headword: the entry's name as printed.
        aliases: other names listed under the headword.
        paragraphs: cleaned paragraphs (cross-reference braces removed, domain tags in parens).
        refs: cross-reference targets of the first paragraph, in order of appearance.
    """

    headword: str
    aliases: list[str]
    paragraphs: list[str]
    refs: list[str] = field(default_factory=list)

    @property
    def is_clean(self) -> bool:
        """True when the headword is a plain term that reads well in a question."""
        hw = self.headword
        return bool(_CLEAN_HEADWORD.fullmatch(hw)) and sum(c.isalpha() for c in hw) >= 3

    def body(self) -> str:
        """All paragraphs, blank-line separated."""
        return "\n\n".join(self.paragraphs)

    @property
    def is_offensive(self) -> bool:
        """True when a name or paragraph holds one of ``OFFENSIVE_WORDS``, or a name is "sex"."""
        names = " / ".join([self.headword, *self.aliases])
        return bool(_OFFENSIVE.search(names + "\n\n" + self.body())) or bool(
            _OFFENSIVE_NAME.search(names)
        )


def _foldoc_ref_text(inner: str) -> str:
    inner = " ".join(inner.split())
    if inner.startswith("("):  # a bare link "{(http://...)}"
        return ""
    return re.sub(r"\s*\((?:https?|ftp|mailto|news|gopher|telnet|file)?[:/.][^()]*\)$", "", inner)


def clean_foldoc_paragraph(raw: str) -> tuple[str, list[str]]:
    """Clean one raw FOLDOC paragraph; return the text and its cross-reference targets."""
    text = " ".join(raw.split())
    refs = [ref for ref in (_foldoc_ref_text(m) for m in _FOLDOC_REF.findall(text)) if ref]
    text = _FOLDOC_REF.sub(lambda m: _foldoc_ref_text(m.group(1)), text)
    text = re.sub(r"__(\S(?:.*?\S)?)__", r"\1", text)
    tag = _FOLDOC_TAG.match(text)
    if tag:
        text = f"{tag.group(1)}({tag.group(2).strip()}) " + text[tag.end() :]
    text = re.sub(r"\s+([,.;:])", r"\1", text)
    return " ".join(text.split()), refs


def parse_foldoc(
    dict_path: Path = FOLDOC_DICT, index_path: Path = FOLDOC_INDEX
) -> list[FoldocEntry]:
    """Parse the dictd files into entries, in dictionary order, skipping the preamble."""
    with gzip.open(dict_path, "rb") as fh:
        data = fh.read()
    spans: dict[tuple[int, int], None] = {}
    for line in index_path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or parts[0].startswith("00-database"):
            continue
        spans[(decode_dictd_number(parts[1]), decode_dictd_number(parts[2]))] = None
    entries: list[FoldocEntry] = []
    for offset, length in sorted(spans):
        raw = data[offset : offset + length].decode("utf-8", errors="replace")
        entry = parse_foldoc_entry(raw)
        if entry is not None:
            entries.append(entry)
    return entries


def parse_foldoc_entry(raw: str) -> FoldocEntry | None:
    """Parse one dictd entry: name lines, a blank line, then indented paragraphs."""
    lines = raw.splitlines()
    names: list[str] = []
    while lines and lines[0].strip():
        names.extend(n.strip() for n in lines.pop(0).split("%%%") if n.strip())
    if not names:
        return None
    paragraphs: list[str] = []
    refs: list[str] = []
    # A cross-reference may span a blank line ("{Biography\n\n(http://...)}"): join it first.
    body = re.sub(r"\{[^{}]{0,300}\}", lambda m: " ".join(m.group(0).split()), "\n".join(lines))
    for block in re.split(r"\n\s*\n", body):
        if not block.strip():
            continue
        text, block_refs = clean_foldoc_paragraph(block)
        if not text or _FOLDOC_DATE.match(text):
            continue
        if text.startswith("[") and text.endswith("]"):  # citation or editor's note
            continue
        if not re.search(r"[A-Za-z]{2}", text):
            continue
        if not paragraphs:
            refs = block_refs
        paragraphs.append(text)
    if not paragraphs:
        return None
    return FoldocEntry(headword=names[0], aliases=names[1:], paragraphs=paragraphs, refs=refs)


def foldoc_definition(entry: FoldocEntry) -> tuple[str, str] | None:
    """The passage body (at most ``MAX_WORDS`` words) and the gold answer, or None.

    Entries that are only a pointer to another entry, whose first paragraph is shorter than a
    sentence, or whose passage would have fewer than ``MIN_WORDS`` words are skipped.
    """
    first = entry.paragraphs[0]
    definition = _LEAD_NOISE.sub("", first)
    answer = lead_answer(definition)
    if answer is None or answer not in first:
        return None
    body: list[str] = []
    for paragraph in entry.paragraphs:
        if body and word_count("\n\n".join([*body, paragraph])) > MAX_WORDS:
            break
        body.append(paragraph if body else first)
    text = "\n\n".join(body)
    if word_count(text) > MAX_WORDS:
        text = cut_to_words(text, MAX_WORDS)
    if answer not in text or word_count(text) < MIN_WORDS:
        return None
    return text, answer


# --------------------------------------------------------------------------------------------
# reStructuredText (just enough for the Python documentation)
# --------------------------------------------------------------------------------------------

_ADORNMENT = re.compile(r"([=\-~^*\"#+'`:.])\1{2,}")
_TABLE_BORDER = re.compile(r"[=\-+|\s]{3,}")
_ITEM_START = re.compile(r"([*+\-•]|#\.|\d+\.|\(\d+\))\s+\S")
_OBJECT_DIRECTIVES = frozenset(
    [
        "function",
        "method",
        "class",
        "attribute",
        "data",
        "exception",
        "decorator",
        "decoratormethod",
        "classmethod",
        "staticmethod",
        "abstractmethod",
        "coroutinefunction",
        "coroutinemethod",
        "opcode",
        "cmdoption",
        "option",
        "envvar",
        "describe",
        "pdbcommand",
        "monitoring-event",
    ]
)
_CONTENT_DIRECTIVES = frozenset(
    [
        "note",
        "warning",
        "important",
        "tip",
        "attention",
        "caution",
        "danger",
        "hint",
        "impl-detail",
        "admonition",
        "topic",
        "glossary",
        "only",
        "hlist",
        "rubric",
        "container",
    ]
)


@dataclass
class RstSection:
    """A heading and the paragraphs under it (up to the next heading of any level)."""

    title: str
    level: int
    paragraphs: list[str]


def clean_inline(text: str) -> str:
    """Strip inline reStructuredText markup, keeping the visible text."""

    def role(match: re.Match[str]) -> str:
        name, content = match.group(1), match.group(2)
        target = re.fullmatch(r"(.*?)\s*<[^<>]*>", content, re.DOTALL)
        if target and target.group(1):
            content = target.group(1)
        content = content.lstrip("!")
        if content.startswith("~"):
            content = content[1:].rsplit(".", 1)[-1]
        if name == "pep":
            return f"PEP {content}"
        if name == "rfc":
            return f"RFC {content}"
        return content

    text = re.sub(r":([\w:+.-]+):`([^`]*)`", role, text)
    text = re.sub(r"``(.+?)``", r"\1", text)
    text = re.sub(r"`([^`<]*?)\s*<[^`>]*>`__?", r"\1", text)
    text = re.sub(r"`([^`]+)`__?", r"\1", text)
    text = re.sub(r"`([^`]+)`", r"\1", text)
    text = re.sub(r"\s*\[(?:#[\w-]*|\d+)\]_", "", text)
    text = re.sub(r"\*\*(\S(?:.*?\S)?)\*\*", r"\1", text)
    text = re.sub(r"(?<![\w*\\])\*(\S(?:[^*]*?\S)?)\*(?![\w*])", r"\1", text)
    text = re.sub(r"\|(\w[\w -]*)\|_?", r"\1", text)
    text = text.replace("\\ ", "").replace("\\", "")
    text = re.sub(r"\s+---?\s+", " — ", text)
    return " ".join(text.split())


def _is_adornment(line: str) -> bool:
    return bool(_ADORNMENT.fullmatch(line.strip()))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _heading_at(lines: Sequence[str], i: int) -> bool:
    line = lines[i]
    if not line.strip() or _indent(line) or _is_adornment(line) or i + 1 >= len(lines):
        return False
    under = lines[i + 1].strip()
    return _is_adornment(under) and len(under) >= len(line.strip()) - 2


def _block_end(lines: Sequence[str], start: int, indent: int) -> int:
    """Index of the first non-blank line after ``start`` indented at most ``indent``."""
    j = start + 1
    while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > indent):
        j += 1
    return j


def _dedent(lines: Sequence[str]) -> list[str]:
    widths = [_indent(line) for line in lines if line.strip()]
    cut = min(widths) if widths else 0
    return [line[cut:] for line in lines]


def parse_rst(text: str) -> list[tuple[str, str, str]]:
    """Flatten reStructuredText into ``("heading", title, style)`` and ``("para", text, "")``.

    Code (literal blocks, doctests), tables, comments and most directives are dropped; the
    contents of admonitions and object descriptions (``.. function::`` ...) are kept, the
    latter preceded by the signature.
    """
    lines = text.expandtabs(8).splitlines()
    out: list[tuple[str, str, str]] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            i += 1
            continue
        indent = _indent(line)
        if (
            _is_adornment(stripped)
            and i + 2 < n
            and lines[i + 1].strip()
            and _is_adornment(lines[i + 2])
            and lines[i + 2].strip()[0] == stripped[0]
        ):
            out.append(("heading", clean_inline(lines[i + 1].strip()), "o" + stripped[0]))
            i += 3
            continue
        if _heading_at(lines, i):
            out.append(("heading", clean_inline(stripped), "u" + lines[i + 1].strip()[0]))
            i += 2
            continue
        if _is_adornment(stripped):  # a transition line
            i += 1
            continue
        if stripped.startswith(".. ") or stripped == "..":
            end = _block_end(lines, i, indent)
            directive = re.match(r"\.\.\s+([\w:-]+)::\s*(.*)", stripped)
            if directive:
                out.extend(_directive(directive.group(1), directive.group(2), lines[i + 1 : end]))
            i = end
            continue
        if (
            stripped.startswith(">>>")
            or _TABLE_BORDER.fullmatch(stripped)
            and "--" in stripped
            or (_TABLE_BORDER.fullmatch(stripped) and "==" in stripped)
        ):
            while i < n and lines[i].strip():
                i += 1
            continue
        if re.match(r":[\w ]+:(\s|$)", stripped):  # field list (document metadata)
            i = _block_end(lines, i, indent)
            continue
        para = [stripped]
        in_list = bool(_ITEM_START.match(stripped))
        j = i + 1
        while j < n and lines[j].strip() and not _heading_at(lines, j):
            nxt = lines[j].strip()
            # Inside a list, the next item starts a new paragraph (a continuation line is
            # indented deeper); outside one, a list cannot start without a blank line.
            if nxt.startswith((".. ", ">>>")) or (
                in_list and _ITEM_START.match(nxt) and _indent(lines[j]) <= indent
            ):
                break
            para.append(nxt)
            j += 1
        joined = " ".join(para)
        if joined.endswith("::"):
            joined = joined[:-2].rstrip()
            if joined and not joined.endswith(":") and not para[-1].endswith(" ::"):
                joined += ":"
            k = j
            while k < n and not lines[k].strip():
                k += 1
            if k < n and _indent(lines[k]) > indent:
                j = _block_end(lines, k - 1, indent)
        cleaned = clean_inline(joined)
        if cleaned and re.search(r"[A-Za-z]{2}", cleaned):
            out.append(("para", cleaned, ""))
        i = j
    return out


def _directive(name: str, argument: str, body: Sequence[str]) -> list[tuple[str, str, str]]:
    content = list(body)
    while content and (not content[0].strip() or re.match(r"\s*:[\w-]+:", content[0])):
        content.pop(0)  # directive options
    items: list[tuple[str, str, str]] = []
    if name in _OBJECT_DIRECTIVES:
        signature = clean_inline(argument)
        if signature:
            items.append(("para", signature, ""))
    elif name not in _CONTENT_DIRECTIVES:
        return []
    if name == "rubric":
        return [("para", clean_inline(argument), "")] if argument else []
    items.extend(item for item in parse_rst("\n".join(_dedent(content))) if item[0] == "para")
    return items


def rst_sections(text: str) -> list[RstSection]:
    """Group a parsed document into sections; the first is the document title's section."""
    styles: list[str] = []
    sections: list[RstSection] = []
    for kind, value, style in parse_rst(text):
        if kind == "heading":
            if style not in styles:
                styles.append(style)
            sections.append(RstSection(value, styles.index(style) + 1, []))
        elif sections:
            sections[-1].paragraphs.append(value)
        else:
            sections.append(RstSection("", 0, [value]))
    return sections


# --------------------------------------------------------------------------------------------
# Corpus assembly
# --------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    """Everything that is written to the data folder, as JSON-ready records."""

    passages: list[dict[str, object]] = field(default_factory=list)
    questions: list[dict[str, object]] = field(default_factory=list)
    multihop: list[dict[str, object]] = field(default_factory=list)
    documents: list[dict[str, object]] = field(default_factory=list)
    ingest: list[dict[str, object]] = field(default_factory=list)


def _passage(pid: str, title: str, text: str, source: str) -> dict[str, object]:
    return {"id": pid, "title": title, "text": text, "source": source}


def _unique_ids(names: Iterable[str], prefix: str) -> dict[str, str]:
    """Map each name to ``prefix + slug``; colliding slugs get ``-2``, ``-3`` in name order."""
    out: dict[str, str] = {}
    taken: dict[str, int] = {}
    for name in sorted(set(names)):
        base = prefix + slug(name)
        taken[base] = taken.get(base, 0) + 1
        out[name] = base if taken[base] == 1 else f"{base}-{taken[base]}"
    return out


def build_foldoc(entries: Sequence[FoldocEntry], corpus: Corpus) -> None:
    """Add FOLDOC passages, "What is X?" questions, multi-hop questions and the ingest stream.

    Offensive entries (see ``OFFENSIVE_WORDS``) are dropped first, so no question asks about
    one and no multi-hop question links to one.
    """
    entries = [entry for entry in entries if not entry.is_offensive]
    by_name: dict[str, FoldocEntry] = {}
    for entry in entries:
        for name in [entry.headword, *entry.aliases]:
            by_name.setdefault(name.lower(), entry)
    candidates: dict[str, tuple[FoldocEntry, str, str]] = {}
    for entry in entries:
        if not entry.is_clean or entry.headword.lower() in candidates:
            continue
        definition = foldoc_definition(entry)
        if definition is not None:
            candidates[entry.headword.lower()] = (entry, *definition)
    order = sorted(candidates, key=stable_order)
    chosen = order[:FOLDOC_PASSAGES]
    ids = _unique_ids((candidates[key][0].headword for key in candidates), "foldoc:")

    def pid(key: str) -> str:
        return ids[candidates[key][0].headword]

    def what_is(key: str, term: str | None = None) -> dict[str, object]:
        entry, _, answer = candidates[key]
        return {
            "question": f"What is {term or entry.headword}?",
            "answer": answer,
            "gold_ids": [pid(key)],
        }

    multihop: list[dict[str, object]] = []
    extra: list[str] = []
    for key in chosen:
        if len(multihop) >= MULTIHOP_QUESTIONS:
            break
        entry, text = candidates[key][:2]
        # (target entry, the words that link to it in this definition), at most two
        linked: list[tuple[str, str]] = []
        for ref in entry.refs:
            target = by_name.get(ref.lower())
            if target is None or not target.is_clean or ref not in text:
                continue
            target_key = target.headword.lower()
            if target_key in candidates and target_key != key:
                if all(target_key != k for k, _ in linked):
                    linked.append((target_key, ref))
        linked = linked[:2]
        if not linked:
            continue
        terms = [ref for _, ref in linked]
        if len(terms) == 1:
            question = (
                f'What is {entry.headword}, and what is meant by "{terms[0]}" in its definition?'
            )
        else:
            question = (
                f'What is {entry.headword}, and what are "{terms[0]}" and "{terms[1]}" '
                "in its definition?"
            )
        subs = [what_is(key), *(what_is(k, ref) for k, ref in linked)]
        multihop.append(
            {
                "id": f"mh-{len(multihop) + 1:04d}",
                "kind": "foldoc-multihop",
                "question": question,
                "answer": " ".join(str(s["answer"]) for s in subs),
                "gold_ids": [g for s in subs for g in s["gold_ids"]],  # type: ignore[attr-defined]
                "subquestions": subs,
            }
        )
        extra.extend(k for k, _ in linked if k not in extra)
    in_corpus = set(chosen)
    keys = chosen + [k for k in extra if k not in in_corpus]
    for key in sorted(keys, key=pid):
        entry, text, _ = candidates[key]
        corpus.passages.append(
            _passage(pid(key), entry.headword, f"{entry.headword}: {text}", "foldoc")
        )
    for n, key in enumerate(chosen[:FOLDOC_QUESTIONS], 1):
        corpus.questions.append(
            {"id": f"q-foldoc-{n:04d}", "kind": "foldoc-definition", **what_is(key)}
        )
    corpus.multihop.extend(multihop)

    stream = [e for e in entries if word_count(e.body()) >= 15 and e.is_clean]
    seen: set[str] = set()
    unique = []
    for entry in stream:
        if entry.headword.lower() not in seen:
            seen.add(entry.headword.lower())
            unique.append(entry)
    ingest_ids = _unique_ids((e.headword for e in unique), "foldoc-entry:")
    unique.sort(key=lambda e: stable_order("ingest:" + e.headword))
    for entry in unique[:INGEST_DOCUMENTS]:
        corpus.ingest.append(
            _passage(
                ingest_ids[entry.headword],
                entry.headword,
                f"{entry.headword}: {entry.body()}",
                "foldoc",
            )
        )


def _pydoc_source(path: Path, root: Path) -> tuple[str, str]:
    rel = path.relative_to(root).as_posix().removesuffix(".rst.txt")
    return rel, f"python-3.11-docs/{rel}"


def build_glossary(root: Path, corpus: Corpus) -> None:
    """One passage and (when its lead sentence is usable) one question per glossary term."""
    lines = (root / "glossary.rst.txt").read_text(encoding="utf-8").expandtabs(8).splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(".. glossary::"))
    terms: list[tuple[str, list[str]]] = []
    i = start + 1
    while i < len(lines):
        line = lines[i]
        if line.strip() and _indent(line) == 3:
            end = _block_end(lines, i, 3)
            terms.append((clean_inline(line.strip()), _dedent(lines[i + 1 : end])))
            i = end
        elif line.strip() and _indent(line) == 0:
            break
        else:
            i += 1
    rel, source = _pydoc_source(root / "glossary.rst.txt", root)
    ids = _unique_ids((term for term, _ in terms), f"pydoc:{rel}:")
    asked = 0
    for term, body in terms:
        paragraphs = [p for kind, p, _ in parse_rst("\n".join(body)) if kind == "para"]
        if not paragraphs or not _CLEAN_HEADWORD.fullmatch(term):
            continue
        text = "\n\n".join(paragraphs)
        if word_count(text) > MAX_WORDS:
            text = chunk_paragraphs(paragraphs)[0]
        corpus.passages.append(_passage(ids[term], term, f"{term}: {text}", source))
        answer = lead_answer(paragraphs[0])
        if answer is not None and asked < GLOSSARY_QUESTIONS:
            asked += 1
            corpus.questions.append(
                {
                    "id": f"q-glossary-{asked:04d}",
                    "kind": "python-glossary",
                    "question": f"In Python terminology, what is {term}?",
                    "answer": answer,
                    "gold_ids": [ids[term]],
                }
            )


def build_modules(root: Path, corpus: Corpus) -> None:
    """The introduction of each library module page, and a question from its synopsis."""
    asked = 0
    for path in sorted((root / "library").glob("*.rst.txt")):
        raw = path.read_text(encoding="utf-8")
        module = re.search(
            r"^\.\. module:: *(\S+)\s*\n((?: +:\w+:.*\n| {6,}\S.*\n)*)", raw, re.MULTILINE
        )
        if module is None:
            continue
        name = module.group(1)
        synopsis_match = re.search(r":synopsis:\s*(.*(?:\n {6,}\S.*)*)", module.group(2))
        sections = rst_sections(raw)
        if not sections or not sections[0].paragraphs:
            continue
        title = sections[0].title
        if not title.startswith(name):
            continue
        chunks = chunk_paragraphs(
            [p for p in sections[0].paragraphs if not p.startswith("Source code:")]
        )
        if not chunks:
            continue
        rel, source = _pydoc_source(path, root)
        pid = f"pydoc:{rel}:0000"
        corpus.passages.append(_passage(pid, title, f"{title}\n{chunks[0]}", source))
        if synopsis_match is None or asked >= MODULE_QUESTIONS:
            continue
        synopsis = clean_inline(synopsis_match.group(1)).rstrip(".")
        if word_count(synopsis) < 3:
            continue
        asked += 1
        corpus.questions.append(
            {
                "id": f"q-module-{asked:04d}",
                "kind": "python-module",
                "question": f'Which Python standard library module is summarized as "{synopsis}"?',
                "answer": name,
                "gold_ids": [pid],
            }
        )


def build_pages(root: Path, corpus: Corpus) -> None:
    """Tutorial and FAQ pages chunked by section; FAQ headings that are questions are asked."""
    asked = 0
    for folder in PYDOC_PASSAGE_DIRS:
        for path in sorted((root / folder).glob("*.rst.txt")):
            if path.name == "index.rst.txt":
                continue
            rel, source = _pydoc_source(path, root)
            sections = rst_sections(path.read_text(encoding="utf-8"))
            if not sections:
                continue
            page = sections[0].title
            n = 0
            for section in sections:
                chunks = chunk_paragraphs(section.paragraphs)
                if not chunks or word_count(" ".join(section.paragraphs)) < 20:
                    continue
                title = page if section is sections[0] else f"{page} — {section.title}"
                first_id = f"pydoc:{rel}:{n:04d}"
                for chunk in chunks:
                    corpus.passages.append(
                        _passage(f"pydoc:{rel}:{n:04d}", title, f"{title}\n{chunk}", source)
                    )
                    n += 1
                if folder != "faq" or not section.title.endswith("?") or asked >= FAQ_QUESTIONS:
                    continue
                answer = lead_answer(
                    section.paragraphs[0]
                    if len(section.paragraphs[0].split()) > 3
                    else " ".join(section.paragraphs[:2])
                )
                if answer is None or answer not in chunks[0]:
                    continue
                asked += 1
                corpus.questions.append(
                    {
                        "id": f"q-faq-{asked:04d}",
                        "kind": "python-faq",
                        "question": section.title,
                        "answer": answer,
                        "gold_ids": [first_id],
                    }
                )


def build_documents(root: Path, corpus: Corpus) -> None:
    """Python HOWTOs as long documents with their section structure.

    Every heading is kept, in document order, so the hierarchy can be rebuilt from the levels
    (a section whose text is empty only introduces its subsections).
    """
    for path in sorted((root / "howto").glob("*.rst.txt")):
        rel, source = _pydoc_source(path, root)
        if path.name.removesuffix(".rst.txt") in HOWTO_EXCLUDE:
            continue
        sections = rst_sections(path.read_text(encoding="utf-8"))
        if not sections:
            continue
        corpus.documents.append(
            {
                "id": rel,
                "title": sections[0].title,
                "source": source,
                "sections": [
                    {"title": s.title, "level": s.level, "text": "\n\n".join(s.paragraphs)}
                    for s in sections
                ],
            }
        )


def build_corpus(
    foldoc_dict: Path = FOLDOC_DICT,
    foldoc_index: Path = FOLDOC_INDEX,
    pydoc_root: Path = PYDOC_ROOT,
) -> Corpus:
    """Assemble every record and check the invariants the loaders and tests rely on."""
    corpus = Corpus()
    build_foldoc(parse_foldoc(foldoc_dict, foldoc_index), corpus)
    build_glossary(pydoc_root, corpus)
    build_modules(pydoc_root, corpus)
    build_pages(pydoc_root, corpus)
    build_documents(pydoc_root, corpus)
    check(corpus)
    return corpus


def check(corpus: Corpus) -> None:
    """Raise ValueError when ids repeat or a gold answer is missing from a gold passage."""
    texts: dict[str, str] = {}
    for passage in corpus.passages:
        pid = str(passage["id"])
        if pid in texts:
            msg = f"duplicate passage id {pid!r}"
            raise ValueError(msg)
        texts[pid] = str(passage["text"])
    items: list[dict[str, object]] = list(corpus.questions)
    for question in corpus.multihop:
        items.extend(question["subquestions"])  # type: ignore[arg-type]
    for item in items:
        for gold in item["gold_ids"]:  # type: ignore[attr-defined]
            if gold not in texts:
                msg = f"gold passage {gold!r} of {item['question']!r} is not in the corpus"
                raise ValueError(msg)
            if str(item["answer"]) not in texts[gold]:
                msg = f"answer of {item['question']!r} not found in passage {gold!r}"
                raise ValueError(msg)
    for name in ("questions", "multihop", "ingest"):
        ids = [r["id"] for r in getattr(corpus, name)]
        if len(ids) != len(set(ids)):
            msg = f"duplicate ids in {name}"
            raise ValueError(msg)


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def jsonl_gz_bytes(records: Iterable[dict[str, object]]) -> bytes:
    """Gzip-compressed JSON lines with a fixed header (no name, mtime 0): reproducible bytes."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
        for record in records:
            gz.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
            gz.write(b"\n")
    return buffer.getvalue()


def package_version(package: str) -> str:
    """Installed Debian package version, or "unknown" where dpkg is unavailable."""
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def write(corpus: Corpus, out_dir: Path) -> dict[str, object]:
    """Write the data files and MANIFEST.json into ``out_dir``; return the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, object] = {}
    for name, records in zip(
        DATA_FILES,
        (corpus.passages, corpus.questions, corpus.multihop, corpus.documents, corpus.ingest),
        strict=True,
    ):
        payload = jsonl_gz_bytes(records)
        (out_dir / name).write_bytes(payload)
        files[name] = {"records": len(records), "sha256": hashlib.sha256(payload).hexdigest()}
    manifest: dict[str, object] = {
        "sources": {package: package_version(package) for package in PACKAGES},
        "files": files,
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (out_dir / "MANIFEST.json").write_text(text, encoding="utf-8")
    return manifest


def compare(built: Path, shipped: Path) -> list[str]:
    """Names of the data files that differ between two folders."""
    return [
        name
        for name in (*DATA_FILES, "MANIFEST.json")
        if not (shipped / name).exists()
        or (built / name).read_bytes() != (shipped / name).read_bytes()
    ]


def _missing_sources() -> list[str]:
    return [str(p) for p in (FOLDOC_DICT, FOLDOC_INDEX, PYDOC_ROOT) if not p.exists()]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: here)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="rebuild into a temporary folder and compare with --out",
    )
    args = parser.parse_args(argv)
    missing = _missing_sources()
    if missing:
        print(
            "source files not found: "
            + ", ".join(missing)
            + "\ninstall them with: apt-get install -y "
            + " ".join(PACKAGES),
            file=sys.stderr,
        )
        return 2
    corpus = build_corpus()
    if args.check:
        tmp = Path(tempfile.mkdtemp(prefix="alto-corpus-"))
        try:
            write(corpus, tmp)
            differing = compare(tmp, args.out)
        finally:
            shutil.rmtree(tmp)
        if differing:
            print("differs from the shipped files: " + ", ".join(differing), file=sys.stderr)
            return 1
        print("shipped files are reproducible")
        return 0
    manifest = write(corpus, args.out)
    for name, info in manifest["files"].items():  # type: ignore[union-attr]
        print(f"{name:22} {info['records']:6d} records")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
