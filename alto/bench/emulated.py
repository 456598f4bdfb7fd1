"""The bench's view of the running serving-timing emulator.

The probe that checks the bound's timing model against it, and its counters, read around
each run.
"""

from __future__ import annotations

import math
from typing import Any


async def probe_emulator(llm: Any, model: Any) -> dict[str, Any]:
    """Check the bound's timing model against the running emulator.

    One request goes straight to the server; the modeled time to first token it reports
    must equal what ``model`` predicts for the same prompt with one sequence running.
    """
    import httpx

    from alto.bench.bound import prompt_tokens

    content = "Timing probe. How long does the first token take?"
    body = {
        "model": "emulated",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 2,
    }
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(f"{llm.base_url}/chat/completions", json=body)
        response.raise_for_status()
        reported = response.json().get("emulator", {})
    expected = model.ttft(prompt_tokens(len(content), model.chars_per_token), 1)
    got = reported.get("modeled_ttft_s")
    return {
        "expected_ttft_s": expected,
        "reported_ttft_s": got,
        "agrees": got is not None and math.isclose(got, expected, rel_tol=1e-9),
    }


class EmulatorCounters:
    """The emulator's prompt and cached-token counters, read around each run.

    Also the balancer's decisions per replica by kind (``decisions``, as of the last
    :meth:`read`).
    """

    def __init__(self, server: Any) -> None:
        self.root = server.base_url.removesuffix("/v1")
        self.decisions: list[dict[str, int]] = []

    async def reset_cache(self) -> None:
        """Empty the emulator's prefix caches (vLLM's ``POST /reset_prefix_cache``)."""
        import httpx

        async with httpx.AsyncClient(timeout=30) as client:
            (await client.post(f"{self.root}/reset_prefix_cache")).raise_for_status()

    async def read(self) -> tuple[int, int, int, list[dict[str, Any]]]:
        """Read the emulator's counters.

        Returns (requests, prompt tokens looked up in the prefix cache, tokens found there,
        and each replica's own counters as ``/stats`` gives them).
        """
        import httpx

        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(f"{self.root}/stats")
            response.raise_for_status()
            stats = response.json()
        per = stats["per_replica"]
        self.decisions = [dict(d) for d in stats["balancer_decisions"]]
        return (
            int(stats["requests"]),
            sum(int(r["prefix_cache"]["queried_tokens"]) for r in per),
            sum(int(r["prefix_cache"]["hit_tokens"]) for r in per),
            per,
        )

    @staticmethod
    def decision_deltas(
        before: list[dict[str, int]], after: list[dict[str, int]]
    ) -> list[dict[str, int]]:
        """Per replica, the balancer's decisions by kind between two reads."""
        return [
            {kind: n - b.get(kind, 0) for kind, n in a.items()}
            for b, a in zip(before, after, strict=True)
        ]
