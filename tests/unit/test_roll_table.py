"""Why each roll happened, and what it cost: the roll table, hand-worked per trigger kind.

The hand market (XNYS sessions 2024-02-26 .. 2024-03-22, index i), two
contracts: TSH2024 (last trade Fri 2024-03-15) and TSM2024 (beyond the data):

    i   date   TSH2024 close  TSM2024 close   H vol / M vol       H OI / M OI
    3   02-29     4996.00       5007.25        100,000 / 1,000     50,000 / 30,000
    5   03-04     4998.00       5009.75        100,000 / 1,000     40,000 / 45,000  <- OI crosses
    6   03-05     4999.00       5011.00        100,000 / 100,000   40,000 / 45,000  (equal: no crossing)
    7   03-06     5000.00       5012.25         80,000 / 120,000   ...              <- volume crosses
    8   03-07     5001.00       5013.50         70,000 / 150,000
    9   03-08     5002.00       5014.75         60,000 / 150,000   <- 5 XNYS days before 03-15
   12   03-13     5005.00       5018.50
   14   03-15     5007.00       5021.00                            <- TSH2024 last trade

closes: H(i) = 5000 + (i - 7); M(i) = H(i) + 12.25 + 0.25 (i - 7): the gap
grows by 0.25 a session, so each roll date has its own gap. Costs: an ES-like
spec (multiplier 50 USD/point, tick 0.25, commission 2.10 USD/side): one
contract rolled = 2 x (2.10 + 1 x 0.25 x 50) = 29.20 USD; gap USD = gap x 50.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog import market_spec
from fbt_pipelines.engine.futures_engine import EngineConfig, run_backtest
from fbt_pipelines.futures.roll_rules import RollRule, build_roll_schedule
from fbt_pipelines.futures.roll_schedule import (ROLL_TABLE_COLUMNS, roll_cost_per_contract,
                                                 with_roll_costs)
from fbt_pipelines.reports.roll_table import roll_table
from fbt_pipelines.reports.tear_sheet import write_tear_sheet
from tests.unit._futures_data import ROOT, make_contract, random_market, xnys_sessions

H, M = "TSH2024", "TSM2024"
SESSIONS = xnys_sessions("2024-02-26", "2024-03-22")
I0 = 7  # 2024-03-06
ES_LIKE = dataclasses.replace(market_spec("ES"), multiplier=50.0, tick_size=0.25, commission=2.10)


def contracts(first_notice: dt.date | None = None):
    return [make_contract(H, dt.date(2024, 3, 15), first_notice), make_contract(M, dt.date(2024, 6, 21))]


def bars(m_volume: dict[str, float] | None = None, drop: tuple[str, str] | None = None) -> pd.DataFrame:
    """The hand market's long bars; ``m_volume`` overrides TSM2024's volume on some dates."""
    n = len(SESSIONS)
    i = np.arange(n)
    days = [f"{d:%m-%d}" for d in SESSIONS]
    assert days[I0] == "03-06" and days[9] == "03-08" and days[14] == "03-15" and len(days) == 20
    h_close = 5000.0 + (i - I0)
    m_close = h_close + 12.25 + 0.25 * (i - I0)
    h_vol = np.where(i < 7, 100_000.0, np.where(i == 7, 80_000.0, np.where(i == 8, 70_000.0, 60_000.0)))
    m_vol = np.where(i < 6, 1_000.0, np.where(i == 6, 100_000.0, np.where(i == 7, 120_000.0, 150_000.0)))
    for day, v in (m_volume or {}).items():
        m_vol[days.index(day)] = v
    h_oi = np.where(i < 5, 50_000.0, 40_000.0)
    m_oi = np.where(i < 5, 30_000.0, 45_000.0)
    rows = []
    for cid, close, vol, oi, alive in [(H, h_close, h_vol, h_oi, i <= 14), (M, m_close, m_vol, m_oi, i >= 0)]:
        for k in np.flatnonzero(alive):
            if drop == (cid, days[k]):
                continue
            rows.append((cid, ROOT, SESSIONS[k], close[k], vol[k], oi[k]))
    return pd.DataFrame(rows, columns=["contract", "root", "ts", "close", "volume", "open_interest"])


def one_roll(rule: RollRule, **kw) -> dict:
    schedule = build_roll_schedule(ROOT, contracts(kw.pop("first_notice", None)), bars(**kw), rule)
    assert len(schedule) == 1 and (schedule["from_contract"].iloc[0], schedule["to_contract"].iloc[0]) == (H, M)
    return with_roll_costs(schedule, ES_LIKE).iloc[0].to_dict()


def check(row: dict, date: str, from_close: float, to_close: float, trigger: str,
          volume=(np.nan, np.nan), oi=(np.nan, np.nan)) -> None:
    assert row["roll_date"] == pd.Timestamp(date, tz="UTC")
    assert (row["from_close"], row["to_close"]) == (from_close, to_close)
    assert row["trigger"] == trigger
    np.testing.assert_array_equal([row["from_volume"], row["to_volume"]], volume)
    np.testing.assert_array_equal([row["from_open_interest"], row["to_open_interest"]], oi)
    assert row["gap"] == to_close - from_close
    assert row["gap_usd"] == pytest.approx((to_close - from_close) * 50.0, abs=1e-9)
    assert row["cost_usd"] == pytest.approx(29.20, abs=1e-9)


def test_volume_crossover_names_the_session_and_both_volumes():
    # 03-05: 100,000 vs 100,000 is no crossing (strictly more); 03-06: 120,000 > 80,000
    row = one_roll(RollRule("volume", days_before=5))
    check(row, "2024-03-06", 5000.0, 5012.25, "volume crossover", volume=(80_000.0, 120_000.0))
    assert row["gap"] == 12.25 and row["gap_usd"] == pytest.approx(612.50)
    assert list(row) == ROLL_TABLE_COLUMNS  # the existing columns first, the new ones at the end


def test_volume_backstop_when_no_crossing_comes_first():
    # TSM2024 never trades more than TSH2024 through 03-08 (the backstop, 5 XNYS days before 03-15);
    # it does later (150,000 on 03-11), which must not delay the roll
    row = one_roll(RollRule("volume", days_before=5),
                   m_volume={"03-05": 90_000, "03-06": 70_000, "03-07": 60_000, "03-08": 55_000})
    check(row, "2024-03-08", 5002.0, 5014.75,
          "backstop: 5 business days before last trade (2024-03-15), no volume crossover",
          volume=(60_000.0, 55_000.0))
    assert row["gap_usd"] == pytest.approx(12.75 * 50)


def test_open_interest_crossover_uses_open_interest_not_volume():
    row = one_roll(RollRule("open_interest", days_before=5))
    check(row, "2024-03-04", 4998.0, 5009.75, "open interest crossover", oi=(40_000.0, 45_000.0))


def test_calendar_rolls_say_which_reference_and_how_many_days():
    check(one_roll(RollRule("calendar", days_before=5)), "2024-03-08", 5002.0, 5014.75,
          "calendar: 5 business days before last trade (2024-03-15)")
    # physically delivered: counts from first notice (03-14); 1 day before is 03-13
    check(one_roll(RollRule("calendar", days_before=1), first_notice=dt.date(2024, 3, 14)), "2024-03-13",
          5005.0, 5018.5, "calendar: 1 business day before first notice (2024-03-14)")
    check(one_roll(RollRule("calendar", days_before=0)), "2024-03-15", 5007.0, 5021.0,
          "calendar: on last trade (2024-03-15)")


def test_calendar_roll_moved_back_over_a_missing_close_says_so():
    check(one_roll(RollRule("calendar", days_before=5), drop=(H, "03-08")), "2024-03-07", 5001.0, 5013.5,
          "calendar: 5 business days before last trade (2024-03-15); moved back from 2024-03-08 "
          "(a contract without a close there)")


def test_first_of_month_roll():
    check(one_roll(RollRule("first_of_month", days_before=5)), "2024-02-29", 4996.0, 5007.25,
          "first of month: last session before 2024-03-01")


def test_trigger_numbers_are_causal():
    """Every bar after the roll session rewritten: the roll and its numbers stay the same."""
    base = bars()
    later = base["ts"] > pd.Timestamp("2024-03-06", tz="UTC")
    rng = np.random.default_rng(7)
    moved = base.copy()
    moved.loc[later, "volume"] = rng.integers(0, 10**6, later.sum()).astype(float)
    moved.loc[later, "open_interest"] = rng.integers(0, 10**6, later.sum()).astype(float)
    moved.loc[later, "close"] += rng.normal(0, 5, later.sum()).round(2)
    rule = RollRule("volume", days_before=5)
    a = build_roll_schedule(ROOT, contracts(), base, rule)
    b = build_roll_schedule(ROOT, contracts(), moved, rule)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("kind", ["volume", "open_interest"])
def test_crossover_numbers_match_the_bars_on_random_markets(seed, kind):
    """Each row's numbers are the bars' own on the roll date; a crossover is the FIRST one since the last roll."""
    contracts_, _, long = random_market(seed)
    rng = np.random.default_rng(seed)
    long = long.assign(volume=rng.integers(1, 1000, len(long)).astype(float),
                       open_interest=rng.integers(1, 1000, len(long)).astype(float))
    schedule = build_roll_schedule(ROOT, contracts_, long, RollRule(kind, days_before=5))
    assert len(schedule) >= 4
    wide = long.pivot(index="ts", columns="contract", values=kind)
    closes = long.pivot(index="ts", columns="contract", values="close")
    prev = None
    for r in schedule.itertuples(index=False):
        f, t = getattr(r, f"from_{kind}"), getattr(r, f"to_{kind}")
        assert (f, t) == (wide.at[r.roll_date, r.from_contract], wide.at[r.roll_date, r.to_contract])
        other = "volume" if kind == "open_interest" else "open_interest"
        assert np.isnan(getattr(r, f"from_{other}")) and np.isnan(getattr(r, f"to_{other}"))
        window = wide.loc[(wide.index > prev if prev is not None else wide.index == wide.index)
                          & (wide.index < r.roll_date)]
        both = closes.loc[window.index, [r.from_contract, r.to_contract]].notna().all(axis=1)
        earlier = (window[r.to_contract] > window[r.from_contract]) & both
        if r.trigger.endswith("crossover"):
            assert r.trigger == ("volume crossover" if kind == "volume" else "open interest crossover")
            assert t > f and not earlier.any()
        else:
            assert r.trigger.startswith("backstop: 5 business days before last trade (")
            assert not earlier.any()
        prev = r.roll_date


def test_roll_cost_is_what_the_engine_charges():
    """One contract held through a roll: the engine's roll fill costs exactly cost_usd."""
    es = market_spec("ES")
    assert roll_cost_per_contract(es) == pytest.approx(2 * (2.10 + 0.25 * 50.0))  # catalogue ES: 29.20 USD
    n = 4
    prices = pd.DataFrame({
        "ts": pd.date_range("2024-03-04", periods=n, freq="D", tz="UTC"), "contract": ["ESH4", "ESH4", "ESM4", "ESM4"],
        "open": [5000.0, 5001.0, 5002.0, 5003.0], "close": [5000.5, 5001.5, 5002.5, 5003.5],
        "raw_close": [5000.5, 5001.5, 5015.0, 5016.0], "roll": [False, True, False, False],
    })
    r = run_backtest(prices, np.array([1, 1, 1, 1]), es, EngineConfig(initial_capital=100_000.0))
    roll = r.trades[r.trades["kind"] == "roll"]
    assert len(roll) == 1 and int(roll["contracts"].iloc[0]) == 1
    assert float(roll["commission"].iloc[0] + roll["slippage"].iloc[0]) == pytest.approx(roll_cost_per_contract(es))


