"""Ingest bar files into the warehouse: stage, validate, store in one transaction.

Formats:

- ``csv``: canonical header ``contract,ts,open,high,low,close,volume`` plus
  optional ``open_interest`` (``date`` is accepted for ``ts``; a file without a
  ``contract`` column takes the contract from its name, e.g. ``ESZ2013.csv``).
  ``ts`` is ISO 8601, UTC unless it carries an offset. Other vendors' headers
  map through ``mapping`` (vendor column -> canonical column).
- ``parquet``: the same columns.
- ``lean``: QuantConnect LEAN zips (see :mod:`fbt_pipelines.marketdata.lean`).

Every source file becomes one staged table in DuckDB (line number, raw text,
fields parsed with ``TRY_CAST`` so a bad value is NULL, never an abort), is
validated by :func:`fbt_pipelines.marketdata.validation.validate_staged`, and
lands in one transaction: the ``ingests`` row, the accepted ``bars`` (rows with
the same (contract, interval, ts) are replaced, and counted), the
``quarantine`` rows. Same bytes again -> nothing changes. File-level problems
raise :class:`DataError` naming the file, before anything is written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import duckdb
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec, load_catalog
from fbt_pipelines.errors import DataError
from fbt_pipelines.limits import check_ingest_file
from fbt_pipelines.marketdata.validation import validate_staged
from fbt_pipelines.stores.staging import contract_map, stage_csv, stage_frame, stage_parquet, staged_frame
from fbt_pipelines.stores.warehouse import ensure_schema, transaction

FORMATS = ("csv", "parquet", "lean")
SUPPORTED_SUFFIXES = (".csv", ".txt", ".parquet", ".pq", ".zip")


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


def bar_sources(folder: Path, recursive: bool = False) -> list[Path]:
    """Ingestible files in ``folder`` (LEAN open-interest and quote zips are
    companions of a trade zip, not sources of their own)."""
    files = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(f for f in files if f.is_file() and f.name.lower().endswith(SUPPORTED_SUFFIXES)
                  and not f.name.startswith(".") and not ("openinterest" in f.name or "_quote" in f.name))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".zip"):
        return "lean"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".txt")):
        return "csv"
    raise DataError(f"{path}: cannot tell the format from the name; pass --format csv|parquet|lean")


def _store(conn: duckdb.DuckDBPyConnection, ingest_id: str, source: str, content_hash: str, fmt: str,
           interval: str, reasons: pd.DataFrame, cmap: pd.DataFrame, rows_read: int,
           warnings: dict[str, int], strict: bool) -> IngestResult:
    """One transaction: bars (replacing same keys), quarantine, the ingests row."""
    if strict and len(reasons):
        first = reasons.iloc[0]
        raise DataError(f"{source}: line {int(first['line'])}: {first['reason']} "
                        f"(--strict: {len(reasons)} bad row(s), nothing stored)")
    started = dt.datetime.now(dt.UTC)
    with transaction(conn, contract_map=cmap, rejects=reasons):
        conn.execute(
            """CREATE OR REPLACE TEMP TABLE accepted AS
               SELECT m.contract, m.root, ? AS interval, s.ts, s.open, s.high, s.low, s.close,
                      CAST(s.volume AS BIGINT) AS volume, CAST(s.open_interest AS BIGINT) AS open_interest,
                      ? AS ingest_id
               FROM staged s JOIN contract_map m ON s.contract_raw IS NOT DISTINCT FROM m.contract_raw
               WHERE s.line NOT IN (SELECT line FROM rejects)""",
            [interval, ingest_id],
        )
        replaced = conn.execute(
            "SELECT count(*) FROM bars b JOIN accepted a USING (contract, interval, ts)").fetchall()[0][0]
        if replaced:
            conn.execute("DELETE FROM bars b USING accepted a WHERE b.contract = a.contract "
                         "AND b.interval = a.interval AND b.ts = a.ts")
        conn.execute("INSERT INTO bars BY NAME SELECT * FROM accepted")
        accepted, roots = conn.execute(
            "SELECT count(*), list(DISTINCT root ORDER BY root) FROM accepted").fetchall()[0]
        conn.execute(
            """INSERT INTO quarantine (ingest_id, file, line, raw, reason)
               SELECT ?, ?, r.line, s.raw, r.reason FROM rejects r JOIN staged_raw s USING (line) ORDER BY r.line""",
            [ingest_id, source],
        )
        conn.execute(
            """INSERT INTO ingests (ingest_id, path, contract, root, content_hash, rows_read, accepted, quarantined,
                                    status, started_at, finished_at, replaced, format, interval, warnings)
               VALUES (?, ?, NULL, ?, ?, ?, ?, ?, 'ok', ?, ?, ?, ?, ?, ?)""",
            [ingest_id, source, ",".join(roots or []), content_hash, rows_read, accepted, len(reasons),
             started, dt.datetime.now(dt.UTC), replaced, fmt, interval, json.dumps(warnings, sort_keys=True)],
        )
        for root in roots or []:
            _bump_bars_version(conn, root, ingest_id)
    return IngestResult(ingest_id, source, "ok", rows_read, int(accepted), len(reasons), int(replaced),
                        tuple(roots or []), warnings)


def _bump_bars_version(conn: duckdb.DuckDBPyConnection, root: str, ingest_id: str) -> None:
    """The bars of ``root`` changed: chain a new data version (cache keys follow it)."""
    row = next(iter(conn.execute("SELECT data_version FROM data_versions WHERE tbl = 'bars' AND key = ?",
                                 [root]).fetchall()), None)
    version = hashlib.sha256(f"{row[0] if row else ''}:{ingest_id}".encode()).hexdigest()[:16]
    n = conn.execute("SELECT count(*) FROM bars WHERE root = ?", [root]).fetchall()[0][0]
    conn.execute("INSERT OR REPLACE INTO data_versions VALUES ('bars', ?, ?, ?, ?)",
                 [root, version, n, dt.datetime.now(dt.UTC)])


def _already(conn: duckdb.DuckDBPyConnection, ingest_id: str, source: str) -> IngestResult | None:
    row = conn.execute(
        "SELECT rows_read, accepted, quarantined, root FROM ingests WHERE ingest_id = ? AND status = 'ok'",
        [ingest_id]).fetchall()
    row = row[0] if row else None
    if not row:
        return None
    return IngestResult(ingest_id, source, "skipped", row[0], row[1], row[2], 0,
                        tuple(r for r in (row[3] or "").split(",") if r), {})


def _ingest_staged(conn, source: str, content_hash: str, fmt: str, interval: str, default_contract: str | None,
                   specs: Mapping[str, ContractSpec], strict: bool) -> IngestResult:
    ingest_id = hashlib.sha256(f"{source.rsplit('/', 1)[-1]}:{interval}:{content_hash}".encode()).hexdigest()[:24]
    done = _already(conn, ingest_id, source)
    if done:
        return done
    cmap = contract_map(conn, default_contract, specs)
    staged = staged_frame(conn, cmap)
    check = validate_staged(staged, interval, specs)
    bad = ~check.accepted
    reasons = pd.DataFrame({"line": staged["line"].to_numpy()[bad], "reason": check.reasons.to_numpy()[bad]})
    return _store(conn, ingest_id, source, content_hash, fmt, interval, reasons, cmap, len(staged),
                  check.warnings, strict)


def default_contract_for(path: Path) -> str | None:
    stem = path.name.split(".")[0]
    return stem if stem[:1].isalnum() else None


def ingest_path(conn: duckdb.DuckDBPyConnection, path: Path, fmt: str | None = None, strict: bool = False,
                mapping: Mapping[str, str] | None = None, interval: str = "1d",
                specs: Mapping[str, ContractSpec] | None = None) -> list[IngestResult]:
    """Ingest one file (a LEAN zip: each inner CSV) and return what happened.

    Raises :class:`DataError` (naming the file) for a file-level problem;
    nothing of that file is stored then.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    check_ingest_file(path, fmt)  # size and row limits (fbt_pipelines/limits.py), before anything is staged
    specs = specs or load_catalog()
    mapping = mapping or {}
    ensure_schema(conn)
    content_hash = sha256_file(path)
    if fmt == "lean":
        from fbt_pipelines.marketdata.lean import read_lean_zip

        results = []
        for staged_file in read_lean_zip(path):
            inner_hash = hashlib.sha256(f"{content_hash}:{staged_file.source}".encode()).hexdigest()
            stage_frame(conn, staged_file.frame)
            results.append(_ingest_staged(conn, staged_file.source, inner_hash, "lean", staged_file.interval,
                                          None, specs, strict))
        return results
    try:
        if fmt == "csv":
            stage_csv(conn, path, mapping)
        else:
            stage_parquet(conn, path, mapping)
    except duckdb.Error as exc:
        message = str(exc).splitlines()[0]
        raise DataError(f"{path}: cannot be read as {fmt} ({message})") from None
    return [_ingest_staged(conn, str(path.resolve()), content_hash, fmt, interval, default_contract_for(path), specs,
                           strict)]


def ingest_paths(conn: duckdb.DuckDBPyConnection, paths: Iterable[Path], **kwargs) -> list[IngestResult]:
    out: list[IngestResult] = []
    for p in paths:
        out.extend(ingest_path(conn, p, **kwargs))
    return out
