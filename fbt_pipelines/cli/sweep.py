"""``fbt sweep``: a parameter grid on many markets from the terminal.

The grid syntax (:func:`parse_grid`) is plain Python; the command reads each
market's continuous series, sweeps it with the use case's ``run_sweep``
(the same results as ``fbt backtest`` per set) and stores it as the
``parameter_sweep`` asset does (``store_sweep``: ``sweep_results``,
``walk_forward_equity``, an MLflow parent run, a tear sheet). With
``--interval 1m|1h`` it sweeps the intraday series ``ROOT|interval``
(:mod:`fbt_pipelines.usecases.intraday_sweep`: a fixed size, Sharpe per bar,
walk-forward windows in sessions) and stores it as ``intraday_parameter_sweep``
does (``intraday_sweep_results``, ``intraday_walk_forward_equity``).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import click
import pandas as pd
from rich.markup import escape
from rich.table import Table

from fbt_pipelines.cli.app import MARKETS, check_strategy_names, console, did_you_mean, main, workspace_here
from fbt_pipelines.cli.data import connect_warehouse
from fbt_pipelines.config import paths
from fbt_pipelines.errors import FbtError

MAX_GRID_VALUES = 100_000  # values of one --grid item: a typo'd step (1:1000000:1) is refused, not swept
MAX_CHILD_RUNS = 200  # default --mlflow-children: above it the parent run keeps the whole table as a CSV
DISTANCE_KEYS = ("stop_loss", "take_profit", "trailing_stop", "limit_offset")  # values may be text: 2%, 3atr
_INT = re.compile(r"[+-]?\d+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

GridValue = int | float | str


class GridError(ValueError):
    """A ``--grid`` item that cannot be read; the message names the item."""


def _number(token: str, item: str) -> Decimal:
    try:
        value = Decimal(token.strip())
    except InvalidOperation:
        raise GridError(f"{item!r}: {token.strip()!r} is not a number") from None
    if not value.is_finite():
        raise GridError(f"{item!r}: {token.strip()!r} is not a finite number")
    return value


def _as_value(value: Decimal, integral: bool) -> int | float:
    return int(value) if integral else float(value)


def grid_range(start: str, stop: str, step: str, item: str = "") -> list[int | float]:
    """``start:stop:step`` with ``stop`` included when the steps reach it.

    Computed in decimal arithmetic by an integer count (``start + i * step``),
    so ``0.5:0.6:0.05`` is exactly ``[0.5, 0.55, 0.6]`` (no float drift
    dropping or overshooting the stop). Integers when all three are written
    as integers, else floats. Raises :class:`GridError` naming ``item``.
    """
    item = item or f"{start}:{stop}:{step}"
    lo, hi, dx = _number(start, item), _number(stop, item), _number(step, item)
    if dx <= 0:
        raise GridError(f"{item!r}: the step must be > 0")
    if lo > hi:
        raise GridError(f"{item!r}: start {start.strip()} is above stop {stop.strip()}")
    count = int((hi - lo) // dx) + 1
    if count > MAX_GRID_VALUES:
        raise GridError(f"{item!r}: {count:,} values (at most {MAX_GRID_VALUES:,} per parameter)")
    integral = all(_INT.fullmatch(t.strip()) for t in (start, stop, step))
    return [_as_value(lo + i * dx, integral) for i in range(count)]


def parse_grid(items: Sequence[str], text_keys: Collection[str] = DISTANCE_KEYS) -> dict[str, list[GridValue]]:
    """``--grid`` items (``NAME=START:STOP:STEP`` or ``NAME=V1,V2,...``) as name -> values.

    A range includes its stop (see :func:`grid_range`); a comma list keeps
    its order, integers as ``int``, other numbers as ``float``; names in
    ``text_keys`` (order distances) may also take text such as ``2%`` or
    ``3atr`` (the order settings check it). Units are the parameter's own
    (bars for windows, points for distances). Raises :class:`GridError`
    naming the bad item: no ``=``, an empty name or value, a name given
    twice, a non-number, a repeated value, a bad range.
    """
    grid: dict[str, list[GridValue]] = {}
    for item in items:
        name, sep, spec = item.partition("=")
        name, spec = name.strip(), spec.strip()
        if not sep or not name or not spec:
            raise GridError(f"{item!r} is not NAME=START:STOP:STEP or NAME=V1,V2,...")
        if not _NAME.fullmatch(name):
            raise GridError(f"{item!r}: {name!r} is not a parameter name")
        if name in grid:
            raise GridError(f"{item!r}: {name} is given twice")
        if ":" in spec:
            parts = spec.split(":")
            if len(parts) != 3:
                raise GridError(f"{item!r}: a range is START:STOP:STEP (three numbers)")
            grid[name] = list(grid_range(*parts, item=item))
            continue
        values: list[GridValue] = []
        for token in (t.strip() for t in spec.split(",")):
            if not token:
                raise GridError(f"{item!r}: an empty value in the list")
            if _INT.fullmatch(token):
                value: GridValue = int(token)
            elif name in text_keys and not _looks_numeric(token):
                value = token
            else:
                value = _as_value(_number(token, item), False)
            if value in values:
                raise GridError(f"{item!r}: {token} is repeated")
            values.append(value)
        grid[name] = values
    return grid


def _looks_numeric(token: str) -> bool:
    try:
        Decimal(token)
        return True
    except InvalidOperation:
        return False


class SweepTracker:
    """The tracker ``store_sweep`` is given: best effort, children up to a size.

    Up to ``max_children`` sets: the MLflow parent run with a nested child
    per set (``Tracking.log_sweep``); above it: the parent run alone, with
    the whole sweep table as the artifact ``sweep_results.csv`` (thousands of
    child runs cost minutes in MLflow). An MLflow failure never fails the
    sweep: the parent id is then "" and :attr:`failure` says why.
    """

    def __init__(self, tracking, max_children: int) -> None:
        self.tracking = tracking
        self.max_children = max_children

    @property
    def failure(self) -> str | None:
        return self.tracking.failure

    def log_sweep(self, run_name: str, params: Mapping[str, Any], table: pd.DataFrame,
                  tags: Mapping[str, str], **extra: Any) -> str:
        """A parent run (children when the sweep is small); its id, "" when MLflow failed."""
        from fbt_pipelines.services.tracking import SWEEP_EXPERIMENT

        if len(table) <= self.max_children:
            return self.tracking.try_log_sweep(run_name, params, table, tags, **extra) or ""
        best = table.sort_values("sharpe", ascending=False).iloc[0]
        return self.tracking.try_log_backtest(
            run_name, {**params, "child_runs": f"none: {len(table)} sets > {self.max_children}"},
            {"best_sharpe": float(best["sharpe"]), "sets": float(len(table))},
            {**tags, "best_params": str(best["params"])}, tables={"sweep_results": table},
            experiment=SWEEP_EXPERIMENT) or ""


@dataclass
class MarketSweep:
    """One market's sweep as the command reports it (times in seconds)."""

    root: str
    sweep: Any  # SweepResult
    compute_s: float
    stored: Any = None  # StoredSweep


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)]


