"""Vendor CSV presets (fbt_pipelines/ingest/presets.py): each sample file
(tests/fixtures/presets/, synthetic, in the vendors' documented layouts)
imports with no ``--map`` into a real DuckDB warehouse, its stored values
equal to the file's numbers (written out here by hand), its daily bars
stamped as the canonical CSV path stamps them; a row out of layout is a
DataError naming file and line, and nothing is stored."""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from fbt_pipelines.catalog.specs import load_catalog
from fbt_pipelines.errors import DataError
from fbt_pipelines.ingest.files import ingest_path
from fbt_pipelines.ingest.presets import PRESET_NAMES, PYSYSTEMTRADE_ROOTS

SPECS = load_catalog()
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SAMPLES = FIXTURES / "presets"
UTC = dt.timezone.utc
TABLES = ("bars", "quarantine", "ingests", "data_versions")


def day(text: str) -> dt.datetime:
    """00:00 UTC of a session date."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


# tests/fixtures/presets/ESZ2024.csv, by hand: date, open, high, low, close, volume, open interest
CSI_ROWS = [
    ("2024-11-04", 5738.25, 5760.50, 5725.00, 5745.75, 1523044, 2101876),
    ("2024-11-05", 5746.00, 5801.25, 5744.50, 5797.50, 1398211, 2098450),
    ("2024-11-06", 5800.00, 5946.00, 5795.25, 5937.00, 2611907, 2087312),
    ("2024-11-07", 5938.50, 5983.75, 5930.25, 5977.25, 1710334, 2080055),
    ("2024-11-08", 5977.00, 6012.50, 5966.75, 6008.00, 1405718, 2079931),
]
# tests/fixtures/presets/ES-2025H.csv (the last row has no open interest)
NORGATE_ROWS = [
    ("2024-11-04", 5790.25, 5812.75, 5777.00, 5797.50, 10432, 95310),
    ("2024-11-05", 5798.00, 5853.50, 5796.75, 5850.00, 12877, 97602),
    ("2024-11-06", 5852.00, 5998.50, 5847.25, 5989.75, 30881, 101224),
    ("2024-11-07", 5990.25, 6036.00, 5982.50, 6030.25, 21745, 104980),
    ("2024-11-08", 6030.00, 6066.25, 6019.00, 6061.50, 18050, None),
]
# tests/fixtures/presets/SP500.csv as close-only bars: (series, contract, date, price); the CARRY of
# 2024-12-09..12 names the FORWARD contract at the same price (stored once, as FORWARD); the
# 15:00:00 row is intraday (skipped); empty prices are no bars.
PYSYSTEMTRADE_BARS = [
    ("PRICE", "ESZ2024", "2024-12-09", 6099.5), ("PRICE", "ESZ2024", "2024-12-10", 6077.75),
    ("PRICE", "ESZ2024", "2024-12-11", 6131.75), ("PRICE", "ESH2025", "2024-12-12", 6186.5),
    ("PRICE", "ESH2025", "2024-12-13", 6170.25),
    ("FORWARD", "ESH2025", "2024-12-09", 6151.25), ("FORWARD", "ESH2025", "2024-12-10", 6129.0),
    ("FORWARD", "ESH2025", "2024-12-11", 6183.5), ("FORWARD", "ESM2025", "2024-12-12", 6243.0),
    ("CARRY", "ESM2025", "2024-12-13", 6228.75),
]


@pytest.fixture
def conn(tmp_path):
    (tmp_path / "db").mkdir()
    c = duckdb.connect(str(tmp_path / "db" / "warehouse.duckdb"))
    yield c
    c.close()


def bars(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    return conn.execute("SELECT contract, interval, ts, open, high, low, close, volume, open_interest FROM bars "
                        "ORDER BY contract, ts").fetchall()


def counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES}


def per_contract(contract: str, rows: list[tuple]) -> list[tuple]:
    return [(contract, "1d", day(d), o, h, lo, c, v, oi) for d, o, h, lo, c, v, oi in rows]


def sample(tmp_path: Path, name: str) -> Path:
    (tmp_path / "in").mkdir(exist_ok=True)
    return Path(shutil.copyfile(SAMPLES / name, tmp_path / "in" / name))


def test_csi_export_without_header_imports_with_its_numbers(tmp_path, conn):
    path = sample(tmp_path, "ESZ2024.csv")
    (result,) = ingest_path(conn, path, preset="csi", specs=SPECS)
    assert (result.status, result.rows_read, result.accepted, result.quarantined) == ("ok", 5, 5, 0)
    assert bars(conn) == per_contract("ESZ2024", CSI_ROWS)
    # the file's numbers read independently (csv module), to the double
    with open(path, newline="") as fh:
        assert [tuple(float(x) for x in row[1:]) for row in csv.reader(fh)] == [r[1:] for r in CSI_ROWS]
    assert conn.execute("SELECT format, interval FROM ingests").fetchall() == [("csv:csi", "1d")]


def test_preset_daily_bars_are_stamped_as_the_canonical_csv_path_stamps_them(tmp_path, conn):
    ingest_path(conn, sample(tmp_path, "ESZ2024.csv"), preset="csi", specs=SPECS)
    canonical = tmp_path / "canonical" / "ESZ2024.csv"
    canonical.parent.mkdir()
    canonical.write_text("ts,open,high,low,close,volume,open_interest\n"
                         + "".join(",".join(map(str, r)) + "\n" for r in CSI_ROWS))
    with duckdb.connect(str(tmp_path / "canonical.duckdb")) as other:
        ingest_path(other, canonical, specs=SPECS)
        assert bars(other) == bars(conn)


def test_csi_export_with_a_header_and_a_year_first_name(tmp_path, conn):
    path = tmp_path / "ES2024Z.txt"
    path.write_text("Date,Open,High,Low,Close,Vol,OI\n"
                    + "".join(f"{d.replace('-', '')},{o},{h},{lo},{c},{v},{oi}\n" for d, o, h, lo, c, v, oi in CSI_ROWS))
    (result,) = ingest_path(conn, path, preset="csi", specs=SPECS)
    assert result.accepted == 5 and bars(conn) == per_contract("ESZ2024", CSI_ROWS)


def test_norgate_export_imports_with_its_numbers_and_an_empty_open_interest(tmp_path, conn):
    (result,) = ingest_path(conn, sample(tmp_path, "ES-2025H.csv"), preset="norgate", specs=SPECS)
    assert (result.accepted, result.quarantined, result.notes) == (5, 0, ())
    assert bars(conn) == per_contract("ESH2025", NORGATE_ROWS)


def test_norgate_extra_columns_are_noted_not_read(tmp_path, conn):
    path = tmp_path / "ES-2025H.csv"
    path.write_text("Date,Open,High,Low,Close,Volume,Delivery Month,Open Interest\n"
                    "2024-11-04,5790.25,5812.75,5777.00,5797.50,10432,202503,95310\n")
    (result,) = ingest_path(conn, path, preset="norgate", specs=SPECS)
    assert result.notes == ("column 'Delivery Month' not read (norgate preset)",)
    assert bars(conn) == per_contract("ESH2025", NORGATE_ROWS[:1])


def test_pysystemtrade_multiple_prices_become_close_only_bars_of_each_contract(tmp_path, conn):
    path = sample(tmp_path, "SP500.csv")
    results = ingest_path(conn, path, preset="pysystemtrade", specs=SPECS)
    by_series = {r.source.rsplit("!", 1)[1]: r for r in results}
    assert [r.source for r in results] == [f"{path.resolve()}!{s}" for s in ("PRICE", "FORWARD", "CARRY")]
    assert {s: (r.accepted, r.quarantined) for s, r in by_series.items()} == {
        "PRICE": (5, 0), "FORWARD": (4, 0), "CARRY": (1, 0)}
    assert by_series["PRICE"].warnings["skipped_intraday"] == 1
    want = sorted((c, "1d", day(d), p, p, p, p, 0, None) for _s, c, d, p in PYSYSTEMTRADE_BARS)
    assert bars(conn) == want
    # each stored bar's ingest is the series that gave it
    series_of = dict(conn.execute("SELECT ingest_id, split_part(path, '!', 2) FROM ingests").fetchall())
    stored = conn.execute("SELECT contract, ts, ingest_id FROM bars").fetchall()
    assert sorted((series_of[i], c, t) for c, t, i in stored) == sorted(
        (s, c, day(d)) for s, c, d, _p in PYSYSTEMTRADE_BARS)


def test_pysystemtrade_instrument_codes_map_to_markets_of_the_same_multiplier():
    with open(FIXTURES / "pysystemtrade_instrumentconfig_subset.csv") as fh:
        rows = {r["symbol"]: float(r["pointsize"]) for r in csv.DictReader(line for line in fh
                                                                           if not line.startswith("#"))}
    checked = {code: root for code, root in PYSYSTEMTRADE_ROOTS.items() if code in rows}
    assert len(checked) >= 18
    assert {code: SPECS[root].multiplier for code, root in checked.items()} == {code: rows[code] for code in checked}


def test_re_ingesting_a_preset_file_changes_nothing(tmp_path, conn):
    path = sample(tmp_path, "SP500.csv")
    ingest_path(conn, path, preset="pysystemtrade", specs=SPECS)
    before = {t: conn.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES}
    assert {r.status for r in ingest_path(conn, path, preset="pysystemtrade", specs=SPECS)} == {"skipped"}
    assert {t: conn.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES} == before


MALFORMED = {
    # preset, file, line to break (1-based), replacement, expected message after "<file>: "
    "csi date": ("csi", "ESZ2024.csv", 3, "2024116,5800.00,5946.00,5795.25,5937.00,2611907,2087312",
                 "line 3: Date '2024116' is not a date YYYYMMDD"),
    "csi fields": ("csi", "ESZ2024.csv", 5, "20241108,5977.00,6012.50,5966.75,6008.00",
                   "line 5: expected 7 fields, found 5 (csi preset)"),
    "norgate price": ("norgate", "ES-2025H.csv", 4, "2024-11-06,5852.00,n/a,5847.25,5989.75,30881,101224",
                      "line 4: High 'n/a' is not a number"),
    "norgate date": ("norgate", "ES-2025H.csv", 2, "04/11/2024,5790.25,5812.75,5777.00,5797.50,10432,95310",
                     "line 2: Date '04/11/2024' is not a date YYYY-MM-DD"),
    "pysystemtrade contract": ("pysystemtrade", "SP500.csv", 6,
                               "2024-12-12 23:00:00,6243.0,20250600,6186.5,202503,6243.0,20250600",
                               "line 6: PRICE_CONTRACT '202503' is not a pysystemtrade contract id YYYYMM00"),
    "pysystemtrade two prices": ("pysystemtrade", "SP500.csv", 2,
                                 "2024-12-09 23:00:00,6151.5,20250300,6099.5,20241200,6151.25,20250300",
                                 "line 2: CARRY 6151.5 for ESH2025 differs from 6151.25 given for it on line 2"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_row_is_a_data_error_naming_file_and_line_and_nothing_is_stored(tmp_path, conn, case):
    preset, name, line, text, message = MALFORMED[case]
    ingest_path(conn, sample(tmp_path, "ESZ2024.csv"), preset="csi", specs=SPECS)  # something stored before
    before = counts(conn)
    (tmp_path / "bad").mkdir()
    path = tmp_path / "bad" / name
    lines = (SAMPLES / name).read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        ingest_path(conn, path, preset=preset, specs=SPECS)
    assert str(err.value) == f"{path}: {message}"
    assert counts(conn) == before


@pytest.mark.parametrize("name, preset, message", [
    ("FOO.csv", "pysystemtrade", "pysystemtrade instrument 'FOO' is no fbt market"),
    ("prices.csv", "norgate", "the file name does not name a contract"),
    ("XX-2025H.csv", "norgate", "file name: unknown market root 'XX'"),
])
def test_a_file_the_preset_cannot_place_is_named(tmp_path, conn, name, preset, message):
    path = tmp_path / name
    shutil.copyfile(SAMPLES / ("SP500.csv" if preset == "pysystemtrade" else "ES-2025H.csv"), path)
    with pytest.raises(DataError, match=message):
        ingest_path(conn, path, preset=preset, specs=SPECS)
    assert counts(conn) == dict.fromkeys(TABLES, 0)


def test_an_unknown_preset_lists_the_known_ones(tmp_path, conn):
    with pytest.raises(DataError, match=r"unknown preset 'tradestation' \(one of csi, norgate, pysystemtrade\)"):
        ingest_path(conn, sample(tmp_path, "ESZ2024.csv"), preset="tradestation", specs=SPECS)
    assert PRESET_NAMES == ("csi", "norgate", "pysystemtrade")


def cli(*args: str):
    from fbt_pipelines.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=True)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_fbt_ingest_with_a_preset(fbt_home, tmp_path):
    path = sample(tmp_path, "ES-2025H.csv")
    result = cli("ingest", str(path), "--preset", "norgate", "--json")
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(x) for x in result.output.strip().splitlines()]
    assert (line["status"], line["accepted"], line["quarantined"]) == ("ok", 5, 0)
    with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as c:
        assert bars(c) == per_contract("ESH2025", NORGATE_ROWS)
    unknown = cli("ingest", str(path), "--preset", "tradestation")
    assert unknown.exit_code == 2
    assert "'tradestation' is not one of 'csi', 'norgate', 'pysystemtrade'" in unknown.output
    # the same file without its preset: the canonical reader names what is missing, nothing stored
    plain = cli("ingest", str(sample(tmp_path, "ESZ2024.csv")), "--json")
    assert plain.exit_code == 1 and "lacks" in plain.output
