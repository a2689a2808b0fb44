"""Correlations of daily returns (markets or strategies): numbers only.

Inputs are simple daily returns (fractions per session, e.g. 0.01 = +1 %),
indexed by session date (UTC). Drawing (heat maps) lives in
``fbt_pipelines.reports``; this module only computes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["correlation_matrix", "rolling_correlation", "correlation_table", "average_pairwise"]

_METHODS = ("pearson", "spearman", "kendall")


def correlation_matrix(returns: pd.DataFrame, method: str = "pearson", min_periods: int = 20) -> pd.DataFrame:
    """Full-period correlation matrix of daily returns.

    Parameters
    ----------
    returns
        One column per market (or strategy), one row per session; simple daily
        returns as fractions. NaN where a column has no session (the pair uses
        only sessions where both are present, as :meth:`pandas.DataFrame.corr`).
    method
        ``pearson`` (linear), ``spearman`` (rank) or ``kendall`` (tau).
    min_periods
        Fewest common sessions for a pair; fewer gives NaN.

    Returns
    -------
    pd.DataFrame
        Square, symmetric, columns x columns, 1.0 on the diagonal (NaN for a
        column that never moves), values in [-1, 1].
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if not isinstance(returns, pd.DataFrame) or returns.shape[1] == 0:
        raise ValueError("returns must be a DataFrame with at least one column")
    values = returns.astype(float)
    if np.isinf(values.to_numpy()).any():
        raise ValueError("returns contain inf; drop or fill them first")
    return values.corr(method=method, min_periods=min_periods)


def rolling_correlation(a: pd.Series, b: pd.Series, window: int) -> pd.Series:
    """Pearson correlation of two daily-return series over a trailing window.

    Both series are aligned on their common sessions first (inner join); the
    value at session t uses the ``window`` common sessions ending at t
    (inclusive), NaN for the first ``window - 1`` sessions or when either
    series is constant over the window.
    """
    if window < 2:
        raise ValueError(f"window must be >= 2 sessions, got {window}")
    joined = pd.concat([a.astype(float).rename("a"), b.astype(float).rename("b")], axis=1, join="inner").dropna()
    out = joined["a"].rolling(window, min_periods=window).corr(joined["b"])
    # A constant window gives +-inf or garbage from float noise: report NaN.
    sd_a = joined["a"].rolling(window).std()
    sd_b = joined["b"].rolling(window).std()
    out[(sd_a <= 1e-15) | (sd_b <= 1e-15)] = np.nan
    return out.rename(f"corr_{window}")


def average_pairwise(corr: pd.DataFrame) -> float:
    """Mean of the off-diagonal entries of a correlation matrix (NaN ignored)."""
    values = corr.to_numpy(dtype=float)
    n = values.shape[0]
    if n < 2:
        return float("nan")
    mask = ~np.eye(n, dtype=bool)
    return float(np.nanmean(values[mask]))


def correlation_table(corr: pd.DataFrame) -> pd.DataFrame:
    """The upper triangle of a correlation matrix as rows (a, b, correlation).

    Sorted by correlation descending: what a risk table shows.
    """
    cols = list(corr.columns)
    rows = [(cols[i], cols[j], float(corr.iloc[i, j])) for i in range(len(cols)) for j in range(i + 1, len(cols))]
    table = pd.DataFrame(rows, columns=["a", "b", "correlation"])
    return table.sort_values("correlation", ascending=False, kind="stable").reset_index(drop=True)
