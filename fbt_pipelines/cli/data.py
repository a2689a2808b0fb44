"""Market-data commands: ``fbt ingest``, ``fbt contracts``, ``fbt catalog ...``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fbt_pipelines.cli.app import console, main
from fbt_pipelines.config import paths
from fbt_pipelines.errors import FbtError


def _expand(paths_in: tuple[str, ...]) -> list[Path]:
    from fbt_pipelines.stores.ingest import bar_sources

    out: list[Path] = []
    for p in map(Path, paths_in):
        out.extend(bar_sources(p, recursive=True) if p.is_dir() else [p])
    return out


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

    from fbt_pipelines.stores.warehouse import ensure_schema

    path = paths().warehouse
    path.parent.mkdir(parents=True, exist_ok=True)
    delay = 0.25
    for attempt in range(attempts):
        try:
            conn = duckdb.connect(str(path), read_only=read_only)
            if read_only:
                conn.execute("SET TimeZone = 'UTC'")
            else:
                ensure_schema(conn)
            return conn
        except duckdb.IOException as exc:
            if attempt == attempts - 1:
                raise click.ClickException(f"{path} is locked by another process (a Dagster run?): {exc}") from None
            time.sleep(delay)
            delay = min(delay * 2, 4.0)
    raise AssertionError("unreachable")


@main.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet", "lean"]), help="Default: from the file name.")
@click.option("--strict", is_flag=True, help="Any bad row fails its whole file (nothing of it stored).")
@click.option("--map", "maps", multiple=True, help="Vendor column -> canonical, e.g. --map Vol=volume.")
@click.option("--interval", default="1d", show_default=True, help="Bar interval of CSV/Parquet files (1d, 1m).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file.")
def ingest(sources: tuple[str, ...], fmt: str | None, strict: bool, maps: tuple[str, ...], interval: str,
           as_json: bool) -> None:
    """Ingest bar files (files or folders) into the warehouse.

    \b
    Examples:
      fbt ingest vendor/ES/                     # every csv/parquet/zip below
      fbt ingest es_trade.zip                   # LEAN daily zip (+ es_openinterest.zip beside it)
      fbt ingest bars.csv --map Symbol=contract --map Date=ts --strict

    Exit code: 0 all files stored, 1 a file failed (others still stored).
    """
    from fbt_pipelines.stores.ingest import ingest_path

    files = _expand(sources)
    mapping = _mapping(maps)
    results, failures = [], []
    conn = connect_warehouse()
    try:
        with Progress(TextColumn("[bold blue]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=console, disable=as_json) as progress:
            task = progress.add_task("ingesting", total=len(files))
            for path in files:
                progress.update(task, description=path.name)
                try:
                    results.extend(ingest_path(conn, path, fmt=fmt, strict=strict, mapping=mapping, interval=interval))
                except FbtError as exc:
                    failures.append((str(path), str(exc)))
                progress.advance(task)
    finally:
        conn.close()
    if as_json:
        for r in results:
            click.echo(json.dumps({"source": r.source, "status": r.status, "rows": r.rows_read, "accepted": r.accepted,
                                   "quarantined": r.quarantined, "replaced": r.replaced, "warnings": r.warnings}))
        for path, err in failures:
            click.echo(json.dumps({"source": path, "status": "failed", "error": err}))
    elif results:
        table = Table(title=f"Ingest into {paths().warehouse}")
        for col in ["source", "status", "rows", "accepted", "quarantined", "replaced", "warnings"]:
            table.add_column(col, justify="left" if col in ("source", "status") else "right")
        for r in results:
            warn = ", ".join(f"{k}={v}" for k, v in r.warnings.items() if v) or ""
            table.add_row(escape(r.source.split("/")[-1]), r.status, f"{r.rows_read:,}", f"{r.accepted:,}",
                          f"[yellow]{r.quarantined:,}[/yellow]" if r.quarantined else "0", f"{r.replaced:,}", warn)
        console.print(table)
    if not as_json:
        for path, err in failures:
            console.print(f"[red]failed[/red] {escape(err)}")
        if any(r.quarantined for r in results):
            console.print("bad rows are in table [bold]quarantine[/bold] (file, line, raw text, reason)")
    if failures:
        raise SystemExit(1)


@main.command()
@click.argument("root")
@click.option("--from", "first", type=int, required=True, help="First delivery year.")
@click.option("--to", "last", type=int, required=True, help="Last delivery year.")
@click.option("--json", "as_json", is_flag=True)
def contracts(root: str, first: int, last: int, as_json: bool) -> None:
    """List a market's contracts with last trade and first notice dates.

    \b
    Example:
      fbt contracts CL --from 2024 --to 2024 --json
    """
    from fbt_pipelines.catalog import listed_contracts, market_spec

    if last < first:
        raise click.BadParameter(f"--to {last} is before --from {first}")
    try:
        items = listed_contracts(market_spec(root.upper()), first, last)
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
    """Every market with its contract specification."""
    from dataclasses import fields

    from fbt_pipelines.catalog import load_catalog

    specs = load_catalog()
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
    from fbt_pipelines.catalog.pysystemtrade import import_pysystemtrade
    from fbt_pipelines.catalog.specs import USER_TABLE_DIR, parse_catalog

    chosen = {}
    for item in symbols:
        sym, sep, root = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not SYMBOL=ROOT", param_hint="--symbol")
        chosen[sym] = root.upper()
    try:
        result = import_pysystemtrade(Path(instruments).read_text(), Path(rolls).read_text(),
                                      Path(spreads).read_text() if spreads else None, chosen or None)
        parse_catalog(result.toml, "imported markets")  # validate before writing
    except FbtError as exc:
        raise click.ClickException(str(exc)) from None
    target = Path(out) if out else paths().home / USER_TABLE_DIR / "pysystemtrade.toml"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(result.toml, encoding="utf-8")
    tmp.replace(target)
    console.print(f"imported {len(result.imported)} markets into {target}")
    for sym, why in result.skipped.items():
        console.print(f"[yellow]skipped[/yellow] {escape(sym)}: {escape(why)}")
