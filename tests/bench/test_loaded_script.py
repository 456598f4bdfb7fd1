"""``benchmarks/loaded.py``: the rates and systems it runs come from the rate search's report,
and its summary calls a ratio parity exactly when the interval holds 1."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest


@pytest.fixture(scope="module")
def loaded(benchmark_script: Callable[[str], ModuleType]) -> ModuleType:
    return benchmark_script("loaded")


def search_report(root: Path, app: str, deployment: str, rates: dict[str, float]) -> None:
    systems = {name: {"best_rate": r, "first_fail": r * 1.25} for name, r in rates.items()}
    found = {"apps": {app: {"sweep": {"slo_s": 1.5, "search": {"systems": systems}}}}}
    where = root / app / deployment
    where.mkdir(parents=True)
    (where / "results.json").write_text(json.dumps(found))


def test_the_rates_are_shares_of_the_references_and_the_best_langgraph_runs(
    loaded: ModuleType, tmp_path: Path
) -> None:
    rates = {"alto": 6.6, "asyncio-reference": 5.0, "langgraph-flat": 4.0,
             "langgraph-functional": 5.0, "langgraph-subgraph": 5.0}
    search_report(tmp_path, "summarize", "ll4", rates)
    found = loaded.searched(tmp_path, "summarize", "ll4")
    # a tie between versions goes to the one listed first
    assert found == {"reference_rate": 5.0, "slo_s": 1.5, "langgraph": "langgraph-subgraph"}
    cmd = loaded.command("summarize", "ll4", found, tmp_path / "out", 60, 3)
    assert cmd[cmd.index("--rate") + 1] == "4,4.5"
    assert cmd[cmd.index("--slo") + 1] == "1.5"
    assert cmd[cmd.index("--systems") + 1] == "alto,langgraph-subgraph,asyncio-reference"
    assert "--no-sweep-stop" in cmd and cmd[cmd.index("--open-inputs") + 1] == "60"


def test_a_ratio_is_parity_exactly_when_its_interval_holds_one(loaded: ModuleType) -> None:
    assert loaded.verdict([0.9, 1.0]) == "parity"
    assert loaded.verdict([1.2, 1.6]) == "Alto lower"  # the other's figure is higher
    assert loaded.verdict([0.5, 0.8]) == "Alto higher"
    assert loaded.verdict(None) == ""
