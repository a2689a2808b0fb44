"""Correlations of daily returns against hand-worked values and numpy."""

import math

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.risk.correlation import (average_pairwise, correlation_matrix, correlation_table,
                                            rolling_correlation)


def _frame():
    idx = pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC")
    # b = 2a (corr +1), c = -a (corr -1)
    a = [0.01, -0.02, 0.03, 0.00, 0.01]
    return pd.DataFrame({"a": a, "b": [2 * x for x in a], "c": [-x for x in a]}, index=idx)


def test_perfect_correlations_by_hand():
    corr = correlation_matrix(_frame(), min_periods=2)
    assert corr.loc["a", "b"] == pytest.approx(1.0)
    assert corr.loc["a", "c"] == pytest.approx(-1.0)
    assert corr.loc["b", "c"] == pytest.approx(-1.0)
    assert np.allclose(np.diag(corr), 1.0)
    assert average_pairwise(corr) == pytest.approx((1 - 1 - 1) / 3)
    table = correlation_table(corr)
    assert list(table.iloc[0][["a", "b"]]) == ["a", "b"] and table["correlation"].iloc[0] == pytest.approx(1)


def test_hand_worked_pearson():
    # x = 1,2,3 ; y = 1,3,2 -> cov = 0.5, var = 1, 1 -> corr 0.5
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [1.0, 3.0, 2.0]})
    assert correlation_matrix(df, min_periods=3).loc["x", "y"] == pytest.approx(0.5)
    assert correlation_matrix(df, min_periods=4).isna().loc["x", "y"]
    # Spearman on ranks equals Pearson on these (already ranks).
    assert correlation_matrix(df, "spearman", min_periods=3).loc["x", "y"] == pytest.approx(0.5)


def test_rolling_matches_numpy_on_each_window():
    rng = np.random.default_rng(1)
    idx = pd.date_range("2020-01-01", periods=60, freq="B", tz="UTC")
    a = pd.Series(rng.normal(0, 0.01, 60), index=idx)
    b = pd.Series(0.5 * a.to_numpy() + rng.normal(0, 0.01, 60), index=idx).iloc[3:]  # 3 fewer sessions
    out = rolling_correlation(a, b, 20)
    common = a.index.intersection(b.index)
    assert out.index.equals(common)
    assert out.iloc[:19].isna().all()
    for end in (19, 30, len(common) - 1):
        sl = common[end - 19:end + 1]
        expected = np.corrcoef(a.loc[sl], b.loc[sl])[0, 1]
        assert out.iloc[end] == pytest.approx(expected, abs=1e-12)


def test_constant_window_is_nan_and_bad_input_raises():
    a = pd.Series([0.0] * 10 + [0.01, -0.01] * 5)
    b = pd.Series(np.linspace(-0.01, 0.01, 20))
    out = rolling_correlation(a, b, 5)
    assert math.isnan(out.iloc[6])
    with pytest.raises(ValueError, match="method"):
        correlation_matrix(_frame(), method="cosine")
    with pytest.raises(ValueError, match="window"):
        rolling_correlation(a, b, 1)
