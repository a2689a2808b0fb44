"""Stage 5: the multi-market portfolio, its risk report and tear sheet."""

import json
import os

import pandas as pd
from dagster import (AssetCheckResult, AssetCheckSpec, AssetExecutionContext, Config, MaterializeResult,
                     MetadataValue, asset)
from pydantic import Field

from assets._support import WRITER_POOL, announce, md_table
from assets.backtests import backtests
from fbt_pipelines.alerts import send_alert
from fbt_pipelines.catalog import market_spec
from fbt_pipelines.engine.futures_engine import EngineConfig, run_backtest
from fbt_pipelines.engine.strategies import strategies_help
from fbt_pipelines.portfolio.book import FX_FUTURES, MarketBook, fx_from_future, market_exposure, portfolio_book
from fbt_pipelines.portfolio.sizing import VolTargetConfig
from fbt_pipelines.portfolio.targets import market_targets
from fbt_pipelines.reports.tear_sheet import write_tear_sheet
from fbt_pipelines.risk.metrics import daily_returns, drawdown, risk_metrics
from fbt_pipelines.risk.correlation import correlation_matrix
from fbt_pipelines.risk.monte_carlo import bootstrap_paths, monte_carlo_summary
from fbt_pipelines.risk.report import (DEFAULT_WINDOWS, market_returns, risk_extras, round_trip_pnl,
                                       strategy_returns, trade_reshuffle_summary)
from fbt_pipelines.stores import warehouse as wh
from fbt_pipelines.versioning import code_version, frame_version
from fbt_pipelines.engine.comparison import compare_strategies
from fbt_pipelines.reports.sparkline import markdown_image, svg_bars, svg_lines
from resources import BusResource, FilesResource, TrackingResource, WarehouseResource

PORTFOLIO = "main"
RISK_EXPERIMENT = "fbt-risk"


class PortfolioConfig(Config):
    strategy: str = Field(default="sma_crossover", description=f"Strategy traded in every market. {strategies_help()}")
    params: dict[str, float] = Field(default={"fast": 20, "slow": 100}, description="Its parameters.")
    capital: float = Field(default=10_000_000.0, description="Portfolio capital, USD.")
    annual_risk_target: float = Field(default=0.20, description="Annualised volatility target of the portfolio.")
    idm: float = Field(default=1.5, description="Instrument diversification multiplier.")
    slippage_ticks: float = 1.0
    buffer_fraction: float = Field(default=0.10, description="Position buffer (pysystemtrade): trade only when the "
                                   "position leaves optimum +- this fraction of the average position; 0 = none.")
    max_market_exposure: float = Field(default=4.0, description="Limit: largest |notional| / equity of one market "
                                       "on any session (blocking check).")
    max_leverage: float = Field(default=8.0, description="Limit: largest gross notional / equity on any session "
                                "(blocking check).")


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


