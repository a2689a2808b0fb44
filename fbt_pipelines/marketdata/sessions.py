"""Trading sessions of futures markets from a maintained exchange calendar.

Two layers:

* :func:`session_filter` / :func:`trading_sessions` (used by the ingest
  validation): CME Globex dates from ``exchange_calendars``' ``CMES``, whose
  sessions run 17:00-17:00 CT (no maintenance break).
* Per market (:func:`assign_sessions`, :func:`trading_day`,
  :func:`bars_per_session`, :func:`annualisation_factor`): the market's
  calendar cut to its regular hours (:mod:`fbt_pipelines.marketdata.session_hours`),
  so a bar in the 16:00-17:00 CT maintenance break, on a weekend or a holiday
  is outside every session, with a reason. Time stamps are UTC (tz-naive
  input is read as UTC); trading days are dates (tz-naive midnights).

The details and the comparison with LEAN's own daily bars: ``docs/sessions.md``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, overload

import exchange_calendars as xcals
import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec, market_spec
from fbt_pipelines.marketdata.session_hours import market_sessions
from fbt_pipelines.marketdata.session_table import SessionTable, session_table
from fbt_pipelines.primitives.performance import PERIODS_PER_YEAR

# CME Globex (``CMES``): closed only on the few full holidays; daily bars are
# stamped with the trading day.
SESSION_CALENDAR = "CMES"


def trading_sessions(start: dt.date | str, end: dt.date | str) -> pd.DatetimeIndex:
    """Daily sessions in ``[start, end]`` as tz-naive midnight timestamps (the
    trading day; stored as 00:00 UTC)."""
    cal = xcals.get_calendar(SESSION_CALENDAR, start=str(start), end=str(end))
    return pd.DatetimeIndex(cal.sessions.tz_localize(None) if cal.sessions.tz else cal.sessions)


@lru_cache(maxsize=1)
def _session_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(session days, opens UTC, closes UTC) of CME Globex, 1990-2040, as datetime64[ns]."""
    cal = xcals.get_calendar(SESSION_CALENDAR, start="1990-01-01", end="2040-12-31")
    sessions = cal.sessions.tz_localize(None) if cal.sessions.tz else cal.sessions
    return (sessions.to_numpy().astype("datetime64[ns]"),
            cal.opens.dt.tz_convert(None).to_numpy().astype("datetime64[ns]"),
            cal.closes.dt.tz_convert(None).to_numpy().astype("datetime64[ns]"))


def session_filter(ts: pd.Series, interval: str) -> np.ndarray:
    """True where a bar time lies in a CME Globex trading session.

    Daily bars (``interval == "1d"``) are stamped with the trading day: the
    date must be a session, or the Sunday before one (LEAN and other vendors
    stamp the Sunday-evening opening stub with Sunday's date). Intraday bars
    must fall inside a session's [open, close) in UTC. NaT gives False.
    """
    t = pd.to_datetime(ts, utc=True)
    valid = t.notna().to_numpy()
    out = np.zeros(len(t), dtype=bool)
    if not valid.any():
        return out
    sess, opens, closes = _session_arrays()
    x = t.dt.tz_convert(None).to_numpy().astype("datetime64[ns]")
    if interval == "1d":
        days = x.astype("datetime64[D]").astype("datetime64[ns]")
        is_session = np.isin(days, sess)
        next_day = days + np.timedelta64(1, "D").astype("timedelta64[ns]")
        sunday = pd.DatetimeIndex(days).dayofweek.to_numpy() == 6
        return valid & (is_session | (sunday & np.isin(next_day, sess)))
    i = np.searchsorted(opens, x, side="right") - 1
    idx = np.clip(i, 0, len(opens) - 1)
    return valid & (i >= 0) & (x < closes[idx])


# ---------------------------------------------------------------------------
# Per-market sessions
# ---------------------------------------------------------------------------

OUTSIDE_WEEKEND = "outside session: weekend"
OUTSIDE_HOLIDAY = "outside session: holiday"  # a weekday holiday, or after an early close
OUTSIDE_BREAK = "outside session: break"  # the daily maintenance break or a midday break
OUTSIDE_RANGE = "outside session: beyond the calendar (1990-2040)"
NOT_A_TIMESTAMP = "ts is not a timestamp"
_NAT = np.iinfo(np.int64).min


def market_table(market: str | ContractSpec) -> SessionTable:
    """The cached session table of a market (a catalog root or its spec)."""
    spec = market if isinstance(market, ContractSpec) else market_spec(market)
    ms = market_sessions(spec)
    return session_table(ms.calendar, None if ms.hours is None else ms.hours.text)


