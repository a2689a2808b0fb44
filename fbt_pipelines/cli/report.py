"""``fbt report RUN_ID``: the tear sheet (and CSVs) of any backtest run."""

from __future__ import annotations

import re
import webbrowser

import click
from rich.markup import escape

from fbt_pipelines.cli.app import console, main, workspace_here
from fbt_pipelines.cli.data import connect_warehouse
from fbt_pipelines.config import paths
from fbt_pipelines.errors import FbtError

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@main.command()
@click.argument("run_id")
@click.option("--open", "open_browser", is_flag=True, help="Open the tear sheet in the default web browser.")
@click.option("--csv", "as_csv", is_flag=True,
              help="Also write equity.csv, trades.csv and metrics.csv into $FBT_HOME/reports/RUN_ID/.")
@click.option("--pdf", "as_pdf", is_flag=True,
              help="Also write $FBT_HOME/reports/RUN_ID.pdf (static charts, one topic per page).")
def report(run_id: str, open_browser: bool, as_csv: bool, as_pdf: bool) -> None:
    """Tear sheet of one backtest run: $FBT_HOME/reports/RUN_ID.html.

    RUN_ID: any backtest's run id, from `fbt backtest` (printed at its end)
    or from the pipeline's backtests asset (its MLflow run id, as in the
    asset's metadata and the MLflow UI).

    \b
    Equity and drawdown, Monte Carlo bands (1,000 stationary-bootstrap paths
    of the daily returns), monthly returns heat map, rolling 126-day Sharpe
    and volatility, P&L by market, trade analysis (round trips, holding
    times, win rate, best / worst, roll costs vs other costs) and the roll
    table (every roll of the market in the run's window: trigger and the
    volumes behind it, gap, cost per contract). The page works offline:
    plotly.min.js is written beside it.
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
    from fbt_pipelines.usecases.report import backtest_run_report, read_backtest_run, write_run_report

    if not _RUN_ID.fullmatch(run_id):
        raise click.BadParameter(f"{run_id!r} is not a run id (letters, digits, '-' and '_')", param_hint="RUN_ID")
    if not paths().warehouse.exists():
        raise click.ClickException(f"no warehouse at {paths().warehouse}: run `fbt backtest` first")
    try:
        conn = connect_warehouse(read_only=True)
        try:
            stored = read_backtest_run(conn, run_id)
        finally:
            conn.close()
        report = backtest_run_report(stored, workspace_here())
        if report.warning:
            console.print(f"[yellow]warning[/yellow]: {escape(report.warning)}")
        written = write_run_report(report, paths().reports, pdf=as_pdf, csv=as_csv)
    except FbtError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"[green]tear sheet[/green]: {written.html}", soft_wrap=True)
    if written.pdf is not None:
        console.print(f"[green]pdf[/green]: {written.pdf} ({written.pdf_pages} pages)", soft_wrap=True)
    if written.csv:
        console.print(f"[green]csv[/green]: {', '.join(str(p) for p in written.csv.values())}", soft_wrap=True)
    out = written.html
    if open_browser and not webbrowser.open(out.resolve().as_uri()):
        console.print(f"[yellow]warning[/yellow]: no web browser could be started; open {out.resolve().as_uri()}",
                      soft_wrap=True)
