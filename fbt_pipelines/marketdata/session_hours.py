"""Which trading calendar and which regular hours a market trades on.

Calendar (holidays, early closes, session dates) comes from
``exchange_calendars``; the hours of a CME Globex day come from here, because
no calendar there models them:

* ``CME``, ``CBOT``, ``COMEX`` and ``NYMEX`` are aliases of one calendar,
  ``CMES`` (America/Chicago): sessions open 17:00 CT the calendar day before
  and close 17:00 CT, i.e. 24 hours with **no** daily maintenance break;
  holidays New Year, Good Friday, Christmas; 12:00 CT early closes on the US
  holidays it keeps open (MLK, Presidents', Memorial, July 4, Labor Day,
  Thanksgiving, the day after, Christmas Eve).
* ``us_futures`` (Quantopian's) has the same 18:00-18:00 ET day, also without
  the break; ``XCBF`` is Cboe Futures (VIX), 08:30-15:15 CT, not CME.
* No calendar there has the grains' midday break.

So every built-in market uses ``CMES`` for its dates, holidays and early
closes, and an asset-class table of regular hours (CME Globex, in the
calendar's time zone) cuts each session to the hours the market trades:
open = the later of the calendar's open and the regular open; close = the
earlier of the calendar's close and the regular close (so a 12:00 CT early
close stays); a break inside the session is removed. A market row may set
``calendar`` and ``hours`` (see :class:`~fbt_pipelines.catalog.specs.ContractSpec`);
a market on another calendar with no ``hours`` uses that calendar's own times.

The hours are today's. History differs (the LEAN ES minute data of 2013 trade
until 16:15 CT, with a 15:15-15:30 CT halt): see ``docs/sessions.md``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fbt_pipelines.catalog.specs import HOURS_PATTERN, ContractSpec

DEFAULT_CALENDAR = "CMES"
# CME Globex regular hours (America/Chicago), by asset class of the catalog.
GLOBEX = "17:00-16:00"  # Sun-Fri 17:00 - 16:00 CT, daily maintenance break 16:00-17:00 CT
HOURS_BY_ASSET_CLASS: dict[str, str] = {
    "equity": GLOBEX,
    "rates": GLOBEX,
    "fx": GLOBEX,
    "energy": GLOBEX,
    "metals": GLOBEX,
    "grains": "19:00-13:20 break 07:45-08:30",  # CBOT grains: 19:00-07:45 and 08:30-13:20 CT
    "livestock": "08:30-13:05",  # CME live cattle: day session only
}
# Calendars whose own times are CME's 24-hour day: they take the Globex hours by default.
CME_CALENDARS = frozenset({"CMES", "CME", "CBOT", "COMEX", "NYMEX", "us_futures"})


@dataclass(frozen=True)
class TradingHours:
    """Regular hours of a session labelled day D, clock times in the calendar's zone.

    The session opens at ``open`` on day D + ``open_offset`` (-1: the evening
    before) and closes at ``close`` on D; ``break_start``..``break_end`` (or
    None) is a pause inside it, on the day its start falls on.
    """

    open: dt.time
    close: dt.time
    open_offset: int
    break_start: dt.time | None = None
    break_end: dt.time | None = None

    @property
    def text(self) -> str:
        s = f"{self.open:%H:%M}-{self.close:%H:%M}"
        if self.break_start is not None:
            s += f" break {self.break_start:%H:%M}-{self.break_end:%H:%M}"
        return s


def parse_hours(text: str) -> TradingHours:
    """``"17:00-16:00"`` or ``"19:00-13:20 break 07:45-08:30"`` as :class:`TradingHours`.

    An open at or after the close means the session opens the evening before
    (``"17:00-17:00"``: 24 hours). Raises ValueError for any other text.
    """
    m = HOURS_PATTERN.fullmatch(text)
    if m is None:
        raise ValueError(f"invalid trading hours {text!r} (HH:MM-HH:MM, optionally ' break HH:MM-HH:MM')")
    g = [None if x is None else int(x) for x in m.groups()]
    try:
        times = [None if g[i] is None else dt.time(g[i], g[i + 1]) for i in range(0, 8, 2)]  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"invalid trading hours {text!r}: a clock time out of range") from None
    open_, close, bs, be = times
    assert open_ is not None and close is not None
    offset = -1 if open_ >= close else 0
    if bs is not None and bs == be:
        raise ValueError(f"invalid trading hours {text!r}: an empty break")
    return TradingHours(open_, close, offset, bs, be)


@dataclass(frozen=True)
class MarketSessions:
    """A market's calendar name and regular hours (None: the calendar's own)."""

    calendar: str
    hours: TradingHours | None


def market_sessions(spec: ContractSpec) -> MarketSessions:
    """The calendar and hours ``spec`` trades on (its fields, else the defaults above)."""
    calendar = spec.calendar or DEFAULT_CALENDAR
    text = spec.hours
    if not text and calendar in CME_CALENDARS:
        text = HOURS_BY_ASSET_CLASS.get(spec.asset_class, GLOBEX)
    return MarketSessions(calendar, parse_hours(text) if text else None)
