"""Trading sessions of futures markets from a maintained exchange calendar."""

from __future__ import annotations

import datetime as dt

import exchange_calendars as xcals
import pandas as pd

# CME Globex (``CMES``): closed only on the few full holidays; daily bars are
# stamped with the trading day.
SESSION_CALENDAR = "CMES"


def trading_sessions(start: dt.date | str, end: dt.date | str) -> pd.DatetimeIndex:
    """Daily sessions in ``[start, end]`` as tz-naive midnight timestamps (the
    trading day; stored as 00:00 UTC)."""
    cal = xcals.get_calendar(SESSION_CALENDAR, start=str(start), end=str(end))
    return pd.DatetimeIndex(cal.sessions.tz_localize(None) if cal.sessions.tz else cal.sessions)
