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

__all__ = [
    "RiskMetrics", "daily_returns", "drawdown", "historical_cvar", "historical_var",
    "max_drawdown_duration", "parametric_var", "risk_metrics",
]

# Daily return std (or downside deviation) at or below this is float noise of a
# constant-return curve (e.g. compounding cash), treated as exactly zero.
_ZERO_VOL = 1e-12


def _equity_values(equity: pd.Series) -> np.ndarray:
    """Validated float values of an equity curve; raises ``ValueError``."""
    if not isinstance(equity, pd.Series):
        raise TypeError(f"equity must be a pandas Series, got {type(equity).__name__}")
    if len(equity) < 2:
        raise ValueError(f"equity needs at least 2 points, got {len(equity)}")
    if not (equity.index.is_monotonic_increasing and equity.index.is_unique):
        raise ValueError("equity index must be sorted ascending with no duplicate sessions")
    values = equity.to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"equity must be finite and > 0; got {values[i]!r} at {equity.index[i]!r}"
        )
    return values


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
    _equity_values(equity)
    return equity.astype(float).pct_change().iloc[1:].rename("return")


def drawdown(equity: pd.Series) -> pd.Series:
    """Drawdown ``equity / running max - 1`` as a fraction (<= 0) per session.

    The first point is its own peak, matching empyrical's ``drawdown_series``
    anchored at the starting equity.
    """
    values = _equity_values(equity)
    return pd.Series(values / np.maximum.accumulate(values) - 1.0,
                     index=equity.index, name="drawdown")


def max_drawdown_duration(equity: pd.Series) -> int:
    """Longest run of consecutive sessions strictly below a previous peak.

    A session that regains the peak exactly ends the run. An unrecovered
    drawdown counts up to the last session. 0 if equity never falls.
    """
    values = _equity_values(equity)
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
    values = _equity_values(equity)
    if int(periods_per_year) != periods_per_year or periods_per_year <= 0:
        raise ValueError(f"periods_per_year must be a positive integer, got {periods_per_year!r}")
    if not math.isfinite(risk_free):
        raise ValueError(f"risk_free must be finite, got {risk_free!r}")
    start, end = _session_date(equity.index[0]), _session_date(equity.index[-1])
    r = values[1:] / values[:-1] - 1.0
    n = r.size
    ann = math.sqrt(periods_per_year)
    excess = r - risk_free / periods_per_year
    std = float(r.std(ddof=1)) if n > 1 else math.nan
    flat = not std > _ZERO_VOL  # also True when std is NaN (a single return)
    annual_vol = 0.0 if std <= _ZERO_VOL else std * ann
    sharpe = math.nan if flat else float(excess.mean() / excess.std(ddof=1)) * ann
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2)))
    sortino = float(excess.mean()) / downside * ann if downside > _ZERO_VOL else math.nan

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