@asset(
    group_name="portfolio", kinds={"duckdb"}, deps=[backtests], pool=WRITER_POOL,
    check_specs=[
        AssetCheckSpec("market_exposure_limit", asset="portfolio", blocking=True,
                       description="No market's |notional| / equity above max_market_exposure on any session."),
        AssetCheckSpec("leverage_limit", asset="portfolio", blocking=True,
                       description="Gross notional / equity at most max_leverage on every session."),
    ],
)
def portfolio(context: AssetExecutionContext, config: PortfolioConfig, warehouse: WarehouseResource,
              bus: BusResource) -> MaterializeResult:
    """Equal-weight, volatility-targeted (buffered) portfolio across every market in whole contracts: positions, trades, cash, equity, margin and gross/net exposure per day (USD; non-USD markets converted with FX futures)."""
    sizing = VolTargetConfig(capital=config.capital, annual_risk_target=config.annual_risk_target, idm=config.idm)
    engine = EngineConfig(initial_capital=config.capital, slippage_ticks=config.slippage_ticks)
    with warehouse.connect() as conn:
        prices = wh.read_table(conn, "continuous_prices", order_by=["root", "ts"])
        preds = wh.read_table(conn, "predictions", order_by=["root", "ts"])
    roots = sorted(prices["root"].unique())
    weight = 1.0 / len(roots)
    books, pnl_by_market = {}, {}
    for root in roots:
        spec = market_spec(root)
        mp = prices[prices["root"] == root].reset_index(drop=True)
        mpred = preds[preds["root"] == root] if len(preds) else None
        frame, target = market_targets(mp, spec, config.strategy, config.params, sizing, weight,
                                       config.buffer_fraction, mpred)
        result = run_backtest(frame, target, spec, engine)
        bars = result.bars.assign(raw_close=frame["raw_close"].to_numpy(float))
        books[root] = MarketBook(spec, bars, result.trades)
        pnl_by_market[root] = result.net_pnl
    fx = {cur: fx_from_future(prices[prices["root"] == FX_FUTURES[cur]])
          for cur in {b.spec.currency for b in books.values()} - {"USD"}
          if cur in FX_FUTURES and FX_FUTURES[cur] in roots}
    positions, equity, trades = portfolio_book(books, config.capital, fx)
    equity, positions, trades = (f.assign(portfolio=PORTFOLIO) for f in (equity, positions, trades))
    with warehouse.connect() as conn:
        version = wh.replace_partition(conn, "portfolio_equity", PORTFOLIO, equity)
        wh.replace_partition(conn, "portfolio_positions", PORTFOLIO, positions)
        wh.replace_partition(conn, "portfolio_trades", PORTFOLIO, trades)
    announce(context, bus.get(), markets=len(roots), final_equity=float(equity["equity"].iloc[-1]))
    exposure = market_exposure(positions, equity)
    worst_market = exposure.max()
    max_exposure, max_leverage = float(worst_market.max()), float(equity["leverage"].max())
    breaches = {name: {"value": value, "limit": limit} for name, value, limit in [
        ("max_market_exposure", max_exposure, config.max_market_exposure),
        ("max_leverage", max_leverage, config.max_leverage)] if not value <= limit}
    if breaches:
        send_alert(bus.get(), {"kind": "risk_limit_breach", "portfolio": PORTFOLIO, "asset": "portfolio",
                               "run_id": context.run_id, "breaches": breaches}, os.environ.get("FBT_ALERT_WEBHOOK"))
    last = equity.iloc[-1]
    by_market = pd.DataFrame({"market": list(pnl_by_market), "net_pnl_usd": list(pnl_by_market.values()),
                              "max_exposure": [float(worst_market[m]) for m in pnl_by_market]})
    return MaterializeResult(
        metadata={
            "markets": len(roots), "final_equity_usd": float(last["equity"]),
            "max_margin_usd": float(equity["margin"].max()), "max_leverage": max_leverage,
            "last_gross_exposure_usd": float(last["gross_exposure"]), "last_net_exposure_usd": float(last["net_exposure"]),
            "fills": int((trades["kind"] != "roll").sum()), "rolls": int((trades["kind"] == "roll").sum()),
            "pnl_by_market": md_table(by_market, ",.2f"), "data_version": MetadataValue.text(version),
        },
        check_results=[
            AssetCheckResult(check_name="market_exposure_limit", passed=bool(max_exposure <= config.max_market_exposure),
                             metadata={"max_market_exposure": max_exposure, "market": str(worst_market.idxmax()),
                                       "limit": config.max_market_exposure}),
            AssetCheckResult(check_name="leverage_limit", passed=bool(max_leverage <= config.max_leverage),
                             metadata={"max_leverage": max_leverage, "limit": config.max_leverage}),
        ],
    )


