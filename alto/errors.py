"""The error hierarchy.

Every error carries structured fields so callers never parse messages:

* :class:`CompileError`: the flow cannot be compiled; raised before any data moves.
* :class:`StageError`: one fragment failed in one stage; fails that root input only.
* :class:`StageTimeout`: a stage call ran past the stage's ``timeout`` (a StageError's cause).
* :class:`InputError`: one root input does not fit the flow's parameters.
* :class:`PipelineError`: raised by ``Flow.run`` after all inputs finished, when some failed.
* :class:`ActorLostError`: the Ray actor of a stage call died for good (a StageError's
  cause), or a stage's actors did not start.
* :class:`UsageError`, :class:`UsageTypeError`, :class:`StateError`: Alto was given a
  value it does not accept, a value of the wrong type, or called where it cannot run;
  raised where the value is given (a ``ValueError``, ``TypeError``, ``RuntimeError``).
* :class:`MissingDependency`, :class:`MissingFile`: an optional package or a file a feature
  needs is not there (a ``ModuleNotFoundError``, a ``FileNotFoundError``).

Every other error Alto raises (the LLM operators', the service's, the CLI's and the
benchmark harness's) derives from :class:`AltoError` too, so one ``except alto.AltoError``
catches them all; ``docs/errors.md`` lists every one in a single table.
"""

from __future__ import annotations

from typing import Any, Sequence

from alto._errors import (
    AltoError,
    MissingDependency,
    MissingFile,
    StateError,
    UsageError,
    UsageTypeError,
)
from alto.ancestry.ancestry import Ancestry, format_ancestry

__all__ = [
    "ActorLostError",
    "AltoError",
    "CompileError",
    "DeadlineExceeded",
    "InputCancelled",
    "InputError",
    "MissingDependency",
    "MissingFile",
    "PipelineError",
    "StageError",
    "StageTimeout",
    "StateError",
    "UsageError",
    "UsageTypeError",
]


