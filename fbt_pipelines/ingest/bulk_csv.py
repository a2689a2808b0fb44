"""The bulk path for a large canonical CSV: DuckDB's typed CSV reader straight
into ``bars`` in one ``INSERT``, then the checks on the stored rows, all in
the file's one transaction.

Why: staging a file first (every field as text, then parsed, then copied
into ``bars``) costs about twice a direct insert; docs/ingest-performance.md
has the profile. Large vendor files are almost always clean, so this path
bets that the file is, and losing the bet is cheap and safe: at the first
sign of a row the general path would quarantine (or of anything this path
cannot prove, such as two-digit-year codes or rows out of order) the
transaction rolls back, :func:`ingest_bulk_csv` returns None, and the caller
runs the general path (stage, validate with line numbers and reasons,
quarantine). This path stores a file only when the general path would accept
every row, and then stores the same bars with the same warning counts
(``tests/unit/test_bulk_csv.py`` shows both on generated files).

What is checked, and where:

1. inside the ``INSERT``, per row and in parallel: every field parses to its
   type (the reader raises on a wrong field count, a bad number or
   timestamp) and the row rules hold (``row_rules_ok_sql``, with the
   market's price bounds as parameters; a failing row makes ``error()``
   abort the statement);
2. on the stored rows of this ingest: every distinct contract code is already
   an fbt contract id, all of one catalogue market (the INSERT writes that
   market's root as a constant); each contract's rows form one block with
   strictly rising timestamps (so no (contract, ts) repeats in the file, and
   file order is time order); every bar lies in a trading session; no close
   breaks the band around the previous close (``validation.band_outliers``,
   from the last stored close before the block); then the warnings: prices
   off the tick grid (SQL) and single-bar spikes (NumPy over the closes, the
   rule of ``quality.large_move_count``).

A file of several markets, with two-digit-year codes, or sorted by time
across contracts is stored by the general path (correct, about half the
speed).

Units: prices in points, volume and open interest in contracts, ``ts``
stored as UTC instants (``TIMESTAMPTZ``).
"""

from __future__ import annotations

import datetime as dt
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import duckdb
import numpy as np

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.marketdata.sql_rules import off_tick_sql, outside_session_count, row_rules_ok_sql
from fbt_pipelines.marketdata.validation import band_outliers
from fbt_pipelines.ingest.sql_validation import stored_closes_before
from fbt_pipelines.ingest.staging import _canonical_columns, _first_line, _header, contract_map_of
from fbt_pipelines.services.warehouse import transaction

# Files smaller than this take the general path (their cost is not in the parse).
BULK_MIN_BYTES = 1 << 20
_TYPES = {"contract": "VARCHAR", "ts": "TIMESTAMPTZ", "open": "DOUBLE", "high": "DOUBLE", "low": "DOUBLE",
          "close": "DOUBLE", "volume": "DOUBLE", "open_interest": "DOUBLE"}
_COMPRESSION_LIST = re.compile(r"[a-z_,]*")


class NotClean(Exception):
    """The file is not one the bulk path can store: roll back, take the general path."""


@dataclass(frozen=True)
class BulkChecks:
    """What the checks on the stored rows found (the file is clean)."""

    rows: int
    contracts: tuple[str, ...]
    roots: tuple[str, ...]
    warnings: dict[str, int]
    first_ts: dt.datetime
    last_ts: dt.datetime


@dataclass(frozen=True)
class BulkPlan:
    """How to read a file on the bulk path: its canonical column names, and
    the market root of its first contract (every row's ``root``: a file of
    one market, which the checks confirm)."""

    cols: list[str]
    root: str


def bulk_plan(path: Path, mapping: Mapping[str, str], default_contract: str | None,
              specs: Mapping[str, ContractSpec]) -> BulkPlan | None:
    """The plan if the bulk path may try the file, else None.

    Tries: a file of at least ``BULK_MIN_BYTES`` with an unquoted header
    whose first data line carries (or whose name is) a code that is already an
    fbt contract id. A file-level problem (empty, not UTF-8, missing columns)
    raises :class:`DataError` as on the general path."""
    if path.stat().st_size < BULK_MIN_BYTES:
        return None
    cols = _canonical_columns(path, _header(path), mapping)
    if '"' in _first_line(path):
        return None
    with open(path, "rb") as fh:
        fh.readline()
        first = fh.readline().decode("utf-8", errors="replace").rstrip("\r\n").split(",")
    code = first[cols.index("contract")] if "contract" in cols and len(first) == len(cols) else default_contract
    if not code:
        return None
    contract, root, error = contract_map_of([code], None, specs).iloc[0][["contract", "root", "contract_error"]]
    return BulkPlan(cols, root) if error is None and contract == code else None


