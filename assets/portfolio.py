"""Stage 5: the multi-market portfolio, its risk report and tear sheet."""

import os

import pandas as pd
from dagster import (AssetCheckResult, AssetCheckSpec, AssetExecutionContext, Config, MaterializeResult,
                     MetadataValue, asset)
from pydantic import Field

from assets._support import WRITER_POOL, announce, md_table
from assets.backtests import backtests
from fbt_pipelines.alerts import send_alert
from fbt_pipelines.catalog import market_spec
from fbt_pipelines.engine.backtest import backtest_market
from fbt_pipelines.engine.futures_engine import EngineConfig
from fbt_pipelines.engine.strategies import strategies_help
from fbt_pipelines.portfolio.portfolio import combine_markets
from fbt_pipelines.portfolio.sizing import VolTargetConfig
from fbt_pipelines.reports.tear_sheet import write_tear_sheet
from fbt_pipelines.risk.metrics import daily_returns, risk_metrics
from fbt_pipelines.risk.correlation import correlation_matrix
from fbt_pipelines.risk.monte_carlo import bootstrap_paths, monte_carlo_summary
from fbt_pipelines.stores import warehouse as wh
from fbt_pipelines.versioning import code_version, frame_version
from fbt_pipelines.engine.comparison import compare_strategies
from fbt_pipelines.reports.sparkline import markdown_image, svg_bars
from resources import BusResource, FilesResource, TrackingResource, WarehouseResource

PORTFOLIO = "main"


class PortfolioConfig(Config):
    strategy: str = Field(default="sma_crossover", description=f"Strategy traded in every market. {strategies_help()}")
    params: dict[str, float] = Field(default={"fast": 20, "slow": 100}, description="Its parameters.")
    capital: float = Field(default=10_000_000.0, description="Portfolio capital, USD.")
    annual_risk_target: float = Field(default=0.20, description="Annualised volatility target of the portfolio.")
    idm: float = Field(default=1.5, description="Instrument diversification multiplier.")
    slippage_ticks: float = 1.0


@asset(group_name="portfolio", kinds={"duckdb", "mlflow"}, deps=[backtests], pool=WRITER_POOL)
def strategy_comparison(context: AssetExecutionContext, warehouse: WarehouseResource,
                        tracking: TrackingResource) -> MaterializeResult:
    """Every strategy against the others and against buy-and-hold on the same markets, costs included (also an MLflow run)."""
    with warehouse.connect() as conn:
        runs = wh.read_table(conn, "backtest_runs", order_by=["root", "strategy"])
        table = compare_strategies(runs)
        wh.replace_partition(conn, "strategy_comparison", "main", table.assign(report="main"))
    run_id = tracking.get().log_backtest(
        "strategy-comparison", {"markets": ",".join(sorted(runs["root"].unique())), "strategies": len(table)},
        {f"mean_sharpe_{r.strategy}": r.mean_sharpe for r in table.itertuples()},
        tags={"kind": "comparison", "code_version": code_version()}, tables={"comparison": table},
        figures={"mean_sharpe": svg_bars(dict(zip(table["strategy"], table["mean_sharpe"])))})
    return MaterializeResult(metadata={
        "comparison": md_table(table, ",.2f"), "best": str(table["strategy"].iloc[0]),
        "chart": MetadataValue.md(markdown_image(svg_bars(dict(zip(table["strategy"], table["mean_sharpe"]))),
                                                 "mean Sharpe by strategy")),
        "mlflow_run": MetadataValue.text(run_id)})


