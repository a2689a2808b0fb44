"""Partition writes through Arrow store what DuckDB's own pandas scan stores; the data version.

``replace_partition`` hands frames of numbers, times and ``str`` columns to
DuckDB as Arrow tables (:func:`~fbt_pipelines.services.warehouse._as_scanned`).
The reference here is DuckDB itself reading the same pandas frame (``CREATE
TABLE ... AS SELECT * FROM frame``, the path every write took before): column
types and every stored value (compared as text, so -0.0, NULL vs NaN and
microseconds count) must be the same, for a new table and for rows added to
an existing one. The data version (:func:`~fbt_pipelines.services.warehouse.content_version`)
must change when any single value, a name, a dtype or the row order
changes, and must not change with how equal content is laid out in memory.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from fbt_pipelines.services import warehouse as wh

NS = np.array([-1, -999, -1000, -1001, 0, 1, 499, 500, 501, 999, 1000, 1_600_000_000_123_456_789,
               -1_600_000_000_123_456_789, np.iinfo(np.int64).min], dtype="int64")  # the last: NaT


def edge_frame(root: str = "ES") -> pd.DataFrame:
    n = len(NS)
    return pd.DataFrame({
        "root": root,
        "text": pd.array(["a", None, "ü€", "", "x" * 20, "b", "c", "d", "e", "f", "g", "h", "i", "j"], dtype="str"),
        "f64": np.array([np.nan, -0.0, 0.0, np.inf, -np.inf, 1e308, 5e-324, 1.5, 2, 3, 4, 5, 6, 7]),
        "f32": np.r_[np.nan, np.arange(n - 1) / 3].astype("float32"),
        "i64": np.array([np.iinfo(np.int64).max, np.iinfo(np.int64).min + 1, *range(n - 2)], dtype="int64"),
        "i8": np.arange(n, dtype="int8"), "u64": np.arange(n, dtype="uint64") * (2**60),
        "flag": np.arange(n) % 2 == 0,
        "ts_utc": pd.DatetimeIndex(NS).tz_localize("UTC"),  # ns below a microsecond: cut toward zero
        "ts_ny": pd.DatetimeIndex(np.r_[NS[:-1], 0]).tz_localize("UTC").tz_convert("America/New_York"),
        "naive_ns": pd.DatetimeIndex(NS),
        "naive_us": pd.DatetimeIndex((NS // 1000) * 1000).as_unit("us"),
        "utc_us": pd.DatetimeIndex((NS // 1000) * 1000).as_unit("us").tz_localize("UTC"),
    })


def stored(conn, table: str, where: str = "") -> tuple[list, list]:
    types = [(r[0], r[1]) for r in conn.execute(f"DESCRIBE {table}").fetchall()]
    text = ", ".join(f'"{c}"::VARCHAR, "{c}" IS NULL' for c, _ in types)
    return types, conn.execute(f"SELECT {text} FROM {table} {where} ORDER BY rowid").fetchall()


@pytest.fixture
def conn(tmp_path):
    c = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    wh.ensure_schema(c)
    yield c
    c.close()


def test_arrow_rows_store_what_the_pandas_scan_stores(conn):
    es, cl = edge_frame("ES"), edge_frame("CL").iloc[::-1].reset_index(drop=True)
    assert wh._as_scanned(es) is not None  # the Arrow path is the one under test
    wh.replace_partition(conn, "features", "ES", es)  # creates the table
    wh.replace_partition(conn, "features", "CL", cl)  # rows into the existing table
    conn.register("reference_es", es)
    conn.register("reference_cl", cl)
    conn.execute("CREATE TABLE reference AS SELECT * FROM reference_es")
    conn.execute("INSERT INTO reference BY NAME SELECT * FROM reference_cl")
    assert stored(conn, "features") == stored(conn, "reference")
    types = dict(stored(conn, "features")[0])
    assert types["ts_utc"] == "TIMESTAMP WITH TIME ZONE" and types["naive_ns"] == "TIMESTAMP_NS"
    # -1 ns and -999 ns are stored as 1970-01-01 00:00:00 (cut toward zero), -1001 ns as -1 us
    assert [r[0] for r in conn.execute("SELECT epoch_us(ts_utc) FROM features WHERE root = 'ES' ORDER BY rowid "
                                       "LIMIT 4").fetchall()] == [0, 0, -1, -1]


def test_other_dtypes_still_go_through_the_pandas_scan(conn):
    """Object, categorical, nullable and Arrow dtypes: the frame itself is registered, as ever."""
    base = pd.DataFrame({"root": ["ES"] * 3, "x": [1.0, 2.0, 3.0]})
    frames = {
        "object": base.assign(o=pd.array(["a", None, 3], dtype=object)),
        "category": base.assign(c=pd.Categorical(["u", "v", "u"])),
        "nullable": base.assign(n=pd.array([1, None, 3], dtype="Int64")),
        "arrow": base.assign(a=pd.array(["p", None, "q"], dtype=pd.ArrowDtype(pa.string())),
                             t=pd.DatetimeIndex(NS[:3]).tz_localize("UTC")),
    }
    for name, frame in frames.items():
        assert wh._as_scanned(frame) is None, name
        conn.execute("DROP TABLE IF EXISTS predictions")
        conn.execute("DROP TABLE IF EXISTS reference")
        wh.replace_partition(conn, "predictions", "ES", frame)
        conn.register("reference_frame", frame)
        conn.execute("CREATE TABLE reference AS SELECT * FROM reference_frame")
        assert stored(conn, "predictions") == stored(conn, "reference"), name


def other_value(value: object, dtype: object) -> object:
    """A value unlike ``value`` of the same column: the next float, +-1, another string or time."""
    if isinstance(dtype, pd.CategoricalDtype):
        return "v" if value == "u" else "u"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return (pd.Timestamp(0, tz=dtype.tz) if value is pd.NaT else value) + pd.Timedelta(1, unit=dtype.unit)
    if isinstance(dtype, np.dtype) and dtype.kind == "M":
        unit = np.datetime_data(dtype)[0]
        return (np.datetime64(0, unit) if np.isnat(value) else value) + np.timedelta64(1, unit)
    if isinstance(dtype, np.dtype) and dtype.kind == "b":
        return not value
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        return 1.0 if np.isnan(value) else -value if np.isinf(value) else np.nextafter(value, np.inf, dtype=dtype)
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        return value - 1 if value > np.iinfo(dtype).min else value + 1
    if value is None or value is pd.NA or value != value:
        return ""
    if value == "":
        return None  # an empty string and a missing one differ
    return f"{value}!" if isinstance(value, str) else value + 1


def test_content_version_changes_with_any_value_name_dtype_or_order():
    base = edge_frame().assign(cat=pd.Categorical(["u", "v"] * 7), obj=pd.array([1, "a"] * 7, dtype=object),
                               arrow=pd.array(["p", None] * 7, dtype=pd.ArrowDtype(pa.string())))
    v0 = wh.content_version(base)
    assert len(v0) == 16 and int(v0, 16) >= 0
    seen = {v0}

    def changed(frame: pd.DataFrame, what: str) -> None:
        assert wh.content_version(frame) not in seen, what
        seen.add(wh.content_version(frame))

    for col in base.columns:
        dtype = base[col].dtype
        for row in (0, 1, 3, 6, len(base) - 1):
            if isinstance(dtype, np.dtype) and dtype.kind in "biufM":
                values = base[col].to_numpy().copy()
                values[row] = other_value(values[row] if dtype.kind == "M" else values[row].item(), dtype)
            else:
                values = base[col].astype(object).tolist()
                values[row] = other_value(values[row], dtype)
                values = pd.array(values, dtype=dtype)
            edited = base.assign(**{col: values})
            assert edited[col].dtype == dtype and not edited.equals(base), (col, row)
            changed(edited, f"{col} row {row}")
    changed(base.assign(f64=base["f64"].where(base.index != 1, 0.0)), "-0.0 -> 0.0")
    changed(base.iloc[[1, 0, *range(2, len(base))]], "two rows swapped")
    changed(base.rename(columns={"f64": "f65"}), "a name")
    changed(base.assign(i8=base["i8"].astype("int16")), "a dtype")
    changed(base.assign(u64=base["u64"].astype("int64")), "the same bytes as another dtype")
    changed(base.iloc[:-1], "a row fewer")
    two = pd.DataFrame({"s": pd.array(["ab", "c"], dtype="str")})
    assert wh.content_version(two) != wh.content_version(pd.DataFrame({"s": pd.array(["a", "bc"], dtype="str")}))
    assert len(seen) == 1 + 5 * len(base.columns) + 6


def test_content_version_ignores_layout_and_index():
    frame = edge_frame()
    v = wh.content_version(frame)
    chunks = pa.chunked_array([pa.array(frame["text"].iloc[:5], pa.large_string()),
                               pa.array(frame["text"].iloc[5:], pa.large_string())])
    same = [
        frame.copy(),
        frame.set_index(frame.index + 100),  # another index
        pd.concat([frame.iloc[:3], frame.iloc[3:]]),  # the same rows, re-joined (consolidated blocks)
        frame.assign(text=pd.array(chunks, dtype="str")),  # strings in two Arrow chunks
        pd.concat([edge_frame(), edge_frame()]).iloc[len(frame):],  # a slice: Arrow and numpy offsets
    ]
    assert all(wh.content_version(f) == v for f in same)


def test_replace_partition_records_the_content_version(conn):
    frame = edge_frame()
    version = wh.replace_partition(conn, "features", "ES", frame)
    assert version == wh.content_version(frame) == wh.partition_version(conn, "features", "ES")
    wh.replace_partitions(conn, {"features": pd.concat([frame, edge_frame("CL")], ignore_index=True)})
    assert wh.partition_version(conn, "features", "ES") == version
    assert wh.partition_version(conn, "features", "CL") == wh.content_version(edge_frame("CL"))
