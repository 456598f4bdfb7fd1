"""Pieces of the Ray backend that need no cluster: turn-taking, actor options, pooling rules."""

from __future__ import annotations

import anyio
import pytest

import alto

pytest.importorskip("ray")

from alto.runtime.ray.actor import Turns  # noqa: E402
from alto.runtime.ray.backend import actor_options  # noqa: E402
from alto.runtime.ray.pool import poolable  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.ray]


async def test_turns_run_jobs_in_number_order_whatever_order_they_arrive():
    turns = Turns()
    ran: list[int] = []

    async def job(seq: int) -> None:
        await turns.take(seq)
        ran.append(seq)
        await anyio.sleep(0)
        turns.end(seq)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for seq in (3, 1, 4, 0, 2):
                tg.start_soon(job, seq)
    assert ran == [0, 1, 2, 3, 4]


async def test_turns_pass_over_a_job_that_ends_before_its_turn():
    turns = Turns()
    ran: list[int] = []

    async def job(seq: int) -> None:
        await turns.take(seq)
        ran.append(seq)
        turns.end(seq)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(job, 2)
            await anyio.sleep(0.01)
            turns.end(1)  # job 1 never came: job 2 must not wait for it
            tg.start_soon(job, 0)
    assert ran == [0, 2] and turns.turn == 3


async def test_a_cancelled_waiter_gives_up_its_turn():
    turns = Turns()
    ran: list[int] = []

    async def job(seq: int) -> None:
        try:
            await turns.take(seq)
            ran.append(seq)
        finally:
            turns.end(seq)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(job, 2)
            with anyio.CancelScope() as scope:
                scope.cancel()
                await job(1)  # cancelled while it waits for job 0
            tg.start_soon(job, 0)
    assert ran == [0, 2]


def test_a_late_job_does_not_wait_and_does_not_move_the_turn_back():
    turns = Turns()
    turns.end(0)
    turns.end(1)
    anyio.run(turns.take, 0)  # returns at once
    turns.end(0)
    assert turns.turn == 2


def test_actor_options_map_resources_and_keep_actors_restartable():
    @alto.stage(resources={"num_cpus": 1, "num_gpus": 0.5, "far": 2})
    async def heavy(x: int) -> int:
        return x

    @alto.stage
    async def light(x: int) -> int:
        return x

    @alto.flow
    def f(x: int):
        return light(heavy(x))

    heavy_node, light_node = f.plan.nodes
    options = actor_options(heavy_node)
    assert options["num_cpus"] == 1 and options["num_gpus"] == 0.5
    assert options["resources"] == {"far": 2}
    assert options["max_restarts"] == -1 and options["max_task_retries"] == 0
    light_options = actor_options(light_node)
    assert light_options["num_cpus"] == 0 and "resources" not in light_options
    assert poolable(light_options) and not poolable(options)


def test_only_the_notice_that_token_auth_is_on_is_dropped_for_a_private_cluster():
    import logging

    from alto.runtime.ray.backend import _QuietTokenAuthDefault

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("ray", logging.WARNING, __file__, 1, message, None, None)

    quiet = _QuietTokenAuthDefault()
    assert not quiet.filter(record(
        "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to "
        "opt out."))
    assert quiet.filter(record("Token authentication is disabled for this Ray cluster. Anyone "
                               "with network access to the cluster can run arbitrary code"))
    assert quiet.filter(record("Generated new authentication token"))
