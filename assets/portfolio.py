"""Stage 5: the multi-market portfolio, its risk report and tear sheet.

Each body reads through a resource, calls one use case
(:mod:`fbt_pipelines.usecases.portfolio`, :mod:`~fbt_pipelines.usecases.risk`,
:mod:`~fbt_pipelines.usecases.report`), stores and describes the result.
"""


import pandas as pd
from dagster import AssetCheckSpec, AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets._support import WRITER_POOL, announce, limit_check_result, limit_check_specs, md_table, number, numbers
from assets.backtests import backtests
from fbt_pipelines.config import alert_webhook, code_version
from fbt_pipelines.engine.strategies import strategies_help
from fbt_pipelines.reports.charts import equity_drawdown_svg
from fbt_pipelines.reports.numbers import format_number, kind_of
from fbt_pipelines.reports.sparkline import markdown_image
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.services.alerts import send_alert
from fbt_pipelines.usecases.portfolio import (PORTFOLIO, PortfolioSpec, breaches, build_portfolio,
                                              read_portfolio_inputs, store_portfolio)
from fbt_pipelines.usecases.report import read_portfolio_sheet, write_portfolio_tear_sheet
from fbt_pipelines.usecases.risk import (RISK_EXPERIMENT, RiskSettings, compare_backtests, parse_replay_windows,
                                         parse_shocks, read_risk_inputs, risk_report as measure_risk,
                                         store_risk_report, store_strategy_comparison, track_risk_report,
                                         track_strategy_comparison)
from resources import BusResource, FilesResource, TrackingResource, WarehouseResource

__all__ = ["PORTFOLIO", "RISK_EXPERIMENT", "PortfolioConfig", "RiskLimits", "portfolio", "risk_report",
           "strategy_comparison", "tear_sheet"]


def _alert(bus: BusResource, payload: dict) -> None:
    """A risk-limit alert on the bus (and the webhook in FBT_ALERT_WEBHOOK, if set)."""
    send_alert(bus.get(), payload, alert_webhook())


def _comparison_kinds(table: pd.DataFrame) -> dict[str, str]:
    """How each numeric column of the strategy comparison prints."""
    kinds = {"rank": "count", "mean_sharpe": "ratio", "median_sharpe": "ratio", "total_net_pnl": "money",
             "mean_max_drawdown": "percent", "total_roll_costs": "money"}
    kinds.update({c: "count" for c in table.columns if str(c).startswith("markets")})
    kinds.update({c: "ratio" for c in table.columns if str(c).startswith("sharpe_vs_")})
    return {c: k for c, k in kinds.items() if c in table.columns}


def _equity_chart(ts, equity, title: str) -> MetadataValue:
    """The portfolio's equity (USD) and drawdown on dated axes, as a Markdown image."""
    return MetadataValue.md(markdown_image(equity_drawdown_svg(ts, equity, title=title), title))


@asset(group_name="portfolio", kinds={"duckdb", "mlflow"}, deps=[backtests], pool=WRITER_POOL)
def strategy_comparison(context: AssetExecutionContext, warehouse: WarehouseResource,
                        tracking: TrackingResource) -> MaterializeResult:
    """Every strategy against the others and against buy-and-hold on the same markets, costs included (also an MLflow run)."""
    with warehouse.connect() as conn:
        comparison = compare_backtests(wh.read_table(conn, "backtest_runs", order_by=["root", "strategy"]))
        store_strategy_comparison(conn, comparison)
    run_id = track_strategy_comparison(tracking.get(), comparison, code_version=code_version())
    return MaterializeResult(metadata={
        "comparison": md_table(comparison.table, ",.2f", kinds=_comparison_kinds(comparison.table)),
        "best": comparison.best,
        "flagged": MetadataValue.json(comparison.flagged()),  # ruined / failed / margin-called markets, ranked last
        "chart": MetadataValue.md(markdown_image(comparison.chart_svg(), "mean Sharpe by strategy")),
        "mlflow_run": MetadataValue.text(run_id)})


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

    def spec(self, library) -> PortfolioSpec:
        """The validated portfolio spec, the strategy resolved in ``library``."""
        return PortfolioSpec.create(self.strategy, self.params, library=library, capital=self.capital,
                                    annual_risk_target=self.annual_risk_target, idm=self.idm,
                                    slippage_ticks=self.slippage_ticks, buffer_fraction=self.buffer_fraction,
                                    max_market_exposure=self.max_market_exposure, max_leverage=self.max_leverage,
                                    name=PORTFOLIO)


