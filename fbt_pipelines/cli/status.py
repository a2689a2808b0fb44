"""``fbt status``: what the platform holds and whether its parts answer."""

from __future__ import annotations

import datetime as dt
import json

import click
from rich.table import Table

from fbt_pipelines.cli.app import console, main
from fbt_pipelines.config import paths, redis_url


def collect_status() -> dict:
    """Last materialization per asset and partition, failed checks, queue depth, health.

    Every partition of a partitioned asset (one row each, "never" if not yet
    materialized); the latest execution of each check per partition;
    request queue depth, Redis and warehouse health;
    plain data, for --json.
    """
    import duckdb
    from dagster import AssetKey, DagsterInstance

    from fbt_pipelines.location.instance import ensure_dagster_home
    from fbt_pipelines.services.bus import Bus, BusUnavailable, redact_url

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
    from fbt_pipelines.location.definitions import defs

    assets, failed = [], []
    with DagsterInstance.get() as instance:
        graph = defs.resolve_asset_graph()
        for key in sorted(defs.resolve_all_asset_keys(), key=lambda k: k.to_user_string()):
            for partition, event in _latest_materializations(instance, graph, AssetKey(key.path)):
                assets.append({"asset": key.to_user_string(),
                               "last_materialized_utc": None if event is None else
                               dt.datetime.fromtimestamp(event.timestamp, dt.UTC).isoformat(timespec="seconds"),
                               "partition": partition if event is None else event.dagster_event.partition})
        for check_key in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
            for partition, record in _latest_check_executions(instance, check_key):
                evaluation = record.evaluation
                if evaluation is not None and getattr(evaluation, "passed", True) is False:
                    failed.append({"asset": check_key.asset_key.to_user_string(), "check": check_key.name,
                                   "partition": partition, "severity": evaluation.severity.value,
                                   "run_id": record.run_id})
    out["assets"], out["failed_checks"] = assets, failed
    return out


def _latest_materializations(instance, graph, key) -> list[tuple[str | None, object]]:
    """(partition, latest materialization event or None) for every partition of ``key``.

    One pair ``(None, event)`` for an unpartitioned asset, ``(None, None)`` for a
    partitioned one without partitions yet.
    """
    partitions_def = graph.get(key).partitions_def
    if partitions_def is None:
        return [(None, instance.get_latest_materialization_event(key))]
    from dagster._core.event_api import AssetRecordsFilter

    out = []
    keys = partitions_def.get_partition_keys(dynamic_partitions_store=instance)
    if not keys:  # no market added yet: one "never" row
        return [(None, None)]
    for partition in keys:
        records = instance.fetch_materializations(AssetRecordsFilter(asset_key=key, asset_partitions=[partition]),
                                                  limit=1).records
        out.append((partition, records[0].event_log_entry if records else None))
    return out


def _latest_check_executions(instance, check_key, history: int = 1000) -> list:
    """The latest execution of ``check_key`` per partition, as (partition, record).

    A check run inside a partitioned asset's step records no partition of its
    own (dagster 1.13, measured): it is read from the materialization the
    evaluation targets. One pair with partition None for an unpartitioned asset.
    """
    from dagster._core.event_api import AssetRecordsFilter

    latest: dict[str | None, object] = {}
    for record in instance.event_log_storage.get_asset_check_execution_history(check_key, limit=history):
        evaluation = record.evaluation
        # a check still planned (its step never finished) has an AssetCheckEvaluationPlanned: no partition, no verdict
        partition = getattr(evaluation, "partition", None) or record.partition
        target = getattr(evaluation, "target_materialization_data", None)
        if partition is None and target is not None:
            found = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=check_key.asset_key, storage_ids=[target.storage_id]), limit=1).records
            partition = found[0].partition_key if found else None
        latest.setdefault(partition, record)  # newest first
    return [(p, latest[p]) for p in sorted(latest, key=lambda p: p or "")]


@main.command()
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool) -> None:
    """Last materialization per asset, failed checks, queue depth, service health.

    Service health: Redis and the warehouse. Exit code 1 if Redis or the
    warehouse is unhealthy or an error-severity check failed.
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
            where = f" [{f['partition']}]" if f.get("partition") else ""
            console.print(f"[{color}]failed check ({f['severity'].lower()})[/{color}] {f['asset']}.{f['check']}{where} "
                          f"(run {f['run_id']})")
    if not healthy:
        raise SystemExit(1)


def collect_risk() -> dict:
    """The risk report row plus its scenario, correlation and exposure tables.

    Plain data, for --json.
    """
    from fbt_pipelines.cli.data import connect_warehouse
    from fbt_pipelines.services import warehouse as wh

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
    """The current portfolio's risk report.

    Metrics, limits' inputs, scenarios, correlations, Monte Carlo.

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
