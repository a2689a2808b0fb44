"""Vendor CSV presets: a vendor's export layout read without a ``--map``.

A preset is a documented column map plus date, time and time-zone rules
(:class:`Preset`). ``fbt ingest FILE --preset NAME`` (or
``ingest_path(..., preset=NAME)``) reads the file by its preset into the
same staged rows as any bar file; validation, quarantine, the one
transaction and idempotence are the general path's
(:mod:`fbt_pipelines.ingest.files`).

Presets (all daily bars, interval ``1d``; ``--interval`` does not apply):

- ``csi``: CSI Data / Unfair Advantage ASCII export of one contract:
  ``Date,Open,High,Low,Close,Volume[,OpenInterest]``, header line optional,
  dates ``YYYYMMDD``, decimal prices (choose decimal, not the fractional
  32nds/64ths format, in Unfair Advantage). The file is named by its
  contract (``ESZ2024.csv``, ``ESZ24.csv``, ``ES2024Z.csv``, ``ES-2024Z.csv``).
- ``norgate``: Norgate Data export of one futures contract:
  ``Date,Open,High,Low,Close,Volume,Open Interest`` with a header, dates
  ``YYYY-MM-DD``; the file is named by Norgate's contract symbol
  (``ES-2024Z.csv``) or any of the names above. Other columns of the export
  (e.g. ``Delivery Month``) are not read; the import notes them.
- ``pysystemtrade``: pysystemtrade "multiple prices" CSV of one instrument:
  ``DATETIME,CARRY,CARRY_CONTRACT,PRICE,PRICE_CONTRACT,FORWARD,
  FORWARD_CONTRACT``, ``DATETIME`` ``YYYY-MM-DD HH:MM:SS`` with daily rows
  stamped ``23:00:00`` (pysystemtrade's end-of-day stamp; rows at any other
  time are intraday and skipped, counted as ``skipped_intraday``), contract
  ids ``YYYYMM00`` (delivery year and month; ``00`` is no day). The file is
  named by the instrument: pysystemtrade's code (``SP500.csv``: see
  :data:`PYSYSTEMTRADE_ROOTS`) or an fbt root (``ES.csv``). Each of PRICE,
  FORWARD and CARRY becomes close-only daily bars of its contract (open =
  high = low = close = the price, volume 0: the file has no volume, so a
  volume roll rule cannot use them; open interest unknown); a contract-day
  given twice in one row (CARRY and FORWARD often name the same contract)
  is stored once, and must be the same price. The three series are stored
  as three sources ``FILE!PRICE``, ``FILE!FORWARD``, ``FILE!CARRY`` (like
  a LEAN zip's members) so each stored bar keeps its file line; an empty
  price is no bar.

Time: a daily row's date is the session (trading) date, stored as 00:00 UTC
of that date, as the CSV path stores daily bars (``2024-11-04`` ->
``2024-11-04T00:00:00Z``); no time-zone conversion, since vendors stamp a
daily bar with its trading date whatever the exchange's zone. Prices are
points as quoted; volume and open interest contracts.

A row that does not follow the preset's layout (field count, date format,
a price or volume that is not a number, a pysystemtrade contract id that is
not ``YYYYMM00``) is a :class:`DataError` naming the file and line: a file
that does not parse is the wrong preset, and nothing of it is stored. Rows
that parse go through the bar rules like every format (a bad bar is
quarantined with its line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import MONTH_CODES, ContractSpec
from fbt_pipelines.errors import DataError
from fbt_pipelines.marketdata.contract_codes import normalise_contract_code

STAGED_COLUMNS = ["line", "raw", "nf", "expected_nf", "contract_raw", "ts", "open", "high", "low", "close",
                  "volume", "open_interest"]

# pysystemtrade instrument code -> fbt root, for the catalogue markets that are the same contract
# (pysystemtrade's pointsize equals the catalogue multiplier: tests/unit/test_presets.py checks it
# against pysystemtrade's instrumentconfig.csv for the codes in the fixture).
PYSYSTEMTRADE_ROOTS: Mapping[str, str] = {
    "SP500": "ES", "NASDAQ": "NQ", "DOW_mini": "YM", "RUSSELL_mini": "RTY",
    "CRUDE_W": "CL", "GAS_US": "NG", "HEATOIL": "HO",
    "GOLD": "GC", "COPPER": "HG",
    "US2": "ZT", "US5": "ZF", "US10": "ZN", "US20": "ZB",
    "CORN": "ZC", "WHEAT": "ZW", "SOYBEAN": "ZS", "LIVECOW": "LE",
    "EUR": "6E", "GBP": "6B", "JPY": "6J", "AUD": "6A", "CAD": "6C",
}


@dataclass(frozen=True)
class Preset:
    """One vendor layout: columns, header rule, date format, contract rule.

    ``columns``: the vendor's columns in file order -> fbt columns
    (``ts``, ``open`` ... ``open_interest``); ``optional``: trailing vendor
    columns a file may leave out; ``header``: ``"optional"`` or
    ``"required"``; ``date_format``: ``strptime`` format of the date
    (a session date, stored 00:00 UTC); ``contract``: ``"file name"``
    (one contract per file) or ``"columns"`` (pysystemtrade)."""

    name: str
    summary: str
    columns: tuple[tuple[str, str], ...]
    optional: tuple[str, ...]
    header: str
    date_format: str
    contract: str
    example: str


PRESETS: dict[str, Preset] = {
    "csi": Preset(
        "csi", "CSI Data / Unfair Advantage per-contract export",
        (("Date", "ts"), ("Open", "open"), ("High", "high"), ("Low", "low"), ("Close", "close"),
         ("Volume", "volume"), ("OpenInterest", "open_interest")),
        ("OpenInterest",), "optional", "%Y%m%d", "file name", "20241104,5712.25,5740.5,5705,5738.75,1523044,2101876"),
    "norgate": Preset(
        "norgate", "Norgate Data per-contract export",
        (("Date", "ts"), ("Open", "open"), ("High", "high"), ("Low", "low"), ("Close", "close"),
         ("Volume", "volume"), ("Open Interest", "open_interest")),
        (), "required", "%Y-%m-%d", "file name", "2024-11-04,5712.25,5740.5,5705,5738.75,1523044,2101876"),
    "pysystemtrade": Preset(
        "pysystemtrade", "pysystemtrade multiple prices (PRICE, FORWARD, CARRY contracts)",
        (("DATETIME", "ts"), ("CARRY", "close"), ("CARRY_CONTRACT", "contract"), ("PRICE", "close"),
         ("PRICE_CONTRACT", "contract"), ("FORWARD", "close"), ("FORWARD_CONTRACT", "contract")),
        (), "required", "%Y-%m-%d %H:%M:%S", "columns",
        "2024-11-04 23:00:00,5780.5,20250300,5738.75,20241200,5780.5,20250300"),
}
PRESET_NAMES = tuple(PRESETS)
PYSYSTEMTRADE_DAILY_TIME = "23:00:00"
PYSYSTEMTRADE_SERIES = ("PRICE", "FORWARD", "CARRY")  # stored in this order; a contract-day once

_NAME_FBT = re.compile(r"^(?P<root>[A-Z0-9]{1,4}?)(?P<month>[FGHJKMNQUVXZ])(?P<year>\d{4}|\d{2})$")
_NAME_YEAR_FIRST = re.compile(r"^(?P<root>[A-Z0-9]{1,4}?)[-_ ]?(?P<year>\d{4})(?P<month>[FGHJKMNQUVXZ])$")
_PYSYSTEMTRADE_ID = re.compile(r"^(?P<year>\d{4})(?P<month>0[1-9]|1[0-2])00$")


@dataclass
class PresetMember:
    """Staged rows of one source of a preset file: the whole file or one series.

    ``name`` is ``""`` for the whole file, or a pysystemtrade series
    (``PRICE``); ``frame`` has the columns of
    :func:`fbt_pipelines.ingest.staging.stage_frame`."""

    name: str
    frame: pd.DataFrame


@dataclass
class PresetFile:
    """A file read by its preset: members, interval, skipped-row counts and notes.

    ``members``: staged rows per source; ``interval``: ``1d`` for every
    preset; ``skipped``: rows left out per reason (added to the import's
    warnings); ``notes``: one line each (e.g. a column not read)."""

    preset: str
    interval: str
    members: list[PresetMember]
    skipped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def preset_of(name: str) -> Preset:
    """The preset called ``name``; :class:`DataError` listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise DataError(f"unknown preset {name!r} (one of {', '.join(PRESET_NAMES)})") from None


