"""Returns of the held contract from a continuous (Panama) price series.

On a Panama (back-adjusted) series the point change ``close[t] - close[t-1]``
is exact across rolls, and the held contract's raw price at the previous
close is ``close[t-1] - (close[t] - raw_close[t])``: the adjusted close minus
the bar's adjustment offset. The return of the contract actually held is the
point change over that raw price.
"""

from __future__ import annotations

import pandas as pd


def contract_returns(prices: pd.DataFrame) -> pd.Series:
    """Daily fractional return of the held contract (first bar NaN).

    ``prices`` has ``close`` (back-adjusted, points) and ``raw_close`` (the
    held contract's own price, points); returns
    ``(close[t] - close[t-1]) / (close[t-1] - (close[t] - raw_close[t]))``
    named ``ret_1``, indexed like ``prices``.
    """
    close = prices["close"].astype(float)
    offset = close - prices["raw_close"].astype(float)
    prev_raw = close.shift(1) - offset
    return (close.diff() / prev_raw).rename("ret_1")
