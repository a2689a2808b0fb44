"""Speed of fbt's futures engine against a bare Numba loop, vectorbt and PyBroker.

    .venv/bin/python bench/engine.py            # full, ~3 min on 2 cores
    .venv/bin/python bench/engine.py --quick    # ~30 s, smaller inputs

Prints ONE table (stdout; progress goes to stderr) with three sections:

1. Single backtest. One synthetic ES-like market (``market_spec("ES")``:
   50 USD/point, tick 0.25, commission 2.10 per contract per side): a
   geometric random walk rounded to the 0.25 tick grid, 2,520 sessions x
   1,390 one-minute bars = 3,502,800 bars, a roll at the last bar of every
   63rd session (~3 months). Panama frame: ts, contract, open, high, low,
   close, raw_close, roll. Target = ``sma_crossover(close, 50, 200)``, i.e.
   +-1 contract (0 during the first 199 bars and on exact SMA ties), computed
   once and timed on its own (the "signal" row). Costs: catalogue commission
   and 1 tick of slippage per contract per side, a round trip of both per
   contract held at each roll. Each timing is the median (and min) of 7 runs
   (PyBroker 5, --quick 3) after one untimed warm-up run; inputs (target,
   arrays, entry/exit masks) are prepared outside the timed region for all of
   them. Besides wall time, the CPU time of the calling thread
   (``time.thread_time``) is shown for (i)-(iii): other processes share the
   2 cores, and CPU time is what the code itself costs.

   (i)   engine  = ``run_backtest``: target and margin checks, the one Numba
         pass (equity per bar + trade records, finiteness of every price),
         the result object. Its ``bars`` and ``trades`` frames are built when
         first read; "engine + frames" times reading both too (what
         ``run_backtest`` did eagerly before);
   (ii)  kernel  = ``backtest_nb`` alone (the pass inside (i));
   (iii) bare    = :func:`bare_equity_nb` below, the practical limit: the
         SAME inputs as the kernel (target per bar, open, close, roll flags,
         multiplier, commission, slippage, initial capital, initial margin),
         the SAME accounting and the SAME outputs: the per-bar equity curve in
         USD marked at each close (position = target of the previous bar
         filled at this open, an increase capped at the contracts the equity
         carries at the initial margin, equity += held x (open - previous
         close) x multiplier + new x (close - open) x multiplier - |contracts
         traded| x (commission + slippage x multiplier), minus a round trip
         per contract held at a roll close) and the trade records (bar, kind,
         contracts, fill price, commission, slippage). It has no price checks,
         no refusal records and no validation: that is the difference the
         ratio measures. Its equity equals fbt's on every bar and its records
         fbt's trades, to the cent (asserted);
   (iv)  vectorbt ``Portfolio.from_signals`` at the open, size = 50 shares per
         contract, slippage = 0.25 points as a fraction of each open, the
         commission as a fixed fee per order (commission x contracts in the
         order: a reversal is one order of 2 contracts); timed twice: with
         ``final_value()`` (vectorbt's cheapest answer, from its order
         records) and with ``value()`` (its per-bar equity curve, the output
         (i)-(iii) produce). vectorbt has no rolls: its P&L minus fbt's roll
         costs must equal fbt's;
   (v)   PyBroker via ``run_pybroker_backtest`` on a 50,000-bar slice that
         contains one roll, extrapolated linearly to the full length
         (LABELLED "extrapolated"; PyBroker is a per-bar Python loop).

   Orders and margin (issue 23), timed in the same interleaved rounds:
   ``run_backtest`` with margin calls on (the catalogue's maintenance
   margin, as ``backtest_market`` runs it), with a dated margin history
   (ES's LEAN rows moved into the bench's dates, one a month: the
   ``MarginSchedule`` segments ``backtest_market`` passes), and with the
   same history as plain per-bar arrays (validated and cut into segments by
   ``run_backtest``); targets <= 1.3x the bare loop doing the same margin
   accounting: :func:`bare_calls_nb` (the bare loop plus the maintenance
   test at each close, one value: the yardstick of calls on and of the
   history) and :func:`bare_arrays_nb` (initial and maintenance margins read
   from the per-bar arrays on every bar); the ratio over the plain bare loop
   is shown too. And with a stop-loss of 8 and a take-profit of 16 points
   against :func:`bare_stops_nb`, the bare loop plus the same stop logic
   (target <= 2x; shown too over :func:`bare_stops_equity_nb`, the previous
   yardstick without records). Each asserted equal to its bare loop on every
   bar and in every trade record. The calls are interleaved, their order
   rotated each round. Ratios are shown on wall and on CPU time (the calling
   thread's; other processes share the 2 cores); targets are judged on CPU.

   Diagnostic: kernel and bare loop again in a subprocess whose glibc keeps
   freed memory mapped (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_), so
   neither pays page faults for its fresh 28 MB equity array: their pure
   compute ratio.

   Plain asserts: fbt vs bare loop (every bar), vectorbt (+ roll costs) and
   PyBroker (slice) agree on net P&L to the cent; fbt refuses no contract.

2. Sweep. 1,000 SMA parameter sets (fast 2..41 x slow 50..290 step 10) over
   20 synthetic daily markets (the first 20 catalogue roots, each a random
   walk on its own tick grid at its catalogue start price and volatility,
   2,520 sessions, roll every 63 sessions), through ``run_sweep`` (threads,
   workers=2) per market, timed end to end. Sizing is fbt's vol target
   (``VolTargetConfig()``: 1 M USD, 20 %, IDM 1.5); the engine account is
   10 M USD so no equity path reaches zero (``risk_metrics`` refuses it).
   Also timed: the same sweep straight through the kernel with signals
   precomputed (one pandas rolling mean per window length, bit-identical to
   ``sma_crossover``; sizing as ``contracts_for_risk`` of a unit signal),
   asserted equal to ``run_sweep``'s net P&L to the cent; and a short
   cProfile of ``backtest_market`` (what one sweep item spends its time on).

3. Numba first call, apart from steady state: ``run_backtest`` on a 3-bar
   frame in a subprocess with ``NUMBA_CACHE_DIR`` an empty temporary folder
   (compiles the kernels for the array types run_backtest passes), then a
   second subprocess on that now-filled cache (cache load); plus first calls
   in this process (bare loop compile, vectorbt and PyBroker warm-up).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from numba import njit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fbt_pipelines.catalog import load_catalog, market_spec
from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.engine.futures_engine import EngineConfig, run_backtest
from fbt_pipelines.engine.kernel import backtest_nb, simulate_futures_nb
from fbt_pipelines.engine.rules import FillRule, TradeKind
from fbt_pipelines.futures.margin import MarginSchedule, margin_schedule, read_margin_history
from fbt_pipelines.engine.strategies import STRATEGIES, sma_crossover
from fbt_pipelines.portfolio.sizing import VolTargetConfig, contracts_for_risk
from fbt_pipelines.primitives.performance import sharpe_ratio
from fbt_pipelines.usecases.backtest import MarketData, backtest_market
from fbt_pipelines.usecases.spec import BacktestSpec
from fbt_pipelines.usecases.sweep import parameter_sets, run_sweep

CENT = 0.005
NO_ORDERS = (0, 0.0, 0, 0.0, 0, 0.0, 0, 0.0, np.zeros(1))  # the kernel's order arguments: market orders only
SESSIONS = 2_520          # 10 years of sessions
ROLL_EVERY = 63           # sessions between rolls (~3 months)
MONTHS = "HMUZ"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


def _panama(close: np.ndarray, session: np.ndarray, sessions: int, bars_per_session: int,
            rng: np.random.Generator, gap_points: float, tick: float):
    """Roll flags (last bar of every ROLL_EVERY-th session), segment index and raw_close."""
    n = len(close)
    roll = np.zeros(n, dtype=bool)
    last_bar = (np.arange(ROLL_EVERY - 1, sessions, ROLL_EVERY) + 1) * bars_per_session - 1
    roll[last_bar[last_bar < n - 1]] = True
    segment = np.r_[0, np.cumsum(roll)[:-1]]
    # Panama offset of a segment = sum of the later roll gaps (on the tick grid)
    gaps = np.round(rng.normal(gap_points, abs(gap_points), roll.sum() + 1) / tick) * tick
    later = np.r_[np.cumsum(gaps[:-1][::-1])[::-1], 0.0]
    raw_close = np.round((close - later[segment]) / tick) * tick
    return roll, segment, raw_close


def make_minute_market(sessions: int, per_session: int, seed: int, tick: float = 0.25) -> pd.DataFrame:
    """ES-like 1-minute Panama frame: geometric random walk on the tick grid."""
    n = sessions * per_session
    rng = np.random.default_rng(seed)
    bar_vol = 0.01 / np.sqrt(per_session)  # 1 % a session
    close = np.round(np.exp(np.log(4000.0) + np.cumsum(rng.normal(0.0, bar_vol, n))) / tick) * tick
    gap = np.round(rng.normal(0.0, 0.3, n)) * tick  # open = previous close +- a tick now and then
    open_ = np.maximum(np.r_[close[0], close[:-1] + gap[1:]], tick)
    wick = np.abs(np.round(rng.normal(0.0, 1.0, (2, n)))) * tick
    high = np.maximum(open_, close) + wick[0]
    low = np.maximum(np.minimum(open_, close) - wick[1], tick)
    session = np.arange(n) // per_session
    roll, segment, raw_close = _panama(close, session, sessions, per_session, rng, 5.0, tick)
    day = pd.bdate_range("2012-01-02", periods=sessions).to_numpy()  # sessions start 00:00 UTC
    ts = pd.DatetimeIndex(day[session] + (np.arange(n) % per_session).astype("timedelta64[m]")).tz_localize("UTC")
    labels = np.array([f"ES{MONTHS[k % 4]}{12 + k // 4:02d}" for k in range(segment.max() + 1)], dtype=object)
    return pd.DataFrame({"ts": ts, "contract": labels[segment], "open": open_, "high": high, "low": low,
                         "close": close, "raw_close": raw_close, "roll": roll})


def make_daily_market(spec: ContractSpec, sessions: int, seed: int) -> pd.DataFrame:
    """Daily Panama frame for one catalogue market at its sample price and volatility."""
    rng = np.random.default_rng(seed)
    tick = spec.tick_size
    start = float(spec.sample.get("start_price", 100.0))
    vol = float(spec.sample.get("annual_vol", 0.2)) / np.sqrt(252.0)
    close = np.round(np.exp(np.log(start) + np.cumsum(rng.normal(0.0, vol, sessions))) / tick) * tick
    open_ = np.round((np.r_[close[0], close[:-1]] * np.exp(rng.normal(0.0, vol / 3, sessions))) / tick) * tick
    roll, segment, raw_close = _panama(close, np.arange(sessions), sessions, 1, rng, 0.002 * start, tick)
    assert (raw_close > 0).all() and (close > 0).all() and (open_ > 0).all()
    labels = np.array([f"{spec.root}{k:03d}" for k in range(segment.max() + 1)], dtype=object)
    return pd.DataFrame({
        "ts": pd.bdate_range("2012-01-02", periods=sessions, tz="UTC"), "contract": labels[segment],
        "open": open_, "high": np.maximum(open_, close), "low": np.minimum(open_, close),
        "close": close, "raw_close": raw_close, "roll": roll,
    })


# --------------------------------------------------------------------------- bare loops
#
# The yardsticks: what fbt's kernel computes, written as plainly as Numba allows. Same inputs, same
# accounting, same outputs: the per-bar equity (USD at each close) AND the trade records (bar, kind,
# signed contracts, fill price in points with slippage, commission and slippage in USD; a roll is
# one record of the contracts held). Records go to buffers the caller allocates once for the worst
# case (``record_buffers``: 2 per bar; only the pages written are ever touched), with no capacity
# test, and are copied out at their count, as fbt's are. (Allocating them per call instead changed
# glibc's mmap threshold and so the page faults of the NEXT call timed.) Left out: fbt's price checks
# (finiteness of every price read), its margin-call liquidations and account stop (none happens
# here; the bare loops only detect a close below maintenance), refusal records, and validation.


def _make_bare(calls: bool, per_bar: bool):
    """A bare market-order loop, specialised on two flags.

    With (``calls``) or without the maintenance test at each close; margins one value (``per_bar`` False: ``initial[0]``, ``maintenance[0]``) or
    one per bar (read on every bar: float64[n])."""

    @njit(nogil=True)
    def bare(target, open_, close, roll, multiplier, commission, slippage, capital, initial, maintenance, ri, rf):
        """Per-bar equity (USD at each close), trade records, closes below maintenance.

        Fills at the next open; commission + slippage (points) per contract
        per side; an increase is capped at the contracts the equity at the open carries at the
        bar's initial margin; a round trip per contract held at a roll close."""
        n = len(close)
        equity = np.empty(n)
        r_bar, r_kind, r_qty = ri[0], ri[1], ri[2]  # the record buffers (see above)
        r_price, r_comm, r_slip = rf[0], rf[1], rf[2]
        side_cost = commission + slippage * multiplier  # USD per contract per side
        pos = 0
        eq = capital
        prev_close = 0.0
        k = 0
        below = 0
        for i in range(n):
            c = close[i]
            if i > 0:
                want = target[i - 1]
                o = open_[i]
                if want != pos:
                    m = initial[i] if per_bar else initial[0]
                    if m > 0 and (abs(want) > abs(pos) or want * pos < 0):  # an increase: margin cap
                        can = int(max(eq + pos * (o - prev_close) * multiplier, 0.0) // (m + side_cost))
                        if abs(want) > can:
                            keep = max(can, abs(pos)) if want * pos > 0 else can
                            want = keep if want > 0 else -keep
                    q = want - pos
                    r_bar[k] = i
                    r_kind[k] = 0
                    r_qty[k] = q
                    r_price[k] = o + slippage if q > 0 else o - slippage
                    r_comm[k] = abs(q) * commission
                    r_slip[k] = abs(q) * slippage * multiplier
                    k += 1
                eq += pos * (o - prev_close) * multiplier + want * (c - o) * multiplier - abs(want - pos) * side_cost
                pos = want
            if roll[i] and pos != 0:
                eq -= 2 * abs(pos) * side_cost
                r_bar[k] = i
                r_kind[k] = 1
                r_qty[k] = pos
                r_price[k] = c
                r_comm[k] = 2 * abs(pos) * commission
                r_slip[k] = 2 * abs(pos) * slippage * multiplier
                k += 1
            if calls:
                mm = maintenance[i] if per_bar else maintenance[0]
                if eq < mm * abs(pos):
                    below += 1
            equity[i] = eq
            prev_close = c
        return (equity, r_bar[:k].copy(), r_kind[:k].copy(), r_qty[:k].copy(), r_price[:k].copy(),
                r_comm[:k].copy(), r_slip[:k].copy(), below)

    return bare


def record_buffers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The bare loops' record buffers for ``n`` bars.

    int64[3, 2n] (bar, kind, contracts) and float64[3, 2n] (price in
    points, commission and slippage in USD)."""
    return np.empty((3, 2 * max(n, 1)), np.int64), np.empty((3, 2 * max(n, 1)))


bare_equity_nb = _make_bare(False, False)  # (iii): the catalogue's initial margin, no margin calls
bare_calls_nb = _make_bare(True, False)    # + the maintenance test at each close (one value)
bare_arrays_nb = _make_bare(True, True)    # + margins read per bar (float64[n] each)


@njit(nogil=True)
def bare_stops_nb(target, open_, high, low, close, roll, multiplier, commission, slippage, capital, margin, sl, tp,
                  ri, rf):
    """The bare loop with a stop and a target (points from the entry fill).

    The same stop logic as fbt (gap -> open, touch -> level, stop first, levels live on the entry bar, flat
    until the wanted position changes): per-bar equity and trade records, as above."""
    n = len(close)
    equity = np.empty(n)
    r_bar, r_kind, r_qty = ri[0], ri[1], ri[2]
    r_price, r_comm, r_slip = rf[0], rf[1], rf[2]
    side_cost = commission + slippage * multiplier
    pos = 0
    eq = capital
    prev_close = 0.0
    k = 0
    stop = np.nan
    take = np.nan
    blocked = False
    blocked_val = 0
    for i in range(n):
        c = close[i]
        ref = prev_close
        entered = False
        if i > 0:
            raw = target[i - 1]
            want = raw
            if blocked:
                if raw == blocked_val:
                    want = 0
                else:
                    blocked = False
            o = open_[i]
            eq += pos * (o - ref) * multiplier
            ref = o
            if want != pos:
                if margin > 0 and (abs(want) > abs(pos) or want * pos < 0):  # an increase: margin cap
                    can = int(max(eq, 0.0) // (margin + side_cost))
                    if abs(want) > can:
                        keep = max(can, abs(pos)) if want * pos > 0 else can
                        want = keep if want > 0 else -keep
                q = want - pos
                eq -= abs(q) * side_cost
                s = 1.0 if q > 0 else -1.0
                fp = o + slippage * s
                r_bar[k] = i
                r_kind[k] = 0
                r_qty[k] = q
                r_price[k] = fp
                r_comm[k] = abs(q) * commission
                r_slip[k] = abs(q) * slippage * multiplier
                k += 1
                if want != 0 and (pos == 0 or (want > 0) != (pos > 0)):
                    stop = fp - s * sl
                    take = fp + s * tp
                    entered = True
                pos = want
            if pos != 0:
                px = np.nan
                if pos > 0:
                    if not entered and o <= stop:
                        px = o
                    elif not entered and o >= take:
                        px = o
                    elif low[i] <= stop:
                        px = stop
                    elif high[i] >= take:
                        px = take
                else:
                    if not entered and o >= stop:
                        px = o
                    elif not entered and o <= take:
                        px = o
                    elif high[i] >= stop:
                        px = stop
                    elif low[i] <= take:
                        px = take
                if px == px:
                    eq += pos * (px - ref) * multiplier - abs(pos) * side_cost
                    r_bar[k] = i
                    r_kind[k] = 0
                    r_qty[k] = -pos
                    r_price[k] = px - slippage if pos > 0 else px + slippage
                    r_comm[k] = abs(pos) * commission
                    r_slip[k] = abs(pos) * slippage * multiplier
                    k += 1
                    ref = px
                    pos = 0
                    blocked = True
                    blocked_val = raw
            eq += pos * (c - ref) * multiplier
        if roll[i] and pos != 0:
            eq -= 2 * abs(pos) * side_cost
            r_bar[k] = i
            r_kind[k] = 1
            r_qty[k] = pos
            r_price[k] = c
            r_comm[k] = 2 * abs(pos) * commission
            r_slip[k] = 2 * abs(pos) * slippage * multiplier
            k += 1
        equity[i] = eq
        prev_close = c
    return (equity, r_bar[:k].copy(), r_kind[:k].copy(), r_qty[:k].copy(), r_price[:k].copy(),
            r_comm[:k].copy(), r_slip[:k].copy(), 0)


@njit(nogil=True)
def bare_stops_equity_nb(target, open_, high, low, close, roll, multiplier, commission, slippage, capital,
                          sl, tp):
    """:func:`bare_stops_nb` without trade records or margin cap: the per-bar equity only.

    The yardstick before issue 23's fairness pass (shown for comparison:
    writing the records made the bare stop loop ~15-20 % slower)."""
    n = len(close)
    equity = np.empty(n)
    side_cost = commission + slippage * multiplier
    pos = 0
    eq = capital
    prev_close = 0.0
    stop = np.nan
    take = np.nan
    blocked = False
    blocked_val = 0
    for i in range(n):
        c = close[i]
        ref = prev_close
        entered = False
        if i > 0:
            raw = target[i - 1]
            want = raw
            if blocked:
                if raw == blocked_val:
                    want = 0
                else:
                    blocked = False
            o = open_[i]
            eq += pos * (o - ref) * multiplier
            ref = o
            if want != pos:
                eq -= abs(want - pos) * side_cost
                if want != 0 and (pos == 0 or (want > 0) != (pos > 0)):
                    s = 1.0 if want > 0 else -1.0
                    fp = o + slippage * s
                    stop = fp - s * sl
                    take = fp + s * tp
                    entered = True
                pos = want
            if pos != 0:
                px = np.nan
                if pos > 0:
                    if not entered and o <= stop:
                        px = o
                    elif not entered and o >= take:
                        px = o
                    elif low[i] <= stop:
                        px = stop
                    elif high[i] >= take:
                        px = take
                else:
                    if not entered and o >= stop:
                        px = o
                    elif not entered and o <= take:
                        px = o
                    elif high[i] >= stop:
                        px = stop
                    elif low[i] <= take:
                        px = take
                if px == px:
                    eq += pos * (px - ref) * multiplier - abs(pos) * side_cost
                    ref = px
                    pos = 0
                    blocked = True
                    blocked_val = raw
            eq += pos * (c - ref) * multiplier
        if roll[i]:
            eq -= 2 * abs(pos) * side_cost
        equity[i] = eq
        prev_close = c
    return equity


def same_records(bare_out, result) -> float:
    """Largest |difference| between a bare loop's records and fbt's (points or USD).

    Compared: (bar, kind, contracts exactly; price, commission, slippage); AssertionError if they
    differ in count, bar, kind or contracts."""
    _, r_bar, r_kind, r_qty, r_price, r_comm, r_slip, _ = bare_out
    run = result._run
    keep = run.t_qty != 0  # fbt writes 0-contract records for refusals and empty margin calls: none here
    assert keep.all(), "fbt wrote a record of 0 contracts (a refusal or an empty margin call)"
    assert len(r_bar) == len(run.t_bar), (len(r_bar), len(run.t_bar))
    assert np.array_equal(r_bar, run.t_bar) and np.array_equal(r_qty, run.t_qty)
    assert np.array_equal(r_kind, (run.t_kind == int(TradeKind.ROLL)).astype(np.int64))
    return float(max(np.max(np.abs(r_price - run.t_price), initial=0.0), np.max(np.abs(r_comm - run.t_comm), initial=0.0),
                     np.max(np.abs(r_slip - run.t_slip), initial=0.0)))


# --------------------------------------------------------------------------- helpers


def timed(fn, repeat: int, warmup: int = 1) -> tuple[float, list[float], object]:
    """Median seconds of ``repeat`` calls after ``warmup`` untimed calls."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def timed_cpu(fn, repeat: int, warmup: int = 1) -> tuple[list[float], list[float], object]:
    """Wall and calling-thread CPU seconds of ``repeat`` calls after ``warmup``."""
    out = None
    for _ in range(warmup):
        out = fn()
    wall, cpu = [], []
    for _ in range(repeat):
        c0, t0 = time.thread_time(), time.perf_counter()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return wall, cpu, out


