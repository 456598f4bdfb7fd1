"""``python -m alto.bench.emulator``: serve the timing emulator (timing emulation, not a model)."""

from __future__ import annotations

from alto.bench.emulator.launch import main

main()
