"""Ingest bar files into the warehouse: stage, validate, store in one transaction.

Formats:

- ``csv``: canonical header ``contract,ts,open,high,low,close,volume`` plus
  optional ``open_interest`` (``date`` is accepted for ``ts``; a file without a
  ``contract`` column takes the contract from its name, e.g. ``ESZ2013.csv``).
  ``ts`` is ISO 8601, UTC unless it carries an offset. Other vendors' headers
  map through ``mapping`` (vendor column -> canonical column).
- ``parquet``: the same columns.
- ``dbn``: Databento DBN files (``.dbn``, ``.dbn.zst``; OHLCV 1s/1m/1h/1d with
  instrument definitions; see :mod:`fbt_pipelines.ingest.dbn`). The interval
  is the file's schema; definition files are companions read with the OHLCV
  files beside them.
- a CSV ``preset`` (``csi``, ``norgate``, ``pysystemtrade``: see
  :mod:`fbt_pipelines.ingest.presets`): a vendor layout read by its own
  column map and date/time/timezone rules, no ``mapping`` needed.
- ``lean``: QuantConnect LEAN zips (see :mod:`fbt_pipelines.marketdata.lean`).
  The other files of a LEAN data folder are companions, not bar files
  (:func:`companion_note`: open interest is read with its trade zip; quotes,
  margins, map and factor files are not used).

Every source file becomes one staged relation in DuckDB (line number, raw
text, fields parsed with ``TRY_CAST`` so a bad value is NULL, never an abort;
see :mod:`fbt_pipelines.ingest.staging`), is validated, and lands in one
transaction: the ``ingests`` row, the accepted ``bars`` (rows with the same
(contract, interval, ts) are replaced, and counted), the ``quarantine`` rows.
Same bytes again -> nothing changes. File-level problems raise
:class:`DataError` naming the file, before anything is written.

Validation: files of fewer than ``SQL_RULES_MIN_ROWS`` rows go through the
pandera rules (:func:`fbt_pipelines.marketdata.validation.validate_staged`,
the specification); larger ones through the same rules as SQL inside DuckDB
(:mod:`fbt_pipelines.ingest.sql_validation`), so only rejected lines come
back to Python and the accepted rows go to ``bars`` in one ``INSERT ...
SELECT``. A property test shows both give the same rows and reasons.

Bulk path: a large CSV whose first code is already an fbt contract id first
goes straight from DuckDB's typed CSV reader into ``bars`` with the row rules
inside the INSERT, and is checked on the stored rows
(:mod:`fbt_pipelines.ingest.bulk_csv`); any doubt rolls that back and the
file takes the staged path above. Both store the same rows (tested).

Idempotence key: the file's name, interval and content hash (BLAKE3, see
:mod:`fbt_pipelines.ingest.file_hash`; SHA-256 keys of older versions are
still recognised).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Mapping

import duckdb
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec, load_catalog
from fbt_pipelines.errors import DataError
from fbt_pipelines.services.limits import check_ingest_file
from fbt_pipelines.marketdata.lean import lean_companion, read_lean_zip
from fbt_pipelines.marketdata.validation import validate_staged
from fbt_pipelines.ingest import bulk_arrays
from fbt_pipelines.ingest.bulk_csv import BulkChecks, bulk_plan, ingest_bulk_csv
from fbt_pipelines.ingest.dbn import is_dbn, is_definition_file, read_dbn_bars
from fbt_pipelines.ingest.presets import preset_of, read_preset
from fbt_pipelines.ingest.file_hash import content_hash, content_hash_of_text, legacy_sha256
from fbt_pipelines.ingest.sql_validation import stored_closes_before, validate_in_db
from fbt_pipelines.ingest.staging import (FileScan, contract_map, drop_staging, scan_file, stage_arrays, stage_csv,
                                          stage_frame, stage_parquet, staged_frame)
from fbt_pipelines.services.warehouse import ensure_schema, transaction

FORMATS = ("csv", "parquet", "lean", "dbn")
SUPPORTED_SUFFIXES = (".csv", ".txt", ".parquet", ".pq", ".zip", ".dbn", ".dbn.zst")
# Files with at least this many data rows are validated in SQL (pandera below it).
SQL_RULES_MIN_ROWS = 20_000


@dataclass(frozen=True)
class IngestResult:
    """Outcome of one source file (a LEAN zip yields one per inner CSV)."""

    ingest_id: str
    source: str
    status: str  # "ok" | "skipped" (same bytes already ingested)
    rows_read: int
    accepted: int
    quarantined: int
    replaced: int
    roots: tuple[str, ...]
    warnings: dict[str, int]
    method: str = "staged"  # "bulk": the file went straight into bars (fbt_pipelines/ingest/bulk_csv.py)
    notes: tuple[str, ...] = ()  # e.g. a DBN file's skipped spreads and options, one line per instrument


def bar_sources(folder: Path, recursive: bool = False, companions: bool = False) -> list[Path]:
    """Ingestible files in ``folder``, sorted. The other files of a LEAN data
    folder (open interest, quotes, margins, map and factor files, other
    resolutions: :func:`companion_note`) are not sources of their own; with
    ``companions`` they are listed too, for an ingest to report them."""
    files = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(f for f in files if f.is_file() and f.name.lower().endswith(SUPPORTED_SUFFIXES)
                  and not f.name.startswith(".") and (companions or companion_note(f) is None))


def companion_note(path: Path) -> str | None:
    """What a file of a LEAN data folder is when it is not a bar file the
    ingest reads, and how it is used (e.g. ``open interest: used with
    es_trade.zip``); None for a bar file. By name and folder only
    (:func:`fbt_pipelines.marketdata.lean.lean_companion`); a Databento
    definition file (``*definition*.dbn[.zst]``) is read with the OHLCV DBN
    files beside it."""
    if is_definition_file(Path(path)):
        return "instrument definitions: used with the DBN bar files beside it"
    return lean_companion(Path(path))


def _ingest_id(source: str, interval: str, content_hash: str) -> str:
    """Same file name, interval and bytes -> same id (the idempotence key)."""
    return hashlib.sha256(f"{source.rsplit('/', 1)[-1]}:{interval}:{content_hash}".encode()).hexdigest()[:24]


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if is_dbn(path):
        return "dbn"
    if name.endswith(".zip"):
        return "lean"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".txt")):
        return "csv"
    raise DataError(f"{path}: cannot tell the format from the name; pass --format csv|parquet|lean|dbn")


def _replace_older(conn: duckdb.DuckDBPyConnection, interval: str, contracts: list[str], new_keys: str,
                   params: list, ts_range: Callable[[], tuple], new_ingest_id: str | None = None) -> int:
    """Delete the stored bars that a new row replaces (same contract,
    ``interval`` and ts) and return how many. ``new_keys``: SELECT of the new
    rows' (contract, ts) with ``params``; ``ts_range``: their (min, max) ts,
    asked only if ``bars`` holds these contracts at all; ``new_ingest_id``:
    the new rows' id when they are already in ``bars`` (they are not replaced)."""
    if not contracts:
        return 0
    marks = ", ".join("?" * len(contracts))
    mine, mine_params = (" AND b.ingest_id <> ?", [new_ingest_id]) if new_ingest_id else ("", [])
    held = f"FROM bars b WHERE b.interval = ? AND b.contract IN ({marks}){mine}"
    if not conn.execute(f"SELECT count(*) {held}", [interval, *contracts, *mine_params]).fetchall()[0][0]:
        return 0
    # overlap with stored bars of these contracts: a range probe first, the key join only if needed
    lo, hi = ts_range()
    if not conn.execute(f"SELECT count(*) {held} AND b.ts BETWEEN ? AND ?",
                        [interval, *contracts, *mine_params, lo, hi]).fetchall()[0][0]:
        return 0
    conn.execute(f"CREATE OR REPLACE TEMP TABLE new_keys AS {new_keys}", params)
    try:
        match = f"b.contract = k.contract AND b.ts = k.ts AND b.interval = ?{mine}"
        replaced = conn.execute(f"SELECT count(*) FROM bars b JOIN new_keys k ON {match}",
                                [interval, *mine_params]).fetchall()[0][0]
        if replaced:
            conn.execute(f"DELETE FROM bars b USING new_keys k WHERE {match}", [interval, *mine_params])
    finally:
        conn.execute("DROP TABLE IF EXISTS temp.new_keys")
    return int(replaced)


