"""Per-bar margins cut into a MarginSchedule: the compiled pass against hand-worked runs and numpy."""

from __future__ import annotations

import numpy as np
import pytest

from fbt_pipelines.catalog import market_spec
from fbt_pipelines.engine.futures_engine import margin_schedule_of
from fbt_pipelines.engine.kernel import _RUN_CHUNK, margin_runs_nb
from fbt_pipelines.futures.margin import MarginSchedule

SPEC = market_spec("ES")


def numpy_starts(initial: np.ndarray, maintenance: np.ndarray | None) -> list[int]:
    """Run starts by plain numpy: a bar starts a run when either margin differs from the bar before."""
    changed = np.diff(initial) != 0
    if maintenance is not None:
        changed |= np.diff(maintenance) != 0
    return [0] + (np.flatnonzero(changed) + 1).tolist()


def test_from_per_bar_without_maintenance_is_one_segment_per_run():
    # hand-worked: values 1, 1, 2, 2, 1 -> runs start at bars 0, 2, 4 (was one segment per bar: NaN != NaN)
    s = MarginSchedule.from_per_bar(np.array([1.0, 1.0, 2.0, 2.0, 1.0]), None)
    assert s.starts.tolist() == [0, 2, 4]
    assert s.initial.tolist() == [1.0, 2.0, 1.0] and np.isnan(s.maintenance).all()


def test_runs_hand_worked():
    initial = np.array([5.0, 5.0, 5.0, 7.0, 7.0, 5.0])
    maint = np.array([4.0, 4.0, 3.0, 3.0, 3.0, 3.0])
    assert margin_runs_nb(initial, maint, 6).tolist() == [0, 2, 3, 5]
    assert margin_runs_nb(initial, np.zeros(0), 6).tolist() == [0, 3, 5]
    assert margin_runs_nb(np.array([5.0]), maint, 6).tolist() == [0, 2]
    assert margin_runs_nb(np.array([5.0]), np.array([4.0]), 6).tolist() == [0]


@pytest.mark.parametrize("bad", [np.nan, -1.0, np.inf, -np.inf, 1e305])
def test_runs_refuse_doubtful_values(bad):
    # 1e305 > DBL_MAX / (2 n): a sum of such values could overflow, so the exact checks decide
    n = 3 * _RUN_CHUNK + 5
    for where in (0, 1, _RUN_CHUNK, n - 1):
        a = np.full(n, 10.0)
        a[where] = bad
        assert len(margin_runs_nb(a, np.zeros(0), n)) == 0
        assert len(margin_runs_nb(np.array([10.0]), a, n)) == 0
    assert len(margin_runs_nb(np.array([bad]), np.zeros(0), n)) == 0


def test_runs_equal_numpy_across_chunks():
    rng = np.random.default_rng(3)
    for n in (2, 3, _RUN_CHUNK, _RUN_CHUNK + 1, _RUN_CHUNK + 2, 5 * _RUN_CHUNK + 17):
        for _ in range(5):
            initial = rng.choice([100.0, 200.0], n, p=[0.97, 0.03])
            maint = rng.choice([80.0, 90.0], n, p=[0.98, 0.02])
            assert margin_runs_nb(initial, maint, n).tolist() == numpy_starts(initial, maint)
            assert margin_runs_nb(initial, np.zeros(0), n).tolist() == numpy_starts(initial, None)


def test_margin_schedule_of_per_bar_equals_the_arrays():
    rng = np.random.default_rng(4)
    initial = np.repeat(rng.choice([1000.0, 1500.0, 2000.0], 3 * _RUN_CHUNK // 100 + 1), 100)
    n = len(initial)
    maint = initial * 0.8
    s = margin_schedule_of(initial, maint, SPEC, n)
    assert s.starts.tolist() == numpy_starts(initial, maint)
    assert np.array_equal(s.per_bar("initial"), initial) and np.array_equal(s.per_bar("maintenance"), maint)
    s = margin_schedule_of(initial.astype(int), None, SPEC, n)  # integers, no maintenance
    assert np.array_equal(s.per_bar("initial"), initial) and np.isnan(s.maintenance).all()
    s = margin_schedule_of(1200.0, maint, SPEC, n)  # one initial margin, maintenance per bar
    assert np.array_equal(s.per_bar("initial"), np.full(n, 1200.0))
    assert np.array_equal(s.per_bar("maintenance"), maint)


def test_margin_schedule_of_errors_keep_their_order():
    n = 10
    good, bad = np.full(n, 5.0), np.r_[np.full(n - 1, 5.0), -1.0]
    with pytest.raises(ValueError, match="^margins must be finite and >= 0"):
        margin_schedule_of(bad, good, SPEC, n)
    with pytest.raises(ValueError, match="^maintenance_margins must be finite and >= 0"):
        margin_schedule_of(good, bad, SPEC, n)
    # the margins' values are checked before the maintenance margins' shape, as before
    with pytest.raises(ValueError, match="^margins must be finite and >= 0"):
        margin_schedule_of(bad, np.ones(n + 1), SPEC, n)
    with pytest.raises(ValueError, match="^maintenance_margins has shape"):
        margin_schedule_of(good, np.ones(n + 1), SPEC, n)
    # finite values whose sum overflows: refused by the exact check, as before
    with pytest.raises(ValueError, match="^margins must be finite and >= 0"), np.errstate(over="ignore"):
        margin_schedule_of(np.full(n, 1e308), None, SPEC, n)