def roll_cost_of(result) -> float:
    t = result.trades
    return float(t.loc[t["kind"] == "roll", ["commission", "slippage"]].to_numpy().sum())


def vectorbt_run(close, open_, entries, exits, short_entries, short_exits, fixed_fees, slippage, multiplier,
                 curve: bool = False):
    """vectorbt's net P&L (USD): from ``final_value()``, or with ``curve`` the
    last bar of ``value()``, its per-bar equity curve (returned too)."""
    import vectorbt as vbt

    pf = vbt.Portfolio.from_signals(
        close, entries=entries, exits=exits, short_entries=short_entries, short_exits=short_exits,
        price=open_, size=multiplier, size_type="amount", fixed_fees=fixed_fees, slippage=slippage, init_cash=1e9,
        accumulate=False, upon_opposite_entry="reverse", freq="1min",
    )
    if curve:
        value = pf.value().to_numpy()
        return float(value[-1]) - 1e9, value
    return float(pf.final_value()) - 1e9


def signal_masks(target: np.ndarray):
    """Entry/exit masks executed on bar i (pos[i] = target[i-1]): a flip is the
    opposite entry alone (vectorbt reverses: one order of 2 x size)."""
    pos = np.r_[0, target[:-1]]
    prev = np.r_[0, pos[:-1]]
    entries = (pos == 1) & (prev != 1)
    short_entries = (pos == -1) & (prev != -1)
    exits = (pos == 0) & (prev == 1)
    short_exits = (pos == 0) & (prev == -1)
    return entries, exits, short_entries, short_exits


