"""State of one run shared by every stage: which roots are done, and their outcomes."""

from __future__ import annotations

import time
import uuid
from collections import deque
from typing import Any, Callable

import anyio

from alto.ancestry.ancestry import Ancestry, root, root_of
from alto.compiler.plan import Plan
from alto.errors import AltoError, DeadlineExceeded, InputCancelled, InputError, StageError
from alto.lineage import CallSite, root_ended
from alto.result import Result
from alto.runtime.assemble import Assembler
from alto.runtime.context import CallBookkeeping
from alto.runtime.metrics import RunStats, StageStats, now
from alto.runtime.observe import combined, registered
from alto.runtime.records import DROPPED
from alto.runtime.spans import current_run, driver_calls
from alto.runtime.validate import check_inputs


def bind_input(plan: Plan, index: int, item: Any) -> dict[str, Any]:
    """The flow's arguments for one root input; raises :class:`InputError`.

    A one-parameter flow takes each input as its value; a flow of several
    parameters takes a tuple (positional) or a dict (by name).
    """
    names = plan.inputs
    if len(names) == 1:
        return check_inputs(plan, index, {names[0]: item})
    signature = f"({', '.join(names)})"
    if isinstance(item, dict):
        unknown = [k for k in item if k not in names]
        if unknown:
            raise InputError(
                index,
                f"unknown parameter {unknown[0]!r}; flow {plan.name!r} takes {signature}",
                parameter=str(unknown[0]),
            )
        args = dict(item)
    elif isinstance(item, (tuple, list)):
        if len(item) > len(names):
            raise InputError(
                index,
                f"{len(item)} values given; flow {plan.name!r} takes {len(names)} {signature}",
            )
        args = dict(zip(names, item))
    else:
        raise InputError(
            index,
            f"got a {type(item).__name__}; flow {plan.name!r} takes {len(names)} parameters "
            f"{signature}: pass a tuple or a dict",
        )
    for name in names:
        if name not in args:
            if name not in plan.defaults:
                raise InputError(
                    index, f"missing parameter {name!r}; flow {plan.name!r} takes {signature}",
                    parameter=name,
                )
            args[name] = plan.defaults[name]
    return check_inputs(plan, index, args)


class RunControl:
    """A handle on a run in progress, for cancelling single inputs.

    ``Flow.stream`` makes one; a backend attaches its :class:`RunState` when the
    run starts. Cancelling before that is remembered and applied on attach.
    """

    def __init__(self) -> None:
        self._run: RunState | None = None
        self._early: set[int] = set()

    def attach(self, run: RunState) -> None:
        """Attach the run once it starts, and apply the cancellations asked for before."""
        self._run = run
        for index in self._early:
            run.cancel(index)
        self._early.clear()

    def cancel(self, index: int) -> bool:
        """Cancel input ``index`` (:meth:`RunState.cancel`), or remember it until a run is attached.

        Returns False if the input already had its outcome.
        """
        if self._run is None:
            self._early.add(index)
            return True
        return self._run.cancel(index)


