"""Stage 1: per-contract bars ingested from the landing folder into DuckDB."""

from dagster import (AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext,
                     Failure, MaterializeResult, asset)

from assets._support import WRITER_POOL, announce, date_range
from assets.catalog import market_catalog
from assets.partitions import market_partitions
from fbt_pipelines.marketdata.quality import spike_count
from fbt_pipelines.stores import warehouse as wh
from fbt_pipelines.stores.ingest import bar_sources, ingest_path
from resources import BusResource, FilesResource, WarehouseResource


@asset(
    partitions_def=market_partitions, group_name="ingest", kinds={"duckdb"}, deps=[market_catalog], pool=WRITER_POOL,
    check_specs=[
        AssetCheckSpec("ohlc_valid", asset="raw_bars", blocking=True,
                       description="Every stored bar has low <= open, close <= high."),
        AssetCheckSpec("no_duplicate_bars", asset="raw_bars", blocking=True,
                       description="One bar per (contract, interval, ts)."),
        AssetCheckSpec("no_quarantined_rows", asset="raw_bars",
                       description="No row of this market's files was rejected (warns; see table quarantine)."),
        AssetCheckSpec("no_price_spikes", asset="raw_bars",
                       description="No close-to-close move above 10 robust standard deviations."),
    ],
)
def raw_bars(context: AssetExecutionContext, warehouse: WarehouseResource, bus: BusResource,
             files: FilesResource) -> MaterializeResult:
    """Per-contract daily bars of one market, ingested file by file (one transaction each) into `bars`; bad rows go to `quarantine`."""
    root = context.partition_key
    folder = files.landing(root)
    paths = bar_sources(folder) if folder.is_dir() else []
    if not paths:
        raise Failure(f"no bar files for {root} in {folder} (csv, parquet or LEAN zip; run `fbt sample-data`)")
    ingested = skipped = 0
    with warehouse.connect() as conn:
        for i, path in enumerate(paths, start=1):
            for result in ingest_path(conn, path):
                ingested += result.status == "ok"
                skipped += result.status == "skipped"
            if i % 25 == 0 or i == len(paths):
                context.log.info(f"{root}: {i}/{len(paths)} files ({ingested} new, {skipped} unchanged)")
        quality = wh.bar_quality(conn, root)
        stored_quarantine = wh.quarantine_count(conn, root)
        bars = wh.read_bars(conn, root)
    spikes = spike_count(bars)
    announce(context, bus.get(), rows=quality["rows"], files=len(paths))
    return MaterializeResult(
        metadata={
            "rows": quality["rows"], "contracts": int(bars["contract"].nunique()), "files": len(paths),
            "files_new": ingested, "files_unchanged": skipped, "quarantined_rows": stored_quarantine,
            "date_range": date_range(bars["ts"]),
        },
        check_results=[
            AssetCheckResult(check_name="ohlc_valid", passed=quality["bad_ohlc"] == 0,
                             metadata={"bad_rows": quality["bad_ohlc"]}),
            AssetCheckResult(check_name="no_duplicate_bars", passed=quality["duplicates"] == 0,
                             metadata={"duplicates": quality["duplicates"]}),
            AssetCheckResult(check_name="no_quarantined_rows", passed=stored_quarantine == 0,
                             severity=AssetCheckSeverity.WARN, metadata={"quarantined_rows": stored_quarantine}),
            AssetCheckResult(check_name="no_price_spikes", passed=spikes == 0, severity=AssetCheckSeverity.WARN,
                             metadata={"spikes": spikes}),
        ],
    )
