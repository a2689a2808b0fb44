"""Intraday group: 1-minute / 1-hour roll schedule, continuous series, backtests, tear sheet.

Partitioned by market like the daily assets; the run config's ``interval``
(1m default, 1h) and optional window of trading days choose the series, stored
under its key (``ES|1m``) in the ``intraday_*`` tables. Domain rules:
:mod:`fbt_pipelines.usecases.intraday`, docs/guide.md "Intraday bars".
"""


import time
from typing import Optional

from dagster import (AssetCheckResult, AssetCheckSpec, AssetExecutionContext, Config, DataVersion, Failure,
                     MaterializeResult, MetadataValue, asset)
from pydantic import Field

from assets._support import WRITER_POOL, announce, date_range, md_table
from assets.backtests import StrategyConfig
from assets.partitions import market_partitions
from assets.catalog import market_catalog
from assets.raw_bars import bar_check_specs, bar_result, ingest_landing
from fbt_pipelines.ingest.files import bar_sources
from fbt_pipelines.usecases.market_data import IngestOutcome, bar_quality
from fbt_pipelines.config import code_version
from fbt_pipelines.engine.strategies import strategies_help
from fbt_pipelines.errors import FbtError, StrategyError
from fbt_pipelines.marketdata.sessions import bars_per_session
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.usecases.continuous import market_contracts, roll_rule_for
from fbt_pipelines.usecases import intraday as uc
from fbt_pipelines.usecases.margin_check import margin_check, strategy_margin_report
from fbt_pipelines.usecases.spec import BacktestSpec, OrderSettings
from resources import BusResource, FilesResource, TrackingResource, WarehouseResource

GROUP = "intraday"


class IntradayConfig(Config):
    """Which intraday series: the bar interval and an optional window of trading days."""

    interval: str = Field(default=uc.DEFAULT_INTERVAL, description="Bar interval of the series: 1m or 1h (bars "
                          "ingested with `fbt ingest --interval`).")
    start: str = Field(default="", description="First trading day YYYY-MM-DD (empty: the first bar).")
    end: str = Field(default="", description="Last trading day YYYY-MM-DD (empty: the last bar).")

    def series(self, root: str) -> tuple[str, str, object, object]:
        """(key, interval, start, end) of this market's series; Failure on a bad value."""
        try:
            interval = uc.check_interval(self.interval)
            start, end = uc.parse_day(self.start, "start"), uc.parse_day(self.end, "end")
        except FbtError as exc:
            raise Failure(str(exc)) from None
        return uc.series_key(root, interval, start, end), interval, start, end


DEFAULT_INTRADAY_STRATEGIES: list[dict] = [
    {"name": "buy_and_hold", "params": {}},
    {"name": "donchian_breakout", "params": {"window": 390}},
    {"name": "sma_crossover", "params": {"fast": 60, "slow": 390}},
]


class IntradayBacktestsConfig(IntradayConfig):
    """Strategies and costs of the intraday backtests (fixed size in contracts)."""

    strategies: list[StrategyConfig] = Field(
        default=DEFAULT_INTRADAY_STRATEGIES,
        description="Strategies, each {name, params}; windows are in bars of the interval. " + strategies_help())
    initial_capital: float = Field(default=1_000_000.0, description="USD per backtest.")
    slippage_ticks: float = Field(default=1.0, description="Ticks lost per contract per side, rolls included.")
    fill: str = Field(default="next_open", description="next_open or next_close.")
    contracts: int = Field(default=1, description="Contracts held in the signal's direction (volatility "
                                                 "targeting sizes on daily volatility: not offered intraday).")
    stop_loss: Optional[str] = Field(default=None, description="'40' (points), '2%' or '3atr'; none if empty.")
    take_profit: Optional[str] = Field(default=None, description="Exit at this distance in profit (same units).")
    trailing_stop: Optional[str] = Field(default=None, description="Distance from the best close (same units).")

    def specs(self, library) -> list[BacktestSpec]:
        """One validated spec per strategy (name order); StrategyError on a bad one."""
        if self.contracts < 1:
            raise StrategyError(f"contracts {self.contracts}: intraday backtests hold a fixed size >= 1")
        orders = OrderSettings(fill=self.fill, stop_loss=self.stop_loss, take_profit=self.take_profit,  # type: ignore[arg-type]
                               trailing_stop=self.trailing_stop, contracts=self.contracts)
        entries = [s if isinstance(s, StrategyConfig) else StrategyConfig(**s) for s in self.strategies]
        names = [s.name for s in entries]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise StrategyError(f"strategies: {', '.join(twice)} listed more than once; list each strategy once")
        return [BacktestSpec.create(s.name, dict(s.params), library=library, capital=self.initial_capital,
                                    slippage_ticks=self.slippage_ticks, orders=orders)
                for s in sorted(entries, key=lambda s: s.name)]


