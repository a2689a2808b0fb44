"""Intraday group: the daily features on a 1-minute / 1-hour continuous series.

Partitioned by market; the run config's ``interval`` and optional window of
trading days choose the series (``ES|1m``), stored in ``intraday_features``
under its key. Domain rules: :mod:`fbt_pipelines.usecases.intraday_features`,
docs/guide.md "Intraday bars".
"""

from dagster import (AssetCheckResult, AssetCheckSpec, AssetExecutionContext, DataVersion, Failure,
                     MaterializeResult, MetadataValue, asset)
from pydantic import Field

from assets._support import WRITER_POOL, announce, date_range
from assets.intraday import GROUP, IntradayConfig, intraday_continuous_prices
from assets.partitions import market_partitions
from fbt_pipelines.ml.dataset import LabelConfig
from fbt_pipelines.ml.features import FEATURE_COLUMNS
from fbt_pipelines.usecases import intraday as uc
from fbt_pipelines.usecases import intraday_features as uf
from fbt_pipelines.usecases.continuous import market_contracts
from resources import BusResource, FilesResource, WarehouseResource


class IntradayFeaturesConfig(IntradayConfig):
    """The series and the label of its features table (horizon in bars)."""

    horizon: int = Field(default=LabelConfig.horizon, description="Label horizon: sign of the held-contract return "
                         "over the next N bars of the interval.")
    dead_zone: float = Field(default=LabelConfig.dead_zone, description="Forward returns with |return| below this "
                             "fraction get no label.")


@asset(
    partitions_def=market_partitions, group_name=GROUP, kinds={"duckdb", "pandas"}, deps=[intraday_continuous_prices],
    pool=WRITER_POOL,
    check_specs=[AssetCheckSpec("features_finite_after_warmup", asset="intraday_features",
                                description=f"After the {uf.WARMUP_BARS}-bar warm-up, at least 99% of feature rows "
                                            "are finite (roll_yield left out: minute data often has no second "
                                            "contract outside the roll weeks).")],
)
def intraday_features(context: AssetExecutionContext, config: IntradayFeaturesConfig, warehouse: WarehouseResource,
                      bus: BusResource, files: FilesResource) -> MaterializeResult:
    """The daily features on the intraday series, windows in bars (held-contract returns, vol annualised by bars per year, EWMAC, RSI, ATR, distance from the 60-bar high/low, days to expiry and roll, roll yield, weekday and month of the trading day) and the forward-return label."""
    root = context.partition_key
    key, interval, start, end = config.series(root)
    spec = files.workspace().market(root)
    try:
        label = LabelConfig(horizon=config.horizon, dead_zone=config.dead_zone)
    except ValueError as exc:
        raise Failure(str(exc)) from None
    with warehouse.connect() as conn:
        prices = uc.read_intraday_prices(conn, key)
        bars = uc.read_intraday_bars(conn, root, interval, start, end)
        contracts = market_contracts(conn, spec, bars)
    sb = uc.sessioned_bars(bars, spec, start, end)
    made = uf.intraday_features(key, interval, prices, spec, contracts, sb, label)
    with warehouse.connect() as conn:
        version = uf.store_intraday_features(conn, made)
    table = made.table
    announce(context, bus.get(), series=key, rows=len(table), data_version=version)
    return MaterializeResult(
        metadata={"series": key, "interval": interval, "rows": len(table), "date_range": date_range(table["ts"]),
                  "features": len(FEATURE_COLUMNS), "bars_per_year": made.bars_per_year,
                  "horizon_bars": label.horizon, "labelled_rows": made.labelled_rows,
                  "up_label_share": made.up_label_share, "roll_yield_share": made.roll_yield_share,
                  "data_version": MetadataValue.text(version)},
        data_version=DataVersion(version),
        check_results=[AssetCheckResult(check_name="features_finite_after_warmup",
                                        passed=bool(made.finite_after_warmup >= 0.99),
                                        metadata={"finite_share": made.finite_after_warmup,
                                                  "columns": ",".join(uf.CHECKED_COLUMNS)})],
    )