@dataclass(frozen=True)
class SessionAssignment:
    """Trading day of each bar and, for a bar outside every session, why.

    ``day``: datetime64[D], NaT outside; ``reason``: "" inside, else the
    reason (one of the ``OUTSIDE_*`` texts or ``NOT_A_TIMESTAMP``).
    """

    day: np.ndarray
    reason: np.ndarray

    @property
    def inside(self) -> np.ndarray:
        return self.reason == ""


def utc_ns(ts: Any) -> np.ndarray:
    """Time stamps as int64 ns since the epoch, UTC.

    Tz-aware input is converted, tz-naive input is UTC; NaT or an
    unparseable value gives the int64 minimum.
    """
    idx = pd.DatetimeIndex(pd.to_datetime(ts, utc=True, errors="coerce", format="ISO8601"))
    return idx.tz_convert("UTC").tz_localize(None).as_unit("ns").asi8


def assign_sessions(ts: Any, market: str | ContractSpec) -> SessionAssignment:
    """Trading day of every bar time in ``ts`` (UTC), vectorised.

    A bar at UTC time t belongs to the session whose trading segment
    ``[open, close)`` (minus any break) holds t: one ``searchsorted`` over
    the market's sorted segments, so millions of bars cost milliseconds. A
    Sunday 17:00 CT bar is in Monday's session; any evening bar after the
    open is in the next day's. Bars outside every session get a reason:
    weekend, holiday (a weekday holiday, or after an early close), break (the
    daily 16:00-17:00 CT maintenance break, or a midday break), beyond the
    calendar's 1990-2040 range; NaT gets "ts is not a timestamp".
    """
    tab = market_table(market)
    x = utc_ns(ts)
    j = np.searchsorted(tab.seg_start, x, side="right") - 1
    jc = np.clip(j, 0, len(tab.seg_start) - 1)
    valid = x != _NAT
    inside = valid & (j >= 0) & (x < tab.seg_end[jc])
    day = np.full(len(x), np.datetime64("NaT"), dtype="datetime64[D]")
    day[inside] = tab.labels[tab.seg_session[jc[inside]]]
    reason = np.full(len(x), "", dtype=object)
    reason[~valid] = NOT_A_TIMESTAMP
    out = valid & ~inside
    if out.any():
        reason[out] = _outside_reasons(x[out], tab)
    return SessionAssignment(day, reason)


def _outside_reasons(x: np.ndarray, tab: SessionTable) -> np.ndarray:
    """Why each UTC time (int64 ns, none inside a session) is outside.

    By the day N it would trade on under the regular hours (its local date, or the
    next one at or after an overnight session's open): N a Saturday or Sunday
    -> weekend; N not a session -> holiday; inside N's regular hours (so cut
    by an early close) -> holiday; in N's regular break -> break; after N's
    close -> weekend when N is a Friday, else break."""
    h = tab.hours
    local = pd.DatetimeIndex(x).tz_localize("UTC").tz_convert(tab.tz).tz_localize(None)
    date = local.normalize()
    tod = local - date
    open_td = pd.Timedelta(hours=h.open.hour, minutes=h.open.minute)
    close_td = pd.Timedelta(hours=h.close.hour, minutes=h.close.minute)
    overnight = h.open_offset == -1
    n = date + pd.to_timedelta(np.where(overnight & (tod >= open_td), 1, 0), unit="D")
    reg_open = n + pd.Timedelta(days=h.open_offset) + open_td
    reg_close = n + close_td
    in_regular = (local >= reg_open) & (local < reg_close)
    in_break = np.zeros(len(x), dtype=bool)
    if h.break_start is not None and h.break_end is not None:
        bs = pd.Timedelta(hours=h.break_start.hour, minutes=h.break_start.minute)
        be = pd.Timedelta(hours=h.break_end.hour, minutes=h.break_end.minute)
        b0 = n + (pd.Timedelta(days=-1) if overnight and bs >= open_td else pd.Timedelta(0)) + bs
        length = be - bs if be > bs else be - bs + pd.Timedelta(days=1)
        in_break = np.asarray((local >= b0) & (local < b0 + length))
    nd = n.to_numpy().astype("datetime64[D]")
    pos = np.searchsorted(tab.labels, nd)
    is_session = (pos < len(tab.labels)) & (tab.labels[np.clip(pos, 0, len(tab.labels) - 1)] == nd)
    weekday = np.asarray(n.dayofweek)
    reason = np.where(weekday >= 5, OUTSIDE_WEEKEND,
             np.where(~is_session, OUTSIDE_HOLIDAY,
             np.where(in_break, OUTSIDE_BREAK,
             np.where(np.asarray(in_regular), OUTSIDE_HOLIDAY,
             np.where(weekday == 4, OUTSIDE_WEEKEND, OUTSIDE_BREAK))))).astype(object)
    beyond = (x < tab.seg_start[0]) | (x >= tab.seg_end[-1])
    reason[beyond] = OUTSIDE_RANGE
    return reason


