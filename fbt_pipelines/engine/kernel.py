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

The per-bar arithmetic and its order are those of the original kernel, so
results are bit-for-bit the same (``tests/unit/test_engine_equivalence.py``
checks it against a pure-Python copy of the original on random inputs).
"""

from __future__ import annotations

import numpy as np
from numba import njit

FILL_NEXT_OPEN = 0
FILL_NEXT_CLOSE = 1

TRADE = 0
ROLL = 1

_FIRST_CAPACITY = 64  # trade records; doubled when full


@njit(cache=True, nogil=True)
def _grow(t_bar, t_kind, t_qty, t_price, t_comm, t_slip, t_refused):
    """Twice the capacity, records kept (amortised O(1) per trade)."""
    cap = 2 * len(t_bar)
    nb = np.empty(cap, dtype=np.int64)
    nk = np.empty(cap, dtype=np.int64)
    nq = np.empty(cap, dtype=np.int64)
    np_ = np.empty(cap)
    nc = np.empty(cap)
    ns = np.empty(cap)
    nr = np.empty(cap, dtype=np.int64)
    k = len(t_bar)
    nb[:k] = t_bar
    nk[:k] = t_kind
    nq[:k] = t_qty
    np_[:k] = t_price
    nc[:k] = t_comm
    ns[:k] = t_slip
    nr[:k] = t_refused
    return nb, nk, nq, np_, nc, ns, nr


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
      (the pass stops there and the other outputs are incomplete).
    """
    n = len(close)
    per_bar_margin = len(margin) == n
    equity = np.empty(n)
    t_bar = np.empty(_FIRST_CAPACITY, dtype=np.int64)
    t_kind = np.empty(_FIRST_CAPACITY, dtype=np.int64)
    t_qty = np.empty(_FIRST_CAPACITY, dtype=np.int64)
    t_price = np.empty(_FIRST_CAPACITY)
    t_comm = np.empty(_FIRST_CAPACITY)
    t_slip = np.empty(_FIRST_CAPACITY)
    t_refused = np.empty(_FIRST_CAPACITY, dtype=np.int64)
    unit_cost = commission + slippage * multiplier  # currency per contract per side
    k = 0
    pos = 0
    eq = capital
    prev_close = 0.0
    for i in range(n):
        o = open_[i]
        c = close[i]
        if not (np.isfinite(o) and np.isfinite(c)):
            return (equity, t_bar[:k], t_kind[:k], t_qty[:k], t_price[:k], t_comm[:k], t_slip[:k],
                    t_refused[:k], i)
        if i > 0:
            want = target[i - 1]
            fill = o if fill_rule == FILL_NEXT_OPEN else c
            if want == pos:
                # the common bar: hold, mark to the fill price then to the close
                if pos != 0:
                    eq += pos * (fill - prev_close) * multiplier
                    eq += pos * (c - fill) * multiplier
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
                if want != pos or refused > 0:
                    if k == len(t_bar):
                        t_bar, t_kind, t_qty, t_price, t_comm, t_slip, t_refused = _grow(
                            t_bar, t_kind, t_qty, t_price, t_comm, t_slip, t_refused)
                    t_bar[k] = i
                    t_kind[k] = TRADE
                    t_refused[k] = refused
                    if want != pos:
                        qty = want - pos
                        comm = abs(qty) * commission
                        slip = abs(qty) * slippage * multiplier
                        eq -= comm + slip
                        t_qty[k] = qty
                        t_price[k] = fill + slippage if qty > 0 else fill - slippage
                        t_comm[k] = comm
                        t_slip[k] = slip
                        pos = want
                    else:  # every wanted contract refused: a record of the refusal only
                        t_qty[k] = 0
                        t_price[k] = fill
                        t_comm[k] = 0.0
                        t_slip[k] = 0.0
                    k += 1
                # mark from the fill to the close
                eq += pos * (c - fill) * multiplier
        if roll[i] and pos != 0:
            # one round trip: close the old contract, open the new, at this close
            comm = 2 * abs(pos) * commission
            slip = 2 * abs(pos) * slippage * multiplier
            eq -= comm + slip
            if k == len(t_bar):
                t_bar, t_kind, t_qty, t_price, t_comm, t_slip, t_refused = _grow(
                    t_bar, t_kind, t_qty, t_price, t_comm, t_slip, t_refused)
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
    return (equity, t_bar[:k].copy(), t_kind[:k].copy(), t_qty[:k].copy(), t_price[:k].copy(),
            t_comm[:k].copy(), t_slip[:k].copy(), t_refused[:k].copy(), -1)


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
