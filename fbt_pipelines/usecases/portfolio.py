"""The multi-market portfolio: targets, one engine run per market, USD book, limits.

One strategy is traded in every market with an equal share of the risk
(weight ``1 / markets``), volatility-targeted in whole contracts and
optionally buffered, by :func:`fbt_pipelines.usecases.backtest.backtest_market`
(the one place a backtest runs), with its margin per bar taken the same way
as a single-market backtest (the trader's dated margin history
where there is one, else the catalogue); the markets' paths become one USD
book (:func:`fbt_pipelines.portfolio.book.portfolio_book`; non-USD markets
converted with FX futures held in the same portfolio). Timestamps are UTC
session closes; money is USD unless a column says ``_local``.

Used by the ``portfolio`` asset (:func:`read_portfolio_inputs` ->
:func:`build_portfolio` -> :func:`store_portfolio`) and by ``fbt portfolio``
(:func:`book_snapshot`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import pandas as pd

from fbt_pipelines.engine.strategies import StrategyTemplate
from fbt_pipelines.errors import DataError
from fbt_pipelines.portfolio.book import (FX_FUTURES, MarketBook, fx_from_future, market_exposure, portfolio_book,
                                          snapshot)
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.usecases.backtest import MarketData, backtest_market, market_data
from fbt_pipelines.usecases.spec import BacktestSpec
from fbt_pipelines.usecases.workspace import Workspace

__all__ = ["PORTFOLIO", "LimitCheck", "PortfolioInputs", "PortfolioResult", "PortfolioSpec", "book_snapshot",
           "breaches", "build_portfolio", "read_portfolio_inputs", "store_portfolio"]

# The portfolio's partition key in portfolio_* and risk_* tables.
PORTFOLIO = "main"


@dataclass(frozen=True)
class LimitCheck:
    """One risk limit against its measured value.

    ``name``: the Dagster check's name (e.g. ``leverage_limit``); ``metric``:
    the measured quantity (e.g. ``max_leverage``; the key of an alert's
    breach); ``value`` and ``limit`` in the metric's unit (fractions of
    equity, or ``x`` equity for leverage); ``details``: extra facts (e.g. the
    market that set the value). Passes when ``value <= limit`` (NaN fails).
    """

    name: str
    metric: str
    value: float
    limit: float
    details: tuple[tuple[str, Any], ...] = ()

    @property
    def passed(self) -> bool:
        return bool(self.value <= self.limit)

    def metadata(self) -> dict[str, Any]:
        """``{metric: value, **details, "limit": limit}`` (the check's metadata)."""
        return {self.metric: self.value, **dict(self.details), "limit": self.limit}


def breaches(checks: tuple[LimitCheck, ...] | list[LimitCheck]) -> dict[str, dict[str, float]]:
    """The failed checks as ``{metric: {"value": v, "limit": l}}`` (empty if none).

    This is an alert's ``breaches``.
    """
    return {c.metric: {"value": c.value, "limit": c.limit} for c in checks if not c.passed}


@dataclass(frozen=True)
class PortfolioSpec:
    """What decides the portfolio besides the data.

    Attributes
    ----------
    backtest
        The strategy, its parameters, the sizing (``capital`` USD of the whole
        portfolio, ``annual_risk_target``, ``idm``, ``vol_span``), costs and
        orders and pysystemtrade's position buffer (``buffer_fraction``: trade
        only when the position leaves optimum +- this fraction of the average
        position), as for a single-market backtest; its ``weight`` is replaced
        by each market's equal share (1 / markets) when the book is built.
    max_market_exposure
        Limit: largest |notional| / equity of one market on any session.
    max_leverage
        Limit: largest gross notional / equity on any session.
    name
        The portfolio's key in the warehouse.
    """

    backtest: BacktestSpec
    max_market_exposure: float = 4.0
    max_leverage: float = 8.0
    name: str = PORTFOLIO

    @classmethod
    def create(cls, strategy: str, params: Mapping[str, Any] | None = None, *,
               library: Mapping[str, StrategyTemplate], capital: float = 10_000_000.0,
               annual_risk_target: float = 0.20, idm: float = 1.5, slippage_ticks: float = 1.0,
               buffer_fraction: float = 0.10, max_market_exposure: float = 4.0, max_leverage: float = 8.0,
               name: str = PORTFOLIO) -> "PortfolioSpec":
        """Resolve ``strategy`` in ``library`` and validate it once.

        ``library``: e.g. :meth:`Workspace.strategies`.
        """
        spec = BacktestSpec.create(strategy, params, library=library, capital=capital,
                                   annual_risk_target=annual_risk_target, idm=idm, slippage_ticks=slippage_ticks,
                                   buffer_fraction=buffer_fraction)
        return cls(spec, max_market_exposure, max_leverage, name)

    @property
    def buffer_fraction(self) -> float:
        """pysystemtrade's position buffer (part of the backtest spec's sizing)."""
        return self.backtest.buffer_fraction

    @property
    def capital(self) -> float:
        """Starting equity of the book, USD."""
        return self.backtest.capital

    def market_spec(self, markets: int) -> BacktestSpec:
        """The backtest spec of one market among ``markets`` (weight 1 / markets)."""
        if markets < 1:
            raise DataError("a portfolio needs at least one market")
        return replace(self.backtest, weight=1.0 / markets)


@dataclass(frozen=True)
class PortfolioInputs:
    """Every market's inputs, by root.

    root -> :class:`~fbt_pipelines.usecases.backtest.MarketData`: continuous
    prices, predictions, features and margin per bar in USD.
    """

    markets: Mapping[str, MarketData]

    @property
    def roots(self) -> list[str]:
        return sorted(self.markets)

    def fx(self) -> dict[str, pd.Series]:
        """currency -> USD per unit by ts (UTC), from the FX futures among the markets.

        For every non-USD currency traded that has one.
        """
        currencies = {d.spec.currency for d in self.markets.values()} - {"USD"}
        return {cur: fx_from_future(self.markets[FX_FUTURES[cur]].prices)
                for cur in sorted(currencies) if cur in FX_FUTURES and FX_FUTURES[cur] in self.markets}


def read_portfolio_inputs(conn, workspace: Workspace) -> PortfolioInputs:
    """The portfolio's inputs: every market with continuous prices in the warehouse.

    Each market with its predictions and features, its spec from the trader's
    workspace (user markets included) and its margin per bar (the dated
    history in the workspace, else the catalogue): the same inputs as the
    ``backtests`` asset reads per market.
    """
    prices = wh.read_table(conn, "continuous_prices", order_by=["root", "ts"])
    if prices.empty:
        raise DataError("no continuous prices in the warehouse: run `fbt demo` or materialize continuous_prices")
    preds = wh.read_table(conn, "predictions", order_by=["root", "ts"])
    feats = wh.read_table(conn, "features", order_by=["root", "ts"])
    markets = {}
    for root in sorted(prices["root"].unique()):
        mp = prices[prices["root"] == root].reset_index(drop=True)
        mpred = preds[preds["root"] == root].reset_index(drop=True) if len(preds) else None
        mfeat = feats[feats["root"] == root].reset_index(drop=True) if len(feats) else None
        markets[root] = market_data(root, workspace, mp, mpred, mfeat)
    return PortfolioInputs(markets)


@dataclass(frozen=True)
class PortfolioResult:
    """The book of one portfolio run.

    ``positions``, ``equity``, ``trades``: :func:`~fbt_pipelines.portfolio.book.portfolio_book`'s
    frames (USD; one row per market per session, per session, per fill or roll).
    ``exposure``: each market's largest |notional| / equity on any session.
    ``margin_sources``: root -> file of the margin history used ("catalogue": none).
    ``checks``: the exposure and leverage limits.
    """

    spec: PortfolioSpec
    positions: pd.DataFrame
    equity: pd.DataFrame
    trades: pd.DataFrame
    exposure: pd.Series
    margin_sources: Mapping[str, str]
    checks: tuple[LimitCheck, ...] = field(default=())

    @property
    def roots(self) -> list[str]:
        return sorted(self.margin_sources)

    @property
    def final_equity(self) -> float:
        """USD at the last session's close."""
        return float(self.equity["equity"].iloc[-1])

    @property
    def max_leverage(self) -> float:
        """Largest gross notional / equity on any session."""
        return float(self.equity["leverage"].max())

    @property
    def max_market_exposure(self) -> float:
        """Largest |notional| / equity of any market on any session."""
        return float(self.exposure.max())

    @property
    def fills(self) -> int:
        return int((self.trades["kind"] != "roll").sum())

    @property
    def rolls(self) -> int:
        return int((self.trades["kind"] == "roll").sum())

    def pnl_by_market(self) -> pd.DataFrame:
        """Per market: net P&L (USD, after costs) in the book and largest exposure.

        Columns: market, net_pnl_usd (sum of the market's USD P&L in the book,
        after costs), max_exposure (its largest |notional| / equity).
        """
        pnl = self.positions.groupby("root")["pnl"].sum()
        return pd.DataFrame({"market": self.roots,
                             "net_pnl_usd": [float(pnl.get(r, 0.0)) for r in self.roots],
                             "max_exposure": [float(self.exposure.get(r, float("nan"))) for r in self.roots]})


def build_portfolio(spec: PortfolioSpec, inputs: PortfolioInputs) -> PortfolioResult:
    """Targets, engine runs and the USD book of every market in ``inputs``.

    Per market: :func:`~fbt_pipelines.usecases.backtest.backtest_market` with
    the portfolio's spec at weight 1 / markets (signal -> whole contracts,
    buffered by ``spec.buffer_fraction``, on ``spec.capital`` with the
    market's margin per bar). The paths become one book of ``spec.capital``
    USD (FX from the FX futures among the markets); the exposure and leverage
    limits are measured on it.
    """
    roots = inputs.roots
    market_spec = spec.market_spec(len(roots))
    books = {}
    for root in roots:
        data = inputs.markets[root]
        result = backtest_market(market_spec, data).result
        bars = result.bars.assign(raw_close=data.frame["raw_close"].to_numpy(float))
        books[root] = MarketBook(data.spec, bars, result.trades)
    positions, equity, trades = portfolio_book(books, spec.capital, inputs.fx())
    worst = market_exposure(positions, equity).max()
    max_exposure, max_leverage = float(worst.max()), float(equity["leverage"].max())
    checks = (
        LimitCheck("market_exposure_limit", "max_market_exposure", max_exposure, spec.max_market_exposure,
                   (("market", str(worst.idxmax())),)),
        LimitCheck("leverage_limit", "max_leverage", max_leverage, spec.max_leverage),
    )
    return PortfolioResult(spec, positions, equity, trades, worst,
                           {r: inputs.markets[r].margin_source for r in roots}, checks)


def store_portfolio(conn, result: PortfolioResult) -> str:
    """Replace the portfolio's stored rows; return the equity partition's data version.

    Replaces the rows of portfolio_equity / _positions / _trades tagged
    ``portfolio``.
    """
    name = result.spec.name
    version = wh.replace_partition(conn, "portfolio_equity", name, result.equity.assign(portfolio=name))
    wh.replace_partition(conn, "portfolio_positions", name, result.positions.assign(portfolio=name))
    wh.replace_partition(conn, "portfolio_trades", name, result.trades.assign(portfolio=name))
    return version


def book_snapshot(conn, as_of: pd.Timestamp | str | None = None, portfolio: str = PORTFOLIO) -> dict:
    """The stored book at the close of the last session on or before ``as_of``.

    ``as_of``: UTC date; None = the last session. Gives equity, cash, margin,
    exposure (USD) and per market contracts, notional, margin and P&L (see
    :func:`fbt_pipelines.portfolio.book.snapshot`). :class:`DataError` when
    there is no book or it starts after ``as_of``.
    """
    equity = wh.read_partition(conn, "portfolio_equity", portfolio, order_by=["ts"])
    positions = wh.read_partition(conn, "portfolio_positions", portfolio, order_by=["ts", "root"])
    if equity.empty or "gross_exposure" not in equity.columns:
        raise DataError("no portfolio book yet: materialize the portfolio asset (fbt demo)")
    try:
        return snapshot(positions, equity, as_of if as_of is not None else equity["ts"].iloc[-1])
    except ValueError as exc:
        raise DataError(str(exc)) from None
