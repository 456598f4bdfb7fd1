"""Type checking: the package is mypy-strict clean, and stages annotated with the markers
type-check (mypy sees Split/Gather as the real types)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = '''
from __future__ import annotations
from collections.abc import Sequence
import alto
from alto import Gather, GatherStream, Split

@alto.stage
async def words(text: str) -> Split[str]:
    for w in text.split():
        yield w

def total_length(words: Sequence[str]) -> int:
    return sum(len(w) for w in words)

@alto.stage
async def total(ws: Gather[str]) -> int:
    return total_length(ws) + len(ws) + len(ws[0:1])

@alto.stage
async def count(ws: GatherStream[str]) -> int:
    return len([w async for w in ws])
'''


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(900)  # a first run, with no mypy cache yet, reads every dependency's stubs
def test_package_passes_mypy_strict() -> None:
    """``alto`` is clean under ``mypy --strict`` with the project's configuration."""
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "-p", "alto"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow
def test_marker_annotations_pass_mypy(tmp_path: Path) -> None:
    file = tmp_path / "stages.py"
    file.write_text(EXAMPLE)
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", str(file)],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_markers_are_distinct_at_run_time() -> None:
    import typing

    from alto import Gather, GatherStream, Split

    assert len({Split, Gather, GatherStream}) == 3
    assert typing.get_origin(Split[int]) is Split