class IntradayBarsConfig(Config):
    """Which bar interval to ingest and check."""

    interval: str = Field(default=uc.DEFAULT_INTERVAL, description="Bar interval: 1m or 1h. Files are read from "
                          "the landing folder's <ROOT>/<interval>/ subfolder.")


@asset(
    partitions_def=market_partitions, group_name=GROUP, kinds={"duckdb"}, deps=[market_catalog], pool=WRITER_POOL,
    check_specs=bar_check_specs("intraday_raw_bars"),
)
def intraday_raw_bars(context: AssetExecutionContext, config: IntradayBarsConfig, warehouse: WarehouseResource,
                      bus: BusResource, files: FilesResource) -> MaterializeResult:
    """Per-contract 1m/1h bars from landing/<ROOT>/<interval>/ (csv, parquet, LEAN, DBN) into `bars`, checked."""
    root = context.partition_key
    try:
        interval = uc.check_interval(config.interval)
    except FbtError as exc:
        raise Failure(str(exc)) from None
    folder = files.landing(root) / interval
    paths = bar_sources(folder) if folder.is_dir() else []
    with warehouse.connect() as conn:
        outcome = ingest_landing(context, conn, paths, files, interval) if paths else IngestOutcome()
        quality = bar_quality(conn, root, interval)
    if quality.rows == 0:
        raise Failure(f"no {interval} bars for {root}: no bar files in {folder} (csv, parquet, LEAN minute zip, "
                      f"DBN) and none stored by `fbt ingest --interval {interval}`")
    announce(context, bus.get(), rows=quality.rows, files=len(paths), interval=interval)
    return bar_result(quality, outcome, len(paths), interval=interval, landing=str(folder))


@asset(
    partitions_def=market_partitions, group_name=GROUP, kinds={"duckdb"}, deps=[intraday_raw_bars], pool=WRITER_POOL,
    check_specs=[AssetCheckSpec("roll_gaps_plausible", asset="intraday_roll_schedule", blocking=True,
                                description="Every roll's |to/from - 1| < 10% at the session's last bar.")],
)
def intraday_roll_schedule(context: AssetExecutionContext, config: IntradayConfig, warehouse: WarehouseResource,
                           bus: BusResource, files: FilesResource) -> MaterializeResult:
    """Roll dates of the daily schedule (catalogue rule on session-built daily bars), each applied at the old contract's last bar of its session."""
    root = context.partition_key
    key, interval, start, end = config.series(root)
    spec = files.workspace().market(root)
    with warehouse.connect() as conn:
        bars = uc.read_intraday_bars(conn, root, interval, start, end)
        contracts = market_contracts(conn, spec, bars)
    sb = uc.sessioned_bars(bars, spec, start, end)
    rolls = uc.intraday_roll_schedule(sb, contracts, roll_rule_for(spec), key, interval)
    with warehouse.connect() as conn:
        version = wh.replace_partition(conn, "intraday_roll_schedule", key, rolls.schedule)
    schedule = rolls.schedule
    announce(context, bus.get(), series=key, rolls=len(schedule), data_version=version)
    last = schedule.tail(5)[["roll_date", "roll_ts", "from_contract", "to_contract", "gap"]].assign(
        roll_date=lambda d: d["roll_date"].dt.strftime("%Y-%m-%d"),
        roll_ts=lambda d: d["roll_ts"].dt.strftime("%Y-%m-%d %H:%M UTC"))
    return MaterializeResult(
        metadata={"series": key, "interval": interval, "rolls": len(schedule), "rule": rolls.rule.label,
                  "bars": len(sb), "sessions": len(rolls.daily["ts"].unique()),
                  "bars_per_session": bars_per_session(spec, interval), "start_contract": rolls.start_contract,
                  "left_out": MetadataValue.json(rolls.outside), "date_range": date_range(rolls.daily["ts"]),
                  "last_rolls": md_table(last, ",.2f")},
        data_version=DataVersion(version),
        check_results=[AssetCheckResult(check_name="roll_gaps_plausible", passed=rolls.plausible,
                                        metadata={"worst_abs_ratio_minus_1": rolls.worst_gap})],
    )


