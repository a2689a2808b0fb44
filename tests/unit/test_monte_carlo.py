"""fbt_pipelines.risk.monte_carlo: stationary bootstrap, trade reshuffles, summaries.

Statistical checks use fixed seeds and tolerances of several standard errors,
so they are deterministic (same numbers every run) yet would fail for a
wrong block-length law, a non-iid ``mean_block=1`` or a biased Sharpe
interval. Drawdowns, CAGR and Sharpe per path are compared with
``fbt_pipelines.risk.metrics`` (``drawdown`` / ``risk_metrics``) run on
pandas equity curves built independently from the same returns.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.risk.metrics import drawdown, risk_metrics
from fbt_pipelines.risk.monte_carlo import (
    PERCENTILES,
    MonteCarloSummary,
    bootstrap_paths,
    max_drawdown_paths,
    monte_carlo_summary,
    stationary_bootstrap_indices,
    trade_reshuffle_paths,
)

CAPITAL = 1_000_000.0


def _equity_series(returns: np.ndarray, capital: float = CAPITAL) -> pd.Series:
    """Equity curve of one path: capital, then compounded returns, on business days."""
    values = np.concatenate(([capital], capital * np.cumprod(1.0 + returns)))
    return pd.Series(values, index=pd.bdate_range("2015-01-01", periods=values.size))


def _block_starts(idx: np.ndarray, n: int) -> np.ndarray:
    """True where step t (t >= 1) does not continue the previous index (+1 mod n)."""
    return idx[:, 1:] != (idx[:, :-1] + 1) % n


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_reproducible_with_seed() -> None:
    r = np.random.default_rng(7).normal(0.0005, 0.01, 500)
    a = bootstrap_paths(r, 50, 300, mean_block=10, seed=3)
    b = bootstrap_paths(r, 50, 300, mean_block=10, seed=3)
    c = bootstrap_paths(r, 50, 300, mean_block=10, seed=4)
    assert a.shape == (50, 300) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.isin(a, r).all()  # every value is one of the source returns
    i1 = stationary_bootstrap_indices(500, 20, 5.0, np.random.default_rng(11), horizon=40)
    i2 = stationary_bootstrap_indices(500, 20, 5.0, np.random.default_rng(11), horizon=40)
    np.testing.assert_array_equal(i1, i2)
    assert i1.dtype == np.int64 and i1.min() >= 0 and i1.max() < 500


def test_bootstrap_default_horizon_and_wraparound() -> None:
    # mean_block huge: a path is one block, consecutive mod n, wrapping n-1 -> 0.
    idx = stationary_bootstrap_indices(7, 30, 1e12, np.random.default_rng(0))
    assert idx.shape == (30, 7)
    np.testing.assert_array_equal(idx, (idx[:, :1] + np.arange(7)) % 7)
    assert (idx[:, 0] != 0).any()  # some path starts mid-series, so it wraps


def test_block_length_mean_matches_mean_block() -> None:
    # n = 10**6 source points: a fresh block continues the previous one by chance
    # with probability 1e-6, so breaks in the +1 sequence are block starts.
    n, mean_block = 1_000_000, 20.0
    idx = stationary_bootstrap_indices(n, 200, mean_block, np.random.default_rng(42), horizon=5_000)
    starts = _block_starts(idx, n)
    # Estimated restart probability: unbiased even though the last block is cut.
    p_hat = starts.mean()  # ~1e6 Bernoulli(1/20) draws, s.e. ~0.4 % relative
    assert 1.0 / p_hat == pytest.approx(mean_block, rel=0.03)
    # Complete blocks (between two restarts) have mean length mean_block too.
    lengths = []
    for row in starts:
        pos = np.flatnonzero(row) + 1          # step index of each restart
        lengths.append(np.diff(np.concatenate(([0], pos))))  # blocks ending before a restart
    lengths = np.concatenate(lengths)
    assert lengths.size > 40_000
    assert lengths.mean() == pytest.approx(mean_block, rel=0.03)
    # Geometric law: P(L = 1) = 1 / mean_block.
    assert np.mean(lengths == 1) == pytest.approx(1.0 / mean_block, rel=0.1)


def test_mean_block_one_is_iid() -> None:
    n = 1_000
    idx = stationary_bootstrap_indices(n, 400, 1.0, np.random.default_rng(5), horizon=500)
    m = idx.size  # 200,000 draws
    # Never continues a block beyond chance (P(next == prev + 1) = 1/n for iid).
    assert _block_starts(idx, n).mean() > 1 - 5.0 / n
    # Indices uncorrelated at lag 1 ...
    x = idx.astype(float)
    lag1 = np.corrcoef(x[:, :-1].ravel(), x[:, 1:].ravel())[0, 1]
    assert abs(lag1) < 4 / math.sqrt(m)
    # ... so consecutive differences d_t = i_t - i_(t-1) are MA(1) with lag-1
    # autocorrelation exactly -1/2 for iid draws (and > 0.9 under blocks).
    d = np.diff(x, axis=1)
    d_lag1 = np.corrcoef(d[:, :-1].ravel(), d[:, 1:].ravel())[0, 1]
    assert d_lag1 == pytest.approx(-0.5, abs=0.01)
    # ... and uniform over [0, n): chi-square with n - 1 dof, mean 999, sd ~45.
    counts = np.bincount(idx.ravel(), minlength=n)
    chi2 = ((counts - m / n) ** 2 / (m / n)).sum()
    assert chi2 < n - 1 + 5 * math.sqrt(2 * (n - 1))
    # Contrast: with blocks the differences are mostly +1.
    blocky = stationary_bootstrap_indices(n, 400, 20.0, np.random.default_rng(5), horizon=500)
    assert np.mean(np.diff(blocky, axis=1) == 1) > 0.9


def test_bootstrap_rejects_bad_input() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="mean_block"):
        stationary_bootstrap_indices(10, 2, 0.5, rng)
    with pytest.raises(ValueError, match="n_paths"):
        stationary_bootstrap_indices(10, 0, 2, rng)
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_paths(np.array([0.01, np.nan]), 2, 5)
    with pytest.raises(ValueError, match="1-D"):
        bootstrap_paths(np.zeros((2, 2)), 2, 5)


# --------------------------------------------------------------------------- trade reshuffle


def test_trade_reshuffle_keeps_final_equity_and_changes_path() -> None:
    rng = np.random.default_rng(9)
    trades = np.round(rng.normal(150.0, 2_000.0, 80))  # whole dollars: sums are exact
    paths = trade_reshuffle_paths(trades, 500, seed=1, capital=100_000.0)
    assert paths.shape == (500, 81)
    np.testing.assert_array_equal(paths[:, 0], 100_000.0)
    np.testing.assert_array_equal(paths[:, -1], 100_000.0 + trades.sum())  # sum invariant, exactly
    # Each row's increments are a permutation of the trades ...
    steps = np.diff(paths, axis=1)
    np.testing.assert_array_equal(np.sort(steps, axis=1), np.broadcast_to(np.sort(trades), steps.shape))
    # ... in different orders, so the paths and their drawdowns differ.
    assert len({tuple(row) for row in steps}) == 500
    dd = max_drawdown_paths(paths)
    assert dd.std() > 0
    # Reproducible; float P&L keeps the final value up to summation order.
    np.testing.assert_array_equal(paths, trade_reshuffle_paths(trades, 500, seed=1, capital=100_000.0))
    cents = rng.normal(10.0, 300.0, 200)
    pnl_paths = trade_reshuffle_paths(cents, 100, seed=2)
    np.testing.assert_allclose(pnl_paths[:, -1], math.fsum(cents), rtol=0, atol=1e-9)
    # Drawdowns against metrics.drawdown, relative and in USD.
    for k in (0, 123, 499):
        series = pd.Series(paths[k], index=pd.bdate_range("2020-01-01", periods=81))
        assert dd[k] == -drawdown(series).min()
        assert max_drawdown_paths(paths[k:k + 1], relative=False)[0] == pytest.approx(
            (series.cummax() - series).max(), rel=1e-12)


# --------------------------------------------------------------------------- summary


def test_constant_return_path_percentiles_are_that_paths() -> None:
    for r in (-0.001, 0.0004):
        paths = np.full((40, 252), r)
        s = monte_carlo_summary(paths, CAPITAL, dd_threshold=0.2)
        equity = _equity_series(paths[0])
        expected_mdd = -drawdown(equity).min()
        np.testing.assert_array_equal(s.max_drawdown, expected_mdd)
        assert list(s.percentiles.columns) == list(PERCENTILES)
        for q in PERCENTILES:  # exactly, not approximately
            assert s.percentiles.at["max_drawdown", q] == expected_mdd
            assert s.percentiles.at["cagr", q] == s.cagr[0]
            assert s.percentiles.at["final_equity", q] == equity.iloc[-1]
            assert math.isnan(s.percentiles.at["sharpe", q])  # flat path: Sharpe undefined
        assert s.cagr[0] == pytest.approx((1 + r) ** 252 - 1, rel=1e-12)
        assert math.isnan(s.sharpe_ci[0]) and math.isnan(s.sharpe_ci[1])
    assert monte_carlo_summary(np.full((3, 10), 0.001), CAPITAL, 0.2).percentiles.at["max_drawdown", 50] == 0.0
    # 1 - 0.999**252 = 22.3 % > 20 %: every path breaches; 0.3 is never breached.
    assert monte_carlo_summary(np.full((5, 252), -0.001), CAPITAL, 0.2).prob_drawdown_exceeds == 1.0
    assert monte_carlo_summary(np.full((5, 252), -0.001), CAPITAL, 0.3).prob_drawdown_exceeds == 0.0


def test_summary_matches_metrics_on_individual_paths() -> None:
    rng = np.random.default_rng(2024)
    source = rng.standard_t(4, 1_000) * 0.008 + 0.0003
    paths = bootstrap_paths(source, 300, 504, mean_block=15, seed=8)
    s = monte_carlo_summary(paths, CAPITAL, dd_threshold=0.1, ci_level=0.9)
    assert isinstance(s, MonteCarloSummary)
    assert (s.n_paths, s.horizon) == (300, 504)
    for k in (0, 17, 299):
        equity = _equity_series(paths[k])
        assert s.max_drawdown[k] == pytest.approx(-drawdown(equity).min(), rel=1e-12)
        m = risk_metrics(equity)
        assert s.max_drawdown[k] == pytest.approx(m.max_drawdown, rel=1e-12)
        assert s.cagr[k] == pytest.approx(m.cagr, rel=1e-9)
        assert s.sharpe[k] == pytest.approx(m.sharpe, rel=1e-9)
        assert s.final_equity[k] == pytest.approx(equity.iloc[-1], rel=1e-12)
    np.testing.assert_allclose(
        s.max_drawdown, max_drawdown_paths(np.hstack([np.full((300, 1), CAPITAL), CAPITAL * np.cumprod(1 + paths, 1)])),
        rtol=1e-12)
    assert s.prob_drawdown_exceeds == np.mean(s.max_drawdown > 0.1)
    for metric, values in (("max_drawdown", s.max_drawdown), ("cagr", s.cagr), ("sharpe", s.sharpe)):
        np.testing.assert_array_equal(s.percentiles.loc[metric].to_numpy(), np.percentile(values, PERCENTILES))
    assert s.sharpe_ci == pytest.approx(tuple(np.percentile(s.sharpe, [5, 95])), rel=1e-12)
    flat = s.scalars()
    assert flat["max_drawdown_p95"] == s.percentiles.at["max_drawdown", 95]
    assert flat["sharpe_ci_low"] == s.sharpe_ci[0]
    with pytest.raises(ValueError):  # read-only arrays: the summary is immutable
        s.max_drawdown[0] = 0.0
    # Reproducible end to end.
    s2 = monte_carlo_summary(bootstrap_paths(source, 300, 504, mean_block=15, seed=8), CAPITAL, 0.1, 0.9)
    assert s2.scalars() == flat


def test_sharpe_ci_covers_true_sharpe_at_nominal_rate() -> None:
    # 200 seeds: n = 250 iid N(mu, sigma) daily returns, iid bootstrap (mean_block=1)
    # of 400 paths of the same length, 90 % percentile interval of the annualised
    # Sharpe. Coverage is Binomial(200, ~0.9): s.d. ~2 %, so [80 %, 97 %] is wide.
    mu, sigma, n = 0.001, 0.01, 250
    true_sharpe = mu / sigma * math.sqrt(252)  # 1.587
    covered, widths = 0, []
    for seed in range(200):
        r = np.random.default_rng(10_000 + seed).normal(mu, sigma, n)
        s = monte_carlo_summary(bootstrap_paths(r, 400, n, mean_block=1, seed=seed), 1.0, 0.5, ci_level=0.9)
        low, high = s.sharpe_ci
        covered += low <= true_sharpe <= high
        widths.append(high - low)
    assert 0.80 <= covered / 200 <= 0.97
    # Analytic cross-check (Lo 2002): s.e. of the per-day Sharpe ~ sqrt((1 + SR^2/2) / n).
    sr_day = mu / sigma
    analytic_width = 2 * 1.6449 * math.sqrt((1 + sr_day**2 / 2) / n) * math.sqrt(252)
    assert np.median(widths) == pytest.approx(analytic_width, rel=0.1)


def test_summary_rejects_bad_input() -> None:
    ok = np.full((2, 5), 0.001)
    with pytest.raises(ValueError, match="100 %"):
        monte_carlo_summary(np.array([[0.1, -1.0]]), CAPITAL, 0.2)
    with pytest.raises(ValueError, match="2-D"):
        monte_carlo_summary(np.zeros(5), CAPITAL, 0.2)
    with pytest.raises(ValueError, match="dd_threshold"):
        monte_carlo_summary(ok, CAPITAL, 20)
    with pytest.raises(ValueError, match="capital"):
        monte_carlo_summary(ok, 0.0, 0.2)
    with pytest.raises(ValueError, match="ci_level"):
        monte_carlo_summary(ok, CAPITAL, 0.2, ci_level=95)
    with pytest.raises(ValueError, match="equity > 0"):
        max_drawdown_paths(np.array([[0.0, 1.0]]))
