"""Read QuantConnect LEAN futures zip files into staged frames (first ingest stage).

This is a *pure* reader: zip bytes in, one pandas frame per inner CSV out. It
validates nothing about the bars themselves; every data line becomes a row
(bad values as NaN/NaT) so fbt's validator can quarantine it by line number.

Layout (as LEAN stores it under ``Data/future/<exchange>/``)
------------------------------------------------------------
Daily (interval ``"1d"``)::

    daily/es_trade.zip          inner es_trade_YYYYMM.csv
        rows  yyyyMMdd HH:mm,open,high,low,close,volume
    daily/es_openinterest.zip   inner es_openinterest_YYYYMM.csv
        rows  yyyyMMdd HH:mm,open_interest

Minute (interval ``"1m"``), one zip pair per day::

    minute/es/YYYYMMDD_trade.zip         inner YYYYMMDD_es_minute_trade_YYYYMM.csv
        rows  milliseconds_since_midnight,open,high,low,close,volume
    minute/es/YYYYMMDD_openinterest.zip  inner YYYYMMDD_es_minute_openinterest_YYYYMM.csv
        rows  milliseconds_since_midnight,open_interest

``YYYYMM`` in an inner name is the contract (delivery) month; the contract id
is ROOT + month code + 4-digit year (``es_trade_201312.csv`` -> ``ESZ2013``).
A minute bar's time is the zip's date plus the milliseconds of the row.

Units and time zone
-------------------
* Prices (open/high/low/close) are in price points as quoted (ES index
  points, GC USD per troy ounce); LEAN does not scale futures prices.
* Volume and open interest are in contracts.
* All time stamps are **UTC** (LEAN's data time zone for CME/COMEX futures);
  daily bars are stamped 00:00 of the trading day.

Open interest
-------------
Open interest lives in a companion ``*_openinterest.zip`` (found next to the
trade zip unless given explicitly) and is joined onto the bars of the same
contract: daily bars by exact time stamp; minute bars as-of (the latest
snapshot at or before the bar's time on that day). Bars with no matching
snapshot get NaN. Open-interest rows that do not parse are not joined.

Companion files
---------------
A LEAN data folder holds more than trade bars. :func:`lean_companion`
recognises the rest by LEAN's names and folders, so an ingest of the folder
can list each with a note instead of failing it: open-interest zips (read
with their trade zip), quote zips, hour/second/tick bars, ``margins/*.csv``,
``map_files/*`` and ``factor_files/*``. None of these is opened here.

Errors
------
A bad *row* never raises. A *file*-level problem raises
:class:`~fbt_pipelines.errors.DataError` naming the file: not a zip or a
corrupt zip, a zip name that is not a LEAN trade zip, an inner name that does
not match the patterns above, binary or non-UTF-8 content.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fbt_pipelines.errors import DataError

MONTH_CODES = "FGHJKMNQUVXZ"
TRADE_FIELDS = 6  # time, open, high, low, close, volume
OI_FIELDS = 2  # time, open_interest
FRAME_COLUMNS = [
    "line",
    "raw",
    "nf",
    "expected_nf",
    "contract_raw",
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "open_interest",
]
VALUE_COLUMNS = ["open", "high", "low", "close", "volume"]
MS_PER_DAY = 86_400_000

# Zip names. Daily: "<root>_trade.zip"; minute: "<yyyymmdd>_trade.zip".
_DAILY_ZIP = re.compile(
    r"^(?P<root>[a-z0-9]+)_(?P<kind>trade|openinterest)\.zip$", re.IGNORECASE
)
_MINUTE_ZIP = re.compile(
    r"^(?P<date>\d{8})_(?P<kind>trade|openinterest)\.zip$", re.IGNORECASE
)
# Folders that would make a daily-style name mean another resolution.
_NOT_DAILY_DIRS = {"hour", "minute", "second", "tick"}
# Resolutions whose per-day zips look like minute ones (<yyyymmdd>_trade.zip under <res>/<root>/).
_NOT_MINUTE_DIRS = {"second", "tick"}
# Any LEAN zip of a symbol (daily/hour: <root>_<type>.zip) or a day (<yyyymmdd>_<type>.zip).
_ANY_ZIP = re.compile(r"^(?P<stem>[a-z0-9]+)_(?P<kind>trade|quote|openinterest)\.zip$", re.IGNORECASE)
_MONTH = r"(?P<year>\d{4})(?P<month>0[1-9]|1[0-2])"
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"


@dataclass(frozen=True)
class StagedFile:
    """One inner CSV of a LEAN trade zip as a staged frame.

    ``source`` is ``"<zip path>!<inner name>"``; ``interval`` is ``"1d"`` or
    ``"1m"``; ``frame`` has exactly :data:`FRAME_COLUMNS` (see
    :func:`read_lean_zip`).
    """

    source: str
    interval: str
    frame: pd.DataFrame


@dataclass(frozen=True)
class _ZipKind:
    interval: str  # "1d" | "1m"
    root: str | None  # daily: from the zip name; minute: from the inner names
    date: str | None  # minute: yyyymmdd from the zip name


def _zip_kind(path: Path, kind: str) -> _ZipKind | None:
    name = path.name
    m = _MINUTE_ZIP.match(name)
    if m and m["kind"].lower() == kind:
        if pd.to_datetime(m["date"], format="%Y%m%d", errors="coerce") is pd.NaT:
            return None
        if path.parent.parent.name.lower() in _NOT_MINUTE_DIRS:  # second/es/..., tick/es/...
            return None
        return _ZipKind("1m", None, m["date"])
    m = _DAILY_ZIP.match(name)
    if (
        m
        and m["kind"].lower() == kind
        and path.parent.name.lower() not in _NOT_DAILY_DIRS
    ):
        return _ZipKind("1d", m["root"].upper(), None)
    return None


def is_lean_zip(path: Path) -> bool:
    """True if ``path``'s name is a LEAN futures *trade* zip that
    :func:`read_lean_zip` reads (``es_trade.zip`` or ``20131218_trade.zip``).

    Open-interest zips are companions, read through their trade zip; see
    :func:`lean_open_interest_path`.
    """
    return _zip_kind(Path(path), "trade") is not None


def lean_open_interest_path(path: Path) -> Path:
    """The companion open-interest zip of a trade zip (it may not exist)."""
    path = Path(path)
    return path.with_name(path.name[: -len("_trade.zip")] + "_openinterest.zip")


def _resolution(path: Path) -> str | None:
    """LEAN's resolution folder of a zip: ``daily``/``hour`` hold it directly,
    ``minute``/``second``/``tick`` one folder (the root) above; None if the
    folders do not say."""
    for folder in (path.parent.name.lower(), path.parent.parent.name.lower()):
        if folder in ("daily", "hour", "minute", "second", "tick"):
            return folder
    return None


def lean_companion(path: Path) -> str | None:
    """The note for a file of a LEAN data folder that is not a trade zip fbt
    reads (what it is, and whether it is used), or None for any other file.

    By LEAN's names and folders only; nothing is opened:

    - ``*_openinterest.zip``: read with the trade zip beside it (its bars
      carry the open interest), or unused without one;
    - ``*_quote.zip``: bid/ask bars, not used (fbt stores trade bars);
    - hour, second and tick trade zips: not read (fbt reads daily and minute);
    - ``margins/*.csv``: a margin history (fbt reads those from
      ``$FBT_HOME/margins/<ROOT>.csv``);
    - ``map_files/*`` and ``factor_files/*``: LEAN's continuous-contract
      mapping and price scaling, not used (fbt rolls and back-adjusts from
      the contract bars).
    """
    path = Path(path)
    name, folder = path.name, path.parent.name.lower()
    suffix = name.lower().rsplit(".", 1)[-1] if "." in name else ""
    if folder == "margins" and suffix == "csv":
        return (f"margin history: not bars; fbt reads it from $FBT_HOME/margins/{path.stem.upper()}.csv "
                "(date,initial,maintenance)")
    if folder == "map_files" and suffix in ("csv", "zip"):
        return "LEAN map file (continuous-contract mapping): not used; fbt builds its own roll schedule"
    if folder == "factor_files" and suffix in ("csv", "zip"):
        return "LEAN factor file (continuous-price scaling): not used; fbt back-adjusts from the contract bars"
    m = _ANY_ZIP.match(name)
    if m is None:
        return None
    kind, resolution = m["kind"].lower(), _resolution(path)
    if kind == "quote":
        return "quote bars (bid/ask): not used; fbt stores trade bars"
    if kind == "trade":
        if is_lean_zip(path):
            return None  # bars fbt reads
        if resolution in ("hour", "second", "tick"):
            return f"{resolution} trade bars: not read (fbt reads LEAN daily and minute bars)"
        return None
    trade = path.with_name(name[: -len("_openinterest.zip")] + "_trade.zip")
    if is_lean_zip(trade) and trade.is_file():
        return f"open interest: used with {trade.name}"
    if resolution in ("hour", "second", "tick"):
        return f"open interest of {resolution} bars: not used (fbt reads LEAN daily and minute bars)"
    return f"open interest: not used (no {trade.name} beside it)"


def _contract(root: str, year: str, month: str) -> str:
    return f"{root.upper()}{MONTH_CODES[int(month) - 1]}{year}"


def _inner_pattern(kind: _ZipKind, tick_type: str) -> re.Pattern[str]:
    if kind.interval == "1d":
        return re.compile(
            rf"^(?P<root>[a-z0-9]+)_{tick_type}_{_MONTH}\.csv$", re.IGNORECASE
        )
    return re.compile(
        rf"^(?P<date>\d{{8}})_(?P<root>[a-z0-9]+)_minute_{tick_type}_{_MONTH}\.csv$",
        re.IGNORECASE,
    )


def _expected_inner(kind: _ZipKind, tick_type: str) -> str:
    if kind.interval == "1d":
        return f"{(kind.root or 'root').lower()}_{tick_type}_YYYYMM.csv"
    return f"{kind.date}_<root>_minute_{tick_type}_YYYYMM.csv"


def _read_members(
    zip_path: Path, kind: _ZipKind, tick_type: str
) -> list[tuple[str, str, str]]:
    """``[(inner name, contract id, text)]`` of every inner CSV, in zip order."""
    pattern = _inner_pattern(kind, tick_type)
    out: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            if not infos:
                raise DataError(f"{zip_path}: LEAN zip holds no CSV file")
            for info in infos:
                inner = info.filename
                m = pattern.match(inner)
                if m is None:
                    raise DataError(
                        f"{zip_path}: inner file {inner!r} does not match the LEAN "
                        f"{tick_type} name pattern {_expected_inner(kind, tick_type)!r}"
                    )
                if kind.interval == "1d" and m["root"].upper() != kind.root:
                    raise DataError(
                        f"{zip_path}: inner file {inner!r} is for root {m['root'].upper()!r}, "
                        f"the zip name says {kind.root!r}"
                    )
                if kind.interval == "1m" and m["date"] != kind.date:
                    raise DataError(
                        f"{zip_path}: inner file {inner!r} is dated {m['date']}, the zip name says {kind.date}"
                    )
                if inner in seen:
                    raise DataError(f"{zip_path}: inner file {inner!r} appears twice")
                seen.add(inner)
                data = zf.read(info)
                if b"\x00" in data:
                    raise DataError(
                        f"{zip_path}!{inner}: binary content (NUL bytes), not a LEAN CSV"
                    )
                try:
                    text = data.decode("utf-8-sig")
                except UnicodeDecodeError as exc:
                    raise DataError(
                        f"{zip_path}!{inner}: not UTF-8 text ({exc})"
                    ) from exc
                out.append((inner, _contract(m["root"], m["year"], m["month"]), text))
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"{zip_path}: file not found") from exc
    except zipfile.BadZipFile as exc:
        raise DataError(f"{zip_path}: not a zip file or a corrupt zip ({exc})") from exc
    except (
        zlib.error,
        EOFError,
        OSError,
        RuntimeError,
        NotImplementedError,
        ValueError,
    ) as exc:
        raise DataError(
            f"{zip_path}: corrupt zip ({type(exc).__name__}: {exc})"
        ) from exc
    return out


def _split_lines(text: str) -> list[str]:
    """Lines without their terminator (``\\n`` or ``\\r\\n``); a final
    terminator does not start another line, but empty lines inside are kept."""
    if text == "":
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [ln.removesuffix("\r") for ln in lines]


def _numbers(values: list[str | None]) -> np.ndarray:
    """Strict decimal parse; anything else (and non-finite) -> NaN."""
    s = pd.Series(values, dtype=object).str.strip()
    ok = s.str.fullmatch(_NUMBER).fillna(False).astype(bool)
    out = pd.to_numeric(s.where(ok), errors="coerce").to_numpy(
        dtype="float64", na_value=np.nan, copy=True
    )
    out[~np.isfinite(out)] = np.nan
    return out


def _times(first: list[str | None], kind: _ZipKind) -> pd.Series:
    """Parse the first field: ``yyyyMMdd HH:mm`` (daily) or ms since midnight
    of the zip date (minute). Unparseable -> NaT. Result is ns, UTC."""
    s = pd.Series(first, dtype=object).str.strip()
    if kind.interval == "1d":
        ok = s.str.fullmatch(r"\d{8} \d{2}:\d{2}").fillna(False).astype(bool)
        ts = pd.to_datetime(
            s.where(ok), format="%Y%m%d %H:%M", errors="coerce", utc=True
        )
    else:
        ok = s.str.fullmatch(r"\d{1,9}").fillna(False).astype(bool)
        ms = pd.to_numeric(s.where(ok), errors="coerce")
        ms = ms.where((ms >= 0) & (ms < MS_PER_DAY))
        day = pd.Timestamp(kind.date, tz="UTC")
        ts = day + pd.to_timedelta(ms, unit="ms")
    return pd.Series(ts, dtype="datetime64[ns, UTC]").reset_index(drop=True)


def _parse(
    text: str, kind: _ZipKind, nfields: int
) -> tuple[list[str], np.ndarray, pd.Series, list[np.ndarray]]:
    """``(lines, nf, ts, value columns)``; values only where ``nf == nfields``."""
    lines = _split_lines(text)
    fields = [ln.split(",") if ln else [] for ln in lines]
    nf = np.fromiter((len(f) for f in fields), dtype="int64", count=len(fields))
    ts = _times([f[0] if f else None for f in fields], kind)
    cols = [
        _numbers([f[k] if len(f) == nfields else None for f in fields])
        for k in range(1, nfields)
    ]
    return lines, nf, ts, cols


def _epoch_ns(ts: pd.Series) -> np.ndarray:
    """UTC time stamps (no NaT) as int64 nanoseconds since the epoch."""
    return (
        ts.dt.tz_convert("UTC")
        .dt.tz_localize(None)
        .to_numpy(dtype="datetime64[ns]")
        .view("int64")
    )


def _open_interest(
    zip_path: Path, kind: _ZipKind
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """contract -> (sorted ts as int64 ns, open interest) of parseable snapshots."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for _inner, contract, text in _read_members(zip_path, kind, "openinterest"):
        _lines, _nf, ts, (oi,) = _parse(text, kind, OI_FIELDS)
        good = ts.notna().to_numpy() & ~np.isnan(oi)
        t = _epoch_ns(ts[good])
        v = oi[good]
        order = np.argsort(
            t, kind="stable"
        )  # equal stamps keep file order: the later line wins
        t, v = t[order], v[order]
        if contract in out:  # same contract twice (names differing in case): merge
            t0, v0 = out[contract]
            t, v = np.concatenate([t0, t]), np.concatenate([v0, v])
            order = np.argsort(t, kind="stable")
            t, v = t[order], v[order]
        out[contract] = (t, v)
    return out


def _join_oi(
    ts: pd.Series, snapshots: tuple[np.ndarray, np.ndarray] | None, exact: bool
) -> np.ndarray:
    result = np.full(len(ts), np.nan)
    if snapshots is None or len(snapshots[0]) == 0 or len(ts) == 0:
        return result
    t_oi, v_oi = snapshots
    valid = ts.notna().to_numpy()
    t_bar = _epoch_ns(ts[valid])
    idx = (
        np.searchsorted(t_oi, t_bar, side="right") - 1
    )  # last snapshot at or before the bar
    found = idx >= 0
    if exact:
        found &= t_oi[np.clip(idx, 0, None)] == t_bar
    vals = np.where(found, v_oi[np.clip(idx, 0, None)], np.nan)
    result[valid] = vals
    return result


def read_lean_zip(path: Path, open_interest: Path | None = None) -> list[StagedFile]:
    """Stage every inner CSV of a LEAN futures trade zip.

    Parameters
    ----------
    path
        A trade zip: ``<root>_trade.zip`` (daily) or ``<yyyymmdd>_trade.zip``
        (minute).
    open_interest
        Its open-interest zip; when None, the sibling with ``trade`` replaced
        by ``openinterest`` in the file name is used if it exists.

    Returns
    -------
    list[StagedFile]
        One per inner CSV, in zip order. ``frame`` columns, in order:
        ``line`` (1-based line in the inner CSV), ``raw`` (line text without
        its newline), ``nf`` (comma-separated fields; 0 for an empty line),
        ``expected_nf`` (6), ``contract_raw`` (fbt id from the inner name,
        e.g. ``ESZ2013``), ``ts`` (UTC, NaT if unparseable), ``open``,
        ``high``, ``low``, ``close`` (points), ``volume``, ``open_interest``
        (contracts), float64, NaN if unparseable or missing. Value fields are
        parsed only when ``nf == 6``; ``ts`` whenever the line has a field.

    Raises
    ------
    DataError
        For a file-level problem (see the module docstring); never for a row.
    """
    path = Path(path)
    kind = _zip_kind(path, "trade")
    if kind is None:
        raise DataError(
            f"{path}: not a LEAN futures trade zip name (expected <root>_trade.zip for daily "
            f"bars or <yyyymmdd>_trade.zip for minute bars)"
        )
    members = _read_members(path, kind, "trade")

    oi_path = (
        Path(open_interest)
        if open_interest is not None
        else lean_open_interest_path(path)
    )
    oi: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if open_interest is not None or oi_path.exists():
        oi = _open_interest(oi_path, kind)

    staged: list[StagedFile] = []
    for inner, contract, text in members:
        lines, nf, ts, values = _parse(text, kind, TRADE_FIELDS)
        n = len(lines)
        frame = pd.DataFrame(
            {
                "line": np.arange(1, n + 1, dtype="int64"),
                "raw": pd.Series(lines, dtype=str),
                "nf": nf,
                "expected_nf": np.full(n, TRADE_FIELDS, dtype="int64"),
                "contract_raw": pd.Series([contract] * n, dtype=str),
                "ts": ts,
                **dict(zip(VALUE_COLUMNS, values)),
                "open_interest": _join_oi(
                    ts, oi.get(contract), exact=kind.interval == "1d"
                ),
            },
            columns=FRAME_COLUMNS,
        )
        staged.append(
            StagedFile(source=f"{path}!{inner}", interval=kind.interval, frame=frame)
        )
    return staged
