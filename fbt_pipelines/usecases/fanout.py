"""How many parameter sets one fan-out step should backtest.

A step handed to another process or worker costs a fixed overhead ``o``
(process start or task hand-off, Parquet in/out, Dagster's event writes)
whatever it computes, and each step also repeats work its sets share: the
market's inputs made ready and each distinct moving average computed once
per step, not once per sweep (``f`` seconds). Cutting a market's sets into
more steps pays both again. The rule: a chunk step's backtesting must be at
least ``COMPUTE_TO_OVERHEAD`` (10) times what the step costs besides, so
that is at most ~10 % of a step. With ``s`` seconds per backtest::

    chunk = ceil(10 * (o + f) / s), at least 1, at most the number of sets

``o`` per executor comes from bench/scaleout.py (2-core machine, under load:
docs/scale-out.md): Celery ~3 s, multiprocess ~30 s (a code-location
import per step). ``s`` and ``f`` are measured on the market being swept
(:func:`step_costs`). In process (``sweep_fanout``'s plan step), steps run
one after another and each sweep threads inside, so cutting a market only
repeats work: one step per market there, whatever the rule gives.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

COMPUTE_TO_OVERHEAD = 10.0
STEP_OVERHEAD_S = {"celery": 3.0, "multiprocess": 30.0}
SERIAL_EXECUTORS = frozenset({"in_process"})  # steps one after another: a market is one step
DEFAULT_OVERHEAD_S = 3.0  # an executor not measured: as Celery


def executor_chunk_size(mode: str, n_sets: int, measure: Callable[[], tuple[float, float]],
                        step_overhead_s: float | None = None) -> tuple[int, str]:
    """(sets per step, why) for executor ``mode``: the module docstring's rule.

    ``measure()`` gives (seconds per backtest, seconds a step repeats), e.g.
    :func:`step_costs` on one market; it is not called on an executor of
    :data:`SERIAL_EXECUTORS` without an explicit ``step_overhead_s`` (then
    every set is one step). ``step_overhead_s`` None: :data:`STEP_OVERHEAD_S`.
    """
    if mode in SERIAL_EXECUTORS and step_overhead_s is None:
        return n_sets, (f"{mode}: one step per market (steps run one after another and the sweep threads "
                        f"inside; cutting a market would repeat its shared work)")
    overhead = step_overhead_s if step_overhead_s is not None else STEP_OVERHEAD_S.get(mode, DEFAULT_OVERHEAD_S)
    per_backtest, fixed = measure()
    size = chunk_size_for(per_backtest, overhead, n_sets, fixed)
    return size, (f"{per_backtest * 1e3:.2f} ms per backtest and {fixed * 1e3:.0f} ms repeated per step, "
                  f"{overhead:g} s overhead per {mode} step, compute >= {COMPUTE_TO_OVERHEAD:g}x overhead")


def chunk_size_for(seconds_per_backtest: float, step_overhead_s: float, n_sets: int,
                   step_fixed_s: float = 0.0) -> int:
    """Parameter sets per step so a step computes >= 10x its overhead (module docstring).

    ``step_fixed_s``: the work each step repeats (``f``), added to the executor's ``o``.
    """
    if n_sets < 1:
        raise ValueError("no parameter sets to chunk")
    if not (seconds_per_backtest > 0 and step_overhead_s >= 0 and step_fixed_s >= 0):
        raise ValueError(f"need seconds_per_backtest > 0 and step_overhead_s, step_fixed_s >= 0, got "
                         f"{seconds_per_backtest!r}, {step_overhead_s!r} and {step_fixed_s!r}")
    cost = step_overhead_s + step_fixed_s
    return max(1, min(n_sets, math.ceil(COMPUTE_TO_OVERHEAD * cost / seconds_per_backtest)))


def step_costs(run: Callable[[Sequence[Mapping[str, Any]]], Any], sets: Sequence[Mapping[str, Any]],
               sample: int = 8) -> tuple[float, float]:
    """(seconds per backtest ``s``, seconds a step repeats ``f``) of ``run(sets)``, wall.

    ``k`` sets (up to ``sample``), the middle one of each of ``k`` equal
    runs of ``sets`` (costs differ over a grid: short moving averages trade
    far more, so a sample spread over it, not its first sets) are timed, best
    of 2 after a warm-up call (Numba's compile not counted), once as they are
    (``t1``) and each twice in one call (``t2``): the doubled call computes
    the same shared work (inputs, one moving average per distinct window)
    and twice the backtests, so ``s = (t2 - t1) / k`` and ``f = t1 - k s``
    (at least 0).
    """
    k = max(1, min(sample, len(sets)))
    probe = [sets[int(i)] for i in (np.arange(k) + 0.5) * len(sets) // k]
    run(probe[:1])
    t1 = _best_of(run, probe)
    t2 = _best_of(run, probe + probe)
    per = max((t2 - t1) / k, 1e-9)
    return per, max(t1 - k * per, 0.0)


def _best_of(run: Callable[[Sequence[Mapping[str, Any]]], Any], sets: Sequence[Mapping[str, Any]],
             repeat: int = 2) -> float:
    """The shortest of ``repeat`` timings of ``run(sets)`` (seconds, wall): the least disturbed."""
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        run(sets)
        best = min(best, time.perf_counter() - t0)
    return best
