"""Market data in: the contract catalogue as warehouse tables, bar files ingested, bar quality.

The ``market_catalog`` and ``raw_bars`` assets and ``fbt ingest`` come
through here, with the trader's catalogue (built-in markets plus their own
tables) deciding which contract codes are known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import duckdb
import pandas as pd

from fbt_pipelines.catalog.tables import catalog_tables
from fbt_pipelines.errors import FbtError
from fbt_pipelines.ingest.files import IngestResult, companion_note, ingest_path
from fbt_pipelines.marketdata.quality import spike_count
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.usecases.workspace import Workspace

FIRST_DELIVERY_YEAR = 2000
LAST_DELIVERY_YEAR = 2035


def write_catalogue(conn, workspace: Workspace, first_year: int = FIRST_DELIVERY_YEAR,
                    last_year: int = LAST_DELIVERY_YEAR) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replace the ``markets`` and ``contracts`` tables with the trader's
    catalogue: every market and every listed contract delivering in
    ``first_year``..``last_year`` with its last trade and first notice dates."""
    markets, contracts = catalog_tables(list(workspace.catalog().values()), first_year, last_year)
    wh.write_markets(conn, markets, contracts)
    return markets, contracts


@dataclass
class IngestOutcome:
    """Per stored file, its :class:`IngestResult`; per refused file, (path,
    why); per companion file of a LEAN data folder (open interest, quotes,
    margins, map and factor files: not bar files), (path, note)."""

    results: list[IngestResult] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def new(self) -> int:
        return sum(r.status == "ok" for r in self.results)

    @property
    def unchanged(self) -> int:
        return sum(r.status == "skipped" for r in self.results)


def ingest_bar_files(conn, files: Sequence[Path], workspace: Workspace, *, fmt: str | None = None,
                     strict: bool = False, mapping: Mapping[str, str] | None = None, interval: str = "1d",
                     keep_going: bool = True, preset: str | None = None,
                     on_file: Callable[[int, Path, IngestOutcome], None] | None = None) -> IngestOutcome:
    """Ingest ``files`` one transaction each (see :mod:`fbt_pipelines.ingest.files`).

    ``keep_going``: a file that fails (bad file, warehouse write refused) is
    recorded in ``failures`` with its reason and the next file goes on;
    otherwise the first failure raises. A companion file of a LEAN data
    folder (:func:`fbt_pipelines.ingest.files.companion_note`) is not
    ingested: it goes to ``skipped`` with its note (open interest is read
    with its trade zip). ``preset``: a vendor CSV layout
    (:mod:`fbt_pipelines.ingest.presets`). ``on_file(i, path, outcome)`` is
    called after each file (progress)."""
    specs = workspace.catalog()
    outcome = IngestOutcome()
    for i, path in enumerate(files, start=1):
        note = companion_note(path)
        if note is not None:
            outcome.skipped.append((str(path), note))
            if on_file is not None:
                on_file(i, path, outcome)
            continue
        try:
            outcome.results.extend(ingest_path(conn, path, fmt=fmt, strict=strict, mapping=dict(mapping or {}),
                                               interval=interval, specs=specs, preset=preset))
        except FbtError as exc:
            if not keep_going:
                raise
            outcome.failures.append((str(path), str(exc)))
        except duckdb.Error as exc:  # the warehouse refused the write (disk full, I/O): nothing of it stored
            if not keep_going:
                raise
            outcome.failures.append((str(path), f"{path}: warehouse write failed, file not stored "
                                                f"({str(exc).splitlines()[0]})"))
        if on_file is not None:
            on_file(i, path, outcome)
    return outcome


@dataclass(frozen=True)
class BarQuality:
    """What the ``raw_bars`` checks read for one market: stored rows, bad OHLC
    rows, duplicate (contract, interval, ts), quarantined rows, single-bar
    spikes, contracts and the bars (UTC)."""

    rows: int
    bad_ohlc: int
    duplicates: int
    quarantined: int
    spikes: int
    bars: pd.DataFrame


def bar_quality(conn, root: str, interval: str = "1d") -> BarQuality:
    """The stored bars of ``root`` at ``interval`` (daily by default) and their quality counts."""
    quality = wh.bar_quality(conn, root, interval)
    bars = wh.read_bars(conn, root, interval)
    return BarQuality(quality["rows"], quality["bad_ohlc"], quality["duplicates"],
                      wh.quarantine_count(conn, root, interval), spike_count(bars), bars)


def bar_files(sources: Sequence[Path]) -> list[Path]:
    """The bar files named by ``sources``: files as given, folders searched
    recursively for csv, parquet and LEAN zips (sorted), with the companion
    files of a LEAN data folder (:func:`ingest_bar_files` reports them as
    skipped, with a note)."""
    from fbt_pipelines.ingest.files import bar_sources

    out: list[Path] = []
    for p in map(Path, sources):
        out.extend(bar_sources(p, recursive=True, companions=True) if p.is_dir() else [p])
    return out


def market_contracts_listing(workspace: Workspace, root: str, first_year: int, last_year: int) -> list:
    """The market's listed contracts delivering in ``first_year``..``last_year``
    (last trade and first notice dates from its expiry rules)."""
    from fbt_pipelines.catalog.contracts import listed_contracts

    return listed_contracts(workspace.market(root), first_year, last_year)


def write_sample_bars(landing: Path, workspace: Workspace, roots: Sequence[str], start, end, seed: int = 0):
    """Deterministic per-contract daily sample bars of ``roots`` under
    ``landing/<ROOT>/`` (see :mod:`fbt_pipelines.marketdata.sample_data`)."""
    from fbt_pipelines.marketdata.sample_data import write_sample_data

    return write_sample_data(landing, [workspace.market(m) for m in roots], start, end, seed)


def import_pysystemtrade_markets(workspace: Workspace, instruments: str, rolls: str, spreads: str | None,
                                 symbols: Mapping[str, str] | None, target: Path | None = None):
    """pysystemtrade's instrument and roll configuration (CSV texts) as an fbt
    market table, validated, then written atomically to ``target`` (default
    ``<home>/markets.d/pysystemtrade.toml``). Returns (import result, path)."""
    from fbt_pipelines.catalog.pysystemtrade import import_pysystemtrade
    from fbt_pipelines.catalog.specs import USER_TABLE_DIR, parse_catalog

    result = import_pysystemtrade(instruments, rolls, spreads, dict(symbols) if symbols else None)
    parse_catalog(result.toml, "imported markets")  # validate before writing
    target = target or workspace.home / USER_TABLE_DIR / "pysystemtrade.toml"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(result.toml, encoding="utf-8")
    tmp.replace(target)
    return result, target
