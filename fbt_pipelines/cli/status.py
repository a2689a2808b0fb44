"""``fbt status``: what the platform holds and whether its parts answer."""

from __future__ import annotations

import datetime as dt
import json

import click
from rich.table import Table

from fbt_pipelines.cli.app import console, main
from fbt_pipelines.config import paths, redis_url


def collect_status() -> dict:
    """Last materialization per asset, failed asset checks, request queue
    depth, Redis and warehouse health (plain data, for --json)."""
    import duckdb
    from dagster import AssetKey, DagsterInstance

    from fbt_pipelines.instance import ensure_dagster_home
    from fbt_pipelines.stores.bus import Bus, BusUnavailable, redact_url

    out: dict = {"fbt_home": str(paths().home)}
    bus = Bus(redis_url())
    out["redis"] = {"url": redact_url(redis_url()), "ok": bus.ping()}  # never print the password
    try:
        out["queue"] = bus.queue_depth()
    except BusUnavailable:
        out["queue"] = None
    wh = paths().warehouse
    if wh.exists():
        try:
            with duckdb.connect(str(wh), read_only=True) as conn:
                bars = conn.execute("SELECT count(*), count(DISTINCT root) FROM bars").fetchall()[0]
            out["warehouse"] = {"ok": True, "path": str(wh), "bytes": wh.stat().st_size, "bars": bars[0],
                                "markets": bars[1]}
        except duckdb.Error as exc:
            out["warehouse"] = {"ok": False, "path": str(wh), "error": str(exc).splitlines()[0]}
    else:
        out["warehouse"] = {"ok": False, "path": str(wh), "error": "missing (run `fbt demo` or `fbt ingest`)"}
    ensure_dagster_home()
    from fbt_pipelines.definitions import defs

    assets, failed = [], []
    with DagsterInstance.get() as instance:
        for key in sorted(defs.resolve_all_asset_keys(), key=lambda k: k.to_user_string()):
            event = instance.get_latest_materialization_event(AssetKey(key.path))
            assets.append({"asset": key.to_user_string(),
                           "last_materialized_utc": None if event is None else
                           dt.datetime.fromtimestamp(event.timestamp, dt.UTC).isoformat(timespec="seconds"),
                           "partition": None if event is None else event.dagster_event.partition})
        graph = defs.resolve_asset_graph()
        for check_key in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
            record = instance.event_log_storage.get_latest_asset_check_execution_by_key([check_key]).get(check_key)
            evaluation = record.evaluation if record is not None else None
            if evaluation is not None and not evaluation.passed:
                failed.append({"asset": check_key.asset_key.to_user_string(), "check": check_key.name,
                               "severity": evaluation.severity.value, "run_id": record.run_id})
    out["assets"], out["failed_checks"] = assets, failed
    return out


@main.command()
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool) -> None:
    """Last materialization per asset, failed checks, queue depth, Redis and warehouse health.

    Exit code 1 if Redis or the warehouse is unhealthy or an error-severity check failed.
    """
    info = collect_status()
    errors = [f for f in info["failed_checks"] if f["severity"] == "ERROR"]
    healthy = info["redis"]["ok"] and info["warehouse"]["ok"] and not errors
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
    else:
        w = info["warehouse"]
        console.print(f"FBT_HOME {info['fbt_home']}")
        console.print(f"warehouse: {'[green]ok[/green]' if w['ok'] else '[red]not ok[/red]'} "
                      + (f"{w['bars']:,} bars, {w['markets']} markets, {w['bytes'] / 2**20:,.1f} MiB"
                         if w["ok"] else w["error"]))
        q = info["queue"]
        console.print(f"redis: {'[green]ok[/green]' if info['redis']['ok'] else '[red]unreachable[/red]'} "
                      f"{info['redis']['url']}" + (f"; request queue {q['length']} waiting, {q['pending']} pending"
                                                   if q else ""))
        table = Table(title="Assets")
        for col in ["asset", "last materialized (UTC)", "partition"]:
            table.add_column(col)
        for a in info["assets"]:
            table.add_row(a["asset"], a["last_materialized_utc"] or "[yellow]never[/yellow]", a["partition"] or "")
        console.print(table)
        for f in info["failed_checks"]:
            color = "red" if f["severity"] == "ERROR" else "yellow"
            console.print(f"[{color}]failed check ({f['severity'].lower()})[/{color}] {f['asset']}.{f['check']} "
                          f"(run {f['run_id']})")
    if not healthy:
        raise SystemExit(1)


