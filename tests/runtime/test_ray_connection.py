"""``alto.runtime.ray.backend.connected``: one connection to Ray held across a block.

Each check runs in a fresh process, where no Ray instance was initialised before (the
other Ray tests share one in this process, which ``connected`` would leave alone).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_started_cluster_lasts_until_the_outermost_block_ends() -> None:
    out = run("""
        import os
        os.environ.pop("RAY_ADDRESS", None)
        import ray
        from alto.runtime.ray.backend import connected

        with connected(init={"num_cpus": 1}):
            with connected():
                print("inner", ray.is_initialized())
            print("outer", ray.is_initialized())
        print("after", ray.is_initialized())
    """)
    assert out.split() == ["inner", "True", "outer", "True", "after", "False"]


def test_a_ray_instance_initialised_before_is_left_alone() -> None:
    out = run("""
        import os
        os.environ.pop("RAY_ADDRESS", None)
        import ray
        from alto.runtime.ray.backend import connected

        ray.init(num_cpus=1, include_dashboard=False, logging_level="WARNING")
        with connected():
            print("inside", ray.is_initialized())
        print("after", ray.is_initialized())
        ray.shutdown()
    """)
    assert out.split() == ["inside", "True", "after", "True"]
