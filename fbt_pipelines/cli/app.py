"""The ``fbt`` command group and its pipeline commands (demo, sample-data, summary, ui, submit)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fbt_pipelines.config import paths, redis_url

console = Console(width=None if sys.stdout.isatty() else 140)
# MLflow announces schema migrations and registrations at INFO; the CLI shows its own progress
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
logging.getLogger("mlflow").setLevel(logging.WARNING)

CORE_TABLES = ["bars", "roll_schedule", "continuous_prices", "features", "predictions",
               "backtest_runs", "backtest_equity", "backtest_trades", "portfolio_equity", "risk_report"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """fbt: futures backtesting on Dagster.

    \b
    Examples:
      fbt demo                 # sample data -> whole asset graph -> summary
      fbt sample-data --markets ES,CL --start 2015-01-02
      fbt ingest path/to/files # csv, parquet or LEAN zips into the warehouse
      fbt contracts ES --from 2024 --to 2025 --json
      fbt summary              # what the warehouse holds now
      fbt ui                   # Dagster UI on :3000 and MLflow UI on :5000

    Exit codes: 0 success, 1 the work failed (message says why), 2 bad usage.
    """


def parse_params(items: tuple[str, ...]) -> dict[str, float]:
    """``--param NAME=VALUE`` options as numbers (the strategy validates names and types)."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: the value must be a number", param_hint="--param") from None
    return out


def _markets_option(value: str | None) -> list[str]:
    from fbt_pipelines.catalog import load_catalog
    from fbt_pipelines.marketdata.sample_data import DEFAULT_MARKETS

    if not value:
        return list(DEFAULT_MARKETS)
    roots = [m.strip().upper() for m in value.split(",") if m.strip()]
    unknown = [m for m in roots if m not in load_catalog()]
    if unknown:
        raise click.BadParameter(f"unknown market(s) {unknown}; known: {', '.join(load_catalog())}")
    return roots


def _write_sample(markets: list[str], start: dt.date, end: dt.date, seed: int) -> None:
    from fbt_pipelines.catalog import market_spec
    from fbt_pipelines.marketdata.sample_data import write_sample_data

    t0 = time.perf_counter()
    with console.status(f"generating sample bars for {', '.join(markets)} ({start} .. {end})"):
        summary = write_sample_data(paths().landing, [market_spec(m) for m in markets], start, end, seed)
    console.print(f"[green]sample data[/green]: {sum(summary.files.values())} contract files, "
                  f"{summary.total_rows:,} bars in {paths().landing} ({time.perf_counter() - t0:.1f} s)")


@main.command("sample-data")
@click.option("--markets", help="Comma-separated roots (default ES,NQ,CL,GC,ZN,6E).")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), default="2012-01-03", show_default=True)
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), default="2024-12-31", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def sample_data(markets: str | None, start: dt.datetime, end: dt.datetime, seed: int) -> None:
    """Write deterministic per-contract daily bars into $FBT_HOME/landing/<ROOT>/."""
    _write_sample(_markets_option(markets), start.date(), end.date(), seed)


def _ensure_redis() -> None:
    from fbt_pipelines.local_services import ensure_redis

    from fbt_pipelines.stores.bus import redact_url

    url, state = ensure_redis(redis_url(), paths().redis_dir)
    url = redact_url(url)  # never print the password
    if state == "found":
        console.print(f"[green]redis[/green]: using {url}")
    elif state == "started":
        console.print(f"[green]redis[/green]: started a local redis-server at {url} (data in {paths().redis_dir})")
    else:
        console.print(f"[yellow]warning[/yellow]: Redis at {url} is unreachable and no redis-server to start; "
                      "the graph runs without cache and events")


