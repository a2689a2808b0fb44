"""Stage 4: per-market backtests of each strategy on the vectorised futures engine."""

import json
from typing import Optional

import pandas as pd
from dagster import (AssetCheckResult, AssetCheckSpec, AssetExecutionContext, Config, MaterializeResult,
                     MetadataValue, asset)
from pydantic import Field

from assets._support import WRITER_POOL, announce, md_table, number
from assets.ml import features, predictions
from assets.partitions import market_partitions
from assets.rolls import continuous_prices
from fbt_pipelines.config import code_version
from fbt_pipelines.engine.strategies import strategies_help
from fbt_pipelines.errors import StrategyError
from fbt_pipelines.reports.charts import equity_drawdown_svg
from fbt_pipelines.reports.sparkline import markdown_image
from fbt_pipelines.usecases.backtest import (backtest_market, backtest_row, margin_events, read_market_data,
                                             store_market_backtests, track_backtest)
from fbt_pipelines.usecases.margin_check import margin_check, strategy_margin_report
from fbt_pipelines.usecases.spec import BacktestSpec
from resources import BusResource, FilesResource, TrackingResource, WarehouseResource


#: how the summary table's columns print (fbt_pipelines/reports/numbers.py)
SUMMARY_KINDS = {"net_pnl": "money", "sharpe": "ratio", "max_drawdown": "percent", "trades": "count",
                 "rolls": "count", "roll_costs": "money", "margin_calls": "count"}


class StrategyConfig(Config):
    """One strategy of the per-market backtests: its name and its parameters."""

    name: str = Field(description="A strategy from `fbt strategies`, e.g. sma_crossover.")
    params: dict[str, float] = Field(default={}, description="Parameter -> value; a missing one takes the "
                                                            "strategy's default (empty: all defaults).")


#: The strategies backtested by default, in name order. A list of {name, params}, not a mapping
#: name -> params: Dagster's launchpad scaffold (``default_values_yaml_from_type_snap``, dagster
#: 1.13) drops the empty-dict values of a mapping, so ewmac_multi, carry and buy_and_hold vanished.
DEFAULT_STRATEGIES: list[dict] = [
    {"name": "buy_and_hold", "params": {}}, {"name": "carry", "params": {}}, {"name": "ewmac_multi", "params": {}},
    {"name": "ml_signal", "params": {"threshold": 0.55}}, {"name": "sma_crossover", "params": {"fast": 20, "slow": 100}},
]


class BacktestsConfig(Config):
    """Strategies and costs of the per-market backtests (editable in the launchpad)."""

    strategies: list[StrategyConfig] = Field(
        default=DEFAULT_STRATEGIES,
        description="The strategies to backtest, each {name, params} (params may be empty: the defaults). "
                    f"{strategies_help()}",
    )
    initial_capital: float = Field(default=1_000_000.0, description="USD per market backtest.")
    annual_risk_target: float = Field(default=0.20, description="Volatility target of the single-market backtest.")
    slippage_ticks: float = Field(default=1.0, description="Ticks lost per contract per side, rolls included.")
    fill: str = Field(default="next_open", description="next_open or next_close.")
    stop_loss: Optional[str] = Field(
        default=None, description="Exit at this distance from the entry fill: '40' (points), '2%' (of the entry) or "
                                  "'3atr' (x ATR(14)); none if empty. A strategy's own 'stop_loss' parameter (points) "
                                  "overrides it. Rules: docs/guide.md, 'Orders and margin'.")
    take_profit: Optional[str] = Field(default=None, description="Exit at this distance in profit (same units).")
    trailing_stop: Optional[str] = Field(
        default=None, description="Exit at this distance from the best close since entry (same units).")
    limit_offset: Optional[str] = Field(
        default=None, description="Enter with limit orders this far below (buy) / above (sell) the deciding close.")
    contracts: Optional[int] = Field(
        default=None,
        description="Fixed size: this many contracts in the signal's direction instead of the vol target.")

    def specs(self, library) -> list[BacktestSpec]:
        """One validated spec per strategy (name order), strategies resolved in ``library``.

        Order settings from the fields above, or per strategy among its
        parameters; a strategy listed twice is a StrategyError.
        """
        from fbt_pipelines.usecases.spec import OrderSettings

        orders = OrderSettings(fill=self.fill, stop_loss=self.stop_loss,  # type: ignore[arg-type]
                               take_profit=self.take_profit, trailing_stop=self.trailing_stop, limit_offset=self.limit_offset,
                               contracts=self.contracts)
        # the default list holds plain dicts (Dagster needs a JSON default; pydantic leaves defaults unvalidated)
        entries = [s if isinstance(s, StrategyConfig) else StrategyConfig(**s) for s in self.strategies]
        names = [s.name for s in entries]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:  # one backtest_runs row per (market, strategy)
            raise StrategyError(f"strategies: {', '.join(twice)} listed more than once; list each strategy once")
        return [BacktestSpec.create(s.name, dict(s.params), library=library, capital=self.initial_capital,
                                    annual_risk_target=self.annual_risk_target, slippage_ticks=self.slippage_ticks,
                                    orders=orders)
                for s in sorted(entries, key=lambda s: s.name)]