def _reader(cols: list[str]) -> str:
    spec = ", ".join(f"'c{i}': '{_TYPES.get(name, 'VARCHAR')}'" for i, name in enumerate(cols))
    return (f"read_csv($path, header = true, auto_detect = false, columns = {{{spec}}}, delim = ',', quote = '', "
            "escape = '', strict_mode = true, null_padding = false, comment = '')")


def insert_rows(conn: duckdb.DuckDBPyConnection, path: Path, plan: BulkPlan, interval: str, ingest_id: str,
                default_contract: str | None, specs: Mapping[str, ContractSpec]) -> None:
    """``INSERT INTO bars`` every row of the file, typed by the reader; raises
    :class:`NotClean` if a field does not parse or a row breaks a row rule."""
    col = {name: f"s.c{i}" for i, name in enumerate(plan.cols) if name in _TYPES}
    fields = {name: col.get(name) for name in _TYPES}  # ts, prices and volume are always there
    fields["contract"] = fields["contract"] or "CAST($default_contract AS VARCHAR)"
    fields["open_interest"] = fields["open_interest"] or "CAST(NULL AS DOUBLE)"
    sql = f"""
        INSERT INTO bars (contract, root, interval, ts, open, high, low, close, volume, open_interest, ingest_id)
        -- root and interval are constants: a root computed per row would cost ~0.5 CPU s per 5M rows to store
        SELECT contract, $root, $interval, ts, open, high, low, close,
               -- the guard on a numeric column: on the (constant) ingest id it would cost a string per row
               CAST(CASE WHEN {row_rules_ok_sql('r', min_price='$min_price', max_price='$max_price')}
                         THEN volume ELSE error('row rule') END AS BIGINT),
               CAST(open_interest AS BIGINT), $ingest_id
        FROM (SELECT {", ".join(f"{expr} AS {name}" for name, expr in fields.items())}
              FROM {_reader(plan.cols)} s) r"""
    try:
        lo, hi = specs[plan.root].price_bounds  # the market's plausibility bound, points
        params = {"root": plan.root, "interval": interval, "ingest_id": ingest_id, "path": str(path),
                  "min_price": lo, "max_price": hi}
        if "contract" not in col:
            params["default_contract"] = default_contract
        conn.execute(sql, params)
    except (duckdb.ConversionException, duckdb.InvalidInputException) as exc:  # a field or a row rule
        raise NotClean(str(exc).splitlines()[0]) from None


def check_rows(conn: duckdb.DuckDBPyConnection, ingest_id: str, interval: str, specs: Mapping[str, ContractSpec],
               root: str, spike_z: float = 10.0) -> BulkChecks:
    """The checks of step 2 (module docstring) on the rows of ``ingest_id``,
    all stored with market ``root``; raises :class:`NotClean` at the first
    that fails.

    One grouped SQL pass (each contract's rowid block, time range and
    off-grid count), then one fetch of (ts, close) in storage order for NumPy
    (rising timestamps, sessions, spikes): ~0.2 s for 5M rows."""
    blocks = conn.execute(
        f"""SELECT contract, min(rowid) AS first, max(rowid), count(*), min(ts), max(ts),
                   count(*) FILTER (WHERE {off_tick_sql('b', '$tick')})
            FROM bars b WHERE ingest_id = $id GROUP BY contract ORDER BY first""",
        {"id": ingest_id, "tick": float(specs[root].tick_size)}).fetchall()
    if not blocks:
        raise NotClean("no rows")
    cmap = contract_map_of([b[0] for b in blocks], None, specs)
    if cmap["contract_error"].notna().any() or (cmap["contract"] != cmap["contract_raw"]).any():
        raise NotClean("contract codes that are not fbt contract ids")
    if (cmap["root"] != root).any():
        raise NotClean("more than one market in the file")
    if any(last - first + 1 != n for _, first, last, n, *_ in blocks):
        raise NotClean("a contract's rows are not one block")
    table = conn.sql("SELECT epoch_us(ts) AS ts, close FROM bars WHERE ingest_id = $id",
                     params={"id": ingest_id}).to_arrow_table()
    ts = table.column("ts").to_numpy()
    if len(ts) != sum(b[3] for b in blocks):
        raise NotClean("rows changed under the checks")
    sizes = [b[3] for b in blocks]
    close = table.column("close").to_numpy()
    # the band rule starts from the last stored close before each contract's first bar (not this ingest's)
    stored = stored_closes_before(conn, interval, {b[0]: b[4] for b in blocks}, exclude_ingest=ingest_id)
    anchors = np.array([stored.get(b[0], np.nan) for b in blocks], dtype=float)
    band = np.full(len(blocks), specs[root].price_band)
    with ThreadPoolExecutor(max_workers=1) as pool:  # NumPy releases the GIL: spikes beside the time checks
        spiking = pool.submit(spike_count_in_blocks, close, sizes, spike_z)
        _check_rising(ts, sizes)
        outside = outside_session_count(ts, interval)
        jumps = band_outliers(close, sizes, anchors, band).any()
        spikes = spiking.result()
    if outside:
        raise NotClean(f"{outside} bar(s) outside the trading sessions")
    if jumps:
        raise NotClean("a close outside the band around the previous close (implausible_price)")
    return BulkChecks(rows=len(ts), contracts=tuple(sorted(cmap["contract"])),
                      roots=(root,),
                      warnings={"off_tick_grid": sum(int(b[6]) for b in blocks), "spikes": spikes},
                      first_ts=min(b[4] for b in blocks), last_ts=max(b[5] for b in blocks))