def test_roll_table_formats_every_roll():
    vol = with_roll_costs(build_roll_schedule(ROOT, contracts(), bars(), RollRule("volume", days_before=5)), ES_LIKE)
    table = roll_table(vol)
    # the open-interest columns are empty for a volume rule: left out
    assert list(table.columns) == ["date", "from", "to", "rule", "trigger", "from volume", "to volume",
                                   "gap (points)", "gap (USD)", "roll cost (USD)"]
    assert table.iloc[0].tolist() == ["2024-03-06", H, M, "volume,backstop=5", "volume crossover", "80,000",
                                      "120,000", "12.25", "612.50", "29.20"]
    cal = with_roll_costs(build_roll_schedule(ROOT, contracts(), bars(), RollRule("calendar", days_before=0)), ES_LIKE)
    assert roll_table(cal).iloc[0].tolist() == ["2024-03-15", H, M, "calendar:0", "calendar: on last trade (2024-03-15)",
                                                "14.00", "700.00", "29.20"]  # gap 5021 - 5007 = 14 points
    # a row stored before the trigger / cost columns existed shows "-" there
    old = vol[["root", "rule", "roll_date", "from_contract", "to_contract", "from_close", "to_close", "gap", "ratio"]]
    assert roll_table(old).iloc[0].tolist() == ["2024-03-06", H, M, "volume,backstop=5", "-", "12.25", "-", "-"]


