"""Security basics: model output is data, servers listen on loopback, API keys stay secret.

* LLM output that looks like code, shell or a path is carried through flows (and an example
  app) as plain strings: an audit hook records that nothing evaluates, runs or opens it.
* Every server Alto starts (the serving-timing emulator, in a thread, in a process, and from
  its command line) listens on 127.0.0.1 unless told otherwise, and nothing under ``alto/``
  defaults to another address.
* The API key is read from the environment only, sent to the server, and appears in no log
  line (DEBUG included), no stderr output, no repr and no error message, whatever garbage
  (echoing the key) the server answers.
"""

from __future__ import annotations

import ast
import inspect
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from faultkit import Reply, Request, chain, client, fault, scripted

import alto
from alto import Gather, Split
from alto.bench.emulator import EmulatorConfig, EmulatorServer, FaultConfig
from alto.operators.llm import (
    LLMError,
    LLMServerError,
    OpenAIClient,
    StructuredOutputError,
)

pytestmark = pytest.mark.anyio

ALTO = Path(alto.__file__).resolve().parent

# -- LLM output is data ------------------------------------------------------------------------

_AUDIT: list[tuple[str, str]] = []
_RECORDING: list[tuple[str, ...]] = []  # the markers to look for, while a test records


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _RECORDING:
        return
    if event in ("open", "os.system", "subprocess.Popen", "os.exec", "os.posix_spawn",
                 "compile", "exec", "os.listdir", "os.scandir", "os.remove", "shutil.rmtree",
                 "os.rename", "os.mkdir", "socket.connect", "urllib.Request"):
        try:
            text = repr(args)
        except Exception:  # pragma: no cover - an argument without a usable repr
            return
        if any(marker in text for marker in _RECORDING[-1]):
            _AUDIT.append((event, text[:300]))


sys.addaudithook(_audit)  # hooks cannot be removed; this one is inert unless recording


def payloads(tmp: Path) -> list[str]:
    return [
        f"__import__('os').system('touch {tmp}/pwned')",
        "../../../../etc/passwd",
        f"{tmp}/secret.txt",
        "{{ self.__init__.__globals__ }} ${jndi:ldap://127.0.0.1/x} $(rm -rf ~); `id`",
        "eval(compile('open(\"/etc/shadow\")', 'x', 'exec'))",
    ]


MARKERS = ("pwned", "etc/passwd", "secret.txt", "jndi", "etc/shadow", "rm -rf")


@fault("LLM output that looks like code, shell commands or file paths",
       where="scripted server",
       observed="carried through split, map and gather as plain strings, byte for byte; an "
       "audit hook sees no open, exec, compile, system or spawn of it",
       roots="none fail")
