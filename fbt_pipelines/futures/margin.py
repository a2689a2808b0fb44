"""Margin per contract over time: LEAN margin history files and per-bar lookup.

File format (QuantConnect LEAN, ``Data/future/<exchange>/margins/<ROOT>.csv``)::

    date,initial,maintenance
    20120326,4375,3500
    20120924,3850,3500

- ``date``: ``yyyyMMdd``, the first day the row's margins are in force; read
  as that day's **UTC midnight** (a tz-aware ``Timestamp``);
- ``initial``, ``maintenance``: margin per contract in the contract currency
  (USD for the CME/COMEX files), positive, ``maintenance <= initial``;
- dates strictly increase; a row holds until the next row's date.

:func:`read_margin_history` parses and validates a file (bad input raises
:class:`~fbt_pipelines.errors.DataError` naming the file and the 1-based line,
the header being line 1); :func:`margin_per_bar` turns a history plus the
catalogue's :class:`~fbt_pipelines.catalog.specs.ContractSpec` into the
initial (or maintenance) margin per contract in force at each bar, the
arrays the engine's ``run_backtest(..., margins=..., maintenance_margins=...)``
takes.

Pure: pandas and numpy only, no I/O beyond reading the one file asked for.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.errors import DataError

HEADER = ("date", "initial", "maintenance")
MARGIN_COLUMNS = list(HEADER)
_DATE = re.compile(r"\d{8}")
_NUMBER = re.compile(r"\d+(\.\d*)?|\.\d+")  # plain decimals: no sign, exponent, '_', nan or inf


def _source_text(path_or_text: str | os.PathLike[str], name: str | None) -> tuple[str, str]:
    """(text, name for messages). A ``str`` holding a newline is CSV text, any other ``str`` a path."""
    if isinstance(path_or_text, str) and ("\n" in path_or_text or "\r" in path_or_text):
        return path_or_text, name or "<margin text>"
    if not isinstance(path_or_text, (str, os.PathLike)):
        raise TypeError(f"read_margin_history takes a path or CSV text, got {type(path_or_text).__name__}")
    path = Path(path_or_text)
    label = name or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{label}: no such file") from None
    except OSError as exc:
        raise DataError(f"{label}: cannot read ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8-sig"), label
    except UnicodeDecodeError as exc:
        raise DataError(f"{label}: not UTF-8 text (byte {exc.start})") from None


def read_margin_history(path_or_text: str | os.PathLike[str], *, name: str | None = None) -> pd.DataFrame:
    """Read a LEAN margin history (``date,initial,maintenance``).

    Parameters
    ----------
    path_or_text
        A file path (``str`` or ``Path``), or the CSV text itself (a ``str``
        with at least one line break).
    name
        What error messages call the source (default: the path, or
        ``"<margin text>"`` for text).

    Returns
    -------
    pandas.DataFrame
        Columns ``date`` (``datetime64[ns, UTC]``, midnight of the day the row
        takes effect), ``initial`` and ``maintenance`` (float64, contract
        currency per contract); one row per data line, dates strictly
        increasing, fresh ``RangeIndex``.

    Raises
    ------
    DataError
        ``"<file>: line <k>: <reason>"`` for a wrong header, a line without
        exactly three fields, a date that is not a ``yyyyMMdd`` calendar date,
        a date not after the previous line's, a value that is not a positive
        plain decimal number, ``maintenance > initial``, a blank line between
        rows, or no data rows at all. Trailing blank lines are ignored.
    """
    text, label = _source_text(path_or_text, name)
    text = text.removeprefix("\ufeff")
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"{label}: empty file (expected header {','.join(HEADER)})")
    header = tuple(f.strip().lower() for f in lines[0].split(","))
    if header != HEADER:
        raise DataError(f"{label}: line 1: header {lines[0]!r}, expected {','.join(HEADER)!r}")
    if len(lines) == 1:
        raise DataError(f"{label}: no data rows after the header")

    dates: list[dt.date] = []
    initial: list[float] = []
    maintenance: list[float] = []
    for k, line in enumerate(lines[1:], start=2):
        where = f"{label}: line {k}"
        fields = [f.strip() for f in line.split(",")]
        if not line.strip():
            raise DataError(f"{where}: blank line between rows")
        if len(fields) != 3:
            raise DataError(f"{where}: {len(fields)} field(s) in {line!r}, expected 3 ({','.join(HEADER)})")
        d, ini, mnt = fields
        if not _DATE.fullmatch(d):
            raise DataError(f"{where}: date {d!r} is not yyyyMMdd")
        try:
            day = dt.date(int(d[:4]), int(d[4:6]), int(d[6:]))
        except ValueError:
            raise DataError(f"{where}: date {d!r} is not a calendar date") from None
        values = []
        for col, s in (("initial", ini), ("maintenance", mnt)):
            v = float(s) if _NUMBER.fullmatch(s) else math.nan
            if not (math.isfinite(v) and v > 0):
                raise DataError(f"{where}: {col} {s!r} is not a positive number")
            values.append(v)
        if values[1] > values[0]:
            raise DataError(f"{where}: maintenance {mnt} exceeds initial {ini}")
        if dates and day <= dates[-1]:
            raise DataError(
                f"{where}: date {d} is not after {dates[-1]:%Y%m%d} on line {k - 1} (dates must strictly increase)"
            )
        dates.append(day)
        initial.append(values[0])
        maintenance.append(values[1])

    return pd.DataFrame({
        "date": pd.DatetimeIndex(pd.to_datetime(dates)).tz_localize("UTC").as_unit("ns"),
        "initial": np.asarray(initial, dtype=np.float64),
        "maintenance": np.asarray(maintenance, dtype=np.float64),
    }, columns=MARGIN_COLUMNS)


def margin_per_bar(ts: pd.Series, spec: ContractSpec, history: pd.DataFrame | None,
                   column: str = "initial") -> np.ndarray:
    """Initial (or, with ``column="maintenance"``, maintenance) margin per contract in force at each bar.

    Parameters
    ----------
    ts
        Bar time stamps (tz-aware, or naive = UTC). A bar's date is its UTC
        calendar date; intraday bars of one UTC day share that day's margin.
    spec
        The market; ``spec.initial_margin`` (contract currency per contract)
        applies where the history says nothing.
    history
        From :func:`read_margin_history` (columns ``date`` and ``column``), or
        ``None`` for the catalogue value on every bar.
    column
        ``"initial"`` or ``"maintenance"``: which margin.

    Returns
    -------
    numpy.ndarray
        float64, one value per bar: initial margin per contract in the
        contract currency (USD for US futures). As of each bar: the
        ``column`` value of the latest history row whose date is <= the bar's
        date (a row dated on the bar's own date applies to it); the
        catalogue's ``spec.initial_margin`` (``spec.maintenance_margin``)
        before the first history row or when ``history`` is ``None``.
    """
    if column not in ("initial", "maintenance"):
        raise ValueError(f"column must be 'initial' or 'maintenance', got {column!r}")
    default = spec.initial_margin if column == "initial" else spec.maintenance_margin
    stamps = pd.DatetimeIndex(pd.to_datetime(pd.Series(ts)))
    if stamps.hasnans:
        raise ValueError("ts has missing time stamps (NaT)")
    stamps = stamps.tz_localize("UTC") if stamps.tz is None else stamps.tz_convert("UTC")
    out = np.full(len(stamps), float(default), dtype=np.float64)
    if history is None or len(history) == 0 or len(stamps) == 0:
        return out
    missing = [c for c in ("date", column) if c not in history.columns]
    if missing:
        raise ValueError(f"margin history lacks column(s) {missing}")
    dates = pd.DatetimeIndex(pd.to_datetime(history["date"]))
    dates = dates.tz_localize("UTC") if dates.tz is None else dates.tz_convert("UTC")
    if dates.hasnans or not dates.is_monotonic_increasing or dates.has_duplicates:
        raise ValueError("margin history dates must strictly increase")
    initial = history[column].to_numpy(np.float64)
    if not (np.isfinite(initial).all() and (initial >= 0).all()):
        raise ValueError(f"margin history {column} margins must be finite and >= 0")
    # row dates are UTC midnights, so "row date <= bar's UTC date" is "row date <= bar time"
    row = np.searchsorted(dates.as_unit("ns").asi8, stamps.as_unit("ns").asi8, side="right") - 1
    known = row >= 0
    out[known] = initial[row[known]]
    return out


@dataclass(frozen=True)
class MarginSchedule:
    """Initial and maintenance margin per contract over a series of bars, as
    segments: ``initial[j]`` and ``maintenance[j]`` (contract currency per
    contract) hold from bar ``starts[j]`` up to the next start (the last up
    to bar ``n - 1``).

    The form the engine's kernel reads (one comparison per bar to move to the
    next segment, no per-bar array to stream or validate): a dated history
    has a few dozen rows against millions of bars. ``maintenance`` NaN (all
    of it) means no maintenance margin: no margin calls. Validated when made
    (``ValueError`` naming the fault); the arrays are read-only.
    """

    starts: np.ndarray       # int64[k]: first bar of each segment; starts[0] == 0, strictly increasing, < n
    initial: np.ndarray      # float64[k]: initial margin per contract, finite, >= 0
    maintenance: np.ndarray  # float64[k]: maintenance margin per contract, finite, >= 0; or all NaN (none)
    n: int                   # bars

    def __post_init__(self) -> None:
        starts = np.ascontiguousarray(self.starts, dtype=np.int64)
        initial = np.ascontiguousarray(self.initial, dtype=np.float64)
        maintenance = np.ascontiguousarray(self.maintenance, dtype=np.float64)
        k = len(starts)
        if self.n < 0 or k == 0 or initial.shape != (k,) or maintenance.shape != (k,):
            raise ValueError(f"margin schedule needs one start, initial and maintenance per segment (got {k}, "
                             f"{initial.shape}, {maintenance.shape}) and n >= 0 (got {self.n})")
        if starts[0] != 0 or (k > 1 and not (np.diff(starts) > 0).all()) or (self.n > 0 and starts[-1] >= self.n):
            raise ValueError(f"margin schedule starts must begin at 0, strictly increase and stay below n={self.n}")
        if not (np.isfinite(initial).all() and (initial >= 0).all()):
            raise ValueError("margins must be finite and >= 0 (currency per contract)")
        none = np.isnan(maintenance)
        if none.any() and not none.all():
            raise ValueError("maintenance margins must be given for every bar or for none")
        if not none.any() and not (np.isfinite(maintenance).all() and (maintenance >= 0).all()):
            raise ValueError("maintenance_margins must be finite and >= 0 (currency per contract)")
        for name, a in (("starts", starts), ("initial", initial), ("maintenance", maintenance)):
            a.flags.writeable = False
            object.__setattr__(self, name, a)

    @classmethod
    def constant(cls, n: int, initial: float, maintenance: float = math.nan) -> "MarginSchedule":
        """One segment: the same margins on every bar (maintenance NaN: no margin calls)."""
        return cls(np.zeros(1, np.int64), np.array([float(initial)]), np.array([float(maintenance)]), n)

    @classmethod
    def from_per_bar(cls, initial: np.ndarray, maintenance: np.ndarray | None) -> "MarginSchedule":
        """Segments of per-bar arrays (float64[n], validated by the caller;
        ``maintenance`` None: no margin calls): a new segment wherever either
        value changes."""
        n = len(initial)
        if n == 0:
            return cls.constant(0, 0.0)
        changed = initial[1:] != initial[:-1]
        if maintenance is not None:  # NaN (no maintenance) equals NaN here: one segment, not one per bar
            changed |= (maintenance[1:] != maintenance[:-1]) & ~(np.isnan(maintenance[1:]) & np.isnan(maintenance[:-1]))
        starts = np.r_[0, np.flatnonzero(changed) + 1].astype(np.int64)
        mnt = np.full(len(starts), np.nan) if maintenance is None else maintenance[starts]
        return cls(starts, initial[starts], mnt, n)

    @property
    def has_maintenance(self) -> bool:
        """True when margin calls apply (maintenance margins are given)."""
        return not bool(np.isnan(self.maintenance[0]))

    def per_bar(self, which: str = "initial") -> np.ndarray:
        """float64[n]: the ``"initial"`` or ``"maintenance"`` margin of every bar."""
        values = self.initial if which == "initial" else self.maintenance
        return np.repeat(values, np.diff(np.r_[self.starts, self.n]))

    def window(self, keep: np.ndarray) -> "MarginSchedule":
        """The schedule of the bars where ``keep`` (bool[n]) is True."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (self.n,):
            raise ValueError(f"keep has shape {keep.shape}, the schedule has {self.n} bars")
        segment = np.searchsorted(self.starts, np.flatnonzero(keep), side="right") - 1
        if len(segment) == 0:
            return MarginSchedule.constant(0, float(self.initial[0]), float(self.maintenance[0]))
        first = np.r_[True, segment[1:] != segment[:-1]]
        seg = segment[first]
        starts = np.flatnonzero(first).astype(np.int64)
        return MarginSchedule(starts, self.initial[seg], self.maintenance[seg], int(keep.sum()))


