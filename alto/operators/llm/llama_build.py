"""Whether the installed llama.cpp build can run on this machine.

llama-cpp-python ships only a source distribution, and its default build compiles llama.cpp for
the build machine's own CPU (``GGML_NATIVE``). On a virtual machine whose CPU advertises AMX or
AVX-512 without enabling it for processes, such a build dies with ``SIGILL`` (Illegal
instruction) at the first decode: a signal Python cannot turn into an exception. Alto's
``install.sh`` builds it for a portable baseline (AVX2, FMA, F16C) instead.

:func:`check_build` guards the other builds: one that was compiled for instructions beyond the
baseline is tried once, in a child process, before a model loads; if the child dies, the caller
gets an :class:`LLMError` saying what to reinstall. The verdict is kept per build and machine in
Alto's cache folder, so the try costs a few seconds once. Portable builds are never tried. (A
native build of llama-cpp-python 0.3.36 on a 2-core VM whose Xeon advertises AMX and AVX-512
died with SIGSEGV at the first decode; others report SIGILL on ``tileloadd``.)
"""

from __future__ import annotations

import hashlib
import platform
import re
import signal
import subprocess
import sys
from pathlib import Path

from alto.cache import cache_dir
from alto.operators.llm.errors import LLMError

LLAMA_VERSION = "0.3.36"
"""The llama-cpp-python release Alto is tested with (``install.sh`` builds this one)."""

BASELINE = frozenset({"SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2"})
"""Instruction sets of the portable x86-64 build; any compiled set beyond these is tried once."""

_ISA = re.compile(r"^(SSE|SSSE|AVX|AMX|F16C|FMA|BMI|VNNI|VBMI)")

REINSTALL = (
    "reinstall it for a portable CPU baseline: run 'bash install.sh' in Alto's checkout, or "
    "CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON\" pip install "
    f"--no-cache-dir --force-reinstall --no-deps llama-cpp-python=={LLAMA_VERSION}"
)

_PROBE = """
import sys
from llama_cpp import Llama
llama = Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, verbose=False)
llama.eval(llama.tokenize(b"Hello, world"))
"""


def compiled_features(info: str) -> list[str]:
    """The instruction sets a build was compiled with, from llama.cpp's system info line.

    In the order it lists them (``"CPU : SSE3 = 1 | AVX2 = 1 | ... | OPENMP = 1 |"``).
    """
    found = []
    for part in info.replace("\n", "|").split("|"):
        name, _, value = part.rpartition("=")
        name = name.split(":")[-1].strip()
        if value.strip() == "1" and _ISA.match(name) and name not in found:
            found.append(name)
    return found


def beyond_baseline(info: str) -> list[str]:
    """The compiled instruction sets a portable build would not have (``AMX_INT8``, ...)."""
    return [name for name in compiled_features(info) if name not in BASELINE]


def system_info() -> str:
    """llama.cpp's system info line of the installed build."""
    import llama_cpp

    raw: bytes = llama_cpp.llama_print_system_info()
    return raw.decode(errors="replace")


def check_build(model_path: str | Path) -> None:
    """Make sure the installed llama.cpp build can decode on this machine.

    Args:
        model_path: a GGUF file to try the build on.

    Raises:
        LLMError: the build dies on this CPU; the message says what to reinstall.
    """
    extra = beyond_baseline(system_info())
    if not extra:
        return
    import llama_cpp

    lib = Path(llama_cpp.__file__).parent / "lib"
    build = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in lib.glob("*.so*"))
    key = hashlib.sha256(repr((build, _cpu_model(), platform.release())).encode()).hexdigest()
    verdict = cache_dir() / "llama-builds" / f"{key[:16]}.ok"
    if verdict.exists():
        return
    child = subprocess.run(
        [sys.executable, "-c", _PROBE, str(model_path)], capture_output=True, timeout=300
    )
    if child.returncode < 0:
        name = signal.Signals(-child.returncode).name
        msg = (
            f"the installed llama.cpp build dies on this machine ({name} at its first "
            f"decode): it was built for the CPU's own instruction sets ({', '.join(extra)}), "
            f"which this machine does not let it run; {REINSTALL}"
        )
        raise LLMError(msg)
    if child.returncode == 0:
        verdict.parent.mkdir(parents=True, exist_ok=True)
        verdict.touch()
    # any other failure (a bad model file, say) is left to the real load, which reports it


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    match = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    return f"{match.group(1) if match else ''} {flags.group(1) if flags else ''}"
