"""Compare strategies across markets from their backtest summaries."""

from __future__ import annotations

import math

import pandas as pd

#: Order of the verdicts, best first: a strategy ranks by its worst market.
VERDICTS = ("ok", "margin called", "failed", "ruined")


def run_verdict(row: pd.Series) -> str:
    """The verdict of one backtest row: ``ruined``, ``failed``, ``margin called`` or ``ok``.

    ``ruined``: equity reached zero (``ruined`` = 1 or an ``account_stopped``
    date); ``failed``: no finite Sharpe (no trades, a window too short, an
    error); ``margin called``: the account survived one or more margin calls.
    """
    stopped = str(row.get("account_stopped") or "").strip()
    if float(row.get("ruined", 0.0) or 0.0) >= 1.0 or (stopped not in ("", "no", "nan", "None")):
        return "ruined"
    sharpe = row.get("sharpe")
    if sharpe is None or not math.isfinite(float(sharpe)):
        return "failed"
    if float(row.get("margin_calls", 0.0) or 0.0) > 0:
        return "margin called"
    return "ok"


def compare_strategies(runs: pd.DataFrame, baseline: str = "buy_and_hold") -> pd.DataFrame:
    """One row per strategy, honest ranking first: clean strategies by mean Sharpe.

    Columns: ``rank`` (1 = best), ``strategy``, ``verdict`` (the worst market's:
    ``ok`` < ``margin called`` < ``failed`` < ``ruined``), ``flagged`` (the
    markets that were not ``ok``, e.g. ``CL ruined 2015-01-02; NG failed``),
    ``markets``, ``markets_ruined``, ``markets_failed``, ``markets_margin_called``,
    ``mean_sharpe`` / ``median_sharpe`` (over the markets with a finite Sharpe:
    a ruined market has none, which is why the verdict ranks before the mean),
    ``total_net_pnl`` (USD), ``markets_positive``, ``mean_max_drawdown``,
    ``total_roll_costs`` (USD) and the mean Sharpe difference to ``baseline``
    on the same markets.

    ``runs``: rows of ``backtest_runs`` (root, strategy, sharpe, net_pnl,
    max_drawdown, roll_costs; optional ruined, account_stopped, margin_calls).
    No run is skipped: a strategy with a ruined or failed market ranks after
    every strategy without one, whatever its mean Sharpe.
    """
    if runs.empty:
        raise ValueError("no backtest runs to compare")
    missing = {"root", "strategy", "sharpe", "net_pnl", "max_drawdown", "roll_costs"} - set(runs.columns)
    if missing:
        raise ValueError(f"backtest runs lack columns {sorted(missing)}")
    runs = runs.assign(verdict=runs.apply(run_verdict, axis=1))

    def flagged(group: pd.DataFrame) -> str:
        bad = group[group["verdict"] != "ok"].sort_values("root")
        parts = []
        for r in bad.itertuples():
            stopped = str(getattr(r, "account_stopped", "") or "")
            when = f" {stopped}" if r.verdict == "ruined" and stopped not in ("", "no", "nan", "None") else ""
            parts.append(f"{r.root} {r.verdict}{when}")
        return "; ".join(parts)

    g = runs.groupby("strategy")
    table = pd.DataFrame({
        "verdict": g["verdict"].agg(lambda v: max(v, key=VERDICTS.index)),
        "flagged": g[["root", "verdict", *(["account_stopped"] if "account_stopped" in runs else [])]]
        .apply(flagged),
        "markets": g["root"].nunique(),
        "markets_ruined": g["verdict"].agg(lambda v: int((v == "ruined").sum())),
        "markets_failed": g["verdict"].agg(lambda v: int((v == "failed").sum())),
        "markets_margin_called": g["verdict"].agg(lambda v: int((v == "margin called").sum())),
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
    table["_tier"] = table["verdict"].map(VERDICTS.index)
    table["_bad"] = table["markets_ruined"] + table["markets_failed"]
    table = (table.sort_values(["_tier", "_bad", "mean_sharpe"], ascending=[True, True, False], na_position="last")
             .drop(columns=["_tier", "_bad"]).reset_index())
    table.insert(0, "rank", range(1, len(table) + 1))
    return table
