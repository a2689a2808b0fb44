"""Trading sessions per market: trading day of a bar, outside bars, daily bars, annualisation.

Hand-worked UTC times (CT = America/Chicago: CST = UTC-6, CDT = UTC-5; DST
2024 began Sunday 03-10 02:00 and ended Sunday 11-03 02:00, both while CME
Globex is closed):

ES (CME Globex, calendar CMES, hours 17:00-16:00 CT):
  Sun 2024-01-07 23:00 UTC = 17:00 CST  -> Monday 2024-01-08 (the reopen)
  Sun 2024-01-07 22:59 UTC = 16:59 CST  -> weekend
  Sun 2024-03-10 22:00 UTC = 17:00 CDT  -> Monday 2024-03-11 (DST started that morning)
  Sun 2024-03-10 21:59 UTC = 16:59 CDT  -> weekend
  Fri 2024-03-08 21:59 UTC = 15:59 CST  -> Friday 2024-03-08
  Fri 2024-03-08 22:00 UTC = 16:00 CST  -> weekend (Friday close)
  Tue 2024-03-12 21:30 UTC = 16:30 CDT  -> break (daily maintenance 16:00-17:00)
  Tue 2024-03-12 22:00 UTC = 17:00 CDT  -> Wednesday 2024-03-13
  Fri 2024-11-01 20:59 UTC = 15:59 CDT  -> Friday 2024-11-01; 21:00 UTC -> weekend
  Sun 2024-11-03 23:00 UTC = 17:00 CST  -> Monday 2024-11-04 (DST ended that morning)
  Sun 2024-11-03 22:00 UTC = 16:00 CST  -> weekend (17:00 CDT had it still been summer)
  Wed 2024-11-06 22:30 UTC = 16:30 CST  -> break
  Tue 2024-12-24 17:59 UTC = 11:59 CST  -> 2024-12-24 (CMES closes 12:00 CT that day)
  Tue 2024-12-24 18:00 UTC = 12:00 CST  -> holiday (early close)
  Wed 2024-12-25 15:00 UTC              -> holiday (Christmas)
  Wed 2024-12-25 23:00 UTC = 17:00 CST  -> Thursday 2024-12-26
  Thu 2024-03-28 22:00 UTC = 17:00 CDT  -> holiday (Good Friday 03-29 is no session)
ZC (CBOT grains, 19:00-07:45 and 08:30-13:20 CT):
  Tue 2024-03-12 12:44 UTC = 07:44 CDT -> 03-12;  12:45 UTC = 07:45 -> break (midday)
  13:30 UTC = 08:30 -> 03-12;  18:19 UTC = 13:19 -> 03-12;  18:20 UTC = 13:20 -> break
  Wed 2024-03-13 00:00 UTC = Tue 19:00 CDT -> 2024-03-13;  Tue 23:59 UTC = 18:59 -> break
  Sun 2024-03-10 22:00 UTC = 17:00 CDT -> weekend;  Mon 00:00 UTC = Sun 19:00 -> 03-11
LE (live cattle, 08:30-13:05 CT): 2024-03-12 13:30 UTC -> 03-12; 13:29 UTC -> break.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import exchange_calendars as xcals
import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog.specs import market_spec, parse_catalog
from fbt_pipelines.errors import CatalogError, DataError
from fbt_pipelines.marketdata.daily_bars import daily_from_minute
from fbt_pipelines.marketdata.session_hours import parse_hours
from fbt_pipelines.marketdata.sessions import (
    NOT_A_TIMESTAMP,
    OUTSIDE_BREAK,
    OUTSIDE_HOLIDAY,
    OUTSIDE_RANGE,
    OUTSIDE_WEEKEND,
    annualisation_factor,
    assign_sessions,
    bars_per_session,
    calendar_sessions_per_year,
    trading_day,
)

CT = ZoneInfo("America/Chicago")

ES_CASES = [
    ("2024-01-07 23:00", "2024-01-08", ""),
    ("2024-01-07 22:59", None, OUTSIDE_WEEKEND),
    ("2024-03-10 22:00", "2024-03-11", ""),
    ("2024-03-10 21:59", None, OUTSIDE_WEEKEND),
    ("2024-03-08 21:59", "2024-03-08", ""),
    ("2024-03-08 22:00", None, OUTSIDE_WEEKEND),
    ("2024-03-12 21:30", None, OUTSIDE_BREAK),
    ("2024-03-12 22:00", "2024-03-13", ""),
    ("2024-11-01 20:59", "2024-11-01", ""),
    ("2024-11-01 21:00", None, OUTSIDE_WEEKEND),
    ("2024-11-03 23:00", "2024-11-04", ""),
    ("2024-11-03 22:00", None, OUTSIDE_WEEKEND),
    ("2024-11-06 22:30", None, OUTSIDE_BREAK),
    ("2024-12-24 17:59", "2024-12-24", ""),
    ("2024-12-24 18:00", None, OUTSIDE_HOLIDAY),
    ("2024-12-25 15:00", None, OUTSIDE_HOLIDAY),
    ("2024-12-25 23:00", "2024-12-26", ""),
    ("2024-03-28 22:00", None, OUTSIDE_HOLIDAY),
]
ZC_CASES = [
    ("2024-03-12 12:44", "2024-03-12", ""),
    ("2024-03-12 12:45", None, OUTSIDE_BREAK),
    ("2024-03-12 13:30", "2024-03-12", ""),
    ("2024-03-12 18:19", "2024-03-12", ""),
    ("2024-03-12 18:20", None, OUTSIDE_BREAK),
    ("2024-03-13 00:00", "2024-03-13", ""),
    ("2024-03-12 23:59", None, OUTSIDE_BREAK),
    ("2024-03-10 22:00", None, OUTSIDE_WEEKEND),
    ("2024-03-11 00:00", "2024-03-11", ""),
]
LE_CASES = [("2024-03-12 13:30", "2024-03-12", ""), ("2024-03-12 13:29", None, OUTSIDE_BREAK),
            ("2024-03-12 18:05", None, OUTSIDE_BREAK), ("2024-03-12 18:04", "2024-03-12", "")]


@pytest.mark.parametrize("root, cases", [("ES", ES_CASES), ("ZC", ZC_CASES), ("LE", LE_CASES)])
def test_hand_worked_trading_days_and_reasons(root, cases):
    ts = pd.DatetimeIndex([pd.Timestamp(t, tz="UTC") for t, _, _ in cases])
    got = assign_sessions(ts, root)
    assert [None if np.isnat(d) else str(d) for d in got.day] == [d for _, d, _ in cases]
    assert list(got.reason) == [r for _, _, r in cases]
    # the scalar form gives the same answer, as a date or None
    for t, d, _ in cases:
        assert trading_day(pd.Timestamp(t, tz="UTC"), root) == (dt.date.fromisoformat(d) if d else None)


def test_tz_aware_input_in_another_zone_and_tz_naive_as_utc():
    # 2024-01-07 17:00 CST given in Chicago time, and as a naive UTC string: both Monday
    chicago = pd.DatetimeIndex([pd.Timestamp("2024-01-07 17:00", tz=CT)])
    naive = pd.DatetimeIndex([pd.Timestamp("2024-01-07 23:00")])
    assert list(trading_day(chicago, "ES")) == list(trading_day(naive, "ES")) == [pd.Timestamp("2024-01-08")]
    assert trading_day(pd.Series(naive), "ES").tz is None


def test_nat_unparseable_and_out_of_range_times():
    got = assign_sessions(pd.Series([pd.NaT, "not a time", "1989-06-01 15:00", "2041-06-04 15:00"]), "ES")
    assert list(got.reason) == [NOT_A_TIMESTAMP, NOT_A_TIMESTAMP, OUTSIDE_RANGE, OUTSIDE_RANGE]
    assert np.isnat(got.day).all()


def _oracle_day(t: pd.Timestamp, schedule: pd.DataFrame) -> pd.Timestamp | None:
    """Per-bar reference: the CMES session whose [open, min(close, 16:00 CT)) holds t."""
    for label, row in schedule.iterrows():
        close = min(row["close"], pd.Timestamp(label.date().isoformat() + " 16:00", tz=CT).tz_convert("UTC"))
        if row["open"] <= t < close:
            return label
    return None


def test_vectorised_assignment_matches_a_per_bar_oracle_on_random_times():
    # 3000 random minutes over 2024 (DST changes, holidays, early closes); oracle straight from CMES
    rng = np.random.default_rng(7)
    start = pd.Timestamp("2023-12-28", tz="UTC")
    ts = pd.DatetimeIndex(start + pd.to_timedelta(np.sort(rng.integers(0, 370 * 1440, 3000)), unit="min"))
    schedule = xcals.get_calendar("CMES", start="2023-12-01", end="2025-02-01").schedule
    schedule.index = schedule.index.tz_localize(None) if schedule.index.tz else schedule.index
    got = trading_day(ts, "ES")
    # the oracle only needs the sessions near each bar
    want = []
    for t in ts:
        near = schedule.loc[(t - pd.Timedelta(days=4)).tz_localize(None):(t + pd.Timedelta(days=4)).tz_localize(None)]
        want.append(_oracle_day(t, near))
    assert [None if pd.isna(d) else d for d in got] == want
    assert 0.6 < np.mean([w is not None for w in want]) < 0.85  # both kinds are exercised


def test_bars_per_session_and_annualisation():
    # Globex: 17:00 -> 16:00 CT = 23 h = 1380 min; grains: 19:00->07:45 (12h45 = 765) + 08:30->13:20 (290)
    assert [bars_per_session("ES", i) for i in ("1m", "5m", "1h", "1d")] == [1380, 276, 23, 1]
    assert [bars_per_session("ZC", i) for i in ("1m", "1h")] == [1055, 13 + 6]  # 19..07 and 08..13 labels
    assert bars_per_session("LE", "1m") == 275  # 08:30 -> 13:05
    assert bars_per_session("ES", "4h") == 6  # grid 16-20 (partial), 20-24, 0-4, 4-8, 8-12, 12-16
    assert annualisation_factor("ES", "1m") == 1380 * 252 == 347_760
    assert annualisation_factor("ES", "1d") == 252
    # CMES 2024: 262 weekdays minus New Year, Good Friday, Christmas
    assert calendar_sessions_per_year("ES", 2024) == 259
    assert annualisation_factor("ES", "1m", calendar_sessions_per_year("ES", 2024)) == 1380 * 259
    with pytest.raises(ValueError, match="invalid bar interval"):
        bars_per_session("ES", "2d")


def test_catalog_calendar_and_hours_fields():
    es = market_spec("ES")
    assert (es.calendar, es.hours) == ("", "")
    # a trader's own hours: ES regular trading hours only (08:30-15:15 CT)
    rth = dataclasses.replace(es, hours="08:30-15:15")
    got = assign_sessions(pd.DatetimeIndex(["2024-03-12 13:29", "2024-03-12 13:30", "2024-03-12 20:15"], tz="UTC"), rth)
    assert list(got.reason) == [OUTSIDE_BREAK, "", OUTSIDE_BREAK]
    assert bars_per_session(rth, "1m") == 405
    # a market on another calendar with no hours uses the calendar's own (XEUR: 08:00-22:00 Berlin)
    eurex = dataclasses.replace(es, calendar="XEUR")
    days = trading_day(pd.DatetimeIndex(["2024-03-12 06:59", "2024-03-12 07:00", "2024-03-12 21:00"], tz="UTC"), eurex)
    assert pd.isna(days[0]) and days[1] == pd.Timestamp("2024-03-12") and pd.isna(days[2])
    row = "[XX]\n" + "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in {
        "name": "x", "exchange": "CME", "asset_class": "equity", "currency": "USD", "multiplier": 1.0,
        "tick_size": 0.25, "cycle": "H", "expiry_rule": "third_friday", "first_notice_rule": "none",
        "roll_days_before": 5, "commission": 1.0, "initial_margin": 1.0, "maintenance_margin": 1.0}.items())
    assert parse_catalog(row + '\ncalendar = "XEUR"\nhours = "19:00-13:20 break 07:45-08:30"\n', "t")["XX"].hours \
        == "19:00-13:20 break 07:45-08:30"
    with pytest.raises(CatalogError, match="unknown calendar 'NOPE'"):
        parse_catalog(row + '\ncalendar = "NOPE"\n', "t")
    with pytest.raises(CatalogError, match="invalid hours '25:00-16:00'"):
        parse_catalog(row + '\nhours = "25:00-16:00"\n', "t")
    assert parse_hours("17:00-16:00").open_offset == -1 and parse_hours("08:30-13:05").open_offset == 0


def _bar(contract, t, o, h, low, c, v, oi=np.nan):
    return {"contract": contract, "ts": pd.Timestamp(t, tz="UTC"), "open": o, "high": h, "low": low,
            "close": c, "volume": v, "open_interest": oi}


def test_daily_from_minute_hand_example():
    """ES, week of 2024-03-11 (CDT, UTC-5). Session 03-11 = [Sun 03-10 22:00, Mon 21:00) UTC.

    ESM2024 bars (UTC):                       o      h      l      c     v   oi
      Sun 03-10 21:59  weekend (16:59 CDT)   5000   5001   4999   5000    7   -
      Sun 03-10 22:00  -> 03-11              5010   5012   5008   5011   10   -
      Mon 03-11 13:30  -> 03-11              5011   5020   5005   5018   30   2,000,000
      Mon 03-11 20:59  -> 03-11              5018   5019   5015   5016   20   -
      Mon 03-11 21:00  break (16:00 CDT)     5016   5030   4990   5025    9   -
      Mon 03-11 22:00  -> 03-12              5025   5026   5024   5026    4   -
    ESH2024 bar Mon 03-11 14:00 -> 03-11     5001   5002   5000   5001    3   -

    By hand: ESM2024 03-11: open 5010 (Sunday 17:00 CDT bar), high max(5012, 5020,
    5019) = 5020, low min(5008, 5005, 5015) = 5005, close 5016 (the 15:59 CDT bar),
    volume 10 + 30 + 20 = 60, open interest 2,000,000 (last known), 3 bars. 03-12:
    all from the one bar, open interest NaN (none known in that session).
    Quarantined: the 21:59 Sunday bar (weekend) and the 16:00 CDT bar (break); the
    break bar's 5030 high and 4990 low must not leak into 03-11.
    """
    rows = [
        _bar("ESM2024", "2024-03-11 22:00", 5025, 5026, 5024, 5026, 4),
        _bar("ESM2024", "2024-03-10 21:59", 5000, 5001, 4999, 5000, 7),
        _bar("ESM2024", "2024-03-11 13:30", 5011, 5020, 5005, 5018, 30, 2_000_000),
        _bar("ESH2024", "2024-03-11 14:00", 5001, 5002, 5000, 5001, 3),
        _bar("ESM2024", "2024-03-10 22:00", 5010, 5012, 5008, 5011, 10),
        _bar("ESM2024", "2024-03-11 21:00", 5016, 5030, 4990, 5025, 9),
        _bar("ESM2024", "2024-03-11 20:59", 5018, 5019, 5015, 5016, 20),
    ]
    got = daily_from_minute(pd.DataFrame(rows), "ES")
    d = got.daily
    assert list(zip(d["contract"], d["ts"].dt.strftime("%Y-%m-%d %H:%M%z"))) == [
        ("ESH2024", "2024-03-11 00:00+0000"), ("ESM2024", "2024-03-11 00:00+0000"), ("ESM2024", "2024-03-12 00:00+0000")]
    want = [[5001, 5002, 5000, 5001, 3, np.nan, 1],
            [5010, 5020, 5005, 5016, 60, 2_000_000, 3],
            [5025, 5026, 5024, 5026, 4, np.nan, 1]]
    np.testing.assert_array_equal(d[["open", "high", "low", "close", "volume", "open_interest", "bars"]]
                                  .to_numpy(dtype=float), np.array(want, dtype=float))
    q = got.quarantined.sort_values("ts")
    assert list(q["ts"].dt.strftime("%m-%d %H:%M")) == ["03-10 21:59", "03-11 21:00"]
    assert list(q["reason"]) == [OUTSIDE_WEEKEND, OUTSIDE_BREAK]
    assert list(q["volume"]) == [7, 9]  # rows come back unchanged


def test_daily_from_minute_rejects_bad_numbers_and_quarantines_nat():
    rows = [_bar("ESM2024", "2024-03-11 13:30", 5011, 5020, 5005, 5018, 30)]
    bad = pd.DataFrame(rows + [_bar("ESM2024", "2024-03-11 13:31", 5011, np.nan, 5005, 5018, 30)])
    with pytest.raises(DataError, match=r"es\.csv: row 1 .*high is not a finite number"):
        daily_from_minute(bad, "ES", source="es.csv")
    with pytest.raises(DataError, match="missing column"):
        daily_from_minute(pd.DataFrame(rows).drop(columns="volume"), "ES")
    nat = pd.DataFrame(rows + [dict(rows[0], ts=pd.NaT)])
    got = daily_from_minute(nat, "ES")
    assert list(got.quarantined["reason"]) == [NOT_A_TIMESTAMP] and list(got.daily["bars"]) == [1]
    empty = daily_from_minute(pd.DataFrame(rows).iloc[:0], "ES")
    assert empty.daily.empty and empty.quarantined.empty
