"""Market-data commands: ``fbt ingest``, ``fbt contracts``, ``fbt catalog ...``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import pandas as pd
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
    import duckdb

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
                except duckdb.Error as exc:  # the warehouse refused the write (disk full, I/O): nothing of it stored
                    failures.append((str(path), f"{path}: warehouse write failed, file not stored "
                                                f"({str(exc).splitlines()[0]})"))
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


@main.command()
@click.argument("root")
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
    The market's default (catalogue rule, Panama) is stored in tables
    roll_schedule / continuous_prices, which the pipeline uses; any other
    rule or method goes to roll_schedule_variants / continuous_variants under
    the key ROOT|rule|method.
    \b
    Examples:
      fbt ingest es_trade.zip && fbt continuous ES --rule volume --json
      fbt continuous CL --rule calendar:5,hold=Z --method ratio --csv cl_dec.csv
    """
    from fbt_pipelines.catalog import market_spec
    from fbt_pipelines.catalog.contracts import listed_contracts
    from fbt_pipelines.futures.continuous import build_continuous
    from fbt_pipelines.futures.roll_rules import RollRule
    from fbt_pipelines.stores import warehouse as wh

    root = root.upper()
    try:
        spec = market_spec(root)
        parsed = RollRule.parse(rule or spec.roll_rule, spec)
        if depth is not None:
            parsed = RollRule(parsed.kind, parsed.days_before, parsed.day, parsed.hold, depth)
    except FbtError as exc:
        raise click.ClickException(str(exc)) from None
    conn = connect_warehouse()
    try:
        bars = wh.read_bars(conn, root, interval)
        if start is not None:
            bars = bars[bars["ts"] >= pd.Timestamp(start, tz="UTC")]
        if end is not None:
            bars = bars[bars["ts"] < pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)]
        if bars.empty:
            raise click.ClickException(f"no {interval} bars for {root} in {paths().warehouse}: run `fbt ingest` first")
        years = bars["ts"].dt.year
        contracts = listed_contracts(spec, int(years.min()) - 1, int(years.max()) + 3)
        try:
            series = build_continuous(root, contracts, bars, parsed, method)
        except FbtError as exc:
            raise click.ClickException(str(exc)) from None
        is_default = ((not rule or rule == spec.roll_rule) and method == "panama" and depth in (None, 1)
                      and start is None and end is None)
        if is_default:
            wh.replace_partition(conn, "roll_schedule", root, series.schedule)
            wh.replace_partition(conn, "continuous_prices", root, series.prices)
            where = "roll_schedule / continuous_prices"
        else:
            key = f"{root}|{parsed.label}|{method}"
            wh.replace_partition(conn, "roll_schedule_variants", key, series.schedule.assign(series=key))
            wh.replace_partition(conn, "continuous_variants", key, series.prices.assign(series=key))
            where = f"roll_schedule_variants / continuous_variants (series {key!r})"
    finally:
        conn.close()
    if csv_path:
        series.prices.to_csv(csv_path, index=False)
    rolls = [{"date": r.roll_date.strftime("%Y-%m-%d"), "from": r.from_contract, "to": r.to_contract,
              "gap": float(r.gap), "ratio": float(r.ratio)} for r in series.schedule.itertuples()]
    if as_json:
        click.echo(json.dumps({"rolls": rolls, "rows": len(series.prices), "rule": parsed.label, "method": method,
                               "non_positive_prices": series.non_positive}, indent=2))
        return
    table = Table(title=f"{root} rolls ({parsed.label}, {method}) -> {escape(where)}")
    for col in ["date", "from", "to", "gap (points)", "ratio"]:
        table.add_column(col)
    for r in rolls:
        table.add_row(r["date"], r["from"], r["to"], f"{r['gap']:.4f}", f"{r['ratio']:.6f}")
    console.print(table)
    console.print(f"{len(series.prices):,} rows" + (" [yellow](non-positive adjusted prices)[/yellow]"
                                                     if series.non_positive else ""))


@main.command("backup")
@click.argument("dest", type=click.Path(file_okay=False))
def backup_cmd(dest: str) -> None:
    """Back up FBT_HOME (warehouse, MLflow, catalogue and margin files, Dagster storage) to DEST.

    \b
    Example:
      fbt backup /backups/fbt-$(date +%F)
    """
    from fbt_pipelines.stores.backup import backup

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
    from fbt_pipelines.stores.backup import restore

    try:
        restored = restore(Path(src), paths(), force)
    except FbtError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"restored {len(restored)} tables into {paths().home}; row counts and checksums match the backup")