async def test_llm_output_is_only_data(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("do not read me")
    texts = payloads(tmp_path)

    async def handler(req: Request, reply: Reply, n: int) -> None:
        i = int(req.prompt.split()[-1])
        await reply.answer(req, texts[i] + "\n" + texts[(i + 1) % len(texts)])

    @alto.stage
    async def lines(answer: str) -> Split[str]:
        for line in answer.splitlines():
            yield line

    @alto.stage
    async def describe(line: str) -> dict[str, Any]:
        return {"text": line, "looks_like_path": line.startswith(("/", ".")), "n": len(line)}

    @alto.stage
    async def collect(found: Gather[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(found)

    _AUDIT.clear()
    _RECORDING.append(MARKERS)
    try:
        async with scripted(handler) as server, client(server.url) as llm:

            @alto.stage(replicas=4)
            async def ask(question: str) -> str:
                return await llm.chat([{"role": "user", "content": question}])

            @alto.flow
            def f(question: str):
                return collect(describe(lines(ask(question))))

            with anyio.fail_after(30):
                out = await f.run([f"tell me {i}" for i in range(len(texts))])
    finally:
        _RECORDING.pop()
    for i, found in enumerate(out):
        expected = [texts[i], texts[(i + 1) % len(texts)]]
        assert [d["text"] for d in found] == expected
        assert [d["n"] for d in found] == [len(t) for t in expected]
    assert not (tmp_path / "pwned").exists()
    assert _AUDIT == []


@pytest.mark.slow
@fault("LLM output that looks like code or paths, inside an example app",
       where="scripted FakeLLM in the factcheck app",
       observed="the app's claims are the answer's sentences, as text; no file is opened and "
       "nothing is executed (audit hook)", roots="none fail")
async def test_example_app_treats_llm_output_as_text(tmp_path: Path) -> None:
    from alto.testing import FakeLLM
    from examples.common import fake_operators
    from examples.factcheck.flow import build

    texts = payloads(tmp_path)
    answer = " ".join(t.rstrip(".") + "." for t in texts)
    ops = await fake_operators(passages=50)
    ops.llm = FakeLLM(lambda prompt: answer if "plain sentences" in prompt else "query one")
    _AUDIT.clear()
    _RECORDING.append(MARKERS)
    try:
        with anyio.fail_after(60):
            (report,) = await build(ops).run(["What does the shell do?"])
    finally:
        _RECORDING.pop()
    claims = [c.claim for c in report.claims]  # the answer's sentences, as the app split it
    assert claims[0] == texts[0] + "." and all(c in answer for c in claims)
    assert "../../../../etc/passwd" in " ".join(claims)
    assert not (tmp_path / "pwned").exists()
    assert _AUDIT == []


# -- servers listen on loopback ----------------------------------------------------------------


def _listening(process: psutil.Process, port: int) -> list[str]:
    return [c.laddr.ip for c in process.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port]


@fault("could a server Alto starts be reached from other machines?",
       where="serving-timing emulator: thread, process and command line",
       observed="no: each listens on 127.0.0.1 only, unless a host is passed",
       roots="n/a")
def test_emulator_listens_on_loopback_by_default() -> None:
    for mode in ("thread", "process"):
        with EmulatorServer(mode=mode) as server:  # type: ignore[arg-type]
            assert server.host == "127.0.0.1" and server.base_url.startswith("http://127.0.0.1:")
            owner = psutil.Process()
            if mode == "process":
                (owner,) = [p for p in owner.children() if _listening(p, server.port)]
            assert _listening(owner, server.port) == ["127.0.0.1"]

    proc = subprocess.Popen([sys.executable, "-m", "alto.bench.emulator", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving http://127.0.0.1:" in line
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        assert _listening(psutil.Process(proc.pid), port) == ["127.0.0.1"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@fault("a host default under alto/ other than loopback", where="source scan of alto/",
       observed="none: every host parameter and --host option defaults to 127.0.0.1, and no "
       "wildcard address (0.0.0.0, ::) is written anywhere", roots="n/a")
def test_nothing_under_alto_defaults_to_a_public_address() -> None:
    """Every ``host`` parameter and ``--host`` option under ``alto/`` defaults to loopback, and
    no wildcard address is written anywhere."""
    hosts: list[str] = []
    for path in sorted(ALTO.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in ("0.0.0.0", "::", "[::]"):
                pytest.fail(f"{path}:{node.lineno} writes the wildcard address {node.value!r}")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                positional = args.posonlyargs + args.args
                pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
                pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d]
                for arg, default in pairs:
                    if arg.arg in ("host", "bind", "listen"):
                        assert isinstance(default, ast.Constant), f"{path}:{node.lineno}"
                        assert default.value in LOOPBACK, f"{path}:{node.lineno} {arg.arg}"
                        hosts.append(f"{path.name}:{node.name}")
            if isinstance(node, ast.ClassDef):  # a dataclass's fields
                for item in node.body:
                    if (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                            and item.target.id in ("host", "bind", "listen")):
                        default = item.value
                        assert isinstance(default, ast.Constant), f"{path}:{item.lineno}"
                        assert default.value in LOOPBACK, f"{path}:{item.lineno}"
                        hosts.append(f"{path.name}:{node.name}")
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"
                    and any(isinstance(a, ast.Constant) and a.value == "--host"
                            for a in node.args)):
                default = next(k.value for k in node.keywords if k.arg == "default")
                assert isinstance(default, ast.Constant) and default.value in LOOPBACK
                hosts.append(f"{path.name}:--host")
    assert {"launch.py:--host", "launch.py:EmulatorServer", "proxy.py:BalancerProxy"} <= set(hosts)


# -- API keys ---------------------------------------------------------------------------------

SECRET = "sk-alto-FAULT-SUITE-7c1e5d9a"


@fault("an API key passed in code", where="OpenAIClient's signature",
       observed="refused (TypeError): the key is read from the environment variable named by "
       "api_key_env only; the client's repr says whether it is set, never the key",
       roots="n/a")
def test_the_api_key_comes_only_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    params = inspect.signature(OpenAIClient).parameters
    assert [p for p in params if "key" in p.lower()] == ["api_key_env"]
    with pytest.raises(TypeError):
        OpenAIClient("http://127.0.0.1:9/v1", "m", api_key=SECRET)  # type: ignore[call-arg]
    monkeypatch.setenv("ALTO_FAULT_KEY", SECRET)
    llm = OpenAIClient("http://127.0.0.1:9/v1", "m", api_key_env="ALTO_FAULT_KEY")
    assert SECRET not in repr(llm) and SECRET not in llm.name
    assert "$ALTO_FAULT_KEY set" in repr(llm)
    assert SECRET not in repr(vars(llm).get("_settings"))


def _echo(req: Request) -> str:
    return f"you sent {req.headers.get('authorization')}"


@fault("a server that echoes the API key back in errors, bodies and streams",
       where="scripted server; the emulator answering HTTP 500",
       observed="errors name the URL and status with the key replaced by ***; the key is in "
       "no log record (DEBUG), no stderr output, no repr and no error text",
       roots="only the roots whose answers were bad")
async def test_api_key_never_appears_in_logs_reprs_or_errors(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ALTO_FAULT_KEY", SECRET)
    caplog.set_level(logging.DEBUG)

    kinds = ["unauthorized", "crash", "error200", "shapeless", "notjson", "sseline", "ssedata",
             "ssechunk", "sseerror", "html", "structured", "healthy"]
    streamed = {"sseline", "ssedata", "ssechunk", "sseerror", "html"}

    async def handler(req: Request, reply: Reply, n: int) -> None:
        kind = next(k for k in kinds if f"{k} please" in req.body.decode())
        echo = _echo(req)
        if kind == "unauthorized":
            await reply.json(401, {"error": echo})
        elif kind == "crash":
            await reply.json(500, {"error": {"message": echo}})
        elif kind == "error200":
            await reply.json(200, {"error": {"message": echo}})
        elif kind == "shapeless":
            await reply.json(200, {"result": echo})
        elif kind == "notjson":
            await reply.json(200, echo.encode())
        elif kind == "sseline":
            await reply.sse_head()
            await reply.raw(f"{echo}\n\n".encode())
        elif kind == "ssedata":
            await reply.sse_head()
            await reply.raw(f"data: {echo}\n\n".encode())
        elif kind == "ssechunk":
            await reply.sse_head()
            await reply.raw(f'data: {{"choices": [{{"delta": "{echo}"}}]}}\n\n'.encode())
        elif kind == "sseerror":
            await reply.sse_head()
            await reply.raw(f'data: {{"error": {{"message": "{echo}"}}}}\n\n'.encode())
        elif kind == "html":
            await reply.raw(f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close"
                            f"\r\n\r\n<p>{echo}</p>".encode())
        elif kind == "structured":
            await reply.chat(f'{{"claim": "{echo}"')
        else:
            await reply.answer(req, "all good")

    from pydantic import BaseModel

    class Claim(BaseModel):
        claim: str

    async with scripted(handler) as server:
        llm = client(server.url, api_key_env="ALTO_FAULT_KEY", max_retries=1,
                     json_mode="json_object")
        logging.getLogger("alto.test").debug("client %r", llm)

        @alto.stage(replicas=4)
        async def ask(kind: str) -> str:
            messages = [{"role": "user", "content": f"{kind} please"}]
            if kind == "structured":
                return (await llm.structured(messages, Claim, reasks=1)).claim
            if kind in streamed:
                return "".join([p async for p in llm.stream(messages)])
            return await llm.chat(messages)

        @alto.flow
        def f(kind: str):
            return ask(kind)

        with anyio.fail_after(30), pytest.raises(alto.PipelineError) as err:
            await f.run(kinds)
        await llm.aclose()
        assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in server.requests)

    # the emulator (in this process, so its logs are captured too) gets the key as well
    faults = FaultConfig(error_rate=0.5, seed=3)
    with EmulatorServer(EmulatorConfig(time_scale=0.0, faults=faults)) as emulated:
        async with client(emulated.base_url, api_key_env="ALTO_FAULT_KEY", max_retries=0) as llm:
            for i in range(6):
                with anyio.fail_after(30):
                    try:
                        await llm.chat([{"role": "user", "content": f"Hello {i}. Who?"}])
                    except LLMServerError as exc:
                        shown_by_emulator = [str(exc), repr(exc), exc.body]
                        assert "500" in str(exc) and not any(SECRET in t for t in shown_by_emulator)
        assert emulated.stats()["faults"]

    results = err.value.results
    assert results[-1] == "all good"
    assert len(err.value.failures) == len(kinds) - 1
    shown = [str(err.value), repr(err.value), repr(llm), caplog.text]
    for failure in err.value.failures:
        for e in chain(failure):
            shown += [str(e), repr(e), repr(e.args)]
            if isinstance(e, (LLMError, alto.AltoError)):  # their fields, as users read them
                shown += [repr(v) for v in vars(e).values() if not isinstance(v, BaseException)]
        cause = failure.cause
        assert server.url in str(cause) or isinstance(cause, StructuredOutputError)
    out, errors = capfd.readouterr()
    shown += [out, errors]
    assert any("***" in text for text in shown)  # the echoes were there, redacted
    leaks = [text[max(0, text.index(SECRET) - 150):][:200] for text in shown if SECRET in text]
    assert not leaks
