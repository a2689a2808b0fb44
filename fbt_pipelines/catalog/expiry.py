"""Last-trade and first-notice rules, on a real exchange holiday calendar.

Business days are US exchange business days from ``exchange_calendars``'s
XNYS calendar (weekdays minus US exchange holidays, Good Friday included),
which is what CME Group's "business day" in its contract rules means for these
markets. Every rule returns a ``datetime.date`` (the exchange's local date).
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from typing import Callable

import exchange_calendars as xcals
import numpy as np
import pandas as pd

CALENDAR_START = "1990-01-01"
# exchange_calendars projects future holidays from the exchange's rules; the
# default end (a year ahead) would cut off contracts listed years out.
CALENDAR_END = "2040-12-31"


@lru_cache(maxsize=1)
def _business_days() -> np.ndarray:
    """Sorted ``datetime64[D]`` array of US exchange business days."""
    cal = xcals.get_calendar("XNYS", start=CALENDAR_START, end=CALENDAR_END)
    return cal.sessions.values.astype("datetime64[D]")


def is_business_day(day: dt.date) -> bool:
    days = _business_days()
    d = np.datetime64(day, "D")
    i = np.searchsorted(days, d)
    return bool(i < len(days) and days[i] == d)


def business_day_offset(day: dt.date, n: int) -> dt.date:
    """The business day ``n`` business days from ``day``.

    ``n < 0`` counts back, ``n > 0`` forward; ``day`` itself need not be a
    business day (``n = -1`` from a Saturday is the Friday before).
    """
    days = _business_days()
    d = np.datetime64(day, "D")
    if n < 0:
        i = np.searchsorted(days, d, side="left") + n
    elif n > 0:
        i = np.searchsorted(days, d, side="right") + n - 1
    else:
        i = np.searchsorted(days, d, side="left")
        if i >= len(days) or days[i] != d:
            raise ValueError(f"{day} is not a business day")
    if not 0 <= i < len(days):
        raise ValueError(f"{day} {n:+d} business days is outside the calendar")
    return pd.Timestamp(days[i]).date()


def _month_end(year: int, month: int) -> dt.date:
    return (pd.Timestamp(year=year, month=month, day=1) + pd.offsets.MonthEnd(0)).date()


def last_business_day(year: int, month: int) -> dt.date:
    return business_day_offset(_month_end(year, month) + dt.timedelta(days=1), -1)


def nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    """The ``n``-th ``weekday`` (Mon=0) of a month."""
    first = dt.date(year, month, 1)
    offset = (weekday - first.weekday()) % 7
    return first + dt.timedelta(days=offset + 7 * (n - 1))


def _prior_month(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


# --- last trade rules -------------------------------------------------------

def third_friday(year: int, month: int) -> dt.date:
    """Equity index (ES, NQ): third Friday of the contract month.

    The business day before if that Friday is a holiday.
    """
    day = nth_weekday(year, month, 4, 3)
    return day if is_business_day(day) else business_day_offset(day, -1)


def cl_25th_minus_3(year: int, month: int) -> dt.date:
    """WTI crude (CL): three business days before the 25th of the prior month.

    Three business days before the 25th calendar day of the month before the
    contract month; four if the 25th is not a business day.
    """
    py, pm = _prior_month(year, month)
    day25 = dt.date(py, pm, 25)
    return business_day_offset(day25, -3 if is_business_day(day25) else -4)


def third_last_business_day(year: int, month: int) -> dt.date:
    """Gold (GC): third-last business day of the contract month."""
    return business_day_offset(last_business_day(year, month), -2)


def seventh_business_day_before_last(year: int, month: int) -> dt.date:
    """Treasury notes (ZN): seventh business day before the contract month's last one.

    Counted back from the last business day of the contract month.
    """
    return business_day_offset(last_business_day(year, month), -7)


def two_business_days_before_third_wednesday(year: int, month: int) -> dt.date:
    """CME FX (6E): two business days before the third Wednesday."""
    return business_day_offset(nth_weekday(year, month, 2, 3), -2)


def business_day_before_15th(year: int, month: int) -> dt.date:
    """CBOT grains (ZC): the business day before the 15th calendar day."""
    return business_day_offset(dt.date(year, month, 15), -1)


def last_business_day_of_month(year: int, month: int) -> dt.date:
    """2- and 5-year notes (ZT, ZF), live cattle (LE): last business day of the month.

    The last business day of the contract month.
    """
    return last_business_day(year, month)


def last_business_day_prior_month(year: int, month: int) -> dt.date:
    """Heating oil and RBOB (HO, RB): last business day of the prior month.

    The month before the contract month.
    """
    return last_business_day(*_prior_month(year, month))


def three_business_days_before_month(year: int, month: int) -> dt.date:
    """Henry Hub natural gas (NG): three business days before the contract month.

    Counted back from the first calendar day of the contract month.
    """
    return business_day_offset(dt.date(year, month, 1), -3)


def business_day_before_third_wednesday(year: int, month: int) -> dt.date:
    """Canadian dollar (6C): the business day before the third Wednesday."""
    return business_day_offset(nth_weekday(year, month, 2, 3), -1)


EXPIRY_RULES: dict[str, Callable[[int, int], dt.date]] = {
    "third_friday": third_friday,
    "cl_25th_minus_3": cl_25th_minus_3,
    "third_last_business_day": third_last_business_day,
    "seventh_business_day_before_last": seventh_business_day_before_last,
    "two_business_days_before_third_wednesday": two_business_days_before_third_wednesday,
    "business_day_before_15th": business_day_before_15th,
    "last_business_day": last_business_day_of_month,
    "last_business_day_prior_month": last_business_day_prior_month,
    "three_business_days_before_month": three_business_days_before_month,
    "business_day_before_third_wednesday": business_day_before_third_wednesday,
}


_PARAMETRISED = re.compile(r"^(?P<kind>day_of_month|days_before_month):(?P<n>\d{1,2})$")


def day_of_month(n: int) -> Callable[[int, int], dt.date]:
    """Approximate rule for imported markets: business day on or before day ``n``.

    Day ``n`` is the calendar day of the contract month (``n`` past month end:
    last day).
    """

    def rule(year: int, month: int) -> dt.date:
        last = _month_end(year, month).day
        day = dt.date(year, month, min(n, last))
        return day if is_business_day(day) else business_day_offset(day, -1)

    return rule


def days_before_month(n: int) -> Callable[[int, int], dt.date]:
    """Approximate rule for imported markets: ``n`` calendar days before the month.

    The business day on or before ``n`` calendar days before the first day of
    the contract month.
    """

    def rule(year: int, month: int) -> dt.date:
        day = dt.date(year, month, 1) - dt.timedelta(days=n)
        return day if is_business_day(day) else business_day_offset(day, -1)

    return rule


def resolve_expiry_rule(name: str) -> Callable[[int, int], dt.date]:
    """A named rule (:data:`EXPIRY_RULES`) or a parametrised approximation.

    Approximations: ``day_of_month:N`` / ``days_before_month:N``; KeyError if
    unknown.
    """
    if name in EXPIRY_RULES:
        return EXPIRY_RULES[name]
    m = _PARAMETRISED.match(name)
    if not m or not 1 <= int(m["n"]) <= 31:
        raise KeyError(name)
    return (day_of_month if m["kind"] == "day_of_month" else days_before_month)(int(m["n"]))


# --- first notice rules -----------------------------------------------------

def _no_first_notice(year: int, month: int, last_trade: dt.date) -> dt.date | None:
    return None


def _last_business_day_prior_month(year: int, month: int, last_trade: dt.date) -> dt.date | None:
    return last_business_day(*_prior_month(year, month))


def _business_day_after_last_trade(year: int, month: int, last_trade: dt.date) -> dt.date | None:
    return business_day_offset(last_trade, 1)


FIRST_NOTICE_RULES: dict[str, Callable[[int, int, dt.date], dt.date | None]] = {
    "none": _no_first_notice,
    "last_business_day_prior_month": _last_business_day_prior_month,
    "business_day_after_last_trade": _business_day_after_last_trade,
}
