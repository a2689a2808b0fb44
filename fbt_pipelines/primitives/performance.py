"""Annualisation, the Sharpe ratio, the headline numbers of an equity path and the
validation of an equity curve.

One zero-volatility rule for every Sharpe in fbt: a sample whose standard
deviation (ddof 1) is at most :data:`ZERO_VOL` has no Sharpe ratio (NaN), and
so does a sample of fewer than two returns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PERIODS_PER_YEAR = 252  # trading sessions in a year: daily returns annualise with sqrt(252)
ZERO_VOL = 1e-12  # a st. dev. at or below this is "no volatility": Sharpe undefined (NaN)


def annualisation(periods_per_year: float = PERIODS_PER_YEAR) -> float:
    """sqrt(periods per year): the factor that turns a per-period Sharpe into an annual one."""
    return float(np.sqrt(periods_per_year))


def sharpe_ratio(returns: np.ndarray, periods_per_year: float = PERIODS_PER_YEAR) -> float:
    """Annualised Sharpe of simple per-period returns (fractions), zero risk-free rate:
    ``mean / std(ddof=1) x sqrt(periods_per_year)``; NaN under the zero-volatility rule."""
    r = np.asarray(returns, dtype=float)
    if len(r) < 2:
        return float("nan")
    sd = r.std(ddof=1)
    return float(r.mean() / sd * annualisation(periods_per_year)) if sd > ZERO_VOL else float("nan")


def equity_headline(equity: np.ndarray) -> dict[str, float]:
    """Sharpe, CAGR, max drawdown and ruin of a daily equity path (USD).

    Sharpe: :func:`sharpe_ratio` of the daily simple returns. An account whose
    equity reaches zero or below is *ruined*: ``ruined`` = 1, Sharpe and CAGR
    are NaN (returns on a non-positive base mean nothing) and
    ``max_drawdown`` is the loss from the peak as a fraction of it (above 1
    when more than the peak was lost).
    """
    equity = np.asarray(equity, dtype=float)
    ruined = bool((equity <= 0).any())
    max_drawdown = float(np.max(1.0 - equity / np.maximum.accumulate(equity)))
    sharpe = cagr = float("nan")
    if not ruined and len(equity) > 2:
        r = equity[1:] / equity[:-1] - 1.0
        sharpe = sharpe_ratio(r)
        cagr = float((equity[-1] / equity[0]) ** (PERIODS_PER_YEAR / len(r)) - 1.0)
    return {"sharpe": sharpe, "cagr": cagr, "max_drawdown": max_drawdown, "ruined": float(ruined)}


Moments = float | np.ndarray | pd.Series | pd.DataFrame


def sharpe_from_moments(mean: Moments, sd: Moments, periods_per_year: float = PERIODS_PER_YEAR) -> Moments:
    """Annualised Sharpe ``mean / sd x sqrt(periods_per_year)`` from a mean and a
    st. dev. (ddof 1) already computed, elementwise; NaN where ``sd`` is at most
    :data:`ZERO_VOL` or NaN (the zero-volatility rule of :func:`sharpe_ratio`).

    For rolling windows and sums over blocks, where the moments come from
    elsewhere. Scalars give a float, arrays an array, pandas objects keep
    their index. ``periods_per_year=1`` gives the per-period ratio.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = mean / sd * annualisation(periods_per_year)
    defined = sd > ZERO_VOL
    if isinstance(ratio, (pd.Series, pd.DataFrame)):
        return ratio.where(defined)
    out = np.where(defined, ratio, np.nan)
    return float(out) if out.ndim == 0 else out


def sharpe_ratios(returns: np.ndarray, periods_per_year: float = PERIODS_PER_YEAR, axis: int = 0) -> np.ndarray:
    """:func:`sharpe_ratio` of every column (``axis=0``) or row (``axis=1``) of a
    2-D array of simple per-period returns, vectorised; NaN where the sample
    has fewer than two returns or under the zero-volatility rule."""
    r = np.asarray(returns, dtype=float)
    if r.ndim != 2:
        raise ValueError(f"returns must be a 2-D array, got shape {r.shape}")
    if r.shape[axis] < 2:
        return np.full(r.shape[1 - axis], np.nan)
    return np.asarray(sharpe_from_moments(r.mean(axis=axis), r.std(axis=axis, ddof=1), periods_per_year))


def validate_equity(equity: pd.Series, what: str = "equity", min_points: int = 2) -> np.ndarray:
    """Float values of an equity curve (account value per session, USD) after checking it.

    Raises ``TypeError`` when ``equity`` is not a pandas Series, and
    ``ValueError`` naming ``what`` and the fault when it has fewer than
    ``min_points`` points, its index is not sorted ascending or repeats a
    session, or a value is not finite or not > 0 (the first such value and
    its session are named).
    """
    if not isinstance(equity, pd.Series):
        raise TypeError(f"{what} must be a pandas Series, got {type(equity).__name__}")
    if len(equity) < min_points:
        raise ValueError(f"{what} needs at least {min_points} points, got {len(equity)}")
    if not (equity.index.is_monotonic_increasing and equity.index.is_unique):
        raise ValueError(f"{what} index must be sorted ascending with no duplicate sessions")
    values = equity.to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{what} must be finite and > 0; got {float(values[i])} at {equity.index[i]}")
    return values
