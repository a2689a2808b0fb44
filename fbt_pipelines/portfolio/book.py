"""The portfolio's book in USD: positions, trades, cash, equity, margin, exposure.

Positions per market per day, trades, cash, equity, margin in use, gross and
net exposure, and snapshots on a date.

Currency. Each market's engine path is in its contract currency (the
catalogue's ``currency``). Amounts are converted to USD with an FX series
``fx[currency]`` = USD per one unit of the contract currency (EURUSD 1.10
means 1 EUR = 1.10 USD), taken as of each session (the last known rate on or
before it). A session's P&L, costs and margin are converted at that
session's rate: variation margin is assumed swept to USD every session, so
balances carry no FX exposure of their own. USD markets use 1.0. FX futures
quote USD per unit of their currency, so their raw closes are FX series
(:func:`fx_from_future`, e.g. EURUSD from 6E).

Cash. Futures are marked to market daily: the settled cash balance is the
starting capital plus every session's P&L net of costs, i.e. ``cash ==
equity`` for a futures-only book. ``free_cash = cash - margin`` is what the
margin in use leaves.

Exposure. A market's notional is ``contracts x raw_close x multiplier x fx``
(USD, signed). ``gross_exposure`` sums |notional|, ``net_exposure`` sums the
signed notionals; ``leverage = gross_exposure / equity``. A market that has
no session on a date keeps its last position, notional and margin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec

__all__ = ["FX_FUTURES", "MarketBook", "fx_from_future", "fx_rates_for", "market_exposure", "portfolio_book", "snapshot"]

# Currency -> CME FX future quoting USD per one unit of that currency.
FX_FUTURES = {"EUR": "6E", "JPY": "6J", "GBP": "6B", "AUD": "6A", "CAD": "6C"}

POSITION_COLUMNS = ["ts", "root", "currency", "position", "trade", "close", "raw_close", "fx_rate", "notional_usd",
                    "margin_usd", "pnl_local", "pnl", "costs_usd"]
EQUITY_COLUMNS = ["ts", "pnl", "equity", "margin", "costs", "gross_positions", "cash", "free_cash",
                  "gross_exposure", "net_exposure", "leverage", "margin_to_equity"]
TRADE_COLUMNS = ["ts", "root", "contract", "kind", "contracts", "price", "raw_price", "fx_rate", "notional_usd",
                 "commission_usd", "slippage_usd"]


@dataclass(frozen=True)
class MarketBook:
    """One market's engine output for the book.

    ``bars``: the engine's per-bar path (ts, close, position, pnl, margin,
    costs; money in the contract currency) plus ``raw_close`` (points, the
    held contract's own price). ``trades``: the engine's trades (ts,
    contract, kind, contracts, price, raw_price, commission, slippage), may
    be empty.
    """

    spec: ContractSpec
    bars: pd.DataFrame
    trades: pd.DataFrame | None = None


def fx_from_future(prices: pd.DataFrame) -> pd.Series:
    """USD per unit of currency from an FX future's continuous prices, by ts.

    Taken from its ``raw_close``: the held contract's quote, e.g. 6E = EURUSD.
    """
    series = prices.set_index("ts")["raw_close"].astype(float).sort_index()
    if not (np.isfinite(series) & (series > 0)).all():
        raise ValueError("FX future has non-positive or missing raw closes")
    return series.rename("fx_rate")


def fx_rates_for(ts: pd.Series, currency: str, fx: Mapping[str, pd.Series] | None) -> np.ndarray:
    """USD per unit of ``currency`` at each ``ts`` (last known rate on or before it)."""
    if currency == "USD":
        return np.ones(len(ts))
    if not fx or currency not in fx:
        raise ValueError(f"no FX series for {currency}: pass fx={{'{currency}': USD per {currency} by date}}"
                         + (f" (e.g. from the {FX_FUTURES[currency]} future)" if currency in FX_FUTURES else ""))
    series = fx[currency].sort_index()
    series = series[~series.index.duplicated(keep="last")]
    rates = series.reindex(pd.DatetimeIndex(ts).union(series.index)).ffill().reindex(pd.DatetimeIndex(ts))
    values = rates.to_numpy(dtype=float)
    if not np.isfinite(values).all():
        first = pd.DatetimeIndex(ts)[~np.isfinite(values)][0]
        raise ValueError(f"FX series for {currency} has no rate on or before {first.date()}")
    return values


def portfolio_book(markets: Mapping[str, MarketBook], capital: float,
                   fx: Mapping[str, pd.Series] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Positions, equity and trades of the whole book in USD.

    Parameters
    ----------
    markets
        root -> :class:`MarketBook`. Each market's P&L adds to one account.
    capital
        Starting equity, USD.
    fx
        currency -> Series of USD per unit (indexed by session ts, UTC),
        needed for every non-USD market.

    Returns
    -------
    positions
        :data:`POSITION_COLUMNS`, one row per market per session it trades:
        position (contracts at the close), trade (contracts bought (+) or
        sold (-) that session, rolls excluded), fx_rate, notional_usd
        (signed), margin_usd, pnl_local (contract currency), pnl (USD),
        costs_usd.
    equity
        :data:`EQUITY_COLUMNS`, one row per session of any market: pnl,
        costs, margin (USD), equity = capital + cumulative pnl, cash, free_cash,
        gross/net exposure (USD), leverage (gross / equity), margin_to_equity.
    trades
        :data:`TRADE_COLUMNS`: every engine fill and roll with its fx rate,
        notional (|contracts| x raw price x multiplier x fx, USD) and costs in USD.
    """
    if not markets:
        raise ValueError("no markets in the book")
    if not capital > 0:
        raise ValueError(f"capital must be > 0 USD, got {capital}")
    frames, trade_frames = [], []
    for root, book in sorted(markets.items()):
        bars = book.bars.sort_values("ts").reset_index(drop=True)
        missing = {"ts", "close", "raw_close", "position", "pnl", "margin", "costs"} - set(bars.columns)
        if missing:
            raise ValueError(f"{root}: bars lack columns {sorted(missing)}")
        spec = book.spec
        rate = fx_rates_for(bars["ts"], spec.currency, fx)
        position = bars["position"].to_numpy()
        frames.append(pd.DataFrame({
            "ts": bars["ts"], "root": root, "currency": spec.currency, "position": position,
            "trade": np.diff(position, prepend=0),
            "close": bars["close"].astype(float), "raw_close": bars["raw_close"].astype(float), "fx_rate": rate,
            "notional_usd": position * bars["raw_close"].to_numpy(float) * spec.multiplier * rate,
            "margin_usd": bars["margin"].to_numpy(float) * rate,
            "pnl_local": bars["pnl"].to_numpy(float), "pnl": bars["pnl"].to_numpy(float) * rate,
            "costs_usd": bars["costs"].to_numpy(float) * rate,
        }))
        if book.trades is not None and len(book.trades):
            t = book.trades.sort_values("ts", kind="stable").reset_index(drop=True)
            t_rate = fx_rates_for(t["ts"], spec.currency, fx)
            trade_frames.append(pd.DataFrame({
                "ts": t["ts"], "root": root, "contract": t["contract"], "kind": t["kind"],
                "contracts": t["contracts"], "price": t["price"].astype(float),
                "raw_price": t["raw_price"].astype(float), "fx_rate": t_rate,
                "notional_usd": t["contracts"].abs().to_numpy(float) * t["raw_price"].to_numpy(float)
                * spec.multiplier * t_rate,
                "commission_usd": t["commission"].to_numpy(float) * t_rate,
                "slippage_usd": t["slippage"].to_numpy(float) * t_rate,
            }))
    positions = pd.concat(frames, ignore_index=True).sort_values(["ts", "root"]).reset_index(drop=True)
    positions = positions[POSITION_COLUMNS]
    trades = (pd.concat(trade_frames, ignore_index=True).sort_values(["ts", "root"], kind="stable")
              .reset_index(drop=True) if trade_frames else pd.DataFrame(columns=TRADE_COLUMNS))

    flows = positions.groupby("ts", sort=True).agg(pnl=("pnl", "sum"), costs=("costs_usd", "sum"))
    held = (positions.assign(gross=positions["position"].abs(), abs_notional=positions["notional_usd"].abs())
            .pivot(index="ts", columns="root", values=["margin_usd", "gross", "notional_usd", "abs_notional"])
            .sort_index().ffill().fillna(0.0))
    equity = flows.reset_index()
    equity["equity"] = capital + equity["pnl"].cumsum()
    equity["margin"] = held["margin_usd"].sum(axis=1).to_numpy(float)
    equity["gross_positions"] = held["gross"].sum(axis=1).to_numpy().astype(np.int64)
    equity["cash"] = equity["equity"]
    equity["free_cash"] = equity["cash"] - equity["margin"]
    equity["gross_exposure"] = held["abs_notional"].sum(axis=1).to_numpy(float)
    equity["net_exposure"] = held["notional_usd"].sum(axis=1).to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        equity["leverage"] = np.where(equity["equity"] > 0, equity["gross_exposure"] / equity["equity"], np.inf)
        equity["margin_to_equity"] = np.where(equity["equity"] > 0, equity["margin"] / equity["equity"], np.inf)
    return positions, equity[EQUITY_COLUMNS], trades[TRADE_COLUMNS]


def market_exposure(positions: pd.DataFrame, equity: pd.DataFrame) -> pd.DataFrame:
    """|notional| / equity per market per session (fraction), as ts x root.

    1.0 = notional equal to the account; markets are carried forward on
    sessions they do not trade.
    """
    notional = positions.pivot(index="ts", columns="root", values="notional_usd").sort_index().ffill().fillna(0.0)
    eq = equity.set_index("ts")["equity"].reindex(notional.index)
    return notional.abs().div(eq.where(eq > 0), axis=0)


def snapshot(positions: pd.DataFrame, equity: pd.DataFrame, as_of: pd.Timestamp | str) -> dict:
    """The book at the close of the last session on or before ``as_of`` (UTC date).

    Returns a plain dict (for JSON): ``as_of`` (that session's date),
    ``equity``, ``cash``, ``free_cash``, ``margin``, ``gross_exposure``,
    ``net_exposure`` (USD), ``leverage``, ``margin_to_equity``, ``pnl_day``
    (USD), ``pnl_to_date`` (USD), and ``markets``: one entry per market
    holding its last row on or before that session (``last_session``,
    ``position``, ``raw_close``, ``fx_rate``, ``notional_usd``,
    ``margin_usd``, ``pnl_day`` (0 if the market had no session that day),
    ``pnl_to_date``).
    """
    stamp = pd.Timestamp(as_of)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    stamp = stamp.normalize() + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
    eq = equity[equity["ts"] <= stamp]
    if eq.empty:
        raise ValueError(f"the portfolio starts on {pd.Timestamp(equity['ts'].min()).date()}; "
                         f"nothing on or before {pd.Timestamp(as_of).date()}")
    row = eq.iloc[-1]
    day = row["ts"]
    pos = positions[positions["ts"] <= day]
    cum = pos.groupby("root")["pnl"].sum()
    markets = []
    for root, group in pos.groupby("root", sort=True):
        last = group.iloc[-1]
        markets.append({
            "root": root, "currency": last["currency"], "last_session": pd.Timestamp(last["ts"]).date().isoformat(),
            "position": int(last["position"]), "raw_close": float(last["raw_close"]),
            "fx_rate": float(last["fx_rate"]), "notional_usd": float(last["notional_usd"]),
            "margin_usd": float(last["margin_usd"]),
            "pnl_day": float(last["pnl"]) if last["ts"] == day else 0.0, "pnl_to_date": float(cum[root]),
        })
    return {
        "as_of": pd.Timestamp(day).date().isoformat(),
        **{k: float(row[k]) for k in ("equity", "cash", "free_cash", "margin", "gross_exposure", "net_exposure",
                                      "leverage", "margin_to_equity")},
        "pnl_day": float(row["pnl"]), "pnl_to_date": float(eq["pnl"].sum()), "markets": markets,
    }
