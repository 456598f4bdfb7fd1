"""``python -m alto.bench APP --settings JSON --raw FILE``: one app's benchmark.

It runs in a process of its own (``alto bench all`` starts one per app) and writes the app's
raw result as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Benchmark one app as ``argv`` says and write its raw result; returns the exit status.

    The status is 0, or 1 when the benchmark failed: then the result is ``{"error": ...}``
    and the traceback goes to stderr.
    """
    from alto.bench.environment import one_blas_thread

    one_blas_thread()  # before numpy loads

    import anyio

    from alto.bench.runner import bench_app
    from alto.bench.settings import Settings

    p = argparse.ArgumentParser(prog="python -m alto.bench")
    p.add_argument("app")
    p.add_argument("--settings", required=True, help="Settings as JSON")
    p.add_argument("--raw", required=True, help="where to write the app's result")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = Settings(**json.loads(args.settings))
    try:
        result = anyio.run(lambda: bench_app(args.app, settings, progress=not args.no_progress))
    except Exception as exc:  # reported by the parent, which goes on with the next app
        traceback.print_exc(file=sys.stderr)
        result = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
    Path(args.raw).write_text(json.dumps(result, allow_nan=False))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
