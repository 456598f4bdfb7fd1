"""The version of Alto: one place, read by the package (``alto.__version__``), its tracer
(:mod:`alto._tracing`) and its build (``pyproject.toml`` reads it from here)."""

__version__ = "0.1.0"
