"""The ``alto`` command: list, run and draw the example applications.

    alto list
    alto run factcheck --n 3
    alto run summarize --input docs.jsonl --llm openai --llm-url http://127.0.0.1:8000/v1
    alto graph multihop --mermaid
    alto serve factcheck --llm emulated --port 8000

Errors are one line on stderr and a non-zero exit (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Sequence

from alto.apps import (
    APPS,
    REPO,
    CLIError,
    check_llm_server,
    load_app,
    read_config,
    read_inputs,
)

__all__ = ["APPS", "REPO", "CLIError", "check_llm_server", "load_app", "main", "parser"]


def check_shipped_inputs(app: ModuleType, n: int) -> None:
    """A CLIError when ``app``'s shipped data set holds fewer than ``n`` inputs.

    ``load_inputs`` would quietly return fewer; a run of another size than asked for is a
    surprise, so the user is told the size and the ways out instead.
    """
    available = app.available_inputs()
    if n > available:
        msg = (
            f"--n {n}: the {app.NAME} data set has {available} {app.INPUT_UNIT}; "
            f"pass --n {available} or fewer, or --input FILE"
        )
        raise CLIError(msg)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    return value


async def _run(args: argparse.Namespace, app: ModuleType, out: Any) -> int:
    import anyio

    import alto
    from alto.console import Console, RunProgress
    from alto.operators.llm.observe import endpoints_of, stats_dict
    from examples.common import open_operators

    inputs = read_inputs(app, args.input) if args.input else app.load_inputs(args.n)
    if args.llm == "openai":
        if not args.llm_url:
            msg = "--llm openai needs --llm-url (e.g. http://127.0.0.1:8000/v1)"
            raise CLIError(msg)
        check_llm_server(args.llm_url)
    if args.llm == "llama-server-native":
        check_native_llm(args)
    if args.otel and not args.otel.startswith(("http://", "https://")):
        msg = (
            f"--otel {args.otel!r}: expected an OTLP/HTTP URL such as "
                       "http://127.0.0.1:6006/v1/traces"
        )
        raise CLIError(msg)
    console = Console.for_stderr(quiet=args.json)
    stats = alto.RunStats()
    started = time.perf_counter()
    config = read_config(app, args.config) if args.config else None
    async with open_operators(app.NEEDS, llm=args.llm, llm_url=args.llm_url,
                              llm_model=args.llm_model, llm_slots=args.llm_slots,
                              llm_threads=args.llm_threads, embedder=args.embedder,
                              console=console) as ops:
        flow = app.build(ops, config)
        endpoints = endpoints_of([ops.llm, ops.embedder, ops.retriever])
        if args.trace:
            for endpoint in endpoints:
                endpoint.dispatcher.record(True)
        outcomes: dict[int, alto.Result[Any]] = {}
        progress = RunProgress(console, stats, len(inputs), app.NAME)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(progress.refresh)
                async for result in flow.stream(inputs, backend=args.backend, stats=stats,
                                                trace=bool(args.trace), otel=args.otel,
                                                concurrency=args.concurrency):
                    outcomes[result.index] = result
                    progress.finished_one()
                tg.cancel_scope.cancel()
        finally:
            progress.close()
    wall = time.perf_counter() - started
    if args.trace:
        from alto.runtime.trace import write_chrome_trace

        write_chrome_trace(stats, args.trace, process=f"alto {app.NAME}")
        add_dispatch_counters(args.trace, endpoints, stats.started)
        calls = len(stats.spans or ())
        print(f"trace of {calls} stage calls written to {args.trace}; open it at "
              "https://ui.perfetto.dev (Open trace file) or in chrome://tracing", file=sys.stderr)
    if args.otel:
        print(f"OpenTelemetry trace of the run sent to {args.otel}", file=sys.stderr)
    failed = [r for r in outcomes.values() if not r.ok]
    describe = getattr(app, "input_summary", _jsonable)
    if args.json:
        print(json.dumps({
            "app": app.NAME,
            "operators": ops.labels,
            "backend": args.backend,
            "wall_s": round(wall, 3),
            "results": [
                {"index": i, "input": describe(inputs[i]), "output": _jsonable(r.value),
                 "error": None if r.ok else str(r.error)}
                for i, r in sorted(outcomes.items())
            ],
            "stats": stats.as_dict(),
            "endpoints": [stats_dict(e.dispatch_stats()) for e in endpoints],
        }, indent=2), file=out)
    else:
        for i, r in sorted(outcomes.items()):
            if r.ok:
                print(app.render(inputs[i], r.value))
            else:
                print(f"input {i}: FAILED: {r.error}")
        models = "; ".join(f"{k}: {v}" for k, v in ops.labels.items())
        print(f"\n{app.NAME}: {len(inputs) - len(failed)}/{len(inputs)} inputs in {wall:.1f} s "
              f"({args.backend} backend; {models})")
        if args.stats:
            print(stats.table())
            print(stats.legend())
            tables = endpoint_tables(endpoints, args.backend)
            if tables:
                print()
                print(tables)
    return 1 if failed else 0


def check_native_llm(args: argparse.Namespace) -> None:
    """A CLIError when ``--llm llama-server-native`` cannot start.

    Either its options are out of range, or the server is not built (the message names the
    command that builds it).
    """
    from alto.bench.errors import LlamaServerMissing
    from alto.bench.llama_native import find_binary

    for option, value in (("--llm-slots", args.llm_slots), ("--llm-threads", args.llm_threads)):
        if value < 1:
            msg = f"{option} must be at least 1, got {value}"
            raise CLIError(msg)
    try:
        find_binary()
    except LlamaServerMissing as exc:
        msg = f"--llm llama-server-native: {exc}"
        raise CLIError(msg) from None


def endpoint_tables(endpoints: Sequence[Any], backend: str = "local") -> str:
    """``--stats``' table per model endpoint (an operator with a dispatcher), with a legend.

    Empty when the app calls none.
    """
    from alto.operators.llm.observe import LEGEND, dispatch_table

    if not endpoints:
        return ""
    parts = [dispatch_table(e.dispatch_stats(), label=getattr(e, "name", None))
             for e in endpoints]
    return "\n\n".join(parts) + "\n" + LEGEND


def add_dispatch_counters(path: str | Path, endpoints: Sequence[Any], t0: float) -> None:
    """Add each endpoint's counter tracks to the Chrome trace at ``path``, on its time axis.

    The tracks are calls in flight per replica and calls queued; ``t0`` is the run's start
    (``perf_counter``).
    """
    from alto.operators.llm.observe import counter_events, relative_samples

    if not endpoints:
        return
    file = Path(path)
    trace = json.loads(file.read_text())
    events = trace["traceEvents"]
    pid = max((int(e.get("pid", 0)) for e in events), default=0)
    for endpoint in endpoints:
        pid += 1
        stats = endpoint.dispatch_stats()
        samples = relative_samples(stats.timeline(), t0)  # on Ray: the shared dispatcher's
        events += counter_events(getattr(endpoint, "name", None) or stats.name,
                                 [r.target for r in stats.replicas], samples, pid=pid)
    file.write_text(json.dumps(trace))


def _graph(args: argparse.Namespace, app: ModuleType) -> int:
    from alto.operators.embedding import HashEmbedder
    from alto.testing import FakeLLM
    from examples.common import Operators

    # the plan does not depend on the models: wire it over the test doubles
    plan = app.build(Operators(llm=FakeLLM(), embedder=HashEmbedder())).plan
    if not args.mermaid:
        print(plan.describe())
    if not args.text:
        if not args.mermaid:
            print()
        print(plan.mermaid())
    return 0


def _list() -> int:
    for name in APPS:
        try:
            app = load_app(name)
            description = app.DESCRIPTION
        except (CLIError, ImportError) as exc:
            description = f"(unavailable: {exc})"
        print(f"{name:<11} {description}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser of the ``alto`` command and its subcommands."""
    # options every subcommand takes too (``alto run ... --debug``); SUPPRESS as their default
    # there, so a subcommand that is not given one keeps the value parsed before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks")

    p = argparse.ArgumentParser(prog="alto", description="Streaming compound-AI pipelines.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", parents=[common], help="the example apps")

    run = sub.add_parser("run", parents=[common], help="run an example app")
    run.add_argument("app", help=f"one of {', '.join(APPS)}")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--input", metavar="FILE", help="JSON list or JSON-lines file of inputs")
    source.add_argument("--n", type=int, default=3,
                        help="inputs from the shipped data (default 3; for ingest, the "
                        "documents of its one corpus)")
    run.add_argument("--llm", choices=["local", "openai", "llama-server-native", "emulated",
                                       "fake"], default="local",
                     help="local: embedded SmolLM2 (default); openai: a server at --llm-url; "
                     "llama-server-native: llama.cpp's own server, started on loopback over "
                     "the embedded SmolLM2 (several slots decoded in one batch; built by "
                     "'bash install.sh llama-server'); "
                     "emulated: the serving-timing emulator (timing emulation, not a model); "
                     "fake: the scripted test double")
    run.add_argument("--llm-url", help="base URL of an OpenAI-compatible server (…/v1)")
    run.add_argument("--llm-model", help="model name for the server, or a GGUF path for local "
                     "and llama-server-native")
    run.add_argument("--llm-slots", type=int, default=4, metavar="N",
                     help="llama-server-native: sequences decoded together (-np; default 4)")
    run.add_argument("--llm-threads", type=int, default=2, metavar="N",
                     help="llama-server-native: CPU threads (-t; default 2)")
    run.add_argument("--embedder", choices=["minilm", "hash"], default="minilm",
                     help="minilm: all-MiniLM-L6-v2 sentence embeddings (default); hash: the "
                     "hashing test double (no model, not semantic)")
    run.add_argument("--config", metavar="FILE", help="the app's settings as JSON (see its Config)")
    run.add_argument("--backend", choices=["local", "ray"], default="local",
                     help="local: this process (default); ray: stage replicas as Ray actors, on "
                     "the cluster at RAY_ADDRESS or a private local one")
    run.add_argument("--concurrency", type=int, help="most inputs in flight at once")
    run.add_argument("--json", action="store_true", help="print results as JSON")
    run.add_argument("--stats", action="store_true", help="print per-stage statistics")
    run.add_argument("--trace", metavar="FILE", help="write a Chrome trace of every stage call")
    run.add_argument("--otel", metavar="URL",
                     help="send the run's OpenTelemetry trace to an OTLP/HTTP endpoint, e.g. "
                     "http://127.0.0.1:6006/v1/traces (Phoenix); needs alto[otel]")

    graph = sub.add_parser("graph", parents=[common],
                           help="print an app's plan, with its levels")
    graph.add_argument("app", help=f"one of {', '.join(APPS)}")
    fmt = graph.add_mutually_exclusive_group()
    fmt.add_argument("--text", action="store_true", help="only the text form")
    fmt.add_argument("--mermaid", action="store_true", help="only the Mermaid form")

    serve = sub.add_parser(
        "serve", parents=[common],
        help="serve a flow over HTTP: every request joins one running pipeline")
    serve.add_argument("target", help=f"an example app ({', '.join(APPS)}) or MODULE:FLOW, "
                       "importable from the current folder")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one)")
    serve.add_argument("--max-inflight", type=int, default=256, metavar="N",
                       help="most inputs in flight over all requests; past it 429 with "
                       "Retry-After (default 256)")
    serve.add_argument("--deadline", type=float, metavar="SECONDS",
                       help="seconds each input may take; past it the input fails")
    serve.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                       help="at shutdown, seconds for the inputs in flight to finish (default 30)")
    serve.add_argument("--backend", choices=["local", "ray"], default="local",
                       help="local: this process (default); ray: stage replicas as Ray actors")
    serve.add_argument("--address", help="the Ray cluster to join (default: RAY_ADDRESS, or a "
                       "private local one)")
    serve.add_argument("--concurrency", type=int, help="most root inputs in the pipeline at once")
    serve.add_argument("--llm", choices=["local", "openai", "emulated", "fake"], default="local",
                       help="an app's LLM, as for 'alto run' (default local)")
    serve.add_argument("--llm-url", help="base URL of an OpenAI-compatible server (…/v1)")
    serve.add_argument("--llm-model", help="model name for the server, or a GGUF path for local")
    serve.add_argument("--embedder", choices=["minilm", "hash"], default="minilm",
                       help="an app's embedder, as for 'alto run' (default minilm)")
    serve.add_argument("--config", metavar="FILE", help="the app's settings as JSON")

    from alto.bench.cli import add_arguments as add_bench_arguments

    add_bench_arguments(sub.add_parser(
        "bench", parents=[common],
        help="compare Alto, the LangGraph versions and the asyncio reference"))
    return p


