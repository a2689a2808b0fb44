"""Continuous contracts from per-contract bars and a roll schedule."""

from __future__ import annotations

from enum import Enum
from typing import Sequence

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.contracts import Contract
from fbt_pipelines.errors import RollError
from fbt_pipelines.futures.roll_schedule import first_contract, validate_roll_schedule

CONTINUOUS_COLUMNS = [
    "root", "method", "ts", "contract", "open", "high", "low", "close", "raw_close",
    "volume", "open_interest", "days_to_expiry", "roll",
]


class AdjustmentMethod(str, Enum):
    """How earlier segments are shifted so the series has no roll gaps.

    - ``none``:   raw prices stitched; the roll gap stays in the series.
    - ``panama``: difference back-adjustment. Each earlier segment gets
      ``+ sum(gap_j)`` over all later rolls j, ``gap = to_close - from_close``
      on the roll date. Point changes inside a segment equal the raw
      contract's, so P&L in points x multiplier is exact; the level can go
      non-positive far back.
    - ``ratio``:  multiplicative back-adjustment. Each earlier segment is
      multiplied by ``prod(ratio_j)``, ``ratio = to_close / from_close``.
      Percentage changes equal the raw contract's; point changes do not.

    - ``forward_panama``: difference adjustment carried forward. Each later
      segment gets ``- sum(gap_j)`` over all earlier rolls j: the first segment
      equals raw prices, the series never rewrites history when a new roll
      arrives, and point changes are as exact as Panama's. The last segment
      is *not* the current contract's raw price.

    In ``none``, ``panama`` and ``ratio`` the last segment equals the raw prices
    of the current contract.
    """

    NONE = "none"
    PANAMA = "panama"
    RATIO = "ratio"
    FORWARD_PANAMA = "forward_panama"


def stitch_segments(
    bars: pd.DataFrame, schedule: pd.DataFrame, contracts: Sequence[Contract]
) -> pd.DataFrame:
    """Raw stitched series: for each session the contract held per the schedule.

    ``bars`` are long per-contract bars (contract, ts, open, high, low, close,
    volume, open_interest). Returns one row per session with the held
    contract's raw OHLC and a ``segment`` number (0 = oldest).
    """
    validate_roll_schedule(schedule)
    if bars.empty:
        raise RollError("no bars to build a continuous series from")
    closes = bars.pivot(index="ts", columns="contract", values="close").sort_index()
    start = first_contract(schedule, closes, contracts)
    sessions = closes.index
    roll_ts = pd.DatetimeIndex(pd.to_datetime(schedule["roll_date"]))
    if roll_ts.tz is None and sessions.tz is not None:
        roll_ts = roll_ts.tz_localize(sessions.tz)
    # sessions up to and including a roll date stay in the old segment
    segment = np.searchsorted(roll_ts.values, sessions.values, side="left")
    held = np.array([start] + list(schedule["to_contract"]), dtype=object)[segment]
    frame = pd.DataFrame({"ts": sessions, "contract": held, "segment": segment})
    merged = frame.merge(bars, on=["ts", "contract"], how="left")
    # Sessions before the first contract trades, or gaps in the held contract: drop,
    # except they must not hide a missing roll-date price (validated in the schedule).
    merged = merged.dropna(subset=["close"]).reset_index(drop=True)
    return merged


def _rolls_at_close(schedule: pd.DataFrame, ts: pd.DatetimeIndex, seg: np.ndarray) -> np.ndarray:
    """True where the schedule's next roll (index ``seg``) is dated ``ts``.

    The last row of data that END on a roll date still rolls at that close.
    """
    roll_ts = pd.DatetimeIndex(pd.to_datetime(schedule["roll_date"]))
    if roll_ts.tz is None and ts.tz is not None:
        roll_ts = roll_ts.tz_localize(ts.tz)
    pending = seg < len(roll_ts)
    out = np.zeros(len(ts), dtype=bool)
    out[pending] = roll_ts[seg[pending]] == ts[pending]
    return out


