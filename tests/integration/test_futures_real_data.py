"""Roll rules, back-adjustment and carry on real LEAN data, through the warehouse.

The ES (Oct-Dec 2013) and GC (one week of Oct 2013) LEAN zips are ingested
with :func:`ingest_path` into a DuckDB file; every expected value is computed
here independently from the raw zip text (``zipfile`` + ``csv``), never from
the warehouse.

ES facts used below (raw files ``es_trade_201312.csv`` / ``es_trade_201403.csv``):
ESZ2013's last trade is Fri 2013-12-20 (third Friday), so its calendar
backstop ``calendar:5`` is Fri 2013-12-13. ESH2014's volume first exceeds
ESZ2013's on 2013-12-13 (868,208 vs 347,764; the day before 354,874 vs
1,113,344). Open interest is sparse (snapshots on 10-06..10-11, 12-01, 12-16
and 12-20 only) and ESH2014's first exceeds ESZ2013's on 12-20.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import zipfile
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog import listed_contracts, market_spec, parse_contract_id
from fbt_pipelines.futures.back_adjust import (
    AdjustmentMethod,
    roll_continuity_errors,
    roll_yield,
)
from fbt_pipelines.futures.continuous import build_continuous
from fbt_pipelines.futures.roll_rules import RollRule, build_roll_schedule
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.ingest.files import ingest_path

LEAN = Path(__file__).resolve().parents[1] / "fixtures" / "lean"
ES_TRADE, ES_OI = LEAN / "es_trade.zip", LEAN / "es_openinterest.zip"
GC_TRADE, GC_OI = LEAN / "comex" / "daily" / "gc_trade.zip", LEAN / "comex" / "daily" / "gc_openinterest.zip"
MONTHS = "FGHJKMNQUVXZ"
END_2013 = pd.Timestamp("2014-01-01", tz="UTC")


# --- raw files, read independently --------------------------------------------------------------


def raw_rows(zip_path: Path, yyyymm: str) -> dict[dt.date, list[str]]:
    """Rows of one contract's inner CSV: date -> the fields after the time stamp (as text)."""
    with zipfile.ZipFile(zip_path) as zf:
        name = next(n for n in zf.namelist() if n.endswith(f"_{yyyymm}.csv"))
        text = zf.read(name).decode("utf-8")
    out = {}
    for row in csv.reader(io.StringIO(text)):
        if row:
            out[dt.datetime.strptime(row[0], "%Y%m%d %H:%M").date()] = row[1:]
    return out


def raw_close(zip_path: Path, yyyymm: str) -> dict[dt.date, float]:
    return {d: float(f[3]) for d, f in raw_rows(zip_path, yyyymm).items()}


def raw_volume(zip_path: Path, yyyymm: str) -> dict[dt.date, int]:
    return {d: int(f[4]) for d, f in raw_rows(zip_path, yyyymm).items()}


def raw_oi(zip_path: Path, yyyymm: str) -> dict[dt.date, int]:
    return {d: int(f[0]) for d, f in raw_rows(zip_path, yyyymm).items()}


def utc(day: dt.date | str) -> pd.Timestamp:
    return pd.Timestamp(str(day), tz="UTC")


# --- the warehouse ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conn(tmp_path_factory):
    path = tmp_path_factory.mktemp("real") / "warehouse.duckdb"
    c = duckdb.connect(str(path))
    for zip_path in (ES_TRADE, GC_TRADE):  # open interest comes from the companion zip next to each
        results = ingest_path(c, zip_path)
        assert results and all(r.status == "ok" and r.quarantined == 0 for r in results)
    yield c
    c.close()


@pytest.fixture(scope="module")
def es_bars(conn) -> pd.DataFrame:
    bars = wh.read_bars(conn, "ES")
    return bars[bars["ts"] < END_2013].reset_index(drop=True)


@pytest.fixture(scope="module")
def es_contracts():
    return listed_contracts(market_spec("ES"), 2013, 2015)


def test_warehouse_holds_the_raw_es_bars(es_bars) -> None:
    for cid, yyyymm in (("ESZ2013", "201312"), ("ESH2014", "201403")):
        closes = raw_close(ES_TRADE, yyyymm)
        got = es_bars[es_bars["contract"] == cid]
        assert [t.date() for t in got["ts"]] == sorted(closes)
        assert got["close"].tolist() == [closes[d] for d in sorted(closes)]
        assert got["volume"].tolist() == [raw_volume(ES_TRADE, yyyymm)[d] for d in sorted(closes)]


# --- (a) volume crossover -----------------------------------------------------------------------


def first_volume_crossing() -> dt.date:
    """First session where both trade and ESH2014's volume exceeds ESZ2013's, from the raw text."""
    z, h = raw_volume(ES_TRADE, "201312"), raw_volume(ES_TRADE, "201403")
    return next(d for d in sorted(set(z) & set(h)) if h[d] > z[d])