def collect_risk() -> dict:
    """The risk report row plus its scenario, correlation and exposure tables (plain data, for --json)."""
    from fbt_pipelines.cli.data import connect_warehouse
    from fbt_pipelines.stores import warehouse as wh

    if not paths().warehouse.exists():
        raise click.ClickException(f"no warehouse at {paths().warehouse}: run `fbt demo` first")
    with connect_warehouse(read_only=True) as conn:
        report = wh.read_table(conn, "risk_report")
        scenarios = wh.read_table(conn, "risk_scenarios")
        correlation = wh.read_table(conn, "risk_correlation")
    if report.empty:
        raise click.ClickException("no risk report yet: materialize risk_report (fbt demo)")
    row = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in report.iloc[0].to_dict().items()}
    row = {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}  # NaN -> null
    if len(scenarios):
        row["scenarios"] = [
            {"scenario": name, "kind": g["kind"].iloc[0], "window": g["window"].iloc[0],
             "pnl_usd": dict(zip(g["root"], g["pnl_usd"].astype(float)))}
            for name, g in scenarios.groupby("scenario", sort=False)]
    if len(correlation):
        row["correlation"] = {kind: [{"a": r.a, "b": r.b, "correlation": float(r.correlation)}
                                     for r in g.itertuples()] for kind, g in correlation.groupby("kind", sort=False)}
    try:
        from fbt_pipelines.cli.portfolio import load_snapshot

        row["book"] = load_snapshot(None)  # today's positions, exposure and margin (USD)
    except click.ClickException:
        pass  # an older warehouse without the book's columns
    return row


@main.command()
@click.option("--json", "as_json", is_flag=True)
def risk(as_json: bool) -> None:
    """The current portfolio's risk report: metrics, limits' inputs, scenarios, correlations, Monte Carlo.

    Fractions of equity unless the name says USD; VaR/CVaR are one-day
    losses (positive). ``scenarios``: P&L per market and total (USD) of
    today's book under each shock, replay or stress; ``correlation``: pairs
    of daily-return correlations by kind (market, market_rolling_63d,
    strategy); ``book``: the last session's positions and exposure (as
    ``fbt portfolio --json``).

    \b
    Example:
      fbt risk --json | jq .sharpe
      fbt risk --json | jq '.scenarios[] | {scenario, total: .pnl_usd.total}'
    """
    row = collect_risk()
    if as_json:
        click.echo(json.dumps(row, indent=2, default=str))
        return
    table = Table(title=f"Risk report ({row.get('portfolio')}, {row.get('start')} .. {row.get('end')})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in row.items():
        if k in ("scenarios", "correlation", "book"):
            continue
        table.add_row(k, f"{v:,.4f}" if isinstance(v, float) else str(v))
    console.print(table)
    if "scenarios" in row:
        scen = Table(title="Scenarios on today's book (P&L, USD)")
        for col in ["scenario", "kind", "window", "total", "worst market"]:
            scen.add_column(col, justify="right" if col in ("total",) else "left")
        for s in row["scenarios"]:
            markets = {k: v for k, v in s["pnl_usd"].items() if k != "total"}
            worst = min(markets, key=markets.get) if markets else ""
            scen.add_row(s["scenario"], s["kind"], s["window"], f"{s['pnl_usd'].get('total', 0.0):,.0f}",
                         f"{worst} {markets[worst]:,.0f}" if worst else "")
        console.print(scen)
    for kind, pairs in row.get("correlation", {}).items():
        corr = Table(title=f"Correlation of daily returns: {kind}")
        for col in ["a", "b", "correlation"]:
            corr.add_column(col, justify="right" if col == "correlation" else "left")
        for p in pairs:
            corr.add_row(p["a"], p["b"], f"{p['correlation']:.2f}")
        console.print(corr)