@main.command()
@click.option("--markets", help="Comma-separated roots (default: the sample markets).")
@click.option("--regenerate", is_flag=True, help="Rewrite the sample data even if present.")
def demo(markets: str | None, regenerate: bool) -> None:
    """Sample data (if missing) -> materialize the whole asset graph -> summary."""
    from fbt_pipelines.marketdata.sample_data import DEFAULT_END, DEFAULT_START

    roots = _markets_option(markets)
    t0 = time.perf_counter()
    console.print(f"[bold]fbt demo[/bold]  FBT_HOME={paths().home}")
    _ensure_redis()
    missing = [m for m in roots if not any((paths().landing / m).glob("*.csv"))]
    if regenerate or missing:
        _write_sample(roots if regenerate else missing, DEFAULT_START, DEFAULT_END, 0)
    _materialize(roots)
    _print_summary()
    _print_next_steps()
    console.print(f"demo finished in {time.perf_counter() - t0:.0f} s")


def _materialize(roots: list[str]) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from fbt_pipelines.instance import ensure_dagster_home

    home = ensure_dagster_home()
    from dagster import DagsterInstance

    from fbt_pipelines.pipeline_runner import PipelineFailed, pipeline_steps, run_pipeline

    steps = pipeline_steps(roots)
    with DagsterInstance.get() as instance, Progress(
        TextColumn("[bold blue]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console,
    ) as progress:
        task = progress.add_task("materializing", total=len(steps))

        def on_step(job: str, partition: str | None) -> None:
            progress.update(task, description=f"{job}" + (f" [{partition}]" if partition else ""))

        try:
            run_pipeline(instance, roots, on_step=on_step, on_done=lambda s: progress.advance(task))
        except PipelineFailed as exc:
            progress.stop()
            console.print(f"[red]failed[/red]: {escape(str(exc))}")
            raise SystemExit(1) from None
    console.print(f"[green]materialized[/green] {len(steps)} runs in the Dagster instance at {home}")


def _print_summary() -> None:
    from fbt_pipelines.cli.data import connect_warehouse
    from fbt_pipelines.stores.summary import market_summary, portfolio_summary

    with connect_warehouse(read_only=True) as conn:
        markets = market_summary(conn)
        port = portfolio_summary(conn)
    strategies = sorted({c.removesuffix("_net_pnl") for c in markets.columns if c.endswith("_net_pnl")})
    table = Table(title="Per market: data, rolls and each strategy's Sharpe / net P&L (USD, after costs, "
                        "vol-targeted; ruined = equity hit zero)")
    for col in ["market", "bars", "contracts", "rolls", "from", "to", *strategies]:
        table.add_column(col, justify="right" if col not in ("market", "from", "to") else "left")
    for r in markets.to_dict("records"):
        cells = [("[red]ruined[/red]" if r.get(f"{st}_ruined") == 1.0 else f"{r.get(f'{st}_sharpe', float('nan')):.2f}")
                 + f"/{r.get(f'{st}_net_pnl', float('nan')) / 1e3:,.0f}k" for st in strategies]
        table.add_row(r["root"], f"{r['bars']:,}", str(r["contracts"]), str(int(r.get("rolls") or 0)), r["first"],
                      r["last"], *cells)
    console.print(table)
    if port is not None:
        console.print(
            f"[bold]Portfolio[/bold] ({len(markets)} markets, SMA crossover, vol target): "
            f"CAGR {port['cagr']:.2%}, vol {port['annual_vol']:.2%}, Sharpe {port['sharpe']:.2f}, "
            f"Sortino {port['sortino']:.2f}, max DD {port['max_drawdown']:.2%}, "
            f"VaR99 {port['var_99']:.2%}, CVaR99 {port['cvar_99']:.2%}"
        )


def _print_next_steps() -> None:
    p = paths()
    console.print("\n[bold]Next[/bold]")
    console.print(f"  tear sheet : {p.reports / 'tear_sheet.html'}")
    console.print("  Dagster UI : make ui   (or: DAGSTER_HOME=" + str(p.dagster_home) +
                  " .venv/bin/dagster-webserver -w workspace.yaml -p 3000)")
    console.print("  MLflow UI  : make ui   (or: .venv/bin/mlflow ui --backend-store-uri " + p.mlflow_tracking_uri +
                  " -p 5000), runs at http://127.0.0.1:5000/#/experiments")


@main.command()
def summary() -> None:
    """Print the per-market and portfolio summary from the warehouse."""
    if not paths().warehouse.exists():
        raise click.ClickException(f"no warehouse at {paths().warehouse}: run `fbt demo` first")
    _print_summary()


def ui_commands(dagster_port: int, mlflow_port: int) -> list[list[str]]:
    """The Dagster webserver and MLflow UI command lines; both bind 127.0.0.1 only."""
    from fbt_pipelines.config import REPO_ROOT

    bindir = Path(sys.executable).parent
    return [[str(bindir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(dagster_port),
             "-w", str(REPO_ROOT / "workspace.yaml")],
            [str(bindir / "mlflow"), "ui", "--backend-store-uri", paths().mlflow_tracking_uri,
             "--host", "127.0.0.1", "--port", str(mlflow_port)]]


def daemon_command() -> list[str]:
    """``dagster-daemon run`` on the code location: launches queued runs, ticks schedules and sensors."""
    from fbt_pipelines.config import REPO_ROOT

    return [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(REPO_ROOT / "workspace.yaml")]


@main.command()
@click.option("--dagster-port", default=3000, show_default=True)
@click.option("--mlflow-port", default=5000, show_default=True)
@click.option("--daemon/--no-daemon", default=True, show_default=True,
              help="Also run dagster-daemon (queued runs launch, schedules and sensors tick only with it).")
def ui(dagster_port: int, mlflow_port: int, daemon: bool) -> None:
    """Start the Dagster UI, the MLflow UI and dagster-daemon (Ctrl-C stops all)."""
    from fbt_pipelines.config import REPO_ROOT
    from fbt_pipelines.instance import ensure_dagster_home

    ensure_dagster_home()
    dagster_cmd, mlflow_cmd = ui_commands(dagster_port, mlflow_port)
    procs = [subprocess.Popen(dagster_cmd, cwd=REPO_ROOT, env=os.environ.copy()),
             subprocess.Popen(mlflow_cmd, cwd=paths().home)]
    if daemon:
        procs.append(subprocess.Popen(daemon_command(), cwd=REPO_ROOT, env=os.environ.copy()))
    console.print(f"Dagster UI: http://127.0.0.1:{dagster_port}   MLflow UI: http://127.0.0.1:{mlflow_port}/#/experiments")
    try:
        for proc in procs:
            proc.wait()
    except KeyboardInterrupt:
        for proc in procs:
            proc.terminate()


@main.command("submit")
@click.option("--market", required=True, help="Market root, e.g. ES.")
@click.option("--strategy", default="sma_crossover", show_default=True)
@click.option("--param", "params", multiple=True, help="NAME=VALUE, repeatable (e.g. --param fast=10).")
@click.option("--wait", is_flag=True, help="Block until the run reports its result (or a rejection).")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait with --wait.")
def submit(market: str, strategy: str, params: tuple[str, ...], wait: bool, timeout: float) -> None:
    """Queue a backtest request on Redis; Dagster's backtest_request_sensor launches it.

    \b
    The request id is the run key, so a request is never run twice. With
    --wait, prints the result JSON when the run announces it (needs
    `dagster-daemon` running with the sensor on).
    \b
    Example:
      fbt submit --market ES --strategy ewmac --param fast=32 --wait
    """
    import json as _json

    from fbt_pipelines.engine.strategies import validate_params
    from fbt_pipelines.errors import FbtError
    from fbt_pipelines.stores.bus import Bus

    parsed = parse_params(params)
    bus = Bus(redis_url())
    try:
        validate_params(strategy, parsed)
        cursor = bus.events_cursor() if wait else None
        request_id = bus.submit_request({"market": _markets_option(market)[0], "strategy": strategy,
                                         "params": parsed})
        console.print(f"queued request {request_id}")
        if wait:
            event = bus.wait_for_event(request_id, cursor, timeout)
            if event is None:
                raise click.ClickException(f"no result for request {request_id} within {timeout:.0f} s "
                                           "(is dagster-daemon running with backtest_request_sensor on?)")
            click.echo(_json.dumps(event, indent=2, default=str))
            if event["type"] == "request_rejected":
                raise SystemExit(1)
    except FbtError as exc:
        raise click.ClickException(str(exc)) from None
