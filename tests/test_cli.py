"""The ``alto`` command: every subcommand, and every kind of bad input, as a user runs it."""

from __future__ import annotations

import argparse
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alto import cli

FAST = ["--llm", "fake", "--embedder", "hash"]


def alto(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alto.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alto: error:"), result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_list() -> None:
    result = alto("list")
    assert result.returncode == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == ["factcheck", "multihop", "summarize", "ingest"]


@pytest.mark.parametrize("app", ["factcheck", "multihop", "summarize", "ingest"])
def test_graph(app: str) -> None:
    result = alto("graph", app)
    assert result.returncode == 0
    assert f"flow {app}(" in result.stdout and "@level 1" in result.stdout
    assert "flowchart TD" in result.stdout and "gather" in result.stdout
    assert alto("graph", app, "--mermaid").stdout.startswith("flowchart TD")


def test_run_readable_and_json(tmp_path: Path) -> None:
    result = alto("run", "factcheck", "--n", "2", *FAST)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Q: ") == 2 and "factcheck: 2/2 inputs" in result.stdout

    result = alto("run", "summarize", "--n", "2", "--json", *FAST)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["app"] == "summarize" and len(data["results"]) == 2
    assert all(r["error"] is None and r["output"]["summary"] for r in data["results"])
    assert [s["name"] for s in data["stats"]["stages"]][0] == "sections"


def test_run_from_file_with_trace(tmp_path: Path) -> None:
    inputs = tmp_path / "questions.jsonl"
    inputs.write_text('"What is a compiler?"\n{"question": "What is an interpreter?"}\n')
    trace = tmp_path / "trace.json"
    result = alto("run", "multihop", "--input", str(inputs), "--trace", str(trace), *FAST)
    assert result.returncode == 0, result.stderr
    assert "Q: What is a compiler?" in result.stdout
    events = json.loads(trace.read_text())["traceEvents"]
    stages = {e["name"] for e in events if e.get("ph") == "X" and e.get("cat") == "stage"}
    assert {"subquestions", "embed", "search", "rerank", "answer", "compose"} <= stages


def test_run_on_the_timing_emulator() -> None:
    result = alto("run", "multihop", "--n", "2", "--llm", "emulated", "--embedder", "hash",
                  "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "timing emulation" in data["operators"]["llm"]
    assert all(r["error"] is None and r["output"]["answer"] for r in data["results"])
    (endpoint,) = data["endpoints"]  # the LLM client's dispatcher, as plain data
    (replica,) = endpoint["replicas"]
    llm_stages = {"subquestions", "answer", "compose"}
    calls = sum(s["calls"] for s in data["stats"]["stages"] if s["name"] in llm_stages)
    assert replica["calls"] == calls > 0 and replica["inflight"] == endpoint["queued"] == 0
    assert 0 <= replica["cached_tokens"] <= replica["prompt_tokens"]


def _stage_calls(stdout: str, stages: set[str]) -> int:
    """The calls of ``stages`` in ``--stats``' stage table."""
    rows = [line.split() for line in stdout.splitlines()]
    return sum(int(row[4]) for row in rows if len(row) == 8 and row[0] in stages)


def test_stats_and_trace_show_the_llm_endpoints_dispatcher(tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    result = alto("run", "multihop", "--n", "2", "--llm", "emulated", "--embedder", "hash",
                  "--stats", "--trace", str(trace))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    (head,) = [i for i, line in enumerate(lines) if line.startswith("replica ")]
    assert lines[head].split() == ["replica", "calls", "in", "flight", "limit", "cached",
                                   "failures", "healthy"]
    assert "order root-first, route lineage" in lines[head - 1]
    assert "queued 0 now" in lines[head - 1]  # the run is over: nothing waits
    target, calls, inflight, limit, cached, failures, healthy = lines[head + 1].split()
    assert target.startswith("http://127.0.0.1:") and target.endswith("/v1")
    # every LLM call of the run's stages went through the dispatcher, once
    assert int(calls) == _stage_calls(result.stdout, {"subquestions", "answer", "compose"}) > 0
    assert (inflight, failures, healthy) == ("0", "0", "yes")
    assert int(limit) >= 1 and cached.endswith("%")

    events = json.loads(trace.read_text())["traceEvents"]
    counters = [e for e in events if e.get("ph") == "C"]
    flights = [e for e in counters if e["name"] == f"in flight [0] {target}"]
    queued = [e for e in counters if e["name"] == "queued"]
    assert flights and queued
    assert max(e["args"]["in flight"] for e in flights) >= 1
    assert flights[-1]["args"]["in flight"] == 0 and queued[-1]["args"]["queued"] == 0
    # on the stage calls' time axis: within the run
    spans = [e for e in events if e.get("ph") == "X" and e.get("cat") == "stage"]
    end = max(e["ts"] + e["dur"] for e in spans)
    assert all(0 <= e["ts"] <= end + 1e3 for e in counters)
    (process,) = [e for e in events if e.get("ph") == "M" and e.get("pid") == flights[0]["pid"]
                  and e["name"] == "process_name"]
    assert process["args"]["name"].startswith("LLM endpoint ")


def test_stats_without_a_dispatching_llm_has_no_endpoint_table() -> None:
    result = alto("run", "factcheck", "--n", "1", "--stats", *FAST)
    assert result.returncode == 0, result.stderr
    assert "stage " in result.stdout and "in flight" not in result.stdout


def test_ingest_file_is_one_corpus(tmp_path: Path) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps({"id": f"d{i}", "text": f"text number {i} " * 30})
                              for i in range(5)))
    result = alto("run", "ingest", "--input", str(docs), "--json", *FAST)
    assert result.returncode == 0, result.stderr
    (out,) = json.loads(result.stdout)["results"]
    assert out["input"] == {"corpus": "file-5", "documents": 5}
    assert out["output"]["documents"] == 5


def test_unknown_app() -> None:
    assert_one_line_error(alto("run", "nope"), "unknown app 'nope'", "factcheck")
    assert_one_line_error(alto("graph", "nope"), "unknown app 'nope'")


def test_missing_and_bad_input_files(tmp_path: Path) -> None:
    assert_one_line_error(alto("run", "factcheck", "--input", str(tmp_path / "none.jsonl")),
                          "does not exist")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    assert_one_line_error(alto("run", "factcheck", "--input", str(bad), *FAST), "not JSON")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"title": "ok", "text": "fine"}\n{"title": 3}\n')
    assert_one_line_error(alto("run", "summarize", "--input", str(wrong), *FAST), "input 1")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert_one_line_error(alto("run", "factcheck", "--input", str(empty)), "no inputs")


