"""Sweep engine: many parameter sets of one strategy on one market, shared work.

A sweep of ``sma_crossover`` needs few distinct moving averages (1,000 sets
of a 20 x 50 grid use 70 window lengths): :func:`window_means` computes each
distinct window's rolling mean of the back-adjusted close (points) ONCE per
market, with the very pandas call :func:`~fbt_pipelines.engine.strategies.
sma_crossover` makes (so every mean, and every signal, is bit-identical to
the single backtest's). :func:`sma_sweep_nb` then runs sets ``idx[lo:hi]``
in compiled code, one after the other: signal (sign of fast mean - slow mean,
0 while either is undefined), sizing exactly as
:class:`~fbt_pipelines.usecases.backtest.Sizer` (volatility target rounded,
pysystemtrade's buffer, or fixed contracts), the engine's one pass
(:func:`~fbt_pipelines.engine.kernel.backtest_nb`) and the summary numbers,
written into preallocated arrays: no pandas, no Python per set. Any other
strategy: :func:`signal_sweep_nb` does the same from signals computed
beforehand (each distinct one once, by the strategy itself).

Parallelism: the caller runs disjoint slices of the sets on threads (the
functions release the GIL, ``nogil=True``), as fbt's sweeps always have; no
Numba threading layer is involved (GNU OpenMP's is not fork-safe, the
workqueue layer not thread-safe). Compiled functions are cached on disk
(``cache=True``); Numba's cache notices a change of the cached function's own
file only, so these carry :func:`cache_depends_on` the files whose code they
compile in (the kernel, the rules' codes, the performance constants).

Summary columns (:data:`STATS`), per set, as
:func:`~fbt_pipelines.engine.summary.summarise`: ``net_pnl`` (USD),
``sharpe`` (annualised, daily simple returns; NaN when ruined or without
volatility), ``max_drawdown`` (fraction of the peak), ``trades`` (fills with
contracts), ``rolls``, ``roll_costs`` (USD), ``margin_calls``,
``account_stopped`` (1.0 / 0.0). The per-bar P&L (USD, ``equity[i] -
equity[i-1]``, the first bar from the capital) goes into a (sets, bars) array.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from numba import njit
from numba.core import caching

from fbt_pipelines.engine import kernel, rules
from fbt_pipelines.engine.kernel import backtest_nb
from fbt_pipelines.engine.rules import TradeKind, TradeReason
from fbt_pipelines.primitives import performance
from fbt_pipelines.primitives.performance import PERIODS_PER_YEAR, ZERO_VOL, annualisation

STATS = ("net_pnl", "sharpe", "max_drawdown", "trades", "rolls", "roll_costs", "margin_calls", "account_stopped")

_TRADE = int(TradeKind.TRADE)
_ROLL = int(TradeKind.ROLL)
_CALL = int(TradeReason.MARGIN_CALL)
_ANNUAL = annualisation(PERIODS_PER_YEAR)  # sqrt(252), the float sharpe_ratio multiplies by
_ZERO_VOL = ZERO_VOL


def cache_depends_on(*modules: ModuleType) -> Callable:
    """Decorator: a ``cache=True`` Numba function's disk cache also keys on ``modules``.

    Numba reuses a cached function until its own source file changes; code it
    compiles in from other files (a kernel it calls, module constants) is not
    checked, so an edit there would leave the stale machine code in use. Put
    above ``@njit(cache=True, ...)``: the cache's source stamp becomes the
    function's file plus the SHA-256 of each module's file, so any edit to
    them compiles afresh.
    """
    files = tuple(Path(m.__file__) for m in modules)

    def stamp() -> str:
        return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()

    def with_files(locator: type) -> type:
        class Depends(locator):
            def get_source_stamp(self):
                return super().get_source_stamp(), stamp()

        return Depends

    class Impl(caching.CompileResultCacheImpl):
        _locator_classes = [with_files(c) for c in caching.CompileResultCacheImpl._locator_classes]

    class Cache(caching.FunctionCache):
        _impl_class = Impl

    def wrap(dispatcher):
        dispatcher._cache = Cache(dispatcher.py_func)  # what njit(cache=True) set, with the wider stamp
        return dispatcher

    return wrap


_DEPENDS = (kernel, rules, performance)  # compiled into the functions below


def window_means(close: np.ndarray, windows: Sequence[int]) -> np.ndarray:
    """Rolling means of ``close`` (points), one row per window (float64[w, n]).

    Each row is ``pd.Series(close).rolling(w).mean()``: the call
    :func:`~fbt_pipelines.engine.strategies.sma_crossover` makes, so equal to
    its means bit for bit; NaN before ``w`` bars exist (causal: row i uses
    bars i-w+1..i only)."""
    s = pd.Series(np.asarray(close, dtype=float))
    out = np.empty((len(windows), len(s)))
    for j, w in enumerate(windows):
        out[j] = s.rolling(int(w)).mean().to_numpy()
    return out


@cache_depends_on(*_DEPENDS)
@njit(cache=True, nogil=True)
def targets_nb(signal, fixed, cash_vol, budget, width, buffered, target):
    """Whole contracts wanted after each close, as ``Sizer.contracts``, into ``target``.

    ``signal`` in standard risk positions; ``target`` int64[n], as
    :meth:`~fbt_pipelines.usecases.backtest.Sizer.contracts`.

    ``fixed`` > 0: ``sign(signal) x fixed``. Else ``signal x budget /
    cash_vol`` (``budget`` USD of annual risk, ``cash_vol`` one contract's
    annualised USD volatility per bar), 0 where not finite, rounded half to
    even (:func:`~fbt_pipelines.portfolio.sizing.whole_contracts`); with
    ``buffered``, kept inside the buffer ``width`` (contracts per bar, NaN
    and inf as 0) as :func:`~fbt_pipelines.portfolio.sizing.buffered_positions`."""
    n = len(signal)
    if fixed > 0:
        for i in range(n):
            x = signal[i]
            target[i] = fixed if x > 0 else (-fixed if x < 0 else 0)
        return
    if not buffered:
        for i in range(n):
            raw = signal[i] * budget / cash_vol[i]
            target[i] = np.int64(np.rint(raw)) if np.isfinite(raw) else 0
        return
    held = 0
    for i in range(n):
        opt = signal[i] * budget / cash_vol[i]
        if not np.isfinite(opt):
            opt = 0.0
        buf = width[i]
        lower = np.rint(opt - abs(buf))
        upper = np.rint(opt + abs(buf))
        if held < lower:
            held = np.int64(lower)
        elif held > upper:
            held = np.int64(upper)
        target[i] = held


@cache_depends_on(*_DEPENDS)
@njit(cache=True, nogil=True)
def equity_stats_nb(equity, capital, out):
    """``out[0:3]``: net P&L (USD), Sharpe and max drawdown of an equity path.

    As :func:`~fbt_pipelines.primitives.performance.equity_headline` (Sharpe
    NaN when the equity ever reaches 0 or below, or with <= 2 bars, or a
    return st. dev. (ddof 1) at most ZERO_VOL)."""
    n = len(equity)
    out[0] = equity[n - 1] - capital
    peak = -np.inf
    mdd = -np.inf
    ruined = False
    for i in range(n):
        e = equity[i]
        if e <= 0.0:
            ruined = True
        if e > peak:
            peak = e
        d = 1.0 - e / peak
        if d > mdd or d != d:
            mdd = d
            if d != d:
                break
    out[2] = mdd
    sharpe = np.nan
    if not ruined and n > 2:
        m = n - 1
        total = 0.0
        for i in range(m):
            total += equity[i + 1] / equity[i] - 1.0
        mean = total / m
        ss = 0.0
        for i in range(m):
            x = (equity[i + 1] / equity[i] - 1.0) - mean
            ss += x * x
        sd = np.sqrt(ss / (m - 1))
        if sd > _ZERO_VOL:
            sharpe = mean / sd * _ANNUAL
    out[1] = sharpe


@cache_depends_on(*_DEPENDS)
@njit(cache=True, nogil=True)
def record_stats_nb(r, st):
    """``st[3:8]`` from a pass's trade records: trades, rolls, roll costs, calls, stopped.

    ``r``: :func:`~fbt_pipelines.engine.kernel.backtest_nb`'s result; the
    columns of :data:`STATS` (``trades``: fills with contracts; ``roll_costs``:
    the rolls' commission + slippage, USD; ``account_stopped``: 1.0 / 0.0)."""
    trades = 0
    rolls = 0
    calls = 0
    roll_comm = 0.0
    roll_slip = 0.0
    for j in range(len(r.t_kind)):
        kind = r.t_kind[j]
        if kind == _TRADE and r.t_qty[j] != 0:
            trades += 1
        elif kind == _ROLL:
            rolls += 1
            roll_comm += r.t_comm[j]
            roll_slip += r.t_slip[j]
        if r.t_reason[j] == _CALL:
            calls += 1
    st[3] = trades
    st[4] = rolls
    st[5] = roll_comm + roll_slip
    st[6] = calls
    st[7] = 1.0 if r.stopped_bar >= 0 else 0.0


@cache_depends_on(*_DEPENDS)
@njit(cache=True, nogil=True)
def sma_signal_nb(fast, slow, signal):
    """``signal[i]``: the sign of ``fast[i] - slow[i]`` (0 where either is NaN).

    ``sma_crossover``'s signal from its two moving averages (float64[n])."""
    for i in range(len(signal)):
        d = fast[i] - slow[i]
        signal[i] = 1.0 if d > 0.0 else (-1.0 if d < 0.0 else 0.0)  # NaN: 0


@cache_depends_on(*_DEPENDS)
@njit(cache=True, nogil=True)
def run_set_nb(s, target, open_, high, low, close, roll, multiplier, commission, slippage, m_start, m_init, m_maint,
               capital, fill_rule, orders, pnl_out, stats_out, bad_out):
    """One set ``s``: the engine's pass on ``target``, then its rows of the outputs.

    Arguments as :func:`~fbt_pipelines.engine.kernel.backtest_nb` (``orders`` the tuple of
    its order arguments, :func:`~fbt_pipelines.engine.futures_engine.order_arguments`),
    then row ``s`` of ``pnl_out`` (USD per bar), ``stats_out`` (:data:`STATS`)
    and ``bad_out`` (-1, or the first row with a non-finite price).
    """
    r = backtest_nb(target, open_, high, low, close, roll, multiplier, commission, slippage, m_start, m_init,
                    m_maint, capital, fill_rule, *orders)
    bad_out[s] = r.bad_row
    equity = r.equity
    prev = capital
    row = pnl_out[s]
    for i in range(len(equity)):
        row[i] = equity[i] - prev
        prev = equity[i]
    st = stats_out[s]
    equity_stats_nb(equity, capital, st)
    record_stats_nb(r, st)


@cache_depends_on(*_DEPENDS)
@njit(cache=True, nogil=True)
def sma_sweep_nb(idx, lo, hi, means, fast_row, slow_row, fixed, cash_vol, budget, width, buffered,
                 open_, high, low, close, roll, multiplier, commission, slippage, m_start, m_init, m_maint,
                 capital, fill_rule, orders, pnl_out, stats_out, bad_out):
    """``sma_crossover`` sets ``idx[lo:hi]``, one after the other.

    Set s's signal is the sign of
    ``means[fast_row[s]] - means[slow_row[s]]`` (0 where NaN), sized by
    :func:`targets_nb` (``fixed[s]`` contracts, 0: volatility target), run by
    :func:`run_set_nb` into row s of the outputs."""
    n = len(close)
    signal = np.empty(n)
    target = np.empty(n, dtype=np.int64)
    for j in range(lo, hi):
        s = idx[j]
        sma_signal_nb(means[fast_row[s]], means[slow_row[s]], signal)
        targets_nb(signal, fixed[s], cash_vol, budget, width, buffered, target)
        run_set_nb(s, target, open_, high, low, close, roll, multiplier, commission, slippage, m_start, m_init,
                   m_maint, capital, fill_rule, orders, pnl_out, stats_out, bad_out)


@cache_depends_on(*_DEPENDS)
@njit(cache=True, nogil=True)
def signal_sweep_nb(idx, lo, hi, signals, sig_row, fixed, cash_vol, budget, width, buffered,
                    open_, high, low, close, roll, multiplier, commission, slippage, m_start, m_init, m_maint,
                    capital, fill_rule, orders, pnl_out, stats_out, bad_out):
    """Sets ``idx[lo:hi]`` of any strategy, one after the other, signals given.

    Set s's signal is row ``sig_row[s]`` of ``signals`` (float64[k, n],
    standard risk positions), sized by :func:`targets_nb` (``fixed[s]``
    contracts, 0: volatility target), run by :func:`run_set_nb` into row s of
    the outputs.
    """
    n = len(close)
    target = np.empty(n, dtype=np.int64)
    for j in range(lo, hi):
        s = idx[j]
        targets_nb(signals[sig_row[s]], fixed[s], cash_vol, budget, width, buffered, target)
        run_set_nb(s, target, open_, high, low, close, roll, multiplier, commission, slippage, m_start, m_init,
                   m_maint, capital, fill_rule, orders, pnl_out, stats_out, bad_out)
