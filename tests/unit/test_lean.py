"""The LEAN futures zip reader, against real QuantConnect files (tests/fixtures/lean).

Expected values are taken from the raw zip text with :mod:`zipfile`, never
from the reader itself.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.errors import DataError
from fbt_pipelines.marketdata.lean import (
    FRAME_COLUMNS,
    StagedFile,
    is_lean_zip,
    lean_companion,
    read_lean_zip,
)

LEAN = Path(__file__).resolve().parents[1] / "fixtures" / "lean"
ES_DAILY = LEAN / "es_trade.zip"
ES_DAILY_OI = LEAN / "es_openinterest.zip"
ES_MINUTE = LEAN / "minute" / "es" / "20131218_trade.zip"
ES_MINUTE_OI = LEAN / "minute" / "es" / "20131218_openinterest.zip"
GC_DAILY = LEAN / "comex" / "daily" / "gc_trade.zip"

GOOD_ROW = "20131006 00:00,1676.75,1678.25,1673.25,1676.5,21573"


def _members(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name).decode("utf-8") for name in zf.namelist()}


def _by_inner(staged: list[StagedFile]) -> dict[str, StagedFile]:
    return {s.source.rsplit("!", 1)[1]: s for s in staged}


def _zip(path: Path, members: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


# --- real files -------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [ES_DAILY, ES_MINUTE, GC_DAILY], ids=["es-daily", "es-minute", "gc-daily"]
)
def test_one_staged_file_per_inner_csv_and_one_row_per_line(path: Path) -> None:
    raw = _members(path)
    staged = read_lean_zip(path)
    assert [s.source for s in staged] == [f"{path}!{name}" for name in raw]
    for s in staged:
        text = raw[s.source.rsplit("!", 1)[1]]
        non_empty = [ln for ln in text.splitlines() if ln]
        f = s.frame
        assert list(f.columns) == FRAME_COLUMNS
        assert len(f) == len(non_empty)
        assert f["raw"].tolist() == non_empty
        assert f["line"].tolist() == list(range(1, len(non_empty) + 1))
        assert (f["nf"] == 6).all() and (f["expected_nf"] == 6).all()
        # Every real row parses.
        assert f["ts"].notna().all()
        assert f[["open", "high", "low", "close", "volume"]].notna().all().all()
        assert str(f["ts"].dtype) == "datetime64[ns, UTC]"
        for col in ["open", "high", "low", "close", "volume", "open_interest"]:
            assert f[col].dtype == np.float64
        for col in ["line", "nf", "expected_nf"]:
            assert f[col].dtype == np.int64
        assert s.interval == ("1m" if path == ES_MINUTE else "1d")


def test_es_daily_esz2013_first_and_last_bar_with_open_interest() -> None:
    esz = _by_inner(read_lean_zip(ES_DAILY))["es_trade_201312.csv"]
    f = esz.frame
    assert set(f["contract_raw"]) == {"ESZ2013"}
    first, last = f.iloc[0], f.iloc[-1]
    assert first["raw"] == GOOD_ROW
    assert first["ts"] == pd.Timestamp("2013-10-06 00:00", tz="UTC")
    assert [first[c] for c in ["open", "high", "low", "close", "volume"]] == [
        1676.75,
        1678.25,
        1673.25,
        1676.5,
        21573.0,
    ]
    assert (
        first["open_interest"] == 2691941.0
    )  # es_openinterest_201312.csv: "20131006 00:00,2691941"
    assert last["raw"] == "20131220 00:00,1809.25,1813,1809,1810.25,19810"
    assert last["ts"] == pd.Timestamp("2013-12-20 00:00", tz="UTC")
    assert [last[c] for c in ["open", "high", "low", "close", "volume"]] == [
        1809.25,
        1813.0,
        1809.0,
        1810.25,
        19810.0,
    ]
    assert last["open_interest"] == 782646.0  # "20131220 00:00,782646"


def test_es_daily_open_interest_joined_by_exact_timestamp_for_every_contract() -> None:
    oi_text = _members(ES_DAILY_OI)
    for s in read_lean_zip(ES_DAILY):
        month = s.source[-10:-4]  # ..._YYYYMM.csv
        snapshots: dict[pd.Timestamp, float] = {}
        for ln in oi_text.get(f"es_openinterest_{month}.csv", "").splitlines():
            stamp, value = ln.split(",")
            snapshots[pd.Timestamp(stamp, tz="UTC")] = float(value)
        expected = [snapshots.get(t, np.nan) for t in s.frame["ts"]]
        np.testing.assert_array_equal(
            s.frame["open_interest"].to_numpy(), np.array(expected)
        )
    # ESZ2013 has bars on days without an open-interest row: those stay NaN.
    esz = _by_inner(read_lean_zip(ES_DAILY))["es_trade_201312.csv"].frame
    assert esz["open_interest"].isna().any() and esz["open_interest"].notna().sum() == 9


def test_sibling_open_interest_is_optional_and_can_be_given(tmp_path: Path) -> None:
    alone = tmp_path / "es_trade.zip"
    shutil.copy(ES_DAILY, alone)
    assert all(s.frame["open_interest"].isna().all() for s in read_lean_zip(alone))
    given = _by_inner(read_lean_zip(alone, open_interest=ES_DAILY_OI))[
        "es_trade_201312.csv"
    ]
    assert given.frame["open_interest"].iloc[0] == 2691941.0
    assert given.source == f"{alone}!es_trade_201312.csv"


def test_minute_ts_is_zip_date_plus_milliseconds() -> None:
    staged = read_lean_zip(ES_MINUTE)
    assert {s.interval for s in staged} == {"1m"}
    esz = _by_inner(staged)["20131218_es_minute_trade_201312.csv"].frame
    assert esz["raw"].iloc[0] == "0,1780.25,1780.25,1780,1780,24"
    assert esz["ts"].iloc[0] == pd.Timestamp("2013-12-18 00:00", tz="UTC")
    assert esz["raw"].iloc[-1] == "86340000,1811,1811.25,1811,1811.25,3"
    assert esz["ts"].iloc[-1] == pd.Timestamp("2013-12-18 23:59", tz="UTC")
    ms = esz["raw"].str.split(",").str[0].astype("int64")
    expected = pd.Timestamp("2013-12-18", tz="UTC") + pd.to_timedelta(ms, unit="ms")
    assert (esz["ts"] == expected).all()
    assert set(esz["contract_raw"]) == {"ESZ2013"}
    contracts = {s.frame["contract_raw"].iloc[0] for s in staged}
    assert contracts == {"ESZ2013", "ESH2014", "ESM2014", "ESU2014", "ESZ2014"}


def test_minute_open_interest_is_as_of_the_latest_snapshot() -> None:
    oi_text = _members(ES_MINUTE_OI)
    for s in read_lean_zip(ES_MINUTE):
        inner = s.source.rsplit("!", 1)[1]
        snaps = [
            ln.split(",")
            for ln in oi_text[inner.replace("_trade_", "_openinterest_")].splitlines()
            if ln
        ]
        snaps = [(int(t), float(v)) for t, v in snaps]
        expected = []
        for raw in s.frame["raw"]:
            bar_ms = int(raw.split(",")[0])
            before = [v for t, v in snaps if t <= bar_ms]
            expected.append(before[-1] if before else np.nan)
        np.testing.assert_array_equal(
            s.frame["open_interest"].to_numpy(), np.array(expected)
        )

    esz = _by_inner(read_lean_zip(ES_MINUTE))[
        "20131218_es_minute_trade_201312.csv"
    ].frame.set_index("line")
    # Snapshots of ESZ2013 that day: 25620000 -> 1045113, 46320000 -> 1045113, 52980000 -> 1037604.
    assert np.isnan(esz.loc[1, "open_interest"])  # 00:00, before the first snapshot
    assert esz.loc[236, "raw"].startswith("25560000,") and np.isnan(
        esz.loc[236, "open_interest"]
    )
    assert (
        esz.loc[237, "raw"].startswith("25620000,")
        and esz.loc[237, "open_interest"] == 1045113.0
    )
    assert esz.loc[661, "open_interest"] == 1045113.0  # just before 52980000
    assert (
        esz.loc[662, "raw"].startswith("52980000,")
        and esz.loc[662, "open_interest"] == 1037604.0
    )
    assert esz["open_interest"].iloc[-1] == 1037604.0


def test_gc_term_structure_has_distinct_contract_months() -> None:
    staged = read_lean_zip(GC_DAILY)
    contracts = [s.frame["contract_raw"].iloc[0] for s in staged]
    assert len(contracts) == len(set(contracts)) == len(_members(GC_DAILY)) == 15
    assert {
        "GCV2013",
        "GCX2013",
        "GCZ2013",
        "GCG2014",
        "GCJ2014",
        "GCM2014",
        "GCZ2016",
    } <= set(contracts)
    assert all(c.startswith("GC") for c in contracts)
    gcz = _by_inner(staged)["gc_trade_201312.csv"].frame
    assert gcz["raw"].iloc[0] == "20131007 00:00,1313.7,1329.5,1307.9,1323.4,51773"
    assert gcz["close"].iloc[0] == 1323.4
    assert (
        gcz["open_interest"].iloc[0] == 221395.0
    )  # gc_openinterest_201312.csv: "20131007 00:00,221395"


def test_is_lean_zip_by_name() -> None:
    assert is_lean_zip(ES_DAILY) and is_lean_zip(ES_MINUTE) and is_lean_zip(GC_DAILY)
    for name in [
        "es_openinterest.zip",
        "20131218_openinterest.zip",
        "es_quote.zip",
        "ESZ2013.csv",
        "es_trade.csv",
        "prices.zip",
        "20131399_trade.zip",
        "hour/es_trade.zip",
    ]:
        assert not is_lean_zip(Path("/data") / name), name


# --- the rest of a LEAN data folder --------------------------------------------


def test_companion_files_of_a_lean_folder_are_named_with_a_note(tmp_path: Path) -> None:
    """LEAN's layout (Data/future/<exchange>/...): every file that is not a
    daily or minute trade zip gets a note saying what it is and whether it
    is used; trade zips fbt reads and unrelated files get None."""
    cme = tmp_path / "future" / "cme"
    files = {
        "daily/es_trade.zip": None,
        "daily/es_openinterest.zip": "open interest: used with es_trade.zip",
        "daily/nq_openinterest.zip": "open interest: not used (no nq_trade.zip beside it)",
        "daily/es_quote.zip": "quote bars (bid/ask): not used; fbt stores trade bars",
        "minute/es/20131218_trade.zip": None,
        "minute/es/20131218_openinterest.zip": "open interest: used with 20131218_trade.zip",
        "minute/es/20131218_quote.zip": "quote bars (bid/ask): not used; fbt stores trade bars",
        "hour/es_trade.zip": "hour trade bars: not read (fbt reads LEAN daily and minute bars)",
        "hour/es_openinterest.zip": "open interest of hour bars: not used (fbt reads LEAN daily and minute bars)",
        "second/es/20131218_trade.zip": "second trade bars: not read (fbt reads LEAN daily and minute bars)",
        "tick/es/20131218_trade.zip": "tick trade bars: not read (fbt reads LEAN daily and minute bars)",
        "margins/ES.csv": "margin history: not bars; fbt reads it from $FBT_HOME/margins/ES.csv "
                          "(date,initial,maintenance)",
        "map_files/es.csv": "LEAN map file (continuous-contract mapping): not used; fbt builds its own roll schedule",
        "factor_files/es.csv": "LEAN factor file (continuous-price scaling): not used; fbt back-adjusts from the "
                               "contract bars",
        "daily/notes.csv": None,
        "daily/prices.zip": None,
    }
    for name in files:
        (cme / name).parent.mkdir(parents=True, exist_ok=True)
        (cme / name).write_bytes(b"")
    assert {name: lean_companion(cme / name) for name in files} == files
    # a second or tick day zip is not taken for minute bars (same file name)
    assert is_lean_zip(cme / "minute/es/20131218_trade.zip")
    assert not is_lean_zip(cme / "second/es/20131218_trade.zip") and not is_lean_zip(cme / "tick/es/20131218_trade.zip")


# --- malformed rows stay rows ------------------------------------------------


def test_malformed_daily_rows_are_kept_with_nan_and_exact_line_numbers(
    tmp_path: Path,
) -> None:
    lines = [
        GOOD_ROW,  # 1
        "20131007 00:00,abc,1,1,1,1",  # 2 bad open
        "20131008 00:00,1,2",  # 3 short
        "",  # 4 empty
        "2013-10-09,1,1,1,1,1",  # 5 bad time
        "20131010 00:00,1,1,1,1,1,1",  # 6 long
        "20131011 00:00,1_0,1,1,1,inf",  # 7 not plain decimals
    ]
    text = "\n".join(lines) + "\n"
    path = _zip(tmp_path / "es_trade.zip", {"es_trade_201312.csv": text})
    (s,) = read_lean_zip(path)
    f = s.frame.set_index("line")
    assert list(f.index) == [1, 2, 3, 4, 5, 6, 7]
    assert f["nf"].tolist() == [6, 6, 3, 0, 6, 7, 6]
    assert (f["expected_nf"] == 6).all() and (f["contract_raw"] == "ESZ2013").all()
    assert f.loc[2, "raw"] == "20131007 00:00,abc,1,1,1,1"
    assert (
        np.isnan(f.loc[2, "open"])
        and f.loc[2, ["high", "low", "close", "volume"]].tolist() == [1.0] * 4
    )
    assert f.loc[2, "ts"] == pd.Timestamp("2013-10-07", tz="UTC")
    assert f.loc[3, "raw"] == "20131008 00:00,1,2"
    assert f.loc[3, ["open", "high", "low", "close", "volume"]].isna().all()
    assert f.loc[3, "ts"] == pd.Timestamp("2013-10-08", tz="UTC")
    assert f.loc[4, "raw"] == "" and pd.isna(f.loc[4, "ts"])
    assert pd.isna(f.loc[5, "ts"]) and f.loc[5, "open"] == 1.0
    assert f.loc[6, ["open", "high", "low", "close", "volume"]].isna().all()
    assert (
        np.isnan(f.loc[7, "open"])
        and np.isnan(f.loc[7, "volume"])
        and f.loc[7, "high"] == 1.0
    )
    assert f["open_interest"].isna().all()  # no sibling open-interest zip in tmp_path
    assert str(s.frame["ts"].dtype) == "datetime64[ns, UTC]"


def test_crlf_and_missing_final_newline(tmp_path: Path) -> None:
    path = _zip(
        tmp_path / "es_trade.zip", {"es_trade_201312.csv": f"{GOOD_ROW}\r\n{GOOD_ROW}"}
    )
    f = read_lean_zip(path)[0].frame
    assert f["raw"].tolist() == [GOOD_ROW, GOOD_ROW] and f["open"].tolist() == [
        1676.75,
        1676.75,
    ]


def test_malformed_minute_times_are_nat(tmp_path: Path) -> None:
    trade = _zip(
        tmp_path / "20131218_trade.zip",
        {
            "20131218_es_minute_trade_201312.csv": "abc,1,1,1,1,1\n86400000,1,1,1,1,1\n-60000,1,1,1,1,1\n60000,1,1,1,1,1\n",
        },
    )
    _zip(
        tmp_path / "20131218_openinterest.zip",
        {
            "20131218_es_minute_openinterest_201312.csv": "0,100\nxyz,999\n",
        },
    )
    f = read_lean_zip(trade)[0].frame
    assert f["ts"].isna().tolist() == [True, True, True, False]
    assert f["ts"].iloc[3] == pd.Timestamp("2013-12-18 00:01", tz="UTC")
    assert (
        np.isnan(f["open_interest"].iloc[:3]).all()
        and f["open_interest"].iloc[3] == 100.0
    )


# --- file-level problems raise DataError naming the file ----------------------


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "es_trade.zip"
    path.write_text(GOOD_ROW + "\n")
    with pytest.raises(DataError, match="es_trade.zip"):
        read_lean_zip(path)


def test_corrupt_zips(tmp_path: Path) -> None:
    data = ES_DAILY.read_bytes()
    truncated = tmp_path / "truncated" / "es_trade.zip"
    truncated.parent.mkdir()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated/es_trade.zip"):
        read_lean_zip(truncated)
    # Damage the compressed bytes of the first member (header is 30 bytes + name).
    damaged = bytearray(data)
    for i in range(60, 90):
        damaged[i] ^= 0xFF
    bad = tmp_path / "damaged" / "es_trade.zip"
    bad.parent.mkdir()
    bad.write_bytes(bytes(damaged))
    with pytest.raises(DataError, match="damaged/es_trade.zip"):
        read_lean_zip(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="es_trade.zip"):
        read_lean_zip(tmp_path / "es_trade.zip")


@pytest.mark.parametrize(
    "name", ["es_quote.zip", "es_openinterest.zip", "prices.zip", "20131399_trade.zip"]
)
def test_zip_name_not_a_lean_trade_zip(tmp_path: Path, name: str) -> None:
    path = _zip(tmp_path / name, {"es_trade_201312.csv": GOOD_ROW})
    with pytest.raises(DataError, match=name):
        read_lean_zip(path)


@pytest.mark.parametrize(
    ("zip_name", "inner"),
    [
        ("es_trade.zip", "notes.txt"),
        ("es_trade.zip", "es_trade_201313.csv"),
        ("es_trade.zip", "nq_trade_201312.csv"),  # root differs from the zip name
        (
            "es_trade.zip",
            "20131218_es_minute_trade_201312.csv",
        ),  # minute name in a daily zip
        ("20131218_trade.zip", "20131219_es_minute_trade_201312.csv"),  # date differs
        ("20131218_trade.zip", "es_trade_201312.csv"),
    ],
)
def test_inner_name_not_matching_is_named(
    tmp_path: Path, zip_name: str, inner: str
) -> None:
    path = _zip(tmp_path / zip_name, {inner: GOOD_ROW})
    with pytest.raises(DataError, match=inner):
        read_lean_zip(path)


def test_binary_and_non_utf8_content(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    binary = _zip(
        tmp_path / "bin" / "es_trade.zip",
        {"es_trade_201312.csv": b"\x00\x01\x02PK\x03\x04"},
    )
    with pytest.raises(DataError, match="es_trade_201312.csv"):
        read_lean_zip(binary)
    (tmp_path / "latin").mkdir()
    latin = _zip(
        tmp_path / "latin" / "es_trade.zip",
        {"es_trade_201312.csv": (GOOD_ROW + " \xe9\n").encode("latin-1")},
    )
    with pytest.raises(
        DataError, match="latin/es_trade.zip!es_trade_201312.csv: not UTF-8"
    ):
        read_lean_zip(latin)


def test_bad_open_interest_zip_is_a_file_error(tmp_path: Path) -> None:
    trade = tmp_path / "es_trade.zip"
    shutil.copy(ES_DAILY, trade)
    (tmp_path / "es_openinterest.zip").write_text("not a zip")
    with pytest.raises(DataError, match="es_openinterest.zip"):
        read_lean_zip(trade)
    with pytest.raises(DataError, match="nowhere_oi.zip"):
        read_lean_zip(trade, open_interest=tmp_path / "nowhere_oi.zip")
    wrong = _zip(tmp_path / "oi.zip", {"es_trade_201312.csv": "20131006 00:00,1"})
    with pytest.raises(DataError, match="es_trade_201312.csv"):
        read_lean_zip(trade, open_interest=wrong)
