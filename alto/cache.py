"""Where Alto keeps what it builds once and reuses: ``$ALTO_CACHE``, or ``~/.cache/alto``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Alto's cache folder (built passage indexes, llama.cpp build verdicts); it may not exist yet.

    Everything in it can be deleted: it is rebuilt when needed.
    """
    return Path(os.environ.get("ALTO_CACHE", Path.home() / ".cache" / "alto"))