@asset(group_name="portfolio", kinds={"duckdb"}, deps=[backtests], pool=WRITER_POOL)
def portfolio(context: AssetExecutionContext, config: PortfolioConfig, warehouse: WarehouseResource,
              bus: BusResource) -> MaterializeResult:
    """Equal-weight, volatility-targeted portfolio across every market in whole contracts: daily P&L, equity, margin and positions (USD)."""
    sizing = VolTargetConfig(capital=config.capital, annual_risk_target=config.annual_risk_target, idm=config.idm)
    engine = EngineConfig(initial_capital=config.capital, slippage_ticks=config.slippage_ticks)
    with warehouse.connect() as conn:
        prices = wh.read_table(conn, "continuous_prices", order_by=["root", "ts"])
        preds = wh.read_table(conn, "predictions", order_by=["root", "ts"])
    roots = sorted(prices["root"].unique())
    weight = 1.0 / len(roots)
    paths, pnl_by_market = {}, {}
    for root in roots:
        mp = prices[prices["root"] == root].reset_index(drop=True)
        mpred = preds[preds["root"] == root] if len(preds) else None
        bt = backtest_market(mp, market_spec(root), config.strategy, config.params, sizing, engine, mpred, weight)
        paths[root] = bt.result.bars
        pnl_by_market[root] = bt.result.net_pnl
    equity, positions = combine_markets(paths, config.capital)
    equity = equity.assign(portfolio=PORTFOLIO)
    positions = positions.assign(portfolio=PORTFOLIO)
    with warehouse.connect() as conn:
        version = wh.replace_partition(conn, "portfolio_equity", PORTFOLIO, equity)
        wh.replace_partition(conn, "portfolio_positions", PORTFOLIO, positions)
    announce(context, bus.get(), markets=len(roots), final_equity=float(equity["equity"].iloc[-1]))
    by_market = pd.DataFrame({"market": list(pnl_by_market), "net_pnl_usd": list(pnl_by_market.values())})
    return MaterializeResult(metadata={
        "markets": len(roots), "final_equity_usd": float(equity["equity"].iloc[-1]),
        "max_margin_usd": float(equity["margin"].max()), "pnl_by_market": md_table(by_market, ",.0f"),
        "data_version": MetadataValue.text(version),
    })


class RiskLimits(Config):
    monte_carlo_paths: int = Field(default=2000, description="Stationary-bootstrap paths of the daily returns.")
    monte_carlo_seed: int = 0
    max_drawdown: float = Field(default=0.35, description="Largest tolerated peak-to-trough loss (fraction).")
    max_var_99: float = Field(default=0.05, description="Largest tolerated one-day historical VaR 99% (fraction).")
    max_margin_to_equity: float = Field(default=0.5, description="Largest tolerated margin / equity.")


@asset(
    group_name="portfolio", kinds={"duckdb"}, deps=[portfolio], pool=WRITER_POOL,
    check_specs=[
        AssetCheckSpec("max_drawdown_limit", asset="risk_report", description="Max drawdown within the limit."),
        AssetCheckSpec("var_limit", asset="risk_report", description="One-day VaR 99% within the limit."),
        AssetCheckSpec("margin_limit", asset="risk_report", description="Margin / equity within the limit."),
    ],
)
def risk_report(context: AssetExecutionContext, config: RiskLimits, warehouse: WarehouseResource,
                bus: BusResource) -> MaterializeResult:
    """Portfolio risk from daily equity: CAGR, vol, Sharpe, Sortino, Calmar, max drawdown, historical VaR/CVaR 95 and 99, and a stationary-bootstrap Monte Carlo of drawdown, CAGR and Sharpe."""
    with warehouse.connect() as conn:
        equity = wh.read_partition(conn, "portfolio_equity", PORTFOLIO, order_by=["ts"])
        m = risk_metrics(equity.set_index("ts")["equity"])
        margin_ratio = float((equity["margin"] / equity["equity"]).max())
        returns = daily_returns(equity.set_index("ts")["equity"]).to_numpy()
        mc = monte_carlo_summary(bootstrap_paths(returns, config.monte_carlo_paths, len(returns),
                                                 seed=config.monte_carlo_seed),
                                 float(equity["equity"].iloc[0]), config.max_drawdown).scalars()
        row = pd.DataFrame([{"portfolio": PORTFOLIO, **m.as_dict(), "max_margin_to_equity": margin_ratio,
                             **{f"mc_{k}": v for k, v in mc.items()},
                             "data_version": frame_version(equity), "code_version": code_version()}])
        wh.replace_partition(conn, "risk_report", PORTFOLIO, row)
    shown = {k: v for k, v in m.as_dict().items() if isinstance(v, float)}
    breaches = {name: (value, limit) for name, value, limit in [
        ("max_drawdown", m.max_drawdown, config.max_drawdown), ("var_99", m.var_99, config.max_var_99),
        ("max_margin_to_equity", margin_ratio, config.max_margin_to_equity)] if not value <= limit}
    if breaches:
        send_alert(bus.get(), {"kind": "risk_limit_breach", "portfolio": PORTFOLIO, "run_id": context.run_id,
                               "breaches": {k: {"value": v, "limit": lim} for k, (v, lim) in breaches.items()}},
                   os.environ.get("FBT_ALERT_WEBHOOK"))
    return MaterializeResult(
        metadata={**shown, "max_margin_to_equity": margin_ratio,
                  "monte_carlo": md_table(pd.DataFrame([{"statistic": k, "value": v} for k, v in mc.items()]), ".4f")},
        check_results=[
            AssetCheckResult(check_name="max_drawdown_limit", passed=bool(m.max_drawdown <= config.max_drawdown),
                             metadata={"max_drawdown": m.max_drawdown, "limit": config.max_drawdown}),
            AssetCheckResult(check_name="var_limit", passed=bool(m.var_99 <= config.max_var_99),
                             metadata={"var_99": m.var_99, "limit": config.max_var_99}),
            AssetCheckResult(check_name="margin_limit", passed=margin_ratio <= config.max_margin_to_equity,
                             metadata={"max_margin_to_equity": margin_ratio, "limit": config.max_margin_to_equity}),
        ],
    )


