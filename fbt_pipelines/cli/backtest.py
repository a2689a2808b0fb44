"""``fbt backtest`` and ``fbt strategies``."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import click
import numpy as np
import pandas as pd
from rich.markup import escape
from rich.table import Table

from fbt_pipelines.cli.app import MARKET, check_strategy_names, console, main, parse_params, workspace_here
from fbt_pipelines.cli.data import connect_warehouse
from fbt_pipelines.config import paths
from fbt_pipelines.errors import FbtError


@main.command()
@click.option("--json", "as_json", is_flag=True)
def strategies(as_json: bool) -> None:
    """The strategy template library: parameters, defaults, descriptions.

    \b
    Your own strategies: one .py file per strategy in $FBT_HOME/strategies/,
    a function decorated with @register_strategy (see docs/guide.md). A file
    that cannot be used is named on stderr with the reason (exit code 1);
    the other strategies are still listed.
    \b
    Examples:
      fbt strategies
      fbt strategies --json | jq '.[].name'
    """
    workspace = workspace_here()
    library = workspace.strategies()
    problems = workspace.strategy_problems()
    rows = [{"name": t.name, "inputs": list(t.inputs), "params": t.defaults, "description": t.description,
             "source": t.source or "fbt"}
            for t in sorted(library.values(), key=lambda t: t.name)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        table = Table(title="Strategy templates (fbt backtest --strategy NAME --param k=v)")
        for col in ["name", "parameters (defaults)", "inputs", "description"]:
            table.add_column(col)
        for r in rows:
            origin = "" if r["source"] == "fbt" else f" [dim](yours: {escape(Path(r['source']).name)})[/dim]"
            table.add_row(r["name"], ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-",
                          ", ".join(r["inputs"]), escape(r["description"]) + origin)
        console.print(table)
        if not problems:
            console.print(f"[dim]your strategies: {escape(str(workspace.strategies_dir))}/*.py[/dim]", soft_wrap=True)
    for problem in problems:
        click.echo(f"error: strategy file not loaded: {problem}", err=True)
    if problems:
        raise SystemExit(1)


def warmup_bars(params: dict) -> tuple[str, int] | None:
    """The strategy's longest look-back: its largest whole-number parameter >= 2 (bars).

    A heuristic that fits the library (``slow``, ``lookback``, ``window``,
    ``fast``...): parameters counted in bars are whole numbers; thresholds
    and fractions are not. None when no parameter looks like one.
    """
    bars = [(name, int(v)) for name, v in params.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() and v >= 2]
    return max(bars, key=lambda nv: nv[1]) if bars else None


def warmup_warning(strategy: str, params: dict, n_bars: int, trades: int) -> str | None:
    """A warning when the window is too short for the strategy's warm-up, or nothing traded.

    ``n_bars``: daily bars in the backtest's window; ``trades``: its
    ``trades`` summary count. Warns when the window is not longer than the
    longest look-back (:func:`warmup_bars`), or when no trade happened.
    """
    look = warmup_bars(params)
    if look is not None and n_bars <= look[1]:
        return (f"the window has {n_bars} bars, not more than {strategy}'s warm-up ({look[0]}={look[1]} bars): "
                f"{trades} trades and no meaningful Sharpe; start earlier (--start) or shorten {look[0]}")
    if trades == 0:
        hint = f" (warm-up {look[0]}={look[1]} bars)" if look else ""
        return (f"0 trades in {n_bars} bars{hint}: the Sharpe is undefined; "
                "widen the window (--start/--end) or check the parameters")
    return None


def _distance(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An order distance option (``40``, ``2%``, ``3atr``) in its canonical spelling; a clear error otherwise."""
    if value is None:
        return None
    from fbt_pipelines.engine.rules import Distance

    try:
        return Distance.parse(value, f"--{param.name.replace('_', '-')}").label
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@main.command()
@click.option("--strategy", required=True, help="A template from `fbt strategies`.")
@click.option("--market", type=MARKET, required=True, help="Market root with a continuous series in the warehouse.")
@click.option("--param", "params", multiple=True, help="NAME=VALUE, repeatable.")
@click.option("--engine", type=click.Choice(["vector", "pybroker"]), default="vector", show_default=True)
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), help="First bar (UTC date).")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), help="Last bar (UTC date).")
@click.option("--capital", type=float, default=1_000_000.0, show_default=True, help="USD.")
@click.option("--risk-target", type=float, default=0.20, show_default=True, help="Annualised vol target.")
@click.option("--no-costs", is_flag=True, help="Commission, slippage and roll costs all zero.")
@click.option("--fill", type=click.Choice(["next_open", "next_close"]), default="next_open", show_default=True,
              help="When a position decided at a bar's close is traded: the next bar's open or close.")
