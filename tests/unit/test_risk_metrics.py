"""fbt_pipelines.risk.metrics against empyrical, scipy and hand-worked numbers.

Tolerance: every float comparison is ``rel=1e-9`` (``abs=1e-12`` where the
expected value is 0). Implementations agree to ~1e-15; 1e-9 leaves room for
summation order only, so a wrong convention (ddof, sign, 252 vs 365, anchor
row, quantile interpolation) still fails by orders of magnitude.

Convention differences vs empyrical, converted before comparing:

- VaR / CVaR / max drawdown: we return POSITIVE loss fractions, empyrical
  returns the (negative) return, so ``ours == -empyrical``. Our ``level`` is
  the confidence (0.95); empyrical's ``cutoff`` is the tail (0.05).
- CVaR: empyrical averages the ``int((n-1)*cutoff) + 1`` lowest returns; we
  average all returns <= the linear-interpolated quantile. Identical without
  ties at the cut-off (asserted on the random series); with ties we include
  every tied return (documented in ``test_cvar_ties_differ_from_empyrical``).
- ``drawdown()`` includes the first session (always 0); empyrical's
  ``drawdown_series(returns)`` has one row per return, so compare ``[1:]``.
- ``risk_free`` is an ANNUAL rate here, empyrical's is per period: compare
  with ``risk_free / 252`` (Sharpe) and ``required_return = risk_free / 252``
  (Sortino).
- Zero volatility: NaN Sharpe here; empyrical gives +/-inf or NaN.
- skew / kurtosis / max drawdown duration / parametric VaR are not in
  empyrical: compared with scipy.stats (population moments, ``bias=True``,
  Fisher excess kurtosis), with scipy.stats.norm, and with a plain loop over
  empyrical's drawdown series.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import date

import empyrical
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from fbt_pipelines.risk.metrics import (
    RiskMetrics,
    daily_returns,
    drawdown,
    historical_cvar,
    historical_var,
    max_drawdown_duration,
    parametric_var,
    risk_metrics,
)

REL = 1e-9
ABS0 = 1e-12


def close(actual: float, expected: float) -> bool:
    return actual == pytest.approx(expected, rel=REL, abs=ABS0 if expected == 0 else 0)


def empyrical_drawdowns(returns: pd.Series) -> pd.Series:
    """empyrical's drawdown per return (not exported at top level in every version)."""
    fn = getattr(empyrical.stats, "drawdown_series", None)
    if fn is not None:
        return fn(returns)
    wealth = empyrical.cum_returns(returns, starting_value=1.0)  # anchor 1.0 before day 1
    return wealth / np.fmax(wealth.cummax(), 1.0) - 1.0


@pytest.fixture(scope="module")
def equity() -> pd.Series:
    """1000 sessions of a fat-tailed random walk starting at 1,000,000 USD."""
    rng = np.random.default_rng(7)
    r = 0.0004 + 0.01 * rng.standard_t(df=4, size=999) / math.sqrt(2.0)
    values = 1_000_000.0 * np.concatenate(([1.0], np.cumprod(1.0 + r)))
    return pd.Series(values, index=pd.bdate_range("2020-01-02", periods=1000), name="equity")


@pytest.fixture(scope="module")
def returns(equity: pd.Series) -> pd.Series:
    return empyrical.simple_returns(equity)


def test_random_series_is_not_trivial(equity: pd.Series, returns: pd.Series) -> None:
    # Guards the other tests: a real drawdown, fat tails, no ties in the 5 % tail.
    assert len(equity) == 1000 and len(returns) == 999
    assert empyrical.max_drawdown(returns) < -0.05
    assert scipy.stats.kurtosis(returns) > 0.5
    assert returns.nunique() == len(returns)


def test_daily_returns_and_drawdown_match_empyrical(equity: pd.Series, returns: pd.Series) -> None:
    ours = daily_returns(equity)
    assert ours.index.equals(returns.index)
    np.testing.assert_allclose(ours.to_numpy(), returns.to_numpy(), rtol=REL, atol=0)

    dd = drawdown(equity)
    assert dd.iloc[0] == 0.0 and (dd <= 0).all()
    # empyrical's series has no anchor row: compare from the second session.
    np.testing.assert_allclose(
        dd.iloc[1:].to_numpy(), empyrical_drawdowns(returns).to_numpy(),
        rtol=REL, atol=ABS0,
    )


