"""Intraday group: every market's stored intraday backtests of one interval as one portfolio.

Not partitioned: it combines the ``intraday_backtests`` results of every market
for the run config's ``interval`` (and window), per session, stored under
``ALL|interval`` in ``intraday_portfolio_equity`` / ``_pnl``. Domain rules:
:mod:`fbt_pipelines.usecases.intraday_portfolio`, docs/guide.md "Intraday bars".
"""

from dagster import AssetExecutionContext, Config, DataVersion, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets._support import (WRITER_POOL, announce, date_range, limit_check_result, limit_check_specs, md_table,
                             number)
from assets.intraday import GROUP, intraday_backtests
from fbt_pipelines.errors import FbtError
from fbt_pipelines.reports.charts import equity_drawdown_svg
from fbt_pipelines.reports.sparkline import markdown_image
from fbt_pipelines.usecases import intraday as uc
from fbt_pipelines.usecases import intraday_portfolio as up
from resources import BusResource, FilesResource, WarehouseResource


class IntradayPortfolioConfig(Config):
    """Which series are combined, the capital and the daily portfolio's two limits."""

    interval: str = Field(default=uc.DEFAULT_INTERVAL, description="Bar interval of the series: 1m or 1h.")
    start: str = Field(default="", description="First trading day YYYY-MM-DD of the series' window (empty: none).")
    end: str = Field(default="", description="Last trading day YYYY-MM-DD of the series' window (empty: none).")
    strategies: list[str] = Field(default=[], description="Strategies combined (empty: every one stored).")
    capital: float = Field(default=0.0, description="Portfolio capital, USD (0: the sum of the backtests' starting "
                           "capitals).")
    max_market_exposure: float = Field(default=4.0, description="Limit: largest |notional| / equity of one market "
                                       "at any bar (blocking check).")
    max_leverage: float = Field(default=8.0, description="Limit: largest gross notional / equity at any bar "
                                "(blocking check).")

    def spec(self) -> up.IntradayPortfolioSpec:
        """The validated spec; Failure on a bad value."""
        try:
            return up.IntradayPortfolioSpec(
                uc.check_interval(self.interval), uc.parse_day(self.start, "start"), uc.parse_day(self.end, "end"),
                tuple(self.strategies), self.capital or None, self.max_market_exposure, self.max_leverage)
        except FbtError as exc:
            raise Failure(str(exc)) from None


@asset(
    group_name=GROUP, kinds={"duckdb"}, deps=[intraday_backtests], pool=WRITER_POOL,
    check_specs=limit_check_specs("intraday_portfolio", "at any bar", "at every bar"),
)
def intraday_portfolio(context: AssetExecutionContext, config: IntradayPortfolioConfig, warehouse: WarehouseResource,
                       bus: BusResource, files: FilesResource) -> MaterializeResult:
    """Every market's intraday backtests of the interval summed per session (USD, each at its own fixed size and capital): P&L, equity, session returns, drawdown, margin and exposure; Sharpe annualised from session returns; exposure and leverage limits at every bar."""
    spec = config.spec()
    workspace = files.workspace()
    try:
        with warehouse.connect() as conn:
            sleeves = up.read_sleeves(conn, workspace, spec)
            fx = up.read_fx(conn, [s.spec.currency for s in sleeves])
        book = up.build_intraday_portfolio(spec, sleeves, fx)
    except FbtError as exc:
        raise Failure(str(exc)) from None
    with warehouse.connect() as conn:
        version = up.store_intraday_portfolio(conn, book)
    head = book.headline()
    announce(context, bus.get(), portfolio=book.key, markets=len(book.roots), net_pnl=book.net_pnl)
    eq = book.equity
    return MaterializeResult(
        metadata={
            "portfolio": book.key, "interval": spec.interval, "markets": ",".join(book.roots),
            "sleeves": book.sleeves, "sessions": len(eq), "date_range": date_range(eq["session"]),
            "capital_usd": number(head["capital"], "money"), "net_pnl_usd": number(head["net_pnl"], "money"),
            "final_equity_usd": number(head["final_equity"], "money"), "sharpe": number(head["sharpe"], "ratio"),
            "max_drawdown": number(head["max_drawdown"], "percent"),
            "max_leverage": number(head["max_leverage"], "ratio"),
            "pnl_by_market": md_table(book.pnl_by_market(), ",.2f", kinds={
                "net_pnl_usd": "money", "costs_usd": "money", "max_exposure": "percent"}),
            "equity_chart": MetadataValue.md(markdown_image(equity_drawdown_svg(
                eq["session"], eq["equity"].to_numpy(), title=f"{book.key}: equity at session closes (USD)"),
                f"{book.key} equity")),
            "data_version": MetadataValue.text(version),
        },
        data_version=DataVersion(version),
        check_results=[limit_check_result(c) for c in book.checks],
    )
