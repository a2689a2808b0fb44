"""Intraday use case and minute sample generator, on small hand-made and generated bars.

Hand-worked: a two-contract series with one roll (the roll bar, the gap, the
Panama shift), the continuity check catching a planted jump, the series key,
the interval check, and the generator's bars all inside the sessions
(checked with the Chicago clock, not with fbt's session code).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog import market_spec
from fbt_pipelines.catalog.contracts import listed_contracts
from fbt_pipelines.errors import DataError
from fbt_pipelines.futures.roll_rules import RollRule
from fbt_pipelines.usecases import intraday as uc

ES = market_spec("ES")
CONTRACTS = listed_contracts(ES, 2023, 2025)


def test_interval_and_series_key():
    assert uc.series_key("ES", "1m") == "ES|1m"
    assert uc.series_key("ES", "1h", dt.date(2024, 1, 2), None) == "ES|1h|2024-01-02.."
    for bad in ("1d", "5m", "", "1M"):
        with pytest.raises(DataError, match="1m or 1h"):
            uc.check_interval(bad)
    with pytest.raises(DataError, match="start '2024-13-01'"):
        uc.parse_day("2024-13-01", "start")


def _bars() -> pd.DataFrame:
    """Hourly bars of ESH2024 and ESM2024 over three sessions (Mar 6, 7, 8 2024; CST = UTC-6).

    Session Mar 7 runs 23:00 UTC Mar 6 .. 22:00 UTC Mar 7. Both contracts
    trade every hour; ESM's volume is above ESH's from the Mar 7 session on,
    so a volume rule rolls on Mar 7 at ESH's last bar of that session
    (21:00 UTC Mar 7).
    """
    rows = []
    for day in (6, 7, 8):
        start = pd.Timestamp(2024, 3, day - 1, 23, tz="UTC")
        for h in range(23):
            ts = start + pd.Timedelta(hours=h)
            base = 5000.0 + 10 * (day - 6) + h * 0.25
            rows.append(("ESH2024", ts, base, 100 if day == 6 else 50))
            rows.append(("ESM2024", ts, base + 50.0 + (h % 3) * 0.25, 60 if day == 6 else 200))
    frame = pd.DataFrame(rows, columns=["contract", "ts", "close", "volume"])
    return frame.assign(open=frame["close"], high=frame["close"] + 1, low=frame["close"] - 1,
                        open_interest=np.nan, root="ES")


def test_roll_at_the_sessions_last_bar_and_panama_by_hand():
    bars = _bars()
    sb = uc.sessioned_bars(bars, ES)
    assert len(sb) == len(bars) and sb.outside == {}
    rolls = uc.intraday_roll_schedule(sb, CONTRACTS, RollRule.parse("volume", ES), "ES|1h", "1h")
    sched = rolls.schedule
    assert len(sched) == 1
    roll = sched.iloc[0]
    assert pd.Timestamp(roll["roll_date"]) == pd.Timestamp("2024-03-07", tz="UTC")
    assert pd.Timestamp(roll["roll_ts"]) == pd.Timestamp("2024-03-07 21:00", tz="UTC")
    # at 21:00 (h = 22): ESH 5010 + 5.5 = 5015.5, ESM 5015.5 + 50 + (22 % 3) * 0.25 = 5065.75
    assert (roll["from_close"], roll["to_close"], roll["gap"]) == (5015.5, 5065.75, 50.25)
    series = uc.intraday_continuous(sb, sched, rolls.start_contract, CONTRACTS, "ES|1h", "1h")
    p = series.prices
    assert len(p) == 3 * 23 and series.bad_bars == 0 and series.last_segment_diff == 0.0
    assert p["roll"].sum() == 1 and p.loc[p["roll"], "ts"].iloc[0] == roll["roll_ts"]
    old = p["ts"] <= roll["roll_ts"]
    assert (p.loc[old, "contract"] == "ESH2024").all() and (p.loc[~old, "contract"] == "ESM2024").all()
    np.testing.assert_array_equal(p.loc[old, "close"], p.loc[old, "raw_close"] + 50.25)
    np.testing.assert_array_equal(p.loc[~old, "close"], p.loc[~old, "raw_close"])
    assert (p["session"].dt.day.to_numpy() == np.repeat([6, 7, 8], 23)).all()


def test_continuity_check_catches_a_jump():
    bars = _bars()
    sb = uc.sessioned_bars(bars, ES)
    rolls = uc.intraday_roll_schedule(sb, CONTRACTS, RollRule.parse("volume", ES), "k", "1h")
    p = uc.intraday_continuous(sb, rolls.schedule, rolls.start_contract, CONTRACTS, "k", "1h").prices
    close = p["close"].to_numpy().copy()
    ts = uc.utc_ns(p["ts"])
    code = np.searchsorted(sb.contracts, p["contract"].to_numpy(dtype=object))
    assert uc.continuity_errors(close, p["raw_close"].to_numpy(), ts, code, sb) == 0
    close[10:] += 1.0  # a level jump: the bar at 10 moves by 1 point more than its contract
    assert uc.continuity_errors(close, p["raw_close"].to_numpy(), ts, code, sb) == 1


def test_bars_outside_sessions_are_left_out_with_their_reason():
    bars = _bars()
    extra = bars.iloc[:1].assign(ts=pd.Timestamp("2024-03-07 22:30", tz="UTC"))  # 16:30 CT: maintenance break
    sb = uc.sessioned_bars(pd.concat([bars, extra], ignore_index=True), ES)
    assert sb.outside == {"outside session: break": 1} and len(sb) == len(bars)
    windowed = uc.sessioned_bars(bars, ES, dt.date(2024, 3, 7), dt.date(2024, 3, 7))
    assert len(windowed) == 2 * 23 and windowed.outside == {"outside the window": 4 * 23}


def test_generated_minutes_lie_inside_globex_sessions_and_repeat():
    from fbt_pipelines.marketdata.sample_minutes import simulate_minutes

    a = simulate_minutes(ES, dt.date(2024, 3, 4), dt.date(2024, 3, 8), seed=1)
    b = simulate_minutes(ES, dt.date(2024, 3, 4), dt.date(2024, 3, 8), seed=1)
    frame = a.frame()
    pd.testing.assert_frame_equal(frame, b.frame())
    local = pd.DatetimeIndex(frame["ts"]).tz_convert("America/Chicago")
    minute = local.hour * 60 + local.minute
    assert not ((minute >= 16 * 60) & (minute < 17 * 60)).any()  # no bar in the maintenance break
    assert (local.dayofweek != 5).all()  # none on a Saturday
    per_contract = frame.groupby("contract").size()
    assert per_contract["ESH2024"] == 5 * 1380 and per_contract["ESM2024"] == 5 * 1380
    ok = (frame["low"] <= frame[["open", "close"]].min(axis=1)) & (frame[["open", "close"]].max(axis=1) <= frame["high"])
    assert ok.all()
    assert np.allclose(frame["close"] / 0.25, np.round(frame["close"] / 0.25))


def test_intraday_summary_annualises_by_bars_per_session():
    equity = np.array([100.0, 101.0, 100.5, 102.0, 101.0])
    r = equity[1:] / equity[:-1] - 1
    out = uc.intraday_summary(equity, {"sharpe": 0.0, "cagr": 0.0}, ES, "1h")
    assert out["bars_per_session"] == 23 and out["periods_per_year"] == 23 * 252
    assert out["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(23 * 252))
    assert out["cagr"] == pytest.approx((101.0 / 100.0) ** (23 * 252 / 4) - 1)