def test_tear_sheet_has_the_rolls_section_with_every_row(tmp_path):
    vol = with_roll_costs(build_roll_schedule(ROOT, contracts(), bars(), RollRule("volume", days_before=5)), ES_LIKE)
    cal = with_roll_costs(build_roll_schedule(ROOT, contracts(), bars(), RollRule("calendar", days_before=5)), ES_LIKE)
    equity = pd.DataFrame({"ts": SESSIONS, "equity": np.linspace(100_000.0, 101_000.0, len(SESSIONS))})
    page = write_tear_sheet(tmp_path / "t.html", "rolls", equity, {}, pd.Series({ROOT: 1.0}), {},
                            monte_carlo_paths=0, rolls={ROOT: vol, "XX": cal, "YY": vol.iloc[0:0]}).read_text()
    assert "<h2>Rolls</h2>" in page
    assert "<h3>TS (1 roll)</h3>" in page and "<h3>XX (1 roll)</h3>" in page and "<h3>YY (0 rolls)</h3>" in page
    assert ("<tr><td>2024-03-06</td><td>TSH2024</td><td>TSM2024</td><td>volume,backstop=5</td>"
            "<td>volume crossover</td><td>80,000</td><td>120,000</td><td>12.25</td><td>612.50</td><td>29.20</td></tr>"
            ) in page
    assert ("<tr><td>2024-03-08</td><td>TSH2024</td><td>TSM2024</td><td>calendar:5</td>"
            "<td>calendar: 5 business days before last trade (2024-03-15)</td><td>12.75</td><td>637.50</td>"
            "<td>29.20</td></tr>") in page
    assert page.index("<h3>TS ") < page.index("<h3>XX ") < page.index("<h3>YY ")
    assert "no roll in this window" in page
    # without schedules there is no section
    bare = write_tear_sheet(tmp_path / "b.html", "bare", equity, {}, pd.Series({ROOT: 1.0}), {},
                            monte_carlo_paths=0).read_text()
    assert "<h2>Rolls</h2>" not in bare
