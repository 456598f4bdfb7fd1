"""What travels over HTTP.

Request bodies checked against a flow's parameters, and the JSON form of each input's
outcome.

A body is ``{"inputs": [ARGS, ...]}``, each ``ARGS`` an object of the flow's parameters by
name. :class:`RequestSchema` builds one pydantic model per flow from the plan's parameter
names, type hints and defaults, so a bad body is refused before anything enters the
pipeline, with the field that is wrong (``inputs[1].question``) and what was expected.
A parameter whose type pydantic cannot describe is taken as it comes and left to the
flow's own input check (its outcome is then that input's error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pydantic
from pydantic_core import to_jsonable_python

from alto.compiler.plan import Plan
from alto.errors import AltoError, StageError


class BadRequest(AltoError):
    """A request body that does not fit the flow (HTTP 422).

    Attributes:
        field: where the first problem is, e.g. ``"inputs[0].question"``.
        problems: every problem, as ``{"field": ..., "message": ...}``.
    """

    code = "bad-request"

    def __init__(self, message: str, field: str, problems: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.field = field
        self.problems = problems

    def __reduce__(self) -> Any:
        return (BadRequest, (self.args[0], self.field, self.problems))

    def as_json(self) -> dict[str, Any]:
        """The error as the JSON body of the HTTP 422 answer."""
        return {"error": {"type": "InvalidRequest", "message": str(self), "field": self.field,
                          "problems": self.problems}}


@dataclass(frozen=True, slots=True)
class Parsed:
    """A request's inputs, ready for the flow.

    One item per input, the way ``Flow.stream`` takes them.
    """

    items: list[Any]


class RequestSchema:
    """Validates request bodies against a flow's parameters.

    Args:
        plan: the flow's plan (parameter names, type hints, defaults).
        max_inputs: the most inputs one request may hold (``None``: no limit).

    Example:
        >>> import alto
        >>> @alto.stage
        ... async def repeat(text: str, times: int) -> str:
        ...     return text * times
        >>> @alto.flow
        ... def echo(text: str, times: int = 2):
        ...     return repeat(text, times)
        >>> schema = RequestSchema(echo.plan)
        >>> schema.parse({"inputs": [{"text": "hi"}, {"text": "ho", "times": "3"}]}).items
        [{'text': 'hi', 'times': 2}, {'text': 'ho', 'times': 3}]
        >>> try:
        ...     schema.parse({"inputs": [{"text": "hi", "times": "many"}]})
        ... except BadRequest as exc:
        ...     print(exc.field)
        inputs[0].times
    """

    def __init__(self, plan: Plan, *, max_inputs: int | None = None) -> None:
        self.plan = plan
        self.max_inputs = max_inputs
        fields: dict[str, Any] = {}
        for name in plan.inputs:
            annotation = plan.annotations.get(name, Any)
            try:
                pydantic.TypeAdapter(annotation)
            except (pydantic.PydanticSchemaGenerationError, TypeError, NameError):
                annotation = Any  # the flow's own check judges it (that input's error)
            default = plan.defaults[name] if name in plan.defaults else ...
            fields[name] = (annotation, default)
        self.args = pydantic.create_model(
            f"{plan.name}_args", __config__=pydantic.ConfigDict(extra="forbid"), **fields
        )
        self.signature = ", ".join(
            f"{n}" + ("" if n not in plan.defaults else "=…") for n in plan.inputs
        )

    def parse(self, body: Any) -> Parsed:
        """The inputs of a decoded JSON body; raises :class:`BadRequest` naming the field."""
        if not isinstance(body, dict):
            msg = (
                f"the body must be a JSON object {{\"inputs\": [...]}}, got "
                f"{type(body).__name__}"
            )
            raise BadRequest(
                msg, "<body>", [])
        unknown = [k for k in body if k != "inputs"]
        if unknown:
            msg = f"unknown field {unknown[0]!r}; the body holds only \"inputs\""
            raise BadRequest(msg,
                             str(unknown[0]), [])
        records = body.get("inputs")
        if not isinstance(records, list) or not records:
            msg = (
                "\"inputs\" must be a non-empty list of objects, one per input, each with the "
                f"flow's parameters ({self.signature})"
            )
            raise BadRequest(
                msg, "inputs", [])
        if self.max_inputs is not None and len(records) > self.max_inputs:
            msg = (
                f"{len(records)} inputs in one request; this service takes at most "
                f"{self.max_inputs} per request (its --max-inflight): split the request"
            )
            raise BadRequest(
                msg,
                "inputs", [])
        items: list[Any] = []
        problems: list[dict[str, str]] = []
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                problems.append({"field": f"inputs[{i}]", "message":
                                 f"expected an object of the flow's parameters "
                                 f"({self.signature}), got {type(record).__name__}"})
                continue
            try:
                args = self.args.model_validate(record)
            except pydantic.ValidationError as exc:
                problems.extend(_problems(exc, i, self.signature))
                continue
            values = {name: getattr(args, name) for name in self.plan.inputs}
            items.append(values[self.plan.inputs[0]] if len(values) == 1 else values)
        if problems:
            first = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            msg = f"{first['field']}: {first['message']}{more}"
            raise BadRequest(msg, first["field"],
                             problems)
        return Parsed(items)


def _problems(exc: pydantic.ValidationError, index: int, signature: str) -> list[dict[str, str]]:
    out = []
    for error in exc.errors(include_url=False):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        message = error["msg"]
        if error["type"] == "missing":
            message = f"missing parameter; the flow takes ({signature})"
        elif error["type"] == "extra_forbidden":
            message = f"unknown parameter; the flow takes ({signature})"
        out.append({"field": f"inputs[{index}]{where}", "message": message})
    return out


def output_json(value: Any) -> Any:
    """A flow's output as JSON data (pydantic models, dataclasses, tuples and sets too)."""
    return to_jsonable_python(value, fallback=repr)


def error_json(error: BaseException) -> dict[str, Any]:
    """One input's failure as JSON.

    Its type and message, and for a stage failure the stage, the fragment's ancestry, the
    attempts made and the cause's type.
    """
    out: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, StageError):
        out["stage"] = error.stage
        out["ancestry"] = list(error.ancestry)
        out["attempts"] = error.attempts
        if error.cause is not None:
            out["cause"] = type(error.cause).__name__
    elif isinstance(error, AltoError):
        for name in ("parameter", "deadline"):
            value = getattr(error, name, None)
            if value is not None:
                out[name] = value
    return out
