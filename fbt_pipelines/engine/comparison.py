"""Compare strategies across markets from their backtest summaries."""

from __future__ import annotations

import pandas as pd


def compare_strategies(runs: pd.DataFrame, baseline: str = "buy_and_hold") -> pd.DataFrame:
    """One row per strategy: mean / median Sharpe over markets, total net P&L
    (USD), markets with positive P&L, mean max drawdown, total roll costs, and
    the mean Sharpe difference to ``baseline`` on the same markets.

    ``runs``: rows of ``backtest_runs`` (root, strategy, sharpe, net_pnl,
    max_drawdown, roll_costs). Sorted by mean Sharpe, best first.
    """
    if runs.empty:
        raise ValueError("no backtest runs to compare")
    g = runs.groupby("strategy")
    table = pd.DataFrame({
        "markets": g["root"].nunique(),
        "mean_sharpe": g["sharpe"].mean(),
        "median_sharpe": g["sharpe"].median(),
        "total_net_pnl": g["net_pnl"].sum(),
        "markets_positive": g["net_pnl"].apply(lambda s: int((s > 0).sum())),
        "mean_max_drawdown": g["max_drawdown"].mean(),
        "total_roll_costs": g["roll_costs"].sum(),
    })
    if baseline in table.index:
        base = runs[runs["strategy"] == baseline].set_index("root")["sharpe"]
        diff = runs.assign(base=runs["root"].map(base)).assign(d=lambda d: d["sharpe"] - d["base"])
        table["sharpe_vs_" + baseline] = diff.groupby("strategy")["d"].mean()
    return table.sort_values("mean_sharpe", ascending=False).reset_index()
