"""Databento DBN bar files (``.dbn``, ``.dbn.zst``) as fbt bars.

Read with Databento's own ``databento-dbn`` library: the metadata header by
``Metadata.decode``, instrument definitions by ``DBNDecoder``, and OHLCV
records by a NumPy view with the record layout the library publishes
(``OHLCVMsg._dtypes``, the way Databento's own client builds arrays), so a
file of millions of bars is converted without a Python object per bar.

What is read:

- schemas ``ohlcv-1s``, ``ohlcv-1m``, ``ohlcv-1h``, ``ohlcv-1d`` -> intervals
  ``1s``, ``1m``, ``1h``, ``1d``; a file of mixed schema (metadata schema
  unset) may carry OHLCV and definition records together. Any other schema
  (trades, mbo, mbp-*, ohlcv-eod, ...) or record type is refused, naming the
  record index.
- the ``definition`` schema gives each instrument id its raw symbol
  (``ESZ4``), expiration and instrument class. Definitions are taken from the
  file itself and from the definition files beside it (names containing
  ``definition``, ending ``.dbn`` or ``.dbn.zst``); the last definition of an
  instrument id wins. A definition file alone has no bars: it is a companion.
  Failing a definition, the metadata's symbol mappings name an instrument
  when the data was requested by raw symbol (``stype_in`` raw_symbol: each
  mapping is a raw symbol's instrument id over dates; no class or
  expiration, so the symbol tells a spread or option, and a one-digit year
  is the first such year from the mapping's start: ``ESH1`` mapped from
  2020-12-28 is ``ESH2021``). Definition records win over mappings.
- limits: a zstd file is refused while it inflates past
  ``FBT_MAX_INGEST_FILE_MB``, a file of more records than
  ``FBT_MAX_INGEST_ROWS`` before any is converted
  (:mod:`fbt_pipelines.services.limits`).

Conversion:

- prices: DBN prices are int64 fixed-point in units of 1e-9 (``4512.25`` ES =
  ``4512250000000``). For ``|p| < 2**53`` both ``p`` and ``1e9`` are exact
  doubles and IEEE division is correctly rounded, so ``p / 1e9`` is the
  double nearest the exact decimal price (the same double as parsing
  ``"4512.25"``); larger prices go through ``fractions.Fraction`` (also
  correctly rounded). ``UNDEF_PRICE`` becomes NaN (the row is quarantined).
  Points, as vendors quote them.
- time: ``ts_event`` (UTC nanoseconds since the epoch; the bar's opening time
  for OHLCV) -> a UTC instant in microseconds (sub-microsecond parts, which
  OHLCV bars do not have, are dropped). Databento's ``ohlcv-1d`` bars are
  stamped with their UTC day's midnight.
- volume: contracts. Open interest: not in OHLCV records (NULL).
- instruments: a future's raw symbol ``ROOT`` + month code + year becomes the
  fbt contract id (``ESZ4`` -> ``ESZ2024``): a one- or two-digit year is the
  year with those last digits nearest the definition's expiration year (so
  ``CLF5`` expiring 2024-12-19 is ``CLF2025``). Spreads (instrument class
  S/T/M or a raw symbol with ``-``/``:``), options (C/P) and other
  non-futures are skipped, counted per kind in the import's warnings
  (``skipped_spread``, ``skipped_option``, ``skipped_not_future``).

File-level problems raise :class:`DataError` naming the file (and the record
index, counted from 0 after the metadata, where one applies): not DBN, a
truncated file, a schema that is not bars, an instrument without a
definition, a future whose symbol or market fbt does not know. Nothing of
such a file is stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import zstandard

import databento_dbn as dbn

from fbt_pipelines.catalog.specs import MONTH_CODES, ContractSpec
from fbt_pipelines.errors import DataError
from fbt_pipelines.marketdata.contract_codes import normalise_contract_code
from fbt_pipelines.services import limits

DBN_SUFFIXES = (".dbn", ".dbn.zst")
OHLCV_SCHEMAS = {"ohlcv-1s": "1s", "ohlcv-1m": "1m", "ohlcv-1h": "1h", "ohlcv-1d": "1d"}
_RTYPE_INTERVAL = {int(dbn.RType.OHLCV_1S.value): "1s", int(dbn.RType.OHLCV_1M.value): "1m",
                   int(dbn.RType.OHLCV_1H.value): "1h", int(dbn.RType.OHLCV_1D.value): "1d"}
_DEFINITION_RTYPE = int(dbn.RType.INSTRUMENT_DEF.value)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PRICE_SCALE = 1_000_000_000  # dbn.FIXED_PRICE_SCALE: fixed-point units per point
_EXACT_LIMIT = 1 << 53  # below this a fixed-point price is an exact double
_UNDEF_TS = int(dbn.UNDEF_TIMESTAMP) if hasattr(dbn, "UNDEF_TIMESTAMP") else (1 << 64) - 1
_SYMBOL = re.compile(r"^(?P<root>[A-Z0-9]{1,4}?)(?P<month>[FGHJKMNQUVXZ])(?P<year>\d{1,4})$")
_SPREAD_CLASSES = {"S", "T", "M"}
_OPTION_CLASSES = {"C", "P"}


def is_dbn(path: Path) -> bool:
    """A DBN file by name (``.dbn``, ``.dbn.zst``)."""
    return Path(path).name.lower().endswith(DBN_SUFFIXES)


def is_definition_file(path: Path) -> bool:
    """A DBN file named as a definition file (``*definition*.dbn[.zst]``)."""
    return is_dbn(path) and "definition" in Path(path).name.lower()


@dataclass(frozen=True)
class Definition:
    """One instrument: id, raw symbol, expiration and instrument class.

    From a definition record: expiration in UTC ns (None if undefined),
    instrument class code (``F`` future, ``S`` spread, ``C``/``P`` option,
    ...). From the metadata's symbol mapping: no expiration or class, and
    ``first_year`` the UTC year the mapping starts."""

    instrument_id: int
    raw_symbol: str
    expiration_ns: int | None
    instrument_class: str  # "" when unknown (a metadata symbol mapping): told by the symbol
    first_year: int | None = None  # a mapping's first UTC year: the symbol's year is not before it


@dataclass
class DbnBars:
    """The bars of one DBN file, fbt contracts already assigned.

    ``record``: each row's record index (from 0, after the metadata);
    ``contract``: fbt contract ids, one per row as ``codes`` into
    ``contracts``; ``ts_us``: UTC epoch microseconds; prices in points
    (float64, exact conversion); ``fixed``: the four prices as DBN
    fixed-point int64 (for quarantine text); ``volume`` in contracts;
    ``skipped``: records left out per reason (spreads, options, ...);
    ``notes``: one line per skipped instrument."""

    source: str
    interval: str
    records: int
    record: np.ndarray
    codes: np.ndarray
    contracts: list[str]
    instrument_id: np.ndarray
    ts_us: np.ndarray
    prices: dict[str, np.ndarray]
    fixed: dict[str, np.ndarray]
    volume: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.record)


def fixed_to_points(fixed: np.ndarray) -> np.ndarray:
    """DBN fixed-point prices (int64, 1e-9 points) -> points (float64); undefined -> NaN.

    Each result is the double nearest the exact decimal value (see the module
    docstring); ``UNDEF_PRICE`` -> NaN."""
    fixed = np.asarray(fixed, dtype=np.int64)
    out = fixed.astype(np.float64)
    out /= float(PRICE_SCALE)  # exact for |p| < 2**53 (module docstring)
    if not len(fixed) or (fixed.max() < _EXACT_LIMIT and fixed.min() > -_EXACT_LIMIT):
        return out  # the usual case: two reductions, no masks (UNDEF_PRICE is above the limit)
    undefined = fixed == np.int64(dbn.UNDEF_PRICE)
    large = (np.abs(fixed) >= _EXACT_LIMIT) & ~undefined
    if large.any():
        out[large] = [float(Fraction(int(p), PRICE_SCALE)) for p in fixed[large]]
    out[undefined] = np.nan
    return out


def resolve_year(digits: str, expiration_year: int | None) -> int | None:
    """The 4-digit delivery year of a raw symbol's year digits (``CLF5`` -> 2025).

    ``digits`` as is if 4 digits, else the year ending in ``digits`` nearest
    ``expiration_year`` (ties: the later); None if that is unknown."""
    if len(digits) == 4:
        return int(digits)
    if expiration_year is None:
        return None
    modulus = 10 ** len(digits)
    below = expiration_year - ((expiration_year - int(digits)) % modulus)
    above = below + modulus
    return below if expiration_year - below < above - expiration_year else above


def first_year_from(digits: str, start_year: int) -> int:
    """The first year from ``start_year`` on that ends in ``digits``.

    A contract trades before it delivers: ``ESH1`` mapped from 2020 is 2021."""
    if len(digits) == 4:
        return int(digits)
    modulus = 10 ** len(digits)
    return start_year + (int(digits) - start_year) % modulus


def contract_of(definition: Definition, specs: Mapping[str, ContractSpec]) -> tuple[str | None, str | None]:
    """The fbt contract id of an instrument definition, or why it is skipped.

    (fbt contract id, None) for a future; (None, skip reason) for a
    spread, an option or another kind. Raises :class:`ValueError` (the
    caller names the file) for a future fbt cannot place."""
    symbol = definition.raw_symbol.strip()
    cls = definition.instrument_class
    if cls in _SPREAD_CLASSES or "-" in symbol or ":" in symbol:
        return None, "spread"
    if cls in _OPTION_CLASSES or (not cls and " " in symbol):  # CME option symbols: "ESZ4 C5000"
        return None, "option"
    if cls not in ("F", ""):
        return None, "not_future"
    m = _SYMBOL.match(symbol.upper())
    if not m:
        raise ValueError(f"raw symbol {symbol!r} is not ROOT + month code + year (e.g. ESZ4)")
    exp_year = None
    if definition.expiration_ns is not None:
        exp_year = int(np.datetime64(definition.expiration_ns, "ns").astype("datetime64[Y]").astype(int)) + 1970
    year = resolve_year(m["year"], exp_year)
    if year is None and definition.first_year is not None:  # a mapping: the first such year from its start
        year = first_year_from(m["year"], definition.first_year)
    if year is None:
        raise ValueError(f"raw symbol {symbol!r} has a {len(m['year'])}-digit year and its definition no expiration")
    cid, _root, error = normalise_contract_code(f"{m['root']}{m['month']}{year}", specs)
    if error:
        raise ValueError(f"raw symbol {symbol!r}: {error}")
    return cid, None


def _decompress(path: Path, data: bytes, chunk: int = 1 << 22) -> bytes:
    """The DBN bytes of a file, zstd frames decompressed (bytes not zstd: as they are).

    A cut frame is an error, and so is more than the ingest size limit
    uncompressed (``FBT_MAX_INGEST_FILE_MB``: a zstd bomb is refused while it
    inflates)."""
    if not data.startswith(_ZSTD_MAGIC):
        return data
    limit = limits.current().max_ingest_file_bytes
    out, size, rest = [], 0, memoryview(data)
    try:
        while len(rest):
            d = zstandard.ZstdDecompressor().decompressobj()
            pos = 0
            while pos < len(rest) and not d.eof:
                piece = d.decompress(rest[pos:pos + chunk])
                pos += chunk
                size += len(piece)
                if size > limit:
                    raise limits.LimitExceeded(f"{path}: more than {limit:,} bytes uncompressed exceeds the "
                                               "ingest limit (FBT_MAX_INGEST_FILE_MB)")
                out.append(piece)
            if not d.eof:
                raise DataError(f"{path}: truncated zstd stream (the last frame is cut short)")
            rest = rest[min(pos, len(rest)) - len(d.unused_data):]  # unused_data: the fed piece's tail
    except zstandard.ZstdError as exc:
        raise DataError(f"{path}: corrupt zstd stream ({exc})") from None
    return b"".join(out)


def _split(path: Path, data: bytes) -> tuple[dbn.Metadata, memoryview, int]:
    """(metadata, record bytes (a view, not a copy), DBN version) of a decompressed file."""
    if data[:3] != b"DBN":
        raise DataError(f"{path}: not a DBN file (starts {data[:4]!r}, expected b'DBN' + version)")
    if len(data) < 8:
        raise DataError(f"{path}: truncated DBN file (cut inside the metadata header)")
    version = data[3]
    length = int.from_bytes(data[4:8], "little")
    if len(data) < 8 + length:
        raise DataError(f"{path}: truncated DBN file (metadata of {length} bytes, file ends after "
                        f"{len(data) - 8})")
    try:
        metadata = dbn.Metadata.decode(data[:8 + length])
    except Exception as exc:  # the library raises its own error types
        raise DataError(f"{path}: unreadable DBN metadata ({exc})") from None
    return metadata, memoryview(data)[8 + length:], version


def _schema_name(metadata: dbn.Metadata) -> str | None:
    schema = metadata.schema
    return None if schema is None else str(getattr(schema, "value", schema))


def _decode_records(path: Path, data: bytes) -> list:
    """Every record of a (small) file as library objects; truncation is an error."""
    decoder = dbn.DBNDecoder(upgrade_policy=dbn.VersionUpgradePolicy.UPGRADE_TO_V3)
    try:
        decoder.write(data)
        records = decoder.decode()
    except Exception as exc:
        raise DataError(f"{path}: unreadable DBN records ({exc})") from None
    records = [r for r in records if not isinstance(r, dbn.Metadata)]
    left = decoder.buffer() if hasattr(decoder, "buffer") else b""
    if left:
        raise DataError(f"{path}: truncated DBN file (record index {len(records)} is cut after {len(left)} bytes)")
    return records


def _definition(record) -> Definition:
    exp = int(record.expiration)
    cls = record.instrument_class
    return Definition(int(record.instrument_id), str(record.raw_symbol), None if exp >= _UNDEF_TS else exp,
                      str(getattr(cls, "value", cls)))


def mapping_definitions(metadata: dbn.Metadata) -> dict[int, Definition]:
    """Instruments named by the metadata's symbol mappings, by instrument id.

    Only when the request was by raw symbol (``stype_in`` raw_symbol,
    ``stype_out`` instrument_id), where each mapping is a raw symbol's
    instrument id over dates; otherwise none. No class or expiration: the
    symbol tells."""
    stype_in, stype_out = (str(getattr(x, "value", x)) if x is not None else None
                           for x in (metadata.stype_in, metadata.stype_out))
    if stype_in != "raw_symbol" or stype_out != "instrument_id":
        return {}
    out: dict[int, Definition] = {}
    for raw, intervals in (metadata.mappings or {}).items():
        for interval in intervals:
            symbol = str(interval["symbol"])
            if symbol.isdigit():
                out[int(symbol)] = Definition(int(symbol), str(raw), None, "", interval["start_date"].year)
    return out


def read_definitions(path: Path) -> dict[int, Definition]:
    """The instrument definitions of a DBN file, by instrument id.

    Read from a ``definition``-schema or mixed-schema file (any other schema:
    none); the last definition of an id wins."""
    path = Path(path)
    data = _decompress(path, path.read_bytes())
    metadata, _body, _version = _split(path, data)
    schema = _schema_name(metadata)
    if schema not in (None, "definition"):
        return {}
    out: dict[int, Definition] = {}
    for record in _decode_records(path, data):
        if int(getattr(record.rtype, "value", record.rtype)) == _DEFINITION_RTYPE:
            d = _definition(record)
            out[d.instrument_id] = d
    return out


def schema_of(path: Path) -> str | None:
    """The schema named in a DBN file's metadata (None: mixed)."""
    path = Path(path)
    return _schema_name(_split(path, _decompress(path, path.read_bytes()))[0])


