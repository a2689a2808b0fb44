"""Intraday portfolio: every market's stored backtests of one interval, per session.

For the ``intraday_portfolio`` asset (``assets/intraday_portfolio.py``). Its
inputs are the ``intraday_backtests`` results already stored: for each
market, the series ``ROOT|interval`` (with a window: ``ROOT|interval|start..end``)
and every strategy run on it, each a *sleeve* with its per-bar equity path
(``intraday_backtest_equity``: position, P&L, costs, margin in the contract
currency) and the series' trading day and raw close per bar
(``intraday_continuous_prices``).

Weighting rule: none is estimated. Each sleeve holds the fixed size its
backtest held, on the capital it started with; the portfolio is their sum:
its P&L is the sleeves' USD P&L added up, its capital the sum of their
starting capitals (or a capital given). The daily portfolio's 1 / markets
risk weight scales volatility-targeted positions and does not apply to
fixed-size intraday backtests.

- **Sessions.** A bar's P&L belongs to the trading day of its series
  (``session``: a Sunday 17:00 CT bar is Monday's); a session's P&L is the sum
  over every market and strategy of the P&L of its bars; sessions are the
  union of the markets' (a market without bars in a session adds 0).
- **Equity, Sharpe, drawdown.** Equity at a session's close = capital +
  cumulative P&L; the session return is its P&L over the previous close's
  equity (the capital before the first); Sharpe = mean / st. dev. (ddof 1) of
  the session returns x sqrt(252); max drawdown = the largest 1 - equity /
  running peak, the peak starting at the capital.
- **Limits (the daily portfolio's checks), at every bar.** A market's
  notional is its sleeves' net contracts x the held contract's raw close x
  multiplier (USD); a market without a bar at t keeps its last. At every
  bar time of any market: ``|notional| / equity`` per market
  (``market_exposure_limit``) and ``sum |notional| / equity`` (``leverage_limit``),
  with the equity of that time (capital + every P&L up to it).
- **Currency.** Non-USD markets are converted at the session's rate of the FX
  future in the daily ``continuous_prices`` (6E for EUR; last rate on or
  before the session), as in the daily book.

Times are UTC; money USD. No Dagster here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.errors import DataError
from fbt_pipelines.portfolio.book import FX_FUTURES, fx_from_future, fx_rates_for
from fbt_pipelines.primitives.performance import PERIODS_PER_YEAR, sharpe_ratio
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.usecases.intraday import check_interval, series_key
from fbt_pipelines.usecases.portfolio import LimitCheck
from fbt_pipelines.usecases.workspace import Workspace

__all__ = ["ALL_MARKETS", "EQUITY_COLUMNS", "PNL_COLUMNS", "IntradayPortfolio", "IntradayPortfolioSpec", "Sleeve",
           "build_intraday_portfolio", "portfolio_key", "portfolio_line", "read_fx", "read_sleeves",
           "store_intraday_portfolio"]

ALL_MARKETS = "ALL"
"""The root part of a portfolio's key: ``ALL|1m``, ``ALL|1m|2024-01-02..2024-03-28``."""
EQUITY_COLUMNS = ["portfolio", "interval", "session", "ts", "pnl", "costs", "equity", "session_return", "drawdown",
                  "margin", "gross_exposure", "net_exposure", "leverage", "max_leverage", "margin_to_equity"]
"""``intraday_portfolio_equity``: one row per session (``ts``: its last bar), USD, fractions."""
PNL_COLUMNS = ["portfolio", "session", "root", "strategy", "series", "pnl", "costs", "bars", "position"]
"""``intraday_portfolio_pnl``: one row per session, market and strategy (USD; position in contracts at its close)."""


def portfolio_key(interval: str, start: dt.date | None = None, end: dt.date | None = None) -> str:
    """``ALL|interval`` (plus ``|start..end``): the portfolio's key in the warehouse."""
    return series_key(ALL_MARKETS, interval, start, end)


@dataclass(frozen=True)
class IntradayPortfolioSpec:
    """What decides the portfolio besides the stored backtests.

    ``interval``, ``start``, ``end``: which series (every market's
    ``series_key(root, interval, start, end)``); ``strategies``: the
    strategies combined (empty: every one stored); ``capital``: USD (None: the
    sum of the sleeves' starting capitals); the two limits of the daily
    portfolio (fractions of equity; ``x`` equity for leverage).
    """

    interval: str
    start: dt.date | None = None
    end: dt.date | None = None
    strategies: tuple[str, ...] = ()
    capital: float | None = None
    max_market_exposure: float = 4.0
    max_leverage: float = 8.0

    def __post_init__(self) -> None:
        check_interval(self.interval)
        if self.capital is not None and not self.capital > 0:
            raise DataError(f"capital {self.capital}: a portfolio's capital must be > 0 USD")

    @property
    def key(self) -> str:
        return portfolio_key(self.interval, self.start, self.end)


