"""What ``alto bench`` is asked to do: :class:`Settings`, checked once, when they are made.

Every check of the settings' values is :meth:`Settings.__post_init__`, so settings made in
code (tests, scripts, ``python -m alto.bench``) are checked exactly like those the command
line maps its flags to (:mod:`alto.bench.cli` only parses and maps). What the settings need
of this machine (llama.cpp's server installed, the OpenAI-compatible server answering) is
:func:`check_available`, which the command line calls once, before anything runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alto.bench.controls import ALL_SYSTEMS, CONTROL_SYSTEMS, needs_server
from alto.bench.endpoints import ALTO_ENDPOINTS
from alto.bench.errors import BenchError
from alto.bench.systems import SYSTEMS
from alto.operators.llm.dispatch import ORDERS, ROUTES

if TYPE_CHECKING:
    from alto.bench.search import SearchPlan

APPS = ("factcheck", "multihop", "summarize", "ingest")
LLMS = ("emulated", "local", "llama-server", "llama-server-native", "openai", "fake")
"""``--llm``: the serving-timing emulator, embedded SmolLM2 in-process, llama-cpp-python's
one-sequence server processes, llama.cpp's own multi-slot ``llama-server`` processes, a
server at ``--llm-url``, the scripted test double."""
SERVER_LLMS = ("emulated", "llama-server", "llama-server-native", "openai")
"""The LLMs behind an OpenAI-compatible server, the only ones a client of its own can call."""
STARTED_LLMS = ("emulated", "llama-server", "llama-server-native")
"""The LLMs whose servers the bench starts, one per replica of ``--deployment``."""
NATIVE_SLOTS = 4
"""``--llm llama-server-native``: slots of the whole deployment unless ``--llm-slots`` says
how many each server has; shared out over its servers (``single``: one server of 4; ``rr2``
and ``prefix2``: two of 2; ``rr4``, ``ll4`` and ``prefix4``: four of 1), so every deployment
decodes as many sequences at once."""
NATIVE_THREADS = 2
"""``--llm llama-server-native``: CPU threads of the whole deployment unless
``--llm-threads`` says how many each server has; shared out over its servers, at least one
each."""
LOADS = ("closed", "open", "search")
EMBEDDERS = ("minilm", "hash")
EMULATOR_MODES = ("process", "thread")
FANOUTS = ("varied", "uniform")
CAP_PER_REPLICA = 16
"""Default client-side cap per emulated replica (``--llm-concurrency``): the emulated vLLM
reaches its peak throughput near 16 sequences (TPOT 10.9 ms there, 46.9 ms at 64)."""
DEPLOYMENTS: dict[str, tuple[int, str]] = {
    "single": (1, "round-robin"),
    "rr2": (2, "round-robin"),
    "prefix2": (2, "prefix-aware"),
    "rr4": (4, "round-robin"),
    "ll4": (4, "least-loaded"),
    "prefix4": (4, "prefix-aware"),
}
"""``--deployment``: replicas and the balancer in front: emulated replicas, or servers the
bench starts (``--llm llama-server``: one-sequence ``llama_cpp.server`` processes;
``--llm llama-server-native``: llama.cpp's ``llama-server`` processes of ``llm_slots`` slots
each). Several servers stand behind the balancer proxy (:mod:`alto.bench.proxy`) with that
policy; on ``single`` the one server is called directly."""


@dataclass
class Settings:
    """What ``alto bench`` was asked to do (recorded verbatim in ``results.json``).

    Checked when made (:meth:`__post_init__`): a value no run could use raises
    :class:`BenchError`, whose message names the flag that sets it.

        >>> Settings(apps=["factcheck"], concurrency=[0])
        Traceback (most recent call last):
        ...
        alto.bench.errors.BenchError: --concurrency must be positive numbers, got '0'
    """

    apps: list[str]
    llm: str = "emulated"
    llm_url: str | None = None
    llm_model: str | None = None
    embedder: str = "minilm"
    queries: int | None = None  # distinct inputs per app (None: as many as the load needs)
    load: str = "closed"  # "closed", "open" (the fixed-rate sweep) or "search"
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16])
    closed_inputs: int = 100  # submissions per closed-loop level
    rates: list[float] | None = None  # open loop, inputs/s (None: the automatic sweep)
    open_inputs: int = 24  # submissions per open-loop rate
    slo_factor: float = 3.0  # the SLO: this times the asyncio reference's unloaded p50
    slo_s: float | None = None  # or a fixed SLO in seconds
    slo_floor_s: float = 0.05  # the factor's SLO is at least this (see plan_levels)
    sweep_stop: bool = True  # an open sweep stops a system past its first missed SLO
    repeats: int = 1
    seed: int = 0
    # the rate search (alto.bench.search): measured arrivals per trial round, warm-up
    # arrivals per run, rounds per trial, bracketing factor, bisection stop width, start
    search_arrivals: int = 60
    search_warmup: int = 4
    search_rounds: int = 2
    search_factor: float = 1.25
    search_width: float = 0.25
    search_start: float | None = None  # None: half the rate ceiling (see plan_levels)
    systems: list[str] = field(default_factory=lambda: list(SYSTEMS))
    timeout_s: float = 600.0
    docs_per_corpus: int = 16
    config: str | None = None  # a JSON file of the app's Config (one app only)
    llm_concurrency: int | None = None  # the shared client-side cap (None: the default)
    # llama-server-native, per server (None: NATIVE_SLOTS / NATIVE_THREADS shared out; set
    # when the settings are made, so the settings recorded say what ran)
    llm_slots: int | None = None
    llm_threads: int | None = None
    emulator_config: str | None = None  # EmulatorConfig as JSON (None: its defaults)
    emulator_mode: str = "process"
    deployment: str = "single"
    fanout: str = "varied"  # "varied": per-input fan-outs; "uniform": the old fixed ones
    # Alto's own client (alto.bench.endpoints); None: the client's default
    alto_endpoint: str | None = None  # "replicas" or "balancer" (None: by the deployment)
    max_inflight: str | None = None  # per replica: a number or "auto"
    order: str | None = None
    route: str | None = None

    def __post_init__(self) -> None:
        """Every check of the values, in one place.

        ``config`` becomes an absolute path and ``emulator_config`` the validated model's
        JSON (so checking twice changes nothing).
        """
        self._check_choices()
        for app in self.apps:
            if app not in APPS:
                msg = f"unknown app {app!r}; choose one of: {', '.join(APPS)} or all"
                raise BenchError(msg)
        if self.queries is not None and self.queries < 1:
            msg = f"--queries must be at least 1, got {self.queries}"
            raise BenchError(msg)
        for name in ("repeats", "closed_inputs", "open_inputs", "search_rounds"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                msg = f"{flag} must be at least 1, got {getattr(self, name)}"
                raise BenchError(msg)
        if self.docs_per_corpus < 1:
            msg = f"--docs-per-corpus must be at least 1, got {self.docs_per_corpus}"
            raise BenchError(msg)
        if self.slo_s is not None and not self.slo_s > 0:
            msg = f"--slo must be a positive number of seconds, got {self.slo_s}"
            raise BenchError(msg)
        if not self.slo_factor > 0:
            msg = f"--slo-factor must be positive, got {self.slo_factor}"
            raise BenchError(msg)
        if not self.slo_floor_s >= 0:
            msg = f"--slo-floor must be a number of seconds >= 0, got {self.slo_floor_s}"
            raise BenchError(msg)
        if self.load == "search":
            self._check_search()
        if self.queries is not None:
            per = self.docs_per_corpus * (2 if self.fanout == "varied" else 1)
            for app in self.apps:
                _check_shipped_inputs(app, self.queries, per)
        unknown = [s for s in self.systems if s not in ALL_SYSTEMS]
        if unknown or not self.systems:
            msg = f"unknown systems {unknown}; choose from {', '.join(ALL_SYSTEMS)}"
            raise BenchError(msg)
        controls = [s for s in self.systems if s in CONTROL_SYSTEMS and needs_server(s)]
        if controls and self.llm not in SERVER_LLMS:
            msg = (
                f"the controls ({', '.join(dict.fromkeys(controls))}) hold LLM clients of their "
                f"own: --llm {_choices(SERVER_LLMS)}"
            )
            raise BenchError(msg)
        if self.config and len(self.apps) > 1:
            msg = "--config holds one app's settings: name that app, not 'all'"
            raise BenchError(msg)
        if self.config:
            if not Path(self.config).is_file():
                msg = f"config file {self.config!r} does not exist"
                raise BenchError(msg)
            self.config = str(Path(self.config).resolve())
        if self.llm_concurrency is not None and self.llm_concurrency < 1:
            msg = f"--llm-concurrency must be at least 1, got {self.llm_concurrency}"
            raise BenchError(msg)
        if self.emulator_config is not None:
            self.emulator_config = _emulator_config(self.emulator_config)
            if self.llm != "emulated":
                msg = "--emulator-config is for --llm emulated"
                raise BenchError(msg)
        if self.deployment != "single" and self.llm not in STARTED_LLMS:
            msg = (
                f"--deployment {self.deployment} starts its replicas: --llm "
                f"{_choices(STARTED_LLMS)}"
            )
            raise BenchError(msg)
        self._check_native()
        self._check_dispatcher_knobs()
        if self.llm == "openai" and not self.llm_url:
            msg = "--llm openai needs --llm-url (e.g. http://127.0.0.1:8000/v1)"
            raise BenchError(msg)
        _check_numbers(self.concurrency, "--concurrency")
        if self.rates is not None:
            _check_numbers(self.rates, "--rate")

    def as_dict(self) -> dict[str, Any]:
        """The settings as a dict for JSON."""
        return asdict(self)

    def servers(self) -> int:
        """How many servers (or emulated replicas) ``deployment`` has."""
        return DEPLOYMENTS[self.deployment][0]

    def native_cap(self) -> int:
        """``--llm llama-server-native``'s default cap: every slot of the deployment.

        That way no system has more calls in flight than the servers decode at once.
        """
        return self.servers() * (self.llm_slots or 1)

    def inputs_for(self, available: int) -> int:
        """Distinct inputs of an app: ``queries``, or as many as one level submits."""
        wanted = self.queries or (self.closed_inputs if self.load == "closed" else self.open_inputs)
        return max(1, min(wanted, available))

    def _check_choices(self) -> None:
        """The settings chosen by name name one of the choices (the flags' ``choices``)."""
        choices: tuple[tuple[str, tuple[str, ...], bool], ...] = (
            ("llm", LLMS, False),
            ("embedder", EMBEDDERS, False),
            ("load", LOADS, False),
            ("emulator_mode", EMULATOR_MODES, False),
            ("deployment", tuple(DEPLOYMENTS), False),
            ("fanout", FANOUTS, False),
            ("alto_endpoint", tuple(ALTO_ENDPOINTS), True),
            ("order", tuple(ORDERS), True),
            ("route", tuple(ROUTES), True),
        )
        for name, allowed, optional in choices:
            value = getattr(self, name)
            if value not in allowed and not (optional and value is None):
                flag = "--" + name.replace("_", "-")
                msg = f"{flag} must be one of {', '.join(allowed)}, got {value!r}"
                raise BenchError(msg)

    def _check_native(self) -> None:
        """``--llm-slots`` and ``--llm-threads`` size llama.cpp's own servers, and only theirs.

        Unset, they become the shares of :data:`NATIVE_SLOTS` and :data:`NATIVE_THREADS` per
        server of the deployment.
        """
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("llm_slots", "llm_threads")
            if getattr(self, name) is not None
        ]
        if self.llm != "llama-server-native":
            if given:
                held = (
                    " (llama_cpp.server holds one sequence; llama.cpp's own server has slots)"
                    if self.llm == "llama-server"
                    else ""
                )
                flags = " and ".join(given)
                msg = (
                    f"{flags} {'are' if len(given) > 1 else 'is'} for llama.cpp's own servers "
                    f"only: pass --llm llama-server-native, or leave {flags} out{held}"
                )
                raise BenchError(msg)
            return
        for name in ("llm_slots", "llm_threads"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                flag = "--" + name.replace("_", "-")
                msg = f"{flag} must be at least 1 (per server), got {value!r}"
                raise BenchError(msg)
        if self.llm_url:
            msg = (
                "--llm llama-server-native starts its own servers on loopback: leave --llm-url "
                "out, or pass --llm openai to call the server at that URL"
            )
            raise BenchError(msg)
        if self.llm_model is not None and not Path(self.llm_model).is_file():
            msg = (
                f"--llm-model {self.llm_model!r}: with --llm llama-server-native it is the "
                "GGUF file the servers load (default the embedded SmolLM2); no such file"
            )
            raise BenchError(msg)
        servers = self.servers()
        if self.llm_slots is None:
            self.llm_slots = max(1, NATIVE_SLOTS // servers)
        if self.llm_threads is None:
            self.llm_threads = max(1, NATIVE_THREADS // servers)
        if self.llm_concurrency is not None and self.llm_concurrency < servers:
            msg = (
                f"--llm-concurrency {self.llm_concurrency} cannot give each of the "
                f"{servers} servers of --deployment {self.deployment} one call: pass at "
                f"least {servers}, or leave it out for every slot ({self.native_cap()})"
            )
            raise BenchError(msg)

    def search_plan(self, start: float) -> SearchPlan:
        """The rate search these settings ask for, from the rate ``start``.

        Raises:
            ValueError: the search's options are out of range (see
                :class:`~alto.bench.search.SearchPlan`).
        """
        from alto.bench.search import SearchPlan

        return SearchPlan(
            start=start,
            repeats=self.repeats,
            arrivals=self.search_arrivals,
            warmup=self.search_warmup,
            rounds=self.search_rounds,
            factor=self.search_factor,
            width=self.search_width,
        )

    def _check_search(self) -> None:
        """The rate search's options, as :class:`~alto.bench.search.SearchPlan` checks them."""
        if self.search_warmup < 0:
            msg = f"--search-warmup must be at least 0, got {self.search_warmup}"
            raise BenchError(msg)
        if self.search_start is not None and not self.search_start > 0:
            msg = f"--search-start must be a positive rate, got {self.search_start}"
            raise BenchError(msg)
        try:
            self.search_plan(self.search_start or 1.0)
        except ValueError as exc:
            msg = f"rate search: {exc}"
            raise BenchError(msg) from None

    def _check_dispatcher_knobs(self) -> None:
        """The dispatcher's knobs are for Alto's own client on an OpenAI-compatible server.

        Its per-replica limit must also keep Alto under the cap every system shares.
        """
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("alto_endpoint", "max_inflight", "order", "route")
            if getattr(self, name) is not None
        ]
        if not given:
            return
        if self.llm not in SERVER_LLMS:
            msg = (
                f"{', '.join(given)}: Alto's dispatcher is for an OpenAI-compatible server "
                f"(--llm {_choices(SERVER_LLMS)})"
            )
            raise BenchError(msg)
        if self.alto_endpoint == "replicas" and self.llm == "openai":
            msg = (
                "--alto-endpoint replicas needs a deployment's replicas: --llm "
                f"{_choices(STARTED_LLMS)}"
            )
            raise BenchError(msg)
        if self.max_inflight is None or self.max_inflight == "auto":
            return
        try:
            limit = int(self.max_inflight)
        except ValueError:
            msg = f"--max-inflight must be a number or auto, got {self.max_inflight!r}"
            raise BenchError(msg) from None
        if limit < 1:
            msg = f"--max-inflight must be at least 1, got {limit}"
            raise BenchError(msg)
        replicas = self.servers()
        if self.llm == "emulated":
            cap = self.llm_concurrency or CAP_PER_REPLICA * replicas
        elif self.llm == "llama-server-native":
            cap = self.llm_concurrency or self.native_cap()
        else:
            return  # the cap on another server depends on its client: checked when it opens
        targets = replicas if (self.alto_endpoint or "replicas") == "replicas" else 1
        if limit * targets > cap:
            msg = (
                f"--max-inflight {limit} per replica x {targets} target(s) exceeds the shared "
                f"cap of {cap} LLM calls: at most {cap // targets}, or raise --llm-concurrency"
            )
            raise BenchError(msg)


def check_available(settings: Settings) -> None:
    """A :class:`BenchError` when this machine cannot give ``settings`` their LLM.

    That is: llama-cpp-python's server not installed (``--llm llama-server``), llama.cpp's
    own server not built (``--llm llama-server-native``; the message names the command that
    builds it), or the server at ``--llm-url`` not answering (``--llm openai``).
    """
    if settings.llm == "llama-server-native":
        from alto.bench.errors import LlamaServerMissing
        from alto.bench.llama_native import find_binary

        try:
            find_binary()
        except LlamaServerMissing as exc:
            msg = f"--llm llama-server-native: {exc}"
            raise BenchError(msg) from None
    if settings.llm == "llama-server":
        import importlib.util

        missing = [
            m for m in ("llama_cpp", "uvicorn", "fastapi") if not importlib.util.find_spec(m)
        ]
        if missing:
            msg = (
                f"--llm llama-server needs llama-cpp-python's server ({', '.join(missing)} "
                "missing): pip install 'alto[models]'"
            )
            raise BenchError(msg)
    if settings.llm == "openai":
        from alto.apps import check_llm_server

        try:
            check_llm_server(settings.llm_url or "")
        except Exception as exc:  # alto.apps' own error, re-raised as ours
            raise BenchError(str(exc)) from None


def _choices(names: tuple[str, ...]) -> str:
    """``a, b or c``."""
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def _check_numbers(values: list[Any], flag: str) -> None:
    if not values or any(v <= 0 for v in values):
        shown = ",".join(f"{v:g}" for v in values)
        msg = f"{flag} must be positive numbers, got {shown!r}"
        raise BenchError(msg)


def _check_shipped_inputs(name: str, queries: int, docs_per_corpus: int) -> None:
    """A BenchError when app ``name``'s shipped data set is too small for ``--queries``.

    Its inputs would quietly be fewer than asked for, and the runs' sizes not what the
    report says was asked.
    """
    from alto.apps import load_app

    available = load_app(name).available_inputs()
    if name == "ingest":
        needed = queries * docs_per_corpus
        if needed > available:
            msg = (
                f"--queries {queries} x {docs_per_corpus} documents per corpus (at most; "
                f"--docs-per-corpus, doubled with --fanout varied) = {needed} documents: "
                f"the ingest data set has {available}; lower either"
            )
            raise BenchError(msg)
    elif queries > available:
        msg = (
            f"--queries {queries}: the {name} data set has {available} inputs; "
            f"pass --queries {available} or fewer"
        )
        raise BenchError(msg)


def _emulator_config(text: str) -> str:
    """The emulator's config as validated JSON text."""
    import pydantic

    from alto.bench.emulator import EmulatorConfig

    try:
        return EmulatorConfig.model_validate_json(text).model_dump_json()
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        msg = f"--emulator-config is not a valid EmulatorConfig: {problems}"
        raise BenchError(msg) from None
