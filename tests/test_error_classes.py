"""One error root: every public exception class of Alto derives from ``alto.AltoError``, is
in the table of ``docs/errors.md`` with its bases and ``code``, and pickles back to itself.

The classes are found by importing every module of the package (a module whose optional
dependency is not installed is skipped, as in ``tests/test_imports.py``), so a new
``class FooError(Exception)`` anywhere in ``alto`` fails here until it derives from
``AltoError``, is documented, and has a sample below.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import pickle
import pkgutil
import re
from pathlib import Path
from typing import Any, Callable

import alto

ALTO = Path(alto.__file__).resolve().parent
TABLE = ALTO.parent / "docs" / "errors.md"
URL = "http://127.0.0.1:8000/v1/chat/completions"

SAMPLES: dict[str, Callable[[type[Any]], BaseException]] = {
    "alto.errors.AltoError": lambda cls: cls("something failed"),
    "alto.errors.CompileError": lambda cls: cls(
        "stage 's' has no parameter 'q'", stage="s", parameter="q", where="app.py:3",
        fix="rename it",
    ),
    "alto.errors.StageError": lambda cls: cls(
        "s", (3, "split", 1), ValueError("x"), attempts=2, inputs={"item": 1}, bisected=4
    ),
    "alto.errors.StageTimeout": lambda cls: cls("slow", 2.5, split=True),
    "alto.errors.InputError": lambda cls: cls(4, "bad", parameter="p"),
    "alto.errors.DeadlineExceeded": lambda cls: cls(1, 2.5),
    "alto.errors.InputCancelled": lambda cls: cls(2),
    "alto.errors.PipelineError": lambda cls: cls(
        ["ok", alto.InputError(1, "bad")], [alto.InputError(1, "bad")]
    ),
    "alto.errors.ActorLostError": lambda cls: cls("the Ray actor of stage 's' died"),
    "alto.errors.UsageError": lambda cls: cls("k must be a positive int, got 0"),
    "alto.errors.UsageTypeError": lambda cls: cls("texts[1] is int, expected str: 3"),
    "alto.errors.StateError": lambda cls: cls("alto.run() blocks; use 'await flow.run()'"),
    "alto.errors.MissingDependency": lambda cls: cls("pip install faiss-cpu"),
    "alto.errors.MissingFile": lambda cls: cls("no GGUF model file at '/m.gguf'"),
    "alto.runtime.ray.actor.HostNotLoaded": lambda cls: cls("this stage actor holds no stage"),
    "alto.runtime.validate.ArgumentError": lambda cls: cls("parameter 'x' of stage 's' is bad"),
    "alto.runtime.invoke.BatchShapeError": lambda cls: cls("returned 2 results for 3 items"),
    "alto.operators.llm.errors.LLMError": lambda cls: cls("local is closed"),
    "alto.operators.llm.errors.LLMServerError": lambda cls: cls(URL, 503, "busy", attempts=3),
    "alto.operators.llm.errors.LLMConnectionError": lambda cls: cls(URL, "refused", attempts=2),
    "alto.operators.llm.errors.LLMTimeoutError": lambda cls: cls(URL, 1.5, "connect"),
    "alto.operators.llm.errors.LLMProtocolError": lambda cls: cls(URL, "expected JSON"),
    "alto.operators.llm.errors.StructuredOutputError": lambda cls: cls(
        "Answer", "{", "not JSON", attempts=3
    ),
    "alto.serve.pipeline.Overloaded": lambda cls: cls("64 inputs in flight", 2),
    "alto.serve.pipeline.Unavailable": lambda cls: cls("the service is shutting down"),
    "alto.serve.pipeline.ServiceStopped": lambda cls: cls("the pipeline stopped"),
    "alto.serve.schema.BadRequest": lambda cls: cls(
        "inputs[0].q: missing", "inputs[0].q", [{"field": "inputs[0].q", "message": "missing"}]
    ),
    "alto.apps.CLIError": lambda cls: cls("unknown app 'x'"),
    "alto.bench.errors.BenchError": lambda cls: cls("--concurrency must be positive"),
    "alto.bench.errors.LlamaServerMissing": lambda cls: cls("no llama-server"),
    "alto.bench.errors.BenchRunError": lambda cls: cls("the emulator did not start"),
}
"""One instance of each public exception class, by where it is defined."""

BUILTIN_BASES = {
    "alto.errors.StageTimeout": TimeoutError,
    "alto.errors.ActorLostError": RuntimeError,
    "alto.errors.UsageError": ValueError,
    "alto.errors.UsageTypeError": TypeError,
    "alto.errors.StateError": RuntimeError,
    "alto.errors.MissingDependency": ModuleNotFoundError,
    "alto.errors.MissingFile": FileNotFoundError,
    "alto.runtime.ray.actor.HostNotLoaded": RuntimeError,
    "alto.runtime.validate.ArgumentError": TypeError,
    "alto.runtime.invoke.BatchShapeError": TypeError,
    "alto.operators.llm.errors.LLMConnectionError": ConnectionError,
    "alto.operators.llm.errors.LLMTimeoutError": TimeoutError,
    "alto.bench.errors.BenchError": ValueError,
    "alto.bench.errors.LlamaServerMissing": RuntimeError,
    "alto.bench.errors.BenchRunError": RuntimeError,
}
"""Builtins that ``except`` clauses (Alto's, and users') catch these errors by."""


def optional_missing(exc: ModuleNotFoundError) -> bool:
    """Whether an import failed for an optional dependency (not for a module of Alto)."""
    return bool(exc.name) and not str(exc.name).startswith("alto")


@functools.cache
def public_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined at the top of a module of ``alto`` whose name does not
    start with ``_``, by ``module.Name``."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages([str(ALTO)], "alto."):
        if info.name.endswith("__main__"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ModuleNotFoundError as exc:
            if optional_missing(exc):
                continue
            raise
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
                and not obj.__name__.startswith("_")
            ):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def table_rows() -> list[tuple[str, list[str], str]]:
    """The rows of the table in ``docs/errors.md``: (class as imported, bases, code)."""
    rows = []
    for line in TABLE.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows.append((cells[0].strip("`"), re.findall(r"`([^`]+)`", cells[1]), cells[2].strip("`")))
    return rows


def resolve(path: str) -> type[BaseException] | None:
    """The class ``path`` names (``alto.serve.Overloaded``); None when its module needs an
    optional dependency that is not installed."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
    except ModuleNotFoundError as exc:
        if optional_missing(exc):
            return None
        raise


