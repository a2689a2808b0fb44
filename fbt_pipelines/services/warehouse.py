"""The DuckDB warehouse: schema, ingest transaction, partition reads and writes.

Every function takes an open ``duckdb.DuckDBPyConnection``; the caller owns
the connection (a Dagster resource, the CLI, a test). Values always travel as
bound parameters or registered frames, never spliced into SQL; table and
column names come only from the constants in this module.

Times are stored as ``TIMESTAMPTZ`` in UTC.
"""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import contextmanager
from typing import Iterable, Iterator

import blake3
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS markets (
    root VARCHAR PRIMARY KEY, name VARCHAR, exchange VARCHAR, asset_class VARCHAR,
    currency VARCHAR, multiplier DOUBLE, tick_size DOUBLE, cycle VARCHAR,
    expiry_rule VARCHAR, first_notice_rule VARCHAR, roll_days_before INTEGER,
    commission DOUBLE, initial_margin DOUBLE, maintenance_margin DOUBLE
);
CREATE TABLE IF NOT EXISTS contracts (
    contract VARCHAR PRIMARY KEY, root VARCHAR, year INTEGER, month INTEGER,
    first_notice DATE, last_trade DATE
);
CREATE TABLE IF NOT EXISTS ingests (
    ingest_id VARCHAR PRIMARY KEY, path VARCHAR, contract VARCHAR, root VARCHAR,
    content_hash VARCHAR, rows_read INTEGER, accepted INTEGER, quarantined INTEGER,
    status VARCHAR, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ
);
-- Key (contract, interval, ts): kept unique by the ingest transaction (it
-- deletes overlapping keys before inserting; in-file duplicates are
-- quarantined) and checked by the raw_bars asset check. No PRIMARY KEY index:
-- on bulk loads it cost ~1.5 s per 5M rows and made the file 5x larger.
CREATE TABLE IF NOT EXISTS bars (
    contract VARCHAR, root VARCHAR, interval VARCHAR, ts TIMESTAMPTZ,
    open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE,
    volume BIGINT, open_interest BIGINT, ingest_id VARCHAR
);
CREATE TABLE IF NOT EXISTS quarantine (
    ingest_id VARCHAR, file VARCHAR, line INTEGER, raw VARCHAR, reason VARCHAR
);
CREATE TABLE IF NOT EXISTS data_versions (
    tbl VARCHAR, key VARCHAR, data_version VARCHAR, rows BIGINT, updated_at TIMESTAMPTZ,
    PRIMARY KEY (tbl, key)
);
"""

# Columns added to ``ingests`` after its first release (kept additive so an
# existing warehouse upgrades in place).
MIGRATIONS = [("replaced", "INTEGER"), ("format", "VARCHAR"), ("interval", "VARCHAR"), ("warnings", "VARCHAR")]

# Tables written whole-partition-at-a-time by the assets (created from the
# first frame written). The key column names the partition (market root).
RESULT_TABLES = {
    "roll_schedule": "root",
    "continuous_prices": "root",
    "continuous_variants": "series",  # `fbt continuous` with a non-default rule/method: ROOT|rule|method
    "roll_schedule_variants": "series",
    "features": "root",
    "predictions": "root",
    "backtest_runs": "root",
    "backtest_equity": "root",
    "backtest_trades": "root",
    "sweep_results": "root",
    "walk_forward_equity": "root",
    "model_runs": "model_name",  # one row per walk-forward fold
    "model_predictions": "model_name",  # every fold's out-of-sample predictions, stitched
    "adhoc_backtest_runs": "run_id",  # `fbt backtest` results, one MLflow run id each
    "adhoc_backtest_equity": "run_id",
    "adhoc_backtest_trades": "run_id",
    "request_backtest_runs": "request_id",  # queued requests (`fbt submit`), run in batches by the sensor
    "request_backtest_equity": "request_id",
    "request_backtest_trades": "request_id",
    "portfolio_equity": "portfolio",
    "portfolio_positions": "portfolio",
    "risk_report": "portfolio",
    "portfolio_trades": "portfolio",  # fills and rolls of the portfolio asset, USD columns
    "risk_scenarios": "portfolio",  # scenario x market P&L of the current book (risk_report)
    "risk_correlation": "portfolio",  # market and strategy return correlations (risk_report)
    "strategy_comparison": "report",
    "intraday_roll_schedule": "series",  # the intraday asset group: ROOT|interval[|start..end], e.g. ES|1m
    "intraday_continuous_prices": "series",
    "intraday_backtest_runs": "series",
    "intraday_backtest_equity": "series",  # every bar, in full
    "intraday_backtest_trades": "series",
    "intraday_sweep_results": "series",  # one row per parameter set of a sweep on the series
    "intraday_walk_forward_equity": "series",  # its walk-forward, per session
    "intraday_features": "series",
    "intraday_portfolio_equity": "portfolio",  # per session: ALL|interval[|start..end]
    "intraday_portfolio_pnl": "portfolio",  # per session, market and strategy
}


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Pin the session to UTC and, on a writable connection, create the core tables.

    UTC because TIMESTAMPTZ values come back in the session's zone, which
    would otherwise follow the machine's. Tables are created if they do not
    exist.
    """
    conn.execute("SET TimeZone = 'UTC'")
    read_only = conn.execute(
        "SELECT readonly FROM duckdb_databases() WHERE database_name = current_database()").fetchall()
    if read_only and read_only[0][0]:
        return  # a reader (CLI, a second process): the writer created the schema
    conn.execute(SCHEMA)
    for column, kind in MIGRATIONS:
        conn.execute(f"ALTER TABLE ingests ADD COLUMN IF NOT EXISTS {column} {kind}")