def _sweep_market(base, data, sets: list[dict], workers: int, chunk: int, on_chunk, run=None) -> tuple[Any, float]:
    """``run_sweep`` over ``sets`` in slices; returns the result and its compute time (s).

    Slices of ``chunk`` sets are the progress bar's steps; their results are
    stitched back into one, numbered 0..n-1 in the order of ``sets``.
    ``run(base, data, sets, workers=...)`` replaces ``run_sweep`` (the
    intraday sweep).
    """
    from fbt_pipelines.usecases.sweep import SweepResult, run_sweep

    run = run or run_sweep
    tables, pnls = [], []
    spent = 0.0
    for lo, hi in _chunks(len(sets), chunk):
        t0 = time.perf_counter()
        part = run(base, data, sets[lo:hi], workers=workers)
        spent += time.perf_counter() - t0
        tables.append(part.table.assign(set=part.table["set"] + lo))
        pnls.append(part.pnl.set_axis(part.pnl.columns + lo, axis=1))
        on_chunk(hi - lo)
    t0 = time.perf_counter()
    if len(tables) == 1:
        result = SweepResult(tables[0], pnls[0])
    else:
        result = SweepResult(pd.concat(tables, ignore_index=True), pd.concat(pnls, axis=1))
    return result, spent + time.perf_counter() - t0


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _read_markets(roots: list[str], workspace, interval: str) -> dict[str, Any]:
    """Each root's continuous series (exit 1 naming a market the warehouse lacks)."""
    from fbt_pipelines.usecases.backtest import market_data, read_market_data

    if not paths().warehouse.exists():
        raise click.ClickException(f"no warehouse at {paths().warehouse}: run `fbt demo` first")
    out = {}
    conn = connect_warehouse()
    try:
        for root in roots:
            try:
                data = read_market_data(conn, root, workspace)
            except FbtError as exc:
                raise click.ClickException(str(exc)) from None
            held = (sorted(data.prices["interval"].dropna().unique()) if "interval" in data.prices else ["1d"])
            if interval not in held:
                raise click.ClickException(
                    f"no {interval} continuous prices for {root} in {paths().warehouse} (it holds "
                    f"{', '.join(held)}): sweep with --interval {held[0]}, or build the {interval} series first")
            if "interval" in data.prices and len(held) > 1:
                prices = data.prices[data.prices["interval"] == interval].reset_index(drop=True)
                data = market_data(root, workspace, prices, data.predictions, data.features)
            out[root] = data
    finally:
        conn.close()
    return out