def contract_from_name(path: Path, specs: Mapping[str, ContractSpec]) -> str:
    """The fbt contract id named by a per-contract file's name (``ESZ2024.csv``).

    The name before the first dot: ``ESZ2024``, ``ESZ24``, ``ES2024Z``,
    ``ES-2024Z``, ``ES_2024Z``; :class:`DataError` naming the file otherwise."""
    stem = Path(path).name.split(".")[0].strip().upper()
    m = _NAME_FBT.match(stem) or _NAME_YEAR_FIRST.match(stem)
    if m is None:
        raise DataError(f"{path}: the file name does not name a contract (expected e.g. ESZ2024.csv or "
                        "ES-2024Z.csv: one contract per file)")
    cid, _root, error = normalise_contract_code(f"{m['root']}{m['month']}{m['year']}", specs)
    if error:
        raise DataError(f"{path}: file name: {error}")
    return cid


def root_of_pysystemtrade_file(path: Path, specs: Mapping[str, ContractSpec]) -> str:
    """The fbt root of a pysystemtrade file named by its instrument (``SP500.csv``).

    ``SP500.csv`` -> ``ES`` (:data:`PYSYSTEMTRADE_ROOTS`); an fbt root
    (``ES.csv``) as is; :class:`DataError` naming the file otherwise."""
    stem = Path(path).name.split(".")[0].strip()
    root = PYSYSTEMTRADE_ROOTS.get(stem, stem.upper() if stem.upper() in specs else None)
    if root is None or root not in specs:
        known = ", ".join(f"{k}={v}" for k, v in PYSYSTEMTRADE_ROOTS.items())
        raise DataError(f"{path}: pysystemtrade instrument {stem!r} is no fbt market; name the file by its fbt "
                        f"root (e.g. ES.csv) or a known code ({known})")
    return root


