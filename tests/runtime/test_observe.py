"""The call-observer protocol (alto.runtime.observe): what the invoker tells observers."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

import anyio
import pytest

import alto
from alto import Gather, Split
from alto.ancestry.ancestry import format_ancestry
from alto.runtime.metrics import RunStats
from alto.runtime.observe import CallWatch, StageCall, combined, observing, registered
from alto.runtime.run import RunState

pytestmark = pytest.mark.anyio

CURRENT: ContextVar[str | None] = ContextVar("test_observe_current", default=None)


class Watch(CallWatch):
    def __init__(self, log: list[tuple[Any, ...]], call: StageCall) -> None:
        self.log = log
        self.call = call

    def backed_off(self, attempt: int, again: bool) -> None:
        self.log.append(("backed_off", self.call.stage, attempt, again))

    def failed(self, error: Exception, attempts: int) -> None:
        self.log.append(("failed", self.call.stage, str(error), attempts))


class Recorder:
    """Logs every event, and makes ``CURRENT`` name the call while it runs."""

    def __init__(self, name: str = "recorder") -> None:
        self.name = name
        self.calls: list[StageCall] = []
        self.log: list[tuple[Any, ...]] = []
        self.entered: anyio.Event | None = None  # set when a call starts, if given

    @contextmanager
    def call(self, call: StageCall) -> Iterator[CallWatch]:
        self.calls.append(call)
        self.log.append(("enter", self.name, call.stage))
        token = CURRENT.set(f"{call.stage} {format_ancestry(call.ancestries[0])}")
        if self.entered is not None:
            self.entered.set()
        try:
            yield Watch(self.log, call)
        except BaseException as exc:
            self.log.append(("raised", self.name, call.stage, type(exc).__name__))
            raise
        finally:
            CURRENT.reset(token)
            self.log.append(("exit", self.name, call.stage))


seen: list[str | None] = []


@alto.stage
async def words(text: str) -> Split[str]:
    seen.append(CURRENT.get())
    for word in text.split():
        yield word


@alto.stage(batch=4, batch_timeout=5.0)
async def sizes(items: list[str]) -> list[int]:
    if "poison" in items:
        msg = "poison"
        raise ValueError(msg)
    return [len(w) for w in items]


@alto.stage
async def total(values: Gather[int]) -> int:
    seen.append(CURRENT.get())
    return sum(values)


@alto.flow
def letters(text: str):
    return total(sizes(words(text)))


async def test_every_call_is_observed_once_with_its_kind_and_ancestries() -> None:
    seen.clear()
    recorder = Recorder()
    with observing(recorder):
        assert await letters.run(["a bb", "ccc dd"]) == [3, 5]
    by_stage: dict[str, list[StageCall]] = {}
    for call in recorder.calls:
        by_stage.setdefault(call.stage, []).append(call)
    assert sorted(c.ancestries for c in by_stage["words"]) == [((0,),), ((1,),)]
    assert {c.kind for c in by_stage["words"]} == {"split"}
    assert {c.kind for c in by_stage["total"]} == {"value"}
    assert {c.kind for c in by_stage["sizes"]} == {"batch"}
    served = sorted(a for c in by_stage["sizes"] for a in c.ancestries)
    assert [format_ancestry(a) for a in served] == [
        "root 0 > words[0]", "root 0 > words[1]", "root 1 > words[0]", "root 1 > words[1]"
    ]
    assert {c.replica for c in recorder.calls} == {0}
    # the observer's context is current while the stage function runs
    assert sorted(seen) == ["total root 0", "total root 1", "words root 0", "words root 1"]
    # every call entered is left, and nothing failed or backed off
    assert [e[0] for e in recorder.log].count("enter") == len(recorder.calls)
    assert [e[0] for e in recorder.log].count("exit") == len(recorder.calls)
    assert {e[0] for e in recorder.log} == {"enter", "exit"}


async def test_each_call_of_a_bisected_batch_is_observed() -> None:
    recorder = Recorder()
    dead: list[alto.StageError] = []
    with observing(recorder):
        assert await letters.run(["a bb", "poison dd"], dead_letters=dead) == [3, 2]
    batches = [c for c in recorder.calls if c.stage == "sizes"]
    sizes_of = [len(c.ancestries) for c in batches]
    assert sizes_of == [4, 2, 2, 1, 1]  # the batch, its halves, the failing half's halves
    failed = [e for e in recorder.log if e[0] == "failed"]
    assert failed == [("failed", "sizes", "poison", 1)] * 3  # the batch, a half, the culprit
    assert [format_ancestry(e.ancestry) for e in dead] == ["root 1 > words[0]"]


to_fail: dict[str, int] = {}  # how many more tries of each input fail


@alto.stage(retries=2, retry_backoff=0.001)
async def flaky(text: str) -> str:
    if to_fail.get(text):
        to_fail[text] -= 1
        msg = f"no good: {text}"
        raise ValueError(msg)
    return text.upper()


@alto.flow
def shout(text: str):
    return flaky(text)


async def test_retries_and_failures_reach_the_watch() -> None:
    to_fail.update(ok=1, bad=3)
    recorder = Recorder()
    with observing(recorder), pytest.raises(alto.PipelineError):
        await shout.run(["ok", "bad"])
    assert recorder.log == [
        ("enter", "recorder", "flaky"),  # "ok": fails once, then succeeds
        ("backed_off", "flaky", 1, True),
        ("exit", "recorder", "flaky"),
        ("enter", "recorder", "flaky"),  # "bad": fails three times
        ("backed_off", "flaky", 1, True),
        ("backed_off", "flaky", 2, True),
        ("failed", "flaky", "no good: bad", 3),
        ("exit", "recorder", "flaky"),
    ]


@alto.stage(retries=3, retry_backoff=5.0)
async def hopeless(x: int) -> int:
    msg = "never"
    raise ValueError(msg)


@alto.flow
def give_up(x: int):
    return hopeless(x)


async def test_a_backoff_cut_short_by_the_root_s_outcome_is_reported() -> None:
    recorder = Recorder()
    with observing(recorder), anyio.fail_after(10):
        with pytest.raises(alto.PipelineError) as caught:
            await give_up.run([0], deadline=0.2)
    assert isinstance(caught.value.failures[0], alto.DeadlineExceeded)
    assert recorder.log == [
        ("enter", "recorder", "hopeless"),
        ("backed_off", "hopeless", 1, False),  # no retry follows, and no failure
        ("exit", "recorder", "hopeless"),
    ]


async def test_a_cancelled_run_leaves_the_context_with_its_cancellation() -> None:
    recorder = Recorder()
    recorder.entered = anyio.Event()
    with observing(recorder), anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(give_up.run, [0])  # its call fails, then waits 5 s to retry
            await recorder.entered.wait()
            await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    assert recorder.log[0] == ("enter", "recorder", "hopeless")
    assert recorder.log[-2][:3] == ("raised", "recorder", "hopeless")
    assert recorder.log[-1] == ("exit", "recorder", "hopeless")


async def test_several_observers_are_entered_in_order_and_left_in_reverse() -> None:
    seen.clear()
    first, second = Recorder("first"), Recorder("second")
    log: list[tuple[Any, ...]] = []
    first.log = second.log = log
    with observing(first):
        with observing(second):  # blocks nest: both observe
            assert registered() == (first, second)
            assert await letters.run(["a"]) == [1]
        assert registered() == (first,)
    assert registered() == ()
    assert log[:2] == [("enter", "first", "words"), ("enter", "second", "words")]
    assert log[2:4] == [("exit", "second", "words"), ("exit", "first", "words")]
    assert len(first.calls) == len(second.calls) == 3
    assert "total root 0" in seen  # the inner one's context is current in the stage


def test_combined() -> None:
    one = Recorder()
    assert combined([]) is None
    assert combined([one]) is one
    several = combined([one, Recorder()])
    assert several is not None and several is not one


def test_observing_refuses_what_is_not_an_observer() -> None:
    with pytest.raises(TypeError, match=r"call\(StageCall\) method.*got 'not one'"):
        with observing(Recorder(), "not one"):  # type: ignore[arg-type]
            pass
    assert registered() == ()


async def test_a_run_with_no_observer_has_none() -> None:
    assert RunState(letters.plan, lambda result: None, RunStats()).observer is None
    recorder = Recorder()
    with observing(recorder):
        run = RunState(letters.plan, lambda result: None, RunStats())
    assert run.observer is recorder  # read once, when the run starts
    assert await letters.run(["a"]) == [1]  # a run started after the block is not observed
    assert recorder.calls == []