class CompileError(AltoError):
    """A flow cannot be compiled into a plan.

    Attributes:
        stage: the stage (or flow) the problem is in, if any.
        parameter: the parameter at fault, if any.
        where: ``"file:line"`` of the user's code the error points at.
    """

    code = "compile"

    def __init__(
        self,
        message: str,
        *,
        stage: str | None = None,
        parameter: str | None = None,
        where: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.stage = stage
        self.parameter = parameter
        self.where = where
        self.fix = fix
        text = message
        if fix:
            text += f"\n  fix: {fix}"
        if where:
            text += f"\n  at: {where}"
        super().__init__(text)


class StageError(AltoError):
    """A fragment failed in a stage.

    Attributes:
        stage: name of the stage that failed.
        ancestry: ancestry of the fragment that failed (see :mod:`alto.ancestry`).
        index: index of the root input the fragment descends from.
        attempts: how many times the stage was tried on the fragment.
        cause: the exception raised by the stage (also ``__cause__``).
        inputs: the failed call's arguments by parameter name: the fragment's value and
            any values joined or broadcast to it (what a dead letter needs to be inspected
            or replayed); ``None`` where they are not known.
        bisected: for a batched stage, the size of the batch the fragment failed in when
            that batch was bisected to isolate it (the fragment then failed in a call of
            its own; ``attempts`` counts that call's tries); ``None`` otherwise.
    """

    code = "stage"

    def __init__(
        self,
        stage: str,
        ancestry: Ancestry,
        cause: BaseException,
        *,
        attempts: int = 1,
        message: str | None = None,
        inputs: dict[str, Any] | None = None,
        bisected: int | None = None,
    ) -> None:
        self.stage = stage
        self.ancestry = ancestry
        self.index = ancestry[0]
        self.attempts = attempts
        self.cause = cause
        self.inputs = inputs
        self.bisected = bisected
        what = message or f"{type(cause).__name__}: {cause}"
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        isolated = (
            f" (isolated by bisecting a batch of {bisected}: the fragment failed in a call "
            "of its own; the batch's other fragments were not failed with it)"
            if bisected
            else ""
        )
        super().__init__(
            f"stage {stage!r} failed{tries} on input {self.index} "
            f"({format_ancestry(ancestry)}): {what}{isolated}"
        )
        self.__cause__ = cause

    def __reduce__(self) -> Any:
        return (
            _rebuild_stage_error,
            (self.stage, self.ancestry, self.cause, self.attempts, self.inputs, self.bisected),
        )


def _rebuild_stage_error(
    stage: str,
    ancestry: Ancestry,
    cause: BaseException,
    attempts: int,
    inputs: dict[str, Any] | None = None,
    bisected: int | None = None,
) -> StageError:
    return StageError(stage, ancestry, cause, attempts=attempts, inputs=inputs, bisected=bisected)


class StageTimeout(AltoError, TimeoutError):
    """A stage call did not finish within the stage's ``timeout``.

    It is the ``cause`` of the call's :class:`StageError` (and a ``TimeoutError``,
    so ``retry_on=TimeoutError`` retries it).

    Attributes:
        stage: the stage whose call timed out.
        timeout: the stage's ``timeout``, in seconds.
        split: whether the stage is a split (its timeout covers the whole run of one
            call, every child included).
    """

    code = "timeout"

    def __init__(self, stage: str, timeout: float, *, split: bool = False) -> None:
        self.stage = stage
        self.timeout = timeout
        self.split = split
        whole = " (a split's timeout covers its whole call, every child included)" if split else ""
        super().__init__(
            f"stage {stage!r} timed out after {timeout:g} s{whole}; raise timeout= on "
            "@alto.stage if the stage is just slow"
        )

    def __reduce__(self) -> Any:
        return (_rebuild_stage_timeout, (self.stage, self.timeout, self.split))


def _rebuild_stage_timeout(stage: str, timeout: float, split: bool) -> StageTimeout:
    return StageTimeout(stage, timeout, split=split)


class InputError(AltoError):
    """A root input does not fit the flow's parameters.

    Attributes:
        index: the position of the input in the inputs given to ``run``/``stream``.
        parameter: the flow parameter at fault, if one is to blame.
    """

    code = "input"

    def __init__(self, index: int, message: str, *, parameter: str | None = None) -> None:
        self.index = index
        self.parameter = parameter
        super().__init__(f"input {index}: {message}")

    def __reduce__(self) -> Any:
        return (_rebuild_input_error, (self.index, str(self), self.parameter))


def _rebuild_input_error(index: int, text: str, parameter: str | None) -> InputError:
    err = InputError(index, "", parameter=parameter)
    err.args = (text,)
    return err


class DeadlineExceeded(AltoError):
    """A root input did not finish within the run's ``deadline``.

    Attributes:
        index: the input's position.
        deadline: the deadline in seconds, counted from when the input entered the run.
    """

    code = "deadline"

    def __init__(self, index: int, deadline: float) -> None:
        self.index = index
        self.deadline = deadline
        super().__init__(
            f"input {index} did not finish within its deadline of {deadline:g} s; its stage "
            "calls were cancelled"
        )

    def __reduce__(self) -> Any:
        return (DeadlineExceeded, (self.index, self.deadline))


class InputCancelled(AltoError):
    """A root input was cancelled (``ResultStream.cancel(index)``) before it finished.

    Attributes:
        index: the input's position.
    """

    code = "cancelled"

    def __init__(self, index: int) -> None:
        self.index = index
        super().__init__(f"input {index} was cancelled; its stage calls were stopped")

    def __reduce__(self) -> Any:
        return (InputCancelled, (self.index,))


class PipelineError(AltoError):
    """Some root inputs failed; raised by ``Flow.run`` after every other input finished.

    Attributes:
        results: one entry per input, in input order: the output, or the error
            (a :class:`StageError` or :class:`InputError`) for a failed input.
        failures: the errors alone, in input order.
    """

    code = "pipeline"

    def __init__(self, results: Sequence[Any], failures: Sequence[AltoError]) -> None:
        self.results = list(results)
        self.failures = list(failures)
        first = failures[0] if failures else None
        super().__init__(
            f"{len(failures)} of {len(results)} inputs failed; first: {first}"
        )

    def __reduce__(self) -> Any:
        return (PipelineError, (self.results, self.failures))


class ActorLostError(AltoError, RuntimeError):
    """The Ray actor running a stage call died, and the call could not be run again.

    It is the ``cause`` of the fragment's :class:`StageError`; the run itself raises it
    when a stage's actors do not start within ``start_timeout``. See ``docs/ray.md``.
    """

    code = "actor-lost"
