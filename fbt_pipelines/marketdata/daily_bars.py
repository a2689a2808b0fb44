"""Daily bars built from intraday bars, one per contract and trading session.

A session's daily bar: open = the first bar's open, high = the highest high,
low = the lowest low, close = the last bar's close (the last trade before the
session's close, not the exchange's settlement price), volume = the sum,
open interest = the last known value in the session (NaN if none). It is
stamped like every daily bar fbt stores: 00:00 UTC of the trading day (LEAN's
daily files and the sample data use the same stamp).

Bars outside every session (weekend, holiday, the maintenance or a midday
break; see :func:`fbt_pipelines.marketdata.sessions.assign_sessions`) are not
folded into any day: they come back as ``quarantined`` rows with a reason.
Prices are in points, volume and open interest in contracts, time stamps UTC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.errors import DataError
from fbt_pipelines.marketdata.sessions import utc_ns, assign_sessions

REQUIRED = ("contract", "ts", "open", "high", "low", "close", "volume")
DAILY_COLUMNS = ["contract", "ts", "open", "high", "low", "close", "volume", "open_interest", "bars"]


@dataclass(frozen=True)
class SessionBars:
    """Result of :func:`daily_from_minute`.

    ``daily``: :data:`DAILY_COLUMNS` (plus ``root`` when the input has one),
    sorted by contract and ts; ``bars`` is the number of intraday bars folded
    in. ``quarantined``: the input rows outside every session, their columns
    unchanged plus ``reason``.
    """

    daily: pd.DataFrame
    quarantined: pd.DataFrame


def _check(bars: pd.DataFrame, source: str) -> None:
    missing = [c for c in REQUIRED if c not in bars.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(missing)}")
    for col in ("open", "high", "low", "close", "volume"):
        values = pd.to_numeric(bars[col], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            row = bars.index[bad[0]]
            raise DataError(f"{source}: row {row!r} ({bars['contract'].iloc[bad[0]]} "
                            f"{bars['ts'].iloc[bad[0]]}): {col} is not a finite number "
                            f"({len(bad)} such row(s)); validate intraday bars before building daily ones")


def daily_from_minute(minute_bars: pd.DataFrame, market: str | ContractSpec,
                      source: str = "minute bars") -> SessionBars:
    """Daily bars per contract and trading session from ``minute_bars``.

    ``minute_bars`` has ``contract``, ``ts`` (UTC; tz-naive is read as
    UTC), ``open``, ``high``, ``low``, ``close`` (points), ``volume`` and
    optionally ``open_interest`` (contracts) and ``root``; any interval
    below a day works. Rows need not be sorted. A NaN/inf price or volume
    raises :class:`DataError` naming ``source`` and the row (validate first);
    a row whose ``ts`` is NaT is quarantined ("ts is not a timestamp").
    ``market`` (a root or spec) chooses the calendar and hours. Vectorised:
    one sort, one searchsorted, ``reduceat`` per column.
    """
    _check(minute_bars, source)
    assigned = assign_sessions(minute_bars["ts"], market)
    inside = assigned.inside
    quarantined = minute_bars.loc[~inside].copy()
    quarantined["reason"] = assigned.reason[~inside]

    frame = minute_bars.loc[inside]
    days = assigned.day[inside]
    ts = utc_ns(frame["ts"])
    contract = frame["contract"].astype(str).to_numpy()
    order = np.lexsort((ts, days, contract))
    contract, days, ts = contract[order], days[order], ts[order]
    cols = {c: frame[c].to_numpy(dtype="float64")[order] for c in ("open", "high", "low", "close", "volume")}
    oi = (frame["open_interest"].to_numpy(dtype="float64", na_value=np.nan)[order]
          if "open_interest" in frame.columns else np.full(len(frame), np.nan))
    n = len(contract)
    if n == 0:
        return SessionBars(pd.DataFrame({c: [] for c in DAILY_COLUMNS}), quarantined)
    change = np.ones(n, dtype=bool)
    change[1:] = (contract[1:] != contract[:-1]) | (days[1:] != days[:-1])
    starts = np.flatnonzero(change)
    ends = np.r_[starts[1:], n] - 1
    # last known open interest: the last non-NaN at or before each row, within the group
    known = np.where(np.isnan(oi), -1, np.arange(n))
    last_known = np.maximum.accumulate(known)
    pick = last_known[ends]
    oi_last = np.where(pick >= starts, oi[np.clip(pick, 0, None)], np.nan)
    daily = pd.DataFrame({
        "contract": contract[starts],
        "ts": pd.DatetimeIndex(days[starts].astype("datetime64[ns]")).tz_localize("UTC"),
        "open": cols["open"][starts],
        "high": np.maximum.reduceat(cols["high"], starts),
        "low": np.minimum.reduceat(cols["low"], starts),
        "close": cols["close"][ends],
        "volume": np.add.reduceat(cols["volume"], starts),
        "open_interest": oi_last,
        "bars": ends - starts + 1,
    }, columns=DAILY_COLUMNS)
    if "root" in frame.columns:
        daily.insert(1, "root", frame["root"].to_numpy()[order][starts])
    return SessionBars(daily, quarantined)
