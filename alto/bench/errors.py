"""The benchmark harness's errors while it runs.

Its settings' errors are :class:`~alto.bench.settings.BenchError`.
"""

from __future__ import annotations

from alto.errors import AltoError


class BenchRunError(AltoError, RuntimeError):
    """A benchmark could not run to the end.

    A server the harness starts exited, did not answer in time or did not answer as the
    engine it was started as would, or a pass gave nothing to measure. The message says
    which, and ends with the server's log where there is one.
    """

    code = "bench-run"