def test_config_file(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text('{"max_claims": 1}')
    result = alto("run", "factcheck", "--n", "2", "--json", "--config", str(good), *FAST)
    assert result.returncode == 0, result.stderr
    assert all(len(r["output"]["claims"]) <= 1 for r in json.loads(result.stdout)["results"])
    bad = tmp_path / "bad.json"
    bad.write_text('{"max_claims": "lots", "colour": 1}')
    assert_one_line_error(alto("run", "factcheck", "--config", str(bad), *FAST),
                          "not a valid factcheck config", "max_claims", "colour")
    assert_one_line_error(alto("run", "factcheck", "--config", str(tmp_path / "no.json")),
                          "does not exist")


def test_unreachable_llm_server() -> None:
    result = alto("run", "factcheck", "--llm", "openai", "--llm-url", "http://127.0.0.1:9/v1")
    assert_one_line_error(result, "cannot reach the LLM server at http://127.0.0.1:9/v1")
    assert_one_line_error(alto("run", "factcheck", "--llm", "openai"), "--llm-url")


def test_bad_numbers_and_debug() -> None:
    assert_one_line_error(alto("run", "factcheck", "--n", "0"), "--n must be at least 1")
    result = alto("--debug", "run", "nope")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_n_above_the_shipped_data_set_is_an_error_that_names_its_size() -> None:
    result = alto("run", "factcheck", "--n", "900")
    assert result.returncode == 2
    assert_one_line_error(result, "--n 900: the factcheck data set has 500 inputs; pass --n "
                          "500 or fewer, or --input FILE")
    # ingest's --n counts the documents of its one corpus
    assert_one_line_error(alto("run", "ingest", "--n", "5001"),
                          "the ingest data set has 5000 documents; pass --n 5000 or fewer")


@pytest.mark.parametrize("name", cli.APPS)
def test_n_up_to_each_data_set_is_accepted(name: str) -> None:
    app = cli.load_app(name)
    size = app.available_inputs()
    if name == "ingest":
        (corpus,) = app.load_inputs(size)
        assert len(corpus.documents) == size
    else:
        assert len(app.load_inputs(size)) == size == len(app.load_inputs(size + 1))
    cli.check_shipped_inputs(app, size)
    with pytest.raises(cli.CLIError, match=f"--n {size + 1}: the {name} data set has {size} "):
        cli.check_shipped_inputs(app, size + 1)


def test_global_options_go_before_or_after_the_subcommand() -> None:
    parse = cli.parser().parse_args
    assert parse(["--debug", "run", "factcheck"]).debug is True
    assert parse(["run", "factcheck", "--debug"]).debug is True
    assert parse(["run", "factcheck"]).debug is False
    assert parse(["graph", "ingest", "--debug"]).debug is True
    assert parse(["--debug", "bench", "ingest"]).debug is True
    assert parse(["list"]).debug is False
    for args in (["run", "nope", "--debug"], ["--debug", "run", "nope"]):
        result = alto(*args)
        assert result.returncode != 0 and "Traceback" in result.stderr, args
    assert_one_line_error(alto("run", "nope"), "unknown app")


def _options(p: argparse.ArgumentParser, path: str = "alto") -> Iterator[tuple[str, Any]]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _options(child, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield f"{path} {'/'.join(action.option_strings) or action.dest}", action


def test_every_option_and_argument_has_help() -> None:
    options = dict(_options(cli.parser()))
    assert "alto run --embedder" in options and "alto graph app" in options
    assert "alto bench --embedder" in options and "alto run --backend" in options
    missing = [name for name, action in options.items() if not action.help]
    assert missing == []
    result = alto("graph", "--help")
    assert result.returncode == 0 and "one of factcheck" in result.stdout


# ------------------------------------------------------------------ a URL that is no LLM server

PAGE = (b"<!DOCTYPE html>\n<html>\n<head>\n<title>Intranet home</title>\n</head>\n<body>\n"
        + b"<p>Welcome</p>\n" * 200 + b"</body>\n</html>\n")


class _Site(http.server.BaseHTTPRequestHandler):
    """A web server on loopback: ``routes`` maps (method, path) to (status, content type, body);
    anything else is http.server's own HTML error page, 404."""

    routes: dict[tuple[str, str], tuple[int, str, bytes]] = {}

    def _answer(self, method: str) -> None:
        if method == "POST":
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
        route = self.routes.get((method, self.path))
        if route is None:
            self.send_error(404)
            return
        status, kind, body = route
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def site() -> Iterator[tuple[str, dict[tuple[str, str], tuple[int, str, bytes]]]]:
    """A real HTTP server on a free loopback port: its URL and its routes (edit them)."""
    routes: dict[tuple[str, str], tuple[int, str, bytes]] = {}
    handler = type("Site", (_Site,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", routes
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_web_server_that_answers_404_is_named_in_one_line(site: Any) -> None:
    url, _ = site
    result = alto("run", "factcheck", "--n", "1", "--llm", "openai", "--llm-url", f"{url}/v1",
                  "--embedder", "hash")
    assert result.returncode == 2
    assert_one_line_error(result, f"the LLM server at {url}/v1 answered HTTP 404 Not Found",
                          f"GET {url}/v1/models", "OpenAI-compatible")
    assert "<" not in result.stderr


def test_a_web_page_instead_of_the_api_is_named_in_one_line(site: Any) -> None:
    url, routes = site
    routes[("GET", "/v1/models")] = (200, "text/html", PAGE)
    result = alto("run", "factcheck", "--llm", "openai", "--llm-url", url, "--embedder", "hash")
    assert_one_line_error(result, f"answered GET {url}/v1/models with an HTML page "
                          '("Intranet home"), not JSON')
    assert "Welcome" not in result.stderr


def test_an_api_that_refuses_completions_fails_each_input_in_one_line(site: Any) -> None:
    url, routes = site
    routes[("GET", "/v1/models")] = (200, "application/json", b'{"object": "list", "data": []}')
    result = alto("run", "factcheck", "--n", "2", "--llm", "openai", "--llm-url", url,
                  "--embedder", "hash")
    assert result.returncode == 1, result.stderr
    failed = [line for line in result.stdout.splitlines() if "FAILED" in line]
    assert len(failed) == 2
    for line in failed:
        assert f"LLM server at {url}/v1/chat/completions answered HTTP 404" in line
        assert 'an HTML page ("Error response")' in line
    assert "<" not in result.stdout + result.stderr
    assert "factcheck: 0/2 inputs" in result.stdout


def test_the_server_check_reads_the_base_url_as_the_client_does(site: Any) -> None:
    url, routes = site
    routes[("GET", "/v1/models")] = (200, "application/json", b'{"object": "list", "data": []}')
    for base in (url, f"{url}/", f"{url}/v1", f"{url}/v1/"):
        cli.check_llm_server(base)
    routes[("GET", "/v1/models")] = (401, "application/json", b'{"error": "no key"}')
    with pytest.raises(cli.CLIError, match=r"HTTP 401 Unauthorized .*set \$OPENAI_API_KEY"):
        cli.check_llm_server(url)


def test_argument_errors_use_argparse() -> None:
    result = alto("run", "factcheck", "--llm", "gpt")
    assert result.returncode == 2 and "invalid choice: 'gpt'" in result.stderr


@pytest.mark.models
@pytest.mark.slow
def test_run_on_the_embedded_models() -> None:
    result = alto("run", "summarize", "--n", "1", "--json", timeout=900)
    assert result.returncode == 0, result.stderr
    (out,) = json.loads(result.stdout)["results"]
    assert out["error"] is None and out["output"]["summary"]
    assert "SmolLM2" in json.loads(result.stdout)["operators"]["llm"]


@pytest.mark.ray
@pytest.mark.slow
def test_run_on_ray_gives_the_local_outputs() -> None:
    outputs = {}
    for backend in ("local", "ray"):
        result = alto("run", "summarize", "--n", "2", "--json", "--backend", backend, *FAST,
                      timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        data = json.loads(result.stdout)
        assert data["backend"] == backend
        outputs[backend] = [r["output"] for r in data["results"]]
    assert outputs["ray"] == outputs["local"]


RAY_AUTH_PROBE = """
import ray
from ray._raylet import AuthenticationMode, get_authentication_mode
from alto.runtime.ray import backend as ray_backend

with ray_backend.connected():
    print("token auth on:", get_authentication_mode() == AuthenticationMode.TOKEN)
"""


@pytest.mark.ray
@pytest.mark.slow
def test_a_private_ray_cluster_keeps_token_auth_without_the_banner() -> None:
    ray = pytest.importorskip("ray")
    # RAY_AUTH_MODE set by anyone silences Ray's notice itself: run as a user who did not
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    result = subprocess.run(
        [sys.executable, "-m", "alto.cli", "run", "ingest", "--n", "2", "--backend", "ray", *FAST],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ray backend" in result.stdout
    assert "Token authentication" not in result.stderr, result.stderr
    if tuple(int(p) for p in ray.__version__.split(".")[:2]) >= (2, 59):
        # Ray's default for a cluster ray.init() starts, since 2.59: authentication on
        probe = subprocess.run([sys.executable, "-c", RAY_AUTH_PROBE], capture_output=True,
                               text=True, timeout=600, env=env)
        assert probe.returncode == 0, probe.stderr[-2000:]
        assert "token auth on: True" in probe.stdout
        assert "Token authentication" not in probe.stderr, probe.stderr
