"""read_bar_file: exact rejects for a hand-written file, file-level errors, and
a real QuantConnect LEAN contract file (tests/fixtures/lean, Apache-2.0)
converted to our bar-file format."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.errors import DataError
from fbt_pipelines.marketdata.bar_files import BAR_COLUMNS, Reject, read_bar_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HEADER = "date,open,high,low,close,volume,open_interest"


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# Line numbers are 1-based with the header on line 1; line 10 is blank.
MIXED = "\n".join([
    HEADER,                                                        # 1
    "2013-12-02,1805.5,1809,1797,1800,1138161,2700000",            # 2 good
    "2013-12-03,1794,1798.5,1786.25,abc,1423127,",                 # 3 bad number
    "2013-13-04,1785.25,1799.5,1777.75,1792.75,1788530,",          # 4 bad date (month 13)
    "2013-12-05,1788.75,1780,1782,1783.75,1303227,",               # 5 high below low
    "2013-12-06,1801.25,1806,1796.25,1805.25,-5,",                 # 6 negative volume
    "2013-12-02,1805.5,1809,1797,1800,1,",                         # 7 duplicate of line 2
    "2013-12-09,1809.75,1811.5,1806.25",                           # 8 4 fields, header has 7
    "2013-12-12,1780.5,1783.25,1771.75,1773.75,1113344,,extra",    # 9 8 fields
    "",                                                            # 10 blank: skipped
    "2013-12-11,1802.75,1803,1779.25,1780.75,1514064,1.5e6",       # 11 good (OI in exponent form)
    " 2013-12-10 , 1804.5 ,1808.25,1801,1803.5,886401,",           # 12 good, padded, no OI, out of order
    "2013-12-13,1779.25,1780.75,1771.75,1775,347764,-1",           # 13 negative open interest
    "12/16/2013,1783.5,1792.5,1783.25,1785.25,200215,",            # 14 bad date format
    "2013-12-17,1788,1792,1789,1790,155199,",                      # 15 low above open (1789 > 1788)
]) + "\n"

EXPECTED_REJECTS = [
    (3, "close is not a number"),
    (4, "date is not YYYY-MM-DD"),
    (5, "high below open/close/low"),
    (6, "volume negative"),
    (7, "duplicate date (first occurrence kept)"),
    (8, "expected 7 fields, found 4"),
    (9, "expected 7 fields, found 8"),
    (13, "open_interest negative"),
    (14, "date is not YYYY-MM-DD"),
    (15, "low above open/close/high"),
]


def test_mixed_file_exact_rejects(tmp_path):
    path = write(tmp_path, "ESZ2013.csv", MIXED)
    parsed = read_bar_file(path)
    lines = MIXED.split("\n")
    assert parsed.rejects == [Reject(str(path), n, lines[n - 1], reason) for n, reason in EXPECTED_REJECTS]
    assert (parsed.contract, parsed.root, parsed.path) == ("ESZ2013", "ES", path)
    assert parsed.rows_read == 13  # lines 2-9 and 11-15; the blank line is not a row
    assert parsed.content_hash == hashlib.sha256(MIXED.encode()).hexdigest()


def test_mixed_file_accepted_rows_are_typed(tmp_path):
    bars = read_bar_file(write(tmp_path, "ESZ2013.csv", MIXED)).bars
    assert list(bars.columns) == BAR_COLUMNS
    assert list(bars["ts"]) == [pd.Timestamp(f"2013-12-{d:02d}", tz="UTC") for d in (2, 10, 11)]  # sorted
    assert isinstance(bars["ts"].dtype, pd.DatetimeTZDtype) and str(bars["ts"].dt.tz) == "UTC"
    assert (bars["ts"] == bars["ts"].dt.normalize()).all()  # trading day at 00:00 UTC
    assert bars["volume"].dtype == np.int64
    assert list(bars["volume"]) == [1138161, 886401, 1514064]
    assert str(bars["open_interest"].dtype) == "Int64"
    assert bars["open_interest"].tolist() == [2700000, pd.NA, 1500000]
    assert bars[["open", "high", "low", "close"]].to_numpy().tolist() == [
        [1805.5, 1809.0, 1797.0, 1800.0],
        [1804.5, 1808.25, 1801.0, 1803.5],
        [1802.75, 1803.0, 1779.25, 1780.75],
    ]
    assert set(bars["contract"]) == {"ESZ2013"} and set(bars["root"]) == {"ES"}


@pytest.mark.parametrize(
    "row, reason",
    [
        ("2013-12-02,1805.5,inf,1797,inf,100,", "high is not a number"),
        ("2013-12-02,nan,1809,1797,1800,100,", "open is not a number"),
        ("2013-12-02,1805.5,1809,1797,1800,inf,", "volume is not a number"),
        ("2013-12-02,1805.5,1809,1797,1800,,", "volume is not a number"),
        ("2013-12-02,1805.5,1809,1797,1800,1.5,", "volume is not a whole number"),
        ("2013-12-02,1805.5,1809,1797,1800,100,2.5", "open_interest is not a whole number"),
        ("2013-12-02,1805.5,1809,1797,1800,100,1e20", "open_interest is not a whole number"),
        ("2013-12-02,1805.5,1809,1797,1800,100,lots", "open_interest is not a number"),
        ("2013-12-02,1805.5,1809,1797,1800,100,-inf", "open_interest is not a number"),
        ("2013-12-02 00:00,1805.5,1809,1797,1800,100,", "date is not YYYY-MM-DD"),
        ("2013-02-30,1805.5,1809,1797,1800,100,", "date is not YYYY-MM-DD"),
        ("2013-12-02,1805.5,1809,1810,1800,100,", "high below open/close/low"),
        ("2013-12-02,1805.5,1809,1797,1810,100,", "high below open/close/low"),  # close above high
        ("2013-12-02,1796,1809,1797,1800,100,", "low above open/close/high"),  # open below low
    ],
)
def test_single_bad_row_reason(tmp_path, row, reason):
    """One bad row between two good ones: only it is rejected, nothing raises."""
    text = f"{HEADER}\n2013-12-01,1,2,0.5,1.5,10,\n{row}\n2013-12-03,1,2,0.5,1.5,10,\n"
    parsed = read_bar_file(write(tmp_path, "ESZ2013.csv", text))
    assert [(r.line, r.raw, r.reason) for r in parsed.rejects] == [(3, row, reason)]
    assert list(parsed.bars["ts"].dt.day) == [1, 3]


def test_negative_and_zero_prices_are_allowed(tmp_path):
    # CLK2020 settled at -37.63 on 2020-04-20: a negative price is real data.
    text = "date,open,high,low,close,volume\n2020-04-20,17.73,17.85,-40.32,-37.63,247947\n2020-04-21,0,1,-1,0,5\n"
    parsed = read_bar_file(write(tmp_path, "CLK2020.csv", text))
    assert parsed.rejects == []
    assert list(parsed.bars["close"]) == [-37.63, 0.0]
    assert parsed.bars["open_interest"].isna().all()


def test_duplicate_after_bad_first_occurrence_keeps_the_valid_row(tmp_path):
    text = "\n".join([
        "date,open,high,low,close,volume",
        "2013-12-02,1805.5,1790,1797,1800,100",  # invalid (high below low): not "kept"
        "2013-12-02,1805.5,1809,1797,1800,100",  # the first VALID occurrence: kept
        "2013-12-02,1805.5,1809,1797,1801,100",  # duplicate
        "2013-12-02,1805.5,1809,1797,1802,100",  # duplicate
    ])
    parsed = read_bar_file(write(tmp_path, "ESZ2013.csv", text))
    assert [(r.line, r.reason) for r in parsed.rejects] == [
        (2, "high below open/close/low"),
        (4, "duplicate date (first occurrence kept)"),
        (5, "duplicate date (first occurrence kept)"),
    ]
    assert list(parsed.bars["close"]) == [1800.0]


def test_crlf_bom_and_header_case(tmp_path):
    text = "\ufeffDate, Open,HIGH,low,close,Volume\r\n2013-12-02,1805.5,1809,1797,1800,100\r\n"
    parsed = read_bar_file(write(tmp_path, "ESZ2013.csv", text.encode("utf-8")))
    assert parsed.rejects == []
    assert list(parsed.bars["close"]) == [1800.0]


def test_header_only(tmp_path):
    parsed = read_bar_file(write(tmp_path, "6EH2013.csv", HEADER + "\n"))
    assert (parsed.root, parsed.rows_read, parsed.rejects, len(parsed.bars)) == ("6E", 0, [], 0)
    assert list(parsed.bars.columns) == BAR_COLUMNS


# --- file-level errors -----------------------------------------------------------

@pytest.mark.parametrize("name", ["ESZ13.csv", "esz2013.csv", "ESZ2013.txt", "ESZ2013.csv.bak", "bars.csv"])
def test_bad_file_name(tmp_path, name):
    path = write(tmp_path, name, MIXED)
    with pytest.raises(DataError) as info:
        read_bar_file(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: file name must be <CONTRACT>.csv")


def test_missing_header_columns(tmp_path):
    path = write(tmp_path, "ESZ2013.csv", "date,open,high,close,vol\n2013-12-02,1,2,1,5\n")
    with pytest.raises(DataError) as info:
        read_bar_file(path)
    assert str(info.value) == f"{path}: line 1: header 'date,open,high,close,vol' lacks low, volume"


def test_headerless_file_is_a_file_error(tmp_path):
    path = write(tmp_path, "ESZ2013.csv", "2013-12-02,1805.5,1809,1797,1800,100\n")
    with pytest.raises(DataError, match="line 1: header .* lacks date, open, high, low, close, volume"):
        read_bar_file(path)


def test_empty_file(tmp_path):
    path = write(tmp_path, "ESZ2013.csv", b"")
    with pytest.raises(DataError) as info:
        read_bar_file(path)
    assert str(info.value).startswith(f"{path}: empty file")


def test_unreadable_file(tmp_path):
    path = tmp_path / "ESZ2013.csv"  # does not exist
    with pytest.raises(DataError) as info:
        read_bar_file(path)
    assert str(info.value).startswith(f"{path}: cannot read")


# --- a real LEAN file -----------------------------------------------------------

def lean_to_bar_csv(trade_zip: Path, oi_zip: Path, contract_month: str, dest: Path) -> Path:
    """Test helper (no LEAN reader exists yet): LEAN daily trade rows
    ``yyyyMMdd HH:mm,open,high,low,close,volume`` (prices as quoted, not
    scaled) plus open-interest rows ``yyyyMMdd HH:mm,oi`` -> our
    ``date,open,high,low,close,volume,open_interest`` file."""
    with zipfile.ZipFile(trade_zip) as z:
        trade = z.read(f"es_trade_{contract_month}.csv").decode().splitlines()
    with zipfile.ZipFile(oi_zip) as z:
        oi_rows = z.read(f"es_openinterest_{contract_month}.csv").decode().splitlines()
    oi = dict(row.replace(" 00:00", "").split(",") for row in oi_rows)
    out = [HEADER]
    for row in trade:
        stamp, rest = row.split(" ", 1)
        assert rest.startswith("00:00,"), row  # daily bars are stamped at midnight
        day = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:]}"
        out.append(",".join([day, *rest.split(",")[1:], oi.get(stamp, "")]))
    path = dest / f"ESZ{contract_month[:4]}.csv"
    path.write_text("\n".join(out) + "\n")
    return path


def test_real_lean_esz13_file(tmp_path):
    path = lean_to_bar_csv(FIXTURES / "lean" / "es_trade.zip", FIXTURES / "lean" / "es_openinterest.zip",
                           "201312", tmp_path)
    assert path.name == "ESZ2013.csv"
    parsed = read_bar_file(path)
    assert parsed.rejects == []
    bars = parsed.bars.set_index(parsed.bars["ts"].dt.strftime("%Y-%m-%d"))
    # 61 rows in es_trade_201312.csv (wc -l), from the Sunday 2013-10-06 session
    # to the last trade day 2013-12-20.
    assert parsed.rows_read == 61 and len(bars) == 61
    assert (bars.index[0], bars.index[-1]) == ("2013-10-06", "2013-12-20")
    prices = bars[["open", "high", "low", "close"]].to_numpy()
    assert np.abs(prices / 0.25 - np.round(prices / 0.25)).max() < 1e-9  # ES tick 0.25
    assert ((prices > 1600) & (prices < 1850)).all()  # index points, not scaled (ES Q4 2013)
    # values read from the file by eye
    assert bars.loc["2013-10-07", ["open", "high", "low", "close", "volume"]].tolist() == [
        1669.0, 1679.5, 1667.0, 1668.0, 1374818]
    assert bars.loc["2013-12-18", "close"] == 1810.0
    assert bars.loc["2013-12-20", "close"] == 1810.25
    assert bars.loc["2013-12-20", "volume"] == 19810
    assert bars.loc["2013-12-16", "open_interest"] == 1701691
    assert bars.loc["2013-12-20", "open_interest"] == 782646
    assert bars["open_interest"].notna().sum() == 9  # es_openinterest_201312.csv has 9 rows
