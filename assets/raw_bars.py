"""Stage 1: per-contract bars ingested from the landing folder into DuckDB."""

from pathlib import Path

from dagster import (AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext,
                     Failure, MaterializeResult, asset)

from assets._support import WRITER_POOL, announce, date_range
from assets.catalog import market_catalog
from assets.partitions import market_partitions
from fbt_pipelines.ingest.files import bar_sources
from fbt_pipelines.usecases.market_data import BarQuality, IngestOutcome, bar_quality, ingest_bar_files
from resources import BusResource, FilesResource, WarehouseResource


def bar_check_specs(asset: str) -> list[AssetCheckSpec]:
    """The data-quality checks of a stored-bars asset (daily ``raw_bars`` or ``intraday_raw_bars``)."""
    return [
        AssetCheckSpec("ohlc_valid", asset=asset, blocking=True,
                       description="Every stored bar has low <= open, close <= high."),
        AssetCheckSpec("no_duplicate_bars", asset=asset, blocking=True,
                       description="One bar per (contract, interval, ts)."),
        AssetCheckSpec("no_quarantined_rows", asset=asset,
                       description="No row of this market's files was rejected (warns; see table quarantine)."),
        AssetCheckSpec("no_price_spikes", asset=asset,
                       description="No close-to-close move above 10 robust standard deviations."),
    ]


def ingest_landing(context: AssetExecutionContext, conn, paths: list[Path], files: FilesResource,
                   interval: str = "1d") -> IngestOutcome:
    """Ingest ``paths`` (one transaction each, the first bad file fails the step) with progress in the log."""
    root = context.partition_key

    def progress(i, _path, outcome) -> None:
        if i % 25 == 0 or i == len(paths):
            context.log.info(f"{root} {interval}: {i}/{len(paths)} files ({outcome.new} new, "
                             f"{outcome.unchanged} unchanged)")

    return ingest_bar_files(conn, paths, files.workspace(), interval=interval, keep_going=False, on_file=progress)


def bar_result(quality: BarQuality, outcome: IngestOutcome, files: int, **extra) -> MaterializeResult:
    """Metadata and check results of a stored-bars asset from its quality counts."""
    bars = quality.bars
    return MaterializeResult(
        metadata={
            **extra, "rows": quality.rows, "contracts": int(bars["contract"].nunique()), "files": files,
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


@asset(
    partitions_def=market_partitions, group_name="ingest", kinds={"duckdb"}, deps=[market_catalog], pool=WRITER_POOL,
    check_specs=bar_check_specs("raw_bars"),
)
def raw_bars(context: AssetExecutionContext, warehouse: WarehouseResource, bus: BusResource,
             files: FilesResource) -> MaterializeResult:
    """Per-contract daily bars of one market, ingested file by file (one transaction each) into `bars`; bad rows go to `quarantine`."""
    root = context.partition_key
    folder = files.landing(root)
    paths = bar_sources(folder) if folder.is_dir() else []
    if not paths:
        raise Failure(f"no bar files for {root} in {folder} (csv, parquet or LEAN zip; run `fbt sample-data`)")
    with warehouse.connect() as conn:
        outcome = ingest_landing(context, conn, paths, files)
        quality = bar_quality(conn, root)
    announce(context, bus.get(), rows=quality.rows, files=len(paths))
    return bar_result(quality, outcome, len(paths))
