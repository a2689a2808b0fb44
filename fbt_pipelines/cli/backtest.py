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

from fbt_pipelines.cli.app import console, main, parse_params
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
    from fbt_pipelines.engine.strategies import available_strategies
    from fbt_pipelines.engine.user_strategies import strategies_folder, user_problems

    library = available_strategies()
    problems = user_problems()
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
            console.print(f"[dim]your strategies: {escape(str(strategies_folder()))}/*.py[/dim]", soft_wrap=True)
    for problem in problems:
        click.echo(f"error: strategy file not loaded: {problem}", err=True)
    if problems:
        raise SystemExit(1)


@main.command()
@click.option("--strategy", required=True, help="A template from `fbt strategies`.")
@click.option("--market", required=True, help="Market root with a continuous series in the warehouse.")
@click.option("--param", "params", multiple=True, help="NAME=VALUE, repeatable.")
@click.option("--engine", type=click.Choice(["vector", "pybroker"]), default="vector", show_default=True)
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), help="First bar (UTC date).")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), help="Last bar (UTC date).")
@click.option("--capital", type=float, default=1_000_000.0, show_default=True, help="USD.")
@click.option("--risk-target", type=float, default=0.20, show_default=True, help="Annualised vol target.")
@click.option("--no-costs", is_flag=True, help="Commission, slippage and roll costs all zero.")
@click.option("--json", "as_json", is_flag=True)
def backtest(strategy: str, market: str, params: tuple[str, ...], engine: str, start, end, capital: float,
             risk_target: float, no_costs: bool, as_json: bool) -> None:
    """Backtest one strategy on one market's continuous (Panama) series.

    \b
    Every run is an MLflow run (experiment fbt-backtests) and rows in the
    warehouse tables adhoc_backtest_runs / _equity / _trades.
    \b
    Examples:
      fbt backtest --strategy sma_crossover --market ES --param fast=10 --param slow=50 --json
      fbt backtest --strategy ewmac --market CL --engine pybroker --start 2018-01-01
    """
    from fbt_pipelines.catalog import market_spec
    from fbt_pipelines.engine.backtest import summarise, with_predictions
    from fbt_pipelines.engine.futures_engine import EngineConfig, run_backtest
    from fbt_pipelines.engine.strategies import strategy_signal, validate_params
    from fbt_pipelines.portfolio.sizing import VolTargetConfig, contracts_for_risk
    from fbt_pipelines.reports.sparkline import svg_lines
    from fbt_pipelines.stores import warehouse as wh
    from fbt_pipelines.stores.tracking import Tracking
    from fbt_pipelines.versioning import code_version, frame_version

    root = market.upper()
    try:
        spec = market_spec(root)
        merged = validate_params(strategy, parse_params(params))
        config = EngineConfig(initial_capital=capital, slippage_ticks=0.0 if no_costs else 1.0,
                              commission=0.0 if no_costs else None)
        sizing = VolTargetConfig(capital=capital, annual_risk_target=risk_target, idm=1.0)
    except (FbtError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    conn = connect_warehouse()
    try:
        prices = wh.read_partition(conn, "continuous_prices", root, order_by=["ts"])
        if prices.empty:
            raise click.ClickException(f"no continuous prices for {root}: run `fbt demo` or `fbt continuous {root}`")
        frame = with_predictions(prices, wh.read_partition(conn, "predictions", root, order_by=["ts"]),
                                 wh.read_partition(conn, "features", root, order_by=["ts"]))
        if start is not None:
            frame = frame[frame["ts"] >= pd.Timestamp(start, tz="UTC")]
        if end is not None:
            frame = frame[frame["ts"] < pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)]
        frame = frame.reset_index(drop=True)
        if len(frame) < 2:
            raise click.ClickException(f"{root}: fewer than 2 bars between --start and --end")
        try:
            target = contracts_for_risk(frame, strategy_signal(strategy, frame, merged), spec, 1.0, sizing)
        except FbtError as exc:
            raise click.ClickException(str(exc)) from None
        result = run_backtest(frame, target, spec, config)
        summary = summarise(result)
        if engine == "pybroker":
            from fbt_pipelines.engine.pybroker_engine import run_pybroker_backtest

            pb = run_pybroker_backtest(frame, target, spec, config)
            summary = {**summary, "net_pnl": pb.net_pnl, "final_equity": capital + pb.net_pnl,
                       "trades": float(len(pb.fills))}
        data_version = frame_version(frame)
        tracking = Tracking(os.environ.get("MLFLOW_TRACKING_URI") or paths().mlflow_tracking_uri,
                            paths().mlflow_artifacts)
        run_id = tracking.try_log_backtest(
            f"{strategy}-{root}-{engine}", {"strategy": strategy, "market": root, **merged, "engine": engine,
                                            "no_costs": no_costs, "capital": capital, "risk_target": risk_target},
            summary, tags={"strategy": strategy, "market": root, "engine": engine, "data_version": data_version,
                           "config_hash": config.config_hash(), "code_version": code_version(), "source": "fbt backtest"},
            tables={"equity": result.bars, "trades": result.trades},
            figures={"equity": svg_lines({"equity (USD)": result.bars["equity"]}, width=640, height=240)})
        if run_id is None:  # MLflow failed: the warehouse rows are the record, under a local id
            run_id = f"local-{uuid.uuid4().hex}"
            click.echo(f"warning: {tracking.failure}; the backtest is stored in the warehouse as run {run_id} "
                       "without an MLflow run", err=True)
        row = pd.DataFrame([{"run_id": run_id, "root": root, "strategy": strategy, "engine": engine,
                             "params": json.dumps(merged, sort_keys=True), "data_version": data_version, **summary}])
        wh.replace_partition(conn, "adhoc_backtest_runs", run_id, row)
        wh.replace_partition(conn, "adhoc_backtest_equity", run_id, result.bars.assign(run_id=run_id))
        wh.replace_partition(conn, "adhoc_backtest_trades", run_id, result.trades.assign(run_id=run_id))
    finally:
        conn.close()
    out = {"run_id": run_id, "strategy": strategy, "market": root, "engine": engine, "params": merged,
           "total_pnl": round(float(summary["net_pnl"]), 2), "sharpe": summary["sharpe"],
           "max_drawdown": summary["max_drawdown"], "ruined": bool(summary["ruined"]),
           "n_trades": int(summary["trades"]), "rolls": int(summary["rolls"]),
           "roll_costs": round(float(summary["roll_costs"]), 2), "first": str(frame["ts"].iloc[0].date()),
           "last": str(frame["ts"].iloc[-1].date())}
    if as_json:
        click.echo(json.dumps({k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}))
        return
    console.print(f"[bold]{strategy}[/bold] on {root} ({out['first']} .. {out['last']}, {engine} engine): "
                  f"net P&L {out['total_pnl']:,.2f} USD, Sharpe {out['sharpe']:.2f}, max DD {out['max_drawdown']:.1%}, "
                  f"{out['n_trades']} trades, {out['rolls']} rolls costing {out['roll_costs']:,.2f} USD")
    console.print(f"MLflow run {run_id}" if tracking.failure is None else f"warehouse run {run_id} (tracking failed)")
