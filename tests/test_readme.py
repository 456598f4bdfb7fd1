"""The README's commands and code run as shown.

Every ``alto ...`` line of its shell blocks parses with the CLI's own parser (an option that
was renamed or removed fails here); the fast ones, which need no model, server or cluster,
run to the end. Its Python blocks run as written. The two commands a newcomer needs are
there, and ``.ci/run`` runs the second.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from alto.cli import parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

INSTALL_AND_RUN = "bash install.sh && . .venv/bin/activate && alto run factcheck --n 3"
INSTALL_AND_TEST = "bash install.sh all && . .venv/bin/activate && pytest"

FAST = ("alto list", "alto graph ", "alto run ingest --n 2 --embedder hash")
"""The commands run here: no model to load, no server, no cluster."""


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def alto_commands() -> list[str]:
    lines = (
        line.split("#", 1)[0].strip() for block in blocks("bash") for line in block.splitlines()
    )
    return [line for line in lines if line.startswith("alto ")]


def test_the_two_commands_are_shown_and_ci_runs_the_second() -> None:
    shown = [line.strip() for block in blocks("bash") for line in block.splitlines()]
    assert INSTALL_AND_RUN in shown and INSTALL_AND_TEST in shown
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash install.sh all" in ci and re.search(r"^pytest$", ci, flags=re.M)


def test_the_readme_shows_alto_commands() -> None:
    commands = alto_commands()
    assert len(commands) >= 8
    assert all(any(c.startswith(f) for c in commands) for f in FAST)


@pytest.mark.parametrize("command", alto_commands())
def test_every_alto_command_parses(command: str) -> None:
    args = parser().parse_args(shlex.split(command)[1:])
    assert args.command == shlex.split(command)[1]


@pytest.mark.parametrize("command", [c for c in alto_commands() if c.startswith(FAST)])
def test_the_fast_commands_run(command: str) -> None:
    argv = [sys.executable, "-m", "alto.cli", *shlex.split(command)[1:]]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()


def test_the_python_examples_run() -> None:
    code = blocks("python")
    assert code, "the README shows no Python"
    example = subprocess.run(
        [sys.executable, "-c", code[0]], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert example.returncode == 0, example.stderr[-2000:]
    assert example.stdout.strip() == "[0.5]"  # the value its comment promises
    for block in code[1:]:  # the others define things; running them must not fail
        done = subprocess.run(
            [sys.executable, "-c", block], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
