"""Stage 4: per-market backtests of each strategy on the vectorised futures engine."""

import json

import pandas as pd
from dagster import (AssetCheckResult, AssetCheckSpec, AssetExecutionContext, Config, MaterializeResult,
                     MetadataValue, asset)
from pydantic import Field

from assets._support import WRITER_POOL, announce, md_table
from assets.ml import features, predictions
from assets.partitions import market_partitions
from assets.rolls import continuous_prices
from fbt_pipelines.catalog import market_spec
from fbt_pipelines.engine.backtest import backtest_market
from fbt_pipelines.engine.futures_engine import EngineConfig
from fbt_pipelines.engine.strategies import strategies_help
from fbt_pipelines.portfolio.sizing import VolTargetConfig
from fbt_pipelines.reports.sparkline import svg_lines
from fbt_pipelines.stores import warehouse as wh
from fbt_pipelines.stores.cached_reads import read_partition_cached
from fbt_pipelines.versioning import code_version, frame_version
from fbt_pipelines.futures.margin import margin_per_bar, read_margin_history
from resources import BusResource, FilesResource, TrackingResource, WarehouseResource


class BacktestsConfig(Config):
    """Strategies and costs of the per-market backtests (editable in the launchpad)."""

    strategies: dict[str, dict[str, float]] = Field(
        default={"sma_crossover": {"fast": 20, "slow": 100}, "ml_signal": {"threshold": 0.55},
                 "ewmac_multi": {}, "carry": {}, "buy_and_hold": {}},
        description=f"Strategy name -> parameters. {strategies_help()}",
    )
    initial_capital: float = Field(default=1_000_000.0, description="USD per market backtest.")
    annual_risk_target: float = Field(default=0.20, description="Volatility target of the single-market backtest.")
    slippage_ticks: float = Field(default=1.0, description="Ticks lost per contract per side, rolls included.")
    fill: str = Field(default="next_open", description="next_open or next_close.")


@asset(
    partitions_def=market_partitions, group_name="backtest", kinds={"duckdb", "mlflow", "numba"},
    deps=[continuous_prices, predictions, features], pool=WRITER_POOL,
    check_specs=[AssetCheckSpec("margin_within_equity", asset="backtests",
                                description="Margin in use never exceeds equity in any backtest.")],
)
def backtests(context: AssetExecutionContext, config: BacktestsConfig, warehouse: WarehouseResource,
              tracking: TrackingResource, bus: BusResource, files: FilesResource) -> MaterializeResult:
    """Each strategy on this market through fbt's futures engine (multiplier, commission, slippage, roll costs, margin), one MLflow run per backtest."""
    root = context.partition_key
    spec = market_spec(root)
    engine = EngineConfig(initial_capital=config.initial_capital, slippage_ticks=config.slippage_ticks,
                          fill=config.fill)  # type: ignore[arg-type]
    sizing = VolTargetConfig(capital=config.initial_capital, annual_risk_target=config.annual_risk_target, idm=1.0)
    with warehouse.connect() as conn:
        prices, _ = read_partition_cached(conn, bus.get(), "continuous_prices", root, order_by=["ts"])
        preds = wh.read_partition(conn, "predictions", root, order_by=["ts"])
        feats, _ = read_partition_cached(conn, bus.get(), "features", root, order_by=["ts"])
    history = files.margin_history(root)
    margins = margin_per_bar(prices["ts"], spec, read_margin_history(history) if history else None)
    data_version = frame_version(prices, preds)
    runs, equities, trades = [], [], []
    client = tracking.get()
    for strategy, params in sorted(config.strategies.items()):
        bt = backtest_market(prices, spec, strategy, params, sizing, engine, predictions=preds, margins=margins,
                             features=feats)
        run_params = {"strategy": strategy, "market": root, **bt.params, "engine": "fbt-vectorised",
                      "fill": engine.fill, "slippage_ticks": engine.slippage_ticks,
                      "initial_capital": engine.initial_capital, "annual_risk_target": sizing.annual_risk_target}
        run_id = client.try_log_backtest(  # None if MLflow fails: the warehouse row is the record
            f"{strategy}-{root}", run_params, bt.summary,
            tags={"strategy": strategy, "market": root, "data_version": data_version,
                  "config_hash": engine.config_hash(), "code_version": code_version()},
            tables={"equity": bt.result.bars, "trades": bt.result.trades},
            figures={"equity": svg_lines({"equity (USD)": bt.result.bars["equity"]}, width=640, height=240)},
        )
        runs.append({"root": root, "strategy": strategy, "params": json.dumps(bt.params, sort_keys=True),
                     "engine": "fbt-vectorised", "config_hash": engine.config_hash(), "data_version": data_version,
                     "code_version": code_version(), "mlflow_run_id": run_id, **bt.summary})
        equities.append(bt.result.bars.assign(root=root, strategy=strategy))
        trades.append(bt.result.trades.assign(root=root, strategy=strategy))
        context.log.info(f"{root} {strategy}: net P&L {bt.summary['net_pnl']:,.0f} USD, "
                         f"Sharpe {bt.summary['sharpe']:.2f}, {bt.summary['rolls']:.0f} rolls")
    run_frame = pd.DataFrame(runs)
    equity_frame = pd.concat(equities, ignore_index=True)
    trade_frame = pd.concat(trades, ignore_index=True)
    with warehouse.connect() as conn:
        wh.replace_partition(conn, "backtest_runs", root, run_frame)
        wh.replace_partition(conn, "backtest_equity", root, equity_frame)
        wh.replace_partition(conn, "backtest_trades", root, trade_frame)
    over = int((equity_frame["margin"] > equity_frame["equity"]).sum())
    if client.failure:
        context.log.warning(f"tracking failed, backtests stored in the warehouse only: {client.failure}")
    announce(context, bus.get(), strategies=len(runs), data_version=data_version)
    request_id = context.run.tags.get("fbt/request_id")
    if request_id:  # launched from the request queue: tell `fbt submit --wait`
        bus.get().publish("backtest_done", {
            "request_id": request_id, "market": root, "run_id": context.run_id,
            "results": run_frame[["strategy", "net_pnl", "sharpe", "max_drawdown", "trades", "mlflow_run_id"]]
            .to_dict("records")})
    table = run_frame[["strategy", "net_pnl", "sharpe", "max_drawdown", "trades", "rolls", "roll_costs"]]
    return MaterializeResult(
        metadata={"backtests": len(runs), "summary": md_table(table), "data_version": MetadataValue.text(data_version),
                  "margin_source": str(history) if history else "catalogue",
                  "tracking": f"failed: {client.failure}" if client.failure else "ok",
                  **{f"sharpe_{r['strategy']}": float(r["sharpe"]) for r in runs}},
        check_results=[AssetCheckResult(check_name="margin_within_equity", passed=over == 0,
                                        metadata={"bars_over": over})],
    )
