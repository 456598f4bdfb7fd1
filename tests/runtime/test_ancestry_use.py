"""The runtime derives ancestries only through ``alto.ancestry`` (whose laws are tested).

A slice or index of an ancestry tuple written in the runtime would be an operation the
laws in ``tests/ancestry/test_ancestry.py`` do not cover; this test finds the usual forms.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[2] / "alto" / "runtime"

TUPLE_ARITHMETIC = {
    "a root (root_of)": re.compile(r"\b(anc|parent|key|a|first)\[0\]|\[0\]\[0\]"),
    "a parent (parent_key)": re.compile(r"\[:-2\]"),
    "a child index (child_index)": re.compile(r"\b(anc|a)\[-1\]"),
    "a key length (key_length)": re.compile(r"1 \+ 2 \*"),
    "a level": re.compile(r"len\(\w+\) - 1\) // 2|len\(\w+\) >> 1"),
    "a child (child)": re.compile(r"\banc \+ \("),
    "a root ancestry (root)": re.compile(r"\((index|root|i),\)"),
}

CHECKED = sorted(RUNTIME.rglob("*.py"))


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(RUNTIME)))
def test_no_ancestry_tuple_arithmetic_in_the_runtime(path: Path) -> None:
    found = [
        f"{path.name}:{n}: {what}: {line.strip()}"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        for what, pattern in TUPLE_ARITHMETIC.items()
        if pattern.search(line.split("#")[0])
    ]
    assert not found, "use alto.ancestry instead:\n" + "\n".join(found)


def test_the_check_finds_tuple_arithmetic() -> None:
    lines = ["root = anc[0]", "up = rec[0][:-2]", "n = 1 + 2 * node.level", "c = anc + (s, i)"]
    for line in lines:
        assert any(p.search(line) for p in TUPLE_ARITHMETIC.values()), line
