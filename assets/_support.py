"""Small helpers shared by asset bodies: metadata formatting and events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd
from dagster import AssetCheckResult, AssetCheckSpec, AssetExecutionContext, MetadataValue

from fbt_pipelines.reports.numbers import format_number, kind_of, metadata_number
from fbt_pipelines.services.bus import Bus

if TYPE_CHECKING:
    from fbt_pipelines.usecases.portfolio import LimitCheck

# Assets that write the warehouse run in this pool (dagster.yaml limits it), so
# DuckDB's single writer is never contended for long.
WRITER_POOL = "duckdb_writer"


def date_range(ts: pd.Series) -> str:
    if len(ts) == 0:
        return "empty"
    t = pd.to_datetime(ts, utc=True)
    return f"{t.min():%Y-%m-%d} .. {t.max():%Y-%m-%d}"


def md_table(frame: pd.DataFrame, floatfmt: str = ",.2f",
             kinds: Mapping[str, str] | str | None = None) -> MetadataValue:
    """A frame as a Markdown table for the Dagster UI, numbers formatted by kind.

    ``kinds``: column -> kind (``percent``, ``percent2``, ``money``,
    ``money2``, ``count``, ``ratio`` or a format spec; see
    :mod:`fbt_pipelines.reports.numbers`), or ``"auto"`` to guess each
    column's kind from its name (:func:`~fbt_pipelines.reports.numbers.kind_of`).
    Other float columns use ``floatfmt``. NaN prints ``n/a``, never ``-0``.
    """
    if isinstance(kinds, str):
        if kinds != "auto":
            raise ValueError(f"md_table kinds: a column -> kind mapping or 'auto', got {kinds!r}")
        kinds = {c: k for c in map(str, frame.columns) if (k := kind_of(c)) is not None}
    kinds = dict(kinds or {})
    unknown = sorted(set(kinds) - set(map(str, frame.columns)))
    if unknown:
        raise ValueError(f"md_table kinds name columns the frame lacks: {unknown} (columns: {list(frame.columns)})")
    columns = [str(c) for c in frame.columns]

    def fmt(column: str, v: Any) -> str:
        kind = kinds.get(column)
        if kind is not None:
            return format_number(v, kind)
        if isinstance(v, (float, np.floating)):
            return format_number(v, floatfmt)
        return str(v)

    head = "| " + " | ".join(columns) + " |"
    sep = "|" + "---|" * len(columns)
    rows = ["| " + " | ".join(fmt(c, v) for c, v in zip(columns, row)) + " |"
            for row in frame.itertuples(index=False)]
    return MetadataValue.md("\n".join([head, sep, *rows]))


def number(value: Any, kind: str | None = None, name: str = "") -> MetadataValue:
    """A number as Dagster metadata rounded by kind (``kind`` or guessed from ``name``).

    Counts become ints; fractions keep 4 decimals, ratios 3, money (USD) 2
    (:func:`fbt_pipelines.reports.numbers.metadata_number`); floats stay
    floats so Dagster can plot them across materializations.
    """
    v = metadata_number(value, kind or kind_of(name))
    return MetadataValue.int(v) if isinstance(v, int) else MetadataValue.float(v)


def numbers(values: Mapping[str, Any]) -> dict[str, MetadataValue]:
    """Name -> :func:`number` with each kind guessed from its name; non-numbers kept as they are."""
    return {k: number(v, name=k) if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else v
            for k, v in values.items()}


def announce(context: AssetExecutionContext, bus: Bus, **payload: Any) -> None:
    """Publish a materialization event on the bus (skipped if Redis is down)."""
    key = context.asset_key.to_user_string()
    partition = context.partition_key if context.has_partition_key else None
    bus.publish("materialized", {"asset": key, "partition": partition, "run_id": context.run_id, **payload})


def limit_check_specs(asset: str, at_any: str, at_every: str) -> list[AssetCheckSpec]:
    """A portfolio asset's blocking ``market_exposure_limit`` and ``leverage_limit`` checks.

    The names of the use case's :class:`~fbt_pipelines.usecases.portfolio.LimitCheck`
    results (:func:`limit_check_result`); ``at_any`` / ``at_every`` say where
    the limits hold (``"on any session"`` / ``"on every session"``).
    """
    return [
        AssetCheckSpec("market_exposure_limit", asset=asset, blocking=True,
                       description=f"No market's |notional| / equity above max_market_exposure {at_any}."),
        AssetCheckSpec("leverage_limit", asset=asset, blocking=True,
                       description=f"Gross notional / equity at most max_leverage {at_every}."),
    ]


def limit_check_result(check: LimitCheck) -> AssetCheckResult:
    """The Dagster result of a use case's limit check: its name, verdict and metadata."""
    return AssetCheckResult(check_name=check.name, passed=check.passed, metadata=check.metadata())
