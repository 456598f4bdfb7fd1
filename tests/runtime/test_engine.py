"""The engine's run skeleton, with an executor it knows only through the Executor protocol.

The engine starts the executor, runs the tasks it gives for each stage beside the input
source, asks it whether stages are busy (the batch policy), and always closes it: after a
clean run, after a failed start, after a cancellation.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import alto
from alto import Gather, Split
from alto.result import Result
from alto.runtime.engine import Engine, Executor, StagePorts, StageTask, StageWiring
from alto.runtime.local import LocalExecutor

pytestmark = pytest.mark.anyio


@alto.stage
async def words(text: str) -> Split[str]:
    for w in text.split():
        yield w


@alto.stage(replicas=2)
async def upper(w: str) -> str:
    return w.upper()


@alto.stage
async def joined(ws: Gather[str]) -> str:
    return " ".join(ws)


@alto.flow
def shout(text: str):
    return joined(upper(words(text)))


class Recording:
    """An executor that runs calls with the local one and records what the engine asks."""

    def __init__(self, fail_start: bool = False) -> None:
        self.inner = LocalExecutor()
        self.fail_start = fail_start
        self.log: list[Any] = []

    def wiring(self, node: Any) -> StageWiring:
        self.log.append(("wiring", node.name))
        return self.inner.wiring(node)

    async def start(self, engine: Engine) -> None:
        self.log.append("start")
        if self.fail_start:
            msg = "no workers today"
            raise RuntimeError(msg)
        await self.inner.start(engine)

    def stage_tasks(self, ports: StagePorts) -> list[StageTask]:
        tasks = self.inner.stage_tasks(ports)
        self.log.append(("tasks", ports.node.name, [name for name, _ in tasks]))
        return tasks

    def busy(self, stage: str) -> bool:
        self.log.append(("busy", stage))
        return self.inner.busy(stage)

    async def beside(self) -> None:
        self.log.append("beside")

    async def close(self, clean: bool) -> None:
        self.log.append(("close", clean))


def collect() -> tuple[list[Result[Any]], Any]:
    results: list[Result[Any]] = []
    return results, results.append


async def test_a_clean_run_asks_the_executor_in_order_and_closes_it_once() -> None:
    executor = Recording()
    _: Executor = executor  # it is an Executor by structure alone
    results, on_result = collect()
    engine = Engine(shout.plan, on_result, executor)
    await engine.execute(["a b c", "d"])
    assert sorted((r.index, r.value) for r in results) == [(0, "A B C"), (1, "D")]
    names = [n.name for n in shout.plan.nodes]
    assert executor.log[: len(names)] == [("wiring", name) for name in names]
    assert executor.log[len(names)] == "start"
    tasks = {entry[1]: entry[2] for entry in executor.log if entry[0] == "tasks"}
    assert tasks["upper"] == ["alto:upper[0]", "alto:upper[1]"]  # one task per replica
    assert tasks["joined"] == ["alto:joined[0]"]
    assert "beside" in executor.log
    assert executor.log[-1] == ("close", True)
    assert executor.log.count(("close", True)) == 1
    assert engine.stats.finished >= engine.stats.started > 0


async def test_a_failed_start_still_closes_the_executor() -> None:
    executor = Recording(fail_start=True)
    results, on_result = collect()
    engine = Engine(shout.plan, on_result, executor)
    with pytest.raises(RuntimeError, match="no workers today"):
        await engine.execute(["a"])
    assert executor.log[-1] == ("close", False)
    assert not any(entry[0] == "tasks" for entry in executor.log if isinstance(entry, tuple))
    assert results == [] and engine.stats.finished > 0


async def test_a_cancelled_run_closes_the_executor_as_not_clean() -> None:
    started = anyio.Event()

    @alto.stage
    async def stuck(text: str) -> str:
        started.set()
        await anyio.sleep(3600)
        return text

    @alto.flow
    def f(text: str):
        return stuck(text)

    executor = Recording()
    _, on_result = collect()
    engine = Engine(f.plan, on_result, executor)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.execute, ["x"])
            await started.wait()
            tg.cancel_scope.cancel()
    assert executor.log[-1] == ("close", False)


async def test_the_batch_policy_asks_the_executor_whether_upstream_is_busy() -> None:
    @alto.stage
    async def slowly(n: int) -> Split[int]:
        for i in range(n):
            await anyio.sleep(0.01)
            yield i

    @alto.stage(batch=8, batch_timeout=3600)
    async def doubled(xs: list[int]) -> list[int]:
        return [2 * x for x in xs]

    @alto.stage
    async def total(xs: Gather[int]) -> int:
        return sum(xs)

    @alto.flow
    def f(n: int):
        return total(doubled(slowly(n)))

    executor = Recording()
    results, on_result = collect()
    with anyio.fail_after(60):  # only reached if a partial batch waited out its hour
        await Engine(f.plan, on_result, executor).execute([3])
    assert [(r.index, r.value) for r in results] == [(0, 6)]
    assert ("busy", "slowly") in executor.log
