"""The example applications and the LLM servers they call: finding them, checking them.

Shared by ``alto run`` (:mod:`alto.cli`) and ``alto bench`` (:mod:`alto.bench`), which
both import it (and not each other).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

APPS = ("factcheck", "multihop", "summarize", "ingest")

REPO = Path(__file__).resolve().parent.parent


class CLIError(Exception):
    """A user mistake: printed as one line, exit status 2."""


def load_app(name: str) -> ModuleType:
    """The module of example application ``name`` (from the repository's ``examples/``)."""
    if name not in APPS:
        raise CLIError(f"unknown app {name!r}; choose one of: {', '.join(APPS)} (see 'alto list')")
    if not (REPO / "examples" / name).is_dir():
        raise CLIError(
            f"the example apps live in the repository's examples/ folder, which is not next to "
            f"this installation ({REPO}); install Alto from a checkout with 'pip install -e .'"
        )
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
        raise CLIError(f"cannot reach the LLM server at {url}: {exc}") from exc
    hint = "is it an OpenAI-compatible server, and is --llm-url its API base (…/v1)?"
    if response.status_code in (401, 403):
        hint = f"set ${api_key_env} to the server's API key"
    if response.status_code >= 400:
        status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
        raise CLIError(f"the LLM server at {url} answered {status} for GET {models}; {hint}")
    try:
        response.json()
    except ValueError:
        shown = describe_body(response.text.replace(key, "***") if key else response.text)
        raise CLIError(
            f"the LLM server at {url} answered GET {models} with {shown or 'an empty body'}, "
            f"not JSON; {hint}"
        ) from None
