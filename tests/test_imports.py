"""Dependencies point one way: every module imports alone, and the ancestry layer is pure.

A module that imports only as part of a larger import (a cycle that happens to resolve in
one order) fails here: each module of ``alto`` is imported first, in a process where no
``alto`` module was imported yet. The processes are forked from one that imported only
third-party libraries, so the check takes seconds, not a minute.
"""

from __future__ import annotations

import ast
import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import alto

ALTO = Path(alto.__file__).resolve().parent

FORKED_IMPORTS = textwrap.dedent(
    """
    import importlib, os, sys, traceback
    for lib in ("anyio", "pydantic", "httpx", "ray", "numpy"):
        try:
            importlib.import_module(lib)
        except ImportError:
            pass
    assert not [m for m in sys.modules if m == "alto" or m.startswith("alto.")]
    failed = []
    for name in sys.argv[1:]:
        pid = os.fork()
        if pid == 0:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:  # an optional dependency that is not installed
                os._exit(0 if exc.name and not exc.name.startswith("alto") else 1)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            failed.append(name)
    print("FAILED", *failed)
    sys.exit(1 if failed else 0)
    """
)


def alto_modules() -> list[str]:
    modules = pkgutil.walk_packages([str(ALTO)], "alto.")
    return sorted(m.name for m in modules if not m.name.endswith("__main__"))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks a process per module")
def test_every_module_imports_alone():
    modules = ["alto", *alto_modules()]
    assert "alto.runtime.ray.stage" in modules and "alto.apps" in modules
    done = subprocess.run(
        [sys.executable, "-c", FORKED_IMPORTS, *modules],
        capture_output=True, text=True, timeout=300, cwd=ALTO.parent,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def imports_of(path: Path) -> set[str]:
    """The ``alto`` modules a file imports, at any depth of its code (lazy imports too)."""
    found: set[str] = set()
    package = ".".join(path.relative_to(ALTO.parent).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "alto")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            if base.split(".")[0] == "alto":
                found.add(base)
                found.update(
                    f"{base}.{a.name}" for a in node.names
                    if source_of(f"{base}.{a.name}") is not None  # a submodule
                )
    return found


def source_of(module: str) -> Path | None:
    path = ALTO.parent.joinpath(*module.split("."))
    if path.with_suffix(".py").exists():
        return path.with_suffix(".py")
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return None


def reach(start: list[str], skip: set[str]) -> set[str]:
    """Every ``alto`` module reachable by imports from ``start``, not going through ``skip``."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        module = todo.pop()
        if module in seen or module in skip:
            continue
        seen.add(module)
        path = source_of(module)
        if path is not None:
            todo.extend(imports_of(path))
    return seen


def test_the_ancestry_layer_imports_no_runtime_operator_or_bench_module():
    ancestry = sorted(
        f"alto.ancestry.{p.stem}" if p.stem != "__init__" else "alto.ancestry"
        for p in (ALTO / "ancestry").glob("*.py")
    )
    # what alto/ancestry reaches through its own imports (the alto package's __init__,
    # which re-exports the public API, is not one of them)
    reached = reach(ancestry, skip={"alto"})
    bad = sorted(
        m for m in reached
        if m.startswith(("alto.runtime", "alto.operators", "alto.bench", "alto.cli"))
    )
    assert not bad, f"alto/ancestry reaches {bad}"


def test_the_cli_and_the_bench_do_not_import_each_other():
    bench = [p for p in (ALTO / "bench").rglob("*.py")]
    assert not any("alto.cli" in imports_of(p) for p in bench)


def test_the_ray_driver_and_backend_do_not_import_each_other():
    stage = imports_of(ALTO / "runtime" / "ray" / "stage.py")
    assert "alto.runtime.ray.backend" not in stage
    assert "alto.runtime.ray.stage" in imports_of(ALTO / "runtime" / "ray" / "backend.py")


def test_the_invoker_and_opentelemetry_do_not_import_each_other():
    # the invoker knows the call-observer protocol only; OpenTelemetry implements it
    invoker = reach(["alto.runtime.invoke"], skip={"alto"})
    assert "alto.runtime.observe" in invoker
    assert not {"alto.runtime.otel", "alto._otel"} & invoker
    otel = reach(["alto.runtime.otel"], skip={"alto"})
    assert "alto.runtime.observe" in otel and "alto.runtime.invoke" not in otel