def test_the_walk_finds_errors_in_every_part_of_the_package():
    found = public_exceptions()
    for name in ("alto.errors.StageError", "alto.operators.llm.errors.LLMError",
                 "alto.runtime.validate.ArgumentError", "alto.apps.CLIError",
                 "alto.bench.errors.BenchError"):
        assert name in found
    # private control flow is not public
    assert not any(name.rpartition(".")[2].startswith("_") for name in found)
    assert "alto.bench.emulator.server._BadRequest" not in found


def test_every_public_exception_derives_from_alto_error():
    outside = [name for name, cls in public_exceptions().items()
               if not issubclass(cls, alto.AltoError)]
    assert not outside, (
        f"{outside} do not derive from alto.AltoError; make AltoError their first base (keep a "
        "builtin second where except clauses rely on it) and list them in docs/errors.md"
    )


def test_errors_keep_the_builtins_they_are_caught_by():
    for name, builtin in BUILTIN_BASES.items():
        cls = resolve(name)
        assert cls is None or issubclass(cls, builtin), name
    assert issubclass(alto.LLMConnectionError, ConnectionError)
    assert issubclass(alto.StageTimeout, TimeoutError)


def test_every_public_exception_is_in_the_table_with_its_bases_and_code():
    documented: dict[type[BaseException], tuple[str, list[str], str]] = {}
    for path, bases, code in table_rows():
        cls = resolve(path)
        if cls is None:
            continue
        assert isinstance(cls, type) and issubclass(cls, BaseException), path
        assert cls not in documented, f"{path} is in docs/errors.md twice"
        documented[cls] = (path, bases, code)
        assert bases == [b.__name__ for b in cls.__bases__], (
            f"docs/errors.md gives {path} the bases {bases}; it has "
            f"{[b.__name__ for b in cls.__bases__]}"
        )
        assert code == getattr(cls, "code", None), (path, code)
    missing = [name for name, cls in public_exceptions().items() if cls not in documented]
    assert not missing, f"{missing} are not in the table of docs/errors.md"


