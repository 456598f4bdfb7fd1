"""What the ``alto`` command shows on a terminal while it works: status lines and progress bars.

Everything goes to stderr, and only when it is a terminal: with ``--json``, or when stderr is a
file or a pipe, a :class:`Console` is quiet and every method does nothing, so logs and scripts
see only the results.

    console = Console.for_stderr(quiet=args.json)
    with console.step("loading the embedder"):
        embedder = Embedder()
    # loading the embedder ... 4.8 s
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import anyio

from alto.runtime.metrics import RunStats

REFRESH_S = 0.5
"""How often a run's progress line re-reads the stage counters."""


class Console:
    """Status lines and progress bars on a terminal; silent elsewhere.

    Args:
        enabled: show anything at all.
        file: where to write; stderr by default.
    """

    def __init__(self, enabled: bool, file: IO[str] | None = None) -> None:
        self.enabled = enabled
        self.file = file if file is not None else sys.stderr

    @classmethod
    def for_stderr(cls, *, quiet: bool = False) -> Console:
        """Enabled when stderr is a terminal and the caller is not ``quiet``."""
        stream = sys.stderr
        return cls(not quiet and stream.isatty(), stream)

    def note(self, text: str) -> None:
        """One line of information."""
        if self.enabled:
            print(text, file=self.file, flush=True)

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """``what ...`` while the block runs, then how long it took (or that it failed)."""
        if not self.enabled:
            yield
            return
        print(f"{what} ...", end="", file=self.file, flush=True)
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            print(" failed", file=self.file, flush=True)
            raise
        print(f" {time.perf_counter() - started:.1f} s", file=self.file, flush=True)

    def bar(self, total: int | None, desc: str, unit: str) -> Any:
        """A tqdm progress bar, or a stand-in that ignores every call when quiet."""
        if not self.enabled:
            return _NoBar()
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=self.file, leave=False,
                    dynamic_ncols=True)


class _NoBar:
    """The bar of a quiet console."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def activity(stats: RunStats) -> str:
    """What a run is doing now, from its stage counters.

    Stage calls finished, and which stages are working
    (``"12 calls done; working: verdict x2, search"``).
    """
    calls = sum(s.calls for s in stats.stages.values())
    busy = [
        f"{s.name} x{s.working}" if s.working > 1 else s.name
        for s in stats.stages.values()
        if s.working > 0
    ]
    text = f"{calls} call{'' if calls == 1 else 's'} done"
    return f"{text}; working: {', '.join(busy)}" if busy else text


class RunProgress:
    """A progress bar over a run's root inputs whose text also says which stages work now.

    That way a run of a few long inputs shows movement before the first input completes.

    Args:
        console: where to show it.
        stats: the run's statistics, filled while it runs.
        total: how many inputs the run has.
        name: the flow's name.
    """

    def __init__(self, console: Console, stats: RunStats, total: int, name: str) -> None:
        self.stats = stats
        self._bar = console.bar(total, name, "input")
        self._enabled = console.enabled

    def finished_one(self) -> None:
        """One more root input has its outcome."""
        self._bar.update(1)

    async def refresh(self) -> None:
        """Re-read the stage counters every ``REFRESH_S`` until cancelled."""
        if not self._enabled:
            return
        while True:
            self._bar.set_postfix_str(activity(self.stats))
            await anyio.sleep(REFRESH_S)

    def close(self) -> None:
        """Close the progress bar."""
        self._bar.close()