def margin_schedule(ts: pd.Series, spec: ContractSpec, history: pd.DataFrame | None,
                    calls: bool = True) -> MarginSchedule:
    """:func:`margin_per_bar`'s initial and maintenance margins as a
    :class:`MarginSchedule` (equal bar for bar; no per-bar array is built):
    the catalogue's values up to the first history row, then each row from
    the first bar on or after its date (UTC). ``calls=False``: no maintenance
    margin (the engine then makes no margin calls)."""
    stamps = pd.DatetimeIndex(pd.to_datetime(pd.Series(ts)))
    if stamps.hasnans:
        raise ValueError("ts has missing time stamps (NaT)")
    stamps = stamps.tz_localize("UTC") if stamps.tz is None else stamps.tz_convert("UTC")
    n = len(stamps)
    maint = float(spec.maintenance_margin) if calls else math.nan
    if history is None or len(history) == 0 or n == 0:
        return MarginSchedule.constant(n, float(spec.initial_margin), maint)
    dates = pd.DatetimeIndex(pd.to_datetime(history["date"]))
    dates = dates.tz_localize("UTC") if dates.tz is None else dates.tz_convert("UTC")
    if dates.hasnans or not dates.is_monotonic_increasing or dates.has_duplicates:
        raise ValueError("margin history dates must strictly increase")
    first_bar = np.searchsorted(stamps.as_unit("ns").asi8, dates.as_unit("ns").asi8, side="left")
    starts = np.r_[0, first_bar]
    initial = np.r_[float(spec.initial_margin), history["initial"].to_numpy(np.float64)]
    if not calls:
        rows = np.full(len(history), np.nan)
    elif "maintenance" in history.columns:
        rows = history["maintenance"].to_numpy(np.float64)
    else:  # initial margins only: the catalogue's maintenance / initial ratio
        ratio = spec.maintenance_margin / spec.initial_margin if spec.initial_margin > 0 else 0.0
        rows = history["initial"].to_numpy(np.float64) * ratio
    maintenance = np.r_[maint, rows]
    # rows starting on the same bar (or past the end): the last one in force wins
    last = np.r_[starts[1:] != starts[:-1], True] & (starts < n)
    return MarginSchedule(starts[last].astype(np.int64), initial[last], maintenance[last], n)
