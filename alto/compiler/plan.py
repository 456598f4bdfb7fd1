"""The frozen plan a flow compiles to, and what every runtime executes.

A plan is a DAG of :class:`Node` s in topological order. Every node has a
*scope*: the tuple of split nodes whose levels are open where it runs, so its
level is ``len(scope)``. Each input of a node is a :class:`Port` with a mode
the compiler inferred:

* ``SAME``: the source runs at the node's level; fragments join on equal ancestry.
* ``BROADCAST``: the source runs at an outer level; its value reaches every
  descendant whose ancestry starts with the source fragment's ancestry.
* ``GATHER`` / ``GATHER_STREAM``: the source runs one level deeper; its
  children are collected per parent (the node's key), all at once or as they
  arrive.

Fragments of the flow's inputs come from sources named ``input.<param>``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterator, Mapping

from alto.compiler.spec import OutputKind, StageSpec

INPUT_PREFIX = "input."


class PortMode(enum.Enum):
    """How a port delivers its source's values to a node.

    At the same level, broadcast from an outer level, or gathered from the level below (as a
    list, or as a stream).
    """

    SAME = "same"
    BROADCAST = "broadcast"
    GATHER = "gather"
    GATHER_STREAM = "gather_stream"


@dataclass(frozen=True, slots=True)
class Port:
    """One input of a node: which source feeds which parameter, and how."""

    param: str
    source: str  # a node name, or ``input.<flow parameter>``
    mode: PortMode
    source_level: int  # level of the fragments the source emits
    level: int  # level of the key this port delivers values at


@dataclass(frozen=True, slots=True)
class Node:
    """One stage call in the flow."""

    name: str
    spec: StageSpec
    ports: tuple[Port, ...]
    consts: Mapping[str, Any]
    scope: tuple[str, ...]  # open splits at the node's input
    primary: int  # the port whose close records the node forwards
    where: str

    @property
    def level(self) -> int:
        """How many splits are open at the node's input (0: it runs once per root input)."""
        return len(self.scope)

    @property
    def out_scope(self) -> tuple[str, ...]:
        """The open splits at the node's output: those at its input, plus itself when it splits."""
        return self.scope + (self.name,) if self.spec.is_split else self.scope

    @property
    def out_level(self) -> int:
        """How many splits are open at the node's output."""
        return len(self.out_scope)

    @property
    def is_split(self) -> bool:
        """Whether the node opens a level (its stage is a split)."""
        return self.spec.output is not OutputKind.VALUE

    @property
    def is_keyed(self) -> bool:
        """Whether the node keeps per-key state (joins, broadcasts, gathers)."""
        return len(self.ports) > 1 or self.ports[0].mode is not PortMode.SAME


@dataclass(frozen=True, slots=True)
class Plan:
    """A compiled flow. Immutable; runtimes only read it.

    Attributes:
        name: the flow's name.
        inputs: the flow's parameter names, in order.
        defaults: default values of flow parameters that have one.
        nodes: stage calls in topological order.
        outputs: the sources whose level-0 values make up each root's output.
        output_tuple: whether the flow returns a tuple of those values.
        consumers: for every source, the ``(node name, port index)`` pairs it feeds.
        annotations: the flow parameters' type hints, which inputs are checked against.
    """

    name: str
    inputs: tuple[str, ...]
    defaults: Mapping[str, Any]
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    output_tuple: bool
    consumers: Mapping[str, tuple[tuple[str, int], ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    annotations: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def levels(self) -> int:
        """How many nesting levels the plan's fragments live at (1 when nothing splits)."""
        return 1 + max((n.out_level for n in self.nodes), default=0)

    def __repr__(self) -> str:
        n, levels = len(self.nodes), self.levels
        return (
            f"<Plan {self.name}: {n} stage{'' if n == 1 else 's'}, "
            f"{levels} level{'' if levels == 1 else 's'}>"
        )

    def node(self, name: str) -> Node:
        """The node named ``name``; raises KeyError when the plan has none."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def describe(self) -> str:
        """The plan as indented text: one line per node with its level and ports."""
        lines = [f"flow {self.name}({', '.join(self.inputs)})"]
        for n in self.nodes:
            ins = ", ".join(f"{p.param}<-{p.source} [{p.mode.value}]" for p in n.ports)
            opts = n.spec.options
            extra = []
            if opts.replicas > 1:
                extra.append(f"replicas={opts.replicas}")
            if opts.batch:
                extra.append(f"batch={opts.batch}")
            kind = "split" if n.is_split else "stage"
            tail = f" ({', '.join(extra)})" if extra else ""
            lines.append(f"{'  ' * n.level}{kind} {n.name} @level {n.level}: {ins}{tail}")
        lines.append(f"-> {', '.join(self.outputs)}")
        return "\n".join(lines)

    def mermaid(self) -> str:
        """The plan as a Mermaid flowchart; edges are labelled with their level."""
        lines = ["flowchart TD"]
        for name in self.inputs:
            lines.append(f'  {_mid(INPUT_PREFIX + name)}(["{name}"])')
        for n in self.nodes:
            shape = ('[/"', '"/]') if n.is_split else ('["', '"]')
            label = f"{n.name}<br/>level {n.level}" + (f"→{n.out_level}" if n.is_split else "")
            lines.append(f"  {_mid(n.name)}{shape[0]}{label}{shape[1]}")
        for n in self.nodes:
            for p in n.ports:
                arrow = {
                    "same": "-->",
                    "broadcast": "-.->",
                    "gather": "==>",
                    "gather_stream": "==>",
                }
                label = f"{p.param} L{p.source_level}"
                if p.mode is not PortMode.SAME:
                    label += f" {p.mode.value}"
                lines.append(f"  {_mid(p.source)} {arrow[p.mode.value]}|{label}| {_mid(n.name)}")
        lines.append('  out(["output"])')
        for src in self.outputs:
            lines.append(f"  {_mid(src)} --> out")
        return "\n".join(lines)


def _mid(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in name)
