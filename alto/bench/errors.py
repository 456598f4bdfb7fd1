"""The benchmark harness's errors: its settings', a server it needs, a run that fails."""

from __future__ import annotations

from alto.errors import AltoError


class BenchError(AltoError, ValueError):
    """A mistake in the settings of ``alto bench``: one line for the user, exit status 2.

    The settings are its arguments, or :class:`~alto.bench.settings.Settings` made in code.
    """

    code = "bench"


class LlamaServerMissing(AltoError, RuntimeError):
    """No ``llama-server`` binary was found; the message says how to build one."""

    code = "llama-server-missing"


class BenchRunError(AltoError, RuntimeError):
    """A benchmark could not run to the end.

    A server the harness starts exited, did not answer in time or did not answer as the
    engine it was started as would, or a pass gave nothing to measure. The message says
    which, and ends with the server's log where there is one.
    """

    code = "bench-run"
