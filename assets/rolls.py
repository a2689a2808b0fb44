"""Stage 2: roll schedule and continuous (back-adjusted) prices per market."""

from dagster import (AssetCheckResult, AssetCheckSpec, AssetExecutionContext, Config, DataVersion,
                     MaterializeResult, MetadataValue, asset)
from pydantic import Field

from assets._support import WRITER_POOL, announce, date_range, md_table
from assets.partitions import market_partitions
from assets.raw_bars import raw_bars
from fbt_pipelines.futures.roll_schedule import roll_cost_per_contract
from fbt_pipelines.reports.roll_table import roll_table
from fbt_pipelines.reports.sparkline import markdown_image, svg_lines
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.services.cached_reads import read_bars_cached
from fbt_pipelines.usecases.continuous import (MAX_ROLL_GAP, continuous_for_market, market_contracts,
                                               roll_rule_for, roll_schedule_for_market)
from resources import BusResource, FilesResource, WarehouseResource


class RollConfig(Config):
    rule: str = Field(default="", description="Roll rule, e.g. 'volume', 'calendar:5', 'first_of_month', "
                      "'volume,hold=Z,depth=2'. Empty: the market's catalogue default.")


@asset(
    partitions_def=market_partitions, group_name="futures", kinds={"duckdb"}, deps=[raw_bars], pool=WRITER_POOL,
    check_specs=[AssetCheckSpec("roll_gaps_plausible", asset="roll_schedule", blocking=True,
                                description=f"Every roll's |to/from - 1| < {MAX_ROLL_GAP:.0%}.")],
)
def roll_schedule(context: AssetExecutionContext, config: RollConfig, warehouse: WarehouseResource,
                  bus: BusResource, files: FilesResource) -> MaterializeResult:
    """Roll dates by the market's roll rule (volume crossover or N business days before last trade / first notice), with why each roll happened, its price gap and its cost."""
    root = context.partition_key
    spec = files.workspace().market(root)
    rule = roll_rule_for(spec, config.rule)
    with warehouse.connect() as conn:
        bars, _ = read_bars_cached(conn, bus.get(), root)
        rolls = roll_schedule_for_market(spec, bars, market_contracts(conn, spec, bars), rule)
        version = wh.replace_partition(conn, "roll_schedule", root, rolls.schedule)
    schedule = rolls.schedule
    announce(context, bus.get(), rolls=len(schedule), data_version=version)
    return MaterializeResult(
        metadata={
            "rolls": len(schedule), "rule": rule.label,
            "date_range": date_range(schedule["roll_date"]),
            "mean_gap_points": float(schedule["gap"].mean()) if len(schedule) else 0.0,
            "roll_cost_usd_per_contract": roll_cost_per_contract(spec),
            # every roll: date, contracts, rule, trigger and the numbers behind it, gap, cost
            "roll_table": md_table(roll_table(schedule)),
        },
        data_version=DataVersion(version),
        check_results=[AssetCheckResult(check_name="roll_gaps_plausible", passed=rolls.plausible,
                                        metadata={"worst_abs_ratio_minus_1": rolls.worst_gap})],
    )


@asset(
    partitions_def=market_partitions, group_name="futures", kinds={"duckdb"}, deps=[roll_schedule], pool=WRITER_POOL,
    check_specs=[
        AssetCheckSpec("no_gaps_at_rolls", asset="continuous_prices", blocking=True,
                       description="Every bar's point change equals the held contract's own change, across rolls too."),
        AssetCheckSpec("last_segment_is_raw", asset="continuous_prices", blocking=True,
                       description="Adjusted prices equal the current contract's raw prices on the last segment."),
    ],
)
def continuous_prices(context: AssetExecutionContext, warehouse: WarehouseResource, bus: BusResource,
                      files: FilesResource) -> MaterializeResult:
    """Panama back-adjusted continuous contract: adjusted OHLC in points, the held contract, its raw close and days to expiry."""
    root = context.partition_key
    spec = files.workspace().market(root)
    with warehouse.connect() as conn:
        bars, cached = read_bars_cached(conn, bus.get(), root)
        schedule = wh.read_partition(conn, "roll_schedule", root, order_by=["roll_date"])
        series = continuous_for_market(bars, schedule, market_contracts(conn, spec, bars))
        version = wh.replace_partition(conn, "continuous_prices", root, series.prices)
    prices, gaps, last_diff, non_positive = series.prices, series.bad_bars, series.last_segment_diff, series.non_positive
    announce(context, bus.get(), rows=len(prices), data_version=version)
    return MaterializeResult(
        metadata={
            "rows": len(prices), "date_range": date_range(prices["ts"]), "method": "panama",
            "rolls": int(prices["roll"].sum()), "current_contract": str(prices["contract"].iloc[-1]),
            "last_close": float(prices["close"].iloc[-1]),
            "non_positive_prices": non_positive,
            "total_adjustment_points": float(prices["close"].iloc[0] - prices["raw_close"].iloc[0]),
            "data_version": MetadataValue.text(version), "bars_from_cache": cached,
            "raw_vs_adjusted": MetadataValue.md(markdown_image(
                svg_lines({"raw close": prices["raw_close"], "adjusted close": prices["close"]}),
                f"{root} raw vs back-adjusted close")),
        },
        data_version=DataVersion(version),
        check_results=[
            AssetCheckResult(check_name="no_gaps_at_rolls", passed=gaps == 0, metadata={"bad_bars": gaps}),
            AssetCheckResult(check_name="last_segment_is_raw", passed=last_diff == 0.0,
                             metadata={"max_abs_diff_points": last_diff}),
        ],
    )
