"""Stage actors kept between runs, so a run does not start a process per replica.

Starting a Ray actor starts a Python process (a few hundred milliseconds of
CPU); a flow of five stages with a few replicas each would spend seconds on it
in every run. A :class:`HostPool` keeps the hosts of finished runs idle and
hands them to the next run, which loads its own stage into them
(:meth:`~alto.runtime.ray.actor.StageHost.load`).

Only hosts that ask Ray for *no* resources are kept: an idle host holding a
GPU or a custom resource would keep it from everyone else. Hosts of a run
that was cancelled or failed are killed, not kept. The pool belongs to one
Ray session: hosts of an earlier session are forgotten, and the pool is
emptied when the runtime disconnects from Ray (:func:`release_idle` empties
it on demand).
"""

from __future__ import annotations

from typing import Any, Mapping

import ray

from alto.runtime.ray.actor import StageHost

MAX_IDLE = 16
"""Most idle hosts kept (each is a process of ~100 MB)."""

_host_class: Any = None


def host_class() -> Any:
    """The Ray actor class of :class:`StageHost` (made on first use)."""
    global _host_class
    if _host_class is None:
        _host_class = ray.remote(StageHost)
    return _host_class


def poolable(options: Mapping[str, Any]) -> bool:
    """Whether hosts with these actor options hold no resources while idle."""
    if options.get("num_cpus"):
        return False
    return not any(options.get(key) for key in ("num_gpus", "memory", "resources"))


def _key(options: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, repr(v)) for k, v in options.items()))


class HostPool:
    """Idle stage hosts by actor options; see the module docstring."""

    def __init__(self) -> None:
        self.idle: dict[tuple[tuple[str, str], ...], list[Any]] = {}
        self.session: str | None = None

    def _check_session(self) -> None:
        session = ray.get_runtime_context().get_job_id()
        if session != self.session:
            self.idle.clear()  # handles of an earlier Ray session are no use
            self.session = session

    def take(self, options: Mapping[str, Any]) -> tuple[Any, bool]:
        """An idle host with these options, or a new one; and whether it was idle."""
        self._check_session()
        hosts = self.idle.get(_key(options))
        if hosts:
            return hosts.pop(), True
        return host_class().options(**options).remote(), False

    def give_back(self, options: Mapping[str, Any], handle: Any) -> None:
        """Keep ``handle`` for a later run if it may be kept; kill it otherwise."""
        self._check_session()
        if poolable(options) and sum(map(len, self.idle.values())) < MAX_IDLE:
            self.idle.setdefault(_key(options), []).append(handle)
        else:
            kill(handle)

    def clear(self) -> None:
        """Kill every idle host."""
        for hosts in self.idle.values():
            for handle in hosts:
                kill(handle)
        self.idle.clear()


def kill(handle: Any) -> None:
    """Kill the actor ``handle`` without a restart; one already gone is left as it is."""
    try:
        ray.kill(handle, no_restart=True)
    except Exception:  # pragma: no cover - already gone, or Ray already shut down
        pass


pool = HostPool()


def release_idle() -> None:
    """Kill the stage actors kept idle between runs (e.g. before leaving a shared cluster)."""
    if ray.is_initialized():
        pool.clear()
    else:
        pool.idle.clear()
