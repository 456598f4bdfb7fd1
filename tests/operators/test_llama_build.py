"""The llama.cpp build: portable as installed, and a build that dies on this CPU is explained."""

from __future__ import annotations

import platform
import sys

import pytest

from alto.operators.llm import llama_build
from alto.operators.llm.errors import LLMError

PORTABLE_INFO = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
NATIVE_INFO = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | "
    "BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | "
    "AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)


def test_compiled_features_reads_instruction_sets_only() -> None:
    assert llama_build.compiled_features(PORTABLE_INFO) == [
        "SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2"
    ]
    assert llama_build.beyond_baseline(PORTABLE_INFO) == []
    assert llama_build.beyond_baseline(NATIVE_INFO) == [
        "AVX_VNNI", "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16", "AMX_INT8"
    ]
    assert llama_build.compiled_features("CPU : AVX2 = 0 | AMX_INT8 = 0 |") == []


@pytest.mark.models
def test_the_installed_build_is_portable() -> None:
    """What install.sh builds: the pinned release, no AMX, no AVX-512, no native-only sets."""
    llama_cpp = pytest.importorskip("llama_cpp")
    info = llama_build.system_info()
    assert llama_cpp.__version__ == llama_build.LLAMA_VERSION
    assert "AMX" not in info and "AVX512" not in info, info
    assert llama_build.beyond_baseline(info) == [], info
    if platform.machine() == "x86_64":
        assert {"AVX2", "FMA", "F16C"} <= set(llama_build.compiled_features(info)), info


def test_a_build_that_dies_is_a_one_line_llm_error(monkeypatch, tmp_path) -> None:
    """A build beyond the baseline is tried in a child; a child killed by a signal (here
    SIGILL, raised by the probe itself) becomes an LLMError that says what to reinstall."""
    pytest.importorskip("llama_cpp")
    monkeypatch.setenv("ALTO_CACHE", str(tmp_path))
    monkeypatch.setattr(llama_build, "system_info", lambda: NATIVE_INFO)
    monkeypatch.setattr(
        llama_build, "_PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"
    )
    with pytest.raises(LLMError) as caught:
        llama_build.check_build(tmp_path / "model.gguf")
    message = str(caught.value)
    assert "\n" not in message
    assert "SIGILL" in message and "AMX_INT8" in message
    assert "install.sh" in message and "--no-cache-dir" in message
    assert not (tmp_path / "llama-builds").exists()  # a failure is never cached


def test_a_build_that_runs_is_tried_once(monkeypatch, tmp_path) -> None:
    pytest.importorskip("llama_cpp")
    monkeypatch.setenv("ALTO_CACHE", str(tmp_path))
    monkeypatch.setattr(llama_build, "system_info", lambda: NATIVE_INFO)
    marker = tmp_path / "tried"
    monkeypatch.setattr(llama_build, "_PROBE", f"open({str(marker)!r}, 'a').write('x')")
    llama_build.check_build(tmp_path / "model.gguf")
    llama_build.check_build(tmp_path / "model.gguf")
    assert marker.read_text() == "x"
    assert len(list((tmp_path / "llama-builds").iterdir())) == 1


def test_a_portable_build_is_never_tried(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("ALTO_CACHE", str(tmp_path))
    monkeypatch.setattr(llama_build, "system_info", lambda: PORTABLE_INFO)
    monkeypatch.setattr(llama_build.subprocess, "run", _no_child)
    llama_build.check_build(tmp_path / "model.gguf")


def _no_child(*args: object, **kwargs: object) -> None:
    msg = f"a portable build was tried in a child: {args} {sys.argv}"
    raise AssertionError(msg)
