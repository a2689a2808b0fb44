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
import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec, load_catalog
from fbt_pipelines.errors import DataError
from fbt_pipelines.marketdata.contract_codes import normalise_contract_code
from fbt_pipelines.marketdata.validation import validate_staged
from fbt_pipelines.stores.warehouse import ensure_schema, transaction

CANONICAL = ["contract", "ts", "open", "high", "low", "close", "volume", "open_interest"]
REQUIRED = ["ts", "open", "high", "low", "close", "volume"]
ALIASES = {"date": "ts", "time": "ts", "timestamp": "ts", "datetime": "ts", "symbol": "contract",
           "oi": "open_interest", "openinterest": "open_interest", "vol": "volume"}
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


def _header(path: Path) -> list[str]:
    try:
        with open(path, "rb") as fh:
            head = fh.read(65536)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if not head.strip():
        raise DataError(f"{path}: empty file")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: UTF-16 text (byte-order mark {head[:2]!r}), not UTF-8; save it as UTF-8")
    if b"\x00" in head:
        raise DataError(f"{path}: not a text file (NUL bytes in the first 64 KiB)")
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if len(head) == 65536 and exc.start > 65530:  # cut inside a multi-byte character
            text = head[: exc.start].decode("utf-8-sig")
        else:
            raise DataError(f"{path}: not UTF-8 text (byte {exc.start}: {head[exc.start:exc.start + 1]!r})") from None
    first = text.splitlines()[0] if text.splitlines() else ""
    cols = [c.strip().strip('"').strip().lower() for c in first.split(",")]
    if not first.strip() or any(not c for c in cols):
        raise DataError(f"{path}: line 1: unparseable header {first!r}")
    return cols


def _first_line(path: Path) -> str:
    with open(path, "rb") as fh:
        return fh.readline().decode("utf-8-sig", errors="replace")


def _canonical_columns(path: Path, cols: list[str], mapping: Mapping[str, str]) -> list[str]:
    lowered = {k.lower(): v for k, v in mapping.items()}
    out = [lowered.get(c, ALIASES.get(c, c)) for c in cols]
    missing = [c for c in REQUIRED if c not in out]
    if missing:
        raise DataError(f"{path}: line 1: header {','.join(cols)!r} lacks {', '.join(missing)} "
                        f"(expected contract,ts,open,high,low,close,volume[,open_interest]; map vendor names with --map)")
    dup = sorted({c for c in out if out.count(c) > 1 and c in CANONICAL})
    if dup:
        raise DataError(f"{path}: line 1: column(s) {dup} appear twice")
    return out


def _typed_select(cols: list[str], field_expr) -> str:
    """SELECT list turning text fields into typed canonical columns (NULL if unparseable)."""
    parts = []
    for name in CANONICAL:
        if name == "contract":
            expr = field_expr(cols.index(name)) if name in cols else "NULL"
            parts.append(f"{expr} AS contract_raw")
        elif name == "ts":
            parts.append(f"TRY_CAST(trim({field_expr(cols.index('ts'))}) AS TIMESTAMPTZ) AS ts")
        elif name == "open_interest" and name in cols:  # empty -> NULL (unknown); not a number -> NaN
            f = field_expr(cols.index(name))
            parts.append(f"CASE WHEN nullif(trim({f}), '') IS NULL THEN NULL "
                         f"ELSE coalesce(TRY_CAST({f} AS DOUBLE), 'NaN'::DOUBLE) END AS {name}")
        elif name in cols:
            parts.append(f"TRY_CAST({field_expr(cols.index(name))} AS DOUBLE) AS {name}")
        else:
            parts.append(f"CAST(NULL AS DOUBLE) AS {name}")
    return ", ".join(parts)


def stage_csv(conn: duckdb.DuckDBPyConnection, path: Path, mapping: Mapping[str, str]) -> None:
    """Stage a canonical CSV as temp table ``staged`` (one row per data line)."""
    header = _header(path)
    cols = _canonical_columns(path, header, mapping)
    quoted = _first_line(path).count('"') > 0

    def field(i: int) -> str:
        # TRY_CAST ignores surrounding spaces; strip quotes only for quoting vendors (it costs ~2x)
        return f"trim(f[{i + 1}], '\" ')" if quoted else f"f[{i + 1}]"

    # raw lines apart from the parsed values: only rejected rows need their text back
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE staged_raw AS
        SELECT row_number() OVER () AS line, raw
        FROM read_csv(?, columns = {'raw': 'VARCHAR'}, delim = '\x01', header = false, quote = '',
                      escape = '', auto_detect = false, skip = 0, null_padding = false)
        """,
        [str(path)],
    )
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE staged AS
        WITH fields AS (
            -- blank lines are skipped (they keep their line numbers for the rest)
            SELECT line, string_split(raw, ',') AS f FROM staged_raw WHERE line > 1 AND trim(raw) <> ''
        )
        SELECT line, len(f) AS nf, {len(cols)} AS expected_nf, {_typed_select(cols, field)}
        FROM fields
        """
    )


