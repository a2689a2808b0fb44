"""The real LEAN fixtures (tests/fixtures/lean: ES and GC daily, one ES minute day)
through ``ingest_path`` into a fresh DuckDB file, checked against the zips read
independently here with ``zipfile``."""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from pathlib import Path

import duckdb
import pytest

from fbt_pipelines.ingest.files import ingest_path

LEAN = Path(__file__).resolve().parents[1] / "fixtures" / "lean"
TRADE_ZIPS = [LEAN / "es_trade.zip", LEAN / "comex" / "daily" / "gc_trade.zip",
              LEAN / "minute" / "es" / "20131218_trade.zip"]
MONTHS = dict(zip(range(1, 13), "FGHJKMNQUVXZ"))
UTC = dt.timezone.utc


def contract_of(inner: str) -> str:
    """``es_trade_201312.csv`` / ``20131218_es_minute_trade_201312.csv`` -> ``ESZ2013``."""
    m = re.search(r"(?:^|_)([a-z]+)_(?:minute_)?(?:trade|openinterest)_(\d{4})(\d{2})\.csv$", inner)
    return f"{m[1].upper()}{MONTHS[int(m[3])]}{m[2]}"


def members(path: Path) -> dict[str, list[list[str]]]:
    """contract -> its non-empty data lines, split at commas."""
    with zipfile.ZipFile(path) as zf:
        return {contract_of(name): [ln.split(",") for ln in zf.read(name).decode().splitlines() if ln.strip()]
                for name in zf.namelist()}


def stamp(first: str, zip_date: str | None) -> dt.datetime:
    if zip_date is None:  # daily: yyyyMMdd HH:mm
        return dt.datetime.strptime(first, "%Y%m%d %H:%M").replace(tzinfo=UTC)
    return dt.datetime.strptime(zip_date, "%Y%m%d").replace(tzinfo=UTC) + dt.timedelta(milliseconds=int(first))


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    conn = duckdb.connect(str(tmp_path_factory.mktemp("lean") / "warehouse.duckdb"))
    results = {path.name: ingest_path(conn, path) for path in TRADE_ZIPS}
    yield conn, results
    conn.close()


def counts(conn) -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
            for t in ("bars", "ingests", "quarantine", "data_versions")}


def test_every_data_line_is_a_bar_and_none_is_quarantined(warehouse):
    conn, results = warehouse
    for path in TRADE_ZIPS:
        lines = members(path)
        res = results[path.name]
        assert len(res) == len(lines) and {r.status for r in res} == {"ok"}
        assert sum(r.quarantined for r in res) == 0
        assert sum(r.accepted for r in res) == sum(len(v) for v in lines.values())
        interval = "1m" if path.parent.name == "es" else "1d"
        stored = dict(conn.execute(
            "SELECT contract, count(*) FROM bars WHERE interval = ? AND contract IN (SELECT unnest(?)) "
            "GROUP BY contract", [interval, list(lines)]).fetchall())
        assert stored == {c: len(v) for c, v in lines.items()}
    total = sum(len(v) for p in TRADE_ZIPS for v in members(p).values())
    assert counts(conn)["bars"] == total and counts(conn)["quarantine"] == 0
    assert conn.execute("SELECT sum(quarantined) FROM ingests").fetchall()[0][0] == 0


def test_contract_ids_intervals_and_roots(warehouse):
    conn, _ = warehouse
    by_interval = dict(conn.execute(
        "SELECT interval, list(DISTINCT contract ORDER BY contract) FROM bars GROUP BY interval").fetchall())
    daily = set(members(TRADE_ZIPS[0])) | set(members(TRADE_ZIPS[1]))
    assert set(by_interval["1d"]) == daily and {"ESZ2013", "ESH2014", "GCZ2013", "GCG2014"} <= daily
    assert set(by_interval["1m"]) == set(members(TRADE_ZIPS[2])) and "ESZ2013" in by_interval["1m"]
    assert all(re.fullmatch(r"(ES|GC)[FGHJKMNQUVXZ]20\d\d", c) for cs in by_interval.values() for c in cs)
    roots = dict(conn.execute("SELECT root, count(*) FROM bars GROUP BY root").fetchall())
    assert set(roots) == {"ES", "GC"}
    minute_days = conn.execute("SELECT DISTINCT CAST(ts AS DATE) FROM bars WHERE interval = '1m'").fetchall()
    assert minute_days == [(dt.date(2013, 12, 18),)]
    assert conn.execute("SELECT count(*) FROM bars WHERE interval = '1d' AND "
                        "(hour(ts) <> 0 OR minute(ts) <> 0)").fetchall()[0][0] == 0


def test_first_esz2013_daily_bar(warehouse):
    conn, _ = warehouse
    row = conn.execute("SELECT ts, open, high, low, close, volume, open_interest FROM bars "
                       "WHERE contract = 'ESZ2013' AND interval = '1d' ORDER BY ts LIMIT 1").fetchall()[0]
    assert row == (dt.datetime(2013, 10, 6, tzinfo=UTC), 1676.75, 1678.25, 1673.25, 1676.5, 21573, 2691941)
    first = members(TRADE_ZIPS[0])["ESZ2013"][0]  # the same values straight from the zip
    assert first[0] == "20131006 00:00" and [float(x) for x in first[1:]] == list(row[1:6])


def test_daily_open_interest_is_joined_exactly(warehouse):
    conn, _ = warehouse
    for trade in TRADE_ZIPS[:2]:
        oi = {(c, stamp(r[0], None)): int(r[1])
              for c, rows in members(trade.with_name(trade.name.replace("trade", "openinterest"))).items()
              for r in rows}
        bars = conn.execute("SELECT contract, ts, open_interest FROM bars WHERE interval = '1d' AND root = ?",
                            [trade.name[:2].upper()]).fetchall()
        assert bars and [(c, ts, v) for c, ts, v in bars] == [(c, ts, oi.get((c, ts))) for c, ts, _ in bars]
        assert any(v is not None for _, _, v in bars) and any(v is None for _, _, v in bars)


def test_minute_open_interest_is_the_latest_snapshot(warehouse):
    conn, _ = warehouse
    snaps = members(LEAN / "minute" / "es" / "20131218_openinterest.zip")["ESZ2013"]
    snaps = [(stamp(t, "20131218"), int(v)) for t, v in snaps]
    (first_t, first_v), (_, _), (last_t, last_v) = snaps

    def stored(ts: dt.datetime):
        return conn.execute("SELECT open_interest FROM bars WHERE contract = 'ESZ2013' AND interval = '1m' "
                            "AND ts = ?", [ts]).fetchall()

    assert stored(first_t) == [(first_v,)]  # a bar at a snapshot: that snapshot
    after = last_t + dt.timedelta(minutes=1)  # a bar after the last snapshot: the last one
    assert stored(after) == [(last_v,)]
    assert stored(first_t - dt.timedelta(minutes=1)) == [(None,)]  # before any snapshot: unknown


def test_ingesting_the_same_zips_again_changes_nothing(warehouse):
    conn, first = warehouse
    before = counts(conn)
    versions = conn.execute("SELECT * FROM data_versions ORDER BY key").fetchall()
    for path in TRADE_ZIPS:
        again = ingest_path(conn, path)
        assert {r.status for r in again} == {"skipped"}
        assert [r.ingest_id for r in again] == [r.ingest_id for r in first[path.name]]
        assert [(r.accepted, r.quarantined) for r in again] == [(r.accepted, r.quarantined) for r in first[path.name]]
    assert counts(conn) == before
    assert conn.execute("SELECT * FROM data_versions ORDER BY key").fetchall() == versions