@dataclass(frozen=True)
class Sleeve:
    """One strategy's stored intraday backtest on one market's series.

    ``bars``: one row per bar in time order: ``ts_ns`` (int64 ns UTC),
    ``session_ns`` (the trading day, ns UTC midnight), ``position``
    (contracts), ``pnl``, ``costs``, ``margin`` (contract currency) and
    ``raw_close`` (points); ``initial_capital``: contract currency.
    """

    root: str
    strategy: str
    series: str
    spec: ContractSpec
    initial_capital: float
    bars: pd.DataFrame


_RUNS_SQL = ("SELECT series, root, strategy, final_equity - net_pnl AS initial_capital FROM intraday_backtest_runs "
             "WHERE interval = ? ORDER BY root, strategy")
_EQUITY_SQL = ("SELECT e.strategy, epoch_ns(e.ts) AS ts_ns, epoch_ns(p.session) AS session_ns, e.position, e.pnl, "
               "e.costs, e.margin, p.raw_close FROM intraday_backtest_equity e LEFT JOIN intraday_continuous_prices p "
               "ON p.series = e.series AND p.ts = e.ts WHERE e.series = ? ORDER BY e.strategy, e.ts")


def read_sleeves(conn, workspace: Workspace, spec: IntradayPortfolioSpec) -> list[Sleeve]:
    """Every stored intraday backtest of ``spec``'s series and strategies, with its bars.

    DataError when none is stored, or when a stored backtest's bars no longer
    match its series (the series was rebuilt since: rematerialize
    intraday_backtests).
    """
    if not (wh.table_exists(conn, "intraday_backtest_runs") and wh.table_exists(conn, "intraday_continuous_prices")):
        raise DataError("no intraday backtests stored: materialize intraday_backtests first")
    runs = conn.execute(_RUNS_SQL, [spec.interval]).df()
    runs = runs[[s == series_key(r, spec.interval, spec.start, spec.end)
                 for s, r in zip(runs["series"], runs["root"])]]
    if spec.strategies:
        runs = runs[runs["strategy"].isin(spec.strategies)]
    if runs.empty:
        wanted = f" of {', '.join(spec.strategies)}" if spec.strategies else ""
        pattern = series_key("<ROOT>", spec.interval, spec.start, spec.end)
        raise DataError(f"no intraday backtests{wanted} stored for {pattern}: materialize intraday_backtests "
                        "with that interval and window")
    sleeves = []
    for series, group in runs.groupby("series", sort=True):
        equity = conn.execute(_EQUITY_SQL, [series]).df()
        missing = int(equity["session_ns"].isna().sum())
        if missing:
            raise DataError(f"{series}: {missing} stored backtest bars have no bar in the stored series "
                            "(the series was rebuilt): rematerialize intraday_backtests")
        market = workspace.market(str(group["root"].iloc[0]))
        for row in group.itertuples(index=False):
            bars = equity[equity["strategy"] == row.strategy].drop(columns="strategy").reset_index(drop=True)
            sleeves.append(Sleeve(str(row.root), str(row.strategy), str(series), market,
                                  float(row.initial_capital), bars.astype({"ts_ns": "int64", "session_ns": "int64"})))
    return sleeves


def read_fx(conn, currencies: Sequence[str]) -> dict[str, pd.Series]:
    """Currency -> USD per unit by session (UTC), from the FX futures' daily series."""
    out = {}
    for cur in sorted(set(currencies) - {"USD"}):
        root = FX_FUTURES.get(cur)
        prices = wh.read_partition(conn, "continuous_prices", root, order_by=["ts"]) if root else pd.DataFrame()
        if prices.empty:
            raise DataError(f"{cur} markets in the intraday portfolio need USD per {cur}: materialize "
                            f"continuous_prices of {root or 'its FX future'}")
        out[cur] = fx_from_future(prices)
    return out


