"""The plan compiler.

What a stage is (:mod:`.spec`), tracing a flow into a frozen :class:`Plan`
(:mod:`.compiler`, :mod:`.plan`) and checking the annotations on both sides of each wire
(:mod:`.typecheck`).

Pure: it imports the ancestry algebra (:mod:`alto.ancestry`) and the errors, never a
runtime; runtimes consume the frozen plan it makes.
"""

from alto.compiler.compiler import compile_flow
from alto.compiler.plan import INPUT_PREFIX, Node, Plan, Port, PortMode
from alto.compiler.spec import OutputKind, ParamKind, ParamSpec, StageOptions, StageSpec, read_stage

__all__ = [
    "INPUT_PREFIX",
    "Node",
    "OutputKind",
    "ParamKind",
    "ParamSpec",
    "Plan",
    "Port",
    "PortMode",
    "StageOptions",
    "StageSpec",
    "compile_flow",
    "read_stage",
]