def test_every_error_has_a_code_of_its_own():
    codes: dict[str, str] = {}
    for name, cls in public_exceptions().items():
        code = cls.__dict__.get("code")
        assert isinstance(code, str) and code, f"{name} sets no code of its own"
        assert code not in codes, f"{name} and {codes[code]} share the code {code!r}"
        codes[code] = name


def plain(value: Any) -> Any:
    """``value`` in a form that compares by content (exceptions by type, args and fields)."""
    if isinstance(value, BaseException):
        return (type(value), plain(value.args), plain(vars(value)))
    if isinstance(value, (list, tuple)):
        return (type(value), [plain(v) for v in value])
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def test_every_error_pickles_back_to_itself():
    found = public_exceptions()
    unsampled = sorted(set(found) - set(SAMPLES))
    assert not unsampled, f"add a sample of {unsampled} to SAMPLES"
    for name, cls in found.items():
        err = SAMPLES[name](cls)
        assert type(err) is cls, name
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is cls, name
        assert str(back) == str(err) and str(err), name
        assert plain(back) == plain(err), name
        assert plain(back.__cause__) == plain(err.__cause__), name


BUILTINS_LEFT = {
    "AttributeError": "a module's __getattr__ for a name it does not have (Python's protocol)",
    "KeyError": "a lookup by key that found nothing (Plan.node, Retriever.passage)",
    "NotImplementedError": "a backend that cannot do something it is asked (Flow.cancel)",
    "AssertionError": "a branch that cannot be reached",
    "StopAsyncIteration": "the end of an async iterator (Python's protocol)",
}
"""The builtin exceptions Alto may raise bare, and why: each belongs to a Python protocol.
(``SystemExit`` and the other ``BaseException``s that are not ``Exception``s are not errors.)"""


def bare_builtin_raises(package: Path = ALTO) -> list[str]:
    """Every ``raise`` in ``package`` of a builtin exception not in :data:`BUILTINS_LEFT`."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = target.id if isinstance(target, ast.Name) else None
            builtin = getattr(builtins, name or "", None)
            if (
                isinstance(builtin, type)
                and issubclass(builtin, Exception)
                and name not in BUILTINS_LEFT
            ):
                found.append(f"{path.relative_to(package.parent)}:{node.lineno} raise {name}")
    return found


def test_alto_raises_no_bare_builtin_exception():
    found = bare_builtin_raises()
    assert not found, (
        f"{found}: raise alto.UsageError (a ValueError), UsageTypeError (a TypeError), "
        "StateError (a RuntimeError), MissingFile or MissingDependency instead, or a class "
        "of its own under AltoError"
    )


def test_the_raise_check_sees_a_bare_builtin(tmp_path):
    (tmp_path / "alto").mkdir()
    (tmp_path / "alto" / "bad.py").write_text(
        "def f(x):\n    if x:\n        raise ValueError('no')\n    raise KeyError(x)\n"
    )
    assert bare_builtin_raises(tmp_path / "alto") == ["alto/bad.py:3 raise ValueError"]