@asset(
    partitions_def=market_partitions, group_name=GROUP, kinds={"duckdb"}, deps=[intraday_roll_schedule],
    pool=WRITER_POOL,
    check_specs=[
        AssetCheckSpec("no_gaps_at_rolls", asset="intraday_continuous_prices", blocking=True,
                       description="Every bar's point change equals the held contract's own change, across rolls too."),
        AssetCheckSpec("last_segment_is_raw", asset="intraday_continuous_prices", blocking=True,
                       description="Adjusted prices equal the current contract's raw prices on the last segment."),
    ],
)
def intraday_continuous_prices(context: AssetExecutionContext, config: IntradayConfig, warehouse: WarehouseResource,
                               bus: BusResource, files: FilesResource) -> MaterializeResult:
    """Panama back-adjusted intraday series: the held contract's bars per session, earlier segments shifted by the later roll gaps (points)."""
    root = context.partition_key
    key, interval, start, end = config.series(root)
    spec = files.workspace().market(root)
    t0 = time.perf_counter()
    with warehouse.connect() as conn:
        bars = uc.read_intraday_bars(conn, root, interval, start, end)
        contracts = market_contracts(conn, spec, bars)
        schedule = wh.read_partition(conn, "intraday_roll_schedule", key, order_by=["roll_date"])
    t1 = time.perf_counter()
    sb = uc.sessioned_bars(bars, spec, start, end)
    held = uc.start_contract_for(sb, schedule, contracts, roll_rule_for(spec))
    series = uc.intraday_continuous(sb, schedule, held, contracts, key, interval)
    t2 = time.perf_counter()
    with warehouse.connect() as conn:
        version = wh.replace_partition(conn, "intraday_continuous_prices", key, series.prices)
    t3 = time.perf_counter()
    prices = series.prices
    announce(context, bus.get(), series=key, rows=len(prices), data_version=version)
    return MaterializeResult(
        metadata={"series": key, "interval": interval, "rows": len(prices), "date_range": date_range(prices["ts"]),
                  "method": "panama", "rolls": int(prices["roll"].sum()), "sessions": int(prices["session"].nunique()),
                  "current_contract": str(prices["contract"].iloc[-1]), "last_close": float(prices["close"].iloc[-1]),
                  "non_positive_prices": series.non_positive, "data_version": MetadataValue.text(version),
                  "seconds_read": round(t1 - t0, 3), "seconds_build": round(t2 - t1, 3),
                  "seconds_write": round(t3 - t2, 3)},
        data_version=DataVersion(version),
        check_results=[
            AssetCheckResult(check_name="no_gaps_at_rolls", passed=series.bad_bars == 0,
                             metadata={"bad_bars": series.bad_bars}),
            AssetCheckResult(check_name="last_segment_is_raw", passed=series.last_segment_diff == 0.0,
                             metadata={"max_abs_diff_points": series.last_segment_diff}),
        ],
    )


