"""Sweep engine on intraday bars: per-set summary by bar, P&L kept per session.

The daily sweep engine (:mod:`fbt_pipelines.engine.sweep_kernel`) keeps every
set's P&L per bar, (sets x bars) floats: a year of one-minute ES bars is
~350,000 bars, so 1,000 sets would hold 2.8 GB. These functions run the same
per-set pass (signal, sizing by :func:`~fbt_pipelines.engine.sweep_kernel.targets_nb`,
the engine's :func:`~fbt_pipelines.engine.kernel.backtest_nb`) and keep

- the summary (:data:`~fbt_pipelines.engine.sweep_kernel.STATS`) computed from
  the per-bar equity: net P&L (USD), Sharpe of the per-bar simple returns
  annualised by ``annual`` (sqrt of bars per year: bars per session x 252,
  :func:`~fbt_pipelines.usecases.intraday.intraday_summary`'s rule), max
  drawdown (fraction of the peak), trades, rolls, roll costs (USD), margin
  calls, account stopped;
- the P&L per trading session (USD): the equity at the session's last bar
  minus the equity at the previous session's last bar (the first from the
  capital), a (sets x sessions) array.

The moments of the returns are summed as NumPy sums them (pairwise,
:func:`pairwise_sum_nb`), so the Sharpe equals the single backtest's bit for
bit.
Threads as in the daily engine: the caller runs disjoint slices of the sets
(``nogil=True``); compiled functions are cached on disk and keyed on the
files they compile in (:func:`~fbt_pipelines.engine.sweep_kernel.cache_depends_on`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from fbt_pipelines.engine import kernel, rules, sweep_kernel
from fbt_pipelines.engine.kernel import backtest_nb
from fbt_pipelines.engine.sweep_kernel import cache_depends_on, record_stats_nb, sma_signal_nb, targets_nb
from fbt_pipelines.primitives import performance
from fbt_pipelines.primitives.performance import ZERO_VOL

_ZERO_VOL = ZERO_VOL
_DEPENDS = (kernel, rules, performance, sweep_kernel)  # compiled into the functions below


@cache_depends_on(*_DEPENDS)
@njit(cache=True, nogil=True)
def _block_sum_nb(a, lo, n):
    """NumPy's pairwise sum of ``a[lo:lo + n]`` for ``n`` <= 128 (no split)."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    stop = lo + n - n % 8
    i = lo + 8
    while i < stop:
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < lo + n:
        res += a[i]
        i += 1
    return res


@cache_depends_on(*_DEPENDS)
@njit(cache=True, nogil=True)
def pairwise_sum_nb(a, lo, n):
    """Sum of ``a[lo:lo + n]`` by NumPy's pairwise summation, bit for bit.

    NumPy's float64 ``add.reduce`` of a contiguous array (``np.sum``, the
    mean and the variance): below 8 values a plain loop; up to 128, eight
    running sums combined as ``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 +
    r7))`` then the rest added in order; above, the halves (the first a
    multiple of 8 long) summed alike and added. Without recursion (Numba's
    disk cache cannot hold a recursive function): an explicit stack."""
    if n <= 128:
        return _block_sum_nb(a, lo, n)
    depth = 64  # halving from 2**63 values reaches 128 in far fewer levels
    s_lo = np.empty(depth, dtype=np.int64)
    s_n = np.empty(depth, dtype=np.int64)
    s_state = np.empty(depth, dtype=np.int64)  # 0: left half next, 1: right half next, 2: add them
    values = np.empty(depth + 1)
    sp = 1
    s_lo[0], s_n[0], s_state[0] = lo, n, 0
    vp = 0
    while sp > 0:
        top = sp - 1
        start, size = s_lo[top], s_n[top]
        if size <= 128:
            values[vp] = _block_sum_nb(a, start, size)
            vp += 1
            sp -= 1
            continue
        half = size // 2
        half -= half % 8
        state = s_state[top]
        if state == 2:
            values[vp - 2] = values[vp - 2] + values[vp - 1]
            vp -= 1
            sp -= 1
            continue
        s_state[top] = state + 1
        if state == 0:
            s_lo[sp], s_n[sp] = start, half
        else:
            s_lo[sp], s_n[sp] = start + half, size - half
        s_state[sp] = 0
        sp += 1
    return values[0]


@cache_depends_on(*_DEPENDS)
@njit(cache=True, nogil=True, error_model="numpy")
def max_drawdown_nb(equity):
    """Largest ``1 - equity / running peak`` (fraction; NaN when a value is NaN).

    :func:`~fbt_pipelines.primitives.performance.equity_headline`'s max
    drawdown, bit for bit, with one division per new peak rather than per
    bar: while the peak is a constant p > 0, ``1 - e / p`` is largest at the
    lowest e (a correctly rounded division is monotone), so only each
    stretch's lowest value is divided. A peak at or below 0 divides every bar
    (NumPy's rules for a division by 0).
    """
    n = len(equity)
    peak = equity[0]
    low = peak
    mdd = -np.inf
    for i in range(n):
        e = equity[i]
        if e != e:
            return np.nan
        if e > peak:
            d = 1.0 - low / peak
            if d != d:
                return np.nan
            if d > mdd:
                mdd = d
            peak = e
            low = e
        elif peak > 0.0:
            if e < low:
                low = e
        else:
            d = 1.0 - e / peak
            if d != d:
                return np.nan
            if d > mdd:
                mdd = d
    d = 1.0 - low / peak
    if d != d:
        return np.nan
    return d if d > mdd else mdd


