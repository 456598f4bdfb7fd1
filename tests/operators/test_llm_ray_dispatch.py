"""One dispatcher per endpoint on Ray: the copies of an OpenAIClient in several actors
share its limit and its order (alto.runtime.ray.shared_dispatcher)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import alto
from alto.operators.llm import OpenAIClient
from alto.operators.llm.dispatch import Dispatcher

ray = pytest.importorskip("ray")

from alto.runtime.ray.shared_dispatcher import SharedDispatcher  # noqa: E402


class Counting(ThreadingHTTPServer):
    """A completions server on loopback that counts the calls in flight at once."""

    daemon_threads = True

    def __init__(self, delay: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.delay = delay
        self.lock = threading.Lock()
        self.inflight = 0
        self.most = 0
        self.calls = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: Counting

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        with server.lock:
            server.inflight += 1
            server.calls += 1
            server.most = max(server.most, server.inflight)
        time.sleep(server.delay)
        with server.lock:
            server.inflight -= 1
        answer = json.dumps({
            "choices": [{"text": body["prompt"].upper()}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def server() -> Iterator[Counting]:
    s = Counting(delay=0.05)
    thread = threading.Thread(target=s.serve_forever, daemon=True)
    thread.start()
    try:
        yield s
    finally:
        s.shutdown()
        s.server_close()


@pytest.fixture(scope="module")
def on_ray() -> Iterator[Any]:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def test_a_copy_outside_ray_keeps_its_own_dispatcher() -> None:
    client = OpenAIClient(["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"], "m")
    copy = pickle.loads(pickle.dumps(client))
    assert copy._identity == client._identity
    assert type(copy.dispatcher) is Dispatcher
    assert OpenAIClient("http://127.0.0.1:9/v1", "m")._identity != client._identity


def test_the_client_needs_no_ray() -> None:
    code = (
        "import sys, pickle; sys.modules['ray'] = None\n"  # import ray fails
        "from alto.operators.llm import OpenAIClient\n"
        "c = pickle.loads(pickle.dumps(OpenAIClient('http://127.0.0.1:9/v1', 'm')))\n"
        "print(type(c.dispatcher).__name__, c.dispatch_stats().replicas[0].calls)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Dispatcher", "0"]


def _client(url: str, **knobs: Any) -> OpenAIClient:
    return OpenAIClient(url, "m", api_key_env=None, max_retries=0, **knobs)


def _flow(llm: OpenAIClient) -> Any:
    @alto.stage(replicas=2)
    async def ask(q: str) -> str:
        return await llm.complete(q, max_tokens=4)

    @alto.flow
    def asking(q: str) -> Any:
        return ask(q)

    return asking


@pytest.mark.ray
@pytest.mark.anyio
async def test_two_actors_share_one_limit_and_give_the_local_outputs(
    on_ray: Any, server: Counting
) -> None:
    questions = [f"question {i}" for i in range(12)]
    local = await _flow(_client(server.url, max_inflight=1)).run(questions)
    assert server.most == 1
    server.most = server.calls = 0

    llm = _client(server.url, max_inflight=1)
    remote = await _flow(llm).run(questions, backend="ray")
    assert remote == local
    assert server.calls == len(questions)
    assert server.most == 1  # two actors, one slot: never two calls at the server at once
    stats = llm.dispatch_stats()  # the actors' shared state, read by the driver's client
    assert stats.replicas[0].calls == len(questions)
    assert stats.replicas[0].prompt_tokens == 3 * len(questions)
    assert stats.replicas[0].inflight == 0
    assert llm.dispatcher.stats().replicas[0].calls == 0  # the driver made no call itself


class Caller:
    """A Ray actor that takes leases of its copy of a client, with a made-up lineage."""

    def __init__(self, llm: OpenAIClient, log: Any) -> None:
        self.llm = llm
        self.log = log
        self.go: dict[int, Any] = {}

    def die(self) -> None:
        os._exit(1)  # no cleanup: the lease it holds is never given back

    def shared(self) -> bool:
        return isinstance(self.llm.dispatcher, SharedDispatcher)

    async def call(self, root: int, hold: bool = False) -> int:
        import anyio

        from alto.lineage import CallSite, fresh_slot

        slot = fresh_slot()
        slot.site = CallSite("run", "ask", {root: float(root)})
        slot.one = (root,)
        if hold:
            self.go[root] = anyio.Event()
        async with self.llm.dispatcher.lease("") as lease:
            await self.log.append.remote(root)
            if hold:
                await self.go[root].wait()
            lease.done(output_tokens=1)
        return root

    async def let_go(self, root: int) -> None:
        self.go[root].set()


class Log:
    def __init__(self) -> None:
        self.items: list[int] = []

    async def append(self, item: int) -> None:
        self.items.append(item)

    async def get(self) -> list[int]:
        return list(self.items)


def _queued(llm: OpenAIClient) -> int:
    return llm.dispatch_stats().queued


def _until(test: Any, what: str) -> None:
    deadline = time.monotonic() + 60
    while not test():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.ray
@pytest.mark.parametrize("order", ["root-first", "fifo"])
def test_the_order_holds_across_actors(on_ray: Any, order: str) -> None:
    llm = _client("http://127.0.0.1:9/v1", max_inflight=1, order=order)
    log = ray.remote(Log).options(num_cpus=0).remote()
    a, b = (ray.remote(Caller).options(num_cpus=0).remote(llm, log) for _ in range(2))
    assert ray.get([a.shared.remote(), b.shared.remote()]) == [True, True]
    first = a.call.remote(9, hold=True)  # takes the one slot and keeps it
    _until(lambda: ray.get(log.get.remote()) == [9], "the first lease")
    arrival = [5, 2, 7, 1, 4, 3]
    refs = []
    for n, root in enumerate(arrival):  # from both actors, one at a time into the queue
        refs.append((a if n % 2 else b).call.remote(root))
        _until(lambda n=n: _queued(llm) == n + 1, f"{n + 1} calls queued")
    ray.get(a.let_go.remote(9))
    assert ray.get([first, *refs]) == [9, *arrival]
    served = ray.get(log.get.remote())[1:]
    assert served == (sorted(arrival) if order == "root-first" else arrival)
    stats = llm.dispatch_stats()
    assert stats.replicas[0].calls == 1 + len(arrival)
    assert stats.replicas[0].inflight == 0 and stats.queued == 0


@pytest.mark.ray
def test_a_call_cancelled_while_queued_gives_up_its_place(on_ray: Any) -> None:
    llm = _client("http://127.0.0.1:9/v1", max_inflight=1)
    log = ray.remote(Log).options(num_cpus=0).remote()
    a, b = (ray.remote(Caller).options(num_cpus=0).remote(llm, log) for _ in range(2))
    first = a.call.remote(1, hold=True)
    _until(lambda: ray.get(log.get.remote()) == [1], "the first lease")
    waiting = b.call.remote(2)
    _until(lambda: _queued(llm) == 1, "a queued call")
    ray.cancel(waiting)
    _until(lambda: _queued(llm) == 0, "the cancelled call to leave the queue")
    ray.get(a.let_go.remote(1))
    assert ray.get(first) == 1
    assert ray.get(b.call.remote(3)) == 3  # the slot came back: the next call gets it
    assert ray.get(log.get.remote()) == [1, 3]
    assert llm.dispatch_stats().replicas[0].inflight == 0


@pytest.mark.ray
def test_the_slot_of_an_actor_that_died_holding_it_comes_back(on_ray: Any) -> None:
    llm = _client("http://127.0.0.1:9/v1", max_inflight=1)
    log = ray.remote(Log).options(num_cpus=0).remote()
    a, b = (ray.remote(Caller).options(num_cpus=0).remote(llm, log) for _ in range(2))
    a.call.remote(1, hold=True)  # never let go: its actor dies holding the slot
    _until(lambda: ray.get(log.get.remote()) == [1], "the first lease")
    waiting = b.call.remote(2)
    _until(lambda: _queued(llm) == 1, "a queued call")
    a.die.remote()
    assert ray.get(waiting, timeout=60) == 2
    assert ray.get(log.get.remote()) == [1, 2]
    # the dispatch actor found the holder dead and freed its slot (the dispatcher's liveness
    # guard may have let the waiting call in first, over the limit, but frees nothing)
    _until(lambda: llm.dispatch_stats().replicas[0].inflight == 0, "the dead actor's slot")
    assert llm.dispatch_stats().replicas[0].failures == 0
