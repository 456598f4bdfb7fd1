"""Where the benchmark ran: the machine, Python, the packages' versions, the git commit."""

from __future__ import annotations

import os
import sys
from typing import Any

from alto.bench.settings import Settings

BLAS_THREADS = "1"
"""BLAS threads in the bench process and the servers it starts (unless the user set some)."""


def one_blas_thread() -> None:
    """Give the bench, and the servers it starts, one BLAS thread unless the user set a number.

    OpenBLAS's idle workers busy-wait after each small matrix product (the near-duplicate
    check's, the retriever's): they burn a second core, which the emulator's process needs
    on a small machine, and count as the bench process's CPU, for every system alike.
    OpenBLAS reads the setting once, when numpy loads, so this runs before anything
    imports numpy.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", BLAS_THREADS)


def environment(settings: Settings) -> dict[str, Any]:
    """Where the benchmark ran: machine, Python, package versions, git commit."""
    import platform
    import subprocess
    from importlib import metadata

    packages: dict[str, str | None] = {}
    for name in (
        "alto",
        "anyio",
        "httpx",
        "pydantic",
        "numpy",
        "langgraph",
        "langchain-core",
        "torch",
        "sentence-transformers",
        "faiss-cpu",
        "llama_cpp_python",
        "uvicorn",
        "starlette",
        "matplotlib",
        "tqdm",
    ):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                cwd=os.path.dirname(__file__),
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine": platform.machine(),
        "platform": platform.platform(),
        "processor": platform.processor() or None,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "packages": packages,
        "git_commit": commit,
        "llm": settings.llm,
        "seed": settings.seed,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
    }