def stage_parquet(conn: duckdb.DuckDBPyConnection, path: Path, mapping: Mapping[str, str]) -> None:
    """Stage a Parquet file (``line`` = row number, ``raw`` = the row as JSON)."""
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM parquet_schema(?)", [str(path)]).fetchall()][1:]
    except duckdb.Error as exc:
        raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    cols = _canonical_columns(path, [n.lower() for n in names], mapping)
    quoted = [f'"{n}"' for n in names]

    def field(i: int) -> str:
        return f"CAST({quoted[i]} AS VARCHAR)"

    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE staged AS
        SELECT row_number() OVER () AS line, CAST(to_json(p) AS VARCHAR) AS raw, {len(cols)} AS nf,
               {len(cols)} AS expected_nf, {_typed_select(cols, field)}
        FROM read_parquet(?) AS p
        """,
        [str(path)],
    )
    conn.execute("CREATE OR REPLACE TEMP VIEW staged_raw AS SELECT line, raw FROM staged")


def stage_frame(conn: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> None:
    """Stage an already-split frame (LEAN): columns line, raw, nf, expected_nf,
    contract_raw, ts, open, high, low, close, volume, open_interest."""
    conn.register("incoming_staged", frame)
    try:
        conn.execute("CREATE OR REPLACE TEMP TABLE staged AS SELECT line, raw, nf, expected_nf, contract_raw, "
                     "CAST(ts AS TIMESTAMPTZ) AS ts, open, high, low, close, volume, open_interest FROM incoming_staged")
        conn.execute("CREATE OR REPLACE TEMP VIEW staged_raw AS SELECT line, raw FROM staged")
    finally:
        conn.unregister("incoming_staged")


def _contract_map(conn: duckdb.DuckDBPyConnection, default_contract: str | None,
                  specs: Mapping[str, ContractSpec]) -> pd.DataFrame:
    raws = [r[0] for r in conn.execute("SELECT DISTINCT contract_raw FROM staged").fetchall()]
    rows = []
    for i, raw in enumerate(sorted(raws, key=lambda x: (x is None, x or ""))):
        code = default_contract if raw is None else raw  # an empty field is no code, not the file's
        if code is None:
            cid, root, err = None, None, "no contract code (no contract column and the file name is not one)"
        else:
            cid, root, err = normalise_contract_code(code, specs)
        rows.append({"idx": i, "contract_raw": raw, "contract": cid, "root": root, "contract_error": err})
    return pd.DataFrame(rows, columns=["idx", "contract_raw", "contract", "root", "contract_error"])


def _staged_frame(conn: duckdb.DuckDBPyConnection, cmap: pd.DataFrame) -> pd.DataFrame:
    conn.register("contract_map", cmap)
    try:
        cols = conn.execute(
            """SELECT s.line, s.nf, s.expected_nf, m.idx, epoch_us(s.ts) AS ts_us,
                      s.open, s.high, s.low, s.close, s.volume, s.open_interest
               FROM staged s JOIN contract_map m ON s.contract_raw IS NOT DISTINCT FROM m.contract_raw
               ORDER BY s.line"""
        ).fetchnumpy()
    finally:
        conn.unregister("contract_map")
    idx = np.asarray(cols["idx"], dtype=np.int64)
    ts_us = cols["ts_us"]
    ts = pd.to_datetime(np.ma.filled(ts_us.astype("float64"), np.nan) if np.ma.isMaskedArray(ts_us) else ts_us,
                        unit="us", utc=True)
    contracts = pd.Index(sorted(cmap["contract"].dropna().unique()))
    code_of_idx = np.array([contracts.get_loc(c) if isinstance(c, str) else -1 for c in cmap["contract"]],
                           dtype=np.int64)
    errors = np.asarray(cmap["contract_error"].to_numpy(dtype=object))
    frame = pd.DataFrame({
        "line": cols["line"], "nf": cols["nf"], "expected_nf": cols["expected_nf"],
        "contract": pd.Categorical.from_codes(code_of_idx[idx] if len(cmap) else idx, categories=contracts),
        "contract_error": errors[idx] if len(cmap) else np.array([], dtype=object),
        "ts": ts,
    })
    for c in ("open", "high", "low", "close", "volume", "open_interest"):
        v = cols[c]
        frame[c] = np.ma.filled(v.astype(float), np.nan) if np.ma.isMaskedArray(v) else v.astype(float)
    oi = cols["open_interest"]  # NULL = unknown; NaN = given but not a number
    frame["open_interest_unparsed"] = np.isnan(np.ma.getdata(oi).astype(float)) & ~np.ma.getmaskarray(oi)
    return frame


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
    cmap = _contract_map(conn, default_contract, specs)
    staged = _staged_frame(conn, cmap)
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
