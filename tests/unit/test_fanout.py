"""The fan-out chunk rule (fbt_pipelines/usecases/fanout.py): compute per step >= 10x overhead."""

from __future__ import annotations

import pytest

from fbt_pipelines.usecases.fanout import chunk_size_for, seconds_per_backtest


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


def test_seconds_per_backtest_warms_up_then_times_a_sample():
    calls: list[int] = []
    per = seconds_per_backtest(lambda some: calls.append(len(some)), [{"a": i} for i in range(20)], sample=8)
    assert calls == [1, 8] and per > 0
