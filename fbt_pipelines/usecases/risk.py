"""The portfolio's risk report and the strategy comparison.

:func:`risk_report` measures the stored book (see
:mod:`fbt_pipelines.usecases.portfolio`): metrics of the daily equity curve,
a stationary-bootstrap Monte Carlo of the daily returns and a trade-reshuffle
Monte Carlo of the drawdown, desk metrics, scenarios on today's book,
correlations of markets and strategies, and the drawdown / VaR / margin
limits. :func:`compare_backtests` sets every strategy against the others and
buy-and-hold on the same markets from the stored single-market backtests.

Money is USD, returns simple daily fractions of equity, VaR/CVaR one-day
losses (positive fractions), timestamps UTC session closes. Nothing here
reads the environment: the code version comes in as an argument.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import pandas as pd

from fbt_pipelines.engine.comparison import compare_strategies
from fbt_pipelines.errors import DataError
from fbt_pipelines.primitives.versioning import frame_version
from fbt_pipelines.reports.charts import equity_drawdown_svg
from fbt_pipelines.reports.sparkline import svg_bars
from fbt_pipelines.risk.metrics import RiskMetrics, daily_returns, risk_metrics
from fbt_pipelines.risk.monte_carlo import bootstrap_paths, monte_carlo_summary
from fbt_pipelines.risk.report import (DEFAULT_WINDOWS, RiskExtras, market_returns, risk_extras, round_trip_pnl,
                                       strategy_returns, trade_reshuffle_summary)
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.services.tracking import Tracking
from fbt_pipelines.usecases.portfolio import PORTFOLIO, LimitCheck
from fbt_pipelines.usecases.workspace import Workspace

__all__ = ["RISK_EXPERIMENT", "RiskInputs", "RiskReport", "RiskSettings", "StrategyComparison", "compare_backtests",
           "parse_replay_windows", "parse_shocks", "read_risk_inputs", "risk_report", "store_risk_report",
           "store_strategy_comparison", "track_risk_report", "track_strategy_comparison"]

RISK_EXPERIMENT = "fbt-risk"


def parse_replay_windows(extra: Sequence[str]) -> tuple[tuple[str, str, str], ...]:
    """The built-in historical windows plus ``extra`` ones.

    Each extra window is ``NAME:YYYY-MM-DD:YYYY-MM-DD`` (UTC dates).
    """
    windows = list(DEFAULT_WINDOWS)
    for item in extra:
        parts = item.split(":")
        if len(parts) != 3:
            raise ValueError(f"replay window {item!r}: expected NAME:YYYY-MM-DD:YYYY-MM-DD")
        windows.append((parts[0], parts[1], parts[2]))
    return tuple(windows)


def parse_shocks(text: str) -> dict[str, dict[str, float]] | None:
    """Hypothetical shocks from JSON ``{"name": {"ES": -0.1, "energy": 0.3, "*": -0.05}}``.

    Keys: market, asset class or ``*``; moves are fractions. ``""`` = None (the
    built-in set).
    """
    return json.loads(text) if text else None


@dataclass(frozen=True)
class RiskSettings:
    """How the risk report is computed and its limits.

    Attributes
    ----------
    monte_carlo_paths, monte_carlo_seed
        Stationary-bootstrap paths of the daily returns (and trade reshuffles), and their seed.
    max_drawdown, max_var_99, max_margin_to_equity
        Limits: peak-to-trough loss, one-day historical VaR 99 %, margin / equity (fractions).
    benchmark_market
        Market for beta and correlation (None: ES if held, else the first market).
    rolling_window
        Sessions of the rolling market correlation.
    shocks
        Hypothetical shocks ``{name: {market | asset class | "*": move}}`` (None: the built-in set).
    windows
        Historical replays ``(name, start, end)`` (UTC dates).
    """

    monte_carlo_paths: int = 2000
    monte_carlo_seed: int = 0
    max_drawdown: float = 0.35
    max_var_99: float = 0.05
    max_margin_to_equity: float = 0.5
    benchmark_market: str | None = None
    rolling_window: int = 63
    shocks: Mapping[str, Mapping[str, float]] | None = field(default=None, hash=False)
    windows: tuple[tuple[str, str, str], ...] = DEFAULT_WINDOWS


@dataclass(frozen=True)
class RiskInputs:
    """The stored book and what it is measured against.

    ``equity``, ``positions``, ``trades``: the portfolio's book (USD; see
    :func:`fbt_pipelines.portfolio.book.portfolio_book`); ``prices``: every
    market's continuous prices (ts, root, close, raw_close); ``backtest_equity``:
    the single-market backtests' paths (root, strategy, ts, pnl, equity; may be
    empty); ``asset_classes``: root -> asset class of the markets held.
    """

    portfolio: str
    equity: pd.DataFrame
    positions: pd.DataFrame
    trades: pd.DataFrame
    prices: pd.DataFrame
    backtest_equity: pd.DataFrame
    asset_classes: Mapping[str, str]

    @property
    def roots(self) -> list[str]:
        return sorted(self.positions["root"].unique())


def read_risk_inputs(conn, workspace: Workspace, portfolio: str = PORTFOLIO) -> RiskInputs:
    """The risk report's inputs from the warehouse and the trader's workspace.

    The portfolio's stored book, the continuous prices and the single-market
    backtests from the warehouse; asset classes from the trader's workspace.
    """
    equity = wh.read_partition(conn, "portfolio_equity", portfolio, order_by=["ts"])
    if equity.empty:
        raise DataError(f"no book for portfolio {portfolio!r}: materialize the portfolio asset first")
    positions = wh.read_partition(conn, "portfolio_positions", portfolio, order_by=["ts", "root"])
    trades = wh.read_partition(conn, "portfolio_trades", portfolio)
    prices = wh.read_table(conn, "continuous_prices", order_by=["root", "ts"])
    bt_equity = wh.read_table(conn, "backtest_equity")
    classes = {r: workspace.market(r).asset_class for r in sorted(positions["root"].unique())}
    return RiskInputs(portfolio, equity, positions, trades, prices, bt_equity, classes)


@dataclass(frozen=True)
class RiskReport:
    """The risk report of one portfolio.

    ``metrics``: :class:`~fbt_pipelines.risk.metrics.RiskMetrics` of the daily
    equity; ``max_margin_to_equity``: largest margin / equity; ``monte_carlo``:
    bootstrap percentiles (``max_drawdown_p5`` ...) and ``trades_*`` of the
    trade reshuffle; ``extras``: :class:`~fbt_pipelines.risk.report.RiskExtras`
    (desk scalars, scenarios USD, correlations, exposure); ``benchmark``: the
    market of beta; ``data_version``: content hash of the equity rows;
    ``checks``: drawdown, VaR and margin limits.
    """

    portfolio: str
    settings: RiskSettings
    curve: pd.Series
    metrics: RiskMetrics
    max_margin_to_equity: float
    monte_carlo: Mapping[str, float]
    extras: RiskExtras
    benchmark: str
    roots: tuple[str, ...]
    data_version: str
    code_version: str
    checks: tuple[LimitCheck, ...]

    def shown(self) -> dict[str, float]:
        """The numeric metrics and desk scalars (name -> number)."""
        return {k: v for k, v in {**self.metrics.as_dict(), **self.extras.scalars}.items()
                if isinstance(v, (int, float))}

    def row(self) -> pd.DataFrame:
        """The one row of the ``risk_report`` table."""
        return pd.DataFrame([{"portfolio": self.portfolio, **self.metrics.as_dict(),
                              "max_margin_to_equity": self.max_margin_to_equity, **self.extras.scalars,
                              "benchmark": self.benchmark, **{f"mc_{k}": v for k, v in self.monte_carlo.items()},
                              "data_version": self.data_version, "code_version": self.code_version}])

    def scenarios_wide(self) -> pd.DataFrame:
        """scenario x market P&L (USD) of today's book, with a ``total`` column."""
        return (self.extras.scenarios.pivot_table(index="scenario", columns="root", values="pnl_usd", sort=False)
                .reset_index())

    def equity_drawdown_svg(self) -> str:
        """Equity (USD) and drawdown (% below the running peak) on dated axes (UTC)."""
        return equity_drawdown_svg(self.curve.index, self.curve.to_numpy(float), title=f"{self.portfolio} equity")

    def scenario_svg(self) -> str:
        """Total P&L (USD) of today's book under each scenario."""
        totals = self.extras.scenarios[self.extras.scenarios["root"] == "total"]
        return svg_bars(dict(zip(totals["scenario"], totals["pnl_usd"])), width=640)


