"""The root of Alto's errors, below every other part so that every part can raise them.

:mod:`alto.errors` re-exports these and they give it as their ``__module__``, so a traceback
reads ``alto.errors.UsageError``; import them from there or from ``alto``.
"""

from __future__ import annotations


class AltoError(Exception):
    """Base of every error Alto raises. ``code`` is a stable identifier.

    An error that also has a builtin meaning keeps that builtin as a second base
    (:class:`StageTimeout` is a ``TimeoutError``, ``LLMConnectionError`` a
    ``ConnectionError``), so ``except`` clauses written for the builtin still catch it.
    """

    code = "alto"
    __module__ = "alto.errors"


class UsageError(AltoError, ValueError):
    """A value given to Alto (an argument, a setting, an option) is not one it accepts.

    Raised where the value is given, before anything runs with it; the message names the
    value and says what is accepted. A ``ValueError``, as Python's own checks raise.
    """

    code = "usage"
    __module__ = "alto.errors"


class UsageTypeError(AltoError, TypeError):
    """A value given to Alto is of a type it does not accept (a str for a list of str).

    The message names the value, its type and the type expected. A ``TypeError``.
    """

    code = "usage-type"
    __module__ = "alto.errors"


class StateError(AltoError, RuntimeError):
    """A call was made where or when it cannot run.

    ``alto.run()`` inside a running event loop, the Ray backend outside asyncio, a server
    object used before it was started. The message says what to do instead. A
    ``RuntimeError``, as Python's own ``asyncio.run()`` raises in a running loop.
    """

    code = "state"
    __module__ = "alto.errors"


class MissingDependency(AltoError, ModuleNotFoundError):
    """An optional dependency a feature needs is not installed.

    The message names the package and the ``pip install`` that brings it.
    """

    code = "missing-dependency"
    __module__ = "alto.errors"


class MissingFile(AltoError, FileNotFoundError):
    """A file Alto was pointed at (a model, a saved index) is not there.

    The message names the path and what was expected in it.
    """

    code = "missing-file"
    __module__ = "alto.errors"
