"""``benchmarks/knee_search.py``: the rate search's reports again, with the finer bisection,
the arrivals and the seed it is given, and Alto without ``priority`` on factcheck only."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest


@pytest.fixture(scope="module")
def knee(benchmark_script: Callable[[str], ModuleType]) -> ModuleType:
    return benchmark_script("knee_search")


def commands(
    knee: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str
) -> list[list[str]]:
    assert knee.main(["--dry-run", "--out", str(tmp_path), *argv]) == 0
    lines = [
        line[2:].split() for line in capsys.readouterr().out.splitlines() if line.startswith("+ ")
    ]
    return [cmd for cmd in lines if "bench" in cmd]


def option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_every_report_gets_the_finer_search_and_factcheck_the_priority_control(
    knee: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cmds = commands(knee, tmp_path, capsys, "--width", "0.05", "--arrivals", "180", "--seed", "7")
    apps = [(cmd[cmd.index("bench") + 1], option(cmd, "--deployment")) for cmd in cmds]
    assert apps == [
        ("factcheck", "ll4"),
        ("multihop", "ll4"),
        ("summarize", "ll4"),
        ("ingest", "single"),
    ]
    for cmd in cmds:
        assert option(cmd, "--search-width") == "0.05"
        assert option(cmd, "--search-arrivals") == "180"
        assert option(cmd, "--seed") == "7"
        assert option(cmd, "--out").startswith(str(tmp_path))
    systems = [option(cmd, "--systems").split(",") for cmd in cmds]
    assert "alto-no-priority" in systems[0]
    assert all("alto-no-priority" not in s for s in systems[1:])
    assert all({"alto", "asyncio-reference", "langgraph-flat"} <= set(s) for s in systems)


def test_apps_left_out_are_not_run_and_written_reports_are_kept_on_resume(
    knee: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "factcheck" / "ll4").mkdir(parents=True)
    (tmp_path / "factcheck" / "ll4" / "results.json").write_text("{}")
    cmds = commands(knee, tmp_path, capsys, "--apps", "factcheck", "ingest", "--resume")
    assert [cmd[cmd.index("bench") + 1] for cmd in cmds] == ["ingest"]