KERNEL_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import numba
t1 = time.perf_counter()
import numpy as np, pandas as pd
from fbt_pipelines.catalog import market_spec
from fbt_pipelines.engine.futures_engine import EngineConfig, run_backtest
t2 = time.perf_counter()
prices = pd.DataFrame({"ts": pd.date_range("2024-01-02", periods=3, tz="UTC"), "contract": ["ESH4"] * 3,
                       "open": [1.0, 1.0, 1.0], "close": [1.0, 1.0, 1.0], "raw_close": [1.0, 1.0, 1.0],
                       "roll": [False, False, False]})
target, spec, cfg = np.array([1, 1, 0]), market_spec("ES"), EngineConfig()
t3, c3 = time.perf_counter(), time.process_time()
run_backtest(prices, target, spec, cfg)
t4, c4 = time.perf_counter(), time.process_time()
run_backtest(prices, target, spec, cfg)
t5 = time.perf_counter()
print(json.dumps({"import_numba": t1 - t0, "import_engine": t2 - t1, "first_call": t4 - t3,
                  "first_call_cpu": c4 - c3, "second_call": t5 - t4}))
"""


def kernel_subprocess(cache_dir: str) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", KERNEL_PROBE], env=env, capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process"] = time.perf_counter() - t0
    res["cache_files"] = sum(len(f) for _, _, f in os.walk(cache_dir))
    return res


HEAP_PROBE = r"""
import json, statistics, sys, time
import numpy as np
from bench.engine import bare_equity_nb, record_buffers
from fbt_pipelines.engine.kernel import backtest_nb
d = sys.argv[1]
target, open_, close, roll = (np.load(f"{d}/{k}.npy") for k in ("target", "open", "close", "roll"))
seg = (np.zeros(1, np.int64), np.array([13200.0]), np.array([np.nan]))  # no margin calls, as bare_equity_nb
buffers = record_buffers(len(close))
no_orders = (0, 0.0, 0, 0.0, 0, 0.0, 0, 0.0, np.zeros(1))
calls = {
    "kernel": lambda: backtest_nb(target, open_, close, close, close, roll, 50.0, 2.1, 0.25, *seg, 1e6, 0,
                                  *no_orders),
    "bare": lambda: bare_equity_nb(target, open_, close, roll, 50.0, 2.1, 0.25, 1e6, seg[1], seg[2], *buffers),
}
out = {}
for name, f in calls.items():
    f()
