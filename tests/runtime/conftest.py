"""End-to-end runtime tests run under every backend through the ``backend`` fixture."""

from __future__ import annotations

import pytest

BACKENDS = [pytest.param("local", id="local")]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
