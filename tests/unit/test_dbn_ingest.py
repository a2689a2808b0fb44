"""Databento DBN import (fbt_pipelines/ingest/dbn.py) on files written by
Databento's own encoder (``databento-dbn``: ``Metadata.encode``, the record
classes' ``bytes()``, ``Transcoder`` for zstd) and on Databento's public
sample files (tests/fixtures/dbn/README.md), into real DuckDB warehouses.

Expected values are the numbers written (fixed-point integers divided by
hand: 4512.25 is 4512250000000 units of 1e-9) or the library decoder's own
reading of a file, never the reader under test.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import databento_dbn as dbn
import duckdb
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fbt_pipelines.catalog.specs import load_catalog
from fbt_pipelines.errors import DataError
from fbt_pipelines.ingest.dbn import Definition, contract_of, read_definitions, resolve_year
from fbt_pipelines.ingest.files import detect_format, ingest_path

SPECS = load_catalog()
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dbn"
UTC = dt.timezone.utc
UNIT = 1_000_000_000  # fixed-point units per point
ES_PRICE = 4512250000000  # 4512.25 points
TABLES = ("bars", "quarantine", "ingests", "data_versions")


def ns(text: str) -> int:
    """UTC nanoseconds since the epoch of an ISO time."""
    return int(np.datetime64(text, "ns").astype(np.int64))


def metadata(schema: dbn.Schema | None) -> bytes:
    return dbn.Metadata("GLBX.MDP3", ns("2024-11-04T00:00"), dbn.SType.RAW_SYMBOL, dbn.SType.INSTRUMENT_ID, schema,
                        end=ns("2024-11-05T00:00")).encode()


def definition(iid: int, symbol: str, cls: dbn.InstrumentClass, expiration: str | None) -> dbn.InstrumentDefMsg:
    kwargs = {"expiration": ns(expiration)} if expiration else {}
    return dbn.InstrumentDefMsg(1, iid, ns("2024-11-01T00:00"), ns("2024-11-01T00:00"), 250_000_000, UNIT,
                                symbol, symbol[:2], "FUT", cls, dbn.SecurityUpdateAction.ADD, **kwargs)


def bar(iid: int, time: str, o: int, h: int, lo: int, c: int, v: int,
        rtype: dbn.RType = dbn.RType.OHLCV_1M) -> dbn.OHLCVMsg:
    return dbn.OHLCVMsg(int(rtype.value), 1, iid, ns(time), o, h, lo, c, v)


def write(path: Path, schema: dbn.Schema | None, records: list, zstd: bool = False) -> Path:
    """A DBN file by the library's encoder: metadata then records; zstd by its Transcoder."""
    raw = metadata(schema) + b"".join(bytes(r) for r in records)
    if zstd:
        with open(path, "wb") as fh:
            transcoder = dbn.Transcoder(fh, dbn.Encoding.DBN, dbn.Compression.ZSTD)
            transcoder.write(raw)
            transcoder.finish()
    else:
        path.write_bytes(raw)
    return path


DEFINITIONS = [
    definition(101, "ESZ4", dbn.InstrumentClass.FUTURE, "2024-12-20T14:30"),
    definition(102, "ESH5", dbn.InstrumentClass.FUTURE, "2025-03-21T13:30"),
    definition(103, "ESZ4-ESH5", dbn.InstrumentClass.FUTURE_SPREAD, "2024-12-20T14:30"),
    definition(104, "ESZ4 C5000", dbn.InstrumentClass.CALL, "2024-12-20T14:30"),
]
BARS = [  # Monday 2024-11-04, inside the CME Globex session (UTC)
    bar(101, "2024-11-04T14:30", ES_PRICE, 4512750000000, 4512000000000, 4512500000000, 120),
    bar(102, "2024-11-04T14:30", 4552250000000, 4553000000000, 4552000000000, 4552750000000, 7),
    bar(103, "2024-11-04T14:30", -40_000_000_000, -39_750_000_000, -40_000_000_000, -39_750_000_000, 2),
    bar(104, "2024-11-04T14:30", 101_500_000_000, 101_500_000_000, 101_500_000_000, 101_500_000_000, 1),
    bar(101, "2024-11-04T14:31", 4512500000000, 4513250000000, 4512250000000, 4513000000000, 95),
    bar(104, "2024-11-04T14:31", 102_000_000_000, 102_000_000_000, 102_000_000_000, 102_000_000_000, 3),
]
# the future bars by hand: (contract, UTC time, open, high, low, close as decimal text, volume)
EXPECTED = [
    ("ESH2025", dt.datetime(2024, 11, 4, 14, 30, tzinfo=UTC), "4552.25", "4553", "4552", "4552.75", 7),
    ("ESZ2024", dt.datetime(2024, 11, 4, 14, 30, tzinfo=UTC), "4512.25", "4512.75", "4512", "4512.5", 120),
    ("ESZ2024", dt.datetime(2024, 11, 4, 14, 31, tzinfo=UTC), "4512.5", "4513.25", "4512.25", "4513", 95),
]


