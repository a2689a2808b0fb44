"""Combine per-market backtests into one portfolio (USD markets only).

The portfolio's book is :func:`fbt_pipelines.portfolio.book.portfolio_book`
(currencies, exposure, trades), built by
:func:`fbt_pipelines.usecases.portfolio.build_portfolio`; this smaller
combination of USD engine paths is kept for callers that hold only bars
(its equity equals the book's for USD markets, see the tests).
"""

from __future__ import annotations

import pandas as pd


def combine_markets(results: dict[str, pd.DataFrame], capital: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Portfolio equity and positions from per-market engine paths.

    Parameters
    ----------
    results
        root -> engine ``bars`` frame (ts, position, pnl, margin, costs, close),
        every market run on the same ``capital`` in USD.
    capital
        Starting equity of the portfolio, USD.

    Returns
    -------
    equity
        ts, pnl (sum of market P&L, USD), equity (capital + cumulative pnl),
        margin (sum, USD), costs (sum, USD), gross_positions (sum of |contracts|).
        Sessions where a market does not trade add 0 P&L and 0 costs for it;
        its margin and position carry over from its previous session.
    positions
        ts, root, position (contracts), close (adjusted points), pnl (USD).
    """
    if not results:
        raise ValueError("no market results to combine")
    frames = []
    for root, bars in sorted(results.items()):
        frames.append(bars.assign(root=root, gross=bars["position"].abs()))
    long = pd.concat(frames, ignore_index=True)
    agg = long.groupby("ts", sort=True).agg(pnl=("pnl", "sum"), costs=("costs", "sum"))
    # Positions (and the margin they tie up) stay open on sessions their market
    # does not trade: carry each market's last margin and |position| forward.
    held = long.pivot(index="ts", columns="root", values=["margin", "gross"]).sort_index().ffill().fillna(0)
    agg["margin"] = held["margin"].sum(axis=1).astype(float)
    agg["gross_positions"] = held["gross"].sum(axis=1).astype(long["gross"].dtype)
    agg = agg.reset_index()
    agg["equity"] = capital + agg["pnl"].cumsum()
    equity = agg[["ts", "pnl", "equity", "margin", "costs", "gross_positions"]]
    positions = long[["ts", "root", "position", "close", "pnl"]].sort_values(["ts", "root"]).reset_index(drop=True)
    return equity, positions
