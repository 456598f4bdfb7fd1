"""``docs/faults.md`` shows the fault matrix the tests of this folder check, as they check it."""

from __future__ import annotations

from faultkit import documented_matrix, matrix_rows, render_matrix


def test_the_documented_matrix_is_the_one_the_tests_check() -> None:
    rows = matrix_rows()
    assert len(rows) >= 40
    assert len({r.test for r in rows}) == len(rows)  # one row per test
    assert documented_matrix() == render_matrix(rows), (
        "docs/faults.md is out of date: run 'python tests/faults/faultkit.py'"
    )
