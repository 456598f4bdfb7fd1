"""``alto bench``: Alto against the LangGraph baselines and the hand-written asyncio reference.

Modules, one concept each:

* :mod:`alto.bench.emulator`: the serving-timing emulator (timing emulation, not a model),
  the benchmarks' LLM server: replicas with continuous batching and prefix caching behind
  a balancer.
* :mod:`alto.bench.stats`: percentiles, ratios, bootstrap intervals, Poisson schedules,
  steady-state windows, the highest rate under an SLO (pure).
* :mod:`alto.bench.record`: operator wrappers that record every call alike for every
  system, with root attribution and causal dependencies.
* :mod:`alto.bench.bound`: the critical-path lower bound under the emulator's timing model.
* :mod:`alto.bench.systems`: the systems under test behind one interface.
* :mod:`alto.bench.driver`: closed-loop (refilled) and Poisson load, latency on one clock.
* :mod:`alto.bench.settings`: what ``alto bench`` is asked to do, checked once, when made.
* :mod:`alto.bench.operators`: what one app's benchmark calls: its operators, the LLM
  servers it starts, the clients, and the one LLM cap every system gets.
* :mod:`alto.bench.emulated`: the running emulator's timing probe and counters.
* :mod:`alto.bench.session`: one app's runs (warm-up, bound pass, measured runs, timelines).
* :mod:`alto.bench.levels`: the load levels, the SLO and the rate ceiling (pure).
* :mod:`alto.bench.environment`: where the benchmark ran.
* :mod:`alto.bench.runner`: one app's interleaved benchmark on one deployment, in one
  process, every system under the same LLM cap.
* :mod:`alto.bench.summary`, :mod:`alto.bench.report`, :mod:`alto.bench.plots`,
  :mod:`alto.bench.chrome`: figures, ``report.md``, PNGs, the Chrome trace.
* :mod:`alto.bench.cli`: the subcommand.

Nothing heavy is imported here.
"""