def back_adjust(
    bars: pd.DataFrame,
    schedule: pd.DataFrame,
    contracts: Sequence[Contract],
    method: AdjustmentMethod | str = AdjustmentMethod.PANAMA,
) -> pd.DataFrame:
    """Continuous prices of one market by ``method`` (see :class:`AdjustmentMethod`).

    Returns :data:`CONTINUOUS_COLUMNS`: adjusted OHLC (points), the held
    contract, its raw close, volume and open interest, calendar days to its
    last trade, and ``roll`` = True on each roll date (the last session in
    the old contract; the switch happens at its close).
    """
    method = AdjustmentMethod(method)
    stitched = stitch_segments(bars, schedule, contracts)
    n_rolls = len(schedule)
    seg = stitched["segment"].to_numpy()
    if method is AdjustmentMethod.PANAMA:
        gaps = schedule["gap"].to_numpy(float)
        later_sum = np.concatenate([np.cumsum(gaps[::-1])[::-1], [0.0]])  # sum of gaps of rolls >= k
        shift = later_sum[seg]
        adjust = lambda x: x + shift  # noqa: E731
    elif method is AdjustmentMethod.RATIO:
        ratios = schedule["ratio"].to_numpy(float)
        if n_rolls and not (ratios > 0).all():  # also NaN: from_close == 0 gives ratio NaN
            raise RollError("ratio adjustment needs positive prices on every roll date")
        later_prod = np.concatenate([np.cumprod(ratios[::-1])[::-1], [1.0]])
        factor = later_prod[seg]
        adjust = lambda x: x * factor  # noqa: E731
    elif method is AdjustmentMethod.FORWARD_PANAMA:
        gaps = schedule["gap"].to_numpy(float)
        earlier_sum = np.concatenate([[0.0], np.cumsum(gaps)])  # sum of gaps of rolls < k
        fshift = -earlier_sum[seg]
        adjust = lambda x: x + fshift  # noqa: E731
    else:
        adjust = lambda x: x  # noqa: E731
    last_trade = {c.contract_id: pd.Timestamp(c.last_trade, tz="UTC") for c in contracts}
    ts = pd.DatetimeIndex(stitched["ts"])
    expiry = pd.DatetimeIndex(stitched["contract"].map(last_trade))
    out = pd.DataFrame({
        "root": stitched["root"],
        "method": method.value,
        "ts": stitched["ts"],
        "contract": stitched["contract"],
        "open": adjust(stitched["open"].to_numpy(float)),
        "high": adjust(stitched["high"].to_numpy(float)),
        "low": adjust(stitched["low"].to_numpy(float)),
        "close": adjust(stitched["close"].to_numpy(float)),
        "raw_close": stitched["close"].to_numpy(float),
        "volume": stitched["volume"],
        "open_interest": stitched["open_interest"],
        "days_to_expiry": (expiry - ts).days.astype("int64"),
        "roll": np.r_[seg[1:] != seg[:-1], _rolls_at_close(schedule, ts[-1:], seg[-1:])],
    })
    return out[CONTINUOUS_COLUMNS]


def roll_continuity_errors(continuous: pd.DataFrame, bars: pd.DataFrame, tolerance: float = 1e-9) -> int:
    """Number of bars where the continuous series does not move like the held contract.

    Bars where the continuous series' point change differs from the held
    contract's own change (Panama) -- including the bar after each roll, which
    must move like the new contract, not jump by the roll gap.

    For bar t held in contract c: ``close[t] - close[t-1]`` must equal
    ``raw(c, t) - raw(c, t-1)``. Returns the number of violating bars.
    """
    raw = bars.pivot(index="ts", columns="contract", values="close")
    ts = pd.DatetimeIndex(continuous["ts"])
    held = continuous["contract"].to_numpy()
    pos = raw.index.get_indexer(ts)
    col = raw.columns.get_indexer(held)
    values = raw.to_numpy()
    now = values[pos, col]
    prev_pos = np.r_[-1, pos[:-1]]
    prev = np.where(prev_pos >= 0, values[np.maximum(prev_pos, 0), col], np.nan)
    expected = now[1:] - prev[1:]
    actual = np.diff(continuous["close"].to_numpy(float))
    bad = ~np.isclose(actual, expected, rtol=0, atol=tolerance) & np.isfinite(expected)
    return int(bad.sum() + (~np.isfinite(expected)).sum())


def roll_yield(bars: pd.DataFrame, continuous: pd.DataFrame, contracts: Sequence[Contract]) -> pd.Series:
    """Annualised roll yield (carry) of the held contract, per session.

    ``(held_close - next_close) / next_close * 365 / days_between_expiries``,
    where *next* is the first contract expiring after the held one that has a
    close that session: > 0 in backwardation (a long position earns the roll),
    < 0 in contango. NaN where no later contract trades. Uses only prices of
    that session (no look-ahead).
    """
    closes = bars.pivot(index="ts", columns="contract", values="close")
    order = sorted(c for c in contracts if c.contract_id in closes.columns)
    expiry = {c.contract_id: pd.Timestamp(c.last_trade) for c in order}
    later = {c.contract_id: [d.contract_id for d in order if d.last_trade > c.last_trade] for c in order}
    out = np.full(len(continuous), np.nan)
    for i, (ts, held) in enumerate(zip(continuous["ts"], continuous["contract"])):
        row = closes.loc[ts]
        held_close = row.get(held, np.nan)
        for nxt in later.get(held, []):
            nc = row.get(nxt, np.nan)
            if np.isfinite(nc) and nc > 0 and np.isfinite(held_close):
                days = (expiry[nxt] - expiry[held]).days
                out[i] = (held_close - nc) / nc * 365.0 / days
                break
    return pd.Series(out, index=continuous.index, name="roll_yield")