def _record_ingest(conn: duckdb.DuckDBPyConnection, result: IngestResult, content_hash: str, fmt: str,
                   interval: str, started: dt.datetime) -> IngestResult:
    """The ``ingests`` row of ``result`` and a new data version of each of its roots."""
    conn.execute(
        """INSERT INTO ingests (ingest_id, path, contract, root, content_hash, rows_read, accepted, quarantined,
                                status, started_at, finished_at, replaced, format, interval, warnings)
           VALUES (?, ?, NULL, ?, ?, ?, ?, ?, 'ok', ?, ?, ?, ?, ?, ?)""",
        [result.ingest_id, result.source, ",".join(result.roots), content_hash, result.rows_read, result.accepted,
         result.quarantined, started, dt.datetime.now(dt.UTC), result.replaced, fmt, interval,
         json.dumps(result.warnings, sort_keys=True)],
    )
    for root in result.roots:
        _bump_bars_version(conn, root, result.ingest_id)
    return result


def _store(conn: duckdb.DuckDBPyConnection, ingest_id: str, source: str, content_hash: str, fmt: str,
           interval: str, reasons: pd.DataFrame, cmap: pd.DataFrame, rows_read: int,
           warnings: dict[str, int], strict: bool, roots: tuple[str, ...]) -> IngestResult:
    """One transaction: bars (replacing same keys), quarantine, the ingests row.

    The accepted rows are the staged rows not in ``reasons``; they go from
    the staged relation to ``bars`` in one ``INSERT ... SELECT``."""
    if strict and len(reasons):
        first = reasons.iloc[0]
        raise DataError(f"{source}: line {int(first['line'])}: {first['reason']} "
                        f"(--strict: {len(reasons)} bad row(s), nothing stored)")
    started = dt.datetime.now(dt.UTC)
    accepted = rows_read - len(reasons)
    keep = "s.line NOT IN (SELECT line FROM rejects)" if len(reasons) else "true"
    staged = "staged" if len(reasons) else "staged_values"  # line numbers only to exclude rejected rows
    new_rows = f"""{staged} s JOIN contract_map m ON s.contract_raw IS NOT DISTINCT FROM m.contract_raw
                   WHERE {keep}"""
    contracts = sorted(cmap["contract"].dropna().unique())
    good = cmap.dropna(subset=["contract"])
    if len(roots) == 1 and len(good) and (good["contract_raw"] == good["contract"]).all():
        # codes already fbt ids, one market: no map join (rejected rows are excluded by line)
        select_new, source_rows, params = "s.contract_raw, ?", f"{staged} s WHERE {keep}", [roots[0]]
    else:
        select_new, source_rows, params = "m.contract, m.root", new_rows, []
    with transaction(conn, contract_map=cmap, rejects=reasons):
        replaced = 0
        if accepted:
            replaced = _replace_older(
                conn, interval, contracts, f"SELECT m.contract, s.ts FROM {new_rows}", [],
                lambda: conn.execute(f"SELECT min(s.ts), max(s.ts) FROM {new_rows}").fetchall()[0])
        conn.execute(
            f"""INSERT INTO bars (contract, root, interval, ts, open, high, low, close, volume, open_interest,
                                  ingest_id)
                SELECT {select_new}, ?, s.ts, s.open, s.high, s.low, s.close,
                       CAST(s.volume AS BIGINT), CAST(s.open_interest AS BIGINT), ?
                FROM {source_rows}""",
            [*params, interval, ingest_id],
        )
        if len(reasons):
            conn.execute(
                """INSERT INTO quarantine (ingest_id, file, line, raw, reason)
                   SELECT ?, ?, r.line, s.raw, r.reason FROM rejects r JOIN staged_raw s USING (line)
                   ORDER BY r.line""",
                [ingest_id, source],
            )
        result = IngestResult(ingest_id, source, "ok", rows_read, int(accepted), len(reasons), int(replaced),
                              tuple(roots), warnings)
        return _record_ingest(conn, result, content_hash, fmt, interval, started)


