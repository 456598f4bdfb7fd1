"""The shipped corpora: sizes, fields, label consistency, and a reproducible build."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from examples import data
from examples.data import build

MANIFEST = json.loads((data.DATA_DIR / "MANIFEST.json").read_text(encoding="utf-8"))


def records(name: str) -> int:
    return int(MANIFEST["files"][name]["records"])


# ------------------------------------------------------------------ sizes and fields


def test_loaders_return_every_shipped_record() -> None:
    assert len(data.passages()) == records("passages.jsonl.gz") >= 2000
    assert len(data.questions()) == records("questions.jsonl.gz") >= 200
    assert len(data.questions(multihop=True)) == records("multihop.jsonl.gz") >= 50
    assert len(data.documents()) == records("documents.jsonl.gz")
    assert 10 <= len(data.documents()) <= 20
    assert len(data.ingest_documents()) == records("ingest.jsonl.gz") >= 1000


def test_files_match_the_manifest_checksums() -> None:
    for name, info in MANIFEST["files"].items():
        digest = hashlib.sha256((data.DATA_DIR / name).read_bytes()).hexdigest()
        assert digest == info["sha256"], f"{name} changed without rebuilding: run build.py"


def test_passages_have_unique_ids_and_the_promised_shape() -> None:
    passages = data.passages()
    assert len({p.id for p in passages}) == len(passages)
    sources = Counter(
        "foldoc" if p.source == "foldoc" else p.source.split("/")[1] for p in passages
    )
    assert set(sources) == {"foldoc", "glossary", "library", "tutorial", "faq"}
    lengths = sorted(len(p.text.split()) for p in passages)
    assert 50 <= lengths[len(lengths) // 2] <= 200, "median passage length"
    assert lengths[-1] <= 260
    in_range = sum(40 <= n <= 220 for n in lengths) / len(lengths)
    assert in_range >= 0.9
    for p in passages:
        assert p.id and p.title and p.text.strip()
        assert p.text.startswith(p.title), "a passage names its subject, so it embeds on its own"
        assert not re.search(r":[\w:]+:`|``", p.text), "reStructuredText roles are removed"
    assert data.passages_by_id()[passages[5].id] == passages[5]


def test_question_kinds_and_fields() -> None:
    questions = data.questions()
    assert Counter(q.kind for q in questions) == {
        "foldoc-definition": 200,
        "python-glossary": 100,
        "python-module": 100,
        "python-faq": 100,
    }
    assert len({q.id for q in questions}) == len(questions)
    for q in questions:
        assert q.question.endswith("?") and q.answer and q.gold_ids and not q.subquestions


def test_gold_passages_exist_and_hold_the_answer() -> None:
    by_id = data.passages_by_id()
    items = list(data.questions())
    for question in data.questions(multihop=True):
        items.extend(question.subquestions)
    for item in items:
        for gold in item.gold_ids:
            assert gold in by_id, f"{item.question!r}: gold passage {gold!r} missing"
            assert item.answer in by_id[gold].text, f"{item.question!r}: answer not in {gold!r}"


def test_answers_are_sentences_not_fragments() -> None:
    by_id = data.passages_by_id()
    for q in data.questions():
        if q.kind == "python-module":
            assert re.fullmatch(r"[\w.]+", q.answer), q.answer  # a module name
            assert by_id[q.gold_ids[0]].title.startswith(q.answer)
        else:
            assert 6 <= len(q.answer.split()) <= 60, q.answer
            assert q.answer[-1] in ".!?\"')]", q.answer


def test_multihop_questions_decompose_into_linked_subquestions() -> None:
    by_id = data.passages_by_id()
    multihop = data.questions(multihop=True)
    assert Counter(len(q.subquestions) for q in multihop).keys() <= {2, 3}
    assert len({q.id for q in multihop}) == len(multihop)
    for q in multihop:
        assert q.kind == "foldoc-multihop"
        assert list(q.gold_ids) == [g for sub in q.subquestions for g in sub.gold_ids]
        assert len(set(q.gold_ids)) == len(q.gold_ids), "each hop has its own passage"
        assert q.answer == " ".join(sub.answer for sub in q.subquestions)
        first = by_id[q.subquestions[0].gold_ids[0]].text.lower()
        for sub in q.subquestions[1:]:
            term = sub.question.removeprefix("What is ").removesuffix("?")
            assert f'"{term}"' in q.question
            assert term.lower() in first, f"{q.id}: the first passage must mention {term!r}"


def test_documents_keep_their_section_hierarchy() -> None:
    for doc in data.documents():
        assert doc.id.startswith("howto/") and doc.source.endswith(doc.id)
        assert doc.sections[0].level == 1 and doc.sections[0].title == doc.title
        assert all(s.level >= 2 for s in doc.sections[1:])
        assert len(doc.sections) >= 5
        assert 500 <= len(doc.text.split()) <= 10_000
        assert not re.search(r":[\w:]+:`|``", doc.text), "reStructuredText roles are removed"
        assert not re.search(r"(^|\n)\.\. \w", doc.text), "directives are removed"
        assert ">>>" not in doc.text, "code samples are removed"


def test_ingest_stream_prefix_and_fields() -> None:
    stream = data.ingest_documents()
    assert data.ingest_documents(25) == stream[:25]
    assert data.ingest_documents(0) == []
    assert len({d.id for d in stream}) == len(stream)
    assert all(d.text.startswith(d.title + ":") and d.source == "foldoc" for d in stream)
    lengths = [len(d.text.split()) for d in stream]
    assert min(lengths) >= 15 and max(lengths) > 10 * min(lengths), "documents vary in size"
    with pytest.raises(ValueError, match="n must be None or >= 0"):
        data.ingest_documents(-1)


def test_no_shipped_text_holds_an_offensive_word() -> None:
    texts = [p.text for p in data.passages()] + [d.text for d in data.ingest_documents()]
    for q in data.questions() + data.questions(multihop=True):
        texts += [q.question, q.answer, *(s.question for s in q.subquestions)]
    offending = [t[:60] for t in texts if build._OFFENSIVE.search(t)]
    assert offending == []
    titles = {p.title.lower() for p in data.passages()}
    assert not titles & {"pastie", "tits on a keyboard", "sex", "foad"}


def test_loaders_return_fresh_lists_of_frozen_records() -> None:
    first = data.passages()
    first.clear()
    assert data.passages()
    with pytest.raises(AttributeError):
        data.questions()[0].answer = "changed"  # type: ignore[misc]


# ------------------------------------------------------------------ the build script


FOLDOC_ENTRY = """\
Broken As Designed
BAD

   <humour> (BAD) A humourous problem description that is a play
   on "{working as designed}", from {IBM}.  A system that is BAD
   fails because of bad design and misfeatures rather than
   because of bugs.

   {Biography

(http://example.org/bio.html)}.

   [{Jargon File}]

   (2020-05-17)
"""


def test_foldoc_entries_are_cleaned_and_their_links_kept() -> None:
    entry = build.parse_foldoc_entry(FOLDOC_ENTRY)
    assert entry is not None
    assert entry.headword == "Broken As Designed" and entry.aliases == ["BAD"]
    assert entry.refs == ["working as designed", "IBM"]
    assert entry.paragraphs == [
        '(humour) (BAD) A humourous problem description that is a play on "working as '
        'designed", from IBM. A system that is BAD fails because of bad design and '
        "misfeatures rather than because of bugs.",
        "Biography.",
    ]
    text, answer = build.foldoc_definition(
        build.FoldocEntry("x", [], [entry.paragraphs[0] + " " + "More words here. " * 12], [])
    ) or ("", "")
    assert answer == (
        'A humourous problem description that is a play on "working as designed", from IBM.'
    )
    assert answer in text


def test_offensive_entries_are_recognised_and_dropped_before_linking() -> None:
    def entry(headword: str, text: str, refs: list[str] | None = None) -> build.FoldocEntry:
        return build.FoldocEntry(headword, [], [text + " More words here." * 16], refs or [])

    pastie = entry("pastie", "An adhesive-backed label; it refers to devices worn by strippers.")
    assert pastie.is_offensive
    assert entry("SEX", "Software EXchange, a jargon pun.").is_offensive
    assert build.FoldocEntry("FOAD", [], ["(chat) Fuck off and die."]).is_offensive
    # words of the trade, names and substrings are not offensive
    for text in (
        "The wrong byte sex, or the 6809's SEX instruction.",
        "A subsidiary of Matsushita, in Massachusetts, founded by a passer-by.",
        "Crossover, as in sexual reproduction, and the class of an assignment.",
    ):
        assert not entry("clean", text).is_offensive, text
    keyboard = entry(
        "keyboard", "An input device; compare pastie and the TrackPoint.", refs=["pastie"]
    )
    corpus = build.Corpus()
    build.build_foldoc([keyboard, pastie], corpus)
    assert [p["title"] for p in corpus.passages] == ["keyboard"]
    assert [d["title"] for d in corpus.ingest] == ["keyboard"]
    assert corpus.multihop == []


def test_sentences_keep_abbreviations_together() -> None:
    text = "It is incomplete (e.g. you typed if). Mr. Smith disagreed. A.B. Jones said so!  Done."
    assert build.split_sentences(text) == [
        "It is incomplete (e.g. you typed if).",
        "Mr. Smith disagreed.",
        "A.B. Jones said so!",
        "Done.",
    ]
    assert build.lead_answer("Yes. The coding style is documented as PEP 8. More.") == (
        "Yes. The coding style is documented as PEP 8."
    )


def test_rst_markup_code_and_directives_are_removed() -> None:
    source = """\
Title
=====

Use :func:`sorted` or :meth:`~list.sort` (see :pep:`8`) and ``key=``::

   >>> sorted([3, 1])
   [1, 3]

.. note::

   A *note* with `a link <https://example.org>`_.

.. index:: single: hidden

Sub
---

Text under sub.
"""
    sections = build.rst_sections(source)
    assert [(s.title, s.level) for s in sections] == [("Title", 1), ("Sub", 2)]
    assert sections[0].paragraphs == [
        "Use sorted or sort (see PEP 8) and key=:",
        "A note with a link.",
    ]
    assert sections[1].paragraphs == ["Text under sub."]


def test_compressed_output_is_byte_reproducible() -> None:
    rows = [{"id": "a", "text": "é"}, {"id": "b", "text": "x"}]
    assert build.jsonl_gz_bytes(rows) == build.jsonl_gz_bytes(rows)
    assert build.jsonl_gz_bytes(rows) != build.jsonl_gz_bytes(rows[::-1])


def _sources_match_manifest() -> bool:
    missing = [
        p for p in (build.FOLDOC_DICT, build.FOLDOC_INDEX, build.PYDOC_ROOT) if not p.exists()
    ]
    if missing:
        return False
    return all(build.package_version(p) == v for p, v in MANIFEST["sources"].items())


@pytest.mark.skipif(
    not _sources_match_manifest(),
    reason="needs the Debian packages python3.11-doc and dict-foldoc at the versions in "
    "MANIFEST.json (apt-get install -y python3.11-doc dict-foldoc)",
)
def test_rebuild_reproduces_the_shipped_files(tmp_path: Path) -> None:
    build.write(build.build_corpus(), tmp_path)
    assert build.compare(tmp_path, data.DATA_DIR) == []