@dataclass(frozen=True)
class IntradayPortfolio:
    """The combined sleeves, per session and per bar, with the limit checks.

    ``equity``: :data:`EQUITY_COLUMNS`; ``pnl``: :data:`PNL_COLUMNS`;
    ``exposure``: each market's largest |notional| / equity at any bar;
    ``capital``: USD; ``checks``: ``market_exposure_limit``, ``leverage_limit``.
    """

    spec: IntradayPortfolioSpec
    capital: float
    equity: pd.DataFrame
    pnl: pd.DataFrame
    exposure: pd.Series
    max_leverage: float
    checks: tuple[LimitCheck, ...] = field(default=())

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def roots(self) -> list[str]:
        return sorted(self.pnl["root"].unique())

    @property
    def sleeves(self) -> int:
        return int(self.pnl[["root", "strategy"]].drop_duplicates().shape[0])

    @property
    def net_pnl(self) -> float:
        """USD over every session, after costs."""
        return float(self.equity["pnl"].sum())

    @property
    def final_equity(self) -> float:
        return float(self.equity["equity"].iloc[-1])

    @property
    def sharpe(self) -> float:
        """Session returns' mean / st. dev. (ddof 1) x sqrt(252); NaN after equity <= 0."""
        if (self.equity["equity"] <= 0).any():
            return float("nan")
        return sharpe_ratio(self.equity["session_return"].to_numpy(float), PERIODS_PER_YEAR)

    @property
    def max_drawdown(self) -> float:
        """Largest 1 - equity / running peak at session closes (from the capital), fraction."""
        return float(self.equity["drawdown"].max())

    def headline(self) -> dict[str, float]:
        """Markets, sleeves, sessions, capital, P&L, final equity, Sharpe, drawdown, leverage."""
        return {"markets": float(len(self.roots)), "sleeves": float(self.sleeves), "sessions": float(len(self.equity)),
                "capital": self.capital, "net_pnl": self.net_pnl, "final_equity": self.final_equity,
                "sharpe": self.sharpe, "max_drawdown": self.max_drawdown, "max_leverage": self.max_leverage}

    def pnl_by_market(self) -> pd.DataFrame:
        """Per market and strategy: net P&L and costs (USD), the market's largest exposure."""
        out = self.pnl.groupby(["root", "strategy"], as_index=False)[["pnl", "costs"]].sum()
        out["max_exposure"] = [float(self.exposure.get(r, np.nan)) for r in out["root"]]
        return out.rename(columns={"root": "market", "pnl": "net_pnl_usd", "costs": "costs_usd"})


def _market_path(sleeves: Sequence[Sleeve], fx: dict[str, pd.Series]) -> dict[str, np.ndarray]:
    """One market's sleeves added bar by bar in USD (pnl, costs, margin, notional)."""
    first = sleeves[0]
    ts = first.bars["ts_ns"].to_numpy()
    for s in sleeves[1:]:
        if not np.array_equal(s.bars["ts_ns"].to_numpy(), ts):
            raise DataError(f"{first.series}: the stored backtests {first.strategy} and {s.strategy} cover different "
                            "bars: rematerialize intraday_backtests")
    session = first.bars["session_ns"].to_numpy()
    rate = fx_rates_for(pd.Series(pd.DatetimeIndex(session).tz_localize("UTC")), first.spec.currency, fx)
    total = {name: sum(s.bars[name].to_numpy(float) for s in sleeves) * rate for name in ("pnl", "costs", "margin")}
    position = sum(s.bars["position"].to_numpy(float) for s in sleeves)
    notional = position * first.bars["raw_close"].to_numpy(float) * float(first.spec.multiplier) * rate
    return {"ts": ts, "session": session, "notional": notional, "rate": rate, **total}


