"""Read one per-contract bar file and split it into accepted rows and rejects.

A bar file is ``<CONTRACT>.csv`` (e.g. ``ESZ2013.csv``) with header
``date,open,high,low,close,volume[,open_interest]``; ``date`` is the trading
day (stored as 00:00 UTC). Prices are in points, volume and open interest in
contracts.

Row-level problems never raise: each bad row becomes a :class:`Reject` with
the file, its 1-based line number (the header is line 1), the raw text and the
reason, so the ingest can quarantine it. File-level problems (unreadable file,
wrong header, file name not a contract id) raise :class:`DataError`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa

from fbt_pipelines.catalog.contracts import parse_contract_id
from fbt_pipelines.errors import CatalogError, DataError

REQUIRED_COLUMNS = ["date", "open", "high", "low", "close", "volume"]
PRICE_COLUMNS = ["open", "high", "low", "close"]
BAR_COLUMNS = ["contract", "root", "ts", "open", "high", "low", "close", "volume", "open_interest"]


@dataclass(frozen=True)
class Reject:
    """One row that did not pass validation."""

    file: str
    line: int
    raw: str
    reason: str


@dataclass(frozen=True)
class ParsedBarFile:
    """Accepted bars (columns :data:`BAR_COLUMNS`, ``ts`` UTC) and rejects."""

    path: Path
    contract: str
    root: str
    content_hash: str
    rows_read: int
    bars: pd.DataFrame
    rejects: list[Reject]


# Row checks as a pandera schema; its lazy failure cases name the row index,
# which maps straight back to a line number in the file.
BAR_ROW_SCHEMA = pa.DataFrameSchema(
    {
        "open": pa.Column(float, pa.Check(np.isfinite, element_wise=False, error="price not finite")),
        "high": pa.Column(float),
        "low": pa.Column(float),
        "close": pa.Column(float),
        "volume": pa.Column(float, pa.Check.ge(0, error="volume negative")),
        "open_interest": pa.Column(float, pa.Check.ge(0, error="open_interest negative"), nullable=True),
    },
    checks=[
        pa.Check(lambda d: d["high"] >= d[["open", "close", "low"]].max(axis=1), error="high below open/close/low"),
        pa.Check(lambda d: d["low"] <= d[["open", "close", "high"]].min(axis=1), error="low above open/close/high"),
    ],
)


def file_hash(data: bytes) -> str:
    """SHA-256 of a file's bytes (the ingest's identity: same bytes, same ingest)."""
    return hashlib.sha256(data).hexdigest()


def read_bar_file(path: Path) -> ParsedBarFile:
    """Parse and validate one bar file; see the module docstring."""
    try:
        contract = path.name.removesuffix(".csv")
        root, _, _ = parse_contract_id(contract)
    except CatalogError as exc:
        raise DataError(f"{path}: file name must be <CONTRACT>.csv, e.g. ESZ2013.csv ({exc})") from None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    # utf-8-sig: a byte-order mark (spreadsheet exports) must not hide the "date" column
    lines = data.decode("utf-8-sig", errors="replace").splitlines()
    if not lines:
        raise DataError(f"{path}: empty file (expected header {','.join(REQUIRED_COLUMNS)}[,open_interest])")
    header = [h.strip().lower() for h in lines[0].split(",")]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path}: line 1: header {lines[0]!r} lacks {', '.join(missing)}")

    rejects: list[Reject] = []
    records: list[list[str]] = []
    line_numbers: list[int] = []
    for lineno, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        fields = [f.strip() for f in text.split(",")]
        if len(fields) != len(header):
            rejects.append(Reject(str(path), lineno, text, f"expected {len(header)} fields, found {len(fields)}"))
            continue
        records.append(fields)
        line_numbers.append(lineno)

    raw = pd.DataFrame(records, columns=header, dtype=object)
    if "open_interest" not in raw:
        raw["open_interest"] = None
    frame = pd.DataFrame(index=raw.index)
    frame["ts"] = pd.to_datetime(raw["date"], format="%Y-%m-%d", errors="coerce")
    for col in PRICE_COLUMNS + ["volume", "open_interest"]:
        values = pd.to_numeric(raw[col], errors="coerce").astype(float)
        frame[col] = values.where(np.isfinite(values))  # "inf" / "nan" are not usable numbers
    reasons = pd.Series("", index=raw.index, dtype=object)

    def flag(mask: pd.Series, reason: str) -> None:
        reasons[mask & (reasons == "")] = reason

    flag(frame["ts"].isna(), "date is not YYYY-MM-DD")
    for col in PRICE_COLUMNS + ["volume"]:
        flag(frame[col].isna(), f"{col} is not a number")
    flag(raw["open_interest"].notna() & (raw["open_interest"] != "") & frame["open_interest"].isna(),
         "open_interest is not a number")
    for col in ("volume", "open_interest"):  # stored as integers: never truncate or overflow
        v = frame[col]
        flag(v.notna() & ((v != np.floor(v)) | (v.abs() >= 2.0**63)), f"{col} is not a whole number")
    parsed = reasons == ""
    try:
        BAR_ROW_SCHEMA.validate(frame[parsed], lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases.dropna(subset=["index"])
        for idx, check in zip(cases["index"].astype(int), cases["check"].astype(str)):
            if reasons[idx] == "":
                reasons[idx] = check
    ok = reasons == ""  # only a valid row can be "the first occurrence kept"
    dup = frame["ts"].where(ok).duplicated(keep="first") & ok
    flag(dup, "duplicate date (first occurrence kept)")

    bad = reasons != ""
    for idx in np.flatnonzero(bad.to_numpy()):
        lineno = line_numbers[idx]
        rejects.append(Reject(str(path), lineno, lines[lineno - 1], str(reasons.iloc[idx])))
    rejects.sort(key=lambda r: r.line)

    good = frame[~bad].copy()
    good["ts"] = good["ts"].dt.tz_localize("UTC")
    good["contract"] = contract
    good["root"] = root
    good["volume"] = good["volume"].astype("int64")
    good["open_interest"] = good["open_interest"].astype("Int64")
    good = good.sort_values("ts")[BAR_COLUMNS].reset_index(drop=True)
    return ParsedBarFile(
        path=path,
        contract=contract,
        root=root,
        content_hash=file_hash(data),
        rows_read=len(records) + sum(1 for r in rejects if "fields" in r.reason),
        bars=good,
        rejects=rejects,
    )