class RiskLimits(Config):
    monte_carlo_paths: int = Field(default=2000, description="Stationary-bootstrap paths of the daily returns.")
    monte_carlo_seed: int = 0
    max_drawdown: float = Field(default=0.35, description="Largest tolerated peak-to-trough loss (fraction).")
    max_var_99: float = Field(default=0.05, description="Largest tolerated one-day historical VaR 99% (fraction).")
    max_margin_to_equity: float = Field(default=0.5, description="Largest tolerated margin / equity.")
    benchmark_market: str = Field(default="", description="Market for beta and correlation ('' = ES if held, "
                                  "else the first market).")
    rolling_window: int = Field(default=63, description="Sessions of the rolling market correlation.")
    shocks_json: str = Field(default="", description='Hypothetical shocks as JSON {"name": {"ES": -0.1, "energy": '
                             '0.3, "*": -0.05}} (keys: market, asset class or *); "" = the built-in set.')
    replay_windows: list[str] = Field(default=[], description="Extra historical replays, each NAME:START:END "
                                      "(dates YYYY-MM-DD), besides the built-in named windows.")


def _replay_windows(extra: list[str]) -> list[tuple[str, str, str]]:
    windows = list(DEFAULT_WINDOWS)
    for item in extra:
        parts = item.split(":")
        if len(parts) != 3:
            raise ValueError(f"replay window {item!r}: expected NAME:YYYY-MM-DD:YYYY-MM-DD")
        windows.append((parts[0], parts[1], parts[2]))
    return windows


