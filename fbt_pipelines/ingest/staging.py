"""Stage one source file in DuckDB: temp relations ``staged`` (one row per data
line: ``line``, field counts, ``contract_raw``, values parsed with ``TRY_CAST``
so a bad value is NULL, never an abort), ``staged_values`` (the same rows and
values, possibly without ``line``: what a bulk insert of every row reads) and
``staged_raw`` (``line``, the raw text, read back only for rejected rows); then the contract map and the
numeric frame the pandera validator reads. File-level problems raise
:class:`DataError` naming the file.

A CSV is staged by DuckDB's CSV reader (all fields as text, one column each,
then the same ``TRY_CAST``s) when the file is plain: no quotes in its header,
every line with the header's field count, no blank lines, ``\n`` or
``\r\n`` line ends (checked by the reader and by the line count of
:class:`FileScan`). Anything else takes the general path: every line read as
one text field and split on commas, which gives the exact field count and
keeps blank lines' numbers. Both give the same ``staged`` rows.
"""

from __future__ import annotations

import mmap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import duckdb
import numpy as np
import pandas as pd
from blake3 import blake3

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.errors import DataError
from fbt_pipelines.marketdata.contract_codes import normalise_contract_code
from fbt_pipelines.ingest.file_hash import PREFIX, content_hash

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


@dataclass(frozen=True)
class FileScan:
    """One pass over a file's bytes: its content hash and its line structure."""

    content_hash: str  # "blake3:<hex>" (fbt_pipelines/ingest/file_hash.py)
    lines: int  # lines, counting a last line without a line end
    plain_line_ends: bool  # every CR is part of a CRLF


def scan_file(path: Path, chunk: int = 1 << 24) -> FileScan:
    """Hash and count lines in one pass over the mapped file: BLAKE3 of the
    whole map in a thread (it releases the GIL and hashes on two threads)
    while NumPy counts the line ends chunk by chunk; ~0.12 s for 336 MiB."""
    if path.stat().st_size == 0:
        return FileScan(content_hash(path), 0, True)
    newlines = crs = crlfs = 0
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped, \
            ThreadPoolExecutor(max_workers=1) as pool:
        hashing = pool.submit(lambda: PREFIX + blake3(mapped, max_threads=blake3.AUTO).hexdigest())
        size = len(mapped)
        for lo in range(0, size, chunk):
            hi = min(lo + chunk, size)
            with memoryview(mapped)[lo:hi] as block:
                newlines += int(np.count_nonzero(np.frombuffer(block, np.uint8) == 10))
            if mapped.find(b"\r", lo, hi) >= 0:  # most files have no CR at all
                text = mapped[lo:hi + 1]  # one byte more: a CRLF across the chunk edge
                crs += text.count(b"\r") - (len(text) > hi - lo and text[-1:] == b"\r")
                crlfs += text.count(b"\r\n")
        last = mapped[size - 1:size]
        digest = hashing.result()
    lines = newlines + (1 if last != b"\n" else 0)
    return FileScan(digest, lines, crs == crlfs)


def drop_staging(conn: duckdb.DuckDBPyConnection) -> None:
    """Drop the temp relations of the last staged file (frees their memory)."""
    kinds = dict(conn.execute(
        "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'main' "
        "AND table_catalog = 'temp' AND table_name IN ('staged', 'staged_raw', 'staged_fast', 'staged_values', "
        "'staged_arrays')"
    ).fetchall())
    for name in ("staged_values", "staged", "staged_raw", "staged_fast", "staged_arrays"):
        if name in kinds:
            conn.execute(f"DROP {'VIEW' if kinds[name] == 'VIEW' else 'TABLE'} IF EXISTS temp.{name}")