def stored_bars(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    return conn.execute("SELECT contract, ts, open, high, low, close, volume FROM bars "
                        "WHERE interval = '1m' ORDER BY contract, ts").fetchall()


def expected_rows() -> list[tuple]:
    return [(c, t, *(float(x) for x in (o, h, lo, cl)), v) for c, t, o, h, lo, cl, v in EXPECTED]


def counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES}


@pytest.fixture
def conn(tmp_path):
    (tmp_path / "db").mkdir()
    c = duckdb.connect(str(tmp_path / "db" / "warehouse.duckdb"))
    yield c
    c.close()


def test_fixed_point_prices_convert_to_the_decimal_doubles():
    from fbt_pipelines.ingest.dbn import fixed_to_points

    assert ES_PRICE == int("4512250000000") and ES_PRICE / UNIT == float("4512.25")
    fixed = np.array([ES_PRICE, 1, -39_750_000_000, 123_456_789_012_345_678, dbn.UNDEF_PRICE], dtype=np.int64)
    got = fixed_to_points(fixed)
    assert got[:4].tolist() == [float("4512.25"), float("0.000000001"), float("-39.75"),
                                float("123456789.012345678")]
    assert np.isnan(got[4])


def test_one_digit_years_resolve_against_the_expiration():
    assert resolve_year("4", 2024) == 2024 and resolve_year("5", 2025) == 2025
    assert resolve_year("5", 2024) == 2025  # CLF5 expiring in December 2024
    assert resolve_year("9", 2030) == 2029 and resolve_year("24", 2024) == 2024 and resolve_year("2024", None) == 2024
    future = Definition(1, "ESZ4", ns("2034-12-15T14:30"), "F")
    assert contract_of(future, SPECS) == ("ESZ2034", None)


def test_an_ohlcv_file_with_its_definitions_stores_the_futures_and_skips_the_rest(tmp_path, conn):
    path = write(tmp_path / "glbx-es.dbn", None, DEFINITIONS + BARS)  # mixed schema: definitions + bars
    (result,) = ingest_path(conn, path, specs=SPECS)
    assert (result.status, result.rows_read, result.accepted, result.quarantined) == ("ok", 3, 3, 0)
    assert result.roots == ("ES",)
    assert result.warnings["skipped_spread"] == 1 and result.warnings["skipped_option"] == 2
    assert result.notes == ("ESZ4-ESH5 (instrument id 103): spread, 1 bar(s) skipped",
                            "ESZ4 C5000 (instrument id 104): option, 2 bar(s) skipped")
    assert stored_bars(conn) == expected_rows()
    epoch = conn.execute("SELECT epoch_ns(ts) FROM bars WHERE contract = 'ESZ2024' ORDER BY ts").fetchall()
    assert [e[0] for e in epoch] == [ns("2024-11-04T14:30"), ns("2024-11-04T14:31")]  # UTC, as written
    assert conn.execute("SELECT format, interval, rows_read FROM ingests").fetchall() == [("dbn", "1m", 3)]


def test_a_single_schema_file_reads_its_definitions_from_the_companion_beside_it(tmp_path, conn):
    write(tmp_path / "glbx-mdp3-20241104.definition.dbn", dbn.Schema.DEFINITION, DEFINITIONS)
    path = write(tmp_path / "glbx-mdp3-20241104.ohlcv-1m.dbn", dbn.Schema.OHLCV_1M, BARS)
    assert {p.name: detect_format(p) for p in tmp_path.glob("*.dbn")} == dict.fromkeys(
        ["glbx-mdp3-20241104.definition.dbn", "glbx-mdp3-20241104.ohlcv-1m.dbn"], "dbn")
    (result,) = ingest_path(conn, path, specs=SPECS)
    assert (result.accepted, result.warnings["skipped_spread"], result.warnings["skipped_option"]) == (3, 1, 2)
    assert stored_bars(conn) == expected_rows()
    with pytest.raises(DataError, match="definition.dbn: no OHLCV bars"):  # the companion alone has no bars
        ingest_path(conn, tmp_path / "glbx-mdp3-20241104.definition.dbn", specs=SPECS)


