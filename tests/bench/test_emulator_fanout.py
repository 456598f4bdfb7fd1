"""The emulator's fan-out settings and its prefix-cache reset, over HTTP (timing emulation:
nothing here is a model)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from alto.bench.emulator import EmulatorConfig, serve_emulator

INSTANT = EmulatorConfig(time_scale=0.0)
VARIED = EmulatorConfig(time_scale=0.0, fanout="varied")
LONG = ("Rivers carry water to the sea and shape the land they cross. " * 4)[:200]
QUESTIONS = [f"Why does question number {i} about compilers matter so much?" for i in range(40)]


def _ask(url: str, content: str, **extra: Any) -> dict[str, Any]:
    body = {"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": 400}
    response = httpx.post(f"{url}/chat/completions", json={**body, **extra}, timeout=30)
    response.raise_for_status()
    return dict(response.json())


def _lines(url: str, content: str) -> int:
    return len(_ask(url, content)["choices"][0]["message"]["content"].splitlines())


def test_uniform_answers_have_the_configured_sentence_count() -> None:
    with serve_emulator(INSTANT) as url:
        assert {_lines(url, q) for q in QUESTIONS[:10]} == {INSTANT.answer_sentences}


def test_varied_answers_have_1_to_8_sentences_drawn_per_prompt() -> None:
    with serve_emulator(VARIED) as url:
        counts = [_lines(url, q) for q in QUESTIONS]
        again = [_lines(url, q) for q in QUESTIONS]
    assert counts == again  # the same prompt, the same fan-out
    assert min(counts) >= 1 and max(counts) <= 8
    assert len(set(counts)) >= 4  # it varies across prompts


def test_varied_json_arrays_have_1_to_6_items() -> None:
    schema = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "string"}}},
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    with serve_emulator(VARIED) as url:
        sizes = [
            len(
                json.loads(_ask(url, q, response_format=fmt)["choices"][0]["message"]["content"])[
                    "items"
                ]
            )
            for q in QUESTIONS
        ]
    assert min(sizes) >= 1 and max(sizes) <= 6 and len(set(sizes)) >= 3


def test_reset_prefix_cache_makes_the_next_request_cold() -> None:
    with serve_emulator(INSTANT, replicas=2, balancer="prefix-aware") as url:
        root = url.removesuffix("/v1")
        _ask(url, LONG)
        assert _ask(url, LONG)["usage"]["prompt_tokens_details"]["cached_tokens"] == 48
        reset = httpx.post(f"{root}/reset_prefix_cache", timeout=30)
        assert reset.status_code == 200 and reset.json()["dropped_blocks"] >= 3
        assert _ask(url, LONG)["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        assert httpx.post(f"{root}/r/5/reset_prefix_cache", timeout=30).status_code == 404