@asset(
    partitions_def=market_partitions, group_name=GROUP, kinds={"duckdb", "mlflow", "numba"},
    deps=[intraday_continuous_prices], pool=WRITER_POOL,
    check_specs=[AssetCheckSpec("margin_within_equity", asset="intraday_backtests",
                                description="No close ends below maintenance margin without a margin call.")],
)
def intraday_backtests(context: AssetExecutionContext, config: IntradayBacktestsConfig, warehouse: WarehouseResource,
                       tracking: TrackingResource, bus: BusResource, files: FilesResource) -> MaterializeResult:
    """Each strategy on the intraday series through fbt's futures engine; Sharpe annualised by bars per session; every bar stored, charts and MLflow artifacts per session."""
    root = context.partition_key
    key, interval, _, _ = config.series(root)
    workspace = files.workspace()
    try:
        specs = config.specs(workspace.strategies())
    except FbtError as exc:
        raise Failure(str(exc)) from None
    client = tracking.get()

    def log(bt) -> None:
        context.log.info(f"{key} {bt.strategy}: net P&L {bt.summary['net_pnl']:,.0f} USD, "
                         f"Sharpe {bt.summary['sharpe']:.2f}, {bt.summary['trades']:.0f} trades, "
                         f"{bt.summary['rolls']:.0f} rolls")

    done = uc.run_intraday_backtests(warehouse.connect, client, root, key, interval, specs, workspace,
                                     code_version=code_version(), source="intraday_backtests asset", on_result=log)
    margin = margin_check(key, [(bt.strategy, strategy_margin_report(
        bt.result.bars, done.data.margin_schedule_for(bt.spec).per_bar("maintenance"),
        bt.result.margin_calls["called"], bt.result.account_stopped)) for bt in done.results])
    if done.tracking_failure:
        context.log.warning(f"tracking failed, intraday backtests stored in the warehouse only: {done.tracking_failure}")
    announce(context, bus.get(), series=key, strategies=len(done.results))
    table = done.runs[["strategy", "net_pnl", "sharpe", "max_drawdown", "trades", "rolls", "roll_costs",
                       "margin_calls"]]
    return MaterializeResult(
        metadata={"series": key, "interval": interval, "backtests": len(done.results), "summary": md_table(table),
                  "bars": int(done.runs["bars"].iloc[0]),
                  "periods_per_year": float(done.runs["periods_per_year"].iloc[0]),
                  "time_split_s": MetadataValue.json(done.timings.as_dict()),
                  **{f"seconds_{k}": v for k, v in done.timings.as_dict().items()},
                  "data_version": MetadataValue.text(done.results[0].data_version),
                  "tracking": f"failed: {done.tracking_failure}" if done.tracking_failure else "ok",
                  **{f"sharpe_{r['strategy']}": float(r["sharpe"]) for r in done.runs.to_dict("records")}},
        check_results=[AssetCheckResult(
            check_name="margin_within_equity", passed=margin.passed,
            metadata={"series": key, "summary": MetadataValue.md(
                "\n".join(f"- {line}" for line in margin.metadata["summary"].splitlines())),
                "breaches": MetadataValue.json(margin.metadata["breaches"])})],
    )


@asset(partitions_def=market_partitions, group_name=GROUP, kinds={"plotly"}, deps=[intraday_backtests])
def intraday_tear_sheet(context: AssetExecutionContext, config: IntradayConfig, warehouse: WarehouseResource,
                        files: FilesResource) -> MaterializeResult:
    """HTML tear sheet per strategy of the intraday series (session-close equity, every trade) in reports/intraday/."""
    root = context.partition_key
    key, interval, _, _ = config.series(root)
    with warehouse.connect() as conn:
        paths = uc.write_intraday_tear_sheets(conn, key, files.workspace(), files.reports() / "intraday")
    return MaterializeResult(metadata={
        "series": key, "interval": interval, "tear_sheets": len(paths),
        "paths": MetadataValue.json({k: str(v) for k, v in paths.items()}),
        **{f"path_{k}": MetadataValue.path(str(v)) for k, v in paths.items()}})