@asset(
    partitions_def=market_partitions, group_name="backtest", kinds={"duckdb", "mlflow", "numba"},
    deps=[continuous_prices, predictions, features], pool=WRITER_POOL,
    check_specs=[AssetCheckSpec("margin_within_equity", asset="backtests",
                                description="No close ends below maintenance margin without a margin call "
                                            "(fbt_pipelines/usecases/margin_check.py); metadata names the market, "
                                            "strategy and dates of breaches, calls and margin above equity.")],
)
def backtests(context: AssetExecutionContext, config: BacktestsConfig, warehouse: WarehouseResource,
              tracking: TrackingResource, bus: BusResource, files: FilesResource) -> MaterializeResult:
    """Each strategy on this market through fbt's futures engine (multiplier, commission, slippage, roll costs, margin), one MLflow run per backtest."""
    root = context.partition_key
    workspace = files.workspace()
    specs = config.specs(workspace.strategies())
    with warehouse.connect() as conn:
        data = read_market_data(conn, root, workspace, cache=bus.get())
    client = tracking.get()
    results, rows = [], []
    for spec in specs:
        bt = backtest_market(spec, data)
        run_id = track_backtest(client, bt, code_version=code_version(), source="backtests asset")
        results.append(bt)
        rows.append(backtest_row(bt, code_version=code_version(), mlflow_run_id=run_id))
        context.log.info(f"{root} {bt.strategy}: net P&L {bt.summary['net_pnl']:,.0f} USD, "
                         f"Sharpe {bt.summary['sharpe']:.2f}, {bt.summary['rolls']:.0f} rolls")
    with warehouse.connect() as conn:
        run_frame = store_market_backtests(conn, root, rows, results)
    margin = margin_check(root, [(bt.strategy, strategy_margin_report(
        bt.result.bars, data.margin_schedule_for(bt.spec).per_bar("maintenance"), bt.result.margin_calls["called"],
        bt.result.account_stopped)) for bt in results])
    if client.failure:
        context.log.warning(f"tracking failed, backtests stored in the warehouse only: {client.failure}")
    announce(context, bus.get(), strategies=len(rows), data_version=data.data_version)
    table = run_frame[["strategy", "net_pnl", "sharpe", "max_drawdown", "trades", "rolls", "roll_costs",
                       "margin_calls"]]
    curves = pd.concat({bt.strategy: bt.result.bars.set_index("ts")["equity"] for bt in results}, axis=1)
    events = {bt.strategy: {"margin_calls": margin_events(bt.result)["margin_call_dates"],
                            "account_stopped": margin_events(bt.result)["account_stopped_on"] or None}
              for bt in results}
    return MaterializeResult(
        metadata={"backtests": len(rows), "summary": md_table(table, kinds=SUMMARY_KINDS),
                  "equity_chart": MetadataValue.md(markdown_image(
                      equity_drawdown_svg(curves.index, {k: curves[k].to_numpy() for k in curves.columns},
                                          title=f"{root}: equity and drawdown of each strategy (USD, UTC dates)"),
                      f"{root} equity and drawdown by strategy")),
                  "margin_calls": MetadataValue.json(
                      {k: {"count": len(json.loads(v["margin_calls"])), "dates": json.loads(v["margin_calls"]),
                           "account_stopped": v["account_stopped"]} for k, v in events.items()}),
                  "data_version": MetadataValue.text(data.data_version),
                  "spec_hashes": MetadataValue.json({bt.strategy: bt.spec.spec_hash() for bt in results}),
                  "margin_source": data.margin_source,
                  "tracking": f"failed: {client.failure}" if client.failure else "ok",
                  **{f"sharpe_{r['strategy']}": number(r["sharpe"], "ratio") for r in rows}},
        check_results=[AssetCheckResult(
            check_name="margin_within_equity", passed=margin.passed,
            metadata={"market": margin.metadata["market"], "summary": MetadataValue.md(
                          "\n".join(f"- {line}" for line in margin.metadata["summary"].splitlines())),
                      "breaches": MetadataValue.json(margin.metadata["breaches"]),
                      "strategies": MetadataValue.json(margin.metadata["strategies"])})],
    )
