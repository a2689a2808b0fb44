"""The fan-out chunk rule (fbt_pipelines/usecases/fanout.py): compute per step >= 10x overhead."""

from __future__ import annotations

import pytest

from fbt_pipelines.usecases.fanout import STEP_OVERHEAD_S, chunk_size_for, executor_chunk_size, step_costs


@pytest.mark.parametrize("per_backtest, overhead, n_sets, expected", [
    (0.0015, 3.0, 1000, 1000),   # Celery: 10 x 3 s / 1.5 ms = 20,000 sets -> capped at the 1,000 there are
    (0.0015, 0.05, 1000, 334),   # in process: 0.5 s / 1.5 ms = 333.3 -> 334 (rounded UP: >= 10x)
    (0.2, 3.0, 1000, 150),       # minute bars, 200 ms each: 30 s / 0.2 s = 150
    (0.2, 0.0, 1000, 1),         # no overhead: one set per step is fine
    (7.0, 3.0, 5, 5),            # 30 / 7 = 4.3 -> 5, and never above the 5 sets
])
def test_chunk_rule_by_hand(per_backtest, overhead, n_sets, expected):
    size = chunk_size_for(per_backtest, overhead, n_sets)
    assert size == expected
    if overhead and size < n_sets:  # the rule it states: a full step computes >= 10x its overhead
        assert size * per_backtest >= 10 * overhead > (size - 1) * per_backtest


@pytest.mark.parametrize("args", [(0.0, 3.0, 10), (-1.0, 3.0, 10), (0.1, -1.0, 10), (0.1, 3.0, 0)])
def test_chunk_rule_rejects_nonsense(args):
    with pytest.raises(ValueError):
        chunk_size_for(*args)


def test_work_each_step_repeats_counts_as_overhead():
    # 125 ms a backtest, 1 s of inputs and moving averages per step, 0.25 s of hand-off (binary-exact values):
    # 10 x 1.25 / 0.125 = 100 sets, where the hand-off alone would give 20
    assert chunk_size_for(0.125, 0.25, 1000, step_fixed_s=1.0) == 100
    assert chunk_size_for(0.125, 0.25, 1000) == 20
    with pytest.raises(ValueError):
        chunk_size_for(0.125, 0.25, 1000, step_fixed_s=-0.5)


def test_step_costs_split_per_backtest_from_per_step():
    """A run costing 0.02 s + 0.005 s per set: s ~5 ms, f ~20 ms (sleep-timed, so bounds, not equality)."""
    import time

    seen: list[list[int]] = []

    def run(some):
        seen.append([s["a"] for s in some])
        time.sleep(0.02 + 0.005 * len(some))

    per, fixed = step_costs(run, [{"a": i} for i in range(20)], sample=8)
    spread = [1, 3, 6, 8, 11, 13, 16, 18]  # the middle of each eighth of the grid
    assert seen == [spread[:1], spread, spread, spread + spread, spread + spread]  # a warm-up, then best of 2 of each
    assert 0.004 <= per <= 0.008 and 0.012 <= fixed <= 0.03
    per_one, fixed_one = step_costs(run, [{"a": 0}])
    assert 0.004 <= per_one <= 0.008 and 0.012 <= fixed_one <= 0.03


def test_executor_rule_in_process_is_one_step_per_market_without_measuring():
    def measure():
        raise AssertionError("in process needs no measurement")

    assert executor_chunk_size("in_process", 1000, measure)[0] == 1000
    # an explicit overhead applies the rule in process too: 10 x (0.25 + 1.0) / 0.125 = 100
    assert executor_chunk_size("in_process", 1000, lambda: (0.125, 1.0), step_overhead_s=0.25)[0] == 100


def test_executor_rule_uses_the_measured_overhead_of_its_executor():
    measure = lambda: (0.125, 0.0)  # noqa: E731
    assert STEP_OVERHEAD_S["celery"] == 3.0
    assert executor_chunk_size("celery", 1000, measure)[0] == 240  # 10 x 3 / 0.125
    assert executor_chunk_size("multiprocess", 1000, measure)[0] == 1000  # 10 x 30 / 0.125 = 2,400 -> all 1,000
    assert executor_chunk_size("k8s", 1000, measure)[0] == 240  # not measured: as Celery
