"""The vectorised futures engine's inner loop (Numba): one pass over the bars.

Only arrays and scalars cross into the kernel; validation and frames live in
:mod:`fbt_pipelines.engine.futures_engine`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

FILL_NEXT_OPEN = 0
FILL_NEXT_CLOSE = 1

TRADE = 0
ROLL = 1


@njit(cache=True, nogil=True)
def simulate_futures_nb(
    target: np.ndarray,      # int64[n]: contracts wanted, decided at bar i's close
    open_: np.ndarray,       # float64[n]: back-adjusted open (points)
    close: np.ndarray,       # float64[n]: back-adjusted close (points)
    roll: np.ndarray,        # bool[n]: the held contract is switched at bar i's close
    multiplier: float,       # currency per point
    commission: float,       # currency per contract per side
    slippage: float,         # points per contract per side (ticks x tick size)
    margin: np.ndarray,      # float64[n]: initial margin per contract in force at bar i (currency)
    capital: float,          # starting equity (currency)
    fill_rule: int,          # FILL_NEXT_OPEN | FILL_NEXT_CLOSE
):
    """Simulate whole-contract futures positions.

    A trade filled on bar i is margin-checked against ``margin[i]`` (the
    margin in force on the fill's bar); held contracts are never reduced
    because margin rose. Returns per-bar position (contracts held at the
    close), equity (currency, marked at the close), margin in use
    (``|position| x margin[i]``), costs, and trade records
    (bar, kind, contracts, fill price in adjusted points, commission,
    slippage cost, refused contracts).
    """
    n = len(close)
    position = np.zeros(n, dtype=np.int64)
    equity = np.zeros(n)
    margin_used = np.zeros(n)
    costs = np.zeros(n)
    t_bar = np.empty(2 * n, dtype=np.int64)
    t_kind = np.empty(2 * n, dtype=np.int64)
    t_qty = np.empty(2 * n, dtype=np.int64)
    t_price = np.empty(2 * n)
    t_comm = np.empty(2 * n)
    t_slip = np.empty(2 * n)
    t_refused = np.empty(2 * n, dtype=np.int64)
    k = 0
    pos = 0
    eq = capital
    for i in range(n):
        cost_i = 0.0
        if i > 0:
            want = target[i - 1]
            fill = open_[i] if fill_rule == FILL_NEXT_OPEN else close[i]
            # mark the held position to the fill price
            eq += pos * (fill - close[i - 1]) * multiplier
            refused = 0
            if want != pos and (abs(want) > abs(pos) or want * pos < 0):
                # the largest n whose margin fits the equity left after this
                # trade's own costs: n*margin + |n - pos|*unit_cost <= eq, with
                # |n - pos| = n - |pos| (same side) or n + |pos| (flip / from flat)
                unit_cost = commission + slippage * multiplier
                held = abs(pos) if want * pos > 0 else -abs(pos)
                m = margin[i]
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
                cost_i += comm + slip
                t_bar[k] = i
                t_kind[k] = TRADE
                t_qty[k] = qty
                t_price[k] = fill + slippage if qty > 0 else fill - slippage
                t_comm[k] = comm
                t_slip[k] = slip
                t_refused[k] = refused
                k += 1
                pos = want
            elif refused > 0:
                t_bar[k] = i
                t_kind[k] = TRADE
                t_qty[k] = 0
                t_price[k] = fill
                t_comm[k] = 0.0
                t_slip[k] = 0.0
                t_refused[k] = refused
                k += 1
            # mark from the fill to the close
            eq += pos * (close[i] - fill) * multiplier
        if roll[i] and pos != 0:
            # one round trip: close the old contract, open the new, at this close
            comm = 2 * abs(pos) * commission
            slip = 2 * abs(pos) * slippage * multiplier
            eq -= comm + slip
            cost_i += comm + slip
            t_bar[k] = i
            t_kind[k] = ROLL
            t_qty[k] = pos
            t_price[k] = close[i]
            t_comm[k] = comm
            t_slip[k] = slip
            t_refused[k] = 0
            k += 1
        position[i] = pos
        equity[i] = eq
        margin_used[i] = abs(pos) * margin[i]
        costs[i] = cost_i
    return (position, equity, margin_used, costs,
            t_bar[:k], t_kind[:k], t_qty[:k], t_price[:k], t_comm[:k], t_slip[:k], t_refused[:k])
