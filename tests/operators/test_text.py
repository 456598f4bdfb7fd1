"""Sentence / line / list-item splitting of token streams: chunking never changes the result."""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import pairwise

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alto.operators.text import (
    LineSplitter,
    ListItemSplitter,
    SentenceSplitter,
    lines,
    list_items,
    sentences,
    split_lines,
    split_list_items,
    split_sentences,
    strip_marker,
)

# -- sentences: unit cases ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
        ("Pi is 3.14 and e is 2.72. Next.", ["Pi is 3.14 and e is 2.72.", "Next."]),
        (
            "Fruit, e.g. Apples, i.e. red ones. Done.",
            ["Fruit, e.g. Apples, i.e. red ones.", "Done."],
        ),
        ("Dr. Smith met Mr. Jones. They talked.", ["Dr. Smith met Mr. Jones.", "They talked."]),
        ("J. R. R. Tolkien wrote it. Yes.", ["J. R. R. Tolkien wrote it.", "Yes."]),
        ("It costs approx. three euros. Ok.", ["It costs approx. three euros.", "Ok."]),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        ("Wait... What? Really?!", ["Wait...", "What?", "Really?!"]),
        ("1. Red\n2. Blue\n3. Green", ["Red", "Blue", "Green"]),
        ("- Water boils.\n- Ice melts.", ["Water boils.", "Ice melts."]),
        ("Born in 1990. Died in 2050.", ["Born in 1990.", "Died in 2050."]),
        ("Visit www.example.com today. Bye.", ["Visit www.example.com today.", "Bye."]),
        ("Title\n\nFirst paragraph. Second one.", ["Title", "First paragraph.", "Second one."]),
        ("   ", []),
        ("", []),
        ("No end", ["No end"]),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_line_breaks_can_be_ignored_for_wrapped_text() -> None:
    text = "A sentence that\nwraps. Another."
    assert split_sentences(text) == ["A sentence that", "wraps.", "Another."]
    assert split_sentences(text, line_breaks=False) == ["A sentence that\nwraps.", "Another."]


def test_markers_can_be_kept() -> None:
    assert split_sentences("1. Red\n- Blue", strip_markers=False) == ["1. Red", "- Blue"]


def test_sentence_waits_for_the_next_character_before_deciding() -> None:
    s = SentenceSplitter()
    assert s.feed("Pi is 3.") == []  # could be 3.14
    assert s.feed("14. It") == ["Pi is 3.14."]
    assert s.feed(" is e.g. ") == []  # "e.g." is not an end
    assert s.feed("close") == []
    assert s.feed(". Yes") == ["It is e.g. close."]
    assert s.flush() == ["Yes"]
    assert s.flush() == []  # flushing resets


def test_custom_abbreviations() -> None:
    s = SentenceSplitter(abbreviations={"Corp."})
    assert s.feed("Acme Corp. Makes things. Mr. X") == ["Acme Corp. Makes things.", "Mr."]


# -- lines and list items ----------------------------------------------------------------------


def test_lines() -> None:
    text = "first\n\n  second  \n- third\nlast"
    assert split_lines(text) == ["first", "second", "- third", "last"]
    assert split_lines(text, strip_markers=True) == ["first", "second", "third", "last"]
    s = LineSplitter()
    assert s.feed("a") == []
    assert s.feed("b\nc") == ["ab"]
    assert s.flush() == ["c"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Claims:\n1. A is B.\n2. C is D.", ["A is B.", "C is D."]),
        ("- one\n* two\n• three\n+ four", ["one", "two", "three", "four"]),
        ("1) first\n(2) second\na. third\n(b) fourth", ["first", "second", "third", "fourth"]),
        ("1. Long item\n   that wraps\n2. Short", ["Long item that wraps", "Short"]),
        ("plain one\nplain two", ["plain one", "plain two"]),
        ("- a\n\n- b\nTrailing text", ["a", "b", "Trailing text"]),
        ("- nested:\n  - child", ["nested:", "child"]),
    ],
)
def test_split_list_items(text: str, expected: list[str]) -> None:
    assert split_list_items(text) == expected