def _ohlcv_dtype(ts_out: bool) -> np.dtype:
    fields = [tuple(f) for f in dbn.OHLCVMsg._dtypes]
    return np.dtype(fields + ([("ts_out", "u8")] if ts_out else []))


def _ohlcv_view(path: Path, body: bytes | memoryview, ts_out: bool, interval: str) -> np.ndarray:
    """The records of an OHLCV-schema file as a structured array (no copy)."""
    dtype = _ohlcv_dtype(ts_out)
    n, stray = divmod(len(body), dtype.itemsize)
    if stray:
        raise DataError(f"{path}: truncated DBN file (record index {n} is cut after {stray} of "
                        f"{dtype.itemsize} bytes)")
    if n > limits.current().max_ingest_rows:
        raise limits.LimitExceeded(f"{path}: {n:,} records exceeds the ingest limit of "
                                   f"{limits.current().max_ingest_rows:,} rows (FBT_MAX_INGEST_ROWS)")
    recs = np.frombuffer(body, dtype=dtype, count=n)
    want = next(r for r, i in _RTYPE_INTERVAL.items() if i == interval)
    bad = np.flatnonzero((recs["rtype"] != want) | (recs["length"] != dtype.itemsize // 4))
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{path}: record index {i}: record type {int(recs['rtype'][i])} (length "
                        f"{int(recs['length'][i]) * 4}) in an ohlcv-{interval} file")
    return recs


def _mixed_records(path: Path, data: bytes) -> tuple[np.ndarray, str, dict[int, Definition], np.ndarray]:
    """The OHLCV bars and instrument definitions of a mixed-schema DBN file.

    Returns (OHLCV records as a structured array, interval, definitions,
    record indexes). Any other record type, or OHLCV records of several
    intervals, is a :class:`DataError` naming the file."""
    rows, index, definitions, intervals = [], [], {}, set()
    for i, record in enumerate(_decode_records(path, data)):
        rtype = int(getattr(record.rtype, "value", record.rtype))
        if rtype == _DEFINITION_RTYPE:
            d = _definition(record)
            definitions[d.instrument_id] = d
        elif rtype in _RTYPE_INTERVAL:
            intervals.add(_RTYPE_INTERVAL[rtype])
            rows.append((14, rtype, record.publisher_id, record.instrument_id, record.ts_event, record.open,
                         record.high, record.low, record.close, record.volume))
            index.append(i)
        else:
            raise DataError(f"{path}: record index {i}: record type {rtype} ({type(record).__name__}) is "
                            "neither OHLCV bars nor an instrument definition")
    if len(intervals) > 1:
        raise DataError(f"{path}: OHLCV records of several intervals ({', '.join(sorted(intervals))}) in one file")
    recs = np.array(rows, dtype=_ohlcv_dtype(False))
    return recs, (intervals.pop() if intervals else ""), definitions, np.asarray(index, dtype=np.int64)


def definition_files_beside(path: Path) -> list[Path]:
    """The definition files in ``path``'s folder (``*definition*.dbn[.zst]``), sorted."""
    path = Path(path)
    return sorted(p for p in path.parent.iterdir()
                  if p.is_file() and p != path and is_definition_file(p))


def read_dbn_bars(path: Path, specs: Mapping[str, ContractSpec],
                  definition_files: Iterable[Path] | None = None) -> DbnBars | None:
    """The bars of a DBN file with fbt contracts assigned; None if it has no bars.

    None for a file with no OHLCV records (a definition file: a companion).

    ``definition_files``: where the instruments' definitions are (default:
    the definition files beside ``path``), besides the file's own. Raises
    :class:`DataError` naming the file for a file-level problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    data = _decompress(path, raw)
    metadata, body, version = _split(path, data)
    schema = _schema_name(metadata)
    if schema == "definition":
        return None
    definitions: dict[int, Definition] = {}
    if schema in OHLCV_SCHEMAS:
        interval = OHLCV_SCHEMAS[schema]
        recs = _ohlcv_view(path, body, bool(metadata.ts_out), interval)
        record = np.arange(len(recs), dtype=np.int64)
    elif schema is None:
        recs, interval, definitions, record = _mixed_records(path, data)
        if not len(recs):
            return None
    else:
        raise DataError(f"{path}: schema {schema!r} is not bars: fbt imports DBN schemas "
                        f"{', '.join(OHLCV_SCHEMAS)} (with definition records), not trades or order books")
    files = definition_files_beside(path) if definition_files is None else [Path(p) for p in definition_files]
    known: dict[int, Definition] = mapping_definitions(metadata)  # definition records win
    for f in files:
        known.update(read_definitions(f))
    known.update(definitions)  # the file's own definitions win

    ids, inverse = np.unique(recs["instrument_id"], return_inverse=True)
    contracts: list[str] = []
    code_of_id = np.full(len(ids), -1, dtype=np.int64)
    skipped: dict[str, int] = {}
    notes: list[str] = []
    counts = np.bincount(inverse, minlength=len(ids))
    for k, iid in enumerate(ids.tolist()):
        d = known.get(iid)
        if d is None:
            first = int(record[np.argmax(inverse == k)])
            where = f" (beside it: {', '.join(p.name for p in files)})" if files else " (none beside it)"
            raise DataError(f"{path}: record index {first}: instrument id {iid} has no definition in the file "
                            f"or its definition files{where}; download the definition schema for it")
        try:
            cid, why = contract_of(d, specs)
        except ValueError as exc:
            first = int(record[np.argmax(inverse == k)])
            raise DataError(f"{path}: record index {first}: instrument id {iid}: {exc}") from None
        if cid is None:
            skipped[f"skipped_{why}"] = skipped.get(f"skipped_{why}", 0) + int(counts[k])
            notes.append(f"{d.raw_symbol} (instrument id {iid}): {why}, {int(counts[k])} bar(s) skipped")
            continue
        if cid not in contracts:
            contracts.append(cid)
        code_of_id[k] = contracts.index(cid)
    codes = code_of_id[inverse]
    keep = codes >= 0
    if not keep.all():
        recs, record, codes = recs[keep], record[keep], codes[keep]
    ts = recs["ts_event"]
    if len(ts) and (ts >= np.uint64(_UNDEF_TS)).any():
        i = int(record[np.argmax(ts >= np.uint64(_UNDEF_TS))])
        raise DataError(f"{path}: record index {i}: undefined ts_event")
    fixed = {c: recs[c] for c in ("open", "high", "low", "close")}  # strided views: read once, below
    volume = recs["volume"]
    if len(volume) and (volume > np.uint64(np.iinfo(np.int64).max)).any():
        i = int(record[np.argmax(volume > np.uint64(np.iinfo(np.int64).max))])
        raise DataError(f"{path}: record index {i}: volume out of range")
    return DbnBars(
        source=str(path.resolve()), interval=interval, records=len(inverse), record=record, codes=codes,
        contracts=contracts, instrument_id=np.ascontiguousarray(recs["instrument_id"]).astype(np.int64),
        ts_us=(ts // np.uint64(1000)).astype(np.int64),
        prices={c: fixed_to_points(v) for c, v in fixed.items()}, fixed=fixed,
        volume=volume.astype(np.int64), skipped=skipped, notes=notes)


def month_code(month: int) -> str:
    """``12 -> "Z"`` (for building raw symbols in tests and docs)."""
    return MONTH_CODES[month - 1]
