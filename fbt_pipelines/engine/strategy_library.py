"""More strategy templates: trend (Donchian, EWMAC), carry, mean reversion.

Each is a pure function of arrays known at a bar's close. Signals are in units
of a standard risk position (+1 = long at the volatility target, -1 short);
forecast-style strategies (EWMAC, carry) follow pysystemtrade: a forecast
scaled to an average absolute value of 10, capped at +-20, divided by 10, so
the signal lies in [-2, +2].
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fbt_pipelines.engine.strategies import register_strategy
from fbt_pipelines.errors import StrategyError
from fbt_pipelines.primitives.indicators import rsi
from fbt_pipelines.primitives.performance import annualisation

FORECAST_CAP = 20.0
# pysystemtrade's forecast scalars for EWMAC(fast, 4 x fast) on vol-normalised prices
EWMAC_SCALARS = {2: 10.6, 4: 7.5, 8: 5.3, 16: 3.75, 32: 2.65, 64: 1.87}


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise StrategyError(message)


def _price_vol(close: np.ndarray, span: int = 35) -> pd.Series:
    """EWMA st. dev. of daily point changes (points per day)."""
    return pd.Series(close).diff().ewm(span=span, min_periods=10).std()


def ewmac_forecast(close: np.ndarray, fast: int) -> np.ndarray:
    """Scaled, capped EWMAC(fast, 4 x fast) forecast in [-20, 20] (NaN in warm-up)."""
    s = pd.Series(np.asarray(close, dtype=float))
    raw = s.ewm(span=fast, adjust=False).mean() - s.ewm(span=4 * fast, adjust=False).mean()
    scalar = EWMAC_SCALARS.get(fast, 3.75 * np.sqrt(16 / fast))
    forecast = raw / _price_vol(s.to_numpy()) * scalar
    return forecast.clip(-FORECAST_CAP, FORECAST_CAP).to_numpy()


@register_strategy("donchian_breakout", "Long after a close above the highest close of the last `window` bars, "
                   "short after a close below the lowest; hold until the opposite breakout.")
def donchian_breakout(close: np.ndarray, window: int = 55) -> np.ndarray:
    """Stop-and-reverse channel breakout on closes (the channel excludes the current bar)."""
    _check(isinstance(window, int) and window >= 2, f"donchian_breakout: window must be an integer >= 2, got {window!r}")
    s = pd.Series(np.asarray(close, dtype=float))
    upper = s.shift(1).rolling(window).max()
    lower = s.shift(1).rolling(window).min()
    event = pd.Series(np.where(s > upper, 1.0, np.where(s < lower, -1.0, np.nan)))
    return event.ffill().fillna(0.0).to_numpy().astype(np.int64)


@register_strategy("ewmac", "EWMAC trend: EWMA(fast) - EWMA(4 x fast) of the price over its volatility, "
                   "scaled and capped as pysystemtrade does; signal = forecast / 10.")
def ewmac(close: np.ndarray, fast: int = 16) -> np.ndarray:
    _check(isinstance(fast, int) and fast in EWMAC_SCALARS,
           f"ewmac: fast must be one of {sorted(EWMAC_SCALARS)}, got {fast!r}")
    return np.nan_to_num(ewmac_forecast(close, fast) / 10.0)


@register_strategy("ewmac_multi", "Equal-weight blend of EWMAC 8/32, 16/64, 32/128 and 64/256 forecasts "
                   "(x forecast diversification multiplier, re-capped).")
def ewmac_multi(close: np.ndarray, fdm: float = 1.1) -> np.ndarray:
    _check(isinstance(fdm, (int, float)) and 1.0 <= fdm <= 2.0, f"ewmac_multi: fdm must be in [1, 2], got {fdm!r}")
    stack = np.vstack([ewmac_forecast(close, f) for f in (8, 16, 32, 64)])
    # mean of the available forecasts (NaN in the common warm-up) without
    # np.nanmean's "Mean of empty slice" RuntimeWarning
    count = (~np.isnan(stack)).sum(axis=0)
    blend = np.where(count > 0, np.nansum(stack, axis=0) / np.maximum(count, 1), np.nan) * fdm
    return np.nan_to_num(np.clip(blend, -FORECAST_CAP, FORECAST_CAP) / 10.0)


@register_strategy("carry", "Carry: long when the held contract's annualised roll yield is positive "
                   "(backwardation), short in contango; forecast = roll yield / annual vol x scalar.",
                   inputs=("roll_yield", "close", "raw_close"))
def carry(roll_yield: np.ndarray, close: np.ndarray, raw_close: np.ndarray, scalar: float = 30.0) -> np.ndarray:
    """Forecast = roll_yield / annualised return vol x ``scalar``, capped, / 10."""
    _check(isinstance(scalar, (int, float)) and scalar > 0, f"carry: scalar must be > 0, got {scalar!r}")
    vol = (_price_vol(np.asarray(close, dtype=float)) / pd.Series(raw_close)).to_numpy() * annualisation()
    forecast = np.clip(np.asarray(roll_yield, dtype=float) / vol * scalar, -FORECAST_CAP, FORECAST_CAP)
    return np.nan_to_num(forecast / 10.0)


@register_strategy("rsi_reversion", "Mean reversion: long when RSI(window) falls below `low`, short above `high`, "
                   "flat again when RSI crosses 50.")
def rsi_reversion(close: np.ndarray, window: int = 14, low: float = 30.0, high: float = 70.0) -> np.ndarray:
    _check(isinstance(window, int) and window >= 2, f"rsi_reversion: window must be an integer >= 2, got {window!r}")
    _check(0 < low < 50 < high < 100, f"rsi_reversion: need 0 < low < 50 < high < 100, got low={low!r}, high={high!r}")
    r = rsi(close, window)
    event = np.where(r < low, 1.0, np.where(r > high, -1.0, np.nan))
    state = pd.Series(event)
    # flat once RSI crosses back through 50
    prev = pd.Series(r).shift(1)
    cross = ((prev < 50) & (pd.Series(r) >= 50)) | ((prev > 50) & (pd.Series(r) <= 50))
    state[cross & state.isna()] = 0.0
    return state.ffill().fillna(0.0).to_numpy().astype(np.int64)


@register_strategy("bollinger_reversion", "Mean reversion: long when the close is `k` st. devs below its `window` "
                   "mean, short when above; flat when it returns to the mean.")
def bollinger_reversion(close: np.ndarray, window: int = 20, k: float = 2.0) -> np.ndarray:
    _check(isinstance(window, int) and window >= 2, f"bollinger_reversion: window must be an integer >= 2, got {window!r}")
    _check(isinstance(k, (int, float)) and k > 0, f"bollinger_reversion: k must be > 0, got {k!r}")
    s = pd.Series(np.asarray(close, dtype=float))
    z = (s - s.rolling(window).mean()) / s.rolling(window).std()
    event = pd.Series(np.where(z < -k, 1.0, np.where(z > k, -1.0, np.nan)))
    prev = z.shift(1)
    back = ((prev < 0) & (z >= 0)) | ((prev > 0) & (z <= 0))
    event[back & event.isna()] = 0.0
    return event.ffill().fillna(0.0).to_numpy().astype(np.int64)


@register_strategy("buy_and_hold", "Always long one standard risk position (the baseline every strategy must beat).")
def buy_and_hold(close: np.ndarray) -> np.ndarray:
    return np.ones(len(close), dtype=np.int64)
