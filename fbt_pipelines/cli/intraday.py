"""``fbt demo-intraday``: minute bars from files to tear sheets via the intraday group.

Generated ES minute bars over a year (inside CME Globex sessions) plus the
bundled real LEAN ES minute bars (``tests/fixtures/lean/minute/es``) are put
in ``landing/ES/1m/``; the ``intraday_market`` job (its ``intraday_raw_bars``
asset ingests that folder, unchanged files skipped) runs once per
series (the generated year, and each LEAN window of trading days) in this
process, and the table shows each strategy's net P&L (USD), Sharpe (per
bar, annualised by bars per session), trades and rolls.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from fbt_pipelines.cli.app import _ensure_redis, console, main, workspace_here
from fbt_pipelines.config import paths

DEMO_ROOT = "ES"
DEMO_START, DEMO_END = dt.date(2023, 1, 3), dt.date(2024, 1, 31)
# trading-day windows of the bundled LEAN minute files (a continuous series needs no gap across a roll)
LEAN_WINDOWS = [("2013-10-29", "2013-10-31"), ("2013-12-18", "2013-12-19")]


def bundled_lean_minutes() -> Path | None:
    """The repository's LEAN ES minute fixtures, if this checkout has them."""
    folder = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "lean" / "minute" / "es"
    return folder if folder.is_dir() else None


@main.command("demo-intraday")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), default=str(DEMO_START), show_default=True,
              help="First trading day of the generated minute bars.")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), default=str(DEMO_END), show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--lean", "lean_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="LEAN minute folder to ingest too (default: the bundled ES fixtures).")
