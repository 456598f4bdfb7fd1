"""Alto: streaming compound-AI pipelines with nested ancestry.

Write stages as ``async def`` functions, wire them in a flow, run it:

    >>> import alto
    >>> from alto import Gather, Split
    >>> @alto.stage
    ... async def words(text: str) -> Split[str]:
    ...     for w in text.split():
    ...         yield w
    >>> @alto.stage
    ... async def size(word: str) -> int:
    ...     return len(word)
    >>> @alto.stage
    ... async def total(sizes: Gather[int]) -> int:
    ...     return sum(sizes)
    >>> @alto.flow
    ... def letters(text: str):
    ...     return total(size(words(text)))
    >>> alto.run(letters, ["a bb ccc", ""])
    [6, 0]
"""

from alto._version import __version__ as __version__
from alto.errors import (
    ActorLostError,
    AltoError,
    CompileError,
    DeadlineExceeded,
    InputCancelled,
    InputError,
    MissingDependency,
    MissingFile,
    PipelineError,
    StageError,
    StageTimeout,
    StateError,
    UsageError,
    UsageTypeError,
)
from alto.flow import Flow, ResultStream, flow, run
from alto.lineage import CallInfo, current_call, within_call
from alto.markers import Gather, GatherStream, Split
from alto.operators.llm.errors import (
    LLMConnectionError,
    LLMError,
    LLMProtocolError,
    LLMServerError,
    LLMTimeoutError,
    StructuredOutputError,
)
from alto.result import Result
from alto.runtime.invoke import BatchShapeError
from alto.runtime.metrics import CallSpan, RunStats, StageStats
from alto.runtime.validate import ArgumentError
from alto.stage import Stage, stage

__all__ = [
    "ActorLostError",
    "AltoError",
    "ArgumentError",
    "BatchShapeError",
    "CallInfo",
    "CallSpan",
    "CompileError",
    "DeadlineExceeded",
    "Flow",
    "Gather",
    "GatherStream",
    "InputCancelled",
    "InputError",
    "LLMConnectionError",
    "LLMError",
    "LLMProtocolError",
    "LLMServerError",
    "LLMTimeoutError",
    "MissingDependency",
    "MissingFile",
    "PipelineError",
    "Result",
    "ResultStream",
    "RunStats",
    "Split",
    "Stage",
    "StageError",
    "StageStats",
    "StageTimeout",
    "StateError",
    "StructuredOutputError",
    "UsageError",
    "UsageTypeError",
    "current_call",
    "flow",
    "run",
    "stage",
    "within_call",
]
