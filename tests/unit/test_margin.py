"""fbt_pipelines.futures.margin: LEAN margin history files and the per-bar
as-of lookup the engine takes.

Fixtures: ``tests/fixtures/lean/margins/{ES,NQ,GC}.csv``, byte-for-byte copies
of QuantConnect LEAN's ``Data/future/<exchange>/margins/<ROOT>.csv`` (see
``tests/fixtures/README.md``). Expected values below are either read off the
file text independently (plain string splitting, no pandas) or copied by hand
from the file, quoted next to each assertion.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog.specs import ContractSpec, market_spec
from fbt_pipelines.engine.futures_engine import EngineConfig, run_backtest
from fbt_pipelines.errors import DataError
from fbt_pipelines.futures.margin import MARGIN_COLUMNS, margin_per_bar, read_margin_history

MARGINS = Path(__file__).resolve().parents[1] / "fixtures" / "lean" / "margins"
ES_CSV = MARGINS / "ES.csv"

# the catalogue value, pinned and distinct from every value in ES.csv so a
# fallback to the catalogue cannot be mistaken for a file row
CATALOGUE = 12_345.0


@pytest.fixture(scope="module")
def es() -> ContractSpec:
    return dataclasses.replace(market_spec("ES"), initial_margin=CATALOGUE)


@pytest.fixture(scope="module")
def es_history() -> pd.DataFrame:
    return read_margin_history(ES_CSV)


def utc(*stamps: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(stamps), utc=True, format="mixed"))


# --------------------------------------------------------------------------- reading the real files


def test_es_file_parses_against_its_own_text(es_history: pd.DataFrame) -> None:
    lines = ES_CSV.read_text().split("\n")
    rows = [ln for ln in lines[1:] if ln]
    assert lines[0] == "date,initial,maintenance"
    assert len(rows) == 38  # the file: header + 38 rows, no final newline
    assert len(es_history) == len(rows)
    assert list(es_history.columns) == MARGIN_COLUMNS
    assert str(es_history["date"].dtype) == "datetime64[ns, UTC]"
    assert es_history["initial"].dtype == np.float64 and es_history["maintenance"].dtype == np.float64
    assert es_history.index.tolist() == list(range(38))

    def row(text: str) -> tuple[pd.Timestamp, float, float]:
        d, ini, mnt = text.split(",")
        return pd.Timestamp(f"{d[:4]}-{d[4:6]}-{d[6:]}", tz="UTC"), float(ini), float(mnt)

    for i in (0, -1):
        got = es_history.iloc[i]
        assert (got["date"], got["initial"], got["maintenance"]) == row(rows[i])
    # the same rows, by hand: first "20120326,4375,3500", last "20220121,11880,10800"
    assert tuple(es_history.iloc[0]) == (pd.Timestamp("2012-03-26", tz="UTC"), 4375.0, 3500.0)
    assert tuple(es_history.iloc[-1]) == (pd.Timestamp("2022-01-21", tz="UTC"), 11880.0, 10800.0)
    # every row, against the text
    assert [tuple(r) for r in es_history.itertuples(index=False)] == [row(r) for r in rows]
    assert (es_history["date"] == es_history["date"].dt.normalize()).all()  # UTC midnights


@pytest.mark.parametrize("name, rows, first, last", [
    ("NQ.csv", 39, ("2012-03-26", 2500.0, 2000.0), ("2022-01-21", 16500.0, 15000.0)),
    ("GC.csv", 66, ("2009-01-08", 4733.0, 4302.0), ("2022-01-21", 6600.0, 6000.0)),
])
def test_other_lean_files_parse(name: str, rows: int, first: tuple, last: tuple) -> None:
    h = read_margin_history(MARGINS / name)
    assert len(h) == rows == len((MARGINS / name).read_text().strip().split("\n")) - 1
    for got, (d, ini, mnt) in ((h.iloc[0], first), (h.iloc[-1], last)):
        assert (got["date"], got["initial"], got["maintenance"]) == (pd.Timestamp(d, tz="UTC"), ini, mnt)
    assert (h["maintenance"] <= h["initial"]).all()


def test_text_and_path_give_the_same_frame(es_history: pd.DataFrame) -> None:
    text = ES_CSV.read_text()
    pd.testing.assert_frame_equal(read_margin_history(text), es_history)
    pd.testing.assert_frame_equal(read_margin_history(str(ES_CSV)), es_history)
    # CRLF line ends, a byte-order mark and a final newline change nothing
    crlf = "\ufeff" + text.replace("\n", "\r\n") + "\r\n"
    pd.testing.assert_frame_equal(read_margin_history(crlf), es_history)


# --------------------------------------------------------------------------- as-of lookup


@pytest.mark.parametrize("stamp, expected, why", [
    ("2012-01-03", CATALOGUE, "before the first row (20120326): catalogue"),
    ("2012-03-25 23:59", CATALOGUE, "the minute before the first row takes effect"),
    ("2012-03-26", 4375.0, "exactly the first row's date: 20120326,4375"),
    ("2012-03-26 14:30", 4375.0, "later the same UTC day"),
    ("2012-09-23", 4375.0, "between 20120326 and 20120924: the earlier row"),
    ("2012-09-24", 3850.0, "exactly on the change date 20120924,3850"),
    ("2013-10-14", 4180.0, "between 20131003,4180 and 20131015,4510"),
    ("2013-10-15", 4510.0, "on 20131015,4510"),
    ("2020-03-18", 11660.0, "between 20200317,11660 and 20200319,13200"),
    ("2020-03-19", 13200.0, "on 20200319,13200"),
    ("2021-08-17", 12100.0, "20210813,12100 (same values as 20201211)"),
    ("2022-01-21", 11880.0, "on the last row 20220121,11880"),
    ("2030-06-28", 11880.0, "after the last row: it stays in force"),
])
def test_as_of_lookup_on_hand_picked_dates(es: ContractSpec, es_history: pd.DataFrame,
                                           stamp: str, expected: float, why: str) -> None:
    got = margin_per_bar(utc(stamp), es, es_history)
    assert got.tolist() == [expected], why


def test_lookup_of_a_whole_series_and_time_zones(es: ContractSpec, es_history: pd.DataFrame) -> None:
    ts = utc("2012-03-23", "2012-03-26", "2012-09-21", "2012-09-24", "2012-09-25")
    expected = [CATALOGUE, 4375.0, 4375.0, 3850.0, 3850.0]
    got = margin_per_bar(ts, es, es_history)
    assert got.dtype == np.float64 and got.tolist() == expected
    # naive stamps are UTC; other zones are converted to UTC first:
    # 2012-03-25 20:00 in Chicago (CDT, UTC-5) is 2012-03-26 01:00 UTC -> 4375
    assert margin_per_bar(ts.dt.tz_localize(None), es, es_history).tolist() == expected
    chicago = pd.Series(pd.DatetimeIndex(["2012-03-25 18:59", "2012-03-25 20:00"]).tz_localize("America/Chicago"))
    assert margin_per_bar(chicago, es, es_history).tolist() == [CATALOGUE, 4375.0]
    # a DatetimeIndex works as well as a Series
    assert margin_per_bar(pd.DatetimeIndex(ts), es, es_history).tolist() == expected


def test_no_history_is_the_catalogue_everywhere(es: ContractSpec, es_history: pd.DataFrame) -> None:
    ts = utc("2012-01-03", "2020-03-19", "2030-01-01")
    assert margin_per_bar(ts, es, None).tolist() == [CATALOGUE] * 3
    assert margin_per_bar(ts, es, es_history.iloc[:0]).tolist() == [CATALOGUE] * 3
    assert margin_per_bar(utc()[:0], es, es_history).shape == (0,)


def test_lookup_refuses_missing_stamps_and_bad_frames(es: ContractSpec, es_history: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="NaT"):
        margin_per_bar(pd.Series(pd.to_datetime(["2012-03-26", None], utc=True)), es, es_history)
    with pytest.raises(ValueError, match="strictly increase"):
        margin_per_bar(utc("2013-01-01"), es, es_history.iloc[::-1])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['initial'\]"):
        margin_per_bar(utc("2013-01-01"), es, es_history[["date"]])


# --------------------------------------------------------------------------- bad files


HEADER = "date,initial,maintenance"


@pytest.mark.parametrize("body, line, message", [
    # unsorted and repeated dates
    ([HEADER, "20120326,4375,3500", "20120924,3850,3500", "20120901,4000,3600"], 4,
     r"date 20120901 is not after 20120924 on line 3 \(dates must strictly increase\)"),
    ([HEADER, "20120326,4375,3500", "20120326,4400,3500"], 3, "date 20120326 is not after 20120326"),
    # maintenance above initial
    ([HEADER, "20120326,4375,3500", "20120924,3500,3850"], 3, "maintenance 3850 exceeds initial 3500"),
    # non-numeric, non-positive, not plain decimals
    ([HEADER, "20120326,abc,3500"], 2, "initial 'abc' is not a positive number"),
    ([HEADER, "20120326,4375,"], 2, "maintenance '' is not a positive number"),
    ([HEADER, "20120326,4375,3500", "20120924,-3850,-3500"], 3, "initial '-3850' is not a positive number"),
    ([HEADER, "20120326,0,0"], 2, "initial '0' is not a positive number"),
    ([HEADER, "20120326,nan,3500"], 2, "initial 'nan' is not a positive number"),
    ([HEADER, "20120326,inf,3500"], 2, "initial 'inf' is not a positive number"),
    ([HEADER, "20120326,4375,3e3"], 2, "maintenance '3e3' is not a positive number"),
    # dates
    ([HEADER, "2012-03-26,4375,3500"], 2, "date '2012-03-26' is not yyyyMMdd"),
    ([HEADER, "20120230,4375,3500"], 2, "date '20120230' is not a calendar date"),
    # wrong headers
    (["date,initial", "20120326,4375"], 1, "header 'date,initial', expected 'date,initial,maintenance'"),
    (["20120326,4375,3500", "20120924,3850,3500"], 1, "header '20120326,4375,3500'"),
    (["date,maintenance,initial", "20120326,3500,4375"], 1, "header 'date,maintenance,initial'"),
    # field counts and blank lines
    ([HEADER, "20120326,4375,3500,1"], 2, r"4 field\(s\) in '20120326,4375,3500,1', expected 3"),
    ([HEADER, "20120326,4375"], 2, r"2 field\(s\)"),
    ([HEADER, "20120326,4375,3500", "", "20120924,3850,3500"], 3, "blank line between rows"),
])
def test_bad_files_name_file_and_line(tmp_path: Path, body: list[str], line: int, message: str) -> None:
    path = tmp_path / "XX.csv"
    path.write_text("\n".join(body) + "\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: line {line}: {message}"):
        read_margin_history(path)
    # the same text passed directly is named by ``name``
    with pytest.raises(DataError, match=rf"^margins/XX\.csv: line {line}: {message}"):
        read_margin_history("\n".join(body) + "\n", name="margins/XX.csv")


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    ("\n\n", "empty file"),
    (HEADER + "\n", "no data rows after the header"),
])
def test_empty_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "EMPTY.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: {message}"):
        read_margin_history(path)


def test_unreadable_inputs(tmp_path: Path) -> None:
    missing = tmp_path / "NOPE.csv"
    with pytest.raises(DataError, match=rf"^{re.escape(str(missing))}: no such file"):
        read_margin_history(missing)
    latin = tmp_path / "LATIN.csv"
    latin.write_bytes(b"date,initial,maintenance\n20120326,4375\xe9,3500\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(latin))}: not UTF-8"):
        read_margin_history(latin)
    with pytest.raises(TypeError, match="path or CSV text"):
        read_margin_history(b"date,initial,maintenance\n")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- into the engine


def test_lean_history_drives_the_engine_margin_check(es: ContractSpec, es_history: pd.DataFrame) -> None:
    # ES around the March 2020 rises: 20200317,11660 then 20200319,13200.
    # Capital 60,000, no costs, flat prices (equity stays 60,000).
    ts = pd.date_range("2020-03-16", periods=5, freq="D", tz="UTC")  # 16th .. 20th
    n = len(ts)
    prices = pd.DataFrame({"ts": ts, "contract": ["ESM2020"] * n, "open": 2400.0, "close": 2400.0,
                           "raw_close": 2400.0, "roll": False})
    margins = margin_per_bar(prices["ts"], es, es_history)
    # 16th: 20200313,9900; 17th, 18th: 11660; 19th, 20th: 13200
    assert margins.tolist() == [9900.0, 11660.0, 11660.0, 13200.0, 13200.0]
    cfg = EngineConfig(initial_capital=60_000.0, slippage_ticks=0.0, commission=0.0)

    # the 5th contract asked for at the 18th's close fills on the 19th, at 13,200:
    # floor(60,000 / 13,200) = 4 fit, so it is refused (on the 19th and again on the 20th)
    r = run_backtest(prices, np.array([4, 4, 5, 5, 5]), es, cfg, margins)
    assert r.bars["position"].tolist() == [0, 4, 4, 4, 4]
    assert r.bars["margin"].tolist() == [0.0, 46_640.0, 46_640.0, 52_800.0, 52_800.0]  # 4 x 11,660; 4 x 13,200
    assert r.trades["contracts"].tolist() == [4, 0, 0]
    assert r.trades["refused"].tolist() == [0, 1, 1]

    # asked for one day earlier it fills on the 18th at 11,660 (5 x 11,660 = 58,300 fit) and is
    # kept after the rise: 5 x 13,200 = 66,000 in use > 60,000 equity, no forced reduction
    r = run_backtest(prices, np.array([4, 5, 5, 5, 5]), es, cfg, margins)
    assert r.bars["position"].tolist() == [0, 4, 5, 5, 5]
    assert r.bars["margin"].tolist() == [0.0, 46_640.0, 58_300.0, 66_000.0, 66_000.0]
    assert r.trades["contracts"].tolist() == [4, 1] and r.trades["refused"].tolist() == [0, 0]
    assert r.bars["equity"].tolist() == [60_000.0] * 5


# --------------------------------------------------------------------------- maintenance and the engine's segments


def test_maintenance_per_bar_reads_the_second_column(es: ContractSpec, es_history: pd.DataFrame) -> None:
    ts = utc("2012-03-23", "2012-03-26", "2012-09-24", "2013-10-03")
    # ES.csv: 20120326 4375/3500, 20120924 3850/3500, 20131003 4180/3800; before: the catalogue's maintenance
    assert margin_per_bar(ts, es, es_history, "maintenance").tolist() == [es.maintenance_margin, 3500.0, 3500.0,
                                                                          3800.0]
    with pytest.raises(ValueError, match="column must be 'initial' or 'maintenance'"):
        margin_per_bar(ts, es, es_history, "variation")


@pytest.mark.parametrize("name", ["ES", "GC", "NQ"])
def test_the_schedule_equals_the_per_bar_lookup(name: str) -> None:
    from fbt_pipelines.futures.margin import margin_schedule

    spec = dataclasses.replace(market_spec(name if name != "GC" else "GC"), initial_margin=CATALOGUE)
    history = read_margin_history(MARGINS / f"{name}.csv")
    first = history["date"].iloc[0]
    # intraday bars from a year before the file to past its end, with weekend holes and repeated dates
    ts = pd.Series(pd.date_range(first - pd.Timedelta(days=365), history["date"].iloc[-1] + pd.Timedelta(days=30),
                                 freq="7h", tz="UTC"))
    ts = ts[ts.dt.dayofweek < 5].reset_index(drop=True)
    schedule = margin_schedule(ts, spec, history)
    assert len(schedule.starts) <= len(history) + 1 < len(ts)
    np.testing.assert_array_equal(schedule.per_bar("initial"), margin_per_bar(ts, spec, history))
    np.testing.assert_array_equal(schedule.per_bar("maintenance"), margin_per_bar(ts, spec, history, "maintenance"))
    # a window of the bars keeps the values bar for bar
    keep = (np.arange(len(ts)) % 3 != 0) & (np.arange(len(ts)) > 100)
    np.testing.assert_array_equal(schedule.window(keep).per_bar("initial"), margin_per_bar(ts[keep], spec, history))
    # no maintenance: no margin calls
    assert not margin_schedule(ts, spec, history, calls=False).has_maintenance


def test_schedules_are_validated() -> None:
    from fbt_pipelines.futures.margin import MarginSchedule

    with pytest.raises(ValueError, match="starts must begin at 0"):
        MarginSchedule(np.array([1]), np.array([1.0]), np.array([1.0]), 5)
    with pytest.raises(ValueError, match="starts must begin at 0, strictly increase"):
        MarginSchedule(np.array([0, 3, 3]), np.ones(3), np.ones(3), 5)
    with pytest.raises(ValueError, match="margins must be finite and >= 0"):
        MarginSchedule(np.array([0]), np.array([-1.0]), np.array([1.0]), 5)
    with pytest.raises(ValueError, match="for every bar or for none"):
        MarginSchedule(np.array([0, 2]), np.ones(2), np.array([1.0, np.nan]), 5)
    s = MarginSchedule.from_per_bar(np.array([1.0, 1.0, 2.0, 2.0, 1.0]), np.array([0.5, 0.5, 0.5, 1.5, 0.5]))
    assert s.starts.tolist() == [0, 2, 3, 4] and s.per_bar("maintenance").tolist() == [0.5, 0.5, 0.5, 1.5, 0.5]
    assert not s.starts.flags.writeable
