"""Intraday (1m, 1h) roll schedules, continuous series, backtests and tear sheets.

The intraday asset group (``assets/intraday.py``), ``fbt backtest --interval``
and ``fbt demo-intraday`` come through here. A series is one market at one
interval over an optional window of trading days, stored under its
:func:`series_key` (``ES|1m``, ``ES|1m|2013-10-28..2013-10-31``) in the
``intraday_*`` warehouse tables, so the daily tables are untouched.

Rules (docs/guide.md, "Intraday bars"):

- every bar belongs to the trading session :func:`~fbt_pipelines.marketdata.sessions.assign_sessions`
  gives it (a Sunday 17:00 CT bar is Monday's); bars outside every session are
  left out and counted by reason;
- the roll *date* is the daily schedule's: the market's catalogue roll rule on
  the daily bars built per session from these intraday bars
  (:func:`~fbt_pipelines.marketdata.daily_bars.daily_from_minute`'s rule);
  the roll happens at the *session's last bar* of the old contract: the
  series holds it through that bar, the new contract from the next session on;
  the gap is the new contract's close at or before that bar minus the old
  one's close (points);
- Panama back-adjustment: every earlier segment gets the sum of the later
  gaps, so point changes equal the held contract's own across rolls;
- annualisation: bars per session x 252
  (:func:`~fbt_pipelines.marketdata.sessions.annualisation_factor`: ES 1m
  1,380 x 252); the size is a fixed number of contracts (volatility targeting
  sizes on daily volatility and is not offered intraday).

Times are UTC, prices in points, money in USD. No Dagster here.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from fbt_pipelines.catalog.contracts import Contract
from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.errors import DataError, RollError
from fbt_pipelines.futures.back_adjust import CONTINUOUS_COLUMNS
from fbt_pipelines.futures.roll_rules import RollRule, build_roll_schedule
from fbt_pipelines.futures.roll_schedule import ROLL_COLUMNS, first_contract
from fbt_pipelines.marketdata.sessions import annualisation_factor, assign_sessions, bars_per_session, utc_ns
from fbt_pipelines.primitives.performance import PERIODS_PER_YEAR, sharpe_ratio
from fbt_pipelines.reports.sparkline import svg_lines
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.services.tracking import Tracking
from fbt_pipelines.usecases.backtest import (MarketBacktest, MarketData, _event_tags, backtest_market, backtest_row,
                                             market_data, run_name, store_backtests)
from fbt_pipelines.usecases.continuous import ContinuousCheck, RollGapCheck
from fbt_pipelines.usecases.spec import BacktestSpec
from fbt_pipelines.usecases.workspace import Workspace

INTERVALS = ("1m", "1h")
DEFAULT_INTERVAL = "1m"
CONTINUITY_TOLERANCE = 1e-6  # points: float rounding of raw + shift
INTRADAY_ROLL_COLUMNS = ["series", "interval", *ROLL_COLUMNS, "roll_ts"]
# the daily series' columns but root and method (in the series key; fewer strings: 3.5M-row writes stay fast)
INTRADAY_CONTINUOUS_COLUMNS = ["series", "session", *[c for c in CONTINUOUS_COLUMNS if c not in ("root", "method")]]
_PRICE_COLUMNS = [c for c in INTRADAY_CONTINUOUS_COLUMNS if c != "series"]
_NS_PER_S = 10**9
_KEY_SCALE = 10**10  # (contract code, second) -> one sortable int64


def check_interval(interval: str) -> str:
    """``interval`` if the intraday graph runs it (1m, 1h), else DataError."""
    if interval not in INTERVALS:
        raise DataError(f"interval {interval!r}: the intraday series take {' or '.join(INTERVALS)} "
                        "(daily bars: the daily assets)")
    return interval


def parse_day(text: str | None, name: str) -> dt.date | None:
    """A window bound ``YYYY-MM-DD`` (empty or None: open), else DataError naming ``name``."""
    if not text:
        return None
    try:
        return dt.date.fromisoformat(str(text))
    except ValueError:
        raise DataError(f"{name} {text!r}: expected a date YYYY-MM-DD") from None


def series_key(root: str, interval: str, start: dt.date | None = None, end: dt.date | None = None) -> str:
    """``ROOT|interval``, plus ``|start..end`` (trading days) when a window is set."""
    key = f"{root}|{check_interval(interval)}"
    if start is None and end is None:
        return key
    return f"{key}|{start.isoformat() if start else ''}..{end.isoformat() if end else ''}"


# --- bars by session -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionedBars:
    """Intraday bars inside sessions, sorted by (contract, ts), as arrays.

    ``code``: index into ``contracts`` (contract ids, sorted); ``ts``: int64
    ns UTC; ``day``: the trading day (datetime64[D]); prices in points;
    ``outside``: bars left out, reason -> count (outside every session or
    outside the window).
    """

    root: str
    contracts: np.ndarray
    code: np.ndarray
    ts: np.ndarray
    day: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    open_interest: np.ndarray
    outside: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ts)

    def slice_of(self, k: int) -> tuple[int, int]:
        """Rows [lo, hi) of contract number ``k``."""
        return int(np.searchsorted(self.code, k, "left")), int(np.searchsorted(self.code, k, "right"))

    def index_of(self, contract: str) -> int:
        k = int(np.searchsorted(self.contracts, contract))
        if k >= len(self.contracts) or self.contracts[k] != contract:
            raise RollError(f"{self.root}: no intraday bars of {contract}")
        return k

    def daily(self) -> pd.DataFrame:
        """Daily bars per contract and session, ts = 00:00 UTC of the trading day.

        Open: the first bar's, high/low: the extremes, close: the last bar's,
        volume: the sum, open interest: the last bar's.
        """
        n = len(self.ts)
        if n == 0:
            return pd.DataFrame(columns=["root", "contract", "ts", "open", "high", "low", "close", "volume",
                                         "open_interest"])
        change = np.ones(n, dtype=bool)
        change[1:] = (self.code[1:] != self.code[:-1]) | (self.day[1:] != self.day[:-1])
        starts = np.flatnonzero(change)
        ends = np.r_[starts[1:], n] - 1
        return pd.DataFrame({
            "root": self.root, "contract": self.contracts[self.code[starts]],
            "ts": pd.DatetimeIndex(self.day[starts].astype("datetime64[ns]")).tz_localize("UTC"),
            "open": self.open[starts], "high": np.maximum.reduceat(self.high, starts),
            "low": np.minimum.reduceat(self.low, starts), "close": self.close[ends],
            "volume": np.add.reduceat(self.volume, starts), "open_interest": self.open_interest[ends],
        }).sort_values(["ts", "contract"], kind="mergesort").reset_index(drop=True)


def sessioned_bars(bars: pd.DataFrame, spec: ContractSpec, start: dt.date | None = None,
                   end: dt.date | None = None) -> SessionedBars:
    """``bars`` by trading session, cut to the window of trading days.

    ``bars``: contract, ts UTC, OHLC points, volume, open_interest.

    Bars outside every session of the market and bars whose trading day is
    outside ``[start, end]`` are left out and counted by reason.
    """
    if bars.empty:
        raise DataError(f"no intraday bars for {spec.root}")
    assigned = assign_sessions(bars["ts"], spec)
    keep = ~np.isnat(assigned.day)  # the bars inside a session (NaT outside): no per-bar string compare
    outside: dict[str, int] = {}
    if (~keep).any():
        reasons, counts = np.unique(assigned.reason[~keep], return_counts=True)
        outside.update({str(r): int(c) for r, c in zip(reasons, counts)})
    day = assigned.day
    window = np.ones(len(keep), dtype=bool)
    if start is not None:
        window &= ~(day < np.datetime64(start, "D"))
    if end is not None:
        window &= ~(day > np.datetime64(end, "D"))
    if (keep & ~window).any():
        outside["outside the window"] = int((keep & ~window).sum())
    keep &= window
    if not keep.any():
        raise DataError(f"no intraday bars of {spec.root} inside its sessions"
                        + (f" between {start} and {end}" if start or end else ""))
    every = bool(keep.all())
    codes, contracts = _contract_numbers(bars["contract"], keep, every)
    ts = utc_ns(bars["ts"]) if every else utc_ns(bars["ts"])[keep]
    order = np.lexsort((ts, codes))
    take = order if every else np.flatnonzero(keep)[order]

    def col(name: str) -> np.ndarray:
        if name not in bars:
            return np.full(len(take), np.nan)
        return bars[name].to_numpy(dtype="float64", na_value=np.nan)[take]

    return SessionedBars(spec.root, contracts, codes[order], ts[order],
                         (day if every else day[keep])[order], col("open"), col("high"), col("low"), col("close"),
                         col("volume"), col("open_interest"), outside)


def _contract_numbers(contract: pd.Series, keep: np.ndarray, every: bool) -> tuple[np.ndarray, np.ndarray]:
    """(contract number of each kept bar, the kept contracts' names in order): name order.

    A categorical column (:func:`read_intraday_bars`) is numbered from its
    codes (no hashing of 4M values); any other by ``pd.factorize``.
    """
    if isinstance(contract.dtype, pd.CategoricalDtype):
        cat = contract.cat.codes.to_numpy()
        kept = cat if every else cat[keep]
        if len(kept) and kept.min() >= 0:  # a missing contract (-1): factorized below as ever
            present = np.flatnonzero(np.bincount(kept, minlength=len(contract.cat.categories)))
            uniques = np.asarray(contract.cat.categories[present], dtype=object)
            perm = np.argsort(uniques)
            number = np.full(len(contract.cat.categories), -1, dtype=np.int64)
            number[present[perm]] = np.arange(len(perm))
            return number[kept], uniques[perm]
    codes, uniques = pd.factorize(contract if every else contract[keep])
    uniques = np.asarray(uniques, dtype=object)
    perm = np.argsort(uniques)
    rank = np.empty(len(perm), dtype=np.int64)
    rank[perm] = np.arange(len(perm))
    return rank[codes], uniques[perm]


# --- roll schedule -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntradayRolls(RollGapCheck):
    """A series' roll schedule: the daily roll dates applied at each session's last bar.

    ``schedule``: :data:`INTRADAY_ROLL_COLUMNS` (``roll_date`` the trading
    day, 00:00 UTC; ``roll_ts`` the UTC start time of the old contract's last
    bar of that session, at whose close the roll happens; ``gap`` points);
    ``start_contract``: the contract held before the first roll; ``daily``:
    the session-built daily bars the roll dates come from.
    """

    key: str
    interval: str
    rule: RollRule
    schedule: pd.DataFrame
    start_contract: str
    daily: pd.DataFrame
    outside: dict[str, int]


def intraday_roll_schedule(sb: SessionedBars, contracts: Sequence[Contract], rule: RollRule, key: str,
                           interval: str) -> IntradayRolls:
    """Roll schedule of series ``key`` from its bars by session (see the module docstring)."""
    daily = sb.daily()
    schedule = build_roll_schedule(sb.root, contracts, daily, rule)
    start = (str(schedule["from_contract"].iloc[0]) if len(schedule)
             else schedule.attrs.get("start_contract") or first_contract(
                 schedule, daily.pivot(index="ts", columns="contract", values="close"), contracts))
    rows = []
    for r in schedule.itertuples(index=False):
        roll_day = np.datetime64(pd.Timestamp(r.roll_date).date(), "D")
        f_lo, f_hi = sb.slice_of(sb.index_of(r.from_contract))
        d_lo = f_lo + int(np.searchsorted(sb.day[f_lo:f_hi], roll_day, "left"))
        d_hi = f_lo + int(np.searchsorted(sb.day[f_lo:f_hi], roll_day, "right"))
        if d_hi == d_lo:
            raise RollError(f"{key}: {r.from_contract} has no bar in the {roll_day} session it rolls in")
        i = d_hi - 1  # the old contract's last bar of the roll session
        g_lo, g_hi = sb.slice_of(sb.index_of(r.to_contract))
        j = g_lo + int(np.searchsorted(sb.ts[g_lo:g_hi], sb.ts[i], "right")) - 1
        if j < g_lo or sb.day[j] != roll_day:
            raise RollError(f"{key}: {r.to_contract} has no bar in the {roll_day} session at or before "
                            f"{r.from_contract}'s last bar ({pd.Timestamp(sb.ts[i], tz='UTC')})")
        fc, nc = float(sb.close[i]), float(sb.close[j])
        rows.append({"series": key, "interval": interval, "root": sb.root, "rule": rule.label,
                     "roll_date": r.roll_date, "from_contract": r.from_contract, "to_contract": r.to_contract,
                     "from_close": fc, "to_close": nc, "gap": nc - fc, "ratio": nc / fc if fc else np.nan,
                     "roll_ts": pd.Timestamp(sb.ts[i], tz="UTC")})
    # typed even without rows: the table is created from the first frame written
    frame = pd.DataFrame(rows, columns=INTRADAY_ROLL_COLUMNS).astype(
        {"series": "str", "interval": "str", "root": "str", "rule": "str", "from_contract": "str",
         "to_contract": "str", "roll_date": "datetime64[ns, UTC]", "roll_ts": "datetime64[ns, UTC]",
         "from_close": float, "to_close": float, "gap": float, "ratio": float})
    return IntradayRolls(key, interval, rule, frame, start, daily, sb.outside)


def start_contract_for(sb: SessionedBars, schedule: pd.DataFrame, contracts: Sequence[Contract],
                       rule: RollRule) -> str:
    """The contract a series holds before its first roll.

    The stored schedule's first ``from_contract``; without rolls in the
    window, the daily schedule's own choice (:func:`intraday_roll_schedule`).
    """
    if len(schedule):
        return str(schedule["from_contract"].iloc[0])
    return intraday_roll_schedule(sb, contracts, rule, "", "").start_contract


# --- continuous series ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntradayContinuous(ContinuousCheck):
    """The Panama series of a key with the numbers its checks read.

    The daily :class:`~fbt_pipelines.usecases.continuous.ContinuousCheck`'s
    fields: ``prices``: :data:`INTRADAY_CONTINUOUS_COLUMNS`, one row per bar
    of the held contract (``session``: trading day; ``roll``: True on the old
    contract's last bar of each roll session); ``bad_bars``: bars whose point
    change differs from the held contract's own (``no_gaps_at_rolls``);
    ``last_segment_diff``: largest |adjusted - raw| on the last segment, points.
    """


def intraday_continuous(sb: SessionedBars, schedule: pd.DataFrame, start_contract: str,
                        contracts: Sequence[Contract], key: str, interval: str) -> IntradayContinuous:
    """Panama back-adjusted series of ``key``: the held contract per session, shifted.

    ``schedule`` is :func:`intraday_roll_schedule`'s (``roll_date`` the last
    session in ``from_contract``, ``gap`` at ``roll_ts``).

    Built run by run (:func:`_held_runs`: each a slice of ``sb``), every
    column written once into its own array (no per-bar index arrays: the
    allocations of 3.5M-bar temporaries cost more than the arithmetic).
    """
    n_rolls = len(schedule)
    chain = [start_contract, *schedule["to_contract"].astype(str)]
    chain_codes = np.array([sb.index_of(c) for c in chain], dtype=np.int64)
    roll_days = (pd.DatetimeIndex(pd.to_datetime(schedule["roll_date"], utc=True)).tz_localize(None)
                 .to_numpy().astype("datetime64[D]"))
    runs = _held_runs(sb, chain_codes, roll_days)
    n = runs.n
    if n == 0:
        raise DataError(f"{key}: the held contracts have no bars")
    gaps = schedule["gap"].to_numpy(float)
    shifts = np.concatenate([np.cumsum(gaps[::-1])[::-1], [0.0]])  # per segment: the later gaps (points)
    ts = runs.take(sb.ts)
    raw_close = runs.take(sb.close)
    close = runs.take(sb.close, shifts)
    last_trade = {c.contract_id: np.datetime64(c.last_trade, "D") for c in contracts}
    expiry = np.array([last_trade.get(c, np.datetime64("NaT", "D")) for c in sb.contracts], dtype="datetime64[D]")
    days_to_expiry = np.empty(n, dtype=np.int64)
    for r in range(len(runs.lo)):
        out = days_to_expiry[runs.at[r]:runs.at[r + 1]]
        np.floor_divide(sb.ts[runs.lo[r]:runs.hi[r]], 86_400 * _NS_PER_S, out=out)  # the UTC date, days
        e = expiry[chain_codes[runs.seg[r]]]
        if np.isnat(e):
            out[:] = np.timedelta64("NaT", "D").astype(np.int64)
        else:
            np.subtract(e.astype(np.int64), out, out=out)
    roll = np.zeros(n, dtype=bool)  # True on each segment's last bar but the last segment's
    rolls_out = np.r_[runs.seg[1:] != runs.seg[:-1], True] & (runs.seg < n_rolls)
    roll[runs.at[1:][rolls_out] - 1] = True
    names = [str(sb.contracts[chain_codes[g]]) for g in runs.seg]
    prices = pd.DataFrame({
        "series": _repeated_strings([key], [n]),
        "session": pd.DatetimeIndex(runs.take(sb.day, dtype="datetime64[ns]")).tz_localize("UTC"),
        "ts": pd.DatetimeIndex(ts).tz_localize("UTC"), "contract": _repeated_strings(names, runs.hi - runs.lo),
        "open": runs.take(sb.open, shifts), "high": runs.take(sb.high, shifts), "low": runs.take(sb.low, shifts),
        "close": close, "raw_close": raw_close, "volume": runs.take(sb.volume),
        "open_interest": runs.take(sb.open_interest), "days_to_expiry": days_to_expiry, "roll": roll,
    }, columns=INTRADAY_CONTINUOUS_COLUMNS, copy=False)  # fresh arrays: no 2-D block stacking
    last = slice(int(runs.at[np.searchsorted(runs.seg, runs.seg[-1], "left")]), n)  # the last segment's bars
    return IntradayContinuous(prices, _run_continuity_errors(close, raw_close, ts, sb, runs, chain_codes),
                              float(np.abs(close[last] - raw_close[last]).max()))


@dataclass(frozen=True)
class _Runs:
    """The series as runs of consecutive ``sb`` rows, in series order.

    Run r is ``sb`` rows ``[lo[r], hi[r])`` at series positions ``[at[r],
    at[r + 1])``, all in segment ``seg[r]`` (non-decreasing: segment s holds
    ``chain_codes[s]`` after roll s - 1, up to and including roll s).
    """

    lo: np.ndarray
    hi: np.ndarray
    seg: np.ndarray
    at: np.ndarray

    @property
    def n(self) -> int:
        return int(self.at[-1])

    def take(self, values: np.ndarray, shifts: np.ndarray | None = None, dtype: Any = None) -> np.ndarray:
        """``values`` at the series' rows (plus the run's segment shift), in one new array."""
        out = np.empty(self.n, dtype=dtype or values.dtype)
        for r in range(len(self.lo)):
            part = out[self.at[r]:self.at[r + 1]]
            if shifts is None:
                part[:] = values[self.lo[r]:self.hi[r]]
            else:
                np.add(values[self.lo[r]:self.hi[r]], shifts[self.seg[r]], out=part)
        return out


def _held_runs(sb: SessionedBars, chain_codes: np.ndarray, roll_days: np.ndarray) -> _Runs:
    """The rows of ``sb`` the series holds, as runs (segment s: ``chain_codes[s]``).

    A bar is in segment s when its session is after roll day s - 1 and up to
    roll day s (``searchsorted(roll_days, day, "left")``: sessions up to a
    roll date stay in the old segment) and its contract is ``chain_codes[s]``;
    the series takes segment by segment, each in ``sb`` (time) order. With
    the roll days in order and each contract's sessions in time order (as
    :func:`sessioned_bars` gives them), a segment is one slice of its
    contract's rows, found by two binary searches; otherwise the bars are
    picked one by one.
    """
    n_seg = len(chain_codes)
    days = sb.day.view(np.int64)
    in_order = bool((roll_days[1:] >= roll_days[:-1]).all()) and not np.isnat(roll_days).any() and bool(
        ((days[1:] >= days[:-1]) | (sb.code[1:] != sb.code[:-1])).all())
    if in_order:
        lo, hi = np.empty(n_seg, dtype=np.int64), np.empty(n_seg, dtype=np.int64)
        for s, k in enumerate(chain_codes):
            b_lo, b_hi = sb.slice_of(int(k))
            day = sb.day[b_lo:b_hi]
            lo[s] = b_lo + (int(np.searchsorted(day, roll_days[s - 1], "right")) if s > 0 else 0)
            hi[s] = b_lo + (int(np.searchsorted(day, roll_days[s], "right")) if s < n_seg - 1 else len(day))
            hi[s] = max(hi[s], lo[s])
        seg = np.arange(n_seg, dtype=np.int64)
    else:
        seg_all = np.searchsorted(roll_days, sb.day, "left")
        rows = np.flatnonzero(sb.code == chain_codes[seg_all])
        rows = rows[np.argsort(seg_all[rows], kind="stable")]
        seg_rows = seg_all[rows]
        cut = np.flatnonzero((np.diff(rows) != 1) | (np.diff(seg_rows) != 0)) + 1
        first = np.r_[0, cut].astype(np.int64) if len(rows) else np.empty(0, dtype=np.int64)
        last = np.r_[cut - 1, len(rows) - 1].astype(np.int64) if len(rows) else first
        lo, hi, seg = rows[first], rows[last] + 1, seg_rows[first]
    used = hi > lo
    lo, hi, seg = lo[used], hi[used], seg[used]
    return _Runs(lo, hi, seg, np.r_[0, np.cumsum(hi - lo)].astype(np.int64))


def _repeated_strings(names: Sequence[str], counts: Sequence[int] | np.ndarray) -> pd.api.extensions.ExtensionArray:
    """``names[i]`` repeated ``counts[i]`` times, in order, as a pandas ``str`` array.

    Written straight into an Arrow string array (lengths and UTF-8 bytes):
    no Python string per row.
    """
    counts = np.asarray(counts, dtype=np.int64)
    raw = [name.encode() for name in names]
    width = np.array([len(b) for b in raw], dtype=np.int64)
    offsets = np.zeros(int(counts.sum()) + 1, dtype=np.int64)
    data = np.empty(int((counts * width).sum()), dtype=np.uint8)
    row, byte = 0, 0
    for b, w, c in zip(raw, width, counts):
        offsets[row + 1:row + 1 + c] = w
        data[byte:byte + w * c].reshape(c, w)[:] = np.frombuffer(b, dtype=np.uint8)
        row, byte = row + c, byte + w * c
    np.cumsum(offsets, out=offsets)
    array = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))
    return pd.array(array, dtype="str")


def continuity_errors(close: np.ndarray, raw_close: np.ndarray, ts: np.ndarray, code: np.ndarray,
                      sb: SessionedBars, tolerance: float = CONTINUITY_TOLERANCE) -> int:
    """Bars whose point change differs from the held contract's own change.

    ``close``/``raw_close`` (points), ``ts`` (int64 ns UTC) and ``code`` (the
    held contract's number in ``sb``) per bar of the series. For bar t held
    in contract c: ``close[t] - close[t-1]`` must equal c's raw close at t
    minus c's last raw close in ``sb`` at or before bar t-1's time (the bar
    after a roll moves like the new contract, not by the gap). A held contract
    with no bar at or before t-1 counts as an error.
    """
    if len(close) < 2:
        return 0
    keys = sb.code * _KEY_SCALE + sb.ts // _NS_PER_S
    held = code[1:]
    pos = np.searchsorted(keys, held * _KEY_SCALE + ts[:-1] // _NS_PER_S, "right") - 1
    found = (pos >= 0) & (sb.code[np.maximum(pos, 0)] == held)
    expected = raw_close[1:] - np.where(found, sb.close[np.maximum(pos, 0)], np.nan)
    ok = found & (np.abs(np.diff(close) - expected) <= tolerance)
    return int((~ok).sum())


def _run_continuity_errors(close: np.ndarray, raw_close: np.ndarray, ts: np.ndarray, sb: SessionedBars,
                           runs: _Runs, chain_codes: np.ndarray, tolerance: float = CONTINUITY_TOLERANCE) -> int:
    """:func:`continuity_errors` of a series made of ``runs``: the same count, less work.

    Inside a run, bar t - 1 is the row of ``sb`` just before bar t's, in the
    same contract: when bar t is in a later second, that row is the contract's
    last at or before bar t - 1's second, so the expected change is
    ``raw_close[t] - raw_close[t - 1]``. Only the other bars (a run's first,
    a repeated second) are searched for, within their contract's rows.
    """
    n = len(close)
    if n < 2:
        return 0
    if len(sb.ts) and not (sb.ts.min() >= 0 and sb.ts.max() // _NS_PER_S < _KEY_SCALE):
        code = np.repeat(chain_codes[runs.seg], runs.hi - runs.lo)  # keys beyond (contract, second): the search
        return continuity_errors(close, raw_close, ts, code, sb, tolerance)
    sec = ts // _NS_PER_S
    direct = sec[1:] > sec[:-1]  # index t - 1 for bar t
    direct[runs.at[1:-1] - 1] = False  # a run's first bar
    change = np.diff(close)
    expected = np.diff(raw_close)
    other = np.flatnonzero(~direct) + 1  # the bars t searched for
    if len(other):
        held = chain_codes[runs.seg[np.searchsorted(runs.at, other, "right") - 1]]
        pos = np.empty(len(other), dtype=np.int64)
        found = np.empty(len(other), dtype=bool)
        for k in np.unique(held):
            pick = np.flatnonzero(held == k)
            lo, hi = sb.slice_of(int(k))
            pos[pick] = lo + np.searchsorted(sb.ts[lo:hi] // _NS_PER_S, sec[other[pick] - 1], "right") - 1
            found[pick] = pos[pick] >= lo
        # no bar to move from: NaN, which never compares within the tolerance (an error, as in the search)
        expected[other - 1] = raw_close[other] - np.where(found, sb.close[np.maximum(pos, 0)], np.nan)
    np.subtract(change, expected, out=change)
    ok = np.abs(change, out=change) <= tolerance
    return int((~ok).sum())


_BARS_SQL = ("SELECT contract, epoch_ns(ts) AS ts_ns, open, high, low, close, volume, open_interest FROM bars "
             "WHERE root = ? AND interval = ? AND ts >= ? AND ts < ?")


def read_intraday_bars(conn, root: str, interval: str, start: dt.date | None = None,
                       end: dt.date | None = None) -> pd.DataFrame:
    """Stored bars of ``root`` at ``interval`` around the window (UTC); DataError if none.

    Columns contract (categorical), ts (UTC), OHLC (points), volume, open
    interest, in no particular order; read through Arrow (no per-row Python
    strings: 4M bars in well under a second). The window is widened by a
    day each side (a session opens the evening before its day);
    :func:`sessioned_bars` cuts it exactly.
    """
    lo = pd.Timestamp(start or dt.date(1900, 1, 1), tz="UTC") - pd.Timedelta(days=1)
    hi = pd.Timestamp(end or dt.date(2200, 1, 1), tz="UTC") + pd.Timedelta(days=2)
    table = conn.sql(_BARS_SQL, params=[root, check_interval(interval), lo, hi]).to_arrow_table()
    if table.num_rows == 0:
        raise DataError(f"no {interval} bars for {root}: ingest them with `fbt ingest PATH --interval {interval}` "
                        "(or run `fbt demo-intraday`)")
    import pyarrow.compute as pc

    contract = pc.dictionary_encode(table.column("contract")).combine_chunks()
    out = {"contract": pd.Categorical.from_codes(contract.indices.to_numpy(zero_copy_only=False),
                                                 contract.dictionary.to_pylist()),
           "ts": pd.DatetimeIndex(table.column("ts_ns").to_numpy()).tz_localize("UTC")}
    for name in ("open", "high", "low", "close", "volume", "open_interest"):
        out[name] = table.column(name).to_numpy(zero_copy_only=False).astype("float64", copy=False)
    return pd.DataFrame(out, copy=False)  # one block per column: no 2-D stacking copy


# --- backtests -----------------------------------------------------------------------------------------


def periods_per_year(spec: ContractSpec, interval: str) -> float:
    """Bars of ``interval`` in a year of ``spec``'s sessions (bars per session x 252)."""
    return annualisation_factor(spec, interval, PERIODS_PER_YEAR)


def intraday_summary(equity: np.ndarray, summary: dict[str, float], spec: ContractSpec,
                     interval: str) -> dict[str, float]:
    """``summary`` with Sharpe and CAGR annualised by bars per session x 252.

    ``sharpe``: mean / st. dev. (ddof 1) of the per-bar simple returns of
    ``equity`` (USD per bar) x sqrt(bars per year); ``cagr``: (final /
    first equity) ^ (bars per year / returns) - 1; both NaN when the equity
    reached zero or below. Adds ``bars_per_session`` and ``periods_per_year``.
    """
    ppy = periods_per_year(spec, interval)
    eq = np.asarray(equity, dtype=float)
    sharpe = cagr = float("nan")
    if len(eq) > 2 and not (eq <= 0).any():
        r = eq[1:] / eq[:-1] - 1.0
        sharpe = sharpe_ratio(r, ppy)
        cagr = float((eq[-1] / eq[0]) ** (ppy / len(r)) - 1.0)
    return {**summary, "sharpe": sharpe, "cagr": cagr,
            "bars_per_session": float(bars_per_session(spec, interval)), "periods_per_year": ppy}


def backtest_intraday(spec: BacktestSpec, data: MarketData, interval: str) -> MarketBacktest:
    """``backtest_market`` on an intraday series, Sharpe and CAGR per bars per session.

    :func:`~fbt_pipelines.usecases.backtest.backtest_market`, then the
    summary's Sharpe and CAGR annualised by :func:`periods_per_year`.
    """
    bt = backtest_market(spec, data)
    return replace(bt, summary=intraday_summary(bt.result.equity, bt.summary, data.spec, interval))


def intraday_market_data(root: str, workspace: Workspace, prices: pd.DataFrame) -> MarketData:
    """A series' inputs to the engine with the market's margins (no predictions, features)."""
    if prices.empty:
        raise DataError(f"no intraday continuous prices for {root}: materialize intraday_continuous_prices")
    return market_data(root, workspace, prices, None, None)


def read_intraday_prices(conn, key: str) -> pd.DataFrame:
    """The stored continuous series of ``key`` ordered by ts (empty if none).

    Read through Arrow with Arrow-backed strings (3.5M bars in about a second).
    """
    if not wh.table_exists(conn, "intraday_continuous_prices"):
        return pd.DataFrame(columns=_PRICE_COLUMNS)
    cols = ", ".join(_PRICE_COLUMNS)  # fixed names from this module
    table = conn.sql(f"SELECT {cols} FROM intraday_continuous_prices WHERE series = ?", params=[key]).to_arrow_table()

    frame = table.to_pandas(types_mapper={pa.string(): pd.ArrowDtype(pa.string())}.get, split_blocks=True)
    ts = pd.DatetimeIndex(frame["ts"]).asi8  # not .to_numpy(): tz-aware gives objects
    if len(ts) > 1 and not (ts[1:] >= ts[:-1]).all():
        frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
    return frame


def session_closes(frame: pd.DataFrame, spec: ContractSpec) -> pd.DataFrame:
    """The last row of each trading session of a per-bar frame (``ts`` UTC), in order.

    Downsamples per-bar equity for charts, MLflow artifacts and the tear
    sheet's daily metrics: one row per session, stamped with its last bar.
    """
    if frame.empty:
        return frame
    day = assign_sessions(frame["ts"], spec).day
    nat = np.isnat(day)
    day = np.where(nat, (utc_ns(frame["ts"]) // (86_400 * _NS_PER_S)).astype("datetime64[D]"), day)
    last = np.r_[day[1:] != day[:-1], True]
    return frame.loc[last].reset_index(drop=True)


def intraday_row(bt: MarketBacktest, key: str, interval: str, *, code_version: str,
                 mlflow_run_id: str | None) -> dict[str, Any]:
    """The ``intraday_backtest_runs`` row: ``backtest_row`` plus series, interval, bars."""
    return {"series": key, "interval": interval, "bars": len(bt.result.equity),
            **backtest_row(bt, code_version=code_version, mlflow_run_id=mlflow_run_id)}


def track_intraday_backtest(tracker: Tracking, bt: MarketBacktest, market: ContractSpec, key: str,
                            interval: str, *, code_version: str, source: str) -> str | None:
    """One MLflow run (fbt-backtests) with the equity downsampled to session closes.

    Params, metrics and tags as :func:`~fbt_pipelines.usecases.backtest.track_backtest`
    plus ``series`` and ``interval``; artifacts: ``equity.csv`` (one row per
    session), ``trades.csv`` (every fill), ``equity.svg``. None when MLflow fails.
    """
    closes = session_closes(bt.result.bars, market)
    params = {"market": bt.root, "engine": bt.engine, "margin": bt.margin_source, "interval": interval,
              **bt.spec.settings(), **bt.params, "initial_capital": bt.spec.capital}
    tags = {"strategy": bt.strategy, "market": bt.root, "series": key, "interval": interval, "engine": bt.engine,
            "data_version": bt.data_version, "spec_hash": bt.spec.spec_hash(),
            "config_hash": bt.spec.engine_config().config_hash(), "code_version": code_version, "source": source,
            **_event_tags(bt.result)}
    return tracker.try_log_backtest(
        f"{run_name(bt)}-{interval}", params, bt.summary, tags=tags,
        tables={"equity": closes, "trades": bt.result.trades},
        figures={"equity": svg_lines({"equity (USD), session closes": closes["equity"]}, width=640, height=240)})


def store_intraday_backtests(conn, key: str, rows: list[dict[str, Any]], results: list[MarketBacktest]) -> pd.DataFrame:
    """Replace series ``key``'s rows of intraday_backtest_runs / _equity / _trades.

    One row per strategy; every bar's equity and every trade in full, tagged
    with series and strategy (one transaction per table).
    """
    return store_backtests(conn, "intraday_backtest", "series", key, rows, results)


@dataclass(frozen=True)
class Timings:
    """Seconds spent per stage of the intraday backtests (the asset's split)."""

    read: float = 0.0
    engine: float = 0.0
    write: float = 0.0
    tracking: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"read_s": round(self.read, 3), "engine_s": round(self.engine, 3), "write_s": round(self.write, 3),
                "tracking_s": round(self.tracking, 3),
                "total_s": round(self.read + self.engine + self.write + self.tracking, 3)}


@dataclass(frozen=True)
class IntradayBacktests:
    """The intraday backtests of one series: results, rows, the time split, the inputs."""

    key: str
    interval: str
    results: list[MarketBacktest]
    runs: pd.DataFrame
    timings: Timings
    data: MarketData
    tracking_failure: str | None = None


def run_intraday_backtests(connect: Callable[[], Any], tracker: Tracking, root: str, key: str, interval: str,
                           specs: Sequence[BacktestSpec], workspace: Workspace, *, code_version: str,
                           source: str, on_result: Callable[[MarketBacktest], None] | None = None
                           ) -> IntradayBacktests:
    """Read series ``key``, backtest every spec, store in full, track each (downsampled).

    ``connect()`` opens a warehouse connection (a context manager); the read
    and the writes each hold one. The time of each stage is measured
    (:class:`Timings`).
    """
    t0 = time.perf_counter()
    with connect() as conn:
        prices = read_intraday_prices(conn, key)
    data = intraday_market_data(root, workspace, prices)
    t1 = time.perf_counter()
    results = []
    for spec in specs:
        bt = backtest_intraday(spec, data, interval)
        results.append(bt)
        if on_result is not None:
            on_result(bt)
    t2 = time.perf_counter()
    run_ids = [track_intraday_backtest(tracker, bt, data.spec, key, interval, code_version=code_version,
                                       source=source) for bt in results]
    t3 = time.perf_counter()
    rows = [intraday_row(bt, key, interval, code_version=code_version, mlflow_run_id=rid)
            for bt, rid in zip(results, run_ids)]
    with connect() as conn:
        runs = store_intraday_backtests(conn, key, rows, results)
    t4 = time.perf_counter()
    return IntradayBacktests(key, interval, results, runs, Timings(t1 - t0, t2 - t1, t4 - t3, t3 - t2),
                             data, getattr(tracker, "failure", None))


# --- tear sheets ---------------------------------------------------------------------------------------


def tear_sheet_name(key: str, strategy: str) -> str:
    """File name of a series' tear sheet: ``ES_1m_sma_crossover.html``."""
    safe = key.replace("|", "_").replace(":", "-")
    return f"{safe}_{strategy}.html"


def write_intraday_tear_sheets(conn, key: str, workspace: Workspace, folder: Path, *,
                               now: dt.datetime | None = None) -> dict[str, Path]:
    """One HTML tear sheet per strategy of series ``key`` in ``folder``; strategy -> path.

    The tear sheet code of ``fbt report``: equity and drawdown, Monte Carlo,
    monthly and rolling returns and the risk table from the equity at each
    session's close (daily metrics, 252 sessions a year), the trade analysis
    from every fill; the per-bar Sharpe (annualised by bars per session) and
    the run's other numbers in the table beside them.
    """
    from fbt_pipelines.reports.tear_sheet import write_tear_sheet
    from fbt_pipelines.risk.metrics import risk_metrics

    runs = wh.read_partition(conn, "intraday_backtest_runs", key)
    if runs.empty:
        raise DataError(f"no intraday backtests stored for {key}: materialize intraday_backtests")
    equity_all = wh.read_partition(conn, "intraday_backtest_equity", key, order_by=["strategy", "ts"])
    trades_all = wh.read_partition(conn, "intraday_backtest_trades", key, order_by=["strategy", "ts"])
    root = str(runs["root"].iloc[0])
    spec = workspace.market(root)
    written = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    out: dict[str, Path] = {}
    for row in runs.to_dict("records"):
        strategy = str(row["strategy"])
        equity = equity_all[equity_all["strategy"] == strategy].drop(columns=["series", "strategy"])
        trades = trades_all[trades_all["strategy"] == strategy].drop(columns=["series", "strategy"])
        if len(trades):  # a bar's fill (at the open) precedes its roll (at the close)
            rank = (trades["kind"] == "roll").astype(int)
            trades = trades.assign(_r=rank).sort_values(["ts", "_r"], kind="mergesort").drop(columns="_r")
        closes = session_closes(equity.reset_index(drop=True), spec)
        shown = {"Net P&L (after costs)": f"{float(row['net_pnl']):,.2f} USD",
                 f"Sharpe (per {row['interval']} bar, x sqrt({row['periods_per_year']:,.0f}))": f"{row['sharpe']:.2f}",
                 "Trades / rolls": f"{row['trades']:.0f} / {row['rolls']:.0f}",
                 "Max drawdown (per bar)": f"{row['max_drawdown']:.2%}"}
        try:
            m = risk_metrics(closes.set_index("ts")["equity"].astype(float))
            shown.update({"Sharpe (session closes)": f"{m.sharpe:.2f}", "Annual vol (sessions)": f"{m.annual_vol:.2%}",
                          "CAGR": f"{m.cagr:.2%}", "VaR 95 / 99 (1 session)": f"{m.var_95:.2%} / {m.var_99:.2%}"})
        except ValueError as exc:
            shown["risk metrics"] = f"n/a: {exc}"
        provenance = {"series": key, "strategy": strategy, "parameters": str(row["params"]), "market": root,
                      "interval": str(row["interval"]),
                      "bars": f"{len(equity):,} ({len(closes):,} sessions)",
                      "bars per session": f"{row['bars_per_session']:.0f}",
                      "data version": str(row["data_version"]), "spec hash": str(row["spec_hash"]),
                      "MLflow run": str(row.get("mlflow_run_id") or "-"),
                      "report written": written.strftime("%Y-%m-%d %H:%M UTC")}
        out[strategy] = write_tear_sheet(
            folder / tear_sheet_name(key, strategy), f"{strategy} on {key} (intraday)", closes, shown,
            pd.Series({root: float(row["net_pnl"])}), provenance, trades=trades.reset_index(drop=True),
            multiplier=float(spec.multiplier), monte_carlo_paths=200)
    return out