@asset(group_name="portfolio", kinds={"plotly", "html"}, deps=[risk_report])
def tear_sheet(context: AssetExecutionContext, warehouse: WarehouseResource, files: FilesResource) -> MaterializeResult:
    """Self-contained HTML tear sheet of the portfolio: equity, drawdown, Monte Carlo bands, risk table, P&L by market, market correlation, per-strategy attribution, provenance."""
    with warehouse.connect() as conn:
        equity = wh.read_partition(conn, "portfolio_equity", PORTFOLIO, order_by=["ts"])
        positions = wh.read_partition(conn, "portfolio_positions", PORTFOLIO)
        report = wh.read_partition(conn, "risk_report", PORTFOLIO).iloc[0]
        runs = wh.read_table(conn, "backtest_runs")
    pnl = positions.groupby("root")["pnl"].sum()
    # correlation of the markets' daily P&L (USD) in the portfolio; per-strategy net P&L from the single-market backtests
    corr = correlation_matrix(positions.pivot_table(index="ts", columns="root", values="pnl", aggfunc="sum"))
    by_strategy = (runs.pivot_table(index="root", columns="strategy", values="net_pnl", aggfunc="sum")
                   if len(runs) else None)
    metrics = {
        "CAGR": f"{report['cagr']:.2%}", "Annual vol": f"{report['annual_vol']:.2%}",
        "Sharpe": f"{report['sharpe']:.2f}", "Sortino": f"{report['sortino']:.2f}",
        "Max drawdown": f"{report['max_drawdown']:.2%}", "VaR 95 / 99 (1d)": f"{report['var_95']:.2%} / {report['var_99']:.2%}",
        "CVaR 95 / 99 (1d)": f"{report['cvar_95']:.2%} / {report['cvar_99']:.2%}",
        "Final equity": f"{equity['equity'].iloc[-1]:,.0f} USD",
    }
    provenance = {"portfolio": PORTFOLIO, "data version": report["data_version"], "code version": code_version(),
                  "run id": context.run_id}
    path = write_tear_sheet(files.reports() / "tear_sheet.html", "fbt portfolio tear sheet", equity,
                            metrics, pnl, provenance, correlation=corr, strategy_pnl=by_strategy,
                            strategy_pnl_title="Single-market backtests: net P&L by strategy and market "
                                               "(USD, after costs)")
    return MaterializeResult(metadata={"path": MetadataValue.path(str(path)),
                                       "sharpe": float(report["sharpe"]), "bytes": path.stat().st_size})