def test_volume_roll_is_the_first_session_esh14_outtrades_esz13(es_bars, es_contracts) -> None:
    crossing = first_volume_crossing()
    assert crossing == dt.date(2013, 12, 13)
    rule = RollRule.parse("volume", market_spec("ES"))
    assert rule == RollRule("volume", days_before=5)
    schedule = build_roll_schedule("ES", es_contracts, es_bars, rule)
    assert len(schedule) == 1  # ESH2014's own roll (March 2014) is beyond the data
    roll = schedule.iloc[0]
    assert (roll["from_contract"], roll["to_contract"], roll["roll_date"]) == ("ESZ2013", "ESH2014", utc(crossing))
    z, h = raw_close(ES_TRADE, "201312"), raw_close(ES_TRADE, "201403")
    assert (roll["from_close"], roll["to_close"]) == (z[crossing], h[crossing]) == (1775.0, 1768.75)
    assert roll["gap"] == h[crossing] - z[crossing] == -6.25
    assert roll["ratio"] == h[crossing] / z[crossing]


@pytest.mark.parametrize("backstop, expected", [
    (3, dt.date(2013, 12, 13)),  # backstop Tue 12-17: the crossing on 12-13 decides
    (5, dt.date(2013, 12, 13)),  # backstop Fri 12-13 = the crossing
    (6, dt.date(2013, 12, 12)),  # backstop Thu 12-12, before the crossing: the backstop decides
])
def test_volume_roll_never_after_the_backstop(es_bars, es_contracts, backstop, expected) -> None:
    schedule = build_roll_schedule("ES", es_contracts, es_bars, RollRule.parse(f"volume,backstop={backstop}"))
    assert schedule["roll_date"].tolist() == [utc(expected)]
    assert schedule["rule"].tolist() == [f"volume,backstop={backstop}"]


# --- (b) the Panama series ----------------------------------------------------------------------


def test_panama_series_is_raw_esh14_after_the_roll_and_shifted_esz13_up_to_it(es_bars, es_contracts) -> None:
    series = build_continuous("ES", es_contracts, es_bars, RollRule.parse("volume", market_spec("ES")),
                              AdjustmentMethod.PANAMA)
    roll = first_volume_crossing()
    z, h = raw_close(ES_TRADE, "201312"), raw_close(ES_TRADE, "201403")
    gap = h[roll] - z[roll]  # from the raw files
    prices = series.prices
    days = [t.date() for t in prices["ts"]]
    expected_days = sorted([d for d in z if d <= roll] + [d for d in h if roll < d < END_2013.date()])
    assert days == expected_days
    before = [d <= roll for d in days]
    for d, contract, close, raw in zip(days, prices["contract"], prices["close"], prices["raw_close"]):
        if d <= roll:
            assert (contract, raw, close) == ("ESZ2013", z[d], z[d] + gap), d
        else:
            assert (contract, raw, close) == ("ESH2014", h[d], h[d]), d
    assert prices["roll"].tolist() == [d == roll for d in days]
    # the adjusted gap on the roll date is zero: old contract adjusted == new contract's close there
    assert prices.loc[np.array(before), "close"].iloc[-1] == h[roll]
    assert roll_continuity_errors(prices, es_bars) == 0
    assert not series.non_positive


# --- (c) open interest --------------------------------------------------------------------------


def first_oi_crossing(until: dt.date) -> dt.date | None:
    """First date <= until where both contracts trade and have an OI snapshot and ESH2014's exceeds."""
    zc, hc = raw_close(ES_TRADE, "201312"), raw_close(ES_TRADE, "201403")
    zo, ho = raw_oi(ES_OI, "201312"), raw_oi(ES_OI, "201403")
    common = sorted(d for d in set(zc) & set(hc) & set(zo) & set(ho) if d <= until and ho[d] > zo[d])
    return common[0] if common else None


def test_sparse_open_interest_is_joined_only_where_a_snapshot_exists(es_bars) -> None:
    esz = es_bars[es_bars["contract"] == "ESZ2013"].set_index("ts")["open_interest"]
    snapshots = raw_oi(ES_OI, "201312")
    assert sorted(t.date() for t in esz.dropna().index) == sorted(snapshots)
    assert all(esz[utc(d)] == v for d, v in snapshots.items())
    assert esz.isna().sum() == len(esz) - len(snapshots) == 52


def test_open_interest_roll_falls_back_to_the_backstop_when_oi_never_crosses_before_it(es_bars, es_contracts) -> None:
    # Backstop 5 business days before ESZ2013's last trade (12-20) = 12-13. On every snapshot up to
    # then ESZ2013 leads (12-01: 2,798,054 vs 105,989); sessions without a snapshot are no crossing.
    assert first_oi_crossing(dt.date(2013, 12, 13)) is None
    schedule = build_roll_schedule("ES", es_contracts, es_bars, RollRule.parse("open_interest", market_spec("ES")))
    assert schedule["roll_date"].tolist() == [utc("2013-12-13")]
    assert schedule[["from_contract", "to_contract"]].values.tolist() == [["ESZ2013", "ESH2014"]]


