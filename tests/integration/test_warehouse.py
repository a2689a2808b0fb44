"""The DuckDB warehouse on a real database file: ingest, idempotency, atomicity."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from fbt_pipelines.errors import DataError
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.ingest.files import ingest_path
from fbt_pipelines.services.cached_reads import read_partition_cached

GOOD = """contract,ts,open,high,low,close,volume,open_interest
ESZ2013,2013-12-02,1800.00,1810.25,1795.50,1805.75,1000,5000
ESZ2013,2013-12-03,1805.75,1806.00,1790.00,1795.25,1200,5100
ESZ2013,2013-12-04,1795.00,1799.50,1785.25,1792.00,900,5150
"""

MIXED = GOOD + """ESZ2013,2013-12-05,1792.00,1780.00,1785.00,1790.00,800,5200
ESZ2013,2013-12-06,1790.00,1801.00,1788.00,abc,800,5200
"""


def counts(conn) -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("bars", "ingests", "quarantine")}


@pytest.fixture
def conn(tmp_path):
    c = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    wh.ensure_schema(c)
    yield c
    c.close()


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_ingest_stores_bars_and_is_idempotent(conn, tmp_path):
    path = write(tmp_path, "es.csv", GOOD)
    (first,) = ingest_path(conn, path)
    assert (first.status, first.rows_read, first.accepted, first.quarantined) == ("ok", 3, 3, 0)
    bars = wh.read_bars(conn, "ES")
    assert bars["close"].tolist() == [1805.75, 1795.25, 1792.00]
    assert str(bars["ts"].dt.tz) == "UTC" and bars["ts"].iloc[0] == pd.Timestamp("2013-12-02", tz="UTC")
    before = counts(conn)
    version = wh.partition_version(conn, "bars", "ES")
    (again,) = ingest_path(conn, path)
    assert again.status == "skipped" and again.ingest_id == first.ingest_id
    assert counts(conn) == before == {"bars": 3, "ingests": 1, "quarantine": 0}
    assert wh.partition_version(conn, "bars", "ES") == version


def test_bad_rows_go_to_quarantine_with_line_numbers(conn, tmp_path):
    path = write(tmp_path, "es.csv", MIXED)
    (result,) = ingest_path(conn, path)
    assert (result.accepted, result.quarantined) == (3, 2)
    q = conn.execute("SELECT file, line, raw, reason FROM quarantine ORDER BY line").fetchall()
    assert [(line, reason) for _, line, _, reason in q] == [(5, "high < low"), (6, "close is not a number")]
    assert q[0][0] == str(path.resolve()) and q[1][2] == "ESZ2013,2013-12-06,1790.00,1801.00,1788.00,abc,800,5200"
    assert wh.quarantine_count(conn, "ES") == 2


def test_overlapping_rows_from_a_newer_file_replace_and_are_counted(conn, tmp_path):
    ingest_path(conn, write(tmp_path, "es.csv", GOOD))
    v1 = wh.partition_version(conn, "bars", "ES")
    corrected = GOOD.replace("1795.25,1200", "1796.25,1200")
    (result,) = ingest_path(conn, write(tmp_path, "es_fix.csv", corrected))
    assert (result.status, result.replaced) == ("ok", 3)
    assert conn.execute("SELECT replaced FROM ingests WHERE ingest_id = ?", [result.ingest_id]).fetchone()[0] == 3
    bars = wh.read_bars(conn, "ES")
    assert len(bars) == 3 and bars["close"].tolist() == [1805.75, 1796.25, 1792.00]
    assert wh.partition_version(conn, "bars", "ES") != v1


def test_failed_ingest_leaves_nothing_half_written(conn, tmp_path):
    ingest_path(conn, write(tmp_path, "es.csv", GOOD))
    before = counts(conn)
    with pytest.raises(DataError, match=r"es2.csv: line 5: high < low \(--strict"):
        ingest_path(conn, write(tmp_path, "es2.csv", MIXED.replace("ESZ2013", "ESH2014")), strict=True)
    assert counts(conn) == before
    with pytest.raises(DataError, match="lacks open"):
        ingest_path(conn, write(tmp_path, "es3.csv", "contract,ts,high,low,close,volume\nESZ2013,2013-12-09,1,1,1,1\n"))
    assert counts(conn) == before
    assert wh.read_bars(conn, "ES")["contract"].unique().tolist() == ["ESZ2013"]


def test_replace_partition_touches_only_its_partition(conn):
    es = pd.DataFrame({"root": ["ES", "ES"], "x": [1.0, 2.0]})
    cl = pd.DataFrame({"root": ["CL"], "x": [3.0]})
    v_es = wh.replace_partition(conn, "features", "ES", es)
    wh.replace_partition(conn, "features", "CL", cl)
    v_es2 = wh.replace_partition(conn, "features", "ES", es.assign(x=[5.0, 6.0]))
    assert v_es != v_es2 and wh.partition_version(conn, "features", "ES") == v_es2
    assert wh.read_partition(conn, "features", "ES", ["x"])["x"].tolist() == [5.0, 6.0]
    assert wh.read_partition(conn, "features", "CL")["x"].tolist() == [3.0]
    with pytest.raises(ValueError, match="outside partition"):
        wh.replace_partition(conn, "features", "ES", cl)
    with pytest.raises(ValueError, match="not a result table"):
        wh.replace_partition(conn, "bars; DROP TABLE bars", "ES", es)


def test_newer_columns_migrate_the_table_and_keep_other_partitions(conn):
    """Newer code writes other columns: the table takes them; other partitions
    keep the shared columns (new ones NULL, dropped ones gone) and lose their
    data version until rematerialized; a failed migration changes nothing."""
    wh.replace_partition(conn, "features", "ES", pd.DataFrame({"root": ["ES"], "x": [1.0], "old": [7.0]}))
    wh.replace_partition(conn, "features", "CL", pd.DataFrame({"root": ["CL", "CL"], "x": [3.0, 4.0], "old": [8.0, 9.0]}))
    wh.replace_partition(conn, "features", "ES", pd.DataFrame({"root": ["ES"], "x": [5.0], "y": [6.0]}))
    assert wh.read_partition(conn, "features", "ES").to_dict("records") == [{"root": "ES", "x": 5.0, "y": 6.0}]
    cl = wh.read_partition(conn, "features", "CL", ["x"])
    assert list(cl.columns) == ["root", "x", "y"] and cl["x"].tolist() == [3.0, 4.0] and cl["y"].isna().all()
    assert wh.partition_version(conn, "features", "CL") is None
    assert wh.partition_version(conn, "features", "ES") is not None
    with pytest.raises(ValueError, match="do not fit"):
        wh.replace_partition(conn, "features", "ES", pd.DataFrame({"root": ["ES"], "x": [pd.Timestamp("2020-01-01", tz="UTC")], "z": [1]}))
    assert wh.read_partition(conn, "features", "CL", ["x"])["x"].tolist() == [3.0, 4.0]
    assert wh.read_partition(conn, "features", "ES").to_dict("records") == [{"root": "ES", "x": 5.0, "y": 6.0}]


def test_cached_read_follows_the_data_version(conn, bus):
    frame = pd.DataFrame({"root": ["ES"] * 3, "ts": pd.date_range("2020-01-01", periods=3, tz="UTC"),
                          "close": [1.0, 2.0, 3.5]})
    wh.replace_partition(conn, "continuous_prices", "ES", frame)
    first, hit1 = read_partition_cached(conn, bus, "continuous_prices", "ES", ["ts"])
    second, hit2 = read_partition_cached(conn, bus, "continuous_prices", "ES", ["ts"])
    assert (hit1, hit2) == (False, True)
    pd.testing.assert_frame_equal(first, second)
    wh.replace_partition(conn, "continuous_prices", "ES", frame.assign(close=[9.0, 9.0, 9.0]))
    third, hit3 = read_partition_cached(conn, bus, "continuous_prices", "ES", ["ts"])
    assert hit3 is False and third["close"].tolist() == [9.0, 9.0, 9.0]


def test_bars_cache_is_invalidated_by_a_new_ingest(conn, bus, tmp_path):
    from fbt_pipelines.services.cached_reads import read_bars_cached

    ingest_path(conn, write(tmp_path, "es.csv", GOOD))
    first, hit1 = read_bars_cached(conn, bus, "ES")
    again, hit2 = read_bars_cached(conn, bus, "ES")
    assert (hit1, hit2) == (False, True)
    pd.testing.assert_frame_equal(first, again)
    ingest_path(conn, write(tmp_path, "es_fix.csv", GOOD.replace("1792.00,900", "1793.00,900")))
    fresh, hit3 = read_bars_cached(conn, bus, "ES")
    assert hit3 is False and fresh["close"].tolist() == [1805.75, 1795.25, 1793.00]


def test_readers_work_on_a_read_only_connection(tmp_path):
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as c:
        wh.ensure_schema(c)
        ingest_path(c, write(tmp_path, "es.csv", GOOD))
    with duckdb.connect(str(path), read_only=True) as ro:
        assert len(wh.read_bars(ro, "ES")) == 3 and wh.partition_version(ro, "bars", "ES") is not None
        assert str(wh.read_bars(ro, "ES")["ts"].dt.tz) == "UTC"