def test_risk_metrics_match_empyrical(equity: pd.Series, returns: pd.Series) -> None:
    m = risk_metrics(equity)
    assert (m.start, m.end, m.days) == (date(2020, 1, 2), equity.index[-1].date(), 999)
    assert close(m.total_return, empyrical.cum_returns_final(returns))
    assert close(m.cagr, empyrical.cagr(returns))
    assert close(m.annual_vol, empyrical.annual_volatility(returns))
    assert close(m.sharpe, empyrical.sharpe_ratio(returns))
    assert close(m.sortino, empyrical.sortino_ratio(returns))
    assert close(m.calmar, empyrical.calmar_ratio(returns))
    assert close(m.max_drawdown, -empyrical.max_drawdown(returns))
    assert close(m.var_95, -empyrical.value_at_risk(returns, cutoff=1 - 0.95))
    assert close(m.var_99, -empyrical.value_at_risk(returns, cutoff=1 - 0.99))
    assert close(m.cvar_95, -empyrical.conditional_value_at_risk(returns, cutoff=1 - 0.95))
    assert close(m.cvar_99, -empyrical.conditional_value_at_risk(returns, cutoff=1 - 0.99))
    # Not in empyrical: scipy.stats defaults (population moments, excess kurtosis).
    assert close(m.skew, scipy.stats.skew(returns))
    assert close(m.kurtosis, scipy.stats.kurtosis(returns))
    # Ordering sanity: CVaR is further in the tail than VaR, 99 % beyond 95 %.
    assert 0 < m.var_95 < m.cvar_95 < m.cvar_99 and m.var_95 < m.var_99 <= m.cvar_99


def test_risk_free_is_annual_and_deannualised_by_252(
    equity: pd.Series, returns: pd.Series
) -> None:
    m = risk_metrics(equity, risk_free=0.03)
    assert close(m.sharpe, empyrical.sharpe_ratio(returns, risk_free=0.03 / 252))
    assert close(m.sortino, empyrical.sortino_ratio(returns, required_return=0.03 / 252))
    assert m.sharpe < risk_metrics(equity).sharpe
    # Other fields do not depend on the risk-free rate.
    assert m.cagr == risk_metrics(equity).cagr


def test_periods_per_year_changes_annualisation(equity: pd.Series, returns: pd.Series) -> None:
    m = risk_metrics(equity, periods_per_year=52)
    assert close(m.sharpe, empyrical.sharpe_ratio(returns, annualization=52))
    assert close(m.annual_vol, empyrical.annual_volatility(returns, annualization=52))
    assert close(m.cagr, empyrical.cagr(returns, annualization=52))


def test_standalone_var_functions(returns: pd.Series) -> None:
    for level in (0.95, 0.99, 0.9):
        assert close(historical_var(returns, level), -empyrical.value_at_risk(returns, 1 - level))
        assert close(
            historical_cvar(returns, level),
            -empyrical.conditional_value_at_risk(returns, 1 - level),
        )
        # Parametric: by hand with scipy's normal quantile and ddof=1 sigma.
        mu, sigma = returns.mean(), returns.std(ddof=1)
        z_tail = scipy.stats.norm.ppf(1 - level)
        assert close(parametric_var(returns, level), -(mu + sigma * z_tail))
        assert close(
            parametric_var(returns.to_numpy(), level),
            -scipy.stats.norm.ppf(1 - level, loc=mu, scale=sigma),
        )


def test_max_drawdown_duration_matches_loop_over_empyrical_drawdowns(
    equity: pd.Series, returns: pd.Series
) -> None:
    longest = run = 0
    for d in empyrical_drawdowns(returns):
        run = run + 1 if d < 0 else 0
        longest = max(longest, run)
    assert longest > 20
    assert max_drawdown_duration(equity) == longest == risk_metrics(equity).max_drawdown_duration


