"""``alto serve``: a user's own flow (``module:flow``) served by the command, stopped by
SIGINT with a drain; and the one-line errors for targets that are not flows."""

from __future__ import annotations

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
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "alto.cli", "serve", "myflows:loud", "--port", "0",
         "--max-inflight", "8", "--grace", "5", "--backend", backend],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = None
        lines = []
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"listening on (http://\S+)", line)
            url = found.group(1) if found else None
        assert url, "".join(lines)
        response = httpx.post(f"{url}/v1/runs", json={"inputs": [
            {"text": "hi", "times": 2}, {"text": "yo"}]}, timeout=60)
        assert response.json() == {"results": [{"index": 0, "output": "HI HI"},
                                               {"index": 1, "output": "YO"}]}
        assert httpx.get(f"{url}/health", timeout=10).json()["max_inflight"] == 8
    finally:
        proc.send_signal(stop)
        try:
            code = proc.wait(timeout=60)
            rest = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stderr.close()
    # the service drained and stopped, then passed the signal on
    assert "alto serve: stopped; inputs answered: 2 ok, 0 error" in rest, rest
    if stop == signal.SIGINT:
        assert code == 130


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
