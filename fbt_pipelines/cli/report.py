"""``fbt report RUN_ID``: the tear sheet (and CSVs) of one ``fbt backtest`` run."""

from __future__ import annotations

import datetime as dt
import json
import re
import webbrowser

import click
import pandas as pd
from rich.markup import escape

from fbt_pipelines.cli.app import console, main
from fbt_pipelines.cli.data import connect_warehouse
from fbt_pipelines.config import paths
from fbt_pipelines.errors import FbtError

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _load_run(run_id: str) -> tuple[pd.Series, pd.DataFrame, pd.DataFrame]:
    """(runs row, equity bars, trades) of one run; ClickException if unknown."""
    from fbt_pipelines.stores import warehouse as wh

    if not paths().warehouse.exists():
        raise click.ClickException(f"no warehouse at {paths().warehouse}: run `fbt backtest` first")
    conn = connect_warehouse(read_only=True)
    try:
        runs = wh.read_partition(conn, "adhoc_backtest_runs", run_id)
        if runs.empty:
            known = wh.read_table(conn, "adhoc_backtest_runs")
            hint = (f"; {len(known)} run(s) stored, e.g. {', '.join(known['run_id'].astype(str).head(3))}"
                    if len(known) else "; no `fbt backtest` run is stored yet")
            raise click.ClickException(f"unknown run id {run_id!r} (not in adhoc_backtest_runs){hint}")
        equity = wh.read_partition(conn, "adhoc_backtest_equity", run_id, order_by=["ts"])
        trades = wh.read_partition(conn, "adhoc_backtest_trades", run_id, order_by=["ts"])
    finally:
        conn.close()
    if equity.empty:
        raise click.ClickException(f"run {run_id} has no equity rows in adhoc_backtest_equity")
    if len(trades):
        # a bar's fill (at the open) precedes its roll (at the close); SQL ORDER BY ts does not keep that
        rank = (trades["kind"] == "roll").astype(int)
        trades = trades.assign(_rank=rank).sort_values(["ts", "_rank"], kind="mergesort").drop(columns="_rank")
        trades = trades.reset_index(drop=True)
    return runs.iloc[0], equity, trades


@main.command()
@click.argument("run_id")
@click.option("--open", "open_browser", is_flag=True, help="Open the tear sheet in the default web browser.")
@click.option("--csv", "as_csv", is_flag=True,
              help="Also write equity.csv, trades.csv and metrics.csv into $FBT_HOME/reports/RUN_ID/.")
@click.option("--pdf", "as_pdf", is_flag=True,
              help="Also write $FBT_HOME/reports/RUN_ID.pdf (static charts, one topic per page).")
