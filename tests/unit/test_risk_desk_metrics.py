"""Ulcer index, parametric / Cornish-Fisher VaR and CVaR, turnover, cost share, beta.

Peers: quantstats 0.0.86 (ulcer_index, value_at_risk, conditional_value_at_risk),
empyrical-reloaded (beta); Cornish-Fisher against a hand computation with
scipy.stats moments and scipy.integrate.quad. Tolerances are stated per assert.
"""

import math

import empyrical
import numpy as np
import pandas as pd
import pytest
import quantstats as qs
from scipy import integrate, stats

from fbt_pipelines.risk.metrics import (beta_correlation, cornish_fisher_cvar, cornish_fisher_var, cost_share,
                                        historical_cvar, parametric_cvar, parametric_var, turnover_contracts,
                                        turnover_notional, ulcer_index)


@pytest.fixture(scope="module")
def returns():
    rng = np.random.default_rng(7)
    idx = pd.bdate_range("2015-01-02", periods=1500, tz="UTC")
    r = 0.0003 + 0.01 * rng.standard_t(4, idx.size) / math.sqrt(2) - 0.004 * (rng.random(idx.size) < 0.02)
    return pd.Series(r, index=idx)


def equity_of(returns, capital=1_000_000.0):
    first = returns.index[0] - pd.Timedelta(days=1)
    return pd.concat([pd.Series([capital], index=[first]), capital * (1 + returns).cumprod()])


def test_ulcer_index_matches_quantstats(returns):
    n = len(returns)
    ours = ulcer_index(equity_of(returns))
    theirs = qs.stats.ulcer_index(returns.tz_localize(None))
    assert ours * math.sqrt(n / (n - 1)) == pytest.approx(theirs, rel=1e-9)  # they divide by n - 1


def test_ulcer_index_by_hand():
    # equity 100, 90, 95, 100, 80: dd 0, -0.1, -0.05, 0, -0.2 -> sqrt((0.01 + 0.0025 + 0 + 0.04) / 4)
    eq = pd.Series([100.0, 90.0, 95.0, 100.0, 80.0], index=pd.bdate_range("2024-01-01", periods=5))
    assert ulcer_index(eq) == pytest.approx(math.sqrt(0.0525 / 4), rel=1e-12)


def test_parametric_var_and_cvar_match_quantstats(returns):
    r = returns.tz_localize(None)
    for level in (0.95, 0.99):
        assert parametric_var(returns, level) == pytest.approx(-qs.stats.value_at_risk(r, confidence=level), rel=1e-9)
        assert parametric_cvar(returns, level) == pytest.approx(
            -qs.stats.conditional_value_at_risk(r, confidence=level), rel=1e-9)
        assert historical_cvar(returns, level) == pytest.approx(
            -qs.stats.conditional_value_at_risk(r, confidence=level, method="historical"), rel=1e-12)


def test_cornish_fisher_var_by_hand(returns):
    r = returns.to_numpy()
    s, k = stats.skew(r), stats.kurtosis(r)  # population moments, excess kurtosis
    for level in (0.95, 0.99):
        z = stats.norm.ppf(1 - level)
        zc = z + (z**2 - 1) * s / 6 + (z**3 - 3 * z) * k / 24 - (2 * z**3 - 5 * z) * s**2 / 36
        expected = -(r.mean() + r.std(ddof=1) * zc)
        assert cornish_fisher_var(returns, level) == pytest.approx(expected, rel=1e-12)
    # fat tails: the 99% CF VaR exceeds the Gaussian one here (k > 0)
    assert k > 1 and cornish_fisher_var(returns, 0.99) > parametric_var(returns, 0.99)


def test_cornish_fisher_cvar_is_the_tail_mean_of_cf_quantiles(returns):
    r = returns.to_numpy()
    s, k, mu, sd = stats.skew(r), stats.kurtosis(r), r.mean(), r.std(ddof=1)

    def quantile(p):
        z = stats.norm.ppf(p)
        return mu + sd * (z + (z**2 - 1) * s / 6 + (z**3 - 3 * z) * k / 24 - (2 * z**3 - 5 * z) * s**2 / 36)

    for level in (0.95, 0.99):
        a = 1 - level
        expected = -integrate.quad(quantile, 0, a, limit=200)[0] / a
        assert cornish_fisher_cvar(returns, level) == pytest.approx(expected, rel=1e-6)  # quadrature vs quad
        assert cornish_fisher_cvar(returns, level) > cornish_fisher_var(returns, level)


def test_cornish_fisher_without_skew_or_kurtosis_is_gaussian():
    # a sample of exact normal quantiles: skew 0, excess kurtosis ~ 0
    p = (np.arange(1, 20_001) - 0.5) / 20_000
    r = 0.01 * stats.norm.ppf(p)  # skew 0, excess kurtosis ~ 0
    assert abs(stats.skew(r)) < 1e-9 and abs(stats.kurtosis(r)) < 0.01
    assert cornish_fisher_cvar(r, 0.95) == pytest.approx(parametric_cvar(r, 0.95), rel=5e-3)
    assert cornish_fisher_var(r, 0.95) == pytest.approx(parametric_var(r, 0.95), rel=5e-3)


def test_beta_and_correlation_match_empyrical(returns):
    rng = np.random.default_rng(3)
    market = pd.Series(rng.normal(0, 0.012, len(returns)), index=returns.index)
    port = 0.4 * market + returns
    beta, corr, n = beta_correlation(port, market.iloc[10:])  # aligned on common sessions
    assert n == len(returns) - 10
    assert beta == pytest.approx(empyrical.beta(port.iloc[10:], market.iloc[10:]), rel=1e-9)
    assert corr == pytest.approx(np.corrcoef(port.iloc[10:], market.iloc[10:])[0, 1], rel=1e-12)
    assert 0.3 < beta < 0.5
    assert all(math.isnan(x) for x in beta_correlation(port.iloc[:2], market.iloc[:2])[:2])


def test_turnover_and_cost_share_by_hand():
    # 252 sessions at 10 contracts after buying 10 on day one and selling 10 on the last day:
    # traded 10 + 10 = 20, mean |position| = (251 x 10 + 0) / 252 -> 20 / 9.9603 / 1 year = 2.0080
    pos = np.r_[np.full(251, 10), 0]
    assert turnover_contracts(pos) == pytest.approx(20 / (2510 / 252), rel=1e-12)
    assert math.isnan(turnover_contracts(np.zeros(5)))
    # 4,000,000 USD traded over 504 sessions (2 years) on equity averaging 1,000,000 -> 2.0 a year
    eq = pd.Series(np.full(505, 1_000_000.0), index=pd.bdate_range("2020-01-01", periods=505))
    assert turnover_notional(4_000_000.0, eq) == pytest.approx(2.0)
    # net 75,000 after 25,000 of costs: gross 100,000 -> 25%
    assert cost_share(25_000.0, 75_000.0) == pytest.approx(0.25)
    assert math.isnan(cost_share(25_000.0, -30_000.0))