@click.option("--regenerate", is_flag=True, help="Rewrite the generated minute bars even if present.")
def demo_intraday(start: dt.datetime, end: dt.datetime, seed: int, lean_dir: Path | None, regenerate: bool) -> None:
    """Minute sample + LEAN minute bars -> intraday asset group -> table and tear sheets."""
    from fbt_pipelines.catalog import market_spec
    from fbt_pipelines.ingest.files import bar_sources
    from fbt_pipelines.marketdata.sample_minutes import write_minute_sample

    t0 = time.perf_counter()
    console.print(f"[bold]fbt demo-intraday[/bold]  FBT_HOME={paths().home}")
    _ensure_redis()
    folder = paths().landing / DEMO_ROOT / "1m"  # the intraday_raw_bars asset ingests this folder
    if regenerate or not any(folder.glob("*.csv")):
        with console.status(f"generating {DEMO_ROOT} minute bars {start:%Y-%m-%d} .. {end:%Y-%m-%d}"):
            sample = write_minute_sample(folder, market_spec(DEMO_ROOT), start.date(), end.date(), seed)
        console.print(f"[green]sample minutes[/green]: {len(sample.bars)} contract files, {sample.rows:,} bars "
                      f"in {folder} ({time.perf_counter() - t0:.1f} s)")
    lean = lean_dir or bundled_lean_minutes()
    if lean is not None:
        copied = [shutil.copy2(p, folder / p.name) for p in bar_sources(lean, companions=True)
                  if not (folder / p.name).exists() or (folder / p.name).read_bytes() != p.read_bytes()]
        console.print(f"[green]LEAN minute files[/green] from {lean}: {len(copied)} copied to {folder}")
    # one series per window: the generated year and each LEAN window (the market's 1m bars hold both)
    windows = [(f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}")] + (LEAN_WINDOWS if lean is not None else [])
    keys = _materialize_intraday(windows)
    _print_intraday(keys)
    console.print(f"tear sheets: {paths().reports / 'intraday'}")
    console.print(f"demo-intraday finished in {time.perf_counter() - t0:.0f} s")


def _materialize_intraday(windows: list[tuple[str, str]]) -> list[str]:
    """Run the ``intraday_market`` job for ES once per window; the series keys, in order."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from fbt_pipelines.location.instance import ensure_dagster_home

    home = ensure_dagster_home()
    from dagster import DagsterInstance

    from fbt_pipelines.location.intraday import INTRADAY_JOB, intraday_run_config
    from fbt_pipelines.location.pipeline_runner import PipelineFailed, run_job
    from fbt_pipelines.usecases.intraday import parse_day, series_key

    keys = []
    with DagsterInstance.get() as instance, Progress(
        TextColumn("[bold blue]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console,
    ) as progress:
        task = progress.add_task("materializing", total=len(windows))
        for lo, hi in windows:
            key = series_key(DEMO_ROOT, "1m", parse_day(lo, "start"), parse_day(hi, "end"))
            progress.update(task, description=f"{INTRADAY_JOB} [{key}]")
            try:
                run_job(instance, INTRADAY_JOB, DEMO_ROOT, run_config=intraday_run_config("1m", lo, hi))
            except PipelineFailed as exc:
                progress.stop()
                console.print(f"[red]failed[/red]: {escape(str(exc))}")
                raise SystemExit(1) from None
            keys.append(key)
            progress.advance(task)
    console.print(f"[green]materialized[/green] {len(keys)} intraday runs in the Dagster instance at {home}")
    return keys


def _print_intraday(keys: list[str]) -> None:
    from fbt_pipelines.cli.data import connect_warehouse
    from fbt_pipelines.services import warehouse as wh
    from fbt_pipelines.usecases.intraday_portfolio import ALL_MARKETS, portfolio_line

    table = Table(title="Intraday backtests per series: net P&L (USD, after costs, 1 contract), Sharpe (per bar, "
                        "x sqrt(bars per session x 252)), trades, rolls")
    for col in ["series", "strategy", "bars", "net P&L USD", "Sharpe", "trades", "rolls"]:
        table.add_column(col, justify="left" if col in ("series", "strategy") else "right")
    with connect_warehouse(read_only=True) as conn:
        for key in keys:
            for r in wh.read_partition(conn, "intraday_backtest_runs", key, order_by=["strategy"]).to_dict("records"):
                table.add_row(key, r["strategy"], f"{int(r['bars']):,}", f"{r['net_pnl']:,.0f}",
                              f"{r['sharpe']:.2f}", f"{r['trades']:.0f}", f"{r['rolls']:.0f}")
        # the intraday_portfolio of the first window (every market's series of that window, summed per session)
        book = (wh.read_partition(conn, "intraday_portfolio_equity", ALL_MARKETS + keys[0][keys[0].index("|"):],
                                  order_by=["session"]) if keys else None)
    console.print(table)
    if book is not None and len(book):
        console.print(portfolio_line(book))


def intraday_backtest(spec, root: str, interval: str, start: dt.datetime | None, end: dt.datetime | None, *,
                      as_json: bool, no_costs: bool) -> None:
    """``fbt backtest --interval 1m|1h``: one spec on the market's intraday series.

    The series stored by the intraday assets for ``ROOT|interval`` (with
    ``--start/--end``: that window of trading days), else built in memory
    from the stored bars by the same use case. A fixed size (``--contracts``,
    default 1). One MLflow run; rows in ``adhoc_backtest_*`` like a daily run,
    the equity per session close (``fbt report RUN_ID`` works on it).
    """
    import json
    import os
    import uuid
    from dataclasses import replace

    from fbt_pipelines.cli.data import connect_warehouse
    from fbt_pipelines.config import code_version
    from fbt_pipelines.engine.futures_engine import BacktestResult
    from fbt_pipelines.errors import FbtError
    from fbt_pipelines.services.tracking import Tracking
    from fbt_pipelines.usecases import intraday as uc
    from fbt_pipelines.usecases.backtest import backtest_row, store_adhoc_backtest
    from fbt_pipelines.usecases.continuous import market_contracts, roll_rule_for

    workspace = workspace_here()
    market = workspace.market(root)
    lo, hi = (start.date() if start else None), (end.date() if end else None)
    key = uc.series_key(root, interval, lo, hi)
    if spec.orders.contracts is None:  # vol targeting sizes on daily volatility
        spec = replace(spec, orders=replace(spec.orders, contracts=1))
    conn = connect_warehouse()
    try:
        try:
            prices = uc.read_intraday_prices(conn, key)
            source = "stored"
            if prices.empty:
                bars = uc.read_intraday_bars(conn, root, interval, lo, hi)
                sb = uc.sessioned_bars(bars, market, lo, hi)
                contracts = market_contracts(conn, market, bars)
                rolls = uc.intraday_roll_schedule(sb, contracts, roll_rule_for(market), key, interval)
                prices = uc.intraday_continuous(sb, rolls.schedule, rolls.start_contract, contracts, key,
                                                interval).prices.drop(columns="series")
                source = "built from the stored bars"
            bt = uc.backtest_intraday(spec, uc.intraday_market_data(root, workspace, prices), interval)
        except FbtError as exc:
            raise click.ClickException(str(exc)) from None
        tracking = Tracking(os.environ.get("MLFLOW_TRACKING_URI") or paths().mlflow_tracking_uri,
                            paths().mlflow_artifacts)
        run_id = uc.track_intraday_backtest(tracking, bt, market, key, interval, code_version=code_version(),
                                            source="fbt backtest") or f"local-{uuid.uuid4().hex}"
        closes = uc.session_closes(bt.result.bars, market)
        stored = replace(bt, summary={k: v for k, v in bt.summary.items()
                                      if k not in ("bars_per_session", "periods_per_year")},
                         result=BacktestResult(bars=closes, trades=bt.result.trades,
                                               initial_capital=bt.result.initial_capital))
        store_adhoc_backtest(conn, run_id, backtest_row(stored, code_version=code_version(), mlflow_run_id=run_id),
                             stored)
    finally:
        conn.close()
    s = bt.summary
    out = {"run_id": run_id, "strategy": bt.strategy, "market": root, "series": key, "interval": interval,
           "source": source, "params": bt.params, "contracts": spec.orders.contracts, "no_costs": no_costs,
           "bars": len(bt.result.equity), "sessions": len(closes), "total_pnl": round(float(s["net_pnl"]), 2),
           "sharpe": s["sharpe"], "periods_per_year": s["periods_per_year"], "max_drawdown": s["max_drawdown"],
           "n_trades": int(s["trades"]), "rolls": int(s["rolls"])}
    if as_json:
        click.echo(json.dumps({k: (None if isinstance(v, float) and v != v else v) for k, v in out.items()}))
        return
    console.print(f"[bold]{bt.strategy}[/bold] on {key} ({out['bars']:,} bars, {out['sessions']:,} sessions, "
                  f"series {source}): net P&L {out['total_pnl']:,.2f} USD, Sharpe {out['sharpe']:.2f} (per bar, "
                  f"x sqrt({out['periods_per_year']:,.0f})), {out['n_trades']} trades, {out['rolls']} rolls")
    console.print(f"report: fbt report {run_id}")