def report(run_id: str, open_browser: bool, as_csv: bool, as_pdf: bool) -> None:
    """Tear sheet of one `fbt backtest` run: $FBT_HOME/reports/RUN_ID.html.

    \b
    Equity and drawdown, Monte Carlo bands (1,000 stationary-bootstrap paths
    of the daily returns), monthly returns heat map, rolling 126-day Sharpe
    and volatility, P&L by market, and trade analysis (round trips, holding
    times, win rate, best / worst, roll costs vs other costs). The page
    works offline: plotly.min.js is written beside it.
    \b
    --pdf writes the same report with static charts (matplotlib): summary
    (risk + provenance), equity and drawdown, monthly heat map, rolling
    Sharpe and volatility, trade statistics.
    \b
    Examples:
      fbt backtest --strategy sma_crossover --market ES --json   # prints run_id
      fbt report 3f2a...c9 --open
      fbt report 3f2a...c9 --csv --pdf
    """
    from fbt_pipelines.catalog import market_spec
    from fbt_pipelines.reports.analytics import round_trips, trade_stats
    from fbt_pipelines.reports.export import export_csv
    from fbt_pipelines.reports.tear_sheet import write_tear_sheet
    from fbt_pipelines.risk.metrics import risk_metrics

    if not _RUN_ID.fullmatch(run_id):
        raise click.BadParameter(f"{run_id!r} is not a run id (letters, digits, '-' and '_')", param_hint="RUN_ID")
    run, equity, trades = _load_run(run_id)
    root, strategy = str(run["root"]), str(run["strategy"])
    try:
        multiplier: float | None = float(market_spec(root).multiplier)
    except FbtError:
        multiplier = None  # market no longer in the catalogue: trade P&L in points
    curve = equity.set_index("ts")["equity"].astype(float)
    try:
        m = risk_metrics(curve)
    except ValueError as exc:  # e.g. equity at or below zero
        console.print(f"[yellow]warning[/yellow]: no risk metrics: {escape(str(exc))}")
        m = None
    net_pnl = float(run["net_pnl"])
    capital = float(run["final_equity"]) - net_pnl

    def pct(name: str) -> str:
        return "n/a" if m is None else f"{getattr(m, name):.2%}"

    def num(name: str) -> str:
        return "n/a" if m is None else f"{getattr(m, name):.2f}"

    shown = {
        "Net P&L (after costs)": f"{net_pnl:,.2f} USD", "Final equity": f"{float(run['final_equity']):,.0f} USD",
        "Total return": pct("total_return"), "CAGR": pct("cagr"), "Annual vol": pct("annual_vol"),
        "Sharpe": num("sharpe"), "Sortino": num("sortino"), "Calmar": num("calmar"),
        "Max drawdown": pct("max_drawdown"),
        "Max drawdown duration": "n/a" if m is None else f"{m.max_drawdown_duration} sessions",
        "VaR 95 / 99 (1d)": f"{pct('var_95')} / {pct('var_99')}",
        "CVaR 95 / 99 (1d)": f"{pct('cvar_95')} / {pct('cvar_99')}",
    }
    params = run["params"]
    try:
        params = ", ".join(f"{k}={v:g}" for k, v in json.loads(params).items()) or "-"
    except (TypeError, ValueError, AttributeError):
        pass
    first, last = pd.Timestamp(equity["ts"].iloc[0]), pd.Timestamp(equity["ts"].iloc[-1])
    provenance = {
        "run id (MLflow)": run_id, "strategy": strategy, "parameters": params, "market": root,
        "engine": run.get("engine", "-"), "bars": f"{first.date()} .. {last.date()} ({len(equity):,})",
        "initial capital": f"{capital:,.0f} USD", "data version": run.get("data_version", "-"),
        "report written": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    out = paths().reports / f"{run_id}.html"
    write_tear_sheet(out, f"{strategy} on {root} (fbt backtest {run_id})", equity, shown,
                     pd.Series({root: net_pnl}), provenance, trades=trades, multiplier=multiplier)
    console.print(f"[green]tear sheet[/green]: {out}", soft_wrap=True)
    if as_pdf:
        from fbt_pipelines.reports.pdf import write_pdf

        pdf, pages = write_pdf(paths().reports / f"{run_id}.pdf", f"{strategy} on {root} (fbt backtest {run_id})",
                               equity, shown, provenance, trades=trades, multiplier=multiplier)
        console.print(f"[green]pdf[/green]: {pdf} ({pages} pages)", soft_wrap=True)
    if as_csv:
        trips = round_trips(trades, multiplier, last_close=float(equity["close"].iloc[-1]), last_ts=last)
        raw = {**{k: v for k, v in run.items()}, "initial_capital": capital, "first": first.date(),
               "last": last.date(), "bars": len(equity), "multiplier": multiplier}
        if m is not None:
            raw.update(m.as_dict())
        raw.update({f"trades_{k}": v for k, v in trade_stats(trades, trips).items()})
        files = export_csv(paths().reports / run_id, equity, trades, raw)
        console.print(f"[green]csv[/green]: {', '.join(str(p) for p in files.values())}", soft_wrap=True)
    if open_browser and not webbrowser.open(out.resolve().as_uri()):
        console.print(f"[yellow]warning[/yellow]: no web browser could be started; open {out.resolve().as_uri()}",
                      soft_wrap=True)