def table_exists(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
    ).fetchall()[0]
    return bool(row and row[0])


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection, **frames: pd.DataFrame) -> Iterator[duckdb.DuckDBPyConnection]:
    """One transaction with ``frames`` registered as views under their keyword names.

    COMMIT on success, ROLLBACK on any error (the error propagates); the views
    are dropped either way.
    """
    for name, frame in frames.items():
        conn.register(name, frame)
    try:
        conn.execute("BEGIN TRANSACTION")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except duckdb.TransactionException:
                pass  # a failed COMMIT (e.g. disk full) has rolled back already: keep its error
            raise
    finally:
        for name in frames:
            conn.unregister(name)


def write_markets(conn: duckdb.DuckDBPyConnection, markets: pd.DataFrame, contracts: pd.DataFrame) -> None:
    """Replace the ``markets`` and ``contracts`` reference tables in one transaction."""
    ensure_schema(conn)
    with transaction(conn, incoming_markets=markets, incoming_contracts=contracts):
        conn.execute("DELETE FROM markets")
        conn.execute("INSERT INTO markets BY NAME SELECT * FROM incoming_markets")
        conn.execute("DELETE FROM contracts")
        conn.execute("INSERT INTO contracts BY NAME SELECT * FROM incoming_contracts")


def content_version(frame: pd.DataFrame) -> str:
    """Content hash of ``frame``: column names, dtypes, values in row order; 16 hex.

    The data version :func:`replace_partition` records: any changed value,
    name, dtype or row order changes it. BLAKE3 over each column's bytes:
    numbers and times (int64 ns or us since the epoch, UTC) as held in
    memory, Arrow-backed strings as null mask, lengths and UTF-8 bytes, any
    other dtype as ``pandas.util.hash_pandas_object``'s 64-bit value hashes.
    The index is not part of it.
    """
    h = blake3.blake3()
    _put(h, str(len(frame)).encode())
    for name, column in frame.items():
        _put(h, f"{name}\x1f{column.dtype}".encode())
        for part in _column_bytes(column):
            _put(h, part)
    return h.hexdigest()[:16]


def _put(h: blake3.blake3, data: bytes | memoryview | np.ndarray) -> None:
    """Feed ``data`` preceded by its length in bytes (no two inputs read alike)."""
    view = memoryview(data).cast("B")
    h.update(len(view).to_bytes(8, "little"))
    h.update(view)


def _raw(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values).view(np.uint8)


def _arrow_strings(dtype: object) -> bool:
    """True for pandas' Arrow-backed string dtypes (``str``, ``string[pyarrow]``, Arrow)."""
    if isinstance(dtype, pd.StringDtype):
        return dtype.storage == "pyarrow"
    return isinstance(dtype, pd.ArrowDtype) and (pa.types.is_string(dtype.pyarrow_dtype)
                                                 or pa.types.is_large_string(dtype.pyarrow_dtype))