def _bump_bars_version(conn: duckdb.DuckDBPyConnection, root: str, ingest_id: str) -> None:
    """The bars of ``root`` changed: chain a new data version (cache keys follow it)."""
    row = next(iter(conn.execute("SELECT data_version FROM data_versions WHERE tbl = 'bars' AND key = ?",
                                 [root]).fetchall()), None)
    version = hashlib.sha256(f"{row[0] if row else ''}:{ingest_id}".encode()).hexdigest()[:16]
    n = conn.execute("SELECT count(*) FROM bars WHERE root = ?", [root]).fetchall()[0][0]
    conn.execute("INSERT OR REPLACE INTO data_versions VALUES ('bars', ?, ?, ?, ?)",
                 [root, version, n, dt.datetime.now(dt.UTC)])


def _already_or_legacy(conn: duckdb.DuckDBPyConnection, ingest_id: str, source: str, interval: str,
                       legacy_hash: Callable[[], str]) -> IngestResult | None:
    """The earlier ingest of the same bytes, if any: by ``ingest_id``, else
    (only if an ingest by an older fbt, with a SHA-256 content hash, names a
    file of this name) by the id that older fbt gave it (``legacy_hash``:
    the file's content hash in that form, computed only then)."""
    done = _already(conn, ingest_id, source)
    if done is not None:
        return done
    name = source.rsplit("/", 1)[-1]
    if not conn.execute("SELECT count(*) FROM ingests WHERE status = 'ok' AND content_hash NOT LIKE 'blake3:%' "
                        "AND (path = $name OR ends_with(path, '/' || $name))", {"name": name}).fetchall()[0][0]:
        return None
    return _already(conn, _ingest_id(source, interval, legacy_hash()), source)