def _lines(path: Path) -> list[str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise DataError(f"{path}: empty file")
    return lines


def _fields(line: str) -> list[str]:
    return [f.strip().strip('"').strip() for f in line.split(",")]


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_HEADER_ALIASES = {"vol": "volume", "oi": "openinterest", "openint": "openinterest"}


def _read_header(path: Path, preset: Preset, first: list[str]) -> tuple[bool, list[int], list[str]]:
    """Where the preset's columns are, from a file's first line (header or data).

    Returns (has header, field index of each preset column present (-1:
    absent), names of unused vendor columns). A missing required header or
    column, or a wrong field count, is a :class:`DataError` naming line 1."""
    looks_like_data = bool(first) and re.fullmatch(r"[\d\- :/]+", first[0] or "x") is not None
    names = [c for c, _ in preset.columns]
    if looks_like_data:
        if preset.header == "required":
            raise DataError(f"{path}: line 1: no header; the {preset.name} preset expects "
                            f"{','.join(names)}")
        n = len(first)
        required = len(names) - len(preset.optional)
        if not required <= n <= len(names):
            raise DataError(f"{path}: line 1: {n} fields; the {preset.name} preset expects "
                            f"{','.join(names)} ({required} to {len(names)} fields)")
        return False, [i if i < n else -1 for i in range(len(names))], []
    keys = [_HEADER_ALIASES.get(_key(c), _key(c)) for c in first]
    index = [keys.index(_key(c)) if _key(c) in keys else -1 for c in names]
    missing = [c for c, i in zip(names, index) if i < 0 and c not in preset.optional]
    if missing:
        raise DataError(f"{path}: line 1: header {','.join(first)!r} lacks {', '.join(missing)} "
                        f"(the {preset.name} preset: {','.join(names)})")
    unused = [c for c, k in zip(first, keys) if k not in {_key(n) for n in names}]
    return True, index, unused


def _numbers(path: Path, texts: np.ndarray, lines: np.ndarray, column: str, allow_empty: bool) -> np.ndarray:
    """The numbers of a column's ``texts`` as floats; a bad one is a DataError.

    Empty -> NaN when ``allow_empty``, else (and for any non-number or
    infinity) a DataError naming the first bad line."""
    values = pd.to_numeric(pd.Series(texts, dtype=object).replace("", np.nan), errors="coerce").to_numpy(float)
    empty = texts == ""
    bad = np.isnan(values) & ~(empty & allow_empty)
    bad |= np.isinf(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{path}: line {int(lines[i])}: {column} {texts[i]!r} is not a number")
    return values


def _dates(path: Path, texts: np.ndarray, lines: np.ndarray, fmt: str, column: str) -> pd.DatetimeIndex:
    ts = pd.to_datetime(pd.Series(texts, dtype=object), format=fmt, errors="coerce")
    exact = re.escape(fmt).replace("%Y", r"\d{4}")
    for code in ("%m", "%d", "%H", "%M", "%S"):
        exact = exact.replace(code, r"\d{2}")
    shape = re.compile(exact)  # strptime alone takes unpadded fields ("2024116")
    bad = ts.isna().to_numpy() | np.array([shape.fullmatch(t) is None for t in texts], dtype=bool)
    if bad.any():
        i = int(np.argmax(bad))
        shown = fmt.replace("%Y", "YYYY").replace("%m", "MM").replace("%d", "DD").replace("%H", "HH") \
            .replace("%M", "MM").replace("%S", "SS")
        raise DataError(f"{path}: line {int(lines[i])}: {column} {texts[i]!r} is not a date {shown}")
    return pd.DatetimeIndex(ts)


def _table(path: Path, preset: Preset) -> tuple[np.ndarray, list[str], np.ndarray, list[int], list[str]]:
    """The data rows of a preset file as a text table in preset column order.

    Returns (file line numbers, raw lines, fields as a 2-D text array in
    preset column order ("" where absent), header index, unused columns).
    Blank lines are no rows; a row whose field count differs from the first
    line's is a :class:`DataError` naming its line."""
    lines = _lines(path)
    first_i = next(i for i, line in enumerate(lines) if line.strip())
    has_header, index, unused = _read_header(path, preset, _fields(lines[first_i]))
    n_fields = len(_fields(lines[first_i]))
    start = first_i + 1 if has_header else first_i
    numbers, raws, rows = [], [], []
    for i in range(start, len(lines)):
        raw = lines[i]
        if not raw.strip():
            continue  # a blank line: no bar (it keeps its number for the rest)
        fields = _fields(raw)
        if len(fields) != n_fields:
            raise DataError(f"{path}: line {i + 1}: expected {n_fields} fields, found {len(fields)} "
                            f"({preset.name} preset)")
        rows.append([fields[j] if j >= 0 else "" for j in index])
        numbers.append(i + 1)
        raws.append(raw)
    table = np.array(rows, dtype=object).reshape(len(rows), len(preset.columns))
    return np.asarray(numbers, dtype=np.int64), raws, table, index, unused


def _session_utc(dates: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Session dates -> 00:00 UTC of each date (how daily bars are stored)."""
    return dates.normalize().tz_localize("UTC")


def _frame(lines: np.ndarray, raws: list[str], n_fields: int, contract: list[str] | np.ndarray,
           ts: pd.DatetimeIndex, prices: Mapping[str, np.ndarray], volume: np.ndarray,
           open_interest: np.ndarray) -> pd.DataFrame:
    n = len(lines)
    return pd.DataFrame({
        "line": lines, "raw": raws, "nf": np.full(n, n_fields), "expected_nf": np.full(n, n_fields),
        "contract_raw": np.asarray(contract, dtype=object), "ts": ts,
        **{c: np.asarray(prices[c], dtype=float) for c in ("open", "high", "low", "close")},
        "volume": np.asarray(volume, dtype=float), "open_interest": np.asarray(open_interest, dtype=float),
    }, columns=STAGED_COLUMNS)


def _read_per_contract(path: Path, preset: Preset, specs: Mapping[str, ContractSpec]) -> PresetFile:
    """CSI and Norgate: one contract per file, named by it."""
    contract = contract_from_name(path, specs)
    lines, raws, table, index, unused = _table(path, preset)
    cols = {canon: table[:, k] for k, (_name, canon) in enumerate(preset.columns)}
    names = {canon: name for name, canon in preset.columns}
    ts = _session_utc(_dates(path, cols["ts"], lines, preset.date_format, names["ts"]))
    prices = {c: _numbers(path, cols[c], lines, names[c], allow_empty=False)
              for c in ("open", "high", "low", "close", "volume")}
    oi = _numbers(path, cols["open_interest"], lines, names["open_interest"], allow_empty=True)
    n_fields = len(_fields(raws[0])) if raws else len(preset.columns)
    frame = _frame(lines, raws, n_fields, [contract] * len(lines), ts, prices, prices["volume"], oi)
    notes = [f"column {c!r} not read ({preset.name} preset)" for c in unused]
    return PresetFile(preset.name, "1d", [PresetMember("", frame)], notes=notes)


def _pysystemtrade_contracts(path: Path, root: str, texts: np.ndarray, lines: np.ndarray,
                             column: str, needed: np.ndarray) -> np.ndarray:
    """fbt ids of ``YYYYMM00`` contract ids (``20241200`` -> ``ESZ2024``) where ``needed``."""
    out = np.full(len(texts), None, dtype=object)
    cache: dict[str, str] = {}
    for i in np.flatnonzero(needed):
        text = texts[i]
        if text not in cache:
            m = _PYSYSTEMTRADE_ID.match(text)
            if m is None:
                raise DataError(f"{path}: line {int(lines[i])}: {column} {text!r} is not a pysystemtrade "
                                "contract id YYYYMM00")
            cache[text] = f"{root}{MONTH_CODES[int(m['month']) - 1]}{m['year']}"
        out[i] = cache[text]
    return out


def _read_pysystemtrade(path: Path, preset: Preset, specs: Mapping[str, ContractSpec]) -> PresetFile:
    """pysystemtrade multiple prices as close-only daily bars (points, 00:00 UTC).

    Close-only daily bars of the PRICE, FORWARD and CARRY contracts, one
    member per series (see the module docstring)."""
    root = root_of_pysystemtrade_file(path, specs)
    lines, raws, table, _index, unused = _table(path, preset)
    names = [name for name, _ in preset.columns]
    col = {name: table[:, k] for k, name in enumerate(names)}
    stamp = col["DATETIME"]
    daily = np.array([s[11:] == PYSYSTEMTRADE_DAILY_TIME for s in stamp], dtype=bool)
    when = _dates(path, stamp, lines, preset.date_format, "DATETIME")  # every row must parse
    skipped = {"skipped_intraday": int((~daily).sum())} if (~daily).any() else {}
    lines, stamp, when = lines[daily], stamp[daily], when[daily]
    raws = [r for r, d in zip(raws, daily) if d]
    col = {k: v[daily] for k, v in col.items()}
    ts = _session_utc(when)
    seen: dict[tuple[str, np.datetime64], tuple[float, int]] = {}
    members = []
    n_fields = len(names)
    for series in PYSYSTEMTRADE_SERIES:
        price = _numbers(path, col[series], lines, series, allow_empty=True)
        has = ~np.isnan(price)
        contract = _pysystemtrade_contracts(path, root, col[f"{series}_CONTRACT"], lines, f"{series}_CONTRACT", has)
        keep = has.copy()
        day = ts.to_numpy()
        for i in np.flatnonzero(has):
            key = (contract[i], day[i])
            if key in seen:
                first_price, first_line = seen[key]
                if first_price != price[i]:
                    raise DataError(f"{path}: line {int(lines[i])}: {series} {col[series][i]} for "
                                    f"{contract[i]} differs from {first_price!r} given for it on line {first_line}")
                keep[i] = False
            else:
                seen[key] = (float(price[i]), int(lines[i]))
        if not keep.any():
            continue
        k = np.flatnonzero(keep)
        prices = dict.fromkeys(("open", "high", "low", "close"), price[k])
        frame = _frame(lines[k], [raws[i] for i in k], n_fields, contract[k], ts[k], prices,
                       np.zeros(len(k)), np.full(len(k), np.nan))
        members.append(PresetMember(series, frame))
    notes = [f"column {c!r} not read (pysystemtrade preset)" for c in unused]
    return PresetFile(preset.name, "1d", members, skipped=skipped, notes=notes)


_READERS: dict[str, Callable[[Path, Preset, Mapping[str, ContractSpec]], PresetFile]] = {
    "csi": _read_per_contract, "norgate": _read_per_contract, "pysystemtrade": _read_pysystemtrade}


def read_preset(path: Path, name: str, specs: Mapping[str, ContractSpec]) -> PresetFile:
    """Read ``path`` by the preset ``name`` into staged frames.

    Raises :class:`DataError` naming the file (and line) when the file does
    not follow the preset's layout; nothing is staged then."""
    preset = preset_of(name)
    return _READERS[name](Path(path), preset, specs)
