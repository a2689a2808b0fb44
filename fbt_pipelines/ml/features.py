"""Features of one market from its continuous (Panama) prices.

Every feature at bar t uses data up to and including t's close only.
Returns are the held contract's own percentage returns: on a Panama series the
point change is exact, and the denominator is the held contract's raw price
at the previous close, ``close[t-1] - (close[t] - raw_close[t])``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURE_COLUMNS = ["ret_1", "ret_5", "ret_20", "vol_20", "ewmac_16_64", "dist_high_60", "days_to_expiry", "roll_yield"]
ANNUALISE = np.sqrt(252.0)


def contract_returns(prices: pd.DataFrame) -> pd.Series:
    """Daily fractional return of the held contract (first bar NaN)."""
    close = prices["close"].astype(float)
    offset = close - prices["raw_close"].astype(float)
    prev_raw = close.shift(1) - offset
    return (close.diff() / prev_raw).rename("ret_1")


def _compound(r: pd.Series, window: int) -> pd.Series:
    return np.exp(np.log1p(r).rolling(window).sum()) - 1.0


def build_features(prices: pd.DataFrame, carry: pd.Series | None = None) -> pd.DataFrame:
    """Feature frame: root, ts and :data:`FEATURE_COLUMNS`.

    - ``ret_k``: compounded held-contract return over the last k bars (fraction)
    - ``vol_20``: annualised st. dev. of daily returns over 20 bars (fraction)
    - ``ewmac_16_64``: EWMA(16) - EWMA(64) of the adjusted close, divided by
      the 25-bar st. dev. of daily point changes (a unit-free trend forecast)
    - ``dist_high_60``: close over its 60-bar high, minus 1 (<= 0)
    - ``days_to_expiry``: calendar days to the held contract's last trade
    - ``roll_yield``: annualised carry of the held contract against the next
      (``carry``, from :func:`fbt_pipelines.futures.back_adjust.roll_yield`;
      NaN when not given)
    """
    close = prices["close"].astype(float)
    r = contract_returns(prices)
    point_vol = close.diff().rolling(25).std()
    ewmac = (close.ewm(span=16, adjust=False).mean() - close.ewm(span=64, adjust=False).mean()) / point_vol
    return pd.DataFrame({
        "root": prices["root"].to_numpy(),
        "ts": prices["ts"].to_numpy(),
        "ret_1": r.to_numpy(),
        "ret_5": _compound(r, 5).to_numpy(),
        "ret_20": _compound(r, 20).to_numpy(),
        "vol_20": (r.rolling(20).std() * ANNUALISE).to_numpy(),
        "ewmac_16_64": ewmac.to_numpy(),
        "dist_high_60": (close / close.rolling(60).max() - 1.0).to_numpy(),
        "days_to_expiry": prices["days_to_expiry"].astype(float).to_numpy(),
        "roll_yield": np.full(len(prices), np.nan) if carry is None else np.asarray(carry, dtype=float),
    })


def forward_return_label(prices: pd.DataFrame, horizon: int = 5) -> pd.Series:
    """1.0 if the held-contract return over the next ``horizon`` bars is > 0,
    0.0 if not, NaN where the horizon runs past the data. The label of bar t
    uses bars t+1..t+horizon: it is a target, never a feature."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    r = contract_returns(prices)
    fwd = (np.exp(np.log1p(r).rolling(horizon).sum()) - 1.0).shift(-horizon)
    return pd.Series(np.where(fwd.isna(), np.nan, (fwd > 0).astype(float)), index=prices.index, name="label")
