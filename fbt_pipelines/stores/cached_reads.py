"""Warehouse reads through the Redis cache, keyed by the partition's data version.

The warehouse stays the source of truth: the cache key is the content hash
recorded when the partition was written, so a cached frame can never be stale.
With Redis down the read simply goes to DuckDB.
"""

from __future__ import annotations

from typing import Iterable

import duckdb
import pandas as pd

from fbt_pipelines.stores import warehouse as wh
from fbt_pipelines.stores.bus import Bus


def read_partition_cached(conn: duckdb.DuckDBPyConnection, bus: Bus, table: str, key: str,
                          order_by: Iterable[str] = ()) -> tuple[pd.DataFrame, bool]:
    """(frame, served_from_cache)."""
    version = wh.partition_version(conn, table, key)
    namespace = f"{table}:{key}"
    if version is not None:
        hit = bus.cache_get(namespace, version)
        if hit is not None:
            return hit, True
    frame = wh.read_partition(conn, table, key, order_by)
    if version is not None and len(frame):
        bus.cache_put(namespace, version, frame)
    return frame, False
