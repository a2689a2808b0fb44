"""Small helpers shared by asset bodies: metadata formatting and events."""

from __future__ import annotations

from typing import Any

import pandas as pd
from dagster import AssetExecutionContext, MetadataValue

from fbt_pipelines.stores.bus import Bus

# Assets that write the warehouse run in this pool (dagster.yaml limits it), so
# DuckDB's single writer is never contended for long.
WRITER_POOL = "duckdb_writer"


def date_range(ts: pd.Series) -> str:
    if len(ts) == 0:
        return "empty"
    t = pd.to_datetime(ts, utc=True)
    return f"{t.min():%Y-%m-%d} .. {t.max():%Y-%m-%d}"


def md_table(frame: pd.DataFrame, floatfmt: str = ",.2f") -> MetadataValue:
    """A frame as a Markdown table for the Dagster UI."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v)

    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    sep = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return MetadataValue.md("\n".join([head, sep, *rows]))


def announce(context: AssetExecutionContext, bus: Bus, **payload: Any) -> None:
    """Publish a materialization event on the bus (skipped if Redis is down)."""
    key = context.asset_key.to_user_string()
    partition = context.partition_key if context.has_partition_key else None
    bus.publish("materialized", {"asset": key, "partition": partition, "run_id": context.run_id, **payload})
