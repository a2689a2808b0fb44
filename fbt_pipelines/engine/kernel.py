"""The vectorised futures engine's inner loop (Numba): one pass over the bars.

Only arrays and scalars cross into the kernels; validation and frames live in
:mod:`fbt_pipelines.engine.futures_engine`.

- :func:`backtest_nb` is the one pass every backtest makes: it writes the
  per-bar equity (the output every metric needs) and the trade records, and
  nothing else per bar. It also checks that every open and close is finite.
- :func:`bar_state_nb` derives the other per-bar columns (position, margin in
  use, costs) from the trade records, only when a caller asks for them.
- :func:`simulate_futures_nb` is both together (the original all-in-one
  kernel's signature and outputs), for callers that want every array at once.

The accounting is the original all-in-one kernel's, with one change of
summation order: on a bar that holds its position, the two marks (previous
close to fill, fill to close) are summed before they are added to the equity
(one dependent addition per bar instead of two). The equity can then differ
from the original's in the last bits (1e-11 USD seen on 1e5 USD); trades,
positions and costs are the same. ``tests/unit/test_engine_equivalence.py`` checks every
output against a pure-Python copy of the original kernel on random inputs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

FILL_NEXT_OPEN = 0
FILL_NEXT_CLOSE = 1

TRADE = 0
ROLL = 1

_BLOCK = 4096  # bars per inner-loop call (room for 2 records per bar ensured before each)


@njit(cache=True, nogil=True)
def _resized(a, size, k):
    """A new array of ``size`` elements whose first ``k`` are ``a``'s.
    (An explicit loop: slice assignment made the kernels ~3x slower to compile.)"""
    out = np.empty(size, dtype=a.dtype)
    for j in range(k):
        out[j] = a[j]
    return out


@njit(cache=True, nogil=True)
def _grow(t_bar, t_kind, t_qty, t_price, t_comm, t_slip, t_refused):
    """Twice the capacity, records kept (amortised O(1) per trade)."""
    cap = 2 * len(t_bar)
    k = len(t_bar)
    return (_resized(t_bar, cap, k), _resized(t_kind, cap, k), _resized(t_qty, cap, k),
            _resized(t_price, cap, k), _resized(t_comm, cap, k), _resized(t_slip, cap, k),
            _resized(t_refused, cap, k))


@njit(cache=True, nogil=True)
def _bars_nb(i0, i1, pos, eq, prev_close, k, chk,
             target, open_, close, fill_px, roll, multiplier, commission, slippage, margin,
             equity, t_bar, t_kind, t_qty, t_price, t_comm, t_slip, t_refused):
    """Bars ``i0 <= i < i1`` of :func:`backtest_nb`, from the given state
    (contracts held, equity, previous close, records written, finiteness
    sum). The record arrays must have room for ``2 x (i1 - i0)`` more
    records (a bar writes at most a trade and a roll). ``fill_px`` is
    ``open_`` or ``close``: the price of bar i's fills.

    Kept free of per-bar bookkeeping on purpose (measured on 3.5 M bars): a
    record-capacity test on every bar cost ~25 % of the pass, the fill rule
    chosen per bar ~8 %, a finiteness test per price ~8 %. Capacity is
    ensured per block by the caller, the fill rule picks ``fill_px`` once, and
    finiteness is one running sum (``chk``: NaN or inf iff a price is).
    """
    n = len(close)
    per_bar_margin = len(margin) == n
    unit_cost = commission + slippage * multiplier  # currency per contract per side
    for i in range(i0, i1):
        c = close[i]
        chk += open_[i] + c
        if i > 0:
            want = target[i - 1]
            fill = fill_px[i]
            if want == pos:
                # the common bar: hold, marked to the fill price and from it to the close
                # (one addition to the running equity: the two marks are summed first)
                eq += pos * (fill - prev_close) * multiplier + pos * (c - fill) * multiplier
            else:
                # mark the held position to the fill price
                eq += pos * (fill - prev_close) * multiplier
                refused = 0
                if abs(want) > abs(pos) or want * pos < 0:
                    # the largest n whose margin fits the equity left after this
                    # trade's own costs: n*margin + |n - pos|*unit_cost <= eq, with
                    # |n - pos| = n - |pos| (same side) or n + |pos| (flip / from flat)
                    held = abs(pos) if want * pos > 0 else -abs(pos)
                    m = margin[i] if per_bar_margin else margin[0]
                    if m > 0:  # zero margin: no margin check at all
                        affordable = int(np.floor(max(eq + held * unit_cost, 0.0) / (m + unit_cost)))
                    else:
                        affordable = abs(want)
                    if abs(want) > affordable:
                        # an increase on the same side is cut, never turned into a
                        # reduction: keep at least the contracts already held
                        keep = max(affordable, abs(pos)) if want * pos > 0 else affordable
                        refused = abs(want) - keep
                        want = keep if want > 0 else -keep
                if want != pos:
                    qty = want - pos
                    comm = abs(qty) * commission
                    slip = abs(qty) * slippage * multiplier
                    eq -= comm + slip
                    t_bar[k] = i
                    t_kind[k] = TRADE
                    t_qty[k] = qty
                    t_price[k] = fill + slippage if qty > 0 else fill - slippage
                    t_comm[k] = comm
                    t_slip[k] = slip
                    t_refused[k] = refused
                    k += 1
                    pos = want
                elif refused > 0:  # every wanted contract refused: a record of the refusal only
                    t_bar[k] = i
                    t_kind[k] = TRADE
                    t_qty[k] = 0
                    t_price[k] = fill
                    t_comm[k] = 0.0
                    t_slip[k] = 0.0
                    t_refused[k] = refused
                    k += 1
                # mark from the fill to the close
                eq += pos * (c - fill) * multiplier
        if roll[i] and pos != 0:
            # one round trip: close the old contract, open the new, at this close
            comm = 2 * abs(pos) * commission
            slip = 2 * abs(pos) * slippage * multiplier
            eq -= comm + slip
            t_bar[k] = i
            t_kind[k] = ROLL
            t_qty[k] = pos
            t_price[k] = c
            t_comm[k] = comm
            t_slip[k] = slip
            t_refused[k] = 0
            k += 1
        equity[i] = eq
        prev_close = c
    return pos, eq, prev_close, k, chk


@njit(cache=True, nogil=True)
def backtest_nb(
    target: np.ndarray,      # int64[n]: contracts wanted, decided at bar i's close
    open_: np.ndarray,       # float64[n]: back-adjusted open (points)
    close: np.ndarray,       # float64[n]: back-adjusted close (points)
    roll: np.ndarray,        # bool[n]: the held contract is switched at bar i's close
    multiplier: float,       # currency per point
    commission: float,       # currency per contract per side
    slippage: float,         # points per contract per side (ticks x tick size)
    margin: np.ndarray,      # float64[n] per bar, or float64[1] for every bar: initial margin per contract (currency)
    capital: float,          # starting equity (currency)
    fill_rule: int,          # FILL_NEXT_OPEN | FILL_NEXT_CLOSE
):
    """Simulate whole-contract futures positions; one pass, per-bar equity only.

    A trade filled on bar i is margin-checked against the margin in force on
    bar i (``margin[i]``, or ``margin[0]`` when one value is given); held
    contracts are never reduced because margin rose. Returns

    - ``equity``: float64[n], currency, marked at each bar's close;
    - trade records ``t_bar, t_kind, t_qty, t_price, t_comm, t_slip,
      t_refused`` (bar index, TRADE/ROLL, signed contracts, fill price in
      adjusted points incl. slippage, commission and slippage in currency,
      contracts refused for margin), in bar order;
    - ``bad_row``: -1, or the first row whose open or close is not finite
      (then the other outputs are meaningless).
    """
    n = len(close)
    equity = np.empty(n)
    cap = 2 * min(n, _BLOCK) + 2  # trade records: room for the first block; doubled when a block might not fit
    t_bar = np.empty(cap, dtype=np.int64)
    t_kind = np.empty(cap, dtype=np.int64)
    t_qty = np.empty(cap, dtype=np.int64)
    t_price = np.empty(cap)
    t_comm = np.empty(cap)
    t_slip = np.empty(cap)
    t_refused = np.empty(cap, dtype=np.int64)
    fill_px = open_ if fill_rule == FILL_NEXT_OPEN else close  # the price of bar i's fills
    pos, eq, prev_close, k, chk = 0, capital, 0.0, 0, 0.0
    for i0 in range(0, n, _BLOCK):
        i1 = min(i0 + _BLOCK, n)
        while len(t_bar) - k < 2 * (i1 - i0):
            t_bar, t_kind, t_qty, t_price, t_comm, t_slip, t_refused = _grow(
                t_bar, t_kind, t_qty, t_price, t_comm, t_slip, t_refused)
        pos, eq, prev_close, k, chk = _bars_nb(
            i0, i1, pos, eq, prev_close, k, chk, target, open_, close, fill_px, roll, multiplier, commission,
            slippage, margin, equity, t_bar, t_kind, t_qty, t_price, t_comm, t_slip, t_refused)
    bad_row = -1
    if not np.isfinite(chk):  # some price is NaN or inf (or the sum overflowed: then none is)
        for i in range(n):
            if not (np.isfinite(open_[i]) and np.isfinite(close[i])):
                bad_row = i
                break
    return (equity, _resized(t_bar, k, k), _resized(t_kind, k, k), _resized(t_qty, k, k),
            _resized(t_price, k, k), _resized(t_comm, k, k), _resized(t_slip, k, k), _resized(t_refused, k, k),
            bad_row)


@njit(cache=True, nogil=True)
def bar_state_nb(n, t_bar, t_kind, t_qty, t_comm, t_slip, margin):
    """Per-bar position (contracts at the close), margin in use (currency:
    |position| x the bar's margin per contract) and costs (commission +
    slippage, currency) from :func:`backtest_nb`'s trade records (bar order).
    ``margin``: float64[n] per bar or float64[1] for every bar."""
    per_bar_margin = len(margin) == n
    position = np.empty(n, dtype=np.int64)
    margin_used = np.empty(n)
    costs = np.empty(n)
    pos = 0
    j = 0
    n_rec = len(t_bar)
    for i in range(n):
        cost_i = 0.0
        while j < n_rec and t_bar[j] == i:
            if t_kind[j] == TRADE:
                pos += t_qty[j]
            cost_i += t_comm[j] + t_slip[j]
            j += 1
        position[i] = pos
        margin_used[i] = abs(pos) * (margin[i] if per_bar_margin else margin[0])
        costs[i] = cost_i
    return position, margin_used, costs


@njit(cache=True, nogil=True)
def simulate_futures_nb(target, open_, close, roll, multiplier, commission, slippage, margin, capital, fill_rule):
    """:func:`backtest_nb` plus :func:`bar_state_nb`: per-bar position, equity,
    margin in use, costs, and the trade records (bar, kind, contracts, fill
    price in adjusted points, commission, slippage cost, refused contracts).

    Arguments as :func:`backtest_nb`. Raises ``ValueError`` on a non-finite
    open or close.
    """
    equity, t_bar, t_kind, t_qty, t_price, t_comm, t_slip, t_refused, bad_row = backtest_nb(
        target, open_, close, roll, multiplier, commission, slippage, margin, capital, fill_rule)
    if bad_row >= 0:
        raise ValueError("non-finite open or close price")
    position, margin_used, costs = bar_state_nb(len(close), t_bar, t_kind, t_qty, t_comm, t_slip, margin)
    return position, equity, margin_used, costs, t_bar, t_kind, t_qty, t_price, t_comm, t_slip, t_refused