def test_a_zstd_compressed_file_stores_the_same_bars(tmp_path, conn):
    write(tmp_path / "es.definition.dbn.zst", dbn.Schema.DEFINITION, DEFINITIONS, zstd=True)
    path = write(tmp_path / "es.ohlcv-1m.dbn.zst", dbn.Schema.OHLCV_1M, BARS, zstd=True)
    assert path.read_bytes()[:4] == b"\x28\xb5\x2f\xfd" and detect_format(path) == "dbn"
    (result,) = ingest_path(conn, path, specs=SPECS)
    assert result.accepted == 3 and stored_bars(conn) == expected_rows()


def test_re_ingesting_the_same_file_changes_nothing(tmp_path, conn):
    path = write(tmp_path / "es.dbn", None, DEFINITIONS + BARS)
    ingest_path(conn, path, specs=SPECS)
    before = {t: conn.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES}
    (again,) = ingest_path(conn, path, specs=SPECS)
    assert again.status == "skipped" and again.accepted == 3
    assert {t: conn.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES} == before


def test_an_undefined_price_is_quarantined_with_the_record_index(tmp_path, conn):
    bad = bar(101, "2024-11-04T14:32", ES_PRICE, ES_PRICE, ES_PRICE, dbn.UNDEF_PRICE, 5)
    path = write(tmp_path / "es.dbn", None, DEFINITIONS + BARS + [bad])
    (result,) = ingest_path(conn, path, specs=SPECS)
    assert (result.accepted, result.quarantined) == (3, 1)
    ((line, raw, reason),) = conn.execute("SELECT line, raw, reason FROM quarantine").fetchall()
    assert line == 10 and reason == "close is not a number"  # records 0-3 definitions, 4-9 bars, 10 this one
    assert raw.startswith("record 10: instrument_id=101 open=4512250000000") and f"close={dbn.UNDEF_PRICE}" in raw


BAD_CASES = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:-20]),
                  r"truncated DBN file \(record index 5 is cut after 36 of 56 bytes\)"),
    "truncated zstd": (None, r"truncated zstd stream"),
    "trades": (None, r"schema 'trades' is not bars"),
    "mbp-1 record": (None, r"record index 2: record type 1 \(MBP1Msg\) is neither OHLCV bars"),
    "no definition": (None, r"record index 1: instrument id 999 has no definition"),
    "unknown root": (None, r"record index 0: instrument id 7: raw symbol 'XXZ4': unknown market root 'XX'"),
    "hour bar in a minute file": (None, r"record index 3: record type 34 \(length 56\) in an ohlcv-1m file"),
}