def risk_report(inputs: RiskInputs, settings: RiskSettings, *, code_version: str) -> RiskReport:
    """Measure the stored book (see the module docstring); ``code_version`` tags the row."""
    equity, positions = inputs.equity, inputs.positions
    curve = equity.set_index("ts")["equity"]
    m = risk_metrics(curve)
    margin_ratio = float((equity["margin"] / equity["equity"]).max())
    returns = daily_returns(curve).to_numpy()
    capital = float(equity["equity"].iloc[0])
    mc = monte_carlo_summary(bootstrap_paths(returns, settings.monte_carlo_paths, len(returns),
                                             seed=settings.monte_carlo_seed),
                             capital, settings.max_drawdown).scalars()
    trade_mc = trade_reshuffle_summary(round_trip_pnl(positions), capital, settings.monte_carlo_paths,
                                       settings.max_drawdown, settings.monte_carlo_seed)
    mc.update({f"trades_{k}": v for k, v in trade_mc.items()})
    roots = inputs.roots
    extras = risk_extras(
        equity, positions, inputs.trades, market_returns(inputs.prices[["ts", "root", "close", "raw_close"]]),
        strategy_returns(inputs.backtest_equity) if len(inputs.backtest_equity) else None,
        inputs.asset_classes, settings.benchmark_market or None, settings.shocks, settings.windows,
        settings.rolling_window)
    benchmark = settings.benchmark_market or ("ES" if "ES" in roots else roots[0])
    checks = (
        LimitCheck("max_drawdown_limit", "max_drawdown", m.max_drawdown, settings.max_drawdown),
        LimitCheck("var_limit", "var_99", m.var_99, settings.max_var_99),
        LimitCheck("margin_limit", "max_margin_to_equity", margin_ratio, settings.max_margin_to_equity),
    )
    return RiskReport(inputs.portfolio, settings, curve, m, margin_ratio, mc, extras, benchmark, tuple(roots),
                      frame_version(equity), code_version, checks)


