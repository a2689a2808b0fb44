"""Trading sessions of futures markets from a maintained exchange calendar."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import exchange_calendars as xcals
import numpy as np
import pandas as pd

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
