"""``warehouse``: the DuckDB file, via dagster-duckdb's resource.

``DuckDBResource.get_connection()`` retries a locked file with backoff (see
PITFALLS.md); writers are also serialised by the ``duckdb_writer`` pool.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb
from dagster_duckdb import DuckDBResource

from fbt_pipelines.services.warehouse import ensure_schema


class WarehouseResource(DuckDBResource):
    """DuckDB warehouse at ``database`` (created with its schema on first use)."""

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        with self.get_connection() as conn:
            ensure_schema(conn)
            yield conn