def _read_intraday(roots: list[str], workspace, interval: str) -> dict[str, Any]:
    """Each root's intraday series ``ROOT|interval``; exit 1 naming a market without one.

    The stored series, else one built from the stored bars.
    """
    from fbt_pipelines.usecases.intraday_sweep import NoIntradayData, load_intraday_series

    if not paths().warehouse.exists():
        raise click.ClickException(f"no warehouse at {paths().warehouse}: run `fbt demo-intraday` first")
    out = {}
    conn = connect_warehouse()
    try:
        for root in roots:
            try:
                out[root] = load_intraday_series(conn, root, interval, workspace)
            except NoIntradayData as exc:
                raise click.ClickException(f"{exc} in {paths().warehouse}; the daily series: --interval 1d") from None
            except FbtError as exc:
                raise click.ClickException(f"{root} {interval}: {exc}") from None
    finally:
        conn.close()
    return out


def _check_session_span(key: str, sessions: int, train_sessions: int) -> None:
    """Exit 1 unless a series has more sessions than the walk-forward trains on."""
    if sessions <= train_sessions:
        hint = (f"use --train-sessions {max(2, sessions * 2 // 3)}" if sessions > 2
                else "it needs at least 3 sessions")
        raise click.ClickException(f"{key}: the walk-forward needs more than {train_sessions} sessions "
                                   f"({sessions} in the series); {hint}")


def _check_window_options(intraday: bool) -> None:
    """Exit 2 when walk-forward windows are given in the other unit.

    Daily windows count years, intraday ones (1m, 1h) sessions.
    """
    from click.core import ParameterSource

    ctx = click.get_current_context()
    given = {name for name in ("train_years", "test_years", "train_sessions", "test_sessions")
             if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE}
    wrong = sorted(given & ({"train_years", "test_years"} if intraday else {"train_sessions", "test_sessions"}))
    if wrong:
        flags = ", ".join("--" + w.replace("_", "-") for w in wrong)
        raise click.BadParameter(
            f"{flags}: intraday walk-forward windows count sessions (--train-sessions, --test-sessions)"
            if intraday else f"{flags}: daily walk-forward windows count years (--train-years, --test-years); "
            "sessions are for --interval 1m|1h", param_hint=flags)


def _check_walk_forward_span(root: str, ts: pd.Series, train_years: int) -> None:
    """Exit 1 unless ``ts`` spans a year after ``train_years`` calendar years (UTC).

    The first walk-forward window trains on the first ``train_years``
    calendar years and tests on the next; ``store_sweep`` refuses a sweep
    without one, so the command checks every market before storing any.
    """
    first, last = int(ts.iloc[0].year), int(ts.iloc[-1].year)
    if last < first + train_years:
        raise click.ClickException(
            f"{root}: the walk-forward needs more than {train_years} calendar years of data ({first}-{last}); "
            f"use --train-years {max(1, last - first)}" if last > first else
            f"{root}: the walk-forward needs data in more than one calendar year ({first}-{last})")