def bad_file(tmp_path: Path, case: str) -> Path:
    quote = dbn.MBP1Msg(1, 101, ns("2024-11-04T14:30"), ES_PRICE, 1, dbn.Action.TRADE, dbn.Side.BID, 0,
                        ns("2024-11-04T14:30"))
    trade = dbn.TradeMsg(1, 101, ns("2024-11-04T14:30"), ES_PRICE, 1, dbn.Action.TRADE, dbn.Side.BID, 0,
                         ns("2024-11-04T14:30"))
    folder = tmp_path / case.replace(" ", "_")
    folder.mkdir()
    write(folder / "es.definition.dbn", dbn.Schema.DEFINITION,
          DEFINITIONS + [definition(7, "XXZ4", dbn.InstrumentClass.FUTURE, "2024-12-20T14:30")])
    if case == "truncated":
        path = write(folder / "es.ohlcv-1m.dbn", dbn.Schema.OHLCV_1M, BARS)
        BAD_CASES[case][0](path)
        return path
    if case == "truncated zstd":
        path = write(folder / "es.ohlcv-1m.dbn.zst", dbn.Schema.OHLCV_1M, BARS * 50, zstd=True)
        path.write_bytes(path.read_bytes()[:-30])
        return path
    if case == "trades":
        return write(folder / "es.trades.dbn", dbn.Schema.TRADES, [trade])
    if case == "mbp-1 record":
        return write(folder / "es.mixed.dbn", None, [BARS[0], BARS[1], quote])
    if case == "no definition":
        return write(folder / "es.ohlcv-1m.dbn", dbn.Schema.OHLCV_1M,
                     [BARS[0], bar(999, "2024-11-04T14:30", ES_PRICE, ES_PRICE, ES_PRICE, ES_PRICE, 1)])
    if case == "unknown root":
        return write(folder / "es.ohlcv-1m.dbn", dbn.Schema.OHLCV_1M,
                     [bar(7, "2024-11-04T14:30", ES_PRICE, ES_PRICE, ES_PRICE, ES_PRICE, 1)] + BARS)
    if case == "hour bar in a minute file":
        hour = bar(101, "2024-11-04T15:00", ES_PRICE, ES_PRICE, ES_PRICE, ES_PRICE, 1, rtype=dbn.RType.OHLCV_1H)
        return write(folder / "es.ohlcv-1m.dbn", dbn.Schema.OHLCV_1M, BARS[:3] + [hour])
    raise AssertionError(case)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_a_bad_file_is_a_data_error_naming_it_and_nothing_is_stored(tmp_path, conn, case):
    good = write(tmp_path / "good.dbn", None, DEFINITIONS + BARS)
    ingest_path(conn, good, specs=SPECS)
    before = counts(conn)
    path = bad_file(tmp_path, case)
    with pytest.raises(DataError) as err:
        ingest_path(conn, path, specs=SPECS)
    message = str(err.value)
    assert message.startswith(f"{path}: "), message
    assert re.search(BAD_CASES[case][1], message), message
    assert counts(conn) == before
    assert stored_bars(conn) == expected_rows()


def test_not_a_dbn_file_is_named(tmp_path, conn):
    path = tmp_path / "es.dbn"
    path.write_bytes(b"contract,ts,open\n")
    with pytest.raises(DataError, match=r"es\.dbn: not a DBN file"):
        ingest_path(conn, path, specs=SPECS)
    assert counts(conn) == dict.fromkeys(TABLES, 0)


def decoded(path: Path) -> list:
    """The bars of a file as the library's own decoder reads them."""
    decoder = dbn.DBNDecoder(compression=dbn.Compression.ZSTD if path.name.endswith(".zst") else dbn.Compression.NONE)
    decoder.write(path.read_bytes())
    return [r for r in decoder.decode() if isinstance(r, dbn.OHLCVMsg)]


@pytest.mark.parametrize("name", ["test_data.ohlcv-1m.dbn", "test_data.ohlcv-1m.v3.dbn.zst"])
def test_databentos_sample_files_import_by_their_symbol_mapping(tmp_path, conn, name):
    path = tmp_path / name
    shutil.copyfile(FIXTURES / name, path)  # alone: no definition file beside it
    records = decoded(path)
    assert len(records) == 2 and {r.instrument_id for r in records} == {5482}
    (result,) = ingest_path(conn, path, specs=SPECS)
    assert (result.status, result.accepted, result.roots) == ("ok", 2, ("ES",))
    want = [("ESH2021", dt.datetime.fromtimestamp(r.ts_event / 1e9, UTC), r.pretty_open, r.pretty_high,
             r.pretty_low, r.pretty_close, r.volume) for r in records]
    assert stored_bars(conn) == want
    assert want[0][1] == dt.datetime(2020, 12, 28, 13, 0, tzinfo=UTC) and want[0][2] == 372025.0


def test_databentos_sample_definitions_decode_and_a_stock_is_not_a_future():
    defs = read_definitions(FIXTURES / "test_data.definition.v3.dbn.zst")
    assert sorted((d.instrument_id, d.raw_symbol, d.instrument_class, d.expiration_ns) for d in defs.values()) == [
        (6819, "MSFT", "K", None), (6830, "MSFT", "K", None)]
    assert {contract_of(d, SPECS) for d in defs.values()} == {(None, "not_future")}