def _stage_csv_fast(conn: duckdb.DuckDBPyConnection, path: Path, cols: list[str], scan) -> bool:
    """Stage a plain CSV through DuckDB's CSV reader; False (nothing staged)
    if the file is not plain after all."""
    names = {f"c{i}": "VARCHAR" for i in range(len(cols))}
    spec = "{" + ", ".join(f"'{k}': '{v}'" for k, v in names.items()) + "}"

    def field(i: int) -> str:
        return f"coalesce(c{i}, '')" if cols[i] == "contract" else f"c{i}"  # the reader gives NULL for ''

    try:
        # no line numbers here: a window would make the parse single-threaded. The table keeps the
        # file's row order (insertion order is preserved), so the view below numbers the rows.
        conn.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE staged_fast AS
            SELECT {_typed_select(cols, field)}
            FROM read_csv(?, header = true, auto_detect = false, columns = {spec}, delim = ',', quote = '',
                          escape = '', strict_mode = true, null_padding = false, comment = '')
            """,
            [str(path)],
        )
    except duckdb.Error:
        return False
    rows = conn.execute("SELECT count(*) FROM staged_fast").fetchall()[0][0]
    scanned = scan() if callable(scan) else scan
    if scanned is None or not scanned.plain_line_ends or rows + 1 != scanned.lines:
        conn.execute("DROP TABLE IF EXISTS temp.staged_fast")  # blank lines or odd line ends: general path
        return False
    n = len(cols)
    conn.execute(f"CREATE OR REPLACE TEMP VIEW staged AS SELECT row_number() OVER () + 1 AS line, {n} AS nf, "
                 f"{n} AS expected_nf, * FROM staged_fast")
    conn.execute(f"CREATE OR REPLACE TEMP VIEW staged_values AS SELECT {n} AS nf, {n} AS expected_nf, * "
                 "FROM staged_fast")
    literal = "'" + str(path).replace("'", "''") + "'"  # a view cannot take a parameter
    conn.execute(
        f"""CREATE OR REPLACE TEMP VIEW staged_raw AS
            SELECT row_number() OVER () AS line, raw
            FROM read_csv({literal}, columns = {{'raw': 'VARCHAR'}}, delim = '\x01', header = false, quote = '',
                          escape = '', auto_detect = false, skip = 0, null_padding = false)"""
    )
    return True


def stage_csv(conn: duckdb.DuckDBPyConnection, path: Path, mapping: Mapping[str, str], scan=None) -> None:
    """Stage a canonical CSV as temp relation ``staged`` (one row per data line).

    ``scan``: the file's :class:`FileScan` (or a callable returning it); with
    it a plain file takes the CSV reader's fast path.
    """
    drop_staging(conn)
    header = _header(path)
    cols = _canonical_columns(path, header, mapping)
    quoted = _first_line(path).count('"') > 0
    if scan is not None and not quoted and _stage_csv_fast(conn, path, cols, scan):
        return

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
    conn.execute("CREATE OR REPLACE TEMP VIEW staged_values AS SELECT * FROM staged")


def stage_parquet(conn: duckdb.DuckDBPyConnection, path: Path, mapping: Mapping[str, str]) -> None:
    """Stage a Parquet file (``line`` = row number, ``raw`` = the row as JSON)."""
    drop_staging(conn)
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
    conn.execute("CREATE OR REPLACE TEMP VIEW staged_values AS SELECT * FROM staged")


def stage_frame(conn: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> None:
    """Stage an already-split frame (LEAN): columns line, raw, nf, expected_nf,
    contract_raw, ts, open, high, low, close, volume, open_interest."""
    drop_staging(conn)
    conn.register("incoming_staged", frame)
    try:
        conn.execute("CREATE OR REPLACE TEMP TABLE staged AS SELECT line, raw, nf, expected_nf, contract_raw, "
                     "CAST(ts AS TIMESTAMPTZ) AS ts, open, high, low, close, volume, open_interest FROM incoming_staged")
        conn.execute("CREATE OR REPLACE TEMP VIEW staged_raw AS SELECT line, raw FROM staged")
        conn.execute("CREATE OR REPLACE TEMP VIEW staged_values AS SELECT * FROM staged")
    finally:
        conn.unregister("incoming_staged")


def contract_map(conn: duckdb.DuckDBPyConnection, default_contract: str | None,
                  specs: Mapping[str, ContractSpec]) -> pd.DataFrame:
    """The contract map of the staged file's codes (see :func:`contract_map_of`)."""
    raws = [r[0] for r in conn.execute("SELECT DISTINCT contract_raw FROM staged_values").fetchall()]
    return contract_map_of(raws, default_contract, specs)


def contract_map_of(raws: list[str | None], default_contract: str | None,
                    specs: Mapping[str, ContractSpec]) -> pd.DataFrame:
    """One row per distinct raw code (``idx``, ``contract_raw``, ``contract``
    (fbt id, e.g. ``ESZ2013``), ``root``, ``contract_error``); a NULL code
    takes ``default_contract`` (the file name's)."""
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


def stage_arrays(conn: duckdb.DuckDBPyConnection, line: np.ndarray, contracts: list[str], codes: np.ndarray,
                 ts_us: np.ndarray, prices: Mapping[str, np.ndarray], volume: np.ndarray,
                 raw_columns: Mapping[str, np.ndarray], raw_format: str) -> None:
    """Stage bars already decoded to arrays (a DBN file): ``line`` (the
    record index), ``codes`` into ``contracts`` (contract codes), ``ts_us``
    (UTC epoch microseconds), ``prices`` open/high/low/close (points),
    ``volume`` (contracts). The raw text of a row (read only for rejected
    rows) is ``raw_format`` (DuckDB ``format``, ``{}`` placeholders) over
    ``line`` then ``raw_columns``, built in a view: no string per accepted row."""
    import pyarrow as pa

    drop_staging(conn)
    categories = pa.array(contracts, type=pa.string())
    columns = {
        "line": pa.array(line, type=pa.int64()),
        "contract_raw": pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int32()), categories),
        "ts": pa.array(ts_us, type=pa.timestamp("us", tz="UTC")),
        **{c: pa.array(prices[c], type=pa.float64()) for c in ("open", "high", "low", "close")},
        "volume": pa.array(volume, type=pa.int64()),
        **{f"raw_{k}": pa.array(v) for k, v in raw_columns.items()},
    }
    incoming = pa.table(columns)
    conn.register("incoming_arrays", incoming)
    try:
        conn.execute("CREATE OR REPLACE TEMP TABLE staged_arrays AS SELECT * FROM incoming_arrays")
    finally:
        conn.unregister("incoming_arrays")
    conn.execute(
        """CREATE OR REPLACE TEMP VIEW staged AS
           SELECT line, 1 AS nf, 1 AS expected_nf, CAST(contract_raw AS VARCHAR) AS contract_raw,
                  CAST(ts AS TIMESTAMPTZ) AS ts, open, high, low, close, CAST(volume AS DOUBLE) AS volume,
                  CAST(NULL AS DOUBLE) AS open_interest
           FROM staged_arrays""")
    conn.execute("CREATE OR REPLACE TEMP VIEW staged_values AS SELECT * FROM staged")
    args = ", ".join(["line", *(f"raw_{k}" for k in raw_columns)])
    literal = "'" + raw_format.replace("'", "''") + "'"  # a view cannot take a parameter; a constant format
    conn.execute(f"CREATE OR REPLACE TEMP VIEW staged_raw AS SELECT line, format({literal}, {args}) AS raw "
                 "FROM staged_arrays")
