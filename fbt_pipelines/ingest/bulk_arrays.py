"""Bulk ingest of bars already decoded to arrays (a DBN file), in one transaction.

The bulk path for bars already decoded to arrays (a DBN file): straight
into ``bars`` in one ``INSERT`` from an Arrow table, then the bulk CSV
path's checks on the stored rows, in the file's one transaction.

The bet and its safety are those of :mod:`fbt_pipelines.ingest.bulk_csv`:
the row rules sit inside the ``INSERT`` (a failing row aborts it), the
checks on the stored rows (:func:`fbt_pipelines.ingest.bulk_csv.check_rows`:
one market, each contract one block of strictly rising times, sessions,
band; then the off-grid and spike warnings) raise ``NotClean`` at the first
doubt; then the transaction rolls back, :func:`ingest_bulk_arrays` returns
None and the caller stages the arrays for the general path (line numbers,
reasons, quarantine). So this path stores a file only when the general path
would accept every row, and stores the same bars.

DBN files are in time order across instruments; the rows are put in
contract blocks first (a stable sort by contract keeps each contract's time
order), which the block check needs. Units: prices in points, volume in
contracts, ``ts`` UTC instants; open interest NULL (not in OHLCV records).
"""

from __future__ import annotations

from typing import Callable, Mapping

import duckdb
import numpy as np

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.marketdata.sql_rules import row_rules_ok_sql
from fbt_pipelines.ingest.bulk_csv import BulkChecks, NotClean, check_rows, insert_if_clean
from fbt_pipelines.ingest.staging import contract_map_of

# Fewer rows than this take the general path (the staging copy is cheap there).
BULK_MIN_ROWS = 50_000


def _one_root(contracts: list[str], specs: Mapping[str, ContractSpec]) -> str | None:
    """The market of ``contracts`` if they are all fbt ids of one market."""
    cmap = contract_map_of(list(contracts), None, specs)
    if not len(cmap) or cmap["contract_error"].notna().any() or (cmap["contract"] != cmap["contract_raw"]).any():
        return None
    roots = set(cmap["root"])
    return roots.pop() if len(roots) == 1 else None


def _in_contract_blocks(codes: np.ndarray) -> np.ndarray | None:
    """The stable permutation putting rows in contract blocks; None if they are."""
    if len(codes) < 2 or (codes[1:] >= codes[:-1]).all():
        return None
    small = codes.astype(np.int16) if len(codes) and codes.max() < (1 << 15) else codes
    return np.argsort(small, kind="stable")  # radix sort for 16-bit keys


def ingest_bulk_arrays(conn: duckdb.DuckDBPyConnection, contracts: list[str], codes: np.ndarray,
                       ts_us: np.ndarray, prices: Mapping[str, np.ndarray], volume: np.ndarray, interval: str,
                       ingest_id: str, specs: Mapping[str, ContractSpec],
                       store: Callable[[BulkChecks], object]) -> object | None:
    """Store one file's bars in one transaction; None (nothing stored) if not clean.

    Insert, check and (``store``: replace of older overlapping bars, the
    ``ingests`` row) commit the bars in one transaction; None (nothing
    stored) if they are not clean or not of one market.

    ``codes`` index ``contracts`` (fbt contract ids); ``ts_us`` UTC epoch
    microseconds; ``prices`` open/high/low/close in points; ``volume`` in
    contracts."""
    import pyarrow as pa

    root = _one_root(contracts, specs)
    if root is None:
        return None
    order = _in_contract_blocks(codes)
    take = (lambda a: a) if order is None else (lambda a: a[order])
    table = pa.table({
        "contract": pa.DictionaryArray.from_arrays(pa.array(take(codes), type=pa.int32()),
                                                   pa.array(contracts, type=pa.string())),
        "ts": pa.array(take(ts_us), type=pa.timestamp("us", tz="UTC")),
        **{c: pa.array(take(prices[c]), type=pa.float64()) for c in ("open", "high", "low", "close")},
        "volume": pa.array(take(volume), type=pa.int64()),
    })
    lo, hi = specs[root].price_bounds  # the market's plausibility bound, points
    sql = f"""
        INSERT INTO bars (contract, root, interval, ts, open, high, low, close, volume, open_interest, ingest_id)
        SELECT CAST(r.contract AS VARCHAR), $root, $interval, r.ts, r.open, r.high, r.low, r.close,
               CASE WHEN {row_rules_ok_sql('r', open_interest='NULL', min_price='$min_price',
                                           max_price='$max_price')}
                    THEN r.volume ELSE error('row rule') END,
               NULL, $ingest_id
        FROM incoming_bulk r"""
    def insert() -> None:
        try:
            conn.execute(sql, {"root": root, "interval": interval, "ingest_id": ingest_id,
                               "min_price": lo, "max_price": hi})
        except (duckdb.ConversionException, duckdb.InvalidInputException) as exc:  # a row rule
            raise NotClean(str(exc).splitlines()[0]) from None

    conn.register("incoming_bulk", table)
    try:  # as on the bulk CSV path (FSST off, one transaction, None when not clean)
        return insert_if_clean(conn, insert, lambda: store(check_rows(conn, ingest_id, interval, specs, root)))
    finally:
        conn.unregister("incoming_bulk")
