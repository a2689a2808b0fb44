"""Risk and performance metrics of a daily equity curve.

Conventions (shared with ``empyrical`` unless noted):

- ``equity`` is a ``pd.Series`` of account value in USD, one point per
  session, sorted by date, strictly positive.
- Returns are simple daily returns ``e[t] / e[t-1] - 1``, fractions per day.
- Drawdowns, VaR and CVaR are POSITIVE fractions of equity (0.1 = 10 %
  loss); ``drawdown()`` itself is the signed series (<= 0). empyrical reports
  VaR, CVaR and max drawdown as negative returns.
- Annualisation uses ``periods_per_year`` sessions (252): volatility and
  ratios scale by ``sqrt(252)``, CAGR compounds over ``days / 252`` years.
- Undefined statistics (zero volatility, no downside, no drawdown) are NaN;
  invalid input raises ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import date, datetime
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from fbt_pipelines.primitives.performance import ZERO_VOL, annualisation, sharpe_ratio, validate_equity

__all__ = [
    "RiskMetrics", "daily_returns", "drawdown", "historical_cvar", "historical_var",
    "max_drawdown_duration", "parametric_var", "risk_metrics", "ulcer_index", "parametric_cvar",
    "cornish_fisher_z", "cornish_fisher_var", "cornish_fisher_cvar", "turnover_notional", "turnover_contracts",
    "cost_share", "beta_correlation",
]

def _return_values(returns: pd.Series | np.ndarray, minimum: int = 1) -> np.ndarray:
    values = np.asarray(returns, dtype=float).ravel()
    if values.size < minimum:
        raise ValueError(f"need at least {minimum} returns, got {values.size}")
    if not np.isfinite(values).all():
        raise ValueError("returns contain NaN or inf; drop or fill them explicitly first")
    return values


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), e.g. 0.95; got {level!r}")
    return float(level)


def daily_returns(equity: pd.Series) -> pd.Series:
    """Simple daily returns of an equity curve.

    Returns ``equity[t] / equity[t-1] - 1`` (fraction per day), indexed by the
    later session; the undefined first value is dropped, so the result has
    ``len(equity) - 1`` rows.
    """
    validate_equity(equity)
    return equity.astype(float).pct_change().iloc[1:].rename("return")


def drawdown(equity: pd.Series) -> pd.Series:
    """Drawdown ``equity / running max - 1`` as a fraction (<= 0) per session.

    The first point is its own peak, matching empyrical's ``drawdown_series``
    anchored at the starting equity.
    """
    values = validate_equity(equity)
    return pd.Series(values / np.maximum.accumulate(values) - 1.0,
                     index=equity.index, name="drawdown")


def max_drawdown_duration(equity: pd.Series) -> int:
    """Longest run of consecutive sessions strictly below a previous peak.

    A session that regains the peak exactly ends the run. An unrecovered
    drawdown counts up to the last session. 0 if equity never falls.
    """
    values = validate_equity(equity)
    below = (values < np.maximum.accumulate(values)).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], below, [0]))))
    if edges.size == 0:
        return 0
    return int((edges[1::2] - edges[::2]).max())


def historical_var(returns: pd.Series | np.ndarray, level: float = 0.95) -> float:
    """One-day historical Value at Risk, a positive fraction of equity.

    ``-np.percentile(returns, 100 * (1 - level))`` with NumPy's default
    ``linear`` interpolation, i.e. ``-empyrical.value_at_risk(returns,
    cutoff=1 - level)``. A negative value means even the tail quantile is a
    gain.
    """
    values = _return_values(returns)
    return float(-np.percentile(values, 100.0 * (1.0 - _check_level(level))))


def historical_cvar(returns: pd.Series | np.ndarray, level: float = 0.95) -> float:
    """One-day historical Conditional VaR (expected shortfall), positive fraction.

    ``-mean(returns[returns <= -VaR])`` with VaR from :func:`historical_var`.
    Without ties at the cut-off this equals the mean of the
    ``floor((n - 1) * (1 - level)) + 1`` worst returns, i.e.
    ``-empyrical.conditional_value_at_risk(returns, cutoff=1 - level)``;
    with ties this version includes every tied return.
    """
    values = _return_values(returns)
    cut = -historical_var(values, level)
    return float(-values[values <= cut].mean())


def parametric_var(returns: pd.Series | np.ndarray, level: float = 0.95) -> float:
    """One-day Gaussian Value at Risk, a positive fraction of equity.

    ``-(mu + sigma * z_(1-level)) = sigma * z_level - mu`` with the sample
    mean ``mu`` and sample standard deviation ``sigma`` (ddof=1) of daily
    returns; ``z`` is the standard normal quantile (1.645 at 0.95).
    """
    values = _return_values(returns, minimum=2)
    z = NormalDist().inv_cdf(_check_level(level))
    return float(values.std(ddof=1) * z - values.mean())


@dataclass(frozen=True)
class RiskMetrics:
    """Summary statistics of a daily equity curve.

    Fractions of equity throughout (0.1 = 10 %). Per-day quantities:
    ``var_*``, ``cvar_*``. Annualised with ``periods_per_year`` (252):
    ``cagr``, ``annual_vol``, ``sharpe``, ``sortino``, ``calmar``.
    ``days`` is the number of daily returns (equity points - 1).
    """

    start: date
    end: date
    days: int
    total_return: float
    cagr: float
    annual_vol: float
    sharpe: float
    sortino: float
    calmar: float
    max_drawdown: float
    max_drawdown_duration: int
    var_95: float
    cvar_95: float
    var_99: float
    cvar_99: float
    skew: float
    kurtosis: float

    def as_dict(self) -> dict[str, Any]:
        """Field name -> value (``date`` for start/end, ``int``/``float`` otherwise)."""
        return dataclasses.asdict(self)


def _session_date(label: Any) -> date:
    if isinstance(label, datetime):  # includes pd.Timestamp
        return label.date()
    if isinstance(label, date):
        return label
    if isinstance(label, np.datetime64):
        return pd.Timestamp(label).date()
    raise ValueError(f"equity must be indexed by session dates, got index label {label!r}")


def risk_metrics(
    equity: pd.Series, periods_per_year: int = 252, risk_free: float = 0.0
) -> RiskMetrics:
    """Compute :class:`RiskMetrics` for a daily equity curve in USD.

    Parameters
    ----------
    equity : pd.Series
        Account value per session (USD, > 0), indexed by date, ascending.
    periods_per_year : int
        Sessions per year used for annualisation (252).
    risk_free : float
        Annual risk-free rate as a fraction (0.04 = 4 %). It is de-annualised
        as ``risk_free / periods_per_year`` per day and subtracted from daily
        returns in Sharpe (empyrical's ``risk_free``) and used as the minimum
        acceptable return in Sortino (empyrical's ``required_return``).

    Returns
    -------
    RiskMetrics
        ``sharpe = mean(r - rf) / std(r - rf, ddof=1) * sqrt(252)``;
        ``sortino = mean(r - rf) / sqrt(mean(min(r - rf, 0)^2)) * sqrt(252)``;
        ``cagr = (e_last / e_first) ** (252 / days) - 1``;
        ``calmar = cagr / max_drawdown``; ``skew`` and ``kurtosis`` (excess)
        are population moments (scipy.stats defaults, ``bias=True``).
        When the daily std is <= 1e-12 (constant returns up to float noise)
        ``annual_vol`` is 0 and Sharpe, skew and kurtosis are NaN; Sortino
        is NaN when no return is below the risk-free rate, Calmar when there
        is no drawdown; with a single return the std-based fields are NaN.

    Raises
    ------
    ValueError
        Fewer than 2 points, non-positive / non-finite equity, unsorted or
        non-date index, non-positive ``periods_per_year``.
    """
    values = validate_equity(equity)
    if int(periods_per_year) != periods_per_year or periods_per_year <= 0:
        raise ValueError(f"periods_per_year must be a positive integer, got {periods_per_year!r}")
    if not math.isfinite(risk_free):
        raise ValueError(f"risk_free must be finite, got {risk_free!r}")
    start, end = _session_date(equity.index[0]), _session_date(equity.index[-1])
    r = values[1:] / values[:-1] - 1.0
    n = r.size
    ann = annualisation(periods_per_year)
    excess = r - risk_free / periods_per_year
    std = float(r.std(ddof=1)) if n > 1 else math.nan
    flat = not std > ZERO_VOL  # also True when std is NaN (a single return)
    annual_vol = 0.0 if std <= ZERO_VOL else std * ann
    sharpe = sharpe_ratio(excess, periods_per_year)  # NaN when flat (the one zero-volatility rule)
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2)))
    sortino = float(excess.mean()) / downside * ann if downside > ZERO_VOL else math.nan

    growth = values[-1] / values[0]
    with np.errstate(over="ignore"):
        cagr = float(np.power(growth, periods_per_year / n) - 1.0)
    mdd = float(-(values / np.maximum.accumulate(values) - 1.0).min())
    calmar = cagr / mdd if mdd > 0 and math.isfinite(cagr) else math.nan

    dev = r - r.mean()
    m2 = float(np.mean(dev**2))
    skew = math.nan if flat else float(np.mean(dev**3)) / m2**1.5
    kurt = math.nan if flat else float(np.mean(dev**4)) / m2**2 - 3.0

    return RiskMetrics(
        start=start, end=end, days=n, total_return=float(growth - 1.0), cagr=cagr,
        annual_vol=annual_vol, sharpe=sharpe, sortino=sortino, calmar=calmar,
        max_drawdown=mdd, max_drawdown_duration=max_drawdown_duration(equity),
        var_95=historical_var(r, 0.95), cvar_95=historical_cvar(r, 0.95),
        var_99=historical_var(r, 0.99), cvar_99=historical_cvar(r, 0.99),
        skew=skew, kurtosis=kurt,
    )


# --- further desk metrics -----------------------------------------------------------------------------


def ulcer_index(equity: pd.Series) -> float:
    """Ulcer index (Peter Martin): root mean square drawdown, a fraction.

    ``sqrt(mean(dd[t]^2))`` over the sessions after the first, ``dd`` from
    :func:`drawdown` (fractions <= 0, the first point its own peak). It
    weighs depth and duration: a 10 % drawdown held for a year scores more
    than one recovered in a week. quantstats divides the sum by ``n - 1``
    instead of ``n`` (``n`` daily returns): theirs = ours x sqrt(n / (n - 1)).
    """
    dd = drawdown(equity).to_numpy()[1:]
    return float(np.sqrt(np.mean(dd**2)))


def parametric_cvar(returns: pd.Series | np.ndarray, level: float = 0.95) -> float:
    """One-day Gaussian expected shortfall, a positive fraction of equity.

    ``sigma * phi(z_level) / (1 - level) - mu`` (sample mean, st. dev. ddof=1).
    """
    values = _return_values(returns, minimum=2)
    nd = NormalDist()
    z = nd.inv_cdf(_check_level(level))
    return float(values.std(ddof=1) * nd.pdf(z) / (1.0 - level) - values.mean())


def _population_skew_kurt(values: np.ndarray) -> tuple[float, float]:
    dev = values - values.mean()
    m2 = float(np.mean(dev**2))
    if m2 <= ZERO_VOL**2:
        return math.nan, math.nan
    return float(np.mean(dev**3)) / m2**1.5, float(np.mean(dev**4)) / m2**2 - 3.0


def cornish_fisher_z(p: np.ndarray | float, skew: float, excess_kurtosis: float) -> np.ndarray | float:
    """Cornish-Fisher quantile of a standardised return at probability ``p``.

    ``z + (z^2 - 1) S / 6 + (z^3 - 3z) K / 24 - (2 z^3 - 5 z) S^2 / 36``
    with ``z`` the normal quantile, ``S`` skew and ``K`` excess kurtosis.
    """
    z = np.vectorize(NormalDist().inv_cdf)(p) if np.ndim(p) else NormalDist().inv_cdf(float(p))
    s, k = skew, excess_kurtosis
    return z + (z**2 - 1) * s / 6 + (z**3 - 3 * z) * k / 24 - (2 * z**3 - 5 * z) * s**2 / 36


def cornish_fisher_var(returns: pd.Series | np.ndarray, level: float = 0.95) -> float:
    """One-day Cornish-Fisher (modified) VaR, a positive fraction of equity.

    ``-(mu + sigma * z_cf(1 - level))``: the Gaussian VaR with its quantile
    corrected for the sample skew and excess kurtosis (population moments,
    as :class:`RiskMetrics`); ``mu`` the mean, ``sigma`` the st. dev. (ddof=1)
    of daily returns. NaN for constant returns.
    """
    values = _return_values(returns, minimum=3)
    s, k = _population_skew_kurt(values)
    if math.isnan(s):
        return math.nan
    zc = cornish_fisher_z(1.0 - _check_level(level), s, k)
    return float(-(values.mean() + values.std(ddof=1) * zc))


def cornish_fisher_cvar(returns: pd.Series | np.ndarray, level: float = 0.95) -> float:
    """One-day Cornish-Fisher expected shortfall, a positive fraction of equity.

    The mean of the Cornish-Fisher return quantiles over the tail,
    ``-(1 / a) * integral_0^a (mu + sigma * z_cf(p)) dp`` with ``a = 1 - level``,
    in closed form: substituting ``p = Phi(z)``, the integral of each power of
    ``z`` against the normal density up to ``c = z_a`` is ``I0 = Phi(c)``,
    ``I1 = -phi(c)``, ``I2 = Phi(c) - c phi(c)``, ``I3 = -(c^2 + 2) phi(c)``
    (the modified ES of Boudt, Peterson and Croux, 2008, without their
    second-order terms). With zero skew and kurtosis it is the Gaussian
    expected shortfall (:func:`parametric_cvar`).
    """
    values = _return_values(returns, minimum=3)
    s, k = _population_skew_kurt(values)
    if math.isnan(s):
        return math.nan
    a = 1.0 - _check_level(level)
    nd = NormalDist()
    c = nd.inv_cdf(a)
    phi = nd.pdf(c)
    i0, i1, i2, i3 = a, -phi, a - c * phi, -(c**2 + 2) * phi
    mean_z = (i1 + (i2 - i0) * s / 6 + (i3 - 3 * i1) * k / 24 - (2 * i3 - 5 * i1) * s**2 / 36) / a
    return float(-(values.mean() + values.std(ddof=1) * mean_z))


def _years(sessions: int, periods_per_year: int = 252) -> float:
    if sessions <= 0:
        raise ValueError("need at least one session")
    return sessions / periods_per_year


def turnover_notional(traded_notional_usd: float, equity: pd.Series, periods_per_year: int = 252) -> float:
    """Notional traded per year as a multiple of average equity.

    ``traded / mean(equity) / years`` with ``traded`` the sum of |contracts|
    x raw price x multiplier x FX over every fill (USD, rolls excluded: they
    do not change the position) and ``years = (len(equity) - 1) / 252``.
    2.0 means the book trades twice its average equity a year.
    """
    values = validate_equity(equity)
    return float(traded_notional_usd / values.mean() / _years(len(values) - 1, periods_per_year))


def turnover_contracts(position: pd.Series | np.ndarray, periods_per_year: int = 252) -> float:
    """One market's position turnover per year (pysystemtrade's measure).

    ``sum(|position[t] - position[t-1]|) / mean(|position|) / years`` with
    contracts per session and ``years = sessions / 252`` (the first session
    trades from flat). One-way: a round trip (open, then close) counts 2.
    NaN when the market never holds a position.
    """
    p = np.asarray(position, dtype=float)
    traded = float(np.abs(np.diff(p, prepend=0.0)).sum())
    avg = float(np.abs(p).mean()) if p.size else 0.0
    if avg <= 0:
        return math.nan
    return traded / avg / _years(p.size, periods_per_year)


def cost_share(costs_usd: float, net_pnl_usd: float) -> float:
    """Share of the gross P&L paid in costs: ``costs / (net + costs)``.

    Costs (commission, slippage and roll costs, USD, positive) and net P&L
    after costs (USD). 0.25 means a quarter of what the strategy earned
    before costs went to trading costs. NaN when the gross P&L is not
    positive (costs then exceed anything earned; compare amounts instead).
    """
    gross = net_pnl_usd + costs_usd
    return float(costs_usd / gross) if gross > 0 else math.nan


def beta_correlation(portfolio_returns: pd.Series, market_returns: pd.Series) -> tuple[float, float, int]:
    """Beta and Pearson correlation of daily portfolio returns to a market's.

    Both are simple daily returns (fractions) indexed by session; only
    sessions present in both (and finite) are used. ``beta = cov(p, m) /
    var(m)`` (same ddof), as ``empyrical.beta`` with no risk-free rate.
    Returns ``(beta, correlation, sessions used)``; NaN when fewer than 3
    common sessions or the market is constant.
    """
    joined = pd.concat([portfolio_returns.rename("p"), market_returns.rename("m")], axis=1, join="inner")
    joined = joined[np.isfinite(joined).all(axis=1)]
    n = len(joined)
    if n < 3:
        return math.nan, math.nan, n
    p, m = joined["p"].to_numpy(float), joined["m"].to_numpy(float)
    var_m = float(np.var(m, ddof=1))
    if var_m <= ZERO_VOL**2:
        return math.nan, math.nan, n
    cov = float(np.cov(p, m, ddof=1)[0, 1])
    sd_p = float(np.std(p, ddof=1))
    corr = cov / (sd_p * math.sqrt(var_m)) if sd_p > ZERO_VOL else math.nan
    return cov / var_m, corr, n
