"""Stage 1: per-contract bars ingested from the landing folder into DuckDB."""

from dagster import (AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext,
                     Failure, MaterializeResult, asset)

from assets._support import WRITER_POOL, announce, date_range
from assets.catalog import market_catalog
from assets.partitions import market_partitions
from fbt_pipelines.ingest.files import bar_sources
from fbt_pipelines.usecases.market_data import bar_quality, ingest_bar_files
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
    def progress(i, _path, outcome) -> None:
        if i % 25 == 0 or i == len(paths):
            context.log.info(f"{root}: {i}/{len(paths)} files ({outcome.new} new, {outcome.unchanged} unchanged)")

    with warehouse.connect() as conn:
        outcome = ingest_bar_files(conn, paths, files.workspace(), keep_going=False, on_file=progress)
        quality = bar_quality(conn, root)
    bars = quality.bars
    announce(context, bus.get(), rows=quality.rows, files=len(paths))
    return MaterializeResult(
        metadata={
            "rows": quality.rows, "contracts": int(bars["contract"].nunique()), "files": len(paths),
            "files_new": outcome.new, "files_unchanged": outcome.unchanged, "quarantined_rows": quality.quarantined,
            "date_range": date_range(bars["ts"]),
        },
        check_results=[
            AssetCheckResult(check_name="ohlc_valid", passed=quality.bad_ohlc == 0,
                             metadata={"bad_rows": quality.bad_ohlc}),
            AssetCheckResult(check_name="no_duplicate_bars", passed=quality.duplicates == 0,
                             metadata={"duplicates": quality.duplicates}),
            AssetCheckResult(check_name="no_quarantined_rows", passed=quality.quarantined == 0,
                             severity=AssetCheckSeverity.WARN, metadata={"quarantined_rows": quality.quarantined}),
            AssetCheckResult(check_name="no_price_spikes", passed=quality.spikes == 0, severity=AssetCheckSeverity.WARN,
                             metadata={"spikes": quality.spikes}),
        ],
    )