class RunState(CallBookkeeping):
    """Outcomes of the roots of one run.

    A root has an outcome once its output reached the sink or one of its
    fragments failed; from then on it is *settled*: stages drop its records on
    arrival and every assembler forgets its state.
    """

    def __init__(
        self,
        plan: Plan,
        on_result: Callable[[Result[Any]], None],
        stats: RunStats,
        *,
        trace: bool = False,
        dead_letters: list[Any] | None = None,
    ) -> None:
        self.plan = plan
        self.id = f"{plan.name}-{uuid.uuid4().hex[:12]}"
        self.monotonic_offset = time.monotonic() - now()  # root_start is on ``now``'s clock
        self.on_result = on_result
        self.stats = stats
        self.settled: set[int] = set()
        self.assemblers: list[Assembler] = []
        self.n_outputs = len(plan.outputs)
        self.partial: dict[int, list[Any]] = {}
        self.in_flight = 0
        self.slots: anyio.Semaphore | None = None
        self.dead_letters = dead_letters
        self.last_error: dict[int, StageError] = {}
        self.progress: Any = None
        # cancel scopes of the slow calls now running, by root: a root that gets its
        # outcome (failure, deadline, cancellation) stops the calls still working for it
        self.calls: dict[int, set[anyio.CancelScope]] = {}
        self.cancel_early: set[int] = set()
        self.admitted: deque[int] | None = None  # in admission order, when deadlines apply
        if trace:
            stats.spans = []
        # OpenTelemetry and call observers: looked up once per run; None (and one attribute
        # test per call) when there are none
        self.otel = current_run()
        self.observer = combined(
            registered() if self.otel is None else (driver_calls(self.otel), *registered())
        )
        for node in plan.nodes:
            stats.stages[node.name] = StageStats(node.name, node.spec.options.replicas)

    def start(self, index: int) -> bool:
        """Input ``index`` enters the run; False if it was cancelled before it could."""
        self.in_flight += 1
        self.stats.root_start[index] = now()
        if self.otel is not None:
            self.otel.root_started(index)
        if self.admitted is not None:
            self.admitted.append(index)
        if index in self.cancel_early:
            self.cancel_early.discard(index)
            self.finish(index, None, InputCancelled(index))
            return False
        return True

    def site(self, stage: str) -> CallSite:
        """What :func:`alto.current_call` reports of the calls of ``stage`` in this run."""
        return CallSite(self.id, stage, self.stats.root_start, self.monotonic_offset)

    def cancel(self, index: int) -> bool:
        """Give input ``index`` the outcome :class:`InputCancelled` and stop its calls.

        An input that has not entered the run yet is cancelled when it does.
        Returns False if the input already had an outcome.
        """
        if index in self.settled:
            return False
        if index not in self.stats.root_start:
            self.cancel_early.add(index)
            return True
        self.finish(index, None, InputCancelled(index))
        return True

    def expire(self, deadline: float) -> None:
        """Fail every input that has been in the run longer than ``deadline`` seconds."""
        admitted = self.admitted
        assert admitted is not None
        horizon = now() - deadline
        while admitted:
            index = admitted[0]
            if index in self.settled:
                admitted.popleft()
            elif self.stats.root_start[index] <= horizon:
                admitted.popleft()
                self.finish(index, None, DeadlineExceeded(index, deadline))
            else:
                break

    def output(self, anc: Ancestry, value: Any, slot: int) -> None:
        """A level-0 value for output ``slot`` of the root ``anc`` reached the sink."""
        root = root_of(anc)
        if root in self.settled:
            return
        if value is DROPPED:
            error = self.last_error.get(root)
            if error is None:  # pragma: no cover - a tombstone always follows an error
                error = StageError(self.plan.outputs[slot], anc, RuntimeError("output dropped"))
            self.finish(root, None, error)
            return
        if self.n_outputs == 1:
            self.finish(root, value, None)
            return
        parts = self.partial.get(root)
        if parts is None:
            parts = self.partial[root] = [DROPPED] * (self.n_outputs + 1)
            parts[-1] = 0
        if parts[slot] is DROPPED:
            parts[slot] = value
            parts[-1] += 1
        if parts[-1] == self.n_outputs:
            del self.partial[root]
            self.finish(root, tuple(parts[:-1]), None)

    def fail(self, error: StageError) -> bool:
        """Record a failed fragment. Returns whether a tombstone should stand in for it.

        Without dead letters the whole root fails. With them, the failure is
        kept for inspection and the fragment becomes a tombstone, so its
        parent's gather receives the surviving siblings.
        """
        stage = self.stats.stages.get(error.stage)
        if stage is not None:
            stage.errors += 1
        if self.dead_letters is not None and error.index not in self.settled:
            self.dead_letters.append(error)
            self.last_error[error.index] = error
            return True
        self.finish(error.index, None, error)
        return False

    def reject(self, error: InputError) -> None:
        """An input that does not fit the flow fails alone, before it enters the run."""
        self.stats.root_start[error.index] = now()
        self.in_flight += 1
        if self.otel is not None:
            self.otel.root_started(error.index)
        self.finish(error.index, None, error)

    def settle_the_rest(self) -> None:
        """The run stopped: fail every root that entered it and still has no outcome.

        Reached only through a bug in a backend; the roots then fail with a clear error
        rather than never getting an outcome.
        """
        for index in sorted(set(self.stats.root_start) - self.settled):  # pragma: no cover
            self.finish(
                index,
                None,
                StageError(
                    self.plan.name, root(index), RuntimeError("the run ended without an outcome")
                ),
            )

    def finish(self, root: int, value: Any, error: AltoError | None) -> None:
        """Give ``root`` its outcome: ``value``, or ``error`` when it failed (the first one counts).

        The root is settled: every assembler drops its state, its calls still running are
        stopped, its admission slot is freed, and its :class:`Result` goes to ``on_result``.
        """
        if root in self.settled:
            return
        self.settled.add(root)
        self.in_flight -= 1
        self.stats.root_end[root] = now()
        if self.otel is not None:
            self.otel.root_finished(root, error)
        self.partial.pop(root, None)
        self.last_error.pop(root, None)
        root_ended(self.id, root)  # e.g. model clients' dispatchers forget the root
        for assembler in self.assemblers:
            assembler.drop_root(root)
        self.stop(root)
        if self.slots is not None:
            self.slots.release()
        if self.progress is not None:
            self.progress.update(1)
        self.on_result(Result(root, value, error))