@click.option("--stop-loss", callback=_distance, metavar="DIST",
              help="Exit at this distance from the entry fill: 40 (points), 2% (of the entry) or 3atr (x ATR(14)).")
@click.option("--take-profit", callback=_distance, metavar="DIST", help="Exit at this distance in profit (same units).")
@click.option("--trailing-stop", callback=_distance, metavar="DIST",
              help="Exit at this distance from the best close since entry (same units; % of that close).")
@click.option("--limit-offset", callback=_distance, metavar="DIST",
              help="Enter with limit orders this far below (buy) / above (sell) the deciding bar's close.")
@click.option("--contracts", type=click.IntRange(min=1), metavar="N",
              help="Trade N contracts in the strategy's direction instead of volatility targeting.")
@click.option("--interval", type=click.Choice(["1d", "1m", "1h"]), default="1d", show_default=True,
              help="Bar interval; 1m/1h run on the intraday series (docs/guide.md, 'Intraday bars').")
@click.option("--json", "as_json", is_flag=True)
def backtest(strategy: str, market: str, params: tuple[str, ...], engine: str, start, end, capital: float,
             risk_target: float, no_costs: bool, fill: str, stop_loss: str | None, take_profit: str | None,
             trailing_stop: str | None, limit_offset: str | None, contracts: int | None, as_json: bool,
             interval: str = "1d") -> None:
    """Backtest one strategy on one market's continuous (Panama) series.

    \b
    Every run is an MLflow run (experiment fbt-backtests) and rows in the
    warehouse tables adhoc_backtest_runs / _equity / _trades.
    \b
    Orders and margin (docs/guide.md, "Orders and margin"):
    - a position decided at a bar's close fills at the next bar's open
      (--fill next_close: its close); stops and targets are live from the
      entry fill on, the rest of the entry bar included;
    - a bar opening beyond a stop or target exits at the open (a gap); else a
      low (long; high for a short) reaching the stop exits at the stop, a high
      reaching the target at the target; both in one bar: the stop;
    - levels are set when a position opens or flips and kept while it only
      changes size; after a stop or target exit the position stays flat until
      the strategy's wanted position changes;
    - a buy limit fills at the open when the bar opens at or below it, else at
      the limit when the low reaches it (sell: the mirror); it rests until
      filled or until the wanted position changes;
    - commission and slippage apply to every fill; prices are the Panama
      series, so levels keep their distance across rolls;
    - margin calls: a close with equity below maintenance margin x contracts
      liquidates, at the next fill, the fewest contracts that bring the
      equity back to the initial margin of the rest; equity at or below zero
      stops the account. Every trade says why: signal, stop, target,
      trailing_stop, limit, roll, margin_call.
    \b
    An unknown market, strategy or parameter exits 2 with the closest names;
    a window not longer than the strategy's warm-up (its longest look-back,
    e.g. slow=100 bars), or one with no trade, prints a warning on stderr.
    The output ends with the `fbt report RUN_ID` command of the run.
    \b
    Examples:
      fbt backtest --strategy sma_crossover --market ES --param fast=10 --param slow=50 --json
      fbt backtest --strategy ewmac --market CL --engine pybroker --start 2018-01-01
      fbt backtest --strategy sma_crossover --market ES --contracts 1 --stop-loss 40 --take-profit 120
      fbt backtest --strategy ewmac --market GC --trailing-stop 3atr --limit-offset 0.5%
    """
    from fbt_pipelines.config import code_version
    from fbt_pipelines.services.tracking import Tracking
    from fbt_pipelines.usecases.backtest import (backtest_market, backtest_row, margin_events, read_market_data,
                                                 store_adhoc_backtest, track_backtest)
    from fbt_pipelines.usecases.spec import BacktestSpec

    from fbt_pipelines.usecases.spec import OrderSettings

    root = market.upper()
    workspace = workspace_here()
    parsed = parse_params(params)
    check_strategy_names(strategy, parsed, workspace.strategies())  # exit 2 with a "did you mean"
    try:
        workspace.market(root)
        orders = OrderSettings(fill=fill, stop_loss=stop_loss, take_profit=take_profit,  # type: ignore[arg-type]
                               trailing_stop=trailing_stop, limit_offset=limit_offset, contracts=contracts)
        spec = BacktestSpec.create(strategy, parsed, library=workspace.strategies(), capital=capital,
                                   annual_risk_target=risk_target, slippage_ticks=0.0 if no_costs else 1.0,
                                   commission=0.0 if no_costs else None, orders=orders)
    except (FbtError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if interval != "1d":  # the intraday path: fbt_pipelines/cli/intraday.py
        from fbt_pipelines.cli.intraday import intraday_backtest

        return intraday_backtest(spec, root, interval, start, end, as_json=as_json, no_costs=no_costs)
    conn = connect_warehouse()
    try:
        try:
            data = read_market_data(conn, root, workspace)
            data = data.window(None if start is None else pd.Timestamp(start, tz="UTC"),
                               None if end is None else pd.Timestamp(end, tz="UTC"))
            bt = backtest_market(spec, data, engine=engine)
        except FbtError as exc:
            raise click.ClickException(str(exc)) from None
        summary = bt.summary
        tracking = Tracking(os.environ.get("MLFLOW_TRACKING_URI") or paths().mlflow_tracking_uri,
                            paths().mlflow_artifacts)
        run_id = track_backtest(tracking, bt, code_version=code_version(), source="fbt backtest",
                                extra_tags={"no_costs": str(no_costs)})
        if run_id is None:  # MLflow failed: the warehouse rows are the record, under a local id
            run_id = f"local-{uuid.uuid4().hex}"
            click.echo(f"warning: {tracking.failure}; the backtest is stored in the warehouse as run {run_id} "
                       "without an MLflow run", err=True)
        store_adhoc_backtest(conn, run_id, backtest_row(bt, code_version=code_version(), mlflow_run_id=run_id), bt)
    finally:
        conn.close()
    frame = data.prices
    merged = bt.params
    events = margin_events(bt.result)
    out = {"run_id": run_id, "strategy": strategy, "market": root, "engine": engine, "params": merged,
           "orders": {k: v for k, v in spec.orders.settings().items()},
           "total_pnl": round(float(summary["net_pnl"]), 2), "sharpe": summary["sharpe"],
           "max_drawdown": summary["max_drawdown"], "margin_calls": int(summary["margin_calls"]),
           "margin_call_dates": json.loads(events["margin_call_dates"]),
           "account_stopped": events["account_stopped_on"] or None,
           "n_trades": int(summary["trades"]), "rolls": int(summary["rolls"]),
           "roll_costs": round(float(summary["roll_costs"]), 2), "first": str(frame["ts"].iloc[0].date()),
           "last": str(frame["ts"].iloc[-1].date())}
    warning = warmup_warning(strategy, merged, len(frame), out["n_trades"])
    if warning:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps({k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}))
        return
    console.print(f"[bold]{strategy}[/bold] on {root} ({out['first']} .. {out['last']}, {engine} engine): "
                  f"net P&L {out['total_pnl']:,.2f} USD, Sharpe {out['sharpe']:.2f}, max DD {out['max_drawdown']:.1%}, "
                  f"{out['n_trades']} trades, {out['rolls']} rolls costing {out['roll_costs']:,.2f} USD, "
                  f"{out['margin_calls']} margin calls"
                  + (f", account stopped {out['account_stopped']}" if out["account_stopped"] else ""))
    console.print(f"MLflow run {run_id}" if tracking.failure is None else f"warehouse run {run_id} (tracking failed)")
    console.print(f"tear sheet: fbt report {run_id} --open", soft_wrap=True)
