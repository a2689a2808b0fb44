"""Session-built daily bars against LEAN's own ES daily bars, on real QuantConnect data.

Fixtures (tests/fixtures/lean, byte-for-byte QuantConnect/Lean copies, Apache-2.0):
daily ``es_trade.zip``; minute ``20131029``, ``20131030``, ``20131218`` and
``20200105`` (a Sunday) trade zips, with ``20200105``'s open interest.

What the numbers show (each asserted below; docs/sessions.md says the same):

1. LEAN's minute time stamps are UTC. The Sunday 2020-01-05 file starts at
   23:00 UTC = 17:00 CST, the Globex reopen (in Chicago or New York time it
   would start at 17:00 or 18:00). In Oct 2013 (CDT) each day's last bar
   before the 15:15-15:30 CT halt is 20:14 UTC, nothing trades 20:15-20:29 or
   21:15-21:59 UTC, and the evening reopens at 22:00 UTC = 17:00 CDT.
2. LEAN's weekday daily bar is NOT the Globex session: it is the trades from
   09:30 to 17:00 New York time (08:30-16:00 CT). O/H/L/C/V of the minute bars
   in that window equal LEAN's daily bar exactly for ESZ2013 on 10-29, 10-30,
   12-18 and ESH2014, ESM2014, ESZ2014 on 12-18. One known difference: ESU2014
   on 12-18 has 3 minute bars with 6 contracts, LEAN's daily says 5 (prices
   equal): the daily and minute files disagree by one lot; the data cannot say
   which is right.
3. LEAN also writes a Sunday-dated daily bar (12 in es_trade.zip): the Sunday
   evening trades. ESM2020/ESU2020 on 2020-01-05 equal the Sunday minute bars
   exactly (open interest too: 15,492 / 186, the 18:30 UTC snapshot). fbt's
   sessions put those bars in Monday's session, so no session-built bar is a
   Sunday.
4. Close: LEAN's close is the last trade before 16:00 CT (the close of the
   15:59 CT minute bar), NOT the settlement price (set at 15:14:30-15:15 CT):
   ESZ2013 on 10-30 closes 1759.50 in both, while the 15:14 CT bar closed at
   1760.75. The session also ends at 16:00 CT, so session close == LEAN close
   on every day whose end the minute files cover.
5. Open, high, low, volume: the session adds the overnight (17:00 CT the day
   before to 08:30 CT) to LEAN's window, so session high = max(LEAN high,
   overnight high), low = min(..), volume = LEAN volume + overnight volume,
   open = first overnight open. ESZ2013 2013-10-30: session O/H/L/C
   1768.25/1773.25/1751.75/1759.50, volume 1,755,048 (1339 bars); LEAN
   1769.25/1770.50/1751.75/1759.50, volume 1,598,865 (435 bars); the
   overnight's 904 bars: open 1768.25, high 1773.25, low 1765.75, volume 156,183.
6. History: in 2013 ES traded until 16:15 CT; fbt's Globex hours (today's,
   16:00 CT close) quarantine the 16:00-16:14 CT bars as "outside session:
   break": 15 bars on each of 10-29 (3,069 contracts) and 10-30 (1,819).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.marketdata.daily_bars import daily_from_minute
from fbt_pipelines.marketdata.lean import read_lean_zip
from fbt_pipelines.marketdata.sessions import OUTSIDE_BREAK, trading_day

LEAN = Path(__file__).resolve().parents[1] / "fixtures" / "lean"
OHLCV = ["open", "high", "low", "close", "volume"]


def utc(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def load(path: Path) -> pd.DataFrame:
    frame = pd.concat([s.frame for s in read_lean_zip(path)], ignore_index=True)
    return frame.rename(columns={"contract_raw": "contract"})[["contract", "ts", *OHLCV, "open_interest"]]


@pytest.fixture(scope="module")
def minute() -> pd.DataFrame:
    days = ["20131029", "20131030", "20131218", "20200105"]
    return pd.concat([load(LEAN / "minute" / "es" / f"{d}_trade.zip") for d in days], ignore_index=True)


@pytest.fixture(scope="module")
def lean_daily() -> pd.DataFrame:
    return load(LEAN / "es_trade.zip").set_index(["contract", "ts"]).sort_index()


def window(minute: pd.DataFrame, contract: str, start: str, end: str) -> pd.DataFrame:
    m = minute[(minute["contract"] == contract) & (minute["ts"] >= utc(start)) & (minute["ts"] < utc(end))]
    return m.sort_values("ts")


def ohlcv(bars: pd.DataFrame) -> list[float]:
    return [bars["open"].iloc[0], bars["high"].max(), bars["low"].min(), bars["close"].iloc[-1], bars["volume"].sum()]


def test_lean_minute_stamps_are_utc(minute):
    sunday = minute[minute["ts"] < utc("2020-01-06")]
    sunday = sunday[sunday["ts"] >= utc("2020-01-05")]
    assert sunday["ts"].min() == utc("2020-01-05 23:00")  # 17:00 CST, the Globex reopen
    assert set(trading_day(sunday["ts"], "ES")) == {pd.Timestamp("2020-01-06")}
    es = minute[minute["contract"] == "ESZ2013"]["ts"]
    for day in ("2013-10-29", "2013-10-30"):  # CDT = UTC-5
        t = set(es[(es >= utc(day)) & (es < utc(day) + pd.Timedelta(days=1))])
        assert {utc(f"{day} 20:14"), utc(f"{day} 20:30"), utc(f"{day} 21:14"), utc(f"{day} 22:00")} <= t
        halt = pd.date_range(utc(f"{day} 20:15"), utc(f"{day} 20:29"), freq="min")
        closed = pd.date_range(utc(f"{day} 21:15"), utc(f"{day} 21:59"), freq="min")
        assert not t & set(halt) and not t & set(closed)


# (contract, day, window start, window end in UTC): 09:30-17:00 New York time
LEAN_WINDOWS = [
    ("ESZ2013", "2013-10-29", "2013-10-29 13:30", "2013-10-29 21:00"),  # EDT
    ("ESZ2013", "2013-10-30", "2013-10-30 13:30", "2013-10-30 21:00"),
    ("ESZ2013", "2013-12-18", "2013-12-18 14:30", "2013-12-18 22:00"),  # EST
    ("ESH2014", "2013-12-18", "2013-12-18 14:30", "2013-12-18 22:00"),
    ("ESM2014", "2013-12-18", "2013-12-18 14:30", "2013-12-18 22:00"),
    ("ESZ2014", "2013-12-18", "2013-12-18 14:30", "2013-12-18 22:00"),
]


@pytest.mark.parametrize("contract, day, start, end", LEAN_WINDOWS)
def test_lean_daily_bar_is_0930_to_1700_new_york(minute, lean_daily, contract, day, start, end):
    assert ohlcv(window(minute, contract, start, end)) == list(lean_daily.loc[(contract, utc(day)), OHLCV])


def test_the_one_lot_lean_disagrees_with_its_own_minute_bars(minute, lean_daily):
    bars = window(minute, "ESU2014", "2013-12-18 14:30", "2013-12-18 22:00")
    got, lean = ohlcv(bars), list(lean_daily.loc[("ESU2014", utc("2013-12-18")), OHLCV])
    assert len(bars) == 3 and got[:4] == lean[:4] == [1765.0, 1792.0, 1765.0, 1792.0]
    assert (got[4], lean[4]) == (6.0, 5.0)


def test_lean_sunday_bars_are_the_sunday_evening_and_fbt_moves_them_to_monday(minute, lean_daily):
    sundays = lean_daily.index.get_level_values("ts").day_of_week == 6
    assert sundays.sum() == 12
    built = daily_from_minute(minute, "ES").daily
    assert not (built["ts"].dt.day_of_week == 6).any()
    for contract, oi in (("ESM2020", 15492.0), ("ESU2020", 186.0)):
        sunday = window(minute, contract, "2020-01-05", "2020-01-06")
        lean = lean_daily.loc[(contract, utc("2020-01-05"))]
        assert ohlcv(sunday) == list(lean[OHLCV]) and lean["open_interest"] == oi
        monday = built[(built["contract"] == contract)].set_index("ts").loc[utc("2020-01-06")]
        assert list(monday[OHLCV]) == list(lean[OHLCV]) and monday["open_interest"] == oi


def test_session_close_is_leans_close_a_last_trade_not_the_settlement(minute, lean_daily):
    built = daily_from_minute(minute, "ES").daily.set_index(["contract", "ts"])
    # days whose session end (16:00 CT) the minute files cover: every contract trading on them
    covered = [(c, d) for c, d in built.index if d in (utc("2013-10-29"), utc("2013-10-30"), utc("2013-12-18"))]
    assert len(covered) == 7
    for key in covered:
        assert built.loc[key, "close"] == lean_daily.loc[key, "close"], key
    assert window(minute, "ESZ2013", "2013-10-30 20:14", "2013-10-30 20:15")["close"].item() == 1760.75
    assert lean_daily.loc[("ESZ2013", utc("2013-10-30")), "close"] == 1759.50


def test_full_session_is_leans_window_plus_the_overnight(minute, lean_daily):
    built = daily_from_minute(minute, "ES").daily.set_index(["contract", "ts"])
    session = built.loc[("ESZ2013", utc("2013-10-30"))]
    lean = lean_daily.loc[("ESZ2013", utc("2013-10-30"))]
    night = window(minute, "ESZ2013", "2013-10-29 22:00", "2013-10-30 13:30")  # 17:00 CDT .. 08:30 CDT
    assert ohlcv(night) == [1768.25, 1773.25, 1765.75, night["close"].iloc[-1], 156_183.0] and len(night) == 904
    assert session["open"] == night["open"].iloc[0] == 1768.25 != lean["open"] == 1769.25
    assert session["high"] == max(lean["high"], night["high"].max()) == 1773.25 != lean["high"] == 1770.50
    assert session["low"] == min(lean["low"], night["low"].min()) == lean["low"] == 1751.75
    assert session["close"] == lean["close"] == 1759.50
    assert session["volume"] == lean["volume"] + night["volume"].sum() == 1_755_048
    assert session["bars"] == 1339 == len(night) + 435


def test_2013_bars_after_todays_1600_ct_close_are_quarantined_as_break(minute):
    q = daily_from_minute(minute, "ES").quarantined
    q = q[q["ts"] < utc("2013-11-01")]
    assert set(q["reason"]) == {OUTSIDE_BREAK}
    for day, volume in (("2013-10-29", 3069.0), ("2013-10-30", 1819.0)):
        rows = q[(q["ts"] >= utc(day)) & (q["ts"] < utc(day) + pd.Timedelta(days=1))]
        want = pd.date_range(utc(f"{day} 21:00"), utc(f"{day} 21:14"), freq="min")  # 16:00-16:14 CDT
        assert list(rows["ts"]) == list(want) and rows["volume"].sum() == volume
    assert np.isnan(daily_from_minute(minute, "ES").daily.set_index(["contract", "ts"])
                    .loc[("ESZ2013", utc("2013-10-30")), "open_interest"])  # no 2013-10 OI file
