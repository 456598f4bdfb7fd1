"""Dependencies point one way: every module imports alone, and imports run down the layers.

A module that imports only as part of a larger import (a cycle that happens to resolve in
one order) fails here: each module of ``alto`` is imported first, in a process where no
``alto`` module was imported yet. The processes are forked from one that imported only
third-party libraries, so the check takes seconds, not a minute.

The layers (:data:`LAYERS`) are checked against the ``import`` statements in the source,
lazy ones included: the error root and the pure ancestry algebra at the bottom, then the
errors, the compiler, the runtime, ..., the CLI at the top. An import from a higher layer
fails the check.
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


def arrows_of(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for each ``alto`` module the file at ``path`` imports, at any depth
    of its code (lazy imports and ``TYPE_CHECKING`` ones too). ``from package import name``
    imports the submodule ``package.name`` where there is one, else ``package`` itself."""
    found: list[tuple[int, str]] = []
    module = module_of(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend(
                (node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "alto"
            )
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base.split(".")[0] != "alto":
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((node.lineno, submodule if source_of(submodule) else base))
    return list(dict.fromkeys(found))


def imports_of(path: Path) -> set[str]:
    """The ``alto`` modules a file imports, at any depth of its code (lazy imports too)."""
    return {module for _, module in arrows_of(path)}


def module_of(path: Path) -> str:
    parts = path.relative_to(ALTO.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_of(module: str) -> Path | None:
    path = ALTO.parent.joinpath(*module.split("."))
    if path.with_suffix(".py").exists():
        return path.with_suffix(".py")
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return None


LAYERS: tuple[tuple[str, ...], ...] = (
    ("_errors",),  # the root of the errors, which every part may raise
    ("ancestry",),  # the ancestry algebra: imports nothing else of Alto but the error root
    ("_version", "_marker_classes", "cache"),
    ("errors", "lineage", "markers", "_tracing"),  # lineage: what operators read, runtimes set
    ("compiler", "result"),
    ("stage", "operators"),  # operators know no runtime; the Ray runtime shares their dispatchers
    ("runtime",),
    ("flow",),
    ("alto", "console"),  # "alto": the package's __init__, the public API
    ("apps", "testing"),
    ("serve", "bench"),
    ("cli",),
)
"""Alto's parts from the bottom up, each named by its place under ``alto/`` (a module or a
subpackage). A module imports from its own part or from parts in lower layers; the parts of
one layer are independent of each other."""


def part_of(module: str) -> str:
    return module.split(".")[1] if "." in module else module


Arrow = tuple[str, str, str]
"""``(where, importer, imported)``: ``where`` is the ``file:line`` of the import."""


def arrows_back_up(arrows: list[Arrow], layers: tuple[tuple[str, ...], ...]) -> list[str]:
    """The arrows that run back up the layers, or sideways between two parts of one layer."""
    rank = {part: i for i, layer in enumerate(layers) for part in layer}
    bad = []
    for where, importer, imported in arrows:
        source, target = part_of(importer), part_of(imported)
        if source == target:
            continue
        if source not in rank or target not in rank:
            why = f"{(source if source not in rank else target)!r} has no layer in LAYERS"
        elif rank[target] > rank[source]:
            why = f"{target!r} is in a higher layer than {source!r}"
        elif rank[target] == rank[source]:
            why = f"{target!r} and {source!r} share a layer, whose parts are independent"
        else:
            continue
        bad.append(f"{where}: {importer} -> {imported}: {why}")
    return bad


def alto_arrows() -> list[Arrow]:
    return [
        (f"{path.relative_to(ALTO.parent)}:{line}", module_of(path), imported)
        for path in sorted(ALTO.rglob("*.py"))
        for line, imported in arrows_of(path)
    ]


def test_every_part_of_alto_has_one_layer():
    parts = {part_of(module_of(p)) for p in ALTO.rglob("*.py")}
    placed = [part for layer in LAYERS for part in layer]
    assert len(placed) == len(set(placed)), "a part is in two layers"
    assert parts == set(placed), (
        f"place {sorted(parts - set(placed))} in LAYERS (tests/test_imports.py); "
        f"no longer under alto/: {sorted(set(placed) - parts)}"
    )


def test_imports_point_down_the_layers():
    bad = "\n".join(arrows_back_up(alto_arrows(), LAYERS))
    assert not bad, f"imports that run back up (move what both need down a layer):\n{bad}"


def test_the_layer_check_finds_arrows_up_and_sideways():
    arrows = [
        ("a", "alto.errors", "alto.ancestry.ancestry"),  # down
        ("b", "alto.compiler.spec", "alto.compiler.typecheck"),  # within one part
        ("c", "alto.errors", "alto.compiler.plan"),  # up
        ("d", "alto.serve.launch", "alto.bench.cli"),  # sideways
        ("e", "alto.operators.llm.local", "alto"),  # the public API's __init__ is above them
    ]
    assert [b.split(":")[0] for b in arrows_back_up(arrows, LAYERS)] == ["c", "d", "e"]


def test_an_arrow_goes_to_the_submodule_a_name_is_when_it_is_one():
    local = {m for _, m in arrows_of(ALTO / "operators" / "llm" / "local.py")}
    assert {"alto.lineage", "alto.operators._model_spans"} <= local and "alto" not in local
    # from alto import _tracing: the module; from alto import current_call: the package
    assert "alto._tracing" in imports_of(ALTO / "runtime" / "spans.py")
    assert "alto" not in imports_of(ALTO / "runtime" / "spans.py")
    assert "alto" in imports_of(ALTO / "bench" / "record.py")


def test_the_ray_driver_and_backend_do_not_import_each_other():
    stage = imports_of(ALTO / "runtime" / "ray" / "stage.py")
    assert "alto.runtime.ray.backend" not in stage
    assert "alto.runtime.ray.stage" in imports_of(ALTO / "runtime" / "ray" / "backend.py")


def reach(start: list[str], skip: set[str]) -> set[str]:
    """The ``alto`` modules ``start`` imports, directly or through others (not through ``skip``)."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        path = source_of(todo.pop())
        for module in imports_of(path) if path is not None else ():
            if module not in seen and module not in skip:
                seen.add(module)
                todo.append(module)
    return seen


def test_the_invoker_and_opentelemetry_do_not_import_each_other():
    # the invoker knows the call-observer protocol only; OpenTelemetry implements it
    invoker = reach(["alto.runtime.invoke"], skip={"alto"})
    assert "alto.runtime.observe" in invoker
    assert not {"alto.runtime.spans", "alto._tracing"} & invoker
    otel = reach(["alto.runtime.spans"], skip={"alto"})
    assert "alto.runtime.observe" in otel and "alto.runtime.invoke" not in otel