ts = {name: [] for name in calls}
for _ in range(7):
    for name, f in calls.items():
        t0 = time.perf_counter(); f(); ts[name].append(time.perf_counter() - t0)
print(json.dumps({name: min(v) for name, v in ts.items()}))
"""

# glibc returns blocks >= its mmap threshold (at most 32 MB by default) to the OS
# on free, so each call page-faults its outputs afresh; these settings keep them
# on the heap (reused, already mapped) for a diagnostic run
HEAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "4000000000", "MALLOC_TRIM_THRESHOLD_": "40000000000"}


def heap_reuse_subprocess(target, open_, close, roll) -> dict:
    with tempfile.TemporaryDirectory(prefix="fbt-bench-arrays-") as d:
        for k, a in (("target", target), ("open", open_), ("close", close), ("roll", roll)):
            np.save(f"{d}/{k}.npy", a)
        env = {**os.environ, **HEAP_ENV, "PYTHONPATH": str(REPO)}
        out = subprocess.run([sys.executable, "-c", HEAP_PROBE, d], env=env, capture_output=True, text=True,
                             check=True, cwd=str(REPO))
    return json.loads(out.stdout.strip().splitlines()[-1])


def direct_sweep_market(prices: pd.DataFrame, spec: ContractSpec, sets, sizing: VolTargetConfig,
                        engine: EngineConfig, workers: int) -> np.ndarray:
    """The same sweep straight through the kernel: rows (net_pnl, trades, rolls, sharpe)."""
    n = len(prices)
    close = prices["close"].to_numpy(float)
    s = pd.Series(close)
    # pandas rolling means once per window: sma_crossover computes exactly these
    ma = {w: s.rolling(w).mean().to_numpy() for w in sorted({p["fast"] for p in sets} | {p["slow"] for p in sets})}
    unit = contracts_for_risk(prices, np.ones(n, dtype=np.int64), spec, 1.0, sizing)  # = round(budget / cash vol)
    open_ = prices["open"].to_numpy(float)
    roll = prices["roll"].to_numpy(bool)
    margins = MarginSchedule.constant(n, float(spec.initial_margin), float(spec.maintenance_margin))
    commission = float(spec.commission if engine.commission is None else engine.commission)
    slip = float(engine.slippage_ticks * spec.tick_size)
    cap = float(engine.initial_capital)
    mult = float(spec.multiplier)

    def chunk(idx):
        out = np.empty((len(idx), 4))
        for j, k in enumerate(idx):
            p = sets[k]
            diff = ma[p["fast"]] - ma[p["slow"]]
            target = np.where(np.isnan(diff), 0, np.sign(diff)).astype(np.int64) * unit
            r = simulate_futures_nb(target, open_, close, close, close, roll, mult, commission, slip, margins.starts,
                                    margins.initial, margins.maintenance, cap, int(FillRule.NEXT_OPEN), *NO_ORDERS)
            equity, t_kind, t_qty = r.equity, r.t_kind, r.t_qty
            ret = np.diff(equity, prepend=cap) / np.r_[cap, equity[:-1]]
            out[j] = (equity[-1] - cap, np.count_nonzero((t_kind == TradeKind.TRADE) & (t_qty != 0)),
                      np.count_nonzero(t_kind == TradeKind.ROLL), sharpe_ratio(ret[1:]))
        return out

    parts = [list(range(w, len(sets), workers)) for w in range(workers)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(chunk, parts))
    out = np.empty((len(sets), 4))
    for idx, res in zip(parts, results):
        out[idx] = res
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="~30 s: 252 x 1,390 minute bars, 20,000-bar PyBroker slice, 20 markets x 50 random sets")
    ap.add_argument("--json", metavar="PATH", help="also write the headline figures (seconds) to this JSON file")
    args = ap.parse_args()
    quick = args.quick
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    rows: list[tuple[str, str, str]] = []  # (section, what, figure)

    def row(section: str, what: str, figure: str) -> None:
        rows.append((section, what, figure))

    # ------------------------------------------------------------- 3. compile (subprocesses first, quiet machine)
    log("numba cold / cached first call in subprocesses")
    with tempfile.TemporaryDirectory(prefix="fbt-numba-bench-") as cache_dir:
        cold = kernel_subprocess(cache_dir)
        cached = kernel_subprocess(cache_dir)
    assert cold["cache_files"] > 0, "cold run wrote no cache"

    tiny = make_minute_market(1, 3, seed=0)
    t0 = time.perf_counter()
    run_backtest(tiny, np.array([1, 1, 0]), market_spec("ES"), EngineConfig())
    kernel_first_here = time.perf_counter() - t0
    t0 = time.perf_counter()
    one = np.ones(1)
    bare_equity_nb(np.zeros(3, np.int64), np.ones(3), np.ones(3), np.zeros(3, bool), 50.0, 2.1, 0.25, 1e6, one, one,
                   *record_buffers(3))
    bare_compile = time.perf_counter() - t0

    # ------------------------------------------------------------- 1. single backtest
    per_session = 1_390
    sessions = 252 if quick else SESSIONS
    log(f"building {sessions * per_session:,} minute bars")
    t0 = time.perf_counter()
    prices = make_minute_market(sessions, per_session, seed=7)
    t_data = time.perf_counter() - t0
    n = len(prices)
    spec = market_spec("ES")
    cfg = EngineConfig(initial_capital=1_000_000.0, slippage_ticks=1.0, fill="next_open")
    mult, comm = float(spec.multiplier), float(spec.commission)
    slip = float(cfg.slippage_ticks * spec.tick_size)  # points per contract per side
    close, open_ = prices["close"].to_numpy(float), prices["open"].to_numpy(float)
    roll = prices["roll"].to_numpy(bool)
    t0 = time.perf_counter()
    target = sma_crossover(close, fast=50, slow=200)
    t_signal = time.perf_counter() - t0
    # what run_backtest passes with margins=None: one margin segment, no maintenance (no margin calls)
    seg1 = MarginSchedule.constant(n, float(spec.initial_margin))
    repeat = 7  # >= 5; the table shows the median and (min)

    def engine_and_frames():
        r = run_backtest(prices, target, spec, cfg)
        return r, r.bars, r.trades

    # a LEAN-format margin history inside the bench's dates: ES's rows, one a month (39 segments), as
    # backtest_market gets it (segments; margin calls on); and the same as plain per-bar arrays
    history = read_margin_history(REPO / "tests" / "fixtures" / "lean" / "margins" / "ES.csv")
    history = history.assign(date=pd.date_range(prices["ts"].iloc[0], periods=len(history), freq="30D"))
    schedule = margin_schedule(prices["ts"], spec, history)
    per_bar_initial, per_bar_maint = schedule.per_bar("initial"), schedule.per_bar("maintenance")
    high, low = prices["high"].to_numpy(float), prices["low"].to_numpy(float)
    cfg_stops = dataclasses.replace(cfg, stop_loss="8", take_profit="16")
    high_, low_ = high, low

    m_one = np.array([float(spec.initial_margin)])       # the catalogue's margins, one value for every bar
    mm_one = np.array([float(spec.maintenance_margin)])
    buffers = record_buffers(n)  # the bare loops' trade records (allocated once, outside the timing)
    log("timing run_backtest / kernel / bare loop (interleaved)")
    calls = {
        "engine": lambda: run_backtest(prices, target, spec, cfg),
        "engine_calls": lambda: run_backtest(prices, target, spec, cfg,
                                             maintenance_margins=float(spec.maintenance_margin)),
        "engine_history": lambda: run_backtest(prices, target, spec, cfg, margins=schedule),
        "engine_arrays": lambda: run_backtest(prices, target, spec, cfg, margins=per_bar_initial,
                                              maintenance_margins=per_bar_maint),
        "engine_stops": lambda: run_backtest(prices, target, spec, cfg_stops),
        "bare_stops": lambda: bare_stops_nb(target, open_, high_, low_, close, roll, mult, comm, slip,
                                            cfg.initial_capital, float(spec.initial_margin), 8.0, 16.0, *buffers),
        "bare_stops_equity": lambda: bare_stops_equity_nb(target, open_, high_, low_, close, roll, mult, comm, slip,
                                                          cfg.initial_capital, 8.0, 16.0),
        "bare_calls": lambda: bare_calls_nb(target, open_, close, roll, mult, comm, slip, cfg.initial_capital,
                                            m_one, mm_one, *buffers),
        "bare_arrays": lambda: bare_arrays_nb(target, open_, close, roll, mult, comm, slip, cfg.initial_capital,
                                              per_bar_initial, per_bar_maint, *buffers),
        "kernel": lambda: backtest_nb(target, open_, close, close, close, roll, mult, comm, slip, seg1.starts,
                                      seg1.initial, seg1.maintenance, cfg.initial_capital, int(FillRule.NEXT_OPEN),
                                      *NO_ORDERS),
        "bare": lambda: bare_equity_nb(target, open_, close, roll, mult, comm, slip, cfg.initial_capital,
                                       m_one, mm_one, *buffers),
    }
    wall = {k: [] for k in calls}
    cpu = {k: [] for k in calls}
    outs = {}
    for k, f in calls.items():
        outs[k] = f()  # warm-up
    order = list(calls)
    for r in range(repeat):  # interleaved: a load spike hits them all alike; the order rotates each round
        for k in order[r % len(order):] + order[:r % len(order)]:  # (so no call is always first: ~10 % slower)
            f = calls[k]
            w, c, outs[k] = timed_cpu(f, 1, warmup=0)
            wall[k] += w
            cpu[k] += c
    med = {k: statistics.median(v) for k, v in wall.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    t_engine, t_kernel, t_bare = med["engine"], med["kernel"], med["bare"]
    res, kout, bare = outs["engine"], outs["kernel"], outs["bare"][0]
    ts_engine, ts_kernel, ts_bare = wall["engine"], wall["kernel"], wall["bare"]
    t_frames, ts_frames, _ = timed(engine_and_frames, 3)
    log("kernel and bare loop under glibc heap reuse (subprocess)")
    heap = heap_reuse_subprocess(target, open_, close, roll)

    trades = res.trades
    n_trades = int(((trades["kind"] == "trade") & (trades["contracts"] != 0)).sum())
    n_rolls = int((trades["kind"] == "roll").sum())
    rc = roll_cost_of(res)
    assert int(trades["refused"].sum()) == 0, "fbt refused contracts: margin cap would break the comparisons"
    assert n_rolls > 0 and kout[-1] == -1
    assert abs(kout[0][-1] - res.final_equity) < CENT, (kout[0][-1], res.final_equity)
    # every fbt run against its bare loop: equity on every bar and every trade record (to the cent);
    # margin calls on (catalogue maintenance, or the history's): no close is below maintenance here
    bare_worst = stops_worst = 0.0
    for key, yard in (("engine", "bare"), ("engine_calls", "bare_calls"), ("engine_history", "bare_calls"),
                      ("engine_arrays", "bare_arrays"), ("engine_stops", "bare_stops")):
        worst = max(float(np.max(np.abs(outs[key].equity - outs[yard][0]))), same_records(outs[yard], outs[key]))
        assert worst < CENT and outs[key].margin_calls.empty and outs[yard][-1] == 0, (key, worst)
        if key == "engine_stops":
            worst = max(worst, float(np.max(np.abs(outs[key].equity - outs["bare_stops_equity"]))))
            stops_worst = worst
        else:
            bare_worst = max(bare_worst, worst)
    n_stop_exits = int(outs["engine_stops"].trades["reason"].isin(["stop", "target"]).sum())
    assert n_stop_exits > 1000

    log("vectorbt")
    entries, exits, short_entries, short_exits = signal_masks(target)
    pos = np.r_[0, target[:-1]]
    fixed_fees = comm * np.abs(np.diff(np.r_[0, pos])).astype(float)  # per order: commission x contracts
    slippage = slip / open_  # 0.25 points as vectorbt's fraction of the fill price
    t0 = time.perf_counter()
    import vectorbt  # noqa: F401
    vbt_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    vectorbt_run(close[:500], open_[:500], *signal_masks(target[:500]), fixed_fees[:500], slippage[:500], mult,
                 curve=True)
    vbt_first = time.perf_counter() - t0
    vbt_args = (close, open_, entries, exits, short_entries, short_exits, fixed_fees, slippage, mult)
    t_vbt, ts_vbt, vbt_pnl = timed(lambda: vectorbt_run(*vbt_args), repeat)
    t_vbt_curve, ts_vbt_curve, (vbt_pnl_curve, vbt_value) = timed(lambda: vectorbt_run(*vbt_args, curve=True), repeat)
    assert abs((vbt_pnl - rc) - res.net_pnl) < CENT, (vbt_pnl, rc, res.net_pnl)
    assert abs((vbt_pnl_curve - rc) - res.net_pnl) < CENT, (vbt_pnl_curve, rc, res.net_pnl)
    assert len(vbt_value) == n

    log("PyBroker slice")
    from fbt_pipelines.engine.pybroker_engine import run_pybroker_backtest

    slice_len = 20_000 if quick else 50_000
    first_roll = int(np.flatnonzero(roll)[0])
    lo = max(0, min(first_roll - slice_len // 2, n - slice_len))
    sl = prices.iloc[lo:lo + slice_len].reset_index(drop=True)
    sl_target = target[lo:lo + slice_len]
    assert sl["roll"].any()
    t0 = time.perf_counter()
    run_pybroker_backtest(sl.iloc[:500].reset_index(drop=True), sl_target[:500], spec, cfg)
    pb_first = time.perf_counter() - t0
    t_pb, ts_pb, pb = timed(lambda: run_pybroker_backtest(sl, sl_target, spec, cfg), 3 if quick else 5, warmup=0)
    fbt_slice = run_backtest(sl, sl_target, spec, cfg)
    assert int(fbt_slice.trades["refused"].sum()) == 0
    assert abs(pb.net_pnl - fbt_slice.net_pnl) < CENT, (pb.net_pnl, fbt_slice.net_pnl)
    t_pb_full = t_pb * n / slice_len
    t_engine_slice, _, _ = timed(lambda: run_backtest(sl, sl_target, spec, cfg), repeat)

    # ------------------------------------------------------------- 2. sweep
    catalog = load_catalog()
    roots = list(catalog)[:20]
    grid = {"fast": list(range(2, 42)), "slow": list(range(50, 300, 10))}
    sets = parameter_sets("sma_crossover", grid, mode="random", n=50, seed=1) if quick \
        else parameter_sets("sma_crossover", grid)
    assert len(sets) == (50 if quick else 1000)
    markets = [(r, catalog[r], make_daily_market(catalog[r], SESSIONS, seed=100 + i)) for i, r in enumerate(roots)]
    # one capital (10M USD) for the engine and the sizing; IDM 1.5; 1 tick slippage, catalogue commission
    base = BacktestSpec.create("sma_crossover", {}, library=STRATEGIES, capital=10_000_000.0, idm=1.5)
    sizing, engine_cfg = base.sizing_config(), base.engine_config()
    data = {r: MarketData(r, ms, mp) for r, ms, mp in markets}
    workers = 2

    log("sweep warm-up")
    run_sweep(base, data[markets[0][0]], sets[:4], workers=workers)
    direct_sweep_market(markets[0][2], markets[0][1], sets[:4], sizing, engine_cfg, workers)

    log(f"run_sweep: {len(markets)} markets x {len(sets)} sets, workers={workers}")
    t0 = time.perf_counter()
    tables = []
    for root, mspec, mprices in markets:
        tables.append(run_sweep(base, data[root], sets, workers=workers).table)
    t_sweep = time.perf_counter() - t0
    n_bt = len(markets) * len(sets)

    log("direct kernel sweep")
    t_direct, direct = {}, {}
    for w in (workers,):
        t0 = time.perf_counter()
        direct[w] = [direct_sweep_market(mp, ms, sets, sizing, engine_cfg, w) for _, ms, mp in markets]
        t_direct[w] = time.perf_counter() - t0
    worst = 0.0
    for table, d in zip(tables, direct[workers]):
        worst = max(worst, float(np.max(np.abs(table["net_pnl"].to_numpy() - d[:, 0]))))
        assert np.array_equal(table["trades"].to_numpy(), d[:, 1]) and np.array_equal(table["rolls"].to_numpy(), d[:, 2])
    assert worst < CENT, worst
    refused = 0.0

    log("threads vs serial on one market, and cProfile of one sweep item")
    sub = sets[: min(100, len(sets))]
    mp0, ms0 = markets[0][2], markets[0][1]
    t_w = {}
    for w in (1, workers):
        t0 = time.perf_counter()
        run_sweep(base, data[markets[0][0]], sub, workers=w)
        t_w[w] = time.perf_counter() - t0
    prof = cProfile.Profile()
    prof.enable()
    for p in sub[:100]:
        bt = backtest_market(base.with_params(p), MarketData(markets[0][0], ms0, mp0))
        refused += bt.summary["refused_contracts"]
    prof.disable()
    st = pstats.Stats(prof)
    total_prof = max(v[3] for k, v in st.stats.items() if k[2] == "backtest_market")
    wanted = [("summary.py", "summarise", "summarise (headline + trade stats; reads the frames)"),
              ("metrics.py", "risk_metrics", "  of which risk_metrics"),
              ("futures_engine.py", "run_backtest", "run_backtest (checks + kernel pass)"),
              ("futures_engine.py", "bars", "  BacktestResult.bars (built on first read)"),
              ("futures_engine.py", "trades", "  BacktestResult.trades (built on first read)"),
              ("sizing.py", "cash_vol_per_contract", "cash_vol_per_contract (EWMA vol sizing)"),
              ("strategies.py", "template_signal", "template_signal (pandas SMAs)"),
              ("inputs.py", "strategy_inputs", "strategy_inputs (assign prob_up/roll_yield)")]
    shares = []
    for fname, func, label in wanted:
        ct = sum(v[3] for k, v in st.stats.items() if k[0].endswith(fname) and k[2] == func)
        shares.append((label, ct / total_prof))
    # the kernel itself on one daily market, per call
    n0 = len(mp0)
    k_args = (np.ones(n0, np.int64), mp0["open"].to_numpy(float), mp0["close"].to_numpy(float),
              mp0["close"].to_numpy(float), mp0["close"].to_numpy(float), mp0["roll"].to_numpy(bool),
              float(ms0.multiplier), float(ms0.commission), float(ms0.tick_size),
              np.zeros(1, np.int64), np.array([float(ms0.initial_margin)]), np.array([float(ms0.maintenance_margin)]),
              1e7, int(FillRule.NEXT_OPEN), *NO_ORDERS)
    t_k_daily, _, _ = timed(lambda: backtest_nb(*k_args), 50)

    total = time.perf_counter() - t_start

    # ------------------------------------------------------------- table
    S1 = f"1 single ({n:,} bars)"
    r_eb, r_kb = t_engine / t_bare, t_kernel / t_bare
    c_eb, c_kb = cpu_med["engine"] / cpu_med["bare"], cpu_med["kernel"] / cpu_med["bare"]
    r_vbt, r_vbt_curve = t_vbt / t_engine, t_vbt_curve / t_engine
    row(S1, "data: build frame (untimed input)", f"{t_data:.2f} s")
    row(S1, "SMA(50,200) signal, sma_crossover (input to all; not in (i)-(v))", f"{t_signal * 1e3:.1f} ms")
    row(S1, "trades / rolls / fbt net P&L (commission + 1 tick)",
        f"{n_trades:,} / {n_rolls} / {res.net_pnl:,.2f} USD")
    for key, label in (("engine", "(i)   fbt run_backtest (frames on first read)"),
                       ("kernel", "(ii)  fbt kernel backtest_nb"),
                       ("bare", "(iii) bare Numba loop, per-bar equity")):
        row(S1, f"{label}, median (min) of {repeat}",
            f"{med[key] * 1e3:.2f} ({min(wall[key]) * 1e3:.2f}) ms  {n / med[key] / 1e6:.0f} M bars/s; "
            f"CPU {cpu_med[key] * 1e3:.2f} ms")
    row(S1, "(i)   + reading .bars and .trades (the frames), median of 3",
        f"{t_frames * 1e3:.1f} ms  (frames alone {(t_frames - t_engine) * 1e3:.1f} ms)")
    row(S1, "      diagnostic: kernel / bare with glibc heap reuse*, min of 7",
        f"{heap['kernel'] * 1e3:.2f} / {heap['bare'] * 1e3:.2f} ms  (kernel / bare "
        f"{heap['kernel'] / heap['bare']:.2f}x)")
    row(S1, f"(iv)  vectorbt from_signals + final_value, median (min) of {repeat}",
        f"{t_vbt * 1e3:.1f} ({min(ts_vbt) * 1e3:.1f}) ms  {n / t_vbt / 1e6:.0f} M bars/s")
    row(S1, f"(iv)  vectorbt from_signals + value() (equity curve), median (min) of {repeat}",
        f"{t_vbt_curve * 1e3:.1f} ({min(ts_vbt_curve) * 1e3:.1f}) ms")
    row(S1, f"(v)   PyBroker, {slice_len:,}-bar slice, median (min) of {len(ts_pb)}",
        f"{t_pb:.3f} ({min(ts_pb):.3f}) s  {slice_len / t_pb / 1e3:.1f} k bars/s; fbt on the slice "
        f"{t_engine_slice * 1e3:.2f} ms")
    row(S1, f"(v)   PyBroker EXTRAPOLATED linearly to {n:,} bars", f"{t_pb_full:.1f} s (extrapolated)")
    row(S1, "ratio engine / bare loop   (target <= 1.3x), wall / CPU",
        f"{r_eb:.2f}x / {c_eb:.2f}x  {'MET' if c_eb <= 1.3 else 'NOT MET'} (CPU)")
    row(S1, "ratio kernel / bare loop, wall / CPU", f"{r_kb:.2f}x / {c_kb:.2f}x")
    for key, yard, label in (
            ("engine_calls", "bare_calls", "engine, margin calls on (catalogue maintenance) / bare + maintenance test"),
            ("engine_history", "bare_calls", f"engine, margin history ({len(schedule.starts)} segments, calls on) / "
                                             "bare + maintenance test"),
            ("engine_arrays", "bare_arrays", "engine, the same history as per-bar arrays / bare reading them")):
        r_w, r_c = med[key] / med[yard], cpu_med[key] / cpu_med[yard]
        row(S1, f"ratio {label} (target <= 1.3x), wall / CPU",
            f"{r_w:.2f}x / {r_c:.2f}x  {'MET' if r_c <= 1.3 else 'NOT MET'} (CPU); over the plain bare loop "
            f"{cpu_med[key] / cpu_med['bare']:.2f}x (CPU)")
    r_sw, r_sc = med["engine_stops"] / med["bare_stops"], cpu_med["engine_stops"] / cpu_med["bare_stops"]
    row(S1, f"ratio engine with stop 8 + target 16 / bare stop loop (target <= 2x), wall / CPU",
        f"{r_sw:.2f}x / {r_sc:.2f}x  {'MET' if r_sc <= 2 else 'NOT MET'} (CPU); {n_stop_exits:,} stop/target exits")
    row(S1, "      the same over the equity-only bare stop loop (no records, no margin cap; the old yardstick)",
        f"{med['engine_stops'] / med['bare_stops_equity']:.2f}x / "
        f"{cpu_med['engine_stops'] / cpu_med['bare_stops_equity']:.2f}x")
    row(S1, "bare loops + maintenance test / + per-bar margins, over the plain one (CPU)",
        f"{cpu_med['bare_calls'] / cpu_med['bare']:.2f}x / {cpu_med['bare_arrays'] / cpu_med['bare']:.2f}x")
    row(S1, "assert fbt = bare loops, equity and trade records (calls on, history, arrays; stops)",
        f"ok, max |diff| {bare_worst:.2e} / stops {stops_worst:.2e} USD")
    row(S1, "ratio engine + frames / bare loop", f"{t_frames / t_bare:.1f}x")
    row(S1, "ratio vectorbt / engine    (target > 1), final_value / value()",
        f"{r_vbt:.1f}x / {r_vbt_curve:.1f}x  {'MET' if r_vbt > 1 else 'NOT MET'}")
    row(S1, "ratio PyBroker (extrapolated) / engine", f"{t_pb_full / t_engine:,.0f}x")
    row(S1, "assert fbt = bare loop equity on every bar",
        f"ok, max |diff| {bare_worst:.2e} USD")
    row(S1, "assert fbt = vectorbt P&L - fbt roll costs",
        f"ok, |diff| {abs(vbt_pnl - rc - res.net_pnl):.2e} USD (roll costs {rc:,.2f})")
    row(S1, "assert fbt = PyBroker net P&L on the slice (1 roll)",
        f"ok, {fbt_slice.net_pnl:,.2f} vs {pb.net_pnl:,.2f} USD")

    S2 = f"2 sweep ({len(markets)} mkts x {len(sets)} sets)"
    row(S2, f"run_sweep (threads, workers={workers}), end to end", f"{t_sweep:.1f} s  "
        f"({n_bt / t_sweep:,.0f} backtests/s; target < 60 s: {'MET' if t_sweep < 60 else 'NOT MET'})")
    row(S2, f"direct kernel sweep (signals precomputed), workers={workers}",
        f"{t_direct[workers]:.2f} s  ({n_bt / t_direct[workers]:,.0f} backtests/s)")
    row(S2, "ratio run_sweep / direct kernel sweep", f"{t_sweep / t_direct[workers]:.0f}x")
    row(S2, "assert direct = run_sweep: net P&L, trades, rolls (all sets)", f"ok, max |diff| {worst:.2e} USD")
    row(S2, f"run_sweep 1 market x {len(sub)} sets: workers=1 / workers={workers}",
        f"{t_w[1]:.2f} s / {t_w[workers]:.2f} s  (threads speed-up {t_w[1] / t_w[workers]:.2f}x)")
    row(S2, "kernel alone, one 2,520-bar daily backtest", f"{t_k_daily * 1e6:.0f} us")
    row(S2, "cProfile of 100 backtest_market calls (serial)", f"{total_prof:.2f} s under profiler = 100%")
    for label, share in shares:
        row(S2, f"  {label}", f"{share:5.1%}")
    row(S2, "refused contracts in the profiled runs", f"{refused:.0f}")

    S3 = "3 numba first call"
    row(S3, "run_backtest COLD, fresh process, empty NUMBA_CACHE_DIR: compile",
        f"{cold['first_call']:.2f} s, CPU {cold['first_call_cpu']:.2f} s  "
        f"(import numba {cold['import_numba']:.2f} s, engine modules "
        f"{cold['import_engine']:.2f} s, process {cold['process']:.1f} s)")
    row(S3, "run_backtest CACHED, fresh process, same cache dir: first call",
        f"{cached['first_call']:.2f} s, CPU {cached['first_call_cpu']:.2f} s  "
        f"(import numba {cached['import_numba']:.2f} s, engine modules "
        f"{cached['import_engine']:.2f} s, process {cached['process']:.1f} s)")
    row(S3, "run_backtest second call, 3 bars (dispatch + result)", f"{cached['second_call'] * 1e6:.0f} us")
    row(S3, "run_backtest first call in this process (FBT_HOME numba cache)", f"{kernel_first_here:.2f} s")
    row(S3, "bare loop compile (no cache), this process", f"{bare_compile:.2f} s")
    row(S3, "vectorbt import / first from_signals (500 bars; Numba compile)", f"{vbt_import:.2f} s / {vbt_first:.2f} s")
    row(S3, "PyBroker first run (500 bars, incl. import)", f"{pb_first:.2f} s")

    w1 = max(len(r[1]) for r in rows)
    w0 = max(len(r[0]) for r in rows)
    mode = "QUICK" if quick else "FULL"
    print(f"bench/engine.py ({mode}); {os.cpu_count()} cores; Python {sys.version.split()[0]}; "
          f"times exclude data building and the untimed warm-up call; load average at start / end "
          f"{load_start:.2f} / {os.getloadavg()[0]:.2f} (other processes share the cores)")
    print(f"{'section':{w0}s}  {'what':{w1}s}  figure")
    print(f"{'-' * w0}  {'-' * w1}  {'-' * 40}")
    last = None
    for sec, what, fig in rows:
        print(f"{(sec if sec != last else ''):{w0}s}  {what:{w1}s}  {fig}")
        last = sec
    print("* subprocess with MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ raised so glibc reuses mapped heap "
          "memory instead of page-faulting a fresh equity array on every call")
    print(f"total bench time {total:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "bars": n, "signal": t_signal, "engine": t_engine, "kernel": t_kernel, "bare": t_bare,
            "engine_frames": t_frames, "cpu": cpu_med, "heap": heap, "vectorbt": t_vbt,
            "vectorbt_value": t_vbt_curve, "pybroker_extrapolated": t_pb_full, "sweep": t_sweep,
            "sweep_direct": t_direct[workers], "compile_cold": cold["first_call"],
            "cached_first_call": cached["first_call"], "compile_cold_cpu": cold["first_call_cpu"],
            "cached_first_call_cpu": cached["first_call_cpu"], "engine_over_bare": r_eb, "kernel_over_bare": r_kb,
            "cpu_engine_over_bare": c_eb,
            "cpu_calls_over_bare": cpu_med["engine_calls"] / cpu_med["bare"],
            "cpu_history_over_bare": cpu_med["engine_history"] / cpu_med["bare"],
            "cpu_arrays_over_bare": cpu_med["engine_arrays"] / cpu_med["bare"],
            "cpu_calls_over_bare_calls": cpu_med["engine_calls"] / cpu_med["bare_calls"],
            "cpu_history_over_bare_calls": cpu_med["engine_history"] / cpu_med["bare_calls"],
            "cpu_arrays_over_bare_arrays": cpu_med["engine_arrays"] / cpu_med["bare_arrays"],
            "cpu_stops_over_bare_stops_equity": cpu_med["engine_stops"] / cpu_med["bare_stops_equity"],
            "cpu_stops_over_bare_stops": cpu_med["engine_stops"] / cpu_med["bare_stops"], "vectorbt_over_engine": r_vbt, "load_start": load_start,
            "load_end": os.getloadavg()[0], "total": total,
        }, indent=1))


if __name__ == "__main__":
    main()
