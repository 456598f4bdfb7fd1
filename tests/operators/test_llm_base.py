"""The shared LLM interface: structured output with re-asks, message checks, errors, exports."""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import AsyncGenerator

import pydantic
import pytest

import alto.operators.llm as llm_pkg
from alto.operators.llm import (
    LLM,
    LLMConnectionError,
    LLMError,
    LLMProtocolError,
    LLMServerError,
    LLMTimeoutError,
    StructuredOutputError,
)
from alto.operators.llm.base import Request, extract_json, normalize_messages, parse_json_as


class Person(pydantic.BaseModel):
    name: str
    age: int = pydantic.Field(ge=0)


class Scripted(LLM):
    """Answers JSON requests from a script and records every conversation it was sent."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = list(answers)
        self.seen: list[list[dict[str, str]]] = []
        self.closed = False

    async def _generate(self, request: Request) -> str:
        if request.kind != "json":
            return request.prompt
        self.seen.append(list(request.messages))
        return self.answers.pop(0)

    async def _generate_stream(self, request: Request) -> AsyncGenerator[str, None]:
        yield request.prompt

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.anyio
async def test_valid_first_answer_needs_no_reask() -> None:
    llm = Scripted(['{"name": "Ann", "age": 30}'])
    got = await llm.structured([{"role": "user", "content": "Ann is 30."}], Person)
    assert got == Person(name="Ann", age=30)
    assert len(llm.seen) == 1
    system = llm.seen[0][0]
    assert system["role"] == "system" and '"age"' in system["content"]  # the schema is described


@pytest.mark.anyio
async def test_invalid_answer_is_reasked_with_the_error() -> None:
    llm = Scripted(['{"name": "Ann", "age": -3}', 'Sure! ```json\n{"name": "Ann", "age": 3}\n```'])
    got = await llm.structured([{"role": "user", "content": "Ann"}], Person, reasks=2)
    assert got == Person(name="Ann", age=3)
    second = llm.seen[1]
    assert second[-2] == {"role": "assistant", "content": '{"name": "Ann", "age": -3}'}
    assert second[-1]["role"] == "user" and "age" in second[-1]["content"]
    assert "greater than or equal to 0" in second[-1]["content"]


@pytest.mark.anyio
async def test_gives_up_after_reasks_with_the_last_answer_and_error() -> None:
    llm = Scripted(["not json", '{"name": "Ann"}', '{"name": 5, "age": 1}'])
    with pytest.raises(StructuredOutputError) as info:
        await llm.structured([{"role": "user", "content": "x"}], Person, reasks=2)
    err = info.value
    assert err.attempts == 3 and err.schema == "Person"
    assert err.raw == '{"name": 5, "age": 1}'
    assert "name" in err.error and "string" in err.error
    assert "Person" in str(err) and "3 attempts" in str(err)
    assert llm.answers == []


@pytest.mark.anyio
async def test_existing_system_message_is_kept_and_extended() -> None:
    llm = Scripted(['{"name": "B", "age": 1}'])
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "B"}]
    await llm.structured(messages, Person, reasks=0)
    sent = llm.seen[0]
    assert len(sent) == 2 and sent[0]["content"].startswith("Be brief.")
    assert "JSON schema" in sent[0]["content"]


@pytest.mark.anyio
async def test_zero_reasks_means_one_attempt() -> None:
    llm = Scripted(["{}", '{"name": "x", "age": 1}'])
    with pytest.raises(StructuredOutputError) as info:
        await llm.structured([{"role": "user", "content": "x"}], Person, reasks=0)
    assert info.value.attempts == 1
    with pytest.raises(ValueError, match="reasks"):
        await llm.structured([{"role": "user", "content": "x"}], Person, reasks=-1)


@pytest.mark.anyio
async def test_async_context_manager_closes() -> None:
    async with Scripted([]) as llm:
        assert not llm.closed
    assert llm.closed
    assert "max_concurrency=1" in repr(llm)


class Echo(LLM):
    """Answers every request with its kind, and keeps the requests."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    async def _generate(self, request: Request) -> str:
        self.requests.append(request)
        return request.kind

    async def _generate_stream(self, request: Request) -> AsyncGenerator[str, None]:
        self.requests.append(request)
        yield request.kind


