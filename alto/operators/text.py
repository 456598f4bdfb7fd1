"""Turn a stream of text pieces (LLM tokens) into a stream of sentences, lines or list items.

Each unit is yielded as soon as it is known to be complete, so a split stage can hand the first
claim downstream while the LLM is still writing the second::

    @alto.stage
    async def claims(answer_prompt: str) -> Split[str]:
        async for sentence in sentences(llm.stream([{"role": "user", "content": answer_prompt}])):
            yield sentence

Laws (checked by property tests):

* Chunking does not matter: for any way of cutting ``text`` into pieces ``p``,
  ``[s async for s in sentences(p)] == split_sentences(text)``; the same holds for lines and
  list items.
* Nothing is lost: with ``strip_markers=False``, the sentences' non-space characters, joined,
  are the text's non-space characters.

A sentence ends at ``.``, ``!``, ``?`` or ``…`` (plus closing quotes or brackets) followed by
white space and then something that can start a sentence; a line break also ends one unless
``line_breaks=False``. Not ends: decimals (``3.14``), known abbreviations (``e.g.``, ``Dr.``),
initials (``J. Smith``), a lower-case next word (``approx. three``), and a list number
(``1. Red``). Deciding needs the first character of the next sentence, so a sentence is yielded
when that character arrives (or the stream ends).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from contextlib import AsyncExitStack
from typing import Protocol

__all__ = [
    "ABBREVIATIONS",
    "LineSplitter",
    "ListItemSplitter",
    "SentenceSplitter",
    "lines",
    "list_items",
    "sentences",
    "split_lines",
    "split_list_items",
    "split_sentences",
    "strip_marker",
]

_ABBREVIATIONS = (
    "e.g i.e cf vs viz approx ca resp al "  # "al" as in "et al."
    "mr mrs ms dr prof sr jr st mt gen col lt sgt "
    "fig figs eq eqs no nos vol pp p ch sec ref refs "
    "jan feb mar apr jun jul aug sep sept oct nov dec"
)
ABBREVIATIONS = frozenset(_ABBREVIATIONS.split())
"""Words after which a period does not end a sentence (lower case, without the final dot)."""

_TERMINATORS = ".!?…"
_CLOSERS = "\"')]}»”’"
_OPENERS = "\"'([{«“‘"
_MARKER = re.compile(r"^\s*(?:[-*+•‣◦▪–]|\d{1,3}[.)]|[a-z][.)]|\((?:\d{1,3}|[a-z])\))\s+")
_DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")  # U.S, e.g, Ph.D (the last dot excluded)


def strip_marker(text: str) -> str:
    """``text`` without a leading list marker and surrounding white space.

    The markers: ``-``, ``*``, ``•``, ``1.``, ``2)``, ``a.``, ``(iv)``-style.
    """
    return _MARKER.sub("", text, count=1).strip()


def _is_marker(text: str) -> bool:
    return _MARKER.match(text) is not None


class _Splitter(Protocol):
    def feed(self, piece: str) -> list[str]: ...

    def flush(self) -> list[str]: ...


class SentenceSplitter:
    """Incremental sentence splitter: :meth:`feed` pieces, get the sentences they complete.

    Args:
        line_breaks: a line break ends a sentence (right for LLM output, which wraps only at
            paragraph or list boundaries); pass False for hard-wrapped text.
        strip_markers: drop a list marker (``-``, ``1.``) at the start of a sentence.
        abbreviations: words (lower case, no final dot) a period after which ends nothing.

    Example:
        >>> s = SentenceSplitter()
        >>> s.feed("Pi is 3.14, e.g. roughly. It is")
        ['Pi is 3.14, e.g. roughly.']
        >>> s.flush()
        ['It is']
    """

    def __init__(
        self,
        *,
        line_breaks: bool = True,
        strip_markers: bool = True,
        abbreviations: Iterable[str] = ABBREVIATIONS,
    ) -> None:
        self._line_breaks = line_breaks
        self._strip_markers = strip_markers
        self._abbreviations = frozenset(a.lower().rstrip(".") for a in abbreviations)
        self._buf = ""
        self._pos = 0  # every candidate boundary before this index was rejected

    def feed(self, piece: str) -> list[str]:
        """Add a piece of text; return the sentences it completes, in order."""
        self._buf += piece
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """End of text: return what is left as the last sentence(s), and reset."""
        out = self._drain(final=True)
        rest = self._clean(self._buf)
        if rest:
            out.append(rest)
        self._buf, self._pos = "", 0
        return out

    def _clean(self, sentence: str) -> str:
        sentence = sentence.strip()
        if self._strip_markers:
            sentence = strip_marker(sentence)
        return sentence

    def _drain(self, *, final: bool) -> list[str]:
        out: list[str] = []
        while True:
            cut = self._next_boundary(final)
            if cut is None:
                return out
            end, resume = cut
            sentence = self._clean(self._buf[:end])
            if sentence:
                out.append(sentence)
            self._buf, self._pos = self._buf[resume:], 0

    def _next_boundary(self, final: bool) -> tuple[int, int] | None:
        """``(end of sentence, start of the rest)`` for the first decided boundary, or None.

        Leaves ``_pos`` at the first undecided candidate, so later pieces resume there.
        """
        buf, n = self._buf, len(self._buf)
        i = self._pos
        while i < n:
            ch = buf[i]
            if ch == "\n" and self._line_breaks:
                return i, i + 1
            if ch not in _TERMINATORS:
                i += 1
                continue
            j = i
            while j < n and buf[j] in _TERMINATORS:
                j += 1
            while j < n and buf[j] in _CLOSERS:
                j += 1
            if j == n:  # the text may go on right after the punctuation ("3." + "14")
                if final:
                    return n, n
                self._pos = i
                return None
            if not buf[j].isspace():  # "3.14", "U.S.A", "?!x"
                i = j
                continue
            k = j
            while k < n and buf[k].isspace():
                k += 1
            if self._line_breaks and "\n" in buf[j:k]:
                return j, k
            if k == n:  # the next sentence's first character decides
                if final:
                    return j, n
                self._pos = i
                return None
            if self._ends_sentence(buf, i, j, buf[k]):
                return j, k
            i = k
        self._pos = n
        return None

    def _ends_sentence(self, buf: str, i: int, j: int, nxt: str) -> bool:
        if nxt.islower():
            return False
        if buf[i:j].rstrip(_CLOSERS) != ".":
            return True  # "!", "?", "..." and "?!" end sentences before any non-lower word
        before = buf[:i]
        m = re.search(r"\S+$", before)
        if m is None:
            return True
        word = m.group(0).lstrip(_OPENERS)
        lower = word.lower()
        if lower in self._abbreviations or _DOTTED.fullmatch(word):
            return False
        if len(word) == 1 and word.isalpha():  # an initial: "J. Smith"
            return False
        # a number alone at the start is a list marker ("1. Red"), not a sentence
        return not (word.isdigit() and before.strip() == word)


class LineSplitter:
    """Incremental line splitter.

    Yields each non-blank line (stripped) when its line break arrives.

    Args:
        strip_markers: drop a leading list marker from each line.
    """

    def __init__(self, *, strip_markers: bool = False) -> None:
        self._strip_markers = strip_markers
        self._buf = ""

    def feed(self, piece: str) -> list[str]:
        """Add a piece of text; return the lines it completes."""
        self._buf += piece
        if "\n" not in piece:
            return []
        *complete, self._buf = self._buf.split("\n")
        return [line for line in map(self._clean, complete) if line]

    def flush(self) -> list[str]:
        """End of text: return the last line, if not blank, and reset."""
        last, self._buf = self._clean(self._buf), ""
        return [last] if last else []

    def _clean(self, line: str) -> str:
        return strip_marker(line) if self._strip_markers else line.strip()


class ListItemSplitter:
    r"""Incremental list-item splitter for LLM output such as ``"Claims:\n1. A\n2. B"``.

    Every list marker starts an item (marker dropped); an indented unmarked line continues the
    current item; a blank line or an unindented line ends it. Unmarked, unindented lines are
    items too (plain one-per-line output), except headers ending in ``:`` when
    ``skip_headers``. An item is yielded as soon as the next line's first character shows it
    cannot continue.

    Args:
        skip_headers: drop unmarked lines ending with ``:`` ("Here are the claims:").
    """

    def __init__(self, *, skip_headers: bool = True) -> None:
        self._skip_headers = skip_headers
        self._buf = ""
        self._item: str | None = None

    def feed(self, piece: str) -> list[str]:
        """Add a piece of text; return the items it completes."""
        self._buf += piece
        out: list[str] = []
        if "\n" in piece:
            *complete, self._buf = self._buf.split("\n")
            for line in complete:
                self._line(line, out)
        if self._item is not None and self._buf and not self._buf[0].isspace():
            self._emit(out)  # an unindented line follows: the item cannot continue
        return out

    def flush(self) -> list[str]:
        """End of text: return the remaining item(s), and reset."""
        out: list[str] = []
        if self._buf:
            self._line(self._buf, out)
        self._emit(out)
        self._buf = ""
        return out

    def _emit(self, out: list[str]) -> None:
        if self._item:
            out.append(self._item)
        self._item = None

    def _line(self, line: str, out: list[str]) -> None:
        text = line.strip()
        if not text:
            self._emit(out)
        elif _is_marker(line):
            self._emit(out)
            self._item = strip_marker(line)
        elif line[0].isspace() and self._item is not None:
            self._item = f"{self._item} {text}"
        else:
            self._emit(out)
            if not (self._skip_headers and text.endswith(":")):
                self._item = text


async def _split(tokens: AsyncIterable[str], splitter: _Splitter) -> AsyncGenerator[str, None]:
    async with AsyncExitStack() as stack:
        aclose = getattr(tokens, "aclose", None)
        if aclose is not None:  # leaving early stops the producer (and the LLM) at once
            stack.push_async_callback(aclose)
        async for piece in tokens:
            for unit in splitter.feed(piece):
                yield unit
        for unit in splitter.flush():
            yield unit


def sentences(
    tokens: AsyncIterable[str], *, line_breaks: bool = True, strip_markers: bool = True
) -> AsyncGenerator[str, None]:
    """Yield complete sentences from a stream of text pieces, each as soon as it ends.

    Leaving the loop early closes ``tokens`` (stopping the LLM that produces them).

    Args:
        tokens: text pieces, e.g. ``llm.stream(messages)``.
        line_breaks: a line break ends a sentence.
        strip_markers: drop list markers at the start of sentences.

    Example:
        >>> import anyio
        >>> async def pieces():
        ...     for p in ["It rains", ". Take an umb", "rella. Bye"]:
        ...         yield p
        >>> async def main():
        ...     return [s async for s in sentences(pieces())]
        >>> anyio.run(main)
        ['It rains.', 'Take an umbrella.', 'Bye']
    """
    return _split(tokens, SentenceSplitter(line_breaks=line_breaks, strip_markers=strip_markers))


def lines(tokens: AsyncIterable[str], *, strip_markers: bool = False) -> AsyncGenerator[str, None]:
    """Yield each non-blank line (stripped) of a stream of text pieces as its line break arrives.

    Args:
        tokens: text pieces, e.g. ``llm.stream(messages)``.
        strip_markers: drop a leading list marker from each line.
    """
    return _split(tokens, LineSplitter(strip_markers=strip_markers))


def list_items(
    tokens: AsyncIterable[str], *, skip_headers: bool = True
) -> AsyncGenerator[str, None]:
    """Yield the items of a (bulleted or numbered) list from a stream of text pieces.

    Markers are dropped, and each item is yielded as soon as it is complete. See
    :class:`ListItemSplitter` for the rules.

    Args:
        tokens: text pieces, e.g. ``llm.stream(messages)``.
        skip_headers: drop unmarked lines ending with ``:``.
    """
    return _split(tokens, ListItemSplitter(skip_headers=skip_headers))


def _whole(splitter: _Splitter, text: str) -> list[str]:
    return splitter.feed(text) + splitter.flush()


def split_sentences(
    text: str, *, line_breaks: bool = True, strip_markers: bool = True
) -> list[str]:
    """The sentences of a whole text (what :func:`sentences` yields for it).

    Example:
        >>> split_sentences("Dr. Smith paid $3.50. Then he left! Why?")
        ['Dr. Smith paid $3.50.', 'Then he left!', 'Why?']
    """
    splitter = SentenceSplitter(line_breaks=line_breaks, strip_markers=strip_markers)
    return _whole(splitter, text)


def split_lines(text: str, *, strip_markers: bool = False) -> list[str]:
    """The non-blank lines of a whole text, stripped (what :func:`lines` yields for it)."""
    return _whole(LineSplitter(strip_markers=strip_markers), text)


def split_list_items(text: str, *, skip_headers: bool = True) -> list[str]:
    r"""The list items of a whole text (what :func:`list_items` yields for it).

    Example:
        >>> split_list_items("Claims:\n1. Water boils at 100 C.\n2. Ice is\n   cold.")
        ['Water boils at 100 C.', 'Ice is cold.']
    """
    return _whole(ListItemSplitter(skip_headers=skip_headers), text)