@asset(
    group_name="portfolio", kinds={"duckdb"}, deps=[backtests], pool=WRITER_POOL,
    check_specs=limit_check_specs("portfolio", "on any session", "on every session"),
)
def portfolio(context: AssetExecutionContext, config: PortfolioConfig, warehouse: WarehouseResource,
              bus: BusResource, files: FilesResource) -> MaterializeResult:
    """Equal-weight, volatility-targeted (buffered) portfolio across every market in whole contracts, margin per bar from the market's margin history (else the catalogue): positions, trades, cash, equity, margin and gross/net exposure per day (USD; non-USD markets converted with FX futures)."""
    workspace = files.workspace()
    spec = config.spec(workspace.strategies())
    with warehouse.connect() as conn:
        inputs = read_portfolio_inputs(conn, workspace)
    book = build_portfolio(spec, inputs)
    with warehouse.connect() as conn:
        version = store_portfolio(conn, book)
    announce(context, bus.get(), markets=len(book.roots), final_equity=book.final_equity)
    breached = breaches(book.checks)
    if breached:
        _alert(bus, {"kind": "risk_limit_breach", "portfolio": spec.name, "asset": "portfolio",
                     "run_id": context.run_id, "breaches": breached})
    last = book.equity.iloc[-1]
    return MaterializeResult(
        metadata={
            "markets": len(book.roots), "final_equity_usd": number(book.final_equity, "money"),
            "max_margin_usd": number(book.equity["margin"].max(), "money"),
            "max_leverage": number(book.max_leverage, "ratio"),
            "last_gross_exposure_usd": number(last["gross_exposure"], "money"),
            "last_net_exposure_usd": number(last["net_exposure"], "money"),
            "fills": number(book.fills, "count"), "rolls": number(book.rolls, "count"),
            "equity_chart": _equity_chart(book.equity["ts"], book.equity["equity"].to_numpy(),
                                          f"{spec.name}: portfolio equity and drawdown (USD, UTC dates)"),
            "pnl_by_market": md_table(book.pnl_by_market(), ",.2f",
                                      kinds={"net_pnl_usd": "money", "max_exposure": "percent"}),
            "data_version": MetadataValue.text(version),
            "margin_sources": MetadataValue.json(dict(book.margin_sources)),
        },
        check_results=[limit_check_result(c) for c in book.checks],
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

    def settings(self) -> RiskSettings:
        return RiskSettings(monte_carlo_paths=self.monte_carlo_paths, monte_carlo_seed=self.monte_carlo_seed,
                            max_drawdown=self.max_drawdown, max_var_99=self.max_var_99,
                            max_margin_to_equity=self.max_margin_to_equity,
                            benchmark_market=self.benchmark_market or None, rolling_window=self.rolling_window,
                            shocks=parse_shocks(self.shocks_json), windows=parse_replay_windows(self.replay_windows))


@asset(
    group_name="portfolio", kinds={"duckdb", "mlflow"}, deps=[portfolio, backtests], pool=WRITER_POOL,
    check_specs=[
        AssetCheckSpec("max_drawdown_limit", asset="risk_report", description="Max drawdown within the limit."),
        AssetCheckSpec("var_limit", asset="risk_report", description="One-day VaR 99% within the limit."),
        AssetCheckSpec("margin_limit", asset="risk_report", description="Margin / equity within the limit."),
    ],
)
def risk_report(context: AssetExecutionContext, config: RiskLimits, warehouse: WarehouseResource,
                bus: BusResource, tracking: TrackingResource, files: FilesResource) -> MaterializeResult:
    """Portfolio risk from daily equity: CAGR, vol, Sharpe, Sortino, Calmar, drawdown and its duration, ulcer index, historical/parametric/Cornish-Fisher VaR and CVaR 95/99, turnover, cost share, beta to a market, exposure, correlations of markets and strategies, scenarios (shocks, replays, worst windows, vol x2 / correlation-1 stresses), a stationary-bootstrap Monte Carlo and a trade-reshuffle Monte Carlo of drawdown (also an MLflow run)."""
    settings = config.settings()
    with warehouse.connect() as conn:
        inputs = read_risk_inputs(conn, files.workspace(), PORTFOLIO)
    report = measure_risk(inputs, settings, code_version=code_version())
    with warehouse.connect() as conn:
        store_risk_report(conn, report)
    breached = breaches(report.checks)
    if breached:
        _alert(bus, {"kind": "risk_limit_breach", "portfolio": report.portfolio, "run_id": context.run_id,
                     "breaches": breached})
    run_id = track_risk_report(tracking.get(), report)
    extras = report.extras
    market_corr = extras.market_correlation.reset_index(names="market") if len(extras.market_correlation) else None
    strategy_corr = (extras.strategy_correlation.reset_index(names="strategy")
                     if len(extras.strategy_correlation) else None)
    mc = report.monte_carlo
    return MaterializeResult(
        metadata={**numbers(report.shown()), "max_margin_to_equity": number(report.max_margin_to_equity, "percent"),
                  "benchmark": report.benchmark,
                  "monte_carlo": md_table(pd.DataFrame([{"statistic": k, "value": format_number(v, kind_of(k) or ".4f")}
                                                        for k, v in mc.items()])),
                  "exposure": md_table(extras.exposure, ",.2f",
                                       kinds={"position": "count", "notional_usd": "money", "exposure": "percent"}),
                  "scenarios_usd": md_table(report.scenarios_wide(), ",.0f"),
                  **({"market_correlation": md_table(market_corr, ".2f")} if market_corr is not None else {}),
                  **({"strategy_correlation": md_table(strategy_corr, ".2f")} if strategy_corr is not None else {}),
                  "equity_chart": _equity_chart(report.curve.index, report.curve.to_numpy(),
                                                f"{report.portfolio}: portfolio equity and drawdown (USD, UTC dates)"),
                  "scenario_chart": MetadataValue.md(markdown_image(report.scenario_svg(), "scenario P&L (USD)")),
                  "mlflow_run": MetadataValue.text(run_id)},
        check_results=[limit_check_result(c) for c in report.checks],
    )


@asset(group_name="portfolio", kinds={"plotly", "html"}, deps=[risk_report])
def tear_sheet(context: AssetExecutionContext, warehouse: WarehouseResource, files: FilesResource) -> MaterializeResult:
    """Self-contained HTML tear sheet of the portfolio: equity, drawdown, Monte Carlo bands, risk table, P&L by market, market correlation, per-strategy attribution, provenance."""
    with warehouse.connect() as conn:
        sheet = read_portfolio_sheet(conn, PORTFOLIO)
    path = write_portfolio_tear_sheet(sheet, files.reports() / "tear_sheet.html", code_version=code_version(),
                                      run_id=context.run_id)
    return MaterializeResult(metadata={"path": MetadataValue.path(str(path)), "url": MetadataValue.url(path.as_uri()),
                                       "sharpe": number(sheet.report["sharpe"], "ratio"),
                                       "bytes": path.stat().st_size})