def test_a_sample_file_without_a_usable_mapping_names_the_missing_definition(tmp_path, conn):
    # the same bars requested by instrument id: no raw-symbol mapping, so a definition is needed
    records = decoded(FIXTURES / "test_data.ohlcv-1m.dbn")
    meta = dbn.Metadata("GLBX.MDP3", records[0].ts_event, dbn.SType.INSTRUMENT_ID, dbn.SType.INSTRUMENT_ID,
                        dbn.Schema.OHLCV_1M)
    path = tmp_path / "by-id.ohlcv-1m.dbn"
    path.write_bytes(meta.encode() + b"".join(bytes(r) for r in records))
    with pytest.raises(DataError, match=r"by-id\.ohlcv-1m\.dbn: record index 0: instrument id 5482 has no "
                                        r"definition .*\(none beside it\)"):
        ingest_path(conn, path, specs=SPECS)
    assert counts(conn) == dict.fromkeys(TABLES, 0)


def cli(*args: str):
    from fbt_pipelines.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=True)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_fbt_ingest_reads_a_dbn_file_by_format_and_by_detection(fbt_home, tmp_path):
    (tmp_path / "a").mkdir()
    write(tmp_path / "a" / "es.definition.dbn", dbn.Schema.DEFINITION, DEFINITIONS)
    path = write(tmp_path / "a" / "es.ohlcv-1m.dbn", dbn.Schema.OHLCV_1M, BARS)
    result = cli("ingest", str(path), "--format", "dbn", "--json")
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(x) for x in result.output.strip().splitlines()]
    assert (line["status"], line["accepted"], line["warnings"]["skipped_option"]) == ("ok", 3, 2)
    assert line["notes"][0] == "ESZ4-ESH5 (instrument id 103): spread, 1 bar(s) skipped"
    with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as c:
        assert stored_bars(c) == expected_rows()
    # a second file by detection; the folder's definition file is listed as a companion
    write(tmp_path / "a" / "es2.ohlcv-1m.dbn.zst", dbn.Schema.OHLCV_1M,
          [bar(102, "2024-11-04T14:35", ES_PRICE, ES_PRICE, ES_PRICE, ES_PRICE, 4)], zstd=True)
    result = cli("ingest", str(tmp_path / "a"), "--json")
    assert result.exit_code == 0, result.output
    out = {Path(x["source"]).name: x for x in map(json.loads, result.output.strip().splitlines())}
    assert {k: v["status"] for k, v in out.items()} == {
        "es.ohlcv-1m.dbn": "skipped", "es2.ohlcv-1m.dbn.zst": "ok", "es.definition.dbn": "skipped"}
    assert out["es.definition.dbn"]["note"] == "instrument definitions: used with the DBN bar files beside it"
    with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as c:
        assert c.execute("SELECT contract, ts, close FROM bars WHERE ts = '2024-11-04 14:35:00+00'").fetchall() == [
            ("ESH2025", dt.datetime(2024, 11, 4, 14, 35, tzinfo=UTC), 4512.25)]
    # table output names the file; a broken file exits 1 naming it
    (tmp_path / "b").mkdir()
    broken = tmp_path / "b" / "broken.dbn"
    broken.write_bytes(b"DBN\x03\xff\x00\x00\x00")
    result = cli("ingest", str(broken))
    assert result.exit_code == 1 and "broken.dbn: truncated DBN file" in result.output


STATE_SQL = {
    "bars": "SELECT * FROM bars ORDER BY contract, interval, ts",
    "quarantine": "SELECT * FROM quarantine ORDER BY file, line",
    "ingests": "SELECT * EXCLUDE (started_at, finished_at) FROM ingests ORDER BY ingest_id",
    "data_versions": "SELECT * EXCLUDE (updated_at) FROM data_versions ORDER BY tbl, key",
}


def minute_bars(contracts: dict[int, int], sessions: int, minutes: int, seed: int = 3) -> list:
    """Clean 1-minute bars of instrument ids (-> first session index), in time
    order across instruments as Databento writes them; 0.25 tick grid."""
    import exchange_calendars as xcals

    from fbt_pipelines.marketdata.sessions import SESSION_CALENDAR

    opens = xcals.get_calendar(SESSION_CALENDAR, start="2024-10-01", end="2024-12-31").opens
    rng = np.random.default_rng(seed)
    out = []
    for iid, first in contracts.items():
        ticks = 18000 + np.cumsum(rng.integers(-3, 4, sessions * minutes))
        for k, (s, m) in enumerate((s, m) for s in range(first, first + sessions) for m in range(minutes)):
            t = opens.iloc[s].tz_convert(None) + pd.Timedelta(minutes=m)
            c = int(ticks[k]) * 250_000_000
            out.append((t.value, bar(iid, str(t.to_datetime64()), c, c + 500_000_000, c - 250_000_000, c,
                                     int(rng.integers(0, 900)))))
    return [b for _t, b in sorted(out, key=lambda x: x[0])]