@contextlib.contextmanager
def _connected(backend: str) -> Iterator[None]:
    """On Ray, stay connected from before the run until its figures are printed.

    The model endpoints' dispatchers the actors shared live in the cluster, which a run that
    started it alone would shut down as it ends.
    """
    if backend != "ray":
        yield
        return
    from alto.runtime.ray.backend import connected

    with connected():  # the run's own connection: RAY_ADDRESS, or a local one
        yield


def _serve(args: argparse.Namespace) -> int:
    import anyio

    from alto.serve.launch import ServeOptions, serve

    options = ServeOptions(
        target=args.target, host=args.host, port=args.port, max_inflight=args.max_inflight,
        deadline=args.deadline, grace=args.grace, backend=args.backend, address=args.address,
        concurrency=args.concurrency, llm=args.llm, llm_url=args.llm_url,
        llm_model=args.llm_model, embedder=args.embedder, config=args.config,
    )
    return anyio.run(serve, options)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``alto`` command on ``argv`` (default: ``sys.argv[1:]``); returns its exit status.

    An error prints one line (with ``--debug``, its traceback) and gives status 1, or 2 for
    a mistake in the arguments; an interrupt gives 130.
    """
    args = parser().parse_args(argv)
    # model libraries print download/loading progress bars; the run has its own
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        if args.command == "list":
            return _list()
        if args.command == "bench":
            from alto.bench.cli import run as bench
            from alto.bench.errors import BenchError

            try:
                return bench(args)
            except BenchError as exc:
                raise CLIError(str(exc)) from None
        if args.command == "serve":
            return _serve(args)
        app = load_app(args.app)
        if args.command == "graph":
            return _graph(args, app)
        if args.n is not None and args.n < 1:
            msg = f"--n must be at least 1, got {args.n}"
            raise CLIError(msg)
        if args.input is None:
            check_shipped_inputs(app, args.n)
        if args.concurrency is not None and args.concurrency < 1:
            msg = f"--concurrency must be at least 1, got {args.concurrency}"
            raise CLIError(msg)
        import anyio

        if args.json:
            # stdout carries the JSON alone: whatever the run prints (stage code, Ray's
            # forwarded worker logs, until Ray is left) goes to stderr
            real_stdout = sys.stdout
            with contextlib.redirect_stdout(sys.stderr), _connected(args.backend):
                return anyio.run(_run, args, app, real_stdout)
        with _connected(args.backend):
            return anyio.run(_run, args, app, sys.stdout)
    except KeyboardInterrupt:
        print("alto: interrupted", file=sys.stderr)
        return 130
    except CLIError as exc:
        if args.debug:
            raise
        print(f"alto: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # one line for the user; --debug for the whole story
        if args.debug:
            raise
        print(f"alto: error: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
        return 1


def _first_line(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
