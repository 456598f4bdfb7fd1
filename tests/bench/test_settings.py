"""The bench's settings check themselves when made, in code as from the command line."""

from __future__ import annotations

import argparse
import re
from typing import Any

import pytest

from alto.bench.cli import add_arguments, settings_from
from alto.bench.errors import BenchError
from alto.bench.settings import Settings


def parsed(*argv: str) -> Settings:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return settings_from(p.parse_args(list(argv)))


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"apps": ["nope"]}, "unknown app 'nope'"),
        ({"queries": 0}, "--queries must be at least 1, got 0"),
        ({"repeats": 0}, "--repeats must be at least 1, got 0"),
        ({"concurrency": [0, 4]}, "--concurrency must be positive numbers, got '0,4'"),
        ({"rates": [-1.0]}, "--rate must be positive numbers, got '-1'"),
        ({"systems": ["alto", "nope"]}, "unknown systems ['nope']"),
        ({"llm": "fake", "systems": ["alto-no-lineage"]}, "hold LLM clients of their own"),
        ({"deployment": "rr4", "llm": "fake"}, "--deployment rr4 starts its replicas"),
        ({"deployment": "rr8"}, "--deployment must be one of single, rr2"),
        ({"max_inflight": "17"}, "exceeds the shared cap of 16"),
        ({"load": "search", "search_arrivals": 40}, "at least 59"),
        ({"emulator_config": '{"nope": 1}'}, "not a valid EmulatorConfig"),
        ({"llm": "openai"}, "--llm openai needs --llm-url"),
    ],
)
def test_settings_made_in_code_are_checked_like_the_command_lines(
    given: dict[str, Any], message: str
) -> None:
    with pytest.raises(BenchError, match=re.escape(message)):
        Settings(**{"apps": ["factcheck"], **given})


def test_checking_settings_again_changes_nothing() -> None:
    """``alto bench all`` hands each app's process the settings as JSON: made again there,
    they are the same settings."""
    settings = parsed("factcheck", "--load", "open", "--emulator-config", "{}")
    assert settings.emulator_config is not None and settings.emulator_config != "{}"
    assert Settings(**settings.as_dict()) == settings