def _already(conn: duckdb.DuckDBPyConnection, ingest_id: str, source: str) -> IngestResult | None:
    row = conn.execute(
        "SELECT rows_read, accepted, quarantined, root FROM ingests WHERE ingest_id = ? AND status = 'ok'",
        [ingest_id]).fetchall()
    row = row[0] if row else None
    if not row:
        return None
    return IngestResult(ingest_id, source, "skipped", row[0], row[1], row[2], 0,
                        tuple(r for r in (row[3] or "").split(",") if r), {})


def _validate(conn: duckdb.DuckDBPyConnection, cmap: pd.DataFrame, interval: str,
              specs: Mapping[str, ContractSpec]) -> tuple[pd.DataFrame, dict[str, int], tuple[str, ...], int]:
    """(rejected lines with reasons, warnings, accepted roots, rows read) of the staged file."""
    rows = conn.execute("SELECT count(*) FROM staged_values").fetchall()[0][0]
    previous = functools.partial(stored_closes_before, conn, interval)  # where the band rule starts
    if rows >= SQL_RULES_MIN_ROWS:
        checked = validate_in_db(conn, cmap, interval, specs, previous_close=previous)
        return checked.reasons, checked.warnings, checked.roots, rows
    staged = staged_frame(conn, cmap)
    check = validate_staged(staged, interval, specs, previous_close=previous)
    bad = ~check.accepted
    reasons = pd.DataFrame({"line": staged["line"].to_numpy()[bad], "reason": check.reasons.to_numpy()[bad]})
    roots = sorted({c[:-5] for c in staged["contract"][check.accepted].dropna().unique()})
    return reasons, check.warnings, tuple(roots), len(staged)


def _ingest_staged(conn, source: str, content_hash: str, fmt: str, interval: str, default_contract: str | None,
                   specs: Mapping[str, ContractSpec], strict: bool, legacy_hash: Callable[[], str],
                   skipped: Mapping[str, int] | None = None, notes: tuple[str, ...] = ()) -> IngestResult:
    """Validate and store the staged file; ``skipped``: records left out
    before staging (DBN spreads, options), added to the warnings."""
    ingest_id = _ingest_id(source, interval, content_hash)
    done = _already_or_legacy(conn, ingest_id, source, interval, legacy_hash)
    if done:
        return done
    cmap = contract_map(conn, default_contract, specs)
    reasons, warnings, roots, rows = _validate(conn, cmap, interval, specs)
    warnings = {**warnings, **dict(skipped or {})}
    result = _store(conn, ingest_id, source, content_hash, fmt, interval, reasons, cmap, rows, warnings, strict,
                    roots)
    return replace(result, notes=tuple(notes)) if notes else result


def default_contract_for(path: Path) -> str | None:
    stem = path.name.split(".")[0]
    return stem if stem[:1].isalnum() else None


