"""The ``fbt`` command group and its pipeline commands.

The pipeline commands: demo, sample-data, summary, ui, submit.
"""

from __future__ import annotations

import datetime as dt
import difflib
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


def workspace_here():
    """The trader's workspace under ``FBT_HOME`` (markets, strategies, margin histories)."""
    from fbt_pipelines.usecases.workspace import Workspace

    return Workspace(paths().home)


class MarketRoot(click.ParamType):
    """The CLI's one market-root option type: ``es`` -> ``ES``, checked in the catalogue.

    The trader's catalogue: built-in markets plus ``$FBT_HOME/markets.toml``.
    ``many=True`` takes a comma list (empty: the sample markets).
    """

    name = "ROOT"

    def __init__(self, many: bool = False) -> None:
        self.many = many

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        from fbt_pipelines.marketdata.sample_data import DEFAULT_MARKETS

        if self.many and not value:
            return list(DEFAULT_MARKETS)
        roots = [m.strip().upper() for m in str(value).split(",") if m.strip()] if self.many else [value.strip().upper()]
        known = workspace_here().catalog()
        unknown = [m for m in roots if m not in known]
        if unknown:  # bad usage: exit 2 (click's BadParameter), with the closest names
            hints = "; ".join(f"{m!r}: {did_you_mean(m, known)}" for m in unknown)
            listed = ", ".join(known)
            self.fail(f"unknown market{'s' if len(unknown) > 1 else ''} {hints} (known: {listed}; "
                      f"see `fbt markets`)", param, ctx)
        return roots if self.many else roots[0]


def _edit_distance(a: str, b: str) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) from ``a`` to ``b``."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def close_names(name: str, known) -> list[str]:
    """Up to three names of ``known`` close to ``name``, closest first (case-blind).

    Those within ``max(1, len(name) // 3)`` edits (a typo, a swapped pair;
    ``EZ`` -> ``ES``), then difflib's close matches (a prefix: ``ewmac`` ->
    ``ewmac_multi``).
    """
    names = [str(k) for k in known]
    low = name.lower()
    dist = {k: _edit_distance(low, k.lower()) for k in names}
    near = sorted((k for k in names if dist[k] <= max(1, len(name) // 3)),
                  key=lambda k: (dist[k], -difflib.SequenceMatcher(None, low, k.lower()).ratio(), k))
    lowered = {k.lower(): k for k in names}
    near += [lowered[m] for m in difflib.get_close_matches(low, list(lowered), n=3, cutoff=0.6)]
    return list(dict.fromkeys(near))[:3]


def did_you_mean(name: str, known) -> str:
    """``did you mean 'ES'?`` (see :func:`close_names`), or ``no close match``."""
    close = close_names(name, known)
    if not close:
        return "no close match"
    return "did you mean " + " or ".join(repr(c) for c in close) + "?"


def check_strategy_names(strategy: str, params: dict, library: dict) -> None:
    """Exit 2 (bad usage) with a "did you mean" for an unknown strategy or parameter name.

    ``library``: name -> template (``Workspace.strategies()``); the values and
    types of known parameters are left to the strategy's own validation.
    """
    if strategy not in library:
        raise click.BadParameter(f"unknown strategy {strategy!r}: {did_you_mean(strategy, library)} "
                                 f"(known: {', '.join(sorted(library))}; see `fbt strategies`)",
                                 param_hint="--strategy")
    defaults = library[strategy].defaults
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        hints = "; ".join(f"{p!r}: {did_you_mean(p, defaults)}" for p in unknown)
        raise click.BadParameter(f"{strategy}: unknown parameter(s) {unknown}: {hints} (known: {sorted(defaults)})",
                                 param_hint="--param")


MARKET = MarketRoot()
MARKETS = MarketRoot(many=True)


def _write_sample(markets: list[str], start: dt.date, end: dt.date, seed: int) -> None:
    from fbt_pipelines.usecases.market_data import write_sample_bars

    t0 = time.perf_counter()
    with console.status(f"generating sample bars for {', '.join(markets)} ({start} .. {end})"):
        summary = write_sample_bars(paths().landing, workspace_here(), markets, start, end, seed)
    console.print(f"[green]sample data[/green]: {sum(summary.files.values())} contract files, "
                  f"{summary.total_rows:,} bars in {paths().landing} ({time.perf_counter() - t0:.1f} s)")


@main.command("sample-data")
@click.option("--markets", type=MARKETS, default="", help="Comma-separated roots (default ES,NQ,CL,GC,ZN,6E).")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), default="2012-01-03", show_default=True)
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), default="2024-12-31", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def sample_data(markets: list[str], start: dt.datetime, end: dt.datetime, seed: int) -> None:
    """Write deterministic per-contract daily bars into $FBT_HOME/landing/<ROOT>/."""
    _write_sample(markets, start.date(), end.date(), seed)