def ingest_state(db: Path, path: Path, bulk: bool):
    from fbt_pipelines.ingest import bulk_arrays

    old = bulk_arrays.BULK_MIN_ROWS
    bulk_arrays.BULK_MIN_ROWS = 0 if bulk else 1 << 62
    try:
        with duckdb.connect(str(db)) as c:
            results = ingest_path(c, path, specs=SPECS)
            return results, {k: c.execute(sql).fetchall() for k, sql in STATE_SQL.items()}
    finally:
        bulk_arrays.BULK_MIN_ROWS = old


def test_the_bulk_path_stores_what_the_general_path_stores(tmp_path):
    write(tmp_path / "es.definition.dbn", dbn.Schema.DEFINITION, DEFINITIONS)
    records = minute_bars({101: 20, 102: 21}, sessions=2, minutes=90) + BARS[2:4]  # + a spread and an option bar
    path = write(tmp_path / "es.ohlcv-1m.dbn", dbn.Schema.OHLCV_1M, records)
    (bulk,), bulk_state = ingest_state(tmp_path / "bulk.duckdb", path, bulk=True)
    (general,), general_state = ingest_state(tmp_path / "general.duckdb", path, bulk=False)
    assert (bulk.method, general.method) == ("bulk", "staged")
    assert bulk.__dict__ | {"method": None} == general.__dict__ | {"method": None}
    assert bulk_state == general_state
    assert len(bulk_state["bars"]) == 360 and bulk.warnings["skipped_spread"] == 1
    # a bar outside the sessions: the bulk path declines, the general path quarantines it by record index
    outside = bar(101, "2024-11-02T12:00", ES_PRICE, ES_PRICE, ES_PRICE, ES_PRICE, 1)  # a Saturday
    path2 = write(tmp_path / "es2.ohlcv-1m.dbn", dbn.Schema.OHLCV_1M, [outside] + records)
    (result,), state = ingest_state(tmp_path / "declined.duckdb", path2, bulk=True)
    assert (result.method, result.accepted, result.quarantined) == ("staged", 360, 1)
    assert [(q[2], q[4]) for q in state["quarantine"]] == [(0, "ts outside the market's trading sessions")]


def test_zstd_frames_and_the_size_limit(tmp_path, conn, monkeypatch):
    import zstandard

    raw = metadata(dbn.Schema.OHLCV_1M) + b"".join(bytes(r) for r in BARS)
    # two zstd frames (the second cut at a record edge), read in pieces smaller than a frame
    cut = len(metadata(dbn.Schema.OHLCV_1M)) + 3 * 56
    two = zstandard.ZstdCompressor().compress(raw[:cut]) + zstandard.ZstdCompressor().compress(raw[cut:])
    path = tmp_path / "two-frames.ohlcv-1m.dbn.zst"
    path.write_bytes(two)
    from fbt_pipelines.ingest import dbn as dbn_module

    assert dbn_module._decompress(path, two, chunk=7) == raw
    write(tmp_path / "es.definition.dbn", dbn.Schema.DEFINITION, DEFINITIONS)
    (result,) = ingest_path(conn, path, specs=SPECS)
    assert result.accepted == 3 and stored_bars(conn) == expected_rows()
    # a file that inflates past FBT_MAX_INGEST_FILE_MB is refused while it inflates, nothing stored
    bomb = tmp_path / "bomb.ohlcv-1m.dbn.zst"
    bomb.write_bytes(zstandard.ZstdCompressor().compress(raw + bytes(2 * 2**20)))
    monkeypatch.setenv("FBT_MAX_INGEST_FILE_MB", "1")
    before = counts(conn)
    with pytest.raises(DataError, match=r"bomb\.ohlcv-1m\.dbn\.zst: more than 1,048,576 bytes uncompressed"):
        ingest_path(conn, bomb, specs=SPECS)
    assert counts(conn) == before
