"""LLM clients travel to other processes (Ray actors) as their settings, never their secrets."""

from __future__ import annotations

import pickle

import pytest

from alto.operators.llm.openai import OpenAIClient


def test_openai_client_pickles_as_settings_without_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALTO_TEST_KEY", "sk-very-secret")
    client = OpenAIClient("http://127.0.0.1:9/v1", "m", api_key_env="ALTO_TEST_KEY",
                          max_concurrency=5, timeout=3.0)
    blob = pickle.dumps(client)
    assert b"sk-very-secret" not in blob
    monkeypatch.setenv("ALTO_TEST_KEY", "sk-other")
    copy = pickle.loads(blob)
    assert (copy.base_url, copy.model, copy.max_concurrency, copy.timeout) == (
        "http://127.0.0.1:9/v1", "m", 5, 3.0)
    assert copy._secret == "sk-other"  # read from the environment where it is unpickled


@pytest.mark.models
def test_local_llm_pickles_as_settings() -> None:
    from alto.operators.llm.local import LocalLLM

    llm = LocalLLM(n_ctx=512)
    copy = pickle.loads(pickle.dumps(llm))
    assert copy.model_path == llm.model_path and copy.max_concurrency == 1
    assert copy._settings == llm._settings