def test_hand_worked_series() -> None:
    # equity 100 -> 110 -> 99 -> 108.9: r = [+0.1, -0.1, +0.1], n = 3 returns.
    eq = pd.Series([100.0, 110.0, 99.0, 108.9], index=pd.bdate_range("2024-01-01", periods=4))
    m = risk_metrics(eq)
    assert (m.start, m.end, m.days) == (date(2024, 1, 1), date(2024, 1, 4), 3)
    np.testing.assert_allclose(daily_returns(eq).to_numpy(), [0.1, -0.1, 0.1], rtol=REL)
    # total = 108.9 / 100 - 1 = 0.089
    assert close(m.total_return, 0.089)
    # CAGR = 1.089 ** (252 / 3) - 1 = 1.089 ** 84 - 1 ~= 1288.26
    assert close(m.cagr, 1.089**84 - 1)
    # mean = 1/30; deviations (1/15, -2/15, 1/15); var(ddof=1) = (6/225)/2 = 1/75
    # annual vol = sqrt(252/75) = sqrt(3.36) ~= 1.8330
    assert close(m.annual_vol, math.sqrt(3.36))
    # Sharpe = (1/30) / (1/sqrt(75)) * sqrt(252) = sqrt(75/900 * 252) = sqrt(21) ~= 4.5826
    assert close(m.sharpe, math.sqrt(21))
    # downside dev = sqrt((0 + 0.01 + 0) / 3) = 0.1/sqrt(3); Sortino = (1/30)/(0.1/sqrt 3)*sqrt 252
    #             = sqrt(252/3) = sqrt(84) ~= 9.1652
    assert close(m.sortino, math.sqrt(84))
    # peak 110, trough 99: max drawdown 0.1; below the peak on sessions 3 and 4 -> 2.
    assert close(m.max_drawdown, 0.1)
    assert m.max_drawdown_duration == 2
    np.testing.assert_allclose(drawdown(eq).to_numpy(), [0, 0, -0.1, -0.01], rtol=REL, atol=ABS0)
    # Calmar = CAGR / 0.1
    assert close(m.calmar, (1.089**84 - 1) / 0.1)
    # sorted r = [-0.1, 0.1, 0.1]. 5 % quantile, linear: position 2*0.05 = 0.1
    #   -> -0.1 + 0.1 * (0.1 - -0.1) = -0.08  => VaR95 = 0.08; only -0.1 <= -0.08 => CVaR95 = 0.1
    # 1 % quantile: position 0.02 -> -0.1 + 0.02 * 0.2 = -0.096 => VaR99 = 0.096, CVaR99 = 0.1
    assert close(m.var_95, 0.08) and close(m.cvar_95, 0.1)
    assert close(m.var_99, 0.096) and close(m.cvar_99, 0.1)
    # population moments: m2 = 6/675, m3 = -6/10125 -> skew = -1/sqrt(2);
    # m4 = 18/50625/3 = 6/50625, m2^2 = 4/50625 -> kurtosis = 1.5 - 3 = -1.5
    assert close(m.skew, -1 / math.sqrt(2))
    assert close(m.kurtosis, -1.5)
    # Gaussian VaR95 = sigma * z_0.95 - mu = 1.6448536/sqrt(75) - 1/30 ~= 0.156598
    r = daily_returns(eq)
    assert close(parametric_var(r, 0.95), 1.6448536269514722 / math.sqrt(75) - 1 / 30)
    assert parametric_var(r, 0.95) == pytest.approx(0.156598, abs=1e-6)
    # The hand numbers are also what empyrical says.
    assert close(m.sharpe, empyrical.sharpe_ratio(r))
    assert close(m.sortino, empyrical.sortino_ratio(r))
    assert close(m.cagr, empyrical.cagr(r))
    assert close(m.var_95, -empyrical.value_at_risk(r, 0.05))
    assert close(m.cvar_95, -empyrical.conditional_value_at_risk(r, 0.05))


def test_duration_counts_sessions_below_peak_and_ends_on_exact_regain() -> None:
    idx = pd.bdate_range("2024-01-01", periods=7)
    # 90, 95, 99 below the 100 peak (3 sessions); 100 regains it exactly; 104 < 105 (1).
    assert max_drawdown_duration(pd.Series([100, 90, 95, 99, 100, 105, 104.0], index=idx)) == 3
    # regaining exactly splits the runs: 1 and 1, not 3
    assert max_drawdown_duration(pd.Series([100, 90, 100, 90.0], index=idx[:4])) == 1
    # an unrecovered drawdown runs to the end
    assert max_drawdown_duration(pd.Series([100, 101, 90, 95, 96.0], index=idx[:5])) == 3
    assert max_drawdown_duration(pd.Series([100, 101, 102.0], index=idx[:3])) == 0


def test_cvar_ties_differ_from_empyrical() -> None:
    # 21 returns: -0.2, -0.1, -0.1, then 18 zeros. 5 % quantile position 20*0.05 = 1
    # -> -0.1 = -VaR. Ours averages every return <= -0.1: (-0.2 - 0.1 - 0.1) / 3.
    # empyrical averages the int(20*0.05)+1 = 2 lowest: (-0.2 - 0.1) / 2 = -0.15.
    r = np.array([-0.2, -0.1, -0.1] + [0.0] * 18)
    assert close(historical_var(r, 0.95), 0.1)
    assert close(historical_cvar(r, 0.95), 0.4 / 3)
    assert close(empyrical.conditional_value_at_risk(r, 0.05), -0.15)


