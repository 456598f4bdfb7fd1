"""The public surface: ``__all__`` matches the module, and importing Alto stays light."""

from __future__ import annotations

import subprocess
import sys

import alto


def test_all_lists_exactly_the_public_names():
    public = {n for n in vars(alto) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(alto, n)).__name__ == "module"}
    assert set(alto.__all__) == public - modules
    assert len(alto.__all__) == len(set(alto.__all__))


def test_design_contract_names_exist():
    for name in ["stage", "Split", "Gather", "flow", "Flow", "run", "Result", "CompileError",
                 "StageError", "PipelineError"]:
        assert name in alto.__all__
    assert issubclass(alto.CompileError, alto.AltoError)
    assert issubclass(alto.StageError, alto.AltoError)
    assert issubclass(alto.PipelineError, alto.AltoError)


def test_import_alto_does_not_import_heavy_libraries():
    code = (
        "import sys, alto, alto.operators, alto.runtime, alto.runtime.local\n"
        "import alto.operators.llm.openai, alto.operators.llm.local, alto.cli\n"
        "heavy = {'torch', 'faiss', 'ray', 'llama_cpp', 'langgraph', 'sentence_transformers',\n"
        "         'opentelemetry'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_errors_pickle_with_their_fields():
    import pickle

    err = alto.StageError("s", (3, "split", 1), ValueError("x"), attempts=2)
    back = pickle.loads(pickle.dumps(err))
    assert (back.stage, back.ancestry, back.index, back.attempts) == ("s", (3, "split", 1), 3, 2)
    assert str(back) == str(err)
    cut = alto.StageError("s", (1,), ValueError("x"), bisected=8)
    back = pickle.loads(pickle.dumps(cut))
    assert back.bisected == 8 and str(back) == str(cut) and "bisecting a batch of 8" in str(back)
    late = pickle.loads(pickle.dumps(alto.StageTimeout("slow", 2.5, split=True)))
    assert (late.stage, late.timeout, late.split) == ("slow", 2.5, True)
    assert isinstance(late, TimeoutError) and isinstance(late, alto.AltoError)
    assert str(late).startswith("stage 'slow' timed out after 2.5 s")
    inp = pickle.loads(pickle.dumps(alto.InputError(4, "bad", parameter="p")))
    assert (inp.index, inp.parameter, str(inp)) == (4, "p", "input 4: bad")
