"""Warehouse reads through the Redis cache, keyed by the data's version.

The warehouse stays the source of truth: the cache key is the content version
recorded in ``data_versions`` in the same transaction that wrote the rows (a
hash of the frame for result tables; a chain of ingest ids for ``bars``), so
a cached frame can never be stale -- a new ingest or rewrite changes the key.
With Redis down the read simply goes to DuckDB.
"""

from __future__ import annotations

from typing import Callable, Iterable

import duckdb
import pandas as pd

from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.services.bus import Bus


def _cached(conn: duckdb.DuckDBPyConnection, bus: Bus, table: str, key: str,
            load: Callable[[], pd.DataFrame]) -> tuple[pd.DataFrame, bool]:
    version = wh.partition_version(conn, table, key)
    namespace = f"{table}:{key}"
    if version is not None:
        hit = bus.cache_get(namespace, version)
        if hit is not None:
            return hit, True
    frame = load()
    if version is not None and len(frame):
        bus.cache_put(namespace, version, frame)
    return frame, False


def read_partition_cached(conn: duckdb.DuckDBPyConnection, bus: Bus, table: str, key: str,
                          order_by: Iterable[str] = ()) -> tuple[pd.DataFrame, bool]:
    """(frame, served_from_cache) for one partition of a result table."""
    order = list(order_by)
    return _cached(conn, bus, table, key, lambda: wh.read_partition(conn, table, key, order))


def read_bars_cached(conn: duckdb.DuckDBPyConnection, bus: Bus, root: str) -> tuple[pd.DataFrame, bool]:
    """(daily bars of ``root``, served_from_cache)."""
    return _cached(conn, bus, "bars", root, lambda: wh.read_bars(conn, root))