@asset(
    group_name="portfolio", kinds={"duckdb", "mlflow"}, deps=[portfolio, backtests], pool=WRITER_POOL,
    check_specs=[
        AssetCheckSpec("max_drawdown_limit", asset="risk_report", description="Max drawdown within the limit."),
        AssetCheckSpec("var_limit", asset="risk_report", description="One-day VaR 99% within the limit."),
        AssetCheckSpec("margin_limit", asset="risk_report", description="Margin / equity within the limit."),
    ],
)
def risk_report(context: AssetExecutionContext, config: RiskLimits, warehouse: WarehouseResource,
                bus: BusResource, tracking: TrackingResource) -> MaterializeResult:
    """Portfolio risk from daily equity: CAGR, vol, Sharpe, Sortino, Calmar, drawdown and its duration, ulcer index, historical/parametric/Cornish-Fisher VaR and CVaR 95/99, turnover, cost share, beta to a market, exposure, correlations of markets and strategies, scenarios (shocks, replays, worst windows, vol x2 / correlation-1 stresses), a stationary-bootstrap Monte Carlo and a trade-reshuffle Monte Carlo of drawdown (also an MLflow run)."""
    with warehouse.connect() as conn:
        equity = wh.read_partition(conn, "portfolio_equity", PORTFOLIO, order_by=["ts"])
        positions = wh.read_partition(conn, "portfolio_positions", PORTFOLIO, order_by=["ts", "root"])
        trades = wh.read_partition(conn, "portfolio_trades", PORTFOLIO)
        prices = wh.read_table(conn, "continuous_prices", order_by=["root", "ts"])
        bt_equity = wh.read_table(conn, "backtest_equity")
    curve = equity.set_index("ts")["equity"]
    m = risk_metrics(curve)
    margin_ratio = float((equity["margin"] / equity["equity"]).max())
    returns = daily_returns(curve).to_numpy()
    mc = monte_carlo_summary(bootstrap_paths(returns, config.monte_carlo_paths, len(returns),
                                             seed=config.monte_carlo_seed),
                             float(equity["equity"].iloc[0]), config.max_drawdown).scalars()
    trade_mc = trade_reshuffle_summary(round_trip_pnl(positions), float(equity["equity"].iloc[0]),
                                       config.monte_carlo_paths, config.max_drawdown, config.monte_carlo_seed)
    mc.update({f"trades_{k}": v for k, v in trade_mc.items()})
    roots = sorted(positions["root"].unique())
    extras = risk_extras(
        equity, positions, trades, market_returns(prices[["ts", "root", "close", "raw_close"]]),
        strategy_returns(bt_equity) if len(bt_equity) else None,
        {r: market_spec(r).asset_class for r in roots}, config.benchmark_market or None,
        json.loads(config.shocks_json) if config.shocks_json else None, _replay_windows(config.replay_windows),
        config.rolling_window)
    benchmark = config.benchmark_market or ("ES" if "ES" in roots else roots[0])
    row = pd.DataFrame([{"portfolio": PORTFOLIO, **m.as_dict(), "max_margin_to_equity": margin_ratio,
                         **extras.scalars, "benchmark": benchmark, **{f"mc_{k}": v for k, v in mc.items()},
                         "data_version": frame_version(equity), "code_version": code_version()}])
    with warehouse.connect() as conn:
        wh.replace_partition(conn, "risk_report", PORTFOLIO, row)
        wh.replace_partition(conn, "risk_scenarios", PORTFOLIO, extras.scenarios.assign(portfolio=PORTFOLIO))
        wh.replace_partition(conn, "risk_correlation", PORTFOLIO, extras.correlation.assign(portfolio=PORTFOLIO))
    shown = {k: v for k, v in {**m.as_dict(), **extras.scalars}.items() if isinstance(v, (int, float))}
    breaches = {name: (value, limit) for name, value, limit in [
        ("max_drawdown", m.max_drawdown, config.max_drawdown), ("var_99", m.var_99, config.max_var_99),
        ("max_margin_to_equity", margin_ratio, config.max_margin_to_equity)] if not value <= limit}
    if breaches:
        send_alert(bus.get(), {"kind": "risk_limit_breach", "portfolio": PORTFOLIO, "run_id": context.run_id,
                               "breaches": {k: {"value": v, "limit": lim} for k, (v, lim) in breaches.items()}},
                   os.environ.get("FBT_ALERT_WEBHOOK"))
    scen_totals = extras.scenarios[extras.scenarios["root"] == "total"]
    scen_wide = (extras.scenarios.pivot_table(index="scenario", columns="root", values="pnl_usd", sort=False)
                 .reset_index())
    drawdown_svg = svg_lines({"drawdown (%)": (100 * drawdown(curve)).tolist()}, width=640, height=160)
    scen_svg = svg_bars(dict(zip(scen_totals["scenario"], scen_totals["pnl_usd"])), width=640)
    run_id = tracking.get().log_backtest(
        "risk-report", {"portfolio": PORTFOLIO, "benchmark": benchmark, "markets": ",".join(roots),
                        "monte_carlo_paths": config.monte_carlo_paths, "monte_carlo_seed": config.monte_carlo_seed},
        {k: v for k, v in {**shown, "max_margin_to_equity": margin_ratio, **mc}.items()
         if isinstance(v, (int, float)) and not isinstance(v, bool)},
        tags={"kind": "risk_report", "portfolio": PORTFOLIO, "data_version": frame_version(equity),
              "code_version": code_version()},
        tables={"scenarios": extras.scenarios, "correlation": extras.correlation, "exposure": extras.exposure},
        experiment=RISK_EXPERIMENT, figures={"drawdown": drawdown_svg, "scenarios": scen_svg})
    market_corr = extras.market_correlation.reset_index(names="market") if len(extras.market_correlation) else None
    strategy_corr = (extras.strategy_correlation.reset_index(names="strategy")
                     if len(extras.strategy_correlation) else None)
    return MaterializeResult(
        metadata={**shown, "max_margin_to_equity": margin_ratio, "benchmark": benchmark,
                  "monte_carlo": md_table(pd.DataFrame([{"statistic": k, "value": v} for k, v in mc.items()]), ".4f"),
                  "exposure": md_table(extras.exposure, ",.2f"),
                  "scenarios_usd": md_table(scen_wide, ",.0f"),
                  **({"market_correlation": md_table(market_corr, ".2f")} if market_corr is not None else {}),
                  **({"strategy_correlation": md_table(strategy_corr, ".2f")} if strategy_corr is not None else {}),
                  "drawdown_chart": MetadataValue.md(markdown_image(drawdown_svg, "drawdown (%)")),
                  "scenario_chart": MetadataValue.md(markdown_image(scen_svg, "scenario P&L (USD)")),
                  "mlflow_run": MetadataValue.text(run_id)},
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