def _column_bytes(column: pd.Series) -> list[bytes | memoryview | np.ndarray]:
    """The byte strings :func:`content_version` hashes for one column."""
    dtype = column.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biufcmM":
        return [_raw(column.to_numpy())]
    if isinstance(dtype, pd.DatetimeTZDtype):
        return [_raw(column.array.asi8)]
    if _arrow_strings(dtype):
        values = column.array.__arrow_array__()
        arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        if len(arr) == 0:
            return [b""]
        nulls = b""
        if arr.null_count:
            nulls = _raw(arr.is_null().to_numpy(zero_copy_only=False))
            arr = pc.fill_null(arr, "")  # a null's slot: no bytes, whatever the buffer held
        width = np.dtype(np.int64 if pa.types.is_large_string(arr.type) else np.int32)
        offsets = np.frombuffer(arr.buffers()[1], dtype=width, count=len(arr) + 1, offset=arr.offset * width.itemsize)
        data = arr.buffers()[2]
        text = memoryview(data)[int(offsets[0]):int(offsets[-1])] if data is not None else b""
        return [nulls, _raw(np.diff(offsets).astype(np.int64)), text]
    return [_raw(pd.util.hash_pandas_object(column, index=False).to_numpy())]


def _pandas_str(dtype: object) -> bool:
    """True for pandas' default ``str`` dtype (Arrow storage, NaN as missing)."""
    return (isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"
            and isinstance(dtype.na_value, float) and np.isnan(dtype.na_value))


def _as_scanned(frame: pd.DataFrame) -> pa.Table | None:
    """``frame`` as Arrow with the values DuckDB's pandas scan reads; None if it cannot.

    Only for frames of unique string column names and numpy numbers or
    booleans, ns/us times (naive or tz-aware) and ``str`` columns, which that
    scan reads dtype by dtype: NaN and NaT are NULL, tz-aware ns times are
    cut to microseconds toward zero (TIMESTAMPTZ), naive ones stay ns. None
    for any other column (object, categorical, nullable, Arrow dtypes: the
    caller registers the frame itself). Arrow scans in DuckDB's threads
    without a Python object per string.
    """
    if not frame.columns.is_unique or not all(isinstance(c, str) for c in frame.columns):
        return None
    cut = []
    for name, dtype in frame.dtypes.items():
        if isinstance(dtype, np.dtype):
            if not (dtype.kind in "biu" or dtype in (np.float32, np.float64)
                    or dtype in (np.dtype("datetime64[ns]"), np.dtype("datetime64[us]"))):
                return None
        elif isinstance(dtype, pd.DatetimeTZDtype):
            if dtype.unit not in ("ns", "us"):
                return None
            if dtype.unit == "ns":
                cut.append(name)
        elif not _pandas_str(dtype):
            return None
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for name in cut:
        i = table.schema.get_field_index(name)
        column = table.column(i)
        table = table.set_column(i, name, column.cast(pa.timestamp("us", tz=column.type.tz), safe=False))
    return table.replace_schema_metadata(None)


def replace_partition(conn: duckdb.DuckDBPyConnection, table: str, key: str, frame: pd.DataFrame) -> str:
    """Atomically replace ``table``'s partition ``key`` with ``frame``; return its version.

    Every row of ``table`` whose partition column equals ``key`` is replaced
    with ``frame`` (which must carry that column), and the frame's content
    hash (:func:`content_version`) is recorded in ``data_versions``. Returns
    that data version. Frames of numbers, times and Arrow-backed strings go
    in as Arrow tables (:func:`_as_scanned`: the same stored values, without
    pandas' per-row string objects).

    The table is created from the frame's schema on first write; a frame with
    a different schema (newer code) migrates the table to it: see ``_migrate_columns``.
    """
    if table not in RESULT_TABLES:
        raise ValueError(f"{table!r} is not a result table ({', '.join(RESULT_TABLES)})")
    key_col = RESULT_TABLES[table]
    if key_col not in frame.columns:
        raise ValueError(f"frame for {table} lacks its partition column {key_col!r}")
    if len(frame) and not (frame[key_col] == key).all():
        raise ValueError(f"frame for {table} holds rows outside partition {key_col}={key!r}")
    ensure_schema(conn)
    version = content_version(frame)
    arrow = _as_scanned(frame)
    # the frame names the table's column types (as ever); its rows go in through Arrow when they can
    with transaction(conn, incoming_frame=frame, incoming_rows=frame if arrow is None else arrow):
        if not table_exists(conn, table):
            conn.execute(f"CREATE TABLE {table} AS SELECT * FROM incoming_frame LIMIT 0")
        else:
            existing = [r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                [table]).fetchall()]
            if existing != list(frame.columns):
                _migrate_columns(conn, table, key_col, key, existing, list(frame.columns))
        conn.execute(f"DELETE FROM {table} WHERE {key_col} = ?", [key])
        conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_rows")
        conn.execute(
            "INSERT OR REPLACE INTO data_versions VALUES (?, ?, ?, ?, ?)",
            [table, key, version, len(frame), dt.datetime.now(dt.UTC)],
        )
    return version