def _check_names(strategy: str, grid: Mapping[str, list], library) -> None:
    """Exit 2 with a "did you mean" for an unknown strategy or grid parameter.

    A grid name is a parameter of the strategy or an order setting
    (``stop_loss``, ``take_profit``, ``trailing_stop``, ``limit_offset``,
    ``contracts``); the hint looks among both.
    """
    from fbt_pipelines.usecases.spec import ORDER_OPTIONS

    check_strategy_names(strategy, {}, library)  # the strategy's name (exit 2, did you mean)
    known = [*library[strategy].defaults, *(o for o in ORDER_OPTIONS if o not in library[strategy].defaults)]
    unknown = sorted(set(grid) - set(known))
    if unknown:
        hints = "; ".join(f"{p!r}: {did_you_mean(p, known)}" for p in unknown)
        raise click.BadParameter(f"{strategy}: unknown parameter(s) {unknown}: {hints} (known: {', '.join(known)})",
                                 param_hint="--grid")


@main.command()
@click.option("--market", "markets", type=MARKETS, required=True, help="Comma-separated roots, e.g. ES,NQ.")
@click.option("--strategy", default="sma_crossover", show_default=True, help="A template from `fbt strategies`.")
@click.option("--grid", "grid_items", multiple=True, required=True, metavar="NAME=SPEC",
              help="NAME=START:STOP:STEP (stop included) or NAME=V1,V2,...; repeatable; every combination runs.")
@click.option("--walk-forward", is_flag=True,
              help="Also show each walk-forward window: the set chosen in-sample and its out-of-sample P&L.")
@click.option("--train-years", type=click.IntRange(min=1), default=3, show_default=True,
              help="Walk-forward in-sample window (years).")
@click.option("--test-years", type=click.IntRange(min=1), default=1, show_default=True,
              help="Walk-forward out-of-sample window (years).")
@click.option("--train-sessions", type=click.IntRange(min=2), default=63, show_default=True,
              help="Intraday (--interval 1m|1h) walk-forward in-sample window (sessions).")
@click.option("--test-sessions", type=click.IntRange(min=1), default=21, show_default=True,
              help="Intraday walk-forward out-of-sample window (sessions).")
@click.option("--interval", default="1d", show_default=True,
              help="Bar interval of the continuous series: 1d, or 1m / 1h (the intraday series ROOT|interval, "
                   "a fixed size of 1 contract unless the grid sweeps contracts).")
@click.option("--capital", type=float, default=1_000_000.0, show_default=True, help="USD per market.")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Rows of the best sets table.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads (the kernel releases the GIL).")
@click.option("--mlflow-children", type=click.IntRange(min=0), default=MAX_CHILD_RUNS, show_default=True,
              help="A child MLflow run per set up to this many sets per market; above it the parent run "
                   "alone, with the sweep table as a CSV artifact.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (backtests, elapsed_s, best, ...).")
