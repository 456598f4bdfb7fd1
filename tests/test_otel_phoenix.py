"""End to end: ``alto run --otel`` sends a run's trace to a real Arize Phoenix on loopback,
and Phoenix's REST API gives the spans back with their tree and attributes."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

pytestmark = [pytest.mark.phoenix, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``phoenix serve`` on free loopback ports, its database in a temporary folder."""
    # found, not imported: importing Phoenix loads thousands of modules
    exe = shutil.which("phoenix", path=str(Path(sys.executable).parent))
    if importlib.util.find_spec("phoenix") is None or exe is None:
        pytest.skip("needs Arize Phoenix: pip install 'alto[phoenix]'")
    work = tmp_path_factory.mktemp("phoenix")
    port = free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(free_port()),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    log = (work / "phoenix.log").open("wb")
    process = subprocess.Popen([exe, "serve"], cwd=work, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"phoenix serve exited: {(work / 'phoenix.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("phoenix serve did not answer within 180 s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def read_spans(url: str, names: set[str], timeout: float = 60) -> list[dict[str, Any]]:
    """The default project's spans, once every name in ``names`` is among them and the count
    has stopped growing.

    Phoenix ingests what it receives in the background, in its own order: the run's top span
    ends (and is exported) last, so it may be stored after its children have been counted.
    """
    deadline = time.monotonic() + timeout
    spans: list[dict[str, Any]] = []
    last = -1
    while time.monotonic() < deadline:
        answer = httpx.get(f"{url}/v1/projects/default/spans", params={"limit": 1000}, timeout=10)
        if answer.status_code == 200:
            spans = answer.json()["data"]
            if names <= {s["name"] for s in spans} and len(spans) == last:
                return spans
            last = len(spans)
        time.sleep(1.0)
    return spans


def test_alto_run_otel_reaches_phoenix(phoenix: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "alto.cli", "run", "factcheck", "--n", "2", "--llm", "fake",
         "--embedder", "hash", "--json", "--otel", f"{phoenix}/v1/traces"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert f"sent to {phoenix}/v1/traces" in run.stderr
    assert len(json.loads(run.stdout)["results"]) == 2

    spans = read_spans(phoenix, {"run factcheck", "input 0", "input 1"})
    by_id = {s["context"]["span_id"]: s for s in spans}
    (top,) = [s for s in spans if s["name"] == "run factcheck"]
    assert top["parent_id"] is None
    assert top["attributes"]["alto.inputs"] == 2
    trace_id = top["context"]["trace_id"]
    inputs = {s["attributes"]["alto.root"]: s for s in spans if s["name"].startswith("input ")}
    assert sorted(inputs) == [0, 1]
    for span in inputs.values():
        assert span["parent_id"] == top["context"]["span_id"]
        assert span["attributes"]["alto.outcome"] == "ok"

    calls = [s for s in spans if "alto.stage" in s["attributes"]]
    stages = {s["attributes"]["alto.stage"] for s in calls}
    assert stages == set(top["attributes"]["alto.stages"])
    for call in calls:
        assert call["context"]["trace_id"] == trace_id
        assert call["parent_id"] == inputs[call["attributes"]["alto.root"]]["context"]["span_id"]
        assert call["attributes"]["alto.ancestry"].startswith(
            f"root {call['attributes']['alto.root']}"
        )

    retrievals = [s for s in spans if s["attributes"].get("gen_ai.operation.name") == "retrieval"]
    assert retrievals, "the retriever's calls have spans"
    for span in retrievals:
        assert span["span_kind"] == "RETRIEVER"
        assert by_id[span["parent_id"]]["attributes"]["alto.stage"] == "retrieve"
