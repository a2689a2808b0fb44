"""Every session of a market 1990-2040 as sorted UTC arrays, for searchsorted.

Built once per (calendar, hours) and cached: session labels (the trading
day), opens and closes in UTC after the regular hours are applied (see
:mod:`fbt_pipelines.marketdata.session_hours`), and the trading *segments*
(a session without a break is one segment, with a break two), sorted and
non-overlapping, so that a bar at UTC time t is inside a session iff
``seg_start[j] <= t < seg_end[j]`` for ``j = searchsorted(seg_start, t) - 1``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import exchange_calendars as xcals
import numpy as np
import pandas as pd

from fbt_pipelines.marketdata.session_hours import TradingHours, parse_hours

TABLE_START = "1990-01-01"
TABLE_END = "2040-12-31"  # exchange_calendars projects holidays from the rules this far
NS_PER_DAY = 86_400_000_000_000


@dataclass(frozen=True)
class SessionTable:
    """Sessions of one (calendar, hours); times are int64 ns since the epoch, UTC.

    ``labels`` are the trading days as ``datetime64[D]``; ``opens``/``closes``
    bound each session; ``seg_start``/``seg_end``/``seg_session`` are its
    trading segments (the session's row in ``labels``). ``hours`` are the
    regular hours (the calendar's own when the market sets none) and ``tz`` the
    calendar's time zone, used to say why a bar is outside.
    """

    calendar: str
    tz: str
    hours: TradingHours
    labels: np.ndarray
    opens: np.ndarray
    closes: np.ndarray
    seg_start: np.ndarray
    seg_end: np.ndarray
    seg_session: np.ndarray


def _ns(ts: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """UTC (or NaT) time stamps as int64 ns; NaT -> the int64 minimum."""
    idx = pd.DatetimeIndex(ts)
    idx = idx.tz_convert("UTC").tz_localize(None) if idx.tz is not None else idx
    return idx.as_unit("ns").asi8


def _local_to_utc(local: pd.DatetimeIndex, tz: str) -> np.ndarray:
    """Naive local wall times -> int64 ns UTC.

    A wall time in a DST gap moves forward; an ambiguous one is taken as the
    first (daylight-time) instant.
    """
    return _ns(local.tz_localize(tz, ambiguous=np.ones(len(local), dtype=bool), nonexistent="shift_forward"))


def _clock(day: pd.DatetimeIndex, t: dt.time, offset_days: int = 0) -> pd.DatetimeIndex:
    return day + pd.Timedelta(days=offset_days, hours=t.hour, minutes=t.minute)


def _own_hours(cal: xcals.ExchangeCalendar) -> TradingHours:
    """The calendar's current regular hours (its last open/close/break times)."""
    bs = cal.break_start_times[-1][1] if cal.break_start_times else None
    be = cal.break_end_times[-1][1] if cal.break_end_times else None
    return TradingHours(cal.open_times[-1][1], cal.close_times[-1][1], int(cal.open_offset), bs, be)


@lru_cache(maxsize=16)
def session_table(calendar: str, hours: str | None) -> SessionTable:
    """The cached :class:`SessionTable` of ``calendar`` cut to ``hours``.

    ``hours`` in :func:`~fbt_pipelines.marketdata.session_hours.parse_hours`'
    format, or None for the calendar's own times.
    """
    cal = xcals.get_calendar(calendar, start=TABLE_START, end=TABLE_END)
    tz = str(cal.tz)
    sessions = cal.sessions.tz_localize(None) if cal.sessions.tz is not None else cal.sessions
    days = pd.DatetimeIndex(sessions).normalize()
    opens, closes = _ns(cal.opens), _ns(cal.closes)
    bstart = _ns(cal.break_starts)
    bend = _ns(cal.break_ends)
    nat = np.iinfo(np.int64).min
    if hours is None:
        regular = _own_hours(cal)
    else:
        regular = parse_hours(hours)
        opens = np.maximum(opens, _local_to_utc(_clock(days, regular.open, regular.open_offset), tz))
        closes = np.minimum(closes, _local_to_utc(_clock(days, regular.close), tz))
        bstart = np.full(len(days), nat)
        bend = np.full(len(days), nat)
        if regular.break_start is not None and regular.break_end is not None:
            # a break clock time at or after the open of an overnight session is on the evening before
            def on_day(t: dt.time) -> int:
                return -1 if regular.open_offset == -1 and t >= regular.open else 0
            b0 = _local_to_utc(_clock(days, regular.break_start, on_day(regular.break_start)), tz)
            b1 = _local_to_utc(_clock(days, regular.break_end, on_day(regular.break_end)), tz)
            b1 = np.where(b1 <= b0, b1 + NS_PER_DAY, b1)
            bstart, bend = np.clip(b0, opens, closes), np.clip(b1, opens, closes)
    keep = closes > opens
    has_break = (bstart != nat) & (bend > bstart)
    has_break &= keep
    # segments: [open, break start) and [break end, close), or [open, close)
    first_end = np.where(has_break, bstart, closes)
    idx = np.flatnonzero(keep)
    brk = np.flatnonzero(has_break)
    seg_start = np.concatenate([opens[idx], bend[brk]])
    seg_end = np.concatenate([first_end[idx], closes[brk]])
    seg_session = np.concatenate([idx, brk])
    order = np.argsort(seg_start, kind="stable")
    seg_start, seg_end, seg_session = seg_start[order], seg_end[order], seg_session[order]
    seg_start, seg_end, seg_session = (a[seg_end > seg_start] for a in (seg_start, seg_end, seg_session))
    if np.any(seg_start[1:] < seg_end[:-1]):
        raise ValueError(f"sessions of {calendar} with hours {hours!r} overlap")
    return SessionTable(calendar, tz, regular, days.to_numpy().astype("datetime64[D]"), opens, closes,
                        seg_start, seg_end, seg_session.astype(np.int64))