def replace_partitions(conn: duckdb.DuckDBPyConnection, tables: dict[str, pd.DataFrame], *,
                       versions: bool = True) -> None:
    """Replace, in ONE transaction, every partition present in each frame of ``tables``.

    ``tables``: table name -> frame holding whole partitions (its key column
    says which). One DELETE and one INSERT per table however many partitions
    (a batch of 1,000 queued requests is three statements, not 3,000); a data
    version per partition as :func:`replace_partition` records. A table whose
    schema differs from the frame's is written partition by partition through
    :func:`replace_partition` (which migrates it) first, outside this
    transaction. ``versions=False``: no data version is recorded (results no
    cache or lineage reads: hashing 1,000 partitions costs ~3 s).
    """
    ensure_schema(conn)
    for table, frame in tables.items():
        if table not in RESULT_TABLES:
            raise ValueError(f"{table!r} is not a result table ({', '.join(RESULT_TABLES)})")
        if RESULT_TABLES[table] not in frame.columns:
            raise ValueError(f"frame for {table} lacks its partition column {RESULT_TABLES[table]!r}")
    todo = {}
    for table, frame in tables.items():
        key_col = RESULT_TABLES[table]
        if table_exists(conn, table) and [r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                [table]).fetchall()] != list(frame.columns):
            for key, part in frame.groupby(key_col, sort=False):
                replace_partition(conn, table, str(key), part.reset_index(drop=True))
            continue
        todo[table] = frame
    now = dt.datetime.now(dt.UTC)
    versions = pd.DataFrame(
        [(table, str(key), content_version(part), len(part), now)
         for table, frame in (todo.items() if versions else ())
         for key, part in frame.groupby(RESULT_TABLES[table], sort=False)],
        columns=["tbl", "key", "data_version", "rows", "updated_at"])
    frames = {f"incoming_{i}": frame for i, frame in enumerate(todo.values())}
    with transaction(conn, incoming_versions=versions, **frames):
        for i, (table, frame) in enumerate(todo.items()):
            key_col = RESULT_TABLES[table]  # table and column names come from RESULT_TABLES, never from input
            if not table_exists(conn, table):
                conn.execute(f"CREATE TABLE {table} AS SELECT * FROM incoming_{i} LIMIT 0")
            conn.execute(f"DELETE FROM {table} WHERE {key_col} IN (SELECT DISTINCT {key_col} FROM incoming_{i})")
            conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_{i}")
        conn.execute("INSERT OR REPLACE INTO data_versions SELECT * FROM incoming_versions")


def _migrate_columns(conn: duckdb.DuckDBPyConnection, table: str, key_col: str, key: str,
                     existing: list[str], incoming: list[str]) -> None:
    """Give ``table`` the incoming frame's columns (newer code wrote a different schema).

    Rows of other partitions keep the columns both schemas share, new
    columns are NULL for them, dropped columns go; their data versions are
    forgotten (so no cache serves the old shape) until they are rematerialized.
    Runs inside the caller's transaction: a failure leaves the table as it was.
    """
    common = [c for c in incoming if c in existing]
    conn.execute(f"CREATE TABLE {table}__migrating AS SELECT * FROM incoming_frame LIMIT 0")
    if common:
        cols = ", ".join('"' + c.replace('"', '""') + '"' for c in common)
        try:
            conn.execute(f"INSERT INTO {table}__migrating ({cols}) SELECT {cols} FROM {table} WHERE {key_col} <> ?",
                         [key])
        except duckdb.Error as exc:
            raise ValueError(
                f"{table}: columns changed ({existing} -> {incoming}) and other partitions' rows do not fit "
                f"the new types ({exc}); rematerialize all partitions") from exc
    conn.execute(f"DROP TABLE {table}")
    conn.execute(f"ALTER TABLE {table}__migrating RENAME TO {table}")
    conn.execute("DELETE FROM data_versions WHERE tbl = ? AND key <> ?", [table, key])
    log.warning("%s: columns changed (%s -> %s); other partitions keep the shared columns until rematerialized",
                table, existing, incoming)


