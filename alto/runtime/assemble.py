"""Turning the records that reach one stage replica into calls.

An :class:`Assembler` holds the per-key state of one replica: joins of
same-level inputs (equal ancestry), broadcast values of outer levels (by
ancestry prefix) and gathers (children per parent, fired when the parent's
close count is reached). Every piece of state belongs to one root input and
is dropped with it, so a run's memory is bounded by the roots in flight.

A stage with a single same-level input keeps no state at all and takes the
fast path: each fragment is one call.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from alto.ancestry.ancestry import (
    INDEX,
    PARENT,
    ROOT,
    Ancestry,
    key_length,
    prefix_key,
)
from alto.compiler.plan import Node, PortMode
from alto.runtime.records import DROPPED, Close

_MISSING: Any = object()

SAME, BROADCAST, GATHER, GATHER_STREAM = (
    PortMode.SAME,
    PortMode.BROADCAST,
    PortMode.GATHER,
    PortMode.GATHER_STREAM,
)


class _RootState:
    __slots__ = ("slots", "bvalues", "waiting", "groups")

    def __init__(self) -> None:
        self.slots: dict[Ancestry, list[Any]] = {}  # key -> [ports left, value per port...]
        self.bvalues: dict[tuple[int, Ancestry], Any] = {}  # (port, prefix) -> value
        self.waiting: dict[tuple[int, Ancestry], list[tuple[Ancestry, list[Any]]]] = {}
        self.groups: dict[tuple[int, Ancestry], list[Any]] = {}  # (port, parent) -> group


class Assembler:
    """Per-replica input state of one node.

    ``accept`` takes one chunk and appends pass-through records (closes to
    forward, tombstones) to ``out`` and ready calls to ``ready``. A ready call
    is ``(ancestry, value)`` for a single-input stage and ``(ancestry,
    values)`` (one value per port) otherwise.
    """

    def __init__(self, node: Node, settled: set[int]) -> None:
        self.node = node
        self.settled = settled
        self.simple = not node.is_keyed
        self.modes = tuple(p.mode for p in node.ports)
        self.key_len = key_length(node.level)
        self.primary = node.primary
        # the input whose fragments the stage's ``in`` counter counts: the stream it runs on
        self.main = next(
            (i for i, p in enumerate(node.ports) if p.mode is not BROADCAST), node.primary
        )
        self.n_ports = len(node.ports)
        self.n_joined = sum(1 for p in node.ports if p.mode is not BROADCAST)
        self.bcast = tuple(
            (i, prefix_key(p.level)) for i, p in enumerate(node.ports) if p.mode is BROADCAST
        )
        self.roots: dict[int, _RootState] = {}

    def accept(self, port: int, records: list[Any], out: list[Any], ready: list[Any]) -> int:
        """Take one chunk; returns how many of its records were closes."""
        settled = self.settled
        closes = 0
        if self.simple:
            for rec in records:
                if rec.__class__ is tuple:
                    if rec[0][ROOT] in settled:
                        continue
                    if rec[1] is DROPPED:
                        self._pass_tombstone(rec[0], out)
                    else:
                        ready.append(rec)
                else:
                    closes += 1
                    if rec.parent[ROOT] not in settled:
                        out.append(rec)
            return closes
        mode = self.modes[port]
        gathers = mode is GATHER or mode is GATHER_STREAM
        roots = self.roots
        for rec in records:
            if rec.__class__ is not tuple:
                closes += 1
                parent = rec.parent
                root = parent[ROOT]
                if root in settled:
                    continue
                if gathers and len(parent) == self.key_len:
                    rs = roots.get(root)
                    if rs is None:
                        rs = roots[root] = _RootState()
                    self._close(rs, port, rec, out, ready)
                elif port == self.primary:
                    out.append(rec)
                continue
            anc, value = rec
            root = anc[ROOT]
            if root in settled:
                continue
            rs = roots.get(root)
            if rs is None:
                rs = roots[root] = _RootState()
            if mode is SAME:
                self._fill(rs, anc, port, value, out, ready)
            elif mode is BROADCAST:
                rs.bvalues[(port, anc)] = value
                waiters = rs.waiting.pop((port, anc), None)
                if waiters:
                    for key, slot in waiters:
                        self._fire(rs, key, slot, out, ready)
            else:  # a child for a gather, inlined: it is the hot path of every gather
                parent = anc[PARENT]
                group = rs.groups.get((port, parent))
                if group is None:
                    group = self._open(rs, port, parent, ready)
                group[1] += 1
                if mode is GATHER:
                    group[2][anc[INDEX]] = value
                elif value is not DROPPED:
                    try:
                        group[2].send_nowait(value)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        pass  # the stage stopped reading early; it needs no more children
                if group[1] == group[0]:
                    self._maybe_complete(rs, port, parent, out, ready)
        return closes

    def _pass_tombstone(self, key: Ancestry, out: list[Any]) -> None:
        """A tombstone input makes a tombstone output; a split closes it with no children."""
        if self.node.is_split:
            out.append(Close(key, 0, True))
        else:
            out.append((key, DROPPED))

    def _fill(
        self, rs: _RootState, key: Ancestry, port: int, value: Any, out: list[Any], ready: list[Any]
    ) -> None:
        slot = rs.slots.get(key)
        if slot is None:
            slot = [self.n_joined] + [None] * self.n_ports
            rs.slots[key] = slot
        slot[1 + port] = value
        slot[0] -= 1
        if slot[0] == 0:
            del rs.slots[key]
            self._fire(rs, key, slot, out, ready)

    def _fire(
        self, rs: _RootState, key: Ancestry, slot: list[Any], out: list[Any], ready: list[Any]
    ) -> None:
        values = slot[1:]
        for i, mode in enumerate(self.modes):
            if mode is not BROADCAST and values[i] is DROPPED:
                self._pass_tombstone(key, out)
                return
        for port, prefix_of in self.bcast:
            prefix = prefix_of(key)
            value = rs.bvalues.get((port, prefix), _MISSING)
            if value is _MISSING:
                rs.waiting.setdefault((port, prefix), []).append((key, slot))
                return
            if value is DROPPED:
                self._pass_tombstone(key, out)
                return
            values[port] = value
        ready.append((key, tuple(values)))

    def _open(self, rs: _RootState, port: int, parent: Ancestry, ready: list[Any]) -> list[Any]:
        # a group is [expected count or -1, children seen, children by index | send stream]
        gkey = (port, parent)
        group = rs.groups.get(gkey)
        if group is None:
            group = rs.groups[gkey] = [-1, 0, None]
            if self.modes[port] is GATHER_STREAM:
                send, receive = anyio.create_memory_object_stream[Any](math.inf)
                group[2] = send
                ready.append((parent, (receive,)))  # a streaming gather is its only port
            else:
                group[2] = {}
        return group

    def _close(
        self, rs: _RootState, port: int, close: Close, out: list[Any], ready: list[Any]
    ) -> None:
        parent = close.parent
        if close.dropped:
            # The parent was a tombstone when it reached the split: no children, no call.
            rs.groups.pop((port, parent), None)
            if self.modes[port] is GATHER:
                self._fill(rs, parent, port, DROPPED, out, ready)
            else:
                self._pass_tombstone(parent, out)
            return
        group = self._open(rs, port, parent, ready)
        group[0] = close.count
        self._maybe_complete(rs, port, parent, out, ready)

    def _maybe_complete(
        self, rs: _RootState, port: int, parent: Ancestry, out: list[Any], ready: list[Any]
    ) -> None:
        gkey = (port, parent)
        group = rs.groups[gkey]
        if group[1] != group[0]:
            return
        del rs.groups[gkey]
        if self.modes[port] is GATHER_STREAM:
            group[2].close()
            return
        children = group[2]
        gathered = [v for i in range(group[0]) if (v := children[i]) is not DROPPED]
        self._fill(rs, parent, port, gathered, out, ready)

    def drop_root(self, root: int) -> None:
        """Forget everything about ``root`` (it has an outcome)."""
        rs = self.roots.pop(root, None)
        if rs is None:
            return
        for group in rs.groups.values():
            if isinstance(group[2], MemoryObjectSendStream):
                group[2].close()

    def pending(self) -> int:
        """Keys waiting for more input (for tests and diagnostics)."""
        return sum(len(rs.slots) + len(rs.groups) + len(rs.waiting) for rs in self.roots.values())


__all__ = ["Assembler", "Close", "DROPPED"]