@cache_depends_on(*_DEPENDS)
@njit(cache=True, nogil=True)
def equity_stats_nb(equity, capital, annual, scratch, out):
    """``out[0:3]``: net P&L (USD), Sharpe x ``annual`` and max drawdown of an equity path.

    As :func:`~fbt_pipelines.usecases.intraday.intraday_summary` (Sharpe:
    mean / st. dev. (ddof 1) of the per-bar simple returns x ``annual``, the
    moments summed as NumPy sums them (:func:`pairwise_sum_nb`), so equal to
    :func:`~fbt_pipelines.primitives.performance.sharpe_ratio` bit for bit;
    NaN when the equity ever reaches 0 or below, with <= 2 bars, or a st. dev.
    at most ZERO_VOL) and :func:`~fbt_pipelines.primitives.performance.equity_headline`
    (max drawdown: largest 1 - equity / running peak). ``scratch``: float64,
    at least ``len(equity) - 1`` long, overwritten."""
    n = len(equity)
    out[0] = equity[n - 1] - capital
    out[2] = max_drawdown_nb(equity)
    ruined = False
    for i in range(n):
        if equity[i] <= 0.0:
            ruined = True
            break
    sharpe = np.nan
    if not ruined and n > 2:
        m = n - 1
        for i in range(m):
            scratch[i] = equity[i + 1] / equity[i] - 1.0
        mean = pairwise_sum_nb(scratch, 0, m) / m
        for i in range(m):
            x = scratch[i] - mean
            scratch[i] = x * x
        sd = np.sqrt(pairwise_sum_nb(scratch, 0, m) / (m - 1))
        if sd > _ZERO_VOL:
            sharpe = mean / sd * annual
    out[1] = sharpe


@cache_depends_on(*_DEPENDS)
@njit(cache=True, nogil=True)
def session_set_nb(s, target, open_, high, low, close, roll, multiplier, commission, slippage, m_start, m_init,
                   m_maint, capital, fill_rule, orders, ends, annual, scratch, pnl_out, stats_out, bad_out):
    """One set ``s``: the engine's pass on ``target``, then its rows of the outputs.

    Arguments as :func:`~fbt_pipelines.engine.sweep_kernel.run_set_nb`, plus
    ``ends`` (int64[k]: the last bar of each session, increasing, the last
    one n - 1), ``annual`` (sqrt of bars per year) and ``scratch`` (float64[n],
    overwritten); ``pnl_out`` is (sets, sessions): row ``s`` gets the P&L of
    each session (USD).
    """
    r = backtest_nb(target, open_, high, low, close, roll, multiplier, commission, slippage, m_start, m_init,
                    m_maint, capital, fill_rule, *orders)
    bad_out[s] = r.bad_row
    equity = r.equity
    prev = capital
    row = pnl_out[s]
    for k in range(len(ends)):
        e = equity[ends[k]]
        row[k] = e - prev
        prev = e
    st = stats_out[s]
    equity_stats_nb(equity, capital, annual, scratch, st)
    record_stats_nb(r, st)


@cache_depends_on(*_DEPENDS)
@njit(cache=True, nogil=True)
def sma_sessions_nb(idx, lo, hi, means, fast_row, slow_row, fixed, cash_vol, budget, width, buffered,
                    open_, high, low, close, roll, multiplier, commission, slippage, m_start, m_init, m_maint,
                    capital, fill_rule, orders, ends, annual, pnl_out, stats_out, bad_out):
    """``sma_crossover`` sets ``idx[lo:hi]``, one after the other, P&L per session.

    As :func:`~fbt_pipelines.engine.sweep_kernel.sma_sweep_nb` (signal: the
    sign of ``means[fast_row[s]] - means[slow_row[s]]``, 0 where NaN), run by
    :func:`session_set_nb`."""
    n = len(close)
    signal = np.empty(n)
    target = np.empty(n, dtype=np.int64)
    scratch = np.empty(n)
    for j in range(lo, hi):
        s = idx[j]
        sma_signal_nb(means[fast_row[s]], means[slow_row[s]], signal)
        targets_nb(signal, fixed[s], cash_vol, budget, width, buffered, target)
        session_set_nb(s, target, open_, high, low, close, roll, multiplier, commission, slippage, m_start, m_init,
                       m_maint, capital, fill_rule, orders, ends, annual, scratch, pnl_out, stats_out, bad_out)


@cache_depends_on(*_DEPENDS)
@njit(cache=True, nogil=True)
def signal_sessions_nb(idx, lo, hi, signals, sig_row, fixed, cash_vol, budget, width, buffered,
                       open_, high, low, close, roll, multiplier, commission, slippage, m_start, m_init, m_maint,
                       capital, fill_rule, orders, ends, annual, pnl_out, stats_out, bad_out):
    """Sets ``idx[lo:hi]`` of any strategy from signals given, P&L per session.

    As :func:`~fbt_pipelines.engine.sweep_kernel.signal_sweep_nb` (set s's
    signal: row ``sig_row[s]`` of ``signals``), run by :func:`session_set_nb`.
    """
    n = len(close)
    target = np.empty(n, dtype=np.int64)
    scratch = np.empty(n)
    for j in range(lo, hi):
        s = idx[j]
        targets_nb(signals[sig_row[s]], fixed[s], cash_vol, budget, width, buffered, target)
        session_set_nb(s, target, open_, high, low, close, roll, multiplier, commission, slippage, m_start, m_init,
                       m_maint, capital, fill_rule, orders, ends, annual, scratch, pnl_out, stats_out, bad_out)
