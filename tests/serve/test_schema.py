"""Request bodies checked against a flow's parameters; outcomes as JSON."""

from __future__ import annotations

from dataclasses import dataclass

import pydantic
import pytest

import alto
from alto.errors import DeadlineExceeded, StageError
from alto.serve.schema import BadRequest, RequestSchema, error_json, output_json


@dataclass(frozen=True, slots=True)
class Section:
    heading: str
    text: str


@dataclass(frozen=True, slots=True)
class Document:
    title: str
    sections: tuple[Section, ...]


class Options(pydantic.BaseModel):
    depth: int = 1


@alto.stage
async def count(document: Document, options: Options, label: str) -> int:
    return len(document.sections) * options.depth


@alto.flow
def counted(document: Document, options: Options, label: str = "x"):
    return count(document, options, label)


@alto.stage
async def shout(text: str) -> str:
    return text.upper()


@alto.flow
def loud(text: str):
    return shout(text)


def test_a_one_parameter_flow_takes_each_value_alone():
    assert RequestSchema(loud.plan).parse({"inputs": [{"text": "a"}, {"text": "b"}]}).items == [
        "a", "b"]


def test_dataclasses_and_models_are_built_from_json_and_defaults_filled():
    body = {"inputs": [{"document": {"title": "t", "sections": [{"heading": "h", "text": "x"}]},
                        "options": {"depth": 3}}]}
    (item,) = RequestSchema(counted.plan).parse(body).items
    assert item == {"document": Document("t", (Section("h", "x"),)),
                    "options": Options(depth=3), "label": "x"}
    assert alto.run(counted, [item]) == [3]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"inputs": [{"txt": "a"}]}, "inputs[0].text", "missing parameter; the flow takes (text)"),
        ({"inputs": [{"text": "a", "extra": 1}]}, "inputs[0].extra", "unknown parameter"),
        ({"inputs": [{"text": "a"}, {"text": 5}]}, "inputs[1].text", "valid string"),
        ({"inputs": ["a"]}, "inputs[0]", "expected an object of the flow's parameters"),
        ({"inputs": []}, "inputs", "non-empty list"),
        ({"input": [{"text": "a"}]}, "input", "unknown field 'input'"),
        ([{"text": "a"}], "<body>", "must be a JSON object"),
    ],
)
def test_a_bad_body_names_the_field_and_the_fix(body, field, words):
    with pytest.raises(BadRequest) as info:
        RequestSchema(loud.plan).parse(body)
    assert info.value.field == field
    assert words in str(info.value)
    assert info.value.as_json()["error"]["field"] == field


def test_a_nested_field_is_named_by_its_path():
    body = {"inputs": [{"document": {"title": "t", "sections": [{"heading": "h"}]},
                        "options": {}}]}
    with pytest.raises(BadRequest) as info:
        RequestSchema(counted.plan).parse(body)
    assert info.value.field == "inputs[0].document.sections[0].text"


def test_more_inputs_than_one_request_may_hold():
    with pytest.raises(BadRequest, match="at most 2 per request"):
        RequestSchema(loud.plan, max_inputs=2).parse({"inputs": [{"text": "a"}] * 3})


def test_outputs_and_errors_as_json():
    assert output_json((Section("h", "x"), Options())) == [{"heading": "h", "text": "x"},
                                                           {"depth": 1}]
    error = StageError("count", (4, "words", 2), ValueError("bad"), attempts=3)
    assert error_json(error) | {"message": ""} == {
        "type": "StageError", "message": "", "stage": "count", "ancestry": [4, "words", 2],
        "attempts": 3, "cause": "ValueError"}
    assert error_json(DeadlineExceeded(1, 2.5))["deadline"] == 2.5
