"""Dead letters under LLM faults: failed fragments are kept, gathers get the survivors.

With ``dead_letters=[]`` a failed fragment does not fail its root: the failure is kept in the
list (stage, ancestry, the call's inputs, the error) and the fragment's parent is gathered from
its surviving siblings. Every test compares the roots with a plain-Python reference computed
over the fragments that should survive.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import anyio
import pytest
from faultkit import Reply, Request, answer_for, client, fault, scripted

import alto
from alto import Gather, Split, StageError
from alto.operators.llm import (
    LLMConnectionError,
    LLMProtocolError,
    LLMServerError,
    LLMTimeoutError,
)

pytestmark = pytest.mark.anyio

HANG = 30


async def faulty(req: Request, reply: Reply, n: int) -> None:
    """A claim's wording picks its fault; other claims get their healthy answer."""
    p = req.prompt
    if "crash" in p:
        await reply.json(500, {"error": "model crashed"})
    elif "hang" in p:
        await reply.sse_head()
        await reply.stall()
    elif "garble" in p:
        await reply.sse_head()
        await reply.raw(b"data: [not json\n\n")
    elif "cut" in p:
        await reply.sse_head()
        await reply.delta("FIRST")
        await reply.delta(" SECOND")
        await reply.reset()
    else:
        await reply.answer(req, answer_for(p))


CAUSES = {"crash": LLMServerError, "hang": LLMTimeoutError, "garble": LLMProtocolError}


@fault("some fragments' LLM calls fail (500, stall, garbage) under dead letters",
       where="scripted server",
       observed="each failed fragment is kept: StageError with stage, ancestry, the call's "
       "inputs and the LLM error; no root fails",
       roots="none fail; each gather receives exactly its surviving children, in child order")
async def test_dead_letters_keep_failed_fragments_and_gathers_get_survivors() -> None:
    texts = [
        "alpha one; beta crash; gamma three",
        "delta hang; epsilon five",
        "zeta garble",
        "eta seven; theta eight",
        "iota crash; kappa hang; lambda garble",
    ]

    async with scripted(faulty) as server, client(server.url, timeout=1.0, max_retries=0) as llm:

        @alto.stage
        async def claims(text: str) -> Split[str]:
            for part in text.split(";"):
                yield part.strip()

        @alto.stage(replicas=8)
        async def judge(claim: str) -> str:
            messages = [{"role": "user", "content": claim}]
            async with aclosing(llm.stream(messages)) as pieces:
                return "".join([p async for p in pieces])

        @alto.stage
        async def report(verdicts: Gather[str], text: str) -> dict[str, Any]:
            return {"text": text, "verdicts": list(verdicts)}

        @alto.flow
        def check(text: str):
            return report(judge(claims(text)), text)

        letters: list[StageError] = []
        with anyio.fail_after(HANG):
            out = await check.run(texts, dead_letters=letters)

    for text, got in zip(texts, out):
        parts = [p.strip() for p in text.split(";")]
        survivors = [answer_for(p) for p in parts if not any(k in p for k in CAUSES)]
        assert got == {"text": text, "verdicts": survivors}
    expected = sorted(
        (i, j, p.strip())
        for i, text in enumerate(texts)
        for j, p in enumerate(text.split(";"))
        if any(k in p for k in CAUSES)
    )
    assert sorted((e.index, e.ancestry[2], e.inputs["claim"]) for e in letters) == expected
    for e in letters:
        assert e.stage == "judge" and e.ancestry[:2] == (e.index, "claims")
        kind = next(k for k in CAUSES if k in e.inputs["claim"])
        assert isinstance(e.cause, CAUSES[kind]) and server.url in str(e.cause)
        assert e.inputs["claim"] in texts[e.index]


@fault("an LLM stream that feeds a split breaks after two tokens, under dead letters",
       where="scripted server (TCP reset)",
       observed="the children streamed before the break survive and are gathered; the split's "
       "failure is kept as a dead letter (LLMConnectionError, ancestry of the parent)",
       roots="none fail; the broken root's gather gets the words that arrived")
async def test_a_split_that_breaks_mid_stream_keeps_the_children_it_made() -> None:
    async with scripted(faulty) as server, client(server.url) as llm:

        @alto.stage(replicas=4)
        async def words(question: str) -> Split[str]:
            messages = [{"role": "user", "content": question}]
            async with aclosing(llm.stream(messages)) as pieces:
                async for piece in pieces:
                    yield piece.strip()

        @alto.stage
        async def lower(word: str) -> str:
            return word.lower()

        @alto.stage
        async def sentence(ws: Gather[str]) -> str:
            return " ".join(ws)

        @alto.flow
        def f(question: str):
            return sentence(lower(words(question)))

        letters: list[StageError] = []
        inputs = ["how are you", "please cut me off", "fine thanks"]
        with anyio.fail_after(HANG):
            out = await f.run(inputs, dead_letters=letters)
    assert out == [answer_for(inputs[0]).lower(), "first second", answer_for(inputs[2]).lower()]
    (letter,) = letters
    assert letter.stage == "words" and letter.ancestry == (1,) and letter.index == 1
    assert letter.inputs == {"question": "please cut me off"}
    assert isinstance(letter.cause, LLMConnectionError)


@fault("LLM failures two levels deep, under dead letters",
       where="scripted server",
       observed="inner gathers get their surviving children; an inner parent whose children "
       "all failed is gathered as an empty list; the outer gather gets every inner result",
       roots="none fail")
async def test_nested_levels_gather_their_survivors() -> None:
    docs = ["a b. c crash", "hang crash. e crash. f g", "h"]

    async with scripted(faulty) as server, client(server.url, timeout=1.0, max_retries=0) as llm:

        @alto.stage
        async def sections(doc: str) -> Split[str]:
            for s in doc.split(". "):
                yield s

        @alto.stage
        async def words(section: str) -> Split[str]:
            for w in section.split():
                yield w

        @alto.stage(replicas=8)
        async def ask(word: str) -> str:
            return await llm.chat([{"role": "user", "content": f"say {word}"}])

        @alto.stage
        async def section_text(answers: Gather[str]) -> str:
            return "+".join(answers)

        @alto.stage
        async def doc_text(parts: Gather[str]) -> list[str]:
            return list(parts)

        @alto.flow
        def f(doc: str):
            return doc_text(section_text(ask(words(sections(doc)))))

        letters: list[StageError] = []
        with anyio.fail_after(HANG):
            out = await f.run(docs, dead_letters=letters)

    def ok(word: str) -> bool:
        return not any(k in word for k in CAUSES)

    expected = [
        ["+".join(answer_for(f"say {w}") for w in s.split() if ok(w)) for s in d.split(". ")]
        for d in docs
    ]
    assert out == expected and out[1][0] == ""
    assert sorted(e.ancestry for e in letters) == [
        (0, "sections", 1, "words", 1),
        (1, "sections", 0, "words", 0),
        (1, "sections", 0, "words", 1),
        (1, "sections", 1, "words", 1),
    ]