def test_open_interest_roll_on_the_first_snapshot_where_esh14_leads(es_bars, es_contracts) -> None:
    # backstop=0: the roll may wait until ESZ2013's last trade, 12-20. The 12-16 snapshot still has
    # ESZ2013 ahead (1,701,691 vs 1,445,598); 12-17..12-19 have no snapshot; on 12-20 ESH2014 leads.
    crossing = first_oi_crossing(dt.date(2013, 12, 20))
    assert crossing == dt.date(2013, 12, 20)
    schedule = build_roll_schedule("ES", es_contracts, es_bars, RollRule.parse("open_interest,backstop=0"))
    assert schedule["roll_date"].tolist() == [utc(crossing)]
    z, h = raw_close(ES_TRADE, "201312"), raw_close(ES_TRADE, "201403")
    assert schedule["gap"].tolist() == [h[crossing] - z[crossing]] == [6.25]


def test_a_missing_front_snapshot_is_no_crossing(es_bars, es_contracts) -> None:
    # Drop ESZ2013's 12-16 snapshot: ESH2014's 1,445,598 that day must not count as exceeding an
    # unknown value (it did when NaN was read as 0), so the roll stays on 12-20.
    bars = es_bars.copy()
    bars.loc[(bars["contract"] == "ESZ2013") & (bars["ts"] == utc("2013-12-16")), "open_interest"] = pd.NA
    schedule = build_roll_schedule("ES", es_contracts, bars, RollRule.parse("open_interest,backstop=0"))
    assert schedule["roll_date"].tolist() == [utc("2013-12-20")]


# --- (d) GC term structure and roll yield -------------------------------------------------------

GC_DAY = dt.date(2013, 10, 11)


def term_structure(conn, root: str, day: dt.date) -> list[tuple[str, float]]:
    """(contract, close) of every contract with a bar on ``day``, nearest delivery month first."""
    rows = conn.execute("SELECT contract, close FROM bars WHERE root = ? AND interval = '1d' AND ts = ?",
                        [root, utc(day).to_pydatetime()]).fetchall()
    return sorted(rows, key=lambda r: parse_contract_id(r[0])[1:])


def raw_gc_curve(day: dt.date) -> dict[str, float]:
    with zipfile.ZipFile(GC_TRADE) as zf:
        months = sorted(n[-10:-4] for n in zf.namelist())
    curve = {}
    for yyyymm in months:
        closes = raw_close(GC_TRADE, yyyymm)
        if day in closes:
            curve[f"GC{MONTHS[int(yyyymm[4:]) - 1]}{yyyymm[:4]}"] = closes[day]
    return curve


def test_gc_term_structure_matches_the_raw_files(conn) -> None:
    curve = term_structure(conn, "GC", GC_DAY)
    raw = raw_gc_curve(GC_DAY)
    assert len(curve) == len(raw) == 13  # every file but the two 2020 ones trades on 2013-10-11
    assert dict(curve) == raw
    months = [parse_contract_id(c)[1:] for c, _ in curve]
    assert months == sorted(months) and len(set(months)) == len(months)
    assert months[0] == (2013, 10) and months[-1] == (2016, 12)
    assert curve[:3] == [("GCV2013", 1269.9), ("GCX2013", 1269.3), ("GCZ2013", 1271.7)]


def test_gc_roll_yield_of_the_held_contract_is_the_hand_formula(conn) -> None:
    spec = market_spec("GC")
    bars = wh.read_bars(conn, "GC")
    bars = bars[bars["ts"] < END_2013].reset_index(drop=True)
    contracts = listed_contracts(spec, 2013, 2017)  # cycle GJMQVZ: the serial GCX2013 is not listed
    series = build_continuous("GC", contracts, bars, RollRule.parse(spec.roll_rule, spec))
    # calendar:5 off first notice: GCV2013 (first notice 2013-09-30) was rolled out of before the data
    # starts, GCZ2013's roll (5 business days before first notice 2013-11-29) is after it ends.
    assert len(series.schedule) == 0
    assert set(series.prices["contract"]) == {"GCZ2013"}
    carry = roll_yield(bars, series.prices, contracts)
    on_day = series.prices["ts"] == utc(GC_DAY)
    assert on_day.sum() == 1
    raw = raw_gc_curve(GC_DAY)
    held, nxt = raw["GCZ2013"], raw["GCG2014"]  # next listed month with a close that day
    # last trades (third-last business day of the month): GCZ2013 2013-12-27, GCG2014 2014-02-26
    days = (dt.date(2014, 2, 26) - dt.date(2013, 12, 27)).days
    assert days == 61
    expected = (held - nxt) / nxt * 365.0 / days
    assert math.isclose(float(carry[on_day].iloc[0]), expected, rel_tol=1e-12)
    assert expected > 0  # 1271.7 over 1271.5: backwardation between these two months that day
