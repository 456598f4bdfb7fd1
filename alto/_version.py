"""The version of Alto, kept in one place.

Read by the package (``alto.__version__``), its tracer (:mod:`alto._tracing`) and its build
(``pyproject.toml`` reads it from here).
"""

__version__ = "0.1.0"