def partition_version(conn: duckdb.DuckDBPyConnection, table: str, key: str) -> str | None:
    """Data version last written for (table, key), or None."""
    ensure_schema(conn)
    row = next(iter(conn.execute("SELECT data_version FROM data_versions WHERE tbl = ? AND key = ?",
                                 [table, key]).fetchall()), None)
    return row[0] if row else None


def read_partition(conn: duckdb.DuckDBPyConnection, table: str, key: str, order_by: Iterable[str] = ()) -> pd.DataFrame:
    """All rows of a result table for one partition key (empty frame if none)."""
    if table not in RESULT_TABLES:
        raise ValueError(f"{table!r} is not a result table ({', '.join(RESULT_TABLES)})")
    if not table_exists(conn, table):
        return pd.DataFrame()
    order = list(order_by)
    cols = {r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}
    bad = [c for c in order if c not in cols]
    if bad:
        raise ValueError(f"{table} has no column(s) {bad}")
    sql = f"SELECT * FROM {table} WHERE {RESULT_TABLES[table]} = ?"
    if order:
        sql += " ORDER BY " + ", ".join(order)
    return conn.execute(sql, [key]).df()


def read_table(conn: duckdb.DuckDBPyConnection, table: str, order_by: Iterable[str] = ()) -> pd.DataFrame:
    """Every row of a result table (all partitions)."""
    if table not in RESULT_TABLES:
        raise ValueError(f"{table!r} is not a result table ({', '.join(RESULT_TABLES)})")
    if not table_exists(conn, table):
        return pd.DataFrame()
    order = [c for c in order_by if c.isidentifier()]
    return conn.execute(f"SELECT * FROM {table}" + (" ORDER BY " + ", ".join(order) if order else "")).df()


def read_bars(conn: duckdb.DuckDBPyConnection, root: str, interval: str = "1d") -> pd.DataFrame:
    """Per-contract bars of one market, ordered by (ts, contract)."""
    ensure_schema(conn)
    return conn.execute(
        """SELECT contract, root, ts, open, high, low, close, volume, open_interest
           FROM bars WHERE root = ? AND interval = ? ORDER BY ts, contract""",
        [root, interval],
    ).df()


def read_contracts(conn: duckdb.DuckDBPyConnection, root: str) -> pd.DataFrame:
    ensure_schema(conn)
    return conn.execute(
        "SELECT * FROM contracts WHERE root = ? ORDER BY last_trade", [root]
    ).df()


def bar_quality(conn: duckdb.DuckDBPyConnection, root: str, interval: str = "1d") -> dict[str, int]:
    """Stored bars of one interval that break OHLC rules or repeat a key, and all rows."""
    ensure_schema(conn)
    bad_ohlc, dupes, rows = conn.execute(
        """
        SELECT
          count(*) FILTER (WHERE NOT (high >= greatest(open, close, low) AND low <= least(open, close, high))),
          count(*) - count(DISTINCT (contract, interval, ts)),
          count(*)
        FROM bars WHERE root = ? AND interval = ?
        """,
        [root, interval],
    ).fetchall()[0]
    return {"bad_ohlc": int(bad_ohlc), "duplicates": int(dupes), "rows": int(rows)}


def quarantine_count(conn: duckdb.DuckDBPyConnection, root: str, interval: str = "1d") -> int:
    """Rows of one market's files of one interval that the ingest rejected.

    An ingest recorded before the ``interval`` column existed counts as daily.
    """
    ensure_schema(conn)
    return int(conn.execute(
        """SELECT count(*) FROM quarantine q JOIN ingests i USING (ingest_id)
           WHERE i.root = ? AND coalesce(i.interval, '1d') = ?""", [root, interval]
    ).fetchall()[0][0])
