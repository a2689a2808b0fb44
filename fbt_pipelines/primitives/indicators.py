"""Wilder's smoothing and the indicators built on it: RSI and ATR.

Textbook Wilder, as TA-Lib: the first average is the simple mean of the
first ``window`` values of the input series (which starts with the
undefined value of a difference at bar 0), then
``avg_t = avg_{t-1} + (x_t - avg_{t-1}) / window``, i.e. an exponential
average with ``alpha = 1 / window`` seeded by that simple mean.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def wilder_mean(x: pd.Series, window: int) -> pd.Series:
    """Wilder's smoothing of ``x`` (x[0] is the NaN of a diff).

    The simple mean of the first ``window`` values x[1..window], then
    avg = avg + (x - avg) / window.

    NaN at bars 0..window-1 (not enough values yet); same index as ``x``.
    """
    if window < 1:
        raise ValueError(f"Wilder window must be >= 1, got {window!r}")
    seeded = x.copy()
    seeded.iloc[: window + 1] = np.nan
    if len(x) > window:
        seeded.iloc[window] = x.iloc[1 : window + 1].mean()
    return seeded.ewm(alpha=1 / window, adjust=False).mean()


def rsi(close: np.ndarray, window: int) -> np.ndarray:
    """Wilder's RSI (0-100) of closes; NaN until ``window`` changes exist.

    Textbook Wilder (as TA-Lib): average gain/loss seeded with the simple mean
    of the first ``window`` changes, then smoothed with alpha = 1/window; 50
    where the price has not moved at all (no gain, no loss).
    """
    d = pd.Series(np.asarray(close, dtype=float)).diff()
    up = wilder_mean(d.clip(lower=0), window)
    down = wilder_mean(-d.clip(upper=0), window)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 100 - 100 / (1 + up / down)
    out = out.where(down != 0, 100.0).where((up != 0) | (down != 0), 50.0)
    return out.where(up.notna()).to_numpy()


def true_range(high: pd.Series, low: pd.Series, close: pd.Series) -> pd.Series:
    """True range of bar t (t >= 1) in points; NaN at bar 0 (no previous close).

    ``max(high_t, close_{t-1}) - min(low_t, close_{t-1})``. Positional (0..n-1)
    index.
    """
    h, lo, c = (s.astype(float).reset_index(drop=True) for s in (high, low, close))
    prev = c.shift(1)
    top = pd.concat([h, prev], axis=1).max(axis=1, skipna=False)
    bottom = pd.concat([lo, prev], axis=1).min(axis=1, skipna=False)
    return top - bottom


def wilder_atr(high: pd.Series, low: pd.Series, close: pd.Series, window: int = 14) -> pd.Series:
    """Wilder's average true range in points (as TA-Lib ``ATR``).

    :func:`wilder_mean` of :func:`true_range`: the simple mean of the first
    ``window`` true ranges (bars 1..window), then
    ``atr_t = atr_{t-1} + (tr_t - atr_{t-1}) / window``; NaN before bar
    ``window``. Indexed like ``high``. On a Panama series the previous close
    is in the held contract's terms, so the range across a roll is the new
    contract's own.
    """
    return wilder_mean(true_range(high, low, close), window).set_axis(high.index)