def build_intraday_portfolio(spec: IntradayPortfolioSpec, sleeves: Sequence[Sleeve],
                             fx: dict[str, pd.Series] | None = None) -> IntradayPortfolio:
    """The sleeves as one USD portfolio per session, its limits measured at every bar.

    See the module docstring for the rules; ``fx``: currency -> USD per unit
    by session (:func:`read_fx`), needed for non-USD markets.
    """
    if not sleeves:
        raise DataError(f"{spec.key}: no intraday backtests to combine")
    fx = fx or {}
    by_series: dict[str, list[Sleeve]] = {}
    for s in sleeves:
        by_series.setdefault(s.series, []).append(s)
    capital = float(spec.capital) if spec.capital is not None else 0.0
    paths, rows = {}, []
    for series, group in sorted(by_series.items()):
        path = _market_path(group, fx)
        paths[group[0].root] = path
        if spec.capital is None:  # each sleeve's starting capital, in USD at its first session's rate
            capital += sum(s.initial_capital for s in group) * float(path["rate"][0]) if len(path["rate"]) else 0.0
        for s in group:
            frame = pd.DataFrame({"session": s.bars["session_ns"].to_numpy(), "pnl": s.bars["pnl"].to_numpy(float)
                                  * path["rate"], "costs": s.bars["costs"].to_numpy(float) * path["rate"],
                                  "position": s.bars["position"].to_numpy(float)})
            per = frame.groupby("session", sort=True).agg(pnl=("pnl", "sum"), costs=("costs", "sum"),
                                                          bars=("pnl", "size"), position=("position", "last"))
            rows.append(per.reset_index().assign(root=s.root, strategy=s.strategy, series=series))
    if not capital > 0:
        raise DataError(f"{spec.key}: the sleeves' starting capital is {capital:,.2f} USD; give a capital > 0")
    pnl = pd.concat(rows, ignore_index=True)
    # every bar time of any market: P&L adds up, notional and margin carry forward per market
    times = np.unique(np.concatenate([p["ts"] for p in paths.values()]))
    pnl_t = np.zeros(len(times))
    session_t = np.zeros(len(times), dtype=np.int64)
    margin_t, gross_t, net_t = np.zeros(len(times)), np.zeros(len(times)), np.zeros(len(times))
    notional_t = {}
    for root, p in paths.items():
        at = np.searchsorted(times, p["ts"])
        pnl_t += np.bincount(at, weights=p["pnl"], minlength=len(times))
        session_t[at] = np.maximum(session_t[at], p["session"])
        last = np.searchsorted(p["ts"], times, "right") - 1  # the market's last bar at or before each time
        held = last >= 0
        notional = np.where(held, p["notional"][np.maximum(last, 0)], 0.0)
        margin_t += np.where(held, p["margin"][np.maximum(last, 0)], 0.0)
        notional_t[root] = notional
        gross_t += np.abs(notional)
        net_t += notional
    session_t = np.maximum.accumulate(session_t)  # in time order even where two calendars disagree
    equity_t = capital + np.cumsum(pnl_t)
    positive = equity_t > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        leverage_t = np.where(positive, gross_t / equity_t, np.inf)
        exposure = pd.Series({root: float(np.max(np.where(positive, np.abs(n) / equity_t, np.inf)))
                              for root, n in notional_t.items()}, dtype=float)
    # per session: P&L summed over markets and strategies; the book at the session's last bar
    per_session = pnl.groupby("session", sort=True)[["pnl", "costs"]].sum()
    sessions = per_session.index.to_numpy(dtype=np.int64)
    equity = capital + np.cumsum(per_session["pnl"].to_numpy())
    before = np.r_[capital, equity[:-1]]
    peak = np.maximum.accumulate(np.r_[capital, equity])[1:]
    close_at = np.searchsorted(session_t, sessions, "right") - 1  # the last bar time of each session
    worst = pd.Series(leverage_t).groupby(session_t).max().reindex(sessions).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        table = pd.DataFrame({
            "portfolio": spec.key, "interval": spec.interval,
            "session": pd.DatetimeIndex(sessions).tz_localize("UTC"),
            "ts": pd.DatetimeIndex(times[close_at]).tz_localize("UTC"),
            "pnl": per_session["pnl"].to_numpy(), "costs": per_session["costs"].to_numpy(), "equity": equity,
            "session_return": per_session["pnl"].to_numpy() / before, "drawdown": 1.0 - equity / peak,
            "margin": margin_t[close_at], "gross_exposure": gross_t[close_at], "net_exposure": net_t[close_at],
            "leverage": leverage_t[close_at], "max_leverage": worst,
            "margin_to_equity": np.where(equity > 0, margin_t[close_at] / equity, np.inf)}, columns=EQUITY_COLUMNS)
    pnl = pnl.assign(portfolio=spec.key, session=pd.DatetimeIndex(pnl["session"].to_numpy()).tz_localize("UTC"),
                     bars=pnl["bars"].astype("int64"))[PNL_COLUMNS]
    max_leverage = float(np.max(leverage_t))
    worst_market = str(exposure.idxmax())
    checks = (
        LimitCheck("market_exposure_limit", "max_market_exposure", float(exposure.max()), spec.max_market_exposure,
                   (("market", worst_market),)),
        LimitCheck("leverage_limit", "max_leverage", max_leverage, spec.max_leverage),
    )
    return IntradayPortfolio(spec, capital, table, pnl, exposure, max_leverage, checks)


def portfolio_line(equity: pd.DataFrame) -> str:
    """One line about a stored portfolio (its ``intraday_portfolio_equity`` rows).

    Net P&L (USD), Sharpe of the session returns x sqrt(252), the largest
    drawdown and the number of sessions.
    """
    r = equity["session_return"].to_numpy(float)
    sharpe = float("nan") if (equity["equity"] <= 0).any() else sharpe_ratio(r, PERIODS_PER_YEAR)
    return (f"portfolio {equity['portfolio'].iloc[0]}: net P&L {equity['pnl'].sum():,.0f} USD over "
            f"{len(equity):,} sessions, Sharpe {sharpe:.2f} (session returns x sqrt(252)), max drawdown "
            f"{equity['drawdown'].max():.2%}, final equity {equity['equity'].iloc[-1]:,.0f} USD")


def store_intraday_portfolio(conn, portfolio: IntradayPortfolio) -> str:
    """Replace the portfolio's intraday_portfolio_equity / _pnl rows; the equity's version."""
    version = wh.replace_partition(conn, "intraday_portfolio_equity", portfolio.key, portfolio.equity)
    wh.replace_partition(conn, "intraday_portfolio_pnl", portfolio.key, portfolio.pnl)
    return version
