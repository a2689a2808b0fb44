"""How many parameter sets one fan-out step should backtest.

A step handed to another process or worker costs a fixed overhead (process
start or task hand-off, Parquet in/out, Dagster's event writes) whatever it
computes. The rule: a chunk step's compute must be at least
``COMPUTE_TO_OVERHEAD`` (10) times that overhead, so the overhead is at most
~10 % of a step. With ``s`` seconds of compute per backtest and ``o``
seconds of overhead per step::

    chunk = ceil(10 * o / s), at least 1, at most the number of sets

``o`` per executor comes from bench/scaleout.py (2-core machine, under load:
docs/scale-out.md): in process ~0.05 s (no hand-off), Celery ~3 s,
multiprocess ~30 s (a code-location import per step). ``s`` is measured on
the market being swept, after one warm-up backtest (Numba's first call).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

COMPUTE_TO_OVERHEAD = 10.0
STEP_OVERHEAD_S = {"in_process": 0.05, "celery": 3.0, "multiprocess": 30.0}


def chunk_size_for(seconds_per_backtest: float, step_overhead_s: float, n_sets: int) -> int:
    """Parameter sets per step so a step computes >= 10x its overhead (module docstring)."""
    if n_sets < 1:
        raise ValueError("no parameter sets to chunk")
    if not (seconds_per_backtest > 0 and step_overhead_s >= 0):
        raise ValueError(f"need seconds_per_backtest > 0 and step_overhead_s >= 0, got "
                         f"{seconds_per_backtest!r} and {step_overhead_s!r}")
    return max(1, min(n_sets, math.ceil(COMPUTE_TO_OVERHEAD * step_overhead_s / seconds_per_backtest)))


def seconds_per_backtest(run: Callable[[Sequence[Mapping[str, Any]]], Any], sets: Sequence[Mapping[str, Any]],
                         sample: int = 8) -> float:
    """Wall seconds per backtest of ``run(sets)`` over up to ``sample`` sets, after a warm-up
    call on the first set (so Numba's compile is not counted)."""
    run(sets[:1])
    probe = sets[:max(1, min(sample, len(sets)))]
    t0 = time.perf_counter()
    run(probe)
    return max((time.perf_counter() - t0) / len(probe), 1e-9)