def test_zero_volatility_gives_nan_ratios_not_a_crash() -> None:
    idx = pd.bdate_range("2024-01-01", periods=300)
    flat = risk_metrics(pd.Series(1e6, index=idx))
    assert flat.annual_vol == 0.0 and flat.total_return == 0.0 and flat.cagr == 0.0
    assert flat.max_drawdown == 0.0 and flat.max_drawdown_duration == 0
    assert flat.var_95 == 0.0 and flat.cvar_99 == 0.0
    for name in ("sharpe", "sortino", "calmar", "skew", "kurtosis"):
        assert math.isnan(getattr(flat, name)), name
    # Compounding cash: returns constant up to float noise (~1e-16), still "zero vol".
    cash = risk_metrics(pd.Series(1e6 * 1.0002 ** np.arange(300), index=idx))
    assert cash.annual_vol == 0.0 and math.isnan(cash.sharpe) and math.isnan(cash.sortino)
    assert close(cash.cagr, 1.0002**252 - 1)
    # Two points: one return, std undefined -> NaN, not an exception.
    two = risk_metrics(pd.Series([100.0, 101.0], index=idx[:2]))
    assert math.isnan(two.annual_vol) and math.isnan(two.sharpe) and two.days == 1


def test_result_is_frozen_and_as_dict_has_every_field(equity: pd.Series) -> None:
    m = risk_metrics(equity)
    d = m.as_dict()
    assert list(d) == [
        "start", "end", "days", "total_return", "cagr", "annual_vol", "sharpe", "sortino",
        "calmar", "max_drawdown", "max_drawdown_duration", "var_95", "cvar_95", "var_99",
        "cvar_99", "skew", "kurtosis",
    ]
    assert d["sharpe"] == m.sharpe and isinstance(d["max_drawdown_duration"], int)
    assert all(isinstance(d[k], float) for k in d if k not in ("start", "end", "days",
                                                              "max_drawdown_duration"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.sharpe = 0.0  # type: ignore[misc]
    assert isinstance(m, RiskMetrics)


IDX = pd.bdate_range("2024-01-01", periods=4)


@pytest.mark.parametrize(
    ("equity", "match"),
    [
        (pd.Series([100.0], index=IDX[:1]), "at least 2 points"),
        (pd.Series([], dtype=float), "at least 2 points"),
        (pd.Series([100.0, 0.0, 50.0, 60.0], index=IDX), "> 0"),
        (pd.Series([100.0, -5.0, 50.0, 60.0], index=IDX), "> 0"),
        (pd.Series([100.0, np.nan, 50.0, 60.0], index=IDX), "finite"),
        (pd.Series([100.0, np.inf, 50.0, 60.0], index=IDX), "finite"),
        (pd.Series([100.0, 101.0, 102.0, 103.0], index=IDX[::-1]), "sorted"),
        (pd.Series([100.0, 101.0, 102.0, 103.0], index=IDX[[0, 1, 1, 2]]), "duplicate"),
    ],
)
def test_bad_equity_fails_loudly(equity: pd.Series, match: str) -> None:
    for fn in (risk_metrics, daily_returns, drawdown, max_drawdown_duration):
        with pytest.raises(ValueError, match=match):
            fn(equity)


def test_bad_arguments_fail_loudly() -> None:
    eq = pd.Series([100.0, 110.0, 99.0, 108.9], index=IDX)
    with pytest.raises(ValueError, match="session dates"):
        risk_metrics(eq.reset_index(drop=True))
    with pytest.raises(ValueError, match="periods_per_year"):
        risk_metrics(eq, periods_per_year=0)
    with pytest.raises(ValueError, match="risk_free"):
        risk_metrics(eq, risk_free=float("nan"))
    with pytest.raises(TypeError, match="pandas Series"):
        risk_metrics([100.0, 110.0])  # type: ignore[arg-type]
    r = daily_returns(eq)
    for fn in (historical_var, historical_cvar, parametric_var):
        for level in (0.0, 1.0, 95):
            with pytest.raises(ValueError, match="level"):
                fn(r, level)
        with pytest.raises(ValueError, match="NaN"):
            fn(np.array([0.01, np.nan, -0.02]), 0.95)
        with pytest.raises(ValueError, match="at least"):
            fn(np.array([]), 0.95)
    with pytest.raises(ValueError, match="at least 2 returns"):
        parametric_var(np.array([0.01]), 0.95)
