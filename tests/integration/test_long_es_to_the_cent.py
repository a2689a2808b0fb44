"""Acceptance: one ES contract held long for four years, P&L to the cent from raw prices.

Sample ES data 2015-2018 is written as canonical CSV, ingested into a DuckDB
warehouse, turned into the Panama series under ES's default roll rule
(``volume``, backstop 5), and run through the engine with a constant target
of +1 contract (fill at the next open, 1 tick slippage, catalogue commission).

The expected P&L is computed here from the RAW per-contract CSV text only
(exact decimals), with the roll dates and contracts of the schedule:

- entry: the first held contract's raw open on the fill bar (the series'
  second bar) plus 1 tick of slippage (0.25 points, the price paid);
- each roll: sell the old contract at its raw close on the roll date, buy the
  new one at its raw close that day; each leg costs 1 tick (12.50 USD) of
  slippage and the commission;
- final mark: the held contract's raw close on the last bar;
- P&L = sum over held contracts of (exit - entry) x 50 - commission 2.10 x
  (1 + 2 x rolls) - slippage 12.50 x 2 x rolls (the entry's tick is already
  in its price).
"""

from __future__ import annotations

import csv
import datetime as dt
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog import listed_contracts, market_spec
from fbt_pipelines.engine.futures_engine import EngineConfig, run_backtest
from fbt_pipelines.futures.back_adjust import AdjustmentMethod, roll_continuity_errors
from fbt_pipelines.futures.continuous import build_continuous
from fbt_pipelines.futures.roll_rules import RollRule
from fbt_pipelines.marketdata.sample_data import write_sample_data
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.ingest.files import bar_sources, ingest_path

START, END = dt.date(2015, 1, 2), dt.date(2018, 12, 31)


def raw_prices(folder: Path) -> dict[tuple[str, dt.date], dict[str, Decimal]]:
    """(contract, day) -> {"open", "close"} as exact decimals, from the CSV text."""
    out = {}
    for path in sorted(folder.glob("*.csv")):
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                out[(row["contract"], dt.date.fromisoformat(row["ts"][:10]))] = {
                    "open": Decimal(row["open"]), "close": Decimal(row["close"])}
    return out


@pytest.fixture(scope="module")
def es(tmp_path_factory):
    root = tmp_path_factory.mktemp("long_es")
    spec = market_spec("ES")
    summary = write_sample_data(root / "sample", [spec], start=START, end=END)
    assert summary.files["ES"] > 16
    conn = duckdb.connect(str(root / "warehouse.duckdb"))
    try:
        results = [r for p in bar_sources(root / "sample" / "ES") for r in ingest_path(conn, p)]
        assert sum(r.accepted for r in results) == summary.rows["ES"]
        assert sum(r.quarantined for r in results) == 0
        bars = wh.read_bars(conn, "ES")
    finally:
        conn.close()
    contracts = listed_contracts(spec, START.year, END.year + 2)
    series = build_continuous("ES", contracts, bars, RollRule.parse(spec.roll_rule, spec), AdjustmentMethod.PANAMA)
    return spec, bars, series, raw_prices(root / "sample" / "ES")


def test_long_one_es_contract_pnl_equals_raw_contract_pnl_to_the_cent(es) -> None:
    spec, bars, series, raw = es
    prices, schedule = series.prices, series.schedule
    assert spec.roll_rule == "volume" and spec.multiplier == 50 and spec.commission == 2.10
    assert spec.tick_size * spec.multiplier == 12.50
    assert len(schedule) >= 15  # quarterly rolls over four years
    assert roll_continuity_errors(prices, bars) == 0

    result = run_backtest(prices, np.ones(len(prices), dtype=np.int64), spec,
                          EngineConfig(slippage_ticks=1.0, commission=None))

    # --- independent: raw contract prices, the schedule's dates and contracts ---
    days = [pd.Timestamp(t).date() for t in prices["ts"]]
    fill_day, last_day = days[1], days[-1]  # target +1 decided on bar 0's close fills at bar 1's open
    rolls = [(pd.Timestamp(r.roll_date).date(), r.from_contract, r.to_contract)
             for r in schedule.itertuples(index=False)]
    after_entry = [r for r in rolls if r[0] >= fill_day]   # a roll on the fill bar rolls the new position
    before_entry = [r for r in rolls if r[0] < fill_day]
    first_held = after_entry[0][1] if after_entry else schedule["to_contract"].iloc[-1]
    if before_entry:
        assert first_held == before_entry[-1][2]
    tick = Decimal("0.25")
    multiplier, commission, slippage = Decimal(50), Decimal("2.10"), Decimal("12.50")

    held, entry = first_held, raw[(first_held, fill_day)]["open"] + tick
    points = Decimal(0)
    for day, old, new in after_entry:
        assert old == held
        points += raw[(old, day)]["close"] - entry      # sell the old contract at its raw close
        held, entry = new, raw[(new, day)]["close"]     # buy the new one at its raw close that day
    points += raw[(held, last_day)]["close"] - entry    # final mark
    assert held == prices["contract"].iloc[-1]
    sides = 1 + 2 * len(after_entry)
    expected = points * multiplier - commission * sides - slippage * 2 * len(after_entry)

    assert abs(Decimal(repr(result.net_pnl)) - expected) < Decimal("0.005"), (result.net_pnl, expected)
    assert round(result.net_pnl, 2) == float(expected.quantize(Decimal("0.01")))

    # --- the trades the engine recorded ---
    trades = result.trades
    entries = trades[trades["kind"] == "trade"]
    roll_trades = trades[trades["kind"] == "roll"]
    assert len(entries) == 1 and int(entries["contracts"].iloc[0]) == 1
    assert pd.Timestamp(entries["ts"].iloc[0]).date() == fill_day
    assert entries["contract"].iloc[0] == first_held
    assert Decimal(repr(float(entries["raw_price"].iloc[0]))).quantize(Decimal("0.01")) == \
        raw[(first_held, fill_day)]["open"] + tick
    assert len(roll_trades) == len(after_entry) == len(schedule) - len(before_entry)
    assert [pd.Timestamp(t).date() for t in roll_trades["ts"]] == [r[0] for r in after_entry]
    assert roll_trades["contract"].tolist() == [r[1] for r in after_entry]
    np.testing.assert_allclose(roll_trades["raw_price"], [float(raw[(o, d)]["close"]) for d, o, _ in after_entry],
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(roll_trades["to_raw_price"], [float(raw[(n, d)]["close"]) for d, _, n in after_entry],
                               rtol=0, atol=1e-6)
    costs = float(trades["commission"].sum() + trades["slippage"].sum())
    assert round(costs, 2) == float(commission * sides + slippage * sides)
    assert (result.bars["position"].iloc[1:] == 1).all() and result.bars["position"].iloc[0] == 0