def test_headers_can_be_kept() -> None:
    assert split_list_items("Claims:\n- a", skip_headers=False) == ["Claims:", "a"]


def test_list_item_is_yielded_when_the_next_line_starts() -> None:
    s = ListItemSplitter()
    assert s.feed("1. Water boils") == []
    assert s.feed(".\n") == []  # the next line could continue it
    assert s.feed("2") == ["Water boils."]
    assert s.feed(". Ice\n   melts") == []
    assert s.flush() == ["Ice melts"]


def test_strip_marker() -> None:
    assert strip_marker("  12. Twelve ") == "Twelve"
    assert strip_marker("-no space") == "-no space"
    assert strip_marker("A. Lincoln") == "A. Lincoln"  # capital letters are not markers


# -- the async helpers -------------------------------------------------------------------------


async def _pieces(parts: list[str]) -> AsyncIterator[str]:
    for p in parts:
        yield p


@pytest.mark.anyio
async def test_sentences_are_yielded_before_the_stream_ends() -> None:
    send, receive = anyio.create_memory_object_stream[str](10)
    got: list[str] = []

    async def consume() -> None:
        async for s in sentences(receive):
            got.append(s)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await send.send("The first claim")
        await send.send(". The sec")
        with anyio.fail_after(5):
            while not got:  # the first sentence arrives while the second is being written
                await anyio.sleep(0.001)
        assert got == ["The first claim."]
        await send.send("ond claim.")
        await send.aclose()
    assert got == ["The first claim.", "The second claim."]


@pytest.mark.anyio
async def test_leaving_early_closes_the_token_stream() -> None:
    closed = anyio.Event()

    async def tokens() -> AsyncIterator[str]:
        try:
            for i in range(1000):
                yield f"Sentence {i}. "
        finally:
            closed.set()

    stream = sentences(tokens())
    async for s in stream:
        assert s == "Sentence 0."
        break
    await stream.aclose()
    assert closed.is_set()


@pytest.mark.anyio
async def test_async_lines_and_items() -> None:
    assert [x async for x in lines(_pieces(["a\nb", "\n", "c"]))] == ["a", "b", "c"]
    items = [x async for x in list_items(_pieces(["Claims:\n1.", " A\n2", ". B"]))]
    assert items == ["A", "B"]


# -- properties --------------------------------------------------------------------------------

_ALPHABET = st.sampled_from(
    list("abcXYZ ") + [". ", "! ", "? ", ".", "\n", "3.14", "e.g. ", "Dr. ", "1. ", "- ", '"', ")"]
)
_TEXT = st.lists(_ALPHABET, max_size=60).map("".join)


def _chunks(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in pairwise(bounds)]


def _feed(
    splitter: SentenceSplitter | LineSplitter | ListItemSplitter, parts: list[str]
) -> list[str]:
    out: list[str] = []
    for p in parts:
        out += splitter.feed(p)
    return out + splitter.flush()


@settings(max_examples=300, deadline=None)
@given(text=_TEXT, cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=20))
def test_rechunking_never_changes_the_sentences(text: str, cuts: list[int]) -> None:
    parts = _chunks(text, cuts)
    assert "".join(parts) == text
    for line_breaks in (True, False):
        whole = split_sentences(text, line_breaks=line_breaks)
        assert _feed(SentenceSplitter(line_breaks=line_breaks), parts) == whole
        assert all(s and s == s.strip() for s in whole)
    assert _feed(LineSplitter(), parts) == split_lines(text)
    assert _feed(ListItemSplitter(), parts) == split_list_items(text)


@settings(max_examples=200, deadline=None)
@given(text=_TEXT)
def test_sentences_lose_nothing(text: str) -> None:
    found = split_sentences(text, strip_markers=False)
    assert "".join("".join(found).split()) == "".join(text.split())


@settings(max_examples=50, deadline=None)
@given(text=_TEXT, cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=10))
def test_async_sentences_match_the_whole_text(text: str, cuts: list[int]) -> None:
    async def run() -> list[str]:
        return [s async for s in sentences(_pieces(_chunks(text, cuts)))]

    assert anyio.run(run) == split_sentences(text)