def sweep(markets: list[str], strategy: str, grid_items: tuple[str, ...], walk_forward: bool, train_years: int,
          test_years: int, train_sessions: int, test_sessions: int, interval: str, capital: float, top: int,
          workers: int, mlflow_children: int, as_json: bool) -> None:
    """Sweep a strategy's parameter grid on each market, with overfitting diagnostics.

    \b
    Every combination of the --grid values is backtested on each market (the
    same result per set as `fbt backtest`), then stored as the
    parameter_sweep asset stores it: the market's rows of sweep_results and
    walk_forward_equity are replaced, an MLflow parent run (experiment
    fbt-sweeps) and a tear sheet under $FBT_HOME/reports/ are written.
    Shown: the best sets by Sharpe over all markets, and per market the
    probability of backtest overfitting (PBO, CSCV), the deflated Sharpe of
    the best set and the walk-forward out-of-sample Sharpe (each window
    takes the set with the best Sharpe over the previous --train-years).
    elapsed_s in --json is the sweep's compute time (s), without process
    start, reading the data, compiling the kernels (warmup_s: one set, once)
    and storing (store_s).
    \b
    --interval 1m|1h sweeps the intraday series ROOT|interval (stored by the
    intraday assets, else built from the stored bars): each set as
    `fbt backtest --interval` (a fixed size, Sharpe of the per-bar returns x
    sqrt(bars per session x 252)); the walk-forward counts sessions
    (--train-sessions, --test-sessions); stored in intraday_sweep_results and
    intraday_walk_forward_equity.
    \b
    Examples:
      fbt sweep --market ES,NQ --grid fast=5:100:5 --grid slow=110:600:10
      fbt sweep --market CL --strategy bollinger_reversion --grid window=10:40:10 --grid k=1.5,2,2.5 --walk-forward
      fbt sweep --market ES --grid fast=10,20 --grid slow=50,100 --grid stop_loss=2%,3atr --json
      fbt sweep --market ES --interval 1m --grid fast=30:120:30 --grid slow=240,390,780 --walk-forward
    """
    from fbt_pipelines.config import code_version
    from fbt_pipelines.services.tracking import Tracking
    from fbt_pipelines.usecases import intraday_sweep as isw
    from fbt_pipelines.usecases.intraday import INTERVALS
    from fbt_pipelines.usecases.spec import BacktestSpec, MarginSource
    from fbt_pipelines.usecases.sweep import SweepSettings, parameter_sets, run_sweep, store_sweep

    intraday = interval in INTERVALS
    _check_window_options(intraday)
    try:
        grid = parse_grid(grid_items)
    except GridError as exc:
        raise click.BadParameter(str(exc), param_hint="--grid") from None
    workspace = workspace_here()
    library = workspace.strategies()
    _check_names(strategy, grid, library)
    try:
        sets = parameter_sets(strategy, grid)
        base = (isw.intraday_sweep_spec(strategy, library, capital=capital) if intraday else
                BacktestSpec.create(strategy, {}, library=library, capital=capital, margin_source=MarginSource.HISTORY))
    except (FbtError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--grid") from None
    markets = list(dict.fromkeys(markets))
    series: dict[str, Any] = {}
    if intraday:
        series = _read_intraday(markets, workspace, interval)
        data = {root: s.data for root, s in series.items()}
        for root, s in series.items():  # before any compute or storage, as the daily check below
            _check_session_span(s.key, int(s.data.frame["session"].nunique()), train_sessions)

        def run(b, d, some, workers):
            return isw.run_intraday_sweep(b, d, some, interval, workers=workers)
    else:
        data = _read_markets(markets, workspace, interval)
        for root, d in data.items():  # before any compute or storage: a market too short fails the whole sweep
            _check_walk_forward_span(root, d.prices["ts"], train_years)
        run = run_sweep

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    chunk = max(64, math.ceil(len(sets) / 10))
    t0 = time.perf_counter()
    try:  # compiles (or loads from Numba's cache) the kernels: process start, not the sweep's compute
        run(base, data[markets[0]], sets[:1], workers=1)
    except (FbtError, ValueError) as exc:
        raise click.ClickException(f"{markets[0]}: {exc}") from None
    warmup_s = time.perf_counter() - t0
    results: list[MarketSweep] = []
    with Progress(TextColumn("[bold blue]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, disable=as_json) as progress:
        tasks = {root: progress.add_task(f"{root} {strategy}", total=len(sets)) for root in markets}
        for root in markets:
            try:
                result, spent = _sweep_market(base, data[root], sets, workers, chunk,
                                              lambda k, task=tasks[root]: progress.advance(task, k), run=run)
            except (FbtError, ValueError) as exc:
                raise click.ClickException(f"{root}: {exc}") from None
            results.append(MarketSweep(root, result, spent))
    elapsed = sum(r.compute_s for r in results)

    t0 = time.perf_counter()
    tracking = Tracking(os.environ.get("MLFLOW_TRACKING_URI") or paths().mlflow_tracking_uri, paths().mlflow_artifacts)
    tracker = SweepTracker(tracking, mlflow_children)
    settings = SweepSettings(strategy, grid, "grid", train_years, test_years, capital)
    intraday_settings = isw.IntradaySweepSettings(strategy, grid, interval, "grid", train_sessions, test_sessions,
                                                  capital, int(base.orders.contracts or 1))
    reports = paths().reports
    reports.mkdir(parents=True, exist_ok=True)
    conn = connect_warehouse()
    try:
        for r in results:
            try:
                if intraday:
                    r.stored = isw.store_intraday_sweep(
                        conn, tracker, series[r.root].key, r.sweep, intraday_settings,
                        data_version=data[r.root].data_version, code_version=code_version(), reports_dir=reports,
                        extra_tags={"source": "fbt sweep"})
                else:
                    r.stored = store_sweep(conn, tracker, r.root, r.sweep, settings,
                                           data_version=data[r.root].data_version, code_version=code_version(),
                                           reports_dir=reports, extra_tags={"source": "fbt sweep"})
            except FbtError as exc:
                raise click.ClickException(f"{r.root}: {exc}") from None
            if r.stored.mlflow_parent_run:
                tracking.try_log_to_run(r.stored.mlflow_parent_run, metrics=_diagnostics(r))
    finally:
        conn.close()
    store_s = time.perf_counter() - t0
    out = _report(strategy, grid, sets, results, elapsed, store_s, top, walk_forward, tracking.failure)
    out["warmup_s"] = round(warmup_s, 3)
    if intraday:
        out.update(interval=interval, series={root: s.key for root, s in series.items()},
                   sources={root: s.source for root, s in series.items()},
                   walk_forward_sessions={"train": train_sessions, "test": test_sessions})
    if as_json:
        click.echo(json.dumps(out, default=str))
    else:
        _print(out, walk_forward)
    if tracking.failure:
        click.echo(f"warning: {tracking.failure}; the sweep is stored in the warehouse without an MLflow run",
                   err=True)


def _diagnostics(r: MarketSweep) -> dict[str, float]:
    """PBO, deflated Sharpe of the best set, walk-forward OOS Sharpe and P&L (USD)."""
    s = r.stored
    return {"pbo": s.overfitting["pbo"], "deflated_sharpe": s.overfitting.get("deflated_sharpe", float("nan")),
            "walk_forward_oos_sharpe": s.walk_forward_sharpe,
            "walk_forward_oos_pnl": float(s.walk_forward["pnl"].sum())}


def _set_row(root: str, row: Mapping[str, Any]) -> dict[str, Any]:
    return {"market": root, "set": int(row["set"]), "params": json.loads(row["params"]),
            "sharpe": _finite(float(row["sharpe"])), "net_pnl": _finite(float(row["net_pnl"])),
            "max_drawdown": _finite(float(row["max_drawdown"])), "trades": int(row["trades"])}


def _windows(r: MarketSweep) -> list[dict[str, Any]]:
    wf = r.stored.walk_forward
    labels = r.sweep.table.set_index("set")["params"]
    out = []
    for window, part in wf.groupby("window", sort=True):
        chosen = int(part["set"].iat[0])
        out.append({"window": int(window), "first": str(part["ts"].iat[0].date()),
                    "last": str(part["ts"].iat[-1].date()), "set": chosen, "params": json.loads(labels[chosen]),
                    "in_sample_sharpe": _finite(float(part["in_sample_sharpe"].iat[0])),
                    "oos_pnl": round(float(part["pnl"].sum()), 2)})
    return out


def _report(strategy: str, grid: Mapping[str, list], sets: list[dict], results: list[MarketSweep], elapsed: float,
            store_s: float, top: int, walk_forward: bool, failure: str | None) -> dict[str, Any]:
    """The command's result as one JSON-ready dict (USD, seconds; NaN as None)."""
    rows = [_set_row(r.root, row) for r in results for row in r.sweep.table.to_dict("records")]
    best = sorted(rows, key=lambda x: -math.inf if x["sharpe"] is None else x["sharpe"], reverse=True)[:top]
    diagnostics = {}
    for r in results:
        d = {k: _finite(float(v)) for k, v in _diagnostics(r).items()}
        d["best_set"] = _set_row(r.root, r.stored.best)  # best Sharpe over the whole period
        d["walk_forward_windows"] = int(r.stored.walk_forward["window"].nunique())
        d["mlflow_parent_run"] = r.stored.mlflow_parent_run or None
        d["tear_sheet"] = str(r.stored.tear_sheet) if r.stored.tear_sheet else None
        if walk_forward:
            d["walk_forward"] = _windows(r)
        diagnostics[r.root] = d
    return {"strategy": strategy, "markets": [r.root for r in results], "grid": dict(grid), "sets": len(sets),
            "backtests": len(sets) * len(results), "elapsed_s": round(elapsed, 4),
            "backtests_per_s": round(len(sets) * len(results) / elapsed, 1) if elapsed > 0 else None,
            "store_s": round(store_s, 3), "best": best, "diagnostics": diagnostics, "tracking_failure": failure}


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _print(out: Mapping[str, Any], walk_forward: bool) -> None:
    from fbt_pipelines.services.tracking import params_label

    console.print(f"[bold]{out['strategy']}[/bold]: {out['sets']} sets x {len(out['markets'])} markets = "
                  f"{out['backtests']:,} backtests in {out['elapsed_s']:.2f} s "
                  f"({_fmt(out['backtests_per_s'], ',.0f')}/s); stored in {out['store_s']:.1f} s")
    table = Table(title=f"Best {len(out['best'])} sets by Sharpe (net P&L in USD, after costs)")
    for col in ["#", "market", "parameters", "Sharpe", "net P&L", "max DD", "trades"]:
        table.add_column(col, justify="left" if col in ("market", "parameters") else "right")
    for i, row in enumerate(out["best"], 1):
        table.add_row(str(i), row["market"], escape(params_label(row["params"])), _fmt(row["sharpe"], ".2f"),
                      _fmt(row["net_pnl"], ",.0f"), _fmt(row["max_drawdown"], ".1%"), str(row["trades"]))
    console.print(table)
    diag = Table(title="Overfitting: PBO (probability the best in-sample set is below median out of sample), "
                       "deflated Sharpe of the best set, walk-forward out-of-sample Sharpe / P&L (USD)")
    for col in ["market", "best set", "PBO", "deflated Sharpe", "WF OOS Sharpe", "WF OOS P&L",
                "windows", "MLflow parent run"]:
        diag.add_column(col, justify="left" if col in ("market", "best set", "MLflow parent run")
                        else "right")
    for root, d in out["diagnostics"].items():
        diag.add_row(root, escape(params_label(d["best_set"]["params"])), _fmt(d["pbo"], ".2f"),
                     _fmt(d["deflated_sharpe"], ".2f"), _fmt(d["walk_forward_oos_sharpe"], ".2f"),
                     _fmt(d["walk_forward_oos_pnl"], ",.0f"), str(d["walk_forward_windows"]),
                     d["mlflow_parent_run"] or "-")
    console.print(diag)
    if walk_forward:
        for root, d in out["diagnostics"].items():
            wf = Table(title=f"{root} walk-forward: the best in-sample set per window, applied out of sample "
                             "(switching sets assumed free)")
            for col in ["window", "out of sample", "set", "in-sample Sharpe", "OOS P&L (USD)"]:
                wf.add_column(col, justify="left" if col in ("out of sample", "set") else "right")
            for w in d["walk_forward"]:
                wf.add_row(str(w["window"]), f"{w['first']} .. {w['last']}", escape(params_label(w["params"])),
                           _fmt(w["in_sample_sharpe"], ".2f"), f"{w['oos_pnl']:,.0f}")
            console.print(wf)
    if "walk_forward_sessions" in out:
        w = out["walk_forward_sessions"]
        console.print(f"{out['interval']} bars: Sharpe of the per-bar returns x sqrt(bars per session x 252); "
                      f"walk-forward windows {w['train']} sessions in sample, {w['test']} out of sample; "
                      "series: " + ", ".join(f"{k} ({out['sources'][r]})" for r, k in out["series"].items()))
    sheets = [d["tear_sheet"] for d in out["diagnostics"].values() if d["tear_sheet"]]
    if sheets:
        console.print("tear sheets: " + ", ".join(escape(s) for s in sheets), soft_wrap=True)


__all__ = ["GridError", "SweepTracker", "grid_range", "parse_grid", "sweep"]
