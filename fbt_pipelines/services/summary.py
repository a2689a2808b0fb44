"""Read-only summaries of the warehouse for the CLI."""

from __future__ import annotations

import duckdb
import pandas as pd

from fbt_pipelines.services import warehouse as wh


def market_summary(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """One row per market: its data and each strategy's net P&L (USD) and Sharpe.

    Data: bars, contracts, rolls, date range; P&L and Sharpe come from
    ``backtest_runs``.
    """
    base = conn.execute(
        """
        SELECT b.root, count(*) AS bars, count(DISTINCT b.contract) AS contracts,
               strftime(min(b.ts), '%Y-%m-%d') AS first, strftime(max(b.ts), '%Y-%m-%d') AS last
        FROM bars b GROUP BY b.root ORDER BY b.root
        """
    ).df()
    if wh.table_exists(conn, "roll_schedule"):
        rolls = conn.execute("SELECT root, count(*) AS rolls FROM roll_schedule GROUP BY root").df()
        base = base.merge(rolls, on="root", how="left")
    if wh.table_exists(conn, "backtest_runs"):
        has_ruined = "ruined" in [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'backtest_runs'").fetchall()]
        runs = conn.execute("SELECT root, strategy, net_pnl, sharpe" + (", ruined" if has_ruined else ", 0.0 AS ruined")
                            + " FROM backtest_runs").df()
        wide = runs.pivot(index="root", columns="strategy", values=["net_pnl", "sharpe", "ruined"])
        wide.columns = [f"{strategy}_{metric}" for metric, strategy in wide.columns]
        base = base.merge(wide.reset_index(), on="root", how="left")
    return base


def portfolio_summary(conn: duckdb.DuckDBPyConnection) -> pd.Series | None:
    if not wh.table_exists(conn, "risk_report"):
        return None
    df = conn.execute("SELECT * FROM risk_report").df()
    return df.iloc[0] if len(df) else None


def table_counts(conn: duckdb.DuckDBPyConnection, tables: list[str]) -> dict[str, int]:
    out = {}
    for t in tables:
        if t not in wh.RESULT_TABLES and t not in ("bars", "ingests", "quarantine", "markets", "contracts"):
            raise ValueError(f"unknown table {t}")
        out[t] = int(conn.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]) if wh.table_exists(conn, t) else 0
    return out