@overload
def trading_day(ts_utc: pd.Timestamp | dt.datetime | str, market: str | ContractSpec) -> dt.date | None: ...
@overload
def trading_day(ts_utc: Any, market: str | ContractSpec) -> pd.DatetimeIndex: ...
def trading_day(ts_utc: Any, market: str | ContractSpec) -> Any:
    """The trading day (session date) a bar at ``ts_utc`` belongs to.

    One time (Timestamp, datetime, string): a ``datetime.date``, or None when
    the bar is outside every session. Many (DatetimeIndex, Series, array):
    a tz-naive DatetimeIndex of midnights, NaT outside. Tz-naive input is UTC.
    See :func:`assign_sessions` for the rule and the reasons.
    """
    if isinstance(ts_utc, (pd.Timestamp, dt.datetime, str)):
        d = assign_sessions([ts_utc], market).day[0]
        return None if np.isnat(d) else pd.Timestamp(d).date()
    return pd.DatetimeIndex(assign_sessions(ts_utc, market).day.astype("datetime64[ns]"))


_INTERVAL = re.compile(r"(\d+)([smhd])")
_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}


def interval_ns(interval: str) -> int:
    """Length of a bar interval (``"1m"``, ``"5m"``, ``"1h"``, ``"1d"``) in ns."""
    m = _INTERVAL.fullmatch(interval)
    if m is None or int(m[1]) == 0 or (m[2] == "d" and m[1] != "1"):
        raise ValueError(f"invalid bar interval {interval!r} (e.g. 1m, 5m, 1h, 1d)")
    return int(m[1]) * _UNIT_NS[m[2]]


def bars_per_session(market: str | ContractSpec, interval: str) -> int:
    """Bars of ``interval`` in one regular session of ``market`` (``"1d"``: 1).

    Bars sit on a clock grid from local midnight; a bar is counted when its
    grid interval overlaps a trading segment (a label shared by two segments
    counts once). CME Globex (17:00-16:00 CT): 1380 one-minute bars, 23 hourly;
    CBOT grains (19:00-07:45 and 08:30-13:20 CT): 1055 one-minute bars. Holiday
    sessions (early closes) are shorter; DST changes fall on Sundays at 02:00,
    inside the weekend, so regular sessions keep their length in UTC.
    """
    step = interval_ns(interval)
    if interval == "1d":
        return 1
    h = market_table(market).hours
    def ns(t: dt.time, days: int = 0) -> int:
        return ((days * 24 + t.hour) * 60 + t.minute) * 60 * 10**9
    start, end = ns(h.open, h.open_offset), ns(h.close)
    segments = [(start, end)]
    if h.break_start is not None and h.break_end is not None:
        b0 = ns(h.break_start, -1 if h.open_offset == -1 and h.break_start >= h.open else 0)
        b1 = b0 + (ns(h.break_end) - ns(h.break_start)) % (86400 * 10**9)
        segments = [(start, min(b0, end)), (max(b1, start), end)]
    count, last = 0, None
    for a, b in segments:
        if b <= a:
            continue
        first_label, last_label = a // step, (b - 1) // step
        if last is not None and first_label <= last:
            first_label = last + 1
        count += max(0, last_label - first_label + 1)
        last = last_label
    return count


def calendar_sessions_per_year(market: str | ContractSpec, year: int) -> int:
    """Sessions of ``market``'s calendar in ``year``.

    CMES 2024: 262 weekdays minus New Year, Good Friday, Christmas = 259.
    """
    labels = market_table(market).labels
    lo = np.searchsorted(labels, np.datetime64(f"{year}-01-01"))
    hi = np.searchsorted(labels, np.datetime64(f"{year + 1}-01-01"))
    return int(hi - lo)


def annualisation_factor(market: str | ContractSpec, interval: str,
                         sessions_per_year: float = PERIODS_PER_YEAR) -> float:
    """Bars in a year: :func:`bars_per_session` x ``sessions_per_year``.

    ``sessions_per_year`` defaults to fbt's 252 (the metrics' convention);
    pass :func:`calendar_sessions_per_year` for the calendar's own count.
    Volatility of ``interval`` returns annualises with ``sqrt`` of this
    (ES 1m: 1380 x 252 = 347,760).
    """
    return float(bars_per_session(market, interval) * sessions_per_year)
