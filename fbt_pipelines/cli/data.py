"""Market-data commands: ``fbt ingest``, ``fbt contracts``, ``fbt catalog ...``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click
import pandas as pd
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fbt_pipelines.cli.app import MARKET, console, main, workspace_here
from fbt_pipelines.config import paths
from fbt_pipelines.errors import FbtError
from fbt_pipelines.ingest.presets import PRESET_NAMES


def _mapping(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        vendor, sep, ours = item.partition("=")
        if not sep or not vendor or not ours:
            raise click.BadParameter(f"{item!r} is not VENDOR_COLUMN=CANONICAL_COLUMN", param_hint="--map")
        out[vendor.strip().lower()] = ours.strip().lower()
    return out


def connect_warehouse(read_only: bool = False, attempts: int = 8):
    """Open the warehouse, waiting (with backoff) while another process writes it."""
    import duckdb

    from fbt_pipelines.services.warehouse import ensure_schema

    path = paths().warehouse
    path.parent.mkdir(parents=True, exist_ok=True)
    delay = 0.25
    for attempt in range(attempts):
        try:
            conn = duckdb.connect(str(path), read_only=read_only)
            ensure_schema(conn)  # UTC session; tables only on a writable connection
            return conn
        except duckdb.IOException as exc:
            if attempt == attempts - 1:
                raise click.ClickException(f"{path} is locked by another process (a Dagster run?): {exc}") from None
            time.sleep(delay)
            delay = min(delay * 2, 4.0)
    raise AssertionError("unreachable")


@main.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet", "lean", "dbn"]),
              help="Default: from the file name (.dbn, .dbn.zst: Databento DBN).")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default=None,
              help="Vendor CSV layout: csi, norgate (per-contract daily files), pysystemtrade (multiple prices).")
@click.option("--strict", is_flag=True, help="Any bad row fails its whole file (nothing of it stored).")
@click.option("--map", "maps", multiple=True, help="Vendor column -> canonical, e.g. --map Vol=volume.")
@click.option("--interval", default="1d", show_default=True,
              help="Bar interval of CSV/Parquet files (1d, 1m); DBN files and presets carry their own.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file.")
def ingest(sources: tuple[str, ...], fmt: str | None, preset: str | None, strict: bool, maps: tuple[str, ...],
           interval: str, as_json: bool) -> None:
    """Ingest bar files (files or folders) into the warehouse.

    \b
    Examples:
      fbt ingest vendor/ES/                     # every csv/parquet/zip/dbn below
      fbt ingest es_trade.zip                   # LEAN daily zip (+ es_openinterest.zip beside it)
      fbt ingest bars.csv --map Symbol=contract --map Date=ts --strict
      fbt ingest glbx-mdp3.ohlcv-1m.dbn.zst     # Databento (+ *definition*.dbn beside it)
      fbt ingest ES-2024Z.csv --preset norgate  # vendor layouts: csi, norgate, pysystemtrade

    The other files of a LEAN data folder are listed as skipped with a note
    (open interest: read with its trade zip; quotes, margins, map and factor
    files: not used), and so are Databento definition files (read with the
    DBN bar files beside them). See docs/vendor-files.md.

    Exit code: 0 all files stored (or skipped), 1 a file failed (others still stored).
    """
    from fbt_pipelines.usecases.market_data import bar_files, ingest_bar_files

    files = bar_files([Path(s) for s in sources])
    conn = connect_warehouse()
    try:
        with Progress(TextColumn("[bold blue]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=console, disable=as_json) as progress:
            task = progress.add_task("ingesting", total=len(files))
            outcome = ingest_bar_files(
                conn, files, workspace_here(), fmt=fmt, strict=strict, mapping=_mapping(maps), interval=interval,
                preset=preset, on_file=lambda i, path, _o: progress.update(task, completed=i, description=path.name))
    finally:
        conn.close()
    results, failures, skipped = outcome.results, outcome.failures, outcome.skipped
    if as_json:
        for r in results:
            click.echo(json.dumps({"source": r.source, "status": r.status, "rows": r.rows_read, "accepted": r.accepted,
                                   "quarantined": r.quarantined, "replaced": r.replaced, "warnings": r.warnings,
                                   **({"notes": list(r.notes)} if r.notes else {})}))
        for path, note in skipped:  # companions of a LEAN folder: nothing read from them as bars
            click.echo(json.dumps({"source": path, "status": "skipped", "rows": 0, "accepted": 0, "quarantined": 0,
                                   "replaced": 0, "warnings": {}, "note": note}))
        for path, err in failures:
            click.echo(json.dumps({"source": path, "status": "failed", "error": err}))
    elif results or skipped:
        table = Table(title=f"Ingest into {paths().warehouse}")
        columns = ["source", "status", "rows", "accepted", "quarantined", "replaced", "warnings"]
        for col in columns + (["note"] if skipped else []):
            table.add_column(col, justify="left" if col in ("source", "status", "note") else "right")
        for r in results:
            warn = ", ".join(f"{k}={v}" for k, v in r.warnings.items() if v) or ""
            table.add_row(escape(r.source.split("/")[-1]), r.status, f"{r.rows_read:,}", f"{r.accepted:,}",
                          f"[yellow]{r.quarantined:,}[/yellow]" if r.quarantined else "0", f"{r.replaced:,}", warn)
        for path, note in skipped:
            table.add_row(escape(Path(path).name), "skipped", "", "", "", "", "", escape(note))
        console.print(table)
    if not as_json:
        for r in results:  # e.g. a DBN file's skipped spreads and options, unused vendor columns
            for note in r.notes:
                console.print(f"[dim]{escape(r.source.split('/')[-1])}: {escape(note)}[/dim]")
        for path, err in failures:
            console.print(f"[red]failed[/red] {escape(err)}")
        if any(r.quarantined for r in results):
            console.print("bad rows are in table [bold]quarantine[/bold] (file, line, raw text, reason)")
    if failures:
        raise SystemExit(1)


@main.command()
@click.argument("root", type=MARKET)
@click.option("--from", "first", type=int, default=None,
              help="First delivery year (default: the current year, UTC).")
@click.option("--to", "last", type=int, default=None, help="Last delivery year (default: --from + 1).")
@click.option("--json", "as_json", is_flag=True)
def contracts(root: str, first: int | None, last: int | None, as_json: bool) -> None:
    """List a market's contracts with last trade and first notice dates.

    Without --from/--to: this year's and next year's deliveries (UTC).

    \b
    Examples:
      fbt contracts ES
      fbt contracts CL --from 2024 --to 2024 --json
    """
    import datetime as dt

    from fbt_pipelines.usecases.market_data import market_contracts_listing

    first = dt.datetime.now(dt.UTC).year if first is None else first
    last = first + 1 if last is None else last
    if last < first:
        raise click.BadParameter(f"--to {last} is before --from {first}", param_hint="--to")
    try:
        items = market_contracts_listing(workspace_here(), root, first, last)
    except FbtError as exc:
        raise click.ClickException(str(exc)) from None
    rows = [{"contract": c.contract_id, "last_trade": c.last_trade.isoformat(),
             "first_notice": c.first_notice.isoformat() if c.first_notice else None} for c in items]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{root.upper()} contracts {first}-{last}")
    for col in ["contract", "last_trade", "first_notice"]:
        table.add_column(col)
    for r in rows:
        table.add_row(r["contract"], r["last_trade"], r["first_notice"] or "-")
    console.print(table)


@main.group()
def catalog() -> None:
    """The contract catalogue (built-in markets + $FBT_HOME/markets.toml and markets.d/)."""


@catalog.command("list")
@click.option("--json", "as_json", is_flag=True)
def catalog_list(as_json: bool) -> None:
    """Every market with its contract specification (also `fbt markets`).

    \b
    Examples:
      fbt catalog list
      fbt catalog list --json | jq '.[].root'
    """
    from dataclasses import fields

    specs = workspace_here().catalog()
    if as_json:
        names = [f.name for f in fields(next(iter(specs.values()))) if f.name != "sample"]
        click.echo(json.dumps([{k: getattr(s, k) for k in names} for s in specs.values()], indent=2))
        return
    table = Table(title=f"{len(specs)} markets")
    for col in ["root", "name", "exchange", "multiplier", "tick", "cycle", "expiry rule", "comm.", "init. margin"]:
        table.add_column(col)
    for s in specs.values():
        table.add_row(s.root, s.name, s.exchange, f"{s.multiplier:g}", f"{s.tick_size:g}", s.cycle, s.expiry_rule,
                      f"{s.commission:.2f}", f"{s.initial_margin:,.0f}")
    console.print(table)


@main.command("markets")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def markets_cmd(ctx: click.Context, as_json: bool) -> None:
    """Every market with its contract specification (as `fbt catalog list`).

    \b
    Examples:
      fbt markets
      fbt markets --json | jq '.[] | {root, multiplier}'
    """
    ctx.invoke(catalog_list, as_json=as_json)


@catalog.command("import-pysystemtrade")
@click.argument("instruments", type=click.Path(exists=True, dir_okay=False))
@click.argument("rolls", type=click.Path(exists=True, dir_okay=False))
@click.option("--spreads", type=click.Path(exists=True, dir_okay=False), help="spreadcosts.csv (tick estimate).")
@click.option("--symbol", "symbols", multiple=True, help="SYMBOL=ROOT, repeatable (e.g. --symbol GOLD_micro=MGC).")
@click.option("--out", type=click.Path(dir_okay=False), help="Default: $FBT_HOME/markets.d/pysystemtrade.toml")
def catalog_import(instruments: str, rolls: str, spreads: str | None, symbols: tuple[str, ...], out: str | None) -> None:
    """Import pysystemtrade instrumentconfig.csv + rollconfig.csv as fbt markets.

    \b
    Example:
      fbt catalog import-pysystemtrade instrumentconfig.csv rollconfig.csv --spreads spreadcosts.csv
    """
    from fbt_pipelines.usecases.market_data import import_pysystemtrade_markets

    chosen = {}
    for item in symbols:
        sym, sep, root = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not SYMBOL=ROOT", param_hint="--symbol")
        chosen[sym] = root.upper()
    try:
        result, target = import_pysystemtrade_markets(
            workspace_here(), Path(instruments).read_text(), Path(rolls).read_text(),
            Path(spreads).read_text() if spreads else None, chosen or None, Path(out) if out else None)
    except FbtError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"imported {len(result.imported)} markets into {target}")
    for sym, why in result.skipped.items():
        console.print(f"[yellow]skipped[/yellow] {escape(sym)}: {escape(why)}")


@main.command()
@click.argument("root", type=MARKET)
@click.option("--rule", default="", help="volume | open_interest | calendar:N | first_of_month | day_of_month:D "
              "(options: ,hold=Z ,backstop=N). Default: the market's catalogue rule.")
@click.option("--method", type=click.Choice(["panama", "ratio", "none", "forward_panama"]), default="panama",
              show_default=True)
@click.option("--depth", type=int, default=None, help="1 = front contract, 2 = the one after it, ...")
@click.option("--interval", default="1d", show_default=True)
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), help="First bar date (UTC) to use.")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), help="Last bar date (UTC) to use.")
@click.option("--json", "as_json", is_flag=True, help='Print {"rolls": [...], "rows": N}.')
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write the series to this CSV.")
def continuous(root: str, rule: str, method: str, depth: int | None, interval: str, start, end, as_json: bool,
               csv_path: str | None) -> None:
    """Build the roll schedule and continuous series of ROOT from the bars in the warehouse.

    \b
    The market's default (catalogue rule, Panama, all daily bars) is what the
    pipeline uses: this materializes the roll_schedule and continuous_prices
    assets for ROOT through Dagster (job continuous_market, recorded in the
    instance like any run). Any other rule, method, depth, interval or window
    goes to roll_schedule_variants / continuous_variants under the key
    ROOT|rule|method.
    \b
    Examples:
      fbt ingest es_trade.zip && fbt continuous ES --rule volume --json
      fbt continuous CL --rule calendar:5,hold=Z --method ratio --csv cl_dec.csv
    """
    from fbt_pipelines.services import warehouse as wh
    from fbt_pipelines.usecases.continuous import (continuous_variant, is_default_series, market_contracts,
                                                   roll_rule_for, store_variant, variant_key)

    workspace = workspace_here()
    spec = workspace.market(root)
    try:
        parsed = roll_rule_for(spec, rule, depth)
    except FbtError as exc:
        raise click.ClickException(str(exc)) from None
    if is_default_series(spec, rule, method, depth, start is not None or end is not None, interval):
        prices, schedule = _materialize_continuous(root, rule)
        where = "roll_schedule / continuous_prices (Dagster job continuous_market)"
        non_positive = bool((prices["low"] <= 0).any())
    else:
        conn = connect_warehouse()
        try:
            bars = wh.read_bars(conn, root, interval)
            if start is not None:
                bars = bars[bars["ts"] >= pd.Timestamp(start, tz="UTC")]
            if end is not None:
                bars = bars[bars["ts"] < pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)]
            if bars.empty:
                raise click.ClickException(f"no {interval} bars for {root} in {paths().warehouse}: run `fbt ingest` first")
            try:
                series = continuous_variant(spec, bars, market_contracts(conn, spec, bars), parsed, method)
            except FbtError as exc:
                raise click.ClickException(str(exc)) from None
            key = variant_key(spec, parsed, method)
            store_variant(conn, key, series)
        finally:
            conn.close()
        prices, schedule, non_positive = series.prices, series.schedule, series.non_positive
        where = f"roll_schedule_variants / continuous_variants (series {key!r})"
    if csv_path:
        prices.to_csv(csv_path, index=False)
    rolls = [{"date": r.roll_date.strftime("%Y-%m-%d"), "from": r.from_contract, "to": r.to_contract,
              "gap": float(r.gap), "ratio": float(r.ratio)} for r in schedule.itertuples()]
    if as_json:
        click.echo(json.dumps({"rolls": rolls, "rows": len(prices), "rule": parsed.label, "method": method,
                               "non_positive_prices": non_positive}, indent=2))
        return
    table = Table(title=f"{root} rolls ({parsed.label}, {method}) -> {escape(where)}")
    for col in ["date", "from", "to", "gap (points)", "ratio"]:
        table.add_column(col)
    for r in rolls:
        table.add_row(r["date"], r["from"], r["to"], f"{r['gap']:.4f}", f"{r['ratio']:.6f}")
    console.print(table)
    console.print(f"{len(prices):,} rows" + (" [yellow](non-positive adjusted prices)[/yellow]" if non_positive else ""))


def _materialize_continuous(root: str, rule: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Materialize ``root``'s roll_schedule and continuous_prices in the local
    Dagster instance (in process) and read back what they stored."""
    from dagster import DagsterInstance

    from fbt_pipelines.location.instance import ensure_dagster_home
    from fbt_pipelines.location.pipeline_runner import PipelineFailed, run_job
    from fbt_pipelines.services import warehouse as wh

    previous = os.environ.get("DAGSTER_HOME")
    ensure_dagster_home()
    config = {"ops": {"roll_schedule": {"config": {"rule": rule}}}} if rule else None
    try:
        with DagsterInstance.get() as instance:
            run_job(instance, "continuous_market", root, run_config=config)
    except PipelineFailed as exc:
        raise click.ClickException(str(exc)) from None
    finally:  # the instance is this command's; leave the caller's environment as it was
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous
    conn = connect_warehouse(read_only=True)
    try:
        return (wh.read_partition(conn, "continuous_prices", root, order_by=["ts"]),
                wh.read_partition(conn, "roll_schedule", root, order_by=["roll_date"]))
    finally:
        conn.close()


@main.command("backup")
@click.argument("dest", type=click.Path(file_okay=False))
def backup_cmd(dest: str) -> None:
    """Back up FBT_HOME (warehouse, MLflow, catalogue and margin files, Dagster storage) to DEST.

    \b
    Example:
      fbt backup /backups/fbt-$(date +%F)
    """
    from fbt_pipelines.services.backup import backup

    try:
        manifest = backup(paths(), Path(dest))
    except FbtError as exc:
        raise click.ClickException(str(exc)) from None
    rows = sum(t["rows"] for t in manifest["warehouse"].values())
    console.print(f"backed up {len(manifest['warehouse'])} tables ({rows:,} rows) to {dest}")


@main.command("restore")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.option("--force", is_flag=True, help="Replace an existing warehouse.")
def restore_cmd(src: str, force: bool) -> None:
    """Restore a backup into FBT_HOME and verify every table's rows and checksum."""
    from fbt_pipelines.services.backup import restore

    try:
        restored = restore(Path(src), paths(), force)
    except FbtError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"restored {len(restored)} tables into {paths().home}; row counts and checksums match the backup")
