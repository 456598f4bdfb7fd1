"""Best against best: each system at its own best deployment, compared with Alto at its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from alto.bench import headline


def _outcome(best: float | None, fail: float | None) -> dict[str, Any]:
    return {
        "best_rate": best,
        "first_fail": fail,
        "repeat_min": best,
        "repeat_max": fail,
        "trials": 4,
    }


def _report(tmp_path: Path, deployment: str, systems: dict[str, Any]) -> Path:
    results = {
        "settings": {"deployment": deployment},
        "apps": {"factcheck": {"sweep": {"search": {"systems": systems}}}},
    }
    path = tmp_path / f"{deployment}.json"
    path.write_text(json.dumps(results))
    return path


def test_each_system_at_its_own_best_deployment(tmp_path: Path) -> None:
    single = _report(
        tmp_path,
        "single",
        {
            "alto": _outcome(4.0, 5.0),
            "asyncio-reference": _outcome(4.0, 5.0),
            "langgraph-flat": _outcome(3.0, 4.0),
        },
    )
    rr4 = _report(
        tmp_path,
        "rr4",
        {
            "alto": _outcome(20.0, 24.0),
            "asyncio-reference": _outcome(18.0, 21.0),
            "langgraph-flat": _outcome(2.0, 3.0),
            "alto-no-lineage": _outcome(40.0, 50.0),  # a control: never in the headline
        },
    )
    tables = headline.best_rows(headline.load([single, rr4]))
    rows = {r["system"]: r for r in tables["factcheck"]}
    assert set(rows) == {"alto", "asyncio-reference", "langgraph-flat"}
    assert rows["alto"]["deployment"] == "rr4"
    assert rows["asyncio-reference"]["deployment"] == "rr4"
    assert rows["langgraph-flat"]["deployment"] == "single"  # its best is one server
    assert rows["asyncio-reference"]["vs_alto_parity"]  # [18, 21] overlaps [20, 24]
    flat = rows["langgraph-flat"]
    assert not flat["vs_alto_parity"]
    assert flat["vs_alto"] == pytest.approx(3.0 / 20.0)
    text = headline.render(tables)
    row = "| factcheck | asyncio-reference | rr4 | 18 [18, 21] | 21 | 1.11x [0.952, 1.33], parity |"
    assert row in text
    assert "6.67x" in text and "Alto higher" in text


def test_a_report_without_its_deployment_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"settings": {}, "apps": {}}))
    with pytest.raises(ValueError, match="no settings.deployment"):
        headline.load([path])
    assert headline.main([str(path)]) == 2


def test_two_reports_of_one_deployment_are_refused(tmp_path: Path) -> None:
    a = _report(tmp_path, "rr4", {"alto": _outcome(1.0, 2.0)})
    b = tmp_path / "copy.json"
    b.write_text(a.read_text())
    with pytest.raises(ValueError, match="a second report of app 'factcheck' on deployment 'rr4'"):
        headline.load([a, b])


def test_one_report_per_app_and_deployment_is_merged(tmp_path: Path) -> None:
    a = _report(tmp_path, "ll4", {"alto": _outcome(8.0, 10.0)})
    other = json.loads(a.read_text())
    other["apps"] = {"multihop": other["apps"]["factcheck"]}
    b = tmp_path / "multihop.json"
    b.write_text(json.dumps(other))
    tables = headline.best_rows(headline.load([a, b]))
    assert set(tables) == {"factcheck", "multihop"}
    assert tables["multihop"][0]["deployment"] == "ll4"
