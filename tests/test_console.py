"""What ``alto run`` shows while it works: on a terminal only, never with --json or in a pipe."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys

import pytest

from alto.console import Console, RunProgress, activity
from alto.runtime.metrics import RunStats, StageStats


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_quiet_console_writes_nothing() -> None:
    out = _Terminal()
    console = Console(enabled=False, file=out)
    with console.step("loading"):
        console.note("a note")
        bar = console.bar(3, "run", "input")
        bar.update(1)
        bar.set_postfix_str("x")
        bar.close()
    assert out.getvalue() == ""


def test_for_stderr_is_quiet_off_a_terminal_or_when_asked(monkeypatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not Console.for_stderr().enabled
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert Console.for_stderr().enabled
    assert not Console.for_stderr(quiet=True).enabled


def test_a_step_says_how_long_it_took_or_that_it_failed() -> None:
    out = _Terminal()
    console = Console(enabled=True, file=out)
    with console.step("loading the model"):
        pass
    assert out.getvalue().startswith("loading the model ... ")
    assert out.getvalue().rstrip().endswith(" s")
    with pytest.raises(KeyError), console.step("opening"):
        msg = "x"
        raise KeyError(msg)
    assert out.getvalue().splitlines()[-1] == "opening ... failed"


def test_activity_names_the_working_stages() -> None:
    stats = RunStats()
    stats.stages = {
        "claims": StageStats("claims", calls=3),
        "verdict": StageStats("verdict", calls=1, working=2),
        "report": StageStats("report", calls=0, working=1),
    }
    assert activity(stats) == "4 calls done; working: verdict x2, report"
    stats.stages = {"a": StageStats("a", calls=1)}
    assert activity(stats) == "1 call done"


@pytest.mark.anyio
async def test_run_progress_counts_inputs_and_shows_activity() -> None:
    import anyio

    out = _Terminal()
    stats = RunStats()
    stats.stages = {"verdict": StageStats("verdict", calls=5, working=1)}
    progress = RunProgress(Console(enabled=True, file=out), stats, 2, "factcheck")
    async with anyio.create_task_group() as tg:
        tg.start_soon(progress.refresh)
        progress.finished_one()
        await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    progress.close()
    text = out.getvalue()
    assert "factcheck" in text and "1/2" in text
    assert "5 calls done; working: verdict" in text


def _alto(args: list[str], *, terminal: bool, cache: str) -> tuple[str, str]:
    """Run the ``alto`` command; with ``terminal`` its stderr is a pseudo-terminal."""
    env = dict(os.environ, ALTO_CACHE=cache, COLUMNS="200")
    cmd = [sys.executable, "-m", "alto.cli", *args]
    if not terminal:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
        assert done.returncode == 0, done.stderr
        return done.stdout, done.stderr
    leader, follower = pty.openpty()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    stdout = child.stdout.read().decode() if child.stdout else ""
    assert child.wait(timeout=240) == 0
    os.close(leader)
    return stdout, b"".join(chunks).decode(errors="replace")


RUN = ["run", "factcheck", "--n", "2", "--llm", "fake", "--embedder", "hash"]


def test_alto_run_shows_its_phases_on_a_terminal(tmp_path) -> None:
    trace = tmp_path / "trace.json"
    stdout, stderr = _alto([*RUN, "--trace", str(trace)], terminal=True, cache=str(tmp_path))
    assert "loading the embedder (hashing) ... " in stderr
    assert "embedding" in stderr and "passages for the search index, once" in stderr
    assert "passage index built in" in stderr
    assert str(tmp_path / "indexes") in stderr
    assert "starting the LLM (fake) ... " in stderr
    assert f"written to {trace}" in stderr and "ui.perfetto.dev" in stderr
    assert "factcheck: 2/2 inputs" in stdout
    # the second run finds the index
    _, again = _alto(RUN, terminal=True, cache=str(tmp_path))
    assert "loading the passage index ... " in again and "embedding" not in again


def test_alto_run_is_quiet_in_a_pipe_and_with_json(tmp_path) -> None:
    _, stderr = _alto(RUN, terminal=False, cache=str(tmp_path))
    assert stderr == ""
    stdout, stderr = _alto([*RUN, "--json"], terminal=True, cache=str(tmp_path))
    assert "loading" not in stderr and "embedding" not in stderr
    assert stdout.lstrip().startswith("{")