def _check_rising(ts: np.ndarray, sizes: list[int], chunk: int = 1 << 16) -> None:
    """Raise :class:`NotClean` unless ``ts`` rises strictly within each block
    of ``sizes`` rows (in cache-sized chunks: no 5M-row temporaries)."""
    start = 0
    for n in sizes:
        for lo in range(start, start + n - 1, chunk):
            hi = min(lo + chunk + 1, start + n)  # chunks overlap by one row
            if not (ts[lo + 1:hi] > ts[lo:hi - 1]).all():
                raise NotClean("timestamps not strictly rising within a contract")
        start += n


def spike_count_in_blocks(close: np.ndarray, sizes: list[int], spike_z: float = 10.0) -> int:
    """Spikes among closes (points, all > 0) in blocks of ``sizes`` rows, one
    contract each in time order: the rule of
    :func:`fbt_pipelines.marketdata.quality.large_move_count` (|log return| >
    spike_z x 1.4826 x the contract's median |log return|, for contracts with
    at least 9 returns and a median above 0)."""
    spikes, start = 0, 0
    for n in sizes:
        block = close[start:start + n]
        start += n
        if n < 10:
            continue
        d = np.log(block)
        d = np.diff(d)  # the returns inside this block
        np.abs(d, out=d)
        median = np.median(d)
        if median > 0:
            spikes += int(np.count_nonzero(d > (median * 1.4826) * spike_z))
    return spikes


def insert_if_clean(conn: duckdb.DuckDBPyConnection, insert: Callable[[], None],
                    finish: Callable[[], object]) -> object | None:
    """Run ``insert`` then ``finish`` in one transaction with FSST compression off; None if not clean.

    ``insert`` writes the rows into ``bars`` (raising :class:`NotClean` on a
    row rule); ``finish`` checks the stored rows and commits what the caller
    stores (its result is returned). A :class:`NotClean` anywhere rolls back
    and returns None, for the general path to handle. FSST's analysis of the
    short code columns costs ~0.3 s per 5M rows and never wins over
    dictionary compression on them (measured: same file size); a global
    setting, so it is set outside the transaction and restored after.
    """
    previous = conn.execute("SELECT current_setting('disabled_compression_methods')").fetchall()[0][0] or ""
    if not _COMPRESSION_LIST.fullmatch(previous):
        raise ValueError(f"unexpected disabled_compression_methods {previous!r}")
    conn.execute("SET disabled_compression_methods = 'fsst'")
    failed = True
    try:
        with transaction(conn):
            insert()
            stored = finish()
        failed = False
        return stored
    except NotClean:
        failed = False
        return None
    finally:
        try:
            conn.execute(f"SET disabled_compression_methods = '{previous}'")  # checked above
        except duckdb.Error:
            if not failed:  # else keep the error in flight (e.g. disk full invalidates the database)
                raise


def ingest_bulk_csv(conn: duckdb.DuckDBPyConnection, path: Path, plan: BulkPlan, interval: str, ingest_id: str,
                    default_contract: str | None, specs: Mapping[str, ContractSpec],
                    store: Callable[[BulkChecks], object]) -> object | None:
    """Insert, check and (``store``: the replace of older overlapping bars and
    the ``ingests`` row) commit one file in one transaction; None (nothing
    stored) if the file is not clean, for the general path to handle."""
    return insert_if_clean(
        conn, lambda: insert_rows(conn, path, plan, interval, ingest_id, default_contract, specs),
        lambda: store(check_rows(conn, ingest_id, interval, specs, plan.root)))