def _ensure_redis() -> None:
    from fbt_pipelines.services.local import ensure_redis

    from fbt_pipelines.services.bus import redact_url

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
@click.option("--markets", type=MARKETS, default="", help="Comma-separated roots (default: the sample markets).")
@click.option("--regenerate", is_flag=True, help="Rewrite the sample data even if present.")
def demo(markets: list[str], regenerate: bool) -> None:
    """Sample data (if missing) -> materialize the whole asset graph -> summary."""
    from fbt_pipelines.marketdata.sample_data import DEFAULT_END, DEFAULT_START

    roots = markets
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

    from fbt_pipelines.location.instance import ensure_dagster_home

    home = ensure_dagster_home()
    from dagster import DagsterInstance

    from fbt_pipelines.location.pipeline_runner import PipelineFailed, pipeline_steps, run_pipeline

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
    from fbt_pipelines.services import warehouse as wh
    from fbt_pipelines.services.summary import market_summary, portfolio_summary

    with connect_warehouse(read_only=True) as conn:
        markets = market_summary(conn)
        port = portfolio_summary(conn)
        runs = wh.read_table(conn, "backtest_runs") if wh.table_exists(conn, "backtest_runs") else None
    calls = ({(r["root"], r["strategy"]): r for r in runs.to_dict("records")}
             if runs is not None and "margin_calls" in runs else {})
    strategies = sorted({c.removesuffix("_net_pnl") for c in markets.columns if c.endswith("_net_pnl")})
    table = Table(title="Per market: data, rolls and each strategy's Sharpe / net P&L (USD, after costs, "
                        "vol-targeted) / margin calls (stopped = equity reached zero: the account stopped)")
    for col in ["market", "bars", "contracts", "rolls", "years", *strategies]:
        table.add_column(col, justify="right" if col not in ("market", "years") else "left", overflow="fold")

    def margin_cell(root: str, strategy: str) -> str:
        run = calls.get((root, strategy))
        if run is None:
            return ""
        n = int(run["margin_calls"])
        stopped = run.get("account_stopped") == 1.0
        text = f"/{n}" + (" [red]stopped[/red]" if stopped else "")
        return f"[yellow]{text}[/yellow]" if n and not stopped else text

    for r in markets.to_dict("records"):
        cells = [f"{r.get(f'{st}_sharpe', float('nan')):.2f}" + f"/{r.get(f'{st}_net_pnl', float('nan')) / 1e3:,.0f}k"
                 + margin_cell(r["root"], st) for st in strategies]
        table.add_row(r["root"], f"{r['bars']:,}", str(r["contracts"]), str(int(r.get("rolls") or 0)),
                      f"{r['first'][:4]}-{r['last'][:4]}", *cells)
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
    """``dagster-daemon run`` on the code location.

    The daemon launches queued runs and ticks schedules and sensors.
    """
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
    from fbt_pipelines.location.instance import ensure_instance_storage

    ensure_instance_storage()  # the webserver and the daemon would race to create the SQLite tables
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
@click.option("--market", type=MARKET, required=True, help="Market root, e.g. ES.")
@click.option("--strategy", default="sma_crossover", show_default=True)
@click.option("--param", "params", multiple=True, help="NAME=VALUE, repeatable (e.g. --param fast=10).")
@click.option("--wait", is_flag=True, help="Block until the run reports its result (or a rejection).")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait with --wait.")
def submit(market: str, strategy: str, params: tuple[str, ...], wait: bool, timeout: float) -> None:
    """Queue a backtest request on Redis; Dagster's backtest_request_sensor launches it.

    \b
    The sensor backtests the requests of a tick in one batch run; a request
    id sent again is refused as a duplicate, so a request never runs twice.
    With --wait, prints the result JSON when the batch announces it (needs
    `dagster-daemon` running with the sensor on).
    \b
    Example:
      fbt submit --market ES --strategy ewmac --param fast=32 --wait
    """
    import json as _json

    from fbt_pipelines.errors import FbtError
    from fbt_pipelines.services.bus import Bus
    from fbt_pipelines.usecases.spec import BacktestSpec

    parsed = parse_params(params)
    check_strategy_names(strategy, parsed, workspace_here().strategies())  # exit 2 with a "did you mean"
    bus = Bus(redis_url())
    try:
        BacktestSpec.create(strategy, parsed, library=workspace_here().strategies())  # refused here, not in the queue
        cursor = bus.events_cursor() if wait else None
        request_id = bus.submit_request({"market": market, "strategy": strategy,
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
