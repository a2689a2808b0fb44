"""Stage one source file in DuckDB: temp tables ``staged`` (one row per data
line: ``line``, field counts, ``contract_raw``, values parsed with ``TRY_CAST``
so a bad value is NULL, never an abort) and ``staged_raw`` (``line``, the raw
text, read back only for rejected rows); then the contract map and the
numeric frame the validator reads. File-level problems raise
:class:`DataError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import duckdb
import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.errors import DataError
from fbt_pipelines.marketdata.contract_codes import normalise_contract_code

CANONICAL = ["contract", "ts", "open", "high", "low", "close", "volume", "open_interest"]
REQUIRED = ["ts", "open", "high", "low", "close", "volume"]
ALIASES = {"date": "ts", "time": "ts", "timestamp": "ts", "datetime": "ts", "symbol": "contract",
           "oi": "open_interest", "openinterest": "open_interest", "vol": "volume"}

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


def contract_map(conn: duckdb.DuckDBPyConnection, default_contract: str | None,
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


def staged_frame(conn: duckdb.DuckDBPyConnection, cmap: pd.DataFrame) -> pd.DataFrame:
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