def ingest_path(conn: duckdb.DuckDBPyConnection, path: Path, fmt: str | None = None, strict: bool = False,
                mapping: Mapping[str, str] | None = None, interval: str = "1d",
                specs: Mapping[str, ContractSpec] | None = None, preset: str | None = None) -> list[IngestResult]:
    """Ingest one file (a LEAN zip: each inner CSV) and return what happened.

    ``preset``: a vendor CSV layout (:mod:`fbt_pipelines.ingest.presets`);
    then ``mapping`` and ``interval`` do not apply. Raises
    :class:`DataError` (naming the file) for a file-level problem; nothing
    of that file is stored then.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if preset is not None:
        preset_of(preset)  # an unknown name lists the known ones
        if fmt not in (None, "csv") or is_dbn(path) or path.name.lower().endswith((".zip", ".parquet", ".pq")):
            raise DataError(f"{path}: --preset {preset} reads CSV files, not {fmt or detect_format(path)}")
        if mapping:
            raise DataError(f"{path}: --preset {preset} has its own column map; drop --map")
        fmt = "csv"
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    scans: list[FileScan] = []  # a CSV's hash and line count, read once for the row limit and the ingest

    def csv_lines() -> int:
        scans.append(scan_file(path))
        return scans[0].lines

    # size and row limits (fbt_pipelines/services/limits.py), before anything is staged
    check_ingest_file(path, fmt, csv_lines=csv_lines if fmt == "csv" else None)
    specs = specs or load_catalog()
    mapping = mapping or {}
    ensure_schema(conn)
    if preset is not None:
        return _ingest_preset(conn, path, preset, strict, specs)
    if fmt == "dbn":
        return [_ingest_dbn(conn, path, strict, specs)]
    if fmt == "csv":
        return [_ingest_csv(conn, path, scans[0], strict, mapping, interval, specs)]
    file_hash = content_hash(path)
    legacy_file_hash = functools.cache(lambda: legacy_sha256(path))
    if fmt == "lean":
        results = []
        for staged_file in read_lean_zip(path):
            member = staged_file.source
            stage_frame(conn, staged_file.frame)
            results.append(_ingest_staged(
                conn, member, content_hash_of_text(f"{file_hash}:{member}"), "lean", staged_file.interval, None,
                specs, strict,
                legacy_hash=lambda m=member: hashlib.sha256(f"{legacy_file_hash()}:{m}".encode()).hexdigest()))
        return results
    try:
        try:
            stage_parquet(conn, path, mapping)
        except duckdb.Error as exc:
            message = str(exc).splitlines()[0]
            raise DataError(f"{path}: cannot be read as {fmt} ({message})") from None
        return [_ingest_staged(conn, str(path.resolve()), file_hash, fmt, interval, default_contract_for(path),
                               specs, strict, legacy_hash=legacy_file_hash)]
    finally:
        drop_staging(conn)


def _ingest_csv(conn: duckdb.DuckDBPyConnection, path: Path, scan: FileScan, strict: bool,
                mapping: Mapping[str, str], interval: str, specs: Mapping[str, ContractSpec]) -> IngestResult:
    """A CSV: the bulk path if the file qualifies and is clean, else the general path."""
    default = default_contract_for(path)
    source = str(path.resolve())
    legacy_hash = functools.cache(lambda: legacy_sha256(path))  # asked only next to an older fbt's ingest
    plan = bulk_plan(path, mapping, default, specs)
    if plan is not None:
        ingest_id = _ingest_id(source, interval, scan.content_hash)
        done = _already_or_legacy(conn, ingest_id, source, interval, legacy_hash)
        if done:
            return done
        started = dt.datetime.now(dt.UTC)

        def store(checks: BulkChecks) -> IngestResult:
            replaced = _replace_older(conn, interval, list(checks.contracts),
                                      "SELECT contract, ts FROM bars WHERE ingest_id = ?", [ingest_id],
                                      lambda: (checks.first_ts, checks.last_ts), new_ingest_id=ingest_id)
            result = IngestResult(ingest_id, source, "ok", checks.rows, checks.rows, 0, replaced, checks.roots,
                                  checks.warnings, method="bulk")
            return _record_ingest(conn, result, scan.content_hash, "csv", interval, started)

        stored = ingest_bulk_csv(conn, path, plan, interval, ingest_id, default, specs, store)
        if stored is not None:
            return stored
    try:
        try:
            stage_csv(conn, path, mapping, scan=scan)
        except duckdb.Error as exc:
            message = str(exc).splitlines()[0]
            raise DataError(f"{path}: cannot be read as csv ({message})") from None
        return _ingest_staged(conn, source, scan.content_hash, "csv", interval, default, specs, strict,
                              legacy_hash=legacy_hash)
    finally:
        drop_staging(conn)


def _ingest_dbn(conn: duckdb.DuckDBPyConnection, path: Path, strict: bool,
                specs: Mapping[str, ContractSpec]) -> IngestResult:
    """A DBN file: decoded (instruments mapped, prices converted exactly);
    a large one first tries the bulk path from the arrays
    (:mod:`fbt_pipelines.ingest.bulk_arrays`); else, or if that declines,
    staged from the arrays for the general path's validation and store. The
    interval is the file's schema (``--interval`` does not apply)."""
    bars = read_dbn_bars(path, specs)
    if bars is None:
        raise DataError(f"{path}: no OHLCV bars in this DBN file (a definition file is read with the bar files "
                        "beside it)")
    file_hash = content_hash(path)
    legacy_hash = functools.cache(lambda: legacy_sha256(path))
    if len(bars) >= bulk_arrays.BULK_MIN_ROWS:  # a clean file stores the same either way (strict or not)
        ingest_id = _ingest_id(bars.source, bars.interval, file_hash)
        done = _already_or_legacy(conn, ingest_id, bars.source, bars.interval, legacy_hash)
        if done:
            return done
        started = dt.datetime.now(dt.UTC)

        def store(checks: BulkChecks) -> IngestResult:
            replaced = _replace_older(conn, bars.interval, list(checks.contracts),
                                      "SELECT contract, ts FROM bars WHERE ingest_id = ?", [ingest_id],
                                      lambda: (checks.first_ts, checks.last_ts), new_ingest_id=ingest_id)
            result = IngestResult(ingest_id, bars.source, "ok", len(bars), len(bars), 0, replaced, checks.roots,
                                  {**checks.warnings, **bars.skipped}, method="bulk", notes=tuple(bars.notes))
            return _record_ingest(conn, result, file_hash, "dbn", bars.interval, started)

        stored = bulk_arrays.ingest_bulk_arrays(conn, bars.contracts, bars.codes, bars.ts_us, bars.prices,
                                                bars.volume, bars.interval, ingest_id, specs, store)
        if stored is not None:
            return stored
    try:
        stage_arrays(conn, bars.record, bars.contracts, bars.codes, bars.ts_us, bars.prices, bars.volume,
                     {"id": bars.instrument_id, **{f"px_{c}": bars.fixed[c] for c in bars.fixed},
                      "vol": bars.volume, "ts": bars.ts_us},
                     "record {}: instrument_id={} open={} high={} low={} close={} (1e-9 fixed point) volume={} "
                     "ts_event_us={}")
        return _ingest_staged(conn, bars.source, file_hash, "dbn", bars.interval, None, specs, strict,
                              legacy_hash=legacy_hash, skipped=bars.skipped, notes=tuple(bars.notes))
    finally:
        drop_staging(conn)


