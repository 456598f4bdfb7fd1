"""Serving a flow over HTTP: every request's inputs join one long-lived pipeline.

    >>> import alto.serve  # doctest: +SKIP
    >>> asgi_app = alto.serve.app(my_flow, max_inflight=64)  # doctest: +SKIP

``alto serve TARGET`` runs it from the command line (see :mod:`alto.serve.launch`); the
routes, statuses and figures are described in :mod:`alto.serve.asgi` and ``docs/serve.md``.
Needs Starlette and uvicorn (``pip install 'alto[serve]'``).
"""

from alto.serve.asgi import Service, app
from alto.serve.pipeline import Overloaded, PerRequestRuns, SharedPipeline, Unavailable
from alto.serve.schema import BadRequest, RequestSchema

__all__ = [
    "BadRequest",
    "Overloaded",
    "PerRequestRuns",
    "RequestSchema",
    "Service",
    "SharedPipeline",
    "Unavailable",
    "app",
]