def store_risk_report(conn, report: RiskReport) -> None:
    """Replace the portfolio's rows of risk_report, risk_scenarios and risk_correlation."""
    name = report.portfolio
    wh.replace_partition(conn, "risk_report", name, report.row())
    wh.replace_partition(conn, "risk_scenarios", name, report.extras.scenarios.assign(portfolio=name))
    wh.replace_partition(conn, "risk_correlation", name, report.extras.correlation.assign(portfolio=name))


def track_risk_report(tracker: Tracking, report: RiskReport) -> str:
    """Log the risk report as one MLflow run (experiment ``fbt-risk``).

    Settings as params, every numeric metric, the scenario / correlation /
    exposure tables and the drawdown and scenario charts; tagged with the data
    and code versions.
    """
    s = report.settings
    metrics = {k: v for k, v in {**report.shown(), "max_margin_to_equity": report.max_margin_to_equity,
                                 **report.monte_carlo}.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return tracker.log_backtest(
        "risk-report", {"portfolio": report.portfolio, "benchmark": report.benchmark, "markets": ",".join(report.roots),
                        "monte_carlo_paths": s.monte_carlo_paths, "monte_carlo_seed": s.monte_carlo_seed},
        metrics,
        tags={"kind": "risk_report", "portfolio": report.portfolio, "data_version": report.data_version,
              "code_version": report.code_version},
        tables={"scenarios": report.extras.scenarios, "correlation": report.extras.correlation,
                "exposure": report.extras.exposure},
        experiment=RISK_EXPERIMENT, figures={"equity_drawdown": report.equity_drawdown_svg(),
                                             "scenarios": report.scenario_svg()})


# --- strategy comparison ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StrategyComparison:
    """One row per strategy, ranked (clean strategies first, then by mean Sharpe).

    ``markets``: the markets compared. Columns (see
    :func:`fbt_pipelines.engine.comparison.compare_strategies`): rank, verdict
    (ok / margin called / failed / ruined, the worst market's), the flagged
    markets, mean / median Sharpe, total net P&L USD, markets positive, mean
    max drawdown, total roll costs USD, Sharpe vs buy-and-hold.
    """

    table: pd.DataFrame
    markets: tuple[str, ...]

    @property
    def best(self) -> str:
        """The first-ranked strategy (a ruined or failed one only if all are)."""
        return str(self.table["strategy"].iloc[0])

    def flagged(self) -> dict[str, str]:
        """Strategy -> its markets that were not ``ok`` (e.g. ``CL ruined 2015-01-02``)."""
        return {r.strategy: r.flagged for r in self.table.itertuples() if r.flagged}

    def mean_sharpe(self) -> dict[str, float]:
        return dict(zip(self.table["strategy"], self.table["mean_sharpe"]))

    def chart_svg(self) -> str:
        """Mean Sharpe by strategy (bars)."""
        return svg_bars(self.mean_sharpe())


def compare_backtests(runs: pd.DataFrame, baseline: str = "buy_and_hold") -> StrategyComparison:
    """Compare the strategies of the stored single-market backtests, costs included.

    Compares the rows of ``backtest_runs`` against each other and ``baseline``.
    """
    if runs.empty:
        raise DataError("no backtest runs to compare: materialize the backtests first")
    return StrategyComparison(compare_strategies(runs, baseline), tuple(sorted(runs["root"].unique())))


def store_strategy_comparison(conn, comparison: StrategyComparison, report: str = "main") -> None:
    """Replace the ``report`` rows of the strategy_comparison table."""
    wh.replace_partition(conn, "strategy_comparison", report, comparison.table.assign(report=report))


def track_strategy_comparison(tracker: Tracking, comparison: StrategyComparison, *, code_version: str) -> str:
    """One MLflow run ``strategy-comparison``: the table and the mean Sharpe per strategy."""
    table = comparison.table
    return tracker.log_backtest(
        "strategy-comparison", {"markets": ",".join(comparison.markets), "strategies": len(table)},
        {f"mean_sharpe_{r.strategy}": r.mean_sharpe for r in table.itertuples()},
        tags={"kind": "comparison", "code_version": code_version}, tables={"comparison": table},
        figures={"mean_sharpe": comparison.chart_svg()})