@pytest.mark.anyio
async def test_every_entry_point_hands_the_backend_one_request() -> None:
    llm = Echo()
    user = [{"role": "user", "content": "x"}]
    assert await llm.complete("go", max_tokens=3, stop=".") == "complete"
    assert await llm.chat(user, temperature=0.5, stop=["\n"]) == "chat"
    assert [p async for p in llm.stream(user, max_tokens=7)] == ["stream"]
    with pytest.raises(StructuredOutputError):  # "json" is no Person, and no re-asks are left
        await llm.structured(user, Person, max_tokens=9, reasks=0)
    complete, chat, stream, json = llm.requests
    assert complete == Request("complete", prompt="go", max_tokens=3, stop=".")
    assert chat == Request("chat", messages=user, temperature=0.5, stop=["\n"])
    assert stream == Request("stream", messages=user, max_tokens=7)
    assert (json.kind, json.max_tokens, json.schema_name) == ("json", 9, "Person")
    assert json.json_schema == Person.model_json_schema() and json.stop is None
    assert json.messages[-1] == user[0]  # after the schema's instruction


def test_a_backend_without_generate_cannot_be_made() -> None:
    class Half(LLM):
        async def _generate(self, request: Request) -> str:
            return ""

    with pytest.raises(TypeError, match="_generate_stream"):
        Half()  # type: ignore[abstract]


def test_extract_and_parse_json() -> None:
    assert extract_json('```json\n{"a": 1}\n```') == '{"a": 1}'
    assert extract_json('Here: {"a": {"b": 2}} done') == '{"a": {"b": 2}}'
    assert extract_json("no json") == "no json"
    ok, err = parse_json_as('Answer: {"name": "Z", "age": 2}.', Person)
    assert ok == Person(name="Z", age=2) and err == ""
    bad, err = parse_json_as('{"name": "Z"}', Person)
    assert bad is None and err.startswith("age:")


def test_messages_are_checked() -> None:
    with pytest.raises(TypeError, match="complete"):
        normalize_messages("hello")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="role"):
        normalize_messages([{"role": "robot", "content": "x"}])
    with pytest.raises(TypeError, match="string"):
        normalize_messages([{"role": "user", "content": None}])  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="empty"):
        normalize_messages([])
    assert normalize_messages([{"role": "user", "content": "x", "extra": "y"}]) == [
        {"role": "user", "content": "x"}
    ]


def test_errors_pickle_with_their_fields() -> None:
    errors: list[LLMError] = [
        LLMServerError("http://h/v1/x", 503, "b" * 2000, attempts=4),
        LLMConnectionError("http://h/v1/x", "refused", attempts=2),
        LLMTimeoutError("http://h/v1/x", 1.5, "read"),
        LLMProtocolError("http://h/v1/x", "bad event"),
        StructuredOutputError("Person", "raw", "age: missing", attempts=3),
    ]
    for err in errors:
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err) and vars(back) == vars(err)
        assert isinstance(back, LLMError) and back.code.startswith("llm")
    server = errors[0]
    assert isinstance(server, LLMServerError)
    assert len(server.body) < 600 and "503" in str(server) and "http://h/v1/x" in str(server)
    assert isinstance(errors[1], ConnectionError) and isinstance(errors[2], TimeoutError)


def test_exports_match_all_and_import_nothing_heavy() -> None:
    assert sorted(llm_pkg.__all__) == sorted(set(llm_pkg.__all__))
    for name in llm_pkg.__all__:
        assert getattr(llm_pkg, name) is not None
    assert set(llm_pkg.__all__) <= set(dir(llm_pkg))
    with pytest.raises(AttributeError):
        llm_pkg.NotAName  # noqa: B018
    code = (
        "import sys, alto.operators.llm, alto.operators.text\n"
        "heavy = {'llama_cpp', 'torch', 'httpx', 'starlette', 'uvicorn'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
