"""``alto serve``: a user's own flow (``module:flow``) served by the command, stopped by
SIGINT with a drain; and the one-line errors for targets that are not flows."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from alto.cli import main

REPO = Path(__file__).resolve().parents[2]

FLOWS = textwrap.dedent(
    """
    import alto

    @alto.stage
    async def shout(text: str, times: int) -> str:
        return " ".join([text.upper()] * times)

    @alto.flow
    def loud(text: str, times: int = 1):
        return shout(text, times)

    not_a_flow = 3
    """
)


@contextlib.contextmanager
def service(args: list[str], cwd: Path, stop: int = signal.SIGINT, **env: str):
    """Run ``alto serve ARGS`` in ``cwd``; yields its URL and, once it has stopped (by
    ``stop``), fills the dict it yielded with its exit code and the rest of its stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "alto.cli", "serve", *args, "--port", "0"],
                            cwd=cwd, env={**os.environ, **env}, stderr=subprocess.PIPE,
                            text=True)
    after: dict = {}
    try:
        url, lines = None, []
        deadline = time.monotonic() + 180
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"listening on (http://\S+)", line)
            url = found.group(1) if found else None
        assert url, "".join(lines)
        yield url, after
    finally:
        proc.send_signal(stop)
        try:
            after["code"] = proc.wait(timeout=60)
            after["stderr"] = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stderr.close()


@pytest.mark.parametrize(
    ("backend", "stop"),
    [
        pytest.param("local", signal.SIGINT, id="local-SIGINT"),
        pytest.param("local", signal.SIGTERM, id="local-SIGTERM"),
        pytest.param("ray", signal.SIGTERM, marks=pytest.mark.ray, id="ray-SIGTERM"),
    ],
)
def test_serves_a_module_flow_until_stopped(tmp_path, backend, stop):
    (tmp_path / "myflows.py").write_text(FLOWS)
    args = ["myflows:loud", "--max-inflight", "8", "--grace", "5", "--backend", backend]
    with service(args, tmp_path, stop, PYTHONPATH=str(REPO)) as (url, after):
        response = httpx.post(f"{url}/v1/runs", json={"inputs": [
            {"text": "hi", "times": 2}, {"text": "yo"}]}, timeout=60)
        assert response.json() == {"results": [{"index": 0, "output": "HI HI"},
                                               {"index": 1, "output": "YO"}]}
        assert httpx.get(f"{url}/health", timeout=10).json()["max_inflight"] == 8
    # the service drained and stopped, then passed the signal on
    assert "alto serve: stopped; inputs answered: 2 ok, 0 error" in after["stderr"]
    if stop == signal.SIGINT:
        assert after["code"] == 130


@pytest.mark.server
def test_serves_an_example_app_from_any_folder(tmp_path):
    from pydantic_core import to_jsonable_python

    from examples.summarize import load_inputs

    document = to_jsonable_python(load_inputs(1)[0])
    args = ["summarize", "--llm", "emulated", "--embedder", "hash"]
    with service(args, tmp_path) as (url, after):
        response = httpx.post(f"{url}/v1/runs", json={"inputs": [{"document": document}]},
                              timeout=120)
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    (result,) = response.json()["results"]
    assert result["index"] == 0 and "output" in result, result
    calls = [line for line in metrics.splitlines()
             if line.startswith("alto_llm_replica_calls_total{")]
    assert calls and int(calls[0].rsplit(" ", 1)[1]) > 0
    assert "1 ok" in after["stderr"]


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("nosuchapp", "unknown app 'nosuchapp'"),
        ("myflows:missing", "has no attribute 'missing'; its flows: loud"),
        ("myflows:not_a_flow", "is a int, not a flow"),
        ("nosuchmodule:flow", "cannot import module 'nosuchmodule'"),
    ],
)
def test_a_target_that_is_not_a_flow_is_one_line(tmp_path, monkeypatch, capsys, target, words):
    (tmp_path / "myflows.py").write_text(FLOWS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["serve", target, "--port", "0"]) == 2
    assert words in capsys.readouterr().err