def _ingest_preset(conn: duckdb.DuckDBPyConnection, path: Path, name: str, strict: bool,
                   specs: Mapping[str, ContractSpec]) -> list[IngestResult]:
    """A vendor CSV read by its preset: each member (the file, or a
    pysystemtrade series ``FILE!PRICE``) staged and stored like a LEAN
    zip's members. The preset is part of the idempotence key."""
    read = read_preset(path, name, specs)  # a DataError here: nothing staged
    file_hash = content_hash(path)
    legacy_file_hash = functools.cache(lambda: legacy_sha256(path))
    source = str(path.resolve())
    results = []
    try:
        for k, member in enumerate(read.members):
            tag = f"preset={name}" + (f":{member.name}" if member.name else "")
            stage_frame(conn, member.frame)
            results.append(_ingest_staged(
                conn, f"{source}!{member.name}" if member.name else source,
                content_hash_of_text(f"{file_hash}:{tag}"), f"csv:{name}", read.interval, None, specs, strict,
                legacy_hash=lambda t=tag: hashlib.sha256(f"{legacy_file_hash()}:{t}".encode()).hexdigest(),
                skipped=read.skipped if k == 0 else None, notes=tuple(read.notes) if k == 0 else ()))
    finally:
        drop_staging(conn)
    if not results:
        raise DataError(f"{path}: no bars in this file ({name} preset)")
    return results


def ingest_paths(conn: duckdb.DuckDBPyConnection, paths: Iterable[Path], **kwargs) -> list[IngestResult]:
    out: list[IngestResult] = []
    for p in paths:
        out.extend(ingest_path(conn, p, **kwargs))
    return out
