"""The example applications and the LLM servers they call.

This module finds them, checks them, and reads their input and config files.

Shared by ``alto run`` (:mod:`alto.cli`), ``alto serve`` (:mod:`alto.serve`) and
``alto bench`` (:mod:`alto.bench`), which import it (and not each other).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from alto.errors import AltoError

APPS = ("factcheck", "multihop", "summarize", "ingest")

REPO = Path(__file__).resolve().parent.parent


class CLIError(AltoError):
    """A user mistake: printed as one line, exit status 2."""

    code = "cli"


def load_app(name: str) -> ModuleType:
    """The module of example application ``name`` (from the repository's ``examples/``)."""
    if name not in APPS:
        msg = f"unknown app {name!r}; choose one of: {', '.join(APPS)} (see 'alto list')"
        raise CLIError(msg)
    if not (REPO / "examples" / name).is_dir():
        msg = (
            f"the example apps live in the repository's examples/ folder, which is not next to "
            f"this installation ({REPO}); install Alto from a checkout with 'pip install -e .'"
        )
        raise CLIError(msg)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module(f"examples.{name}")


def check_llm_server(url: str, *, api_key_env: str = "OPENAI_API_KEY") -> None:
    """Fail fast, in one line, when ``url`` is not an OpenAI-compatible server that answers.

    Asks for ``GET /v1/models`` (what vLLM, SGLang, llama.cpp's server and OpenAI answer),
    with the API key the client will send, and accepts a JSON answer. A connection failure,
    an HTTP error status, or a page that is not JSON (a web server's HTML) is a CLIError
    naming the status and the URL.
    """
    import httpx

    from alto.operators.llm.errors import describe_body

    # the base URL the way OpenAIClient reads it: with or without the /v1 suffix
    models = url.rstrip("/").removesuffix("/v1") + "/v1/models"
    key = os.environ.get(api_key_env, "")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(models, headers=headers, timeout=5.0)
    except httpx.HTTPError as exc:
        msg = f"cannot reach the LLM server at {url}: {exc}"
        raise CLIError(msg) from exc
    hint = "is it an OpenAI-compatible server, and is --llm-url its API base (…/v1)?"
    if response.status_code in (401, 403):
        hint = f"set ${api_key_env} to the server's API key"
    if response.status_code >= 400:
        status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
        msg = f"the LLM server at {url} answered {status} for GET {models}; {hint}"
        raise CLIError(msg)
    try:
        response.json()
    except ValueError:
        shown = describe_body(response.text.replace(key, "***") if key else response.text)
        msg = (
            f"the LLM server at {url} answered GET {models} with {shown or 'an empty body'}, "
            f"not JSON; {hint}"
        )
        raise CLIError(msg) from None


def _read_text(kind: str, path: str) -> str:
    """The text of an input or config file; a CLIError naming the file if it cannot be read."""
    file = Path(path)
    if not file.exists():
        msg = f"{kind} file {path!r} does not exist"
        raise CLIError(msg)
    if not file.is_file():
        msg = f"{kind} file {path!r} is not a file"
        raise CLIError(msg)
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        msg = f"{kind} file {path!r} is not UTF-8 text: {exc}"
        raise CLIError(msg) from exc
    except OSError as exc:
        msg = f"cannot read {kind} file {path!r}: {exc.strerror or exc}"
        raise CLIError(msg) from exc


def read_inputs(app: ModuleType, path: str) -> list[Any]:
    """Inputs from a JSON file (a list) or a JSON-lines file (one input per line)."""
    text = _read_text("input", path)
    try:
        stripped = text.lstrip()
        if stripped.startswith("["):
            records = json.loads(text)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        msg = f"input file {path!r} is not JSON or JSON lines: {exc}"
        raise CLIError(msg) from exc
    if not isinstance(records, list) or not records:
        msg = f"input file {path!r} holds no inputs"
        raise CLIError(msg)
    try:
        return list(app.parse_inputs(records))
    except (ValueError, TypeError) as exc:
        msg = f"{path}: {exc}"
        raise CLIError(msg) from exc


def read_config(app: ModuleType, path: str) -> Any:
    """The app's settings from a JSON file, validated against its ``Config`` model."""
    import pydantic

    text = _read_text("config", path)
    try:
        return app.Config.model_validate_json(text)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        fields = ", ".join(app.Config.model_fields)
        msg = (
            f"config file {path!r} is not a valid {app.NAME} config: {problems} "
                       f"(settings: {fields})"
        )
        raise CLIError(msg) from None
