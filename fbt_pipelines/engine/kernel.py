"""The vectorised futures engine's inner loop (Numba): one pass over the bars.

Only arrays and scalars cross into the kernels; validation and frames live in
:mod:`fbt_pipelines.engine.futures_engine`.

- :func:`backtest_nb` is the one pass every backtest makes: it writes the
  per-bar equity (the output every metric needs) and the trade records, and
  nothing else per bar. It also checks that every price it reads is finite.
  Returns a :class:`KernelResult`. Two loops share the accounting: a lean
  one for market orders only (:func:`_bars_nb`, the common case, kept within
  a few per cent of a bare loop) and one for stops, targets, trailing stops
  and limit entries (:func:`_orders_nb`, which reads each bar's high and low).
- :func:`bar_state_nb` derives the other per-bar columns (position, margin in
  use, costs) from the trade records, only when a caller asks for them.
  Returns a :class:`BarState`.
- :func:`simulate_futures_nb` is both together, for callers that want every
  array at once. Returns a :class:`SimulationResult`.
- :func:`margin_runs_nb` checks per-bar margins and finds where their values
  change: the segments of a ``MarginSchedule`` (for ``run_backtest``).

The results are named tuples (Numba builds and returns them like plain
tuples; read fields by name, ``r.equity``). Codes: ``fill_rule`` is a
:class:`~fbt_pipelines.engine.rules.FillRule`, ``t_kind`` holds
:class:`~fbt_pipelines.engine.rules.TradeKind` values, ``t_reason``
:class:`~fbt_pipelines.engine.rules.TradeReason` values and the ``*_unit``
arguments :class:`~fbt_pipelines.engine.rules.DistanceUnit` values. Pass
``int(rule)``: a member works too, but Numba compiles (and caches) a second
specialisation for the enum type.

Rules (the orders issue, stated in docs/guide.md "Orders and margin"):

- a target decided on bar t's close fills at bar t+1's open (``NEXT_OPEN``)
  or close (``NEXT_CLOSE``); an increase is cut to the whole contracts the
  equity carries at the fill bar's initial margin (refused contracts are
  recorded);
- maintenance margin: at each close, if the equity is below maintenance
  margin x contracts held, a margin call is issued; at the next fill the
  smallest number of contracts is liquidated (fill price with slippage) that
  brings the equity back to at least the initial margin of what is left
  (all of them if needed): one ``MARGIN_CALL`` record per call, with 0
  contracts when the strategy's own order or the prices already restored
  the margin. If the equity at a close is zero or less the account stops:
  what is held is liquidated at the next fill and nothing trades after it;
- stops, targets, trailing stops and limit entries: see :func:`_orders_nb`.

The market-order loop sums the two marks of a holding bar before adding them
to the equity (one dependent addition per bar); the equity can differ from a
mark-by-mark sum in the last bits (1e-11 USD seen on 1e5 USD).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from fbt_pipelines.engine.rules import DistanceUnit, FillRule, TradeKind, TradeReason


class KernelResult(NamedTuple):
    """:func:`backtest_nb`'s outputs: the equity per bar, the trade records
    (one entry per record, bar order), the first non-finite price row and the
    bar whose close stopped the account."""

    equity: np.ndarray     # float64[n]: currency, marked at each bar's close
    t_bar: np.ndarray      # int64[k]: bar index of the record
    t_kind: np.ndarray     # int64[k]: TradeKind code (TRADE or ROLL)
    t_qty: np.ndarray      # int64[k]: signed contracts traded (a roll: the contracts rolled)
    t_price: np.ndarray    # float64[k]: fill price, adjusted points, slippage included
    t_comm: np.ndarray     # float64[k]: commission, currency
    t_slip: np.ndarray     # float64[k]: slippage cost, currency
    t_refused: np.ndarray  # int64[k]: contracts refused for margin
    bad_row: int           # -1, or the first row with a non-finite price the pass reads
    t_reason: np.ndarray   # int64[k]: TradeReason code
    stopped_bar: int       # -1, or the bar whose close found the equity <= 0 (the account stops)


class BarState(NamedTuple):
    """:func:`bar_state_nb`'s per-bar columns."""

    position: np.ndarray     # int64[n]: contracts held at the close
    margin_used: np.ndarray  # float64[n]: |position| x the bar's margin per contract, currency
    costs: np.ndarray        # float64[n]: commission + slippage paid on the bar, currency


class SimulationResult(NamedTuple):
    """:func:`simulate_futures_nb`'s outputs: the per-bar columns, then the
    trade records (as :class:`KernelResult`'s)."""

    position: np.ndarray
    equity: np.ndarray
    margin_used: np.ndarray
    costs: np.ndarray
    t_bar: np.ndarray
    t_kind: np.ndarray
    t_qty: np.ndarray
    t_price: np.ndarray
    t_comm: np.ndarray
    t_slip: np.ndarray
    t_refused: np.ndarray
    t_reason: np.ndarray
    stopped_bar: int


_BLOCK = 4096  # bars per market-order inner-loop call (room for 3 records per bar ensured before each)
_PER_BAR = 3   # records a market-order bar may write: a trade, a margin call, a roll
_ORDER_PER_BAR = 6  # records an orders bar may write (flip close, trade, margin call, limit fill, exit, roll)

_TRADE = int(TradeKind.TRADE)
_ROLL = int(TradeKind.ROLL)
_SIGNAL = int(TradeReason.SIGNAL)
_STOP = int(TradeReason.STOP)
_TARGET = int(TradeReason.TARGET)
_TRAILING = int(TradeReason.TRAILING_STOP)
_LIMIT = int(TradeReason.LIMIT)
_ROLL_R = int(TradeReason.ROLL)
_CALL = int(TradeReason.MARGIN_CALL)
_NONE = int(DistanceUnit.NONE)
_POINTS = int(DistanceUnit.POINTS)
_PERCENT = int(DistanceUnit.PERCENT)
_ATR = int(DistanceUnit.ATR)
_U1 = np.uint64(1)  # (unsigned index arithmetic stays unsigned)


@njit(cache=True, nogil=True)
def _resized(a, size, k):
    """A new array of ``size`` elements whose first ``k`` are ``a``'s.
    (An explicit loop: slice assignment made the kernels ~3x slower to compile.)"""
    out = np.empty(size, dtype=a.dtype)
    for j in range(k):
        out[j] = a[j]
    return out


@njit(cache=True, nogil=True)
def _grow(t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused):
    """Twice the capacity, records kept (amortised O(1) per trade)."""
    cap = 2 * len(t_bar)
    k = len(t_bar)
    return (_resized(t_bar, cap, k), _resized(t_kind, cap, k), _resized(t_reason, cap, k), _resized(t_qty, cap, k),
            _resized(t_price, cap, k), _resized(t_comm, cap, k), _resized(t_slip, cap, k),
            _resized(t_refused, cap, k))


@njit(cache=True, nogil=True)
def _record(t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused, k, bar, kind, reason, qty, price,
            comm, slip, refused):
    """Write trade record ``k`` (bar, kind, reason, contracts, fill price in points,
    commission and slippage in currency, refused contracts); returns ``k + 1``."""
    t_bar[k] = bar
    t_kind[k] = kind
    t_reason[k] = reason
    t_qty[k] = qty
    t_price[k] = price
    t_comm[k] = comm
    t_slip[k] = slip
    t_refused[k] = refused
    return k + 1


#: Half a cent (account currency): margin and equity are compared to the cent, so
#: ``n x margin == equity`` fits although binary floating point may put the equity
#: a few 1e-12 USD under it (1,640.1 - 1,639.9 != 0.2).
MARGIN_TOL = 0.005


@njit(cache=True, nogil=True)
def _affordable(eq, pos, want, m, unit_cost):
    """The contracts of ``want`` the equity carries (an increase, a flip or an
    entry filled at a bar with initial margin ``m`` per contract): the largest
    n with ``n x m + |n - pos| x unit_cost <= eq``; ``|want|`` when ``m`` is 0
    (no margin check). An increase on the same side is never turned into a
    reduction. Sides are compared to the cent (``MARGIN_TOL``): an exact tie
    fits whatever the float noise. Returns (signed contracts to hold, contracts refused)."""
    held = abs(pos) if want * pos > 0 else -abs(pos)
    if m > 0:
        affordable = int(np.floor(max(eq + held * unit_cost + MARGIN_TOL, 0.0) / (m + unit_cost)))
    else:
        affordable = abs(want)
    if abs(want) <= affordable:
        return want, 0
    keep = max(affordable, abs(pos)) if want * pos > 0 else affordable
    return (keep if want > 0 else -keep), abs(want) - keep


@njit(cache=True, nogil=True)
def _liquidation(eq, held, m, unit_cost):
    """Contracts to liquidate on a margin call: the smallest q in [0, held]
    with ``eq - q x unit_cost >= (held - q) x m`` (the equity after the
    liquidation's own costs covers the initial margin ``m`` of what is left),
    ``held`` when no q does. ``eq``: equity marked at the fill price (currency)."""
    eq = eq + MARGIN_TOL  # compare to the cent: an exact tie is no call
    if eq - held * m >= 0.0:
        return 0
    if m <= unit_cost:  # selling does not free more margin than it costs
        return held
    q = int(math.ceil((held * m - eq) / (m - unit_cost)))
    q = min(max(q, 0), held)
    while q > 0 and eq - (q - 1) * unit_cost >= (held - q + 1) * m:  # rounding guards: exact smallest q
        q -= 1
    while q < held and eq - q * unit_cost < (held - q) * m:
        q += 1
    return q


def _make_bars(checked: bool):
    """The market-order loop, with (``checked``) or without the per-bar maintenance test (see
    :func:`_bars_nb`); ``checked`` is a constant of the compiled loop."""

    @njit(cache=True, nogil=True)
    def bars(i0, i1, pos, eq, prev_close, k, chk, call, stopped, seg,
             target, open_, close, fill_px, roll, multiplier, commission, slippage, m_start, m_init, m_maint,
             equity, t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused):
        """Market orders only: bars ``i0 <= i < i1`` of :func:`backtest_nb`, from
        the given state (contracts held, equity, previous close, records written,
        finiteness sum, margin call pending, stop bar, margin segment). The
        record arrays must have room for ``3 x (i1 - i0)`` more records.
        ``fill_px`` is ``open_`` or ``close``: the price of bar i's fills. The
        margins are segments (``m_start``, ``m_init``, ``m_maint``: see
        :func:`backtest_nb`).

        Kept free of per-bar bookkeeping on purpose (measured on 3.5 M bars): a
        record-capacity test on every bar cost ~25 % of the pass, the fill rule
        chosen per bar ~8 %, a finiteness test per price ~8 %. Capacity is
        ensured per block by the caller, the fill rule picks ``fill_px`` once, and
        finiteness is one running sum (``chk``: NaN or inf iff a price is). The
        bars of one call share one margin segment ``seg`` (the caller cuts the
        blocks at segment starts), so the margins cost one comparison per bar and
        no memory traffic: ``eq <= need`` (``need`` = maintenance x contracts
        held, updated when the position changes; NaN when margin calls are off).
        Streaming a per-bar margin array instead cost ~20 %, reading a cold
        per-bar initial margin at each trade ~40 % (cache misses), a per-bar test
        for the next segment ~10 %. Even the one test cost ~15 % (a branch on
        the equity chain): the unchecked loop keeps only the lowest
        ``eq - need`` of the block (a branch-free minimum, ~5 %) and the caller
        redoes the block checked, from the same state, when it is <= 0 (a close
        at or below maintenance: rare). Returns the state and that lowest slack
        (inf for the checked loop).
        """
        unit_cost = commission + slippage * multiplier  # currency per contract per side
        m_cur = m_init[seg]
        mm_cur = m_maint[seg]
        need = mm_cur * abs(pos)
        lowest = np.inf
        for i in range(i0, i1):
            u = np.uint64(i)  # an unsigned index: no negative-index wraparound code on the bar's loads
            c = close[u]
            chk += open_[u] + c
            if i > 0:
                want = target[u - _U1]
                fill = fill_px[u]
                if want == pos and (call == 0 or not checked):  # (the quick loop starts without a call and makes none)
                    # the common bar: hold, marked to the fill price and from it to the close
                    # (one addition to the running equity: the two marks are summed first)
                    eq += pos * (fill - prev_close) * multiplier + pos * (c - fill) * multiplier
                else:
                    # mark the held position to the fill price
                    eq += pos * (fill - prev_close) * multiplier
                    if want != pos and stopped < 0:
                        refused = 0
                        if abs(want) > abs(pos) or want * pos < 0:
                            want, refused = _affordable(eq, pos, want, m_cur, unit_cost)
                        if want != pos:
                            qty = want - pos
                            comm = abs(qty) * commission
                            slip = abs(qty) * slippage * multiplier
                            eq -= comm + slip
                            k = _record(t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused, k,
                                        i, _TRADE, _SIGNAL, qty, fill + slippage if qty > 0 else fill - slippage, comm, slip, refused)
                            pos = want
                        elif refused > 0:  # every wanted contract refused: a record of the refusal only
                            k = _record(t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused, k,
                                        i, _TRADE, _SIGNAL, 0, fill, 0.0, 0.0, refused)
                    if call != 0:
                        held = abs(pos)
                        q = held if stopped >= 0 else _liquidation(eq, held, m_cur, unit_cost)
                        qty = -q if pos > 0 else q
                        comm = q * commission
                        slip = q * slippage * multiplier
                        eq -= comm + slip
                        k = _record(t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused, k,
                                    i, _TRADE, _CALL, qty, fill + slippage if qty > 0 else (fill - slippage if qty < 0 else fill), comm, slip, 0)
                        pos += qty
                        call = 0
                    need = mm_cur * abs(pos)
                    # mark from the fill to the close
                    eq += pos * (c - fill) * multiplier
            if roll[u] and pos != 0:
                # one round trip: close the old contract, open the new, at this close
                comm = 2 * abs(pos) * commission
                slip = 2 * abs(pos) * slippage * multiplier
                eq -= comm + slip
                k = _record(t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused, k,
                            i, _ROLL, _ROLL_R, pos, c, comm, slip, 0)
            if checked:
                if eq <= need:  # below maintenance, or exhausted (need is NaN when margin calls are off)
                    if stopped < 0 and eq <= 0.0:
                        stopped = i
                    if pos != 0 and (eq + MARGIN_TOL < need or stopped >= 0):
                        call = 1
            else:
                slack = eq - need  # the lowest slack tells the caller whether to redo the block checked
                lowest = slack if slack < lowest else lowest
            equity[u] = eq
            prev_close = c
        return pos, eq, prev_close, k, chk, call, stopped, lowest

    return bars


_bars_nb = _make_bars(True)         # per-bar maintenance test
_bars_quick_nb = _make_bars(False)  # lowest (equity - maintenance need) only: redone checked if it is <= 0


@njit(cache=True, nogil=True)
def _distance(unit, value, price, atr_at):
    """An order distance in points: ``value`` points, ``value`` % of
    ``|price|``, or ``value`` x ATR (``atr_at``; NaN while ATR is undefined).
    NaN for ``DistanceUnit.NONE``."""
    if unit == _POINTS:
        return value
    if unit == _PERCENT:
        return abs(price) * value / 100.0
    if unit == _ATR:
        return value * atr_at
    return np.nan


@njit(cache=True, nogil=True)
def _levels(fp, new, d, ro, sl_unit, sl, tp_unit, tp, tr_unit, tr, atr, atr_per_bar):
    """Stop, target, trailing reference and trailing distance of a new position.

    ``new`` contracts entered at ``fp`` (points, slippage included), decided
    at bar ``d``'s close (its ATR when ``atr_per_bar``); ``ro``: adjusted - raw
    price of the held contract (points)."""
    a = atr[d] if atr_per_bar else np.nan
    s = 1.0 if new > 0 else -1.0
    sl_lvl = fp - s * _distance(sl_unit, sl, fp - ro, a)
    tp_lvl = fp + s * _distance(tp_unit, tp, fp - ro, a)
    tr_d = tr / 100.0 if tr_unit == _PERCENT else _distance(tr_unit, tr, fp - ro, a)
    return sl_lvl, tp_lvl, fp, tr_d


@njit(cache=True, nogil=True)
def _order_fill(i, fill, raw, pos, eq, k, call, stopped, blocked, blocked_val, lim_on, lim_px, lim_want, lim_dec,
                sl_lvl, tp_lvl, best, tr_d, m, multiplier, commission, slippage, sl_unit, sl, tp_unit, tp, tr_unit, tr,
                lim_unit, lim, atr, raw_off, close, t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip,
                t_refused):
    """Steps 1 and 4 of :func:`_orders_nb`: the market order and a pending margin call.

    On bar ``i`` at ``fill`` (points; the equity already marked to it): the market order to ``raw`` (the target
    decided at the previous close) or its limit entry, then a pending margin
    call. Called only when something may change (see :func:`_quiet`).
    Returns the new state and whether a position was opened or flipped."""
    unit_cost = commission + slippage * multiplier
    n = len(close)
    atr_per_bar = len(atr) == n
    off_per_bar = len(raw_off) == n
    entered = False
    if stopped < 0:
        want = raw
        if blocked:
            if raw == blocked_val:
                want = 0
            else:
                blocked = False
        if lim_on and lim_want != want:
            lim_on = False  # the wanted position changed: the resting limit is cancelled
        if want != pos:
            opening = want != 0 and (pos == 0 or (want > 0) != (pos > 0))
            if lim_unit != _NONE and opening:
                if pos != 0:  # a flip: close at market, the new side rests as a limit
                    qty = -pos
                    comm = abs(qty) * commission
                    slip = abs(qty) * slippage * multiplier
                    eq -= comm + slip
                    k = _record(t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused, k,
                                i, _TRADE, _SIGNAL, qty, fill + slippage if qty > 0 else fill - slippage, comm, slip, 0)
                    pos = 0
                    sl_lvl = tp_lvl = best = tr_d = np.nan
                if not lim_on:
                    d = i - 1
                    a = atr[d] if atr_per_bar else np.nan
                    off = _distance(lim_unit, lim, close[d] - (raw_off[d] if off_per_bar else 0.0), a)
                    if off == off:  # no limit order while its ATR is undefined
                        lim_px = close[d] - off if want > 0 else close[d] + off
                        lim_want = want
                        lim_dec = d
                        lim_on = True
            else:
                refused = 0
                new = want
                if abs(want) > abs(pos) or want * pos < 0:
                    new, refused = _affordable(eq, pos, want, m, unit_cost)
                if new != pos:
                    qty = new - pos
                    comm = abs(qty) * commission
                    slip = abs(qty) * slippage * multiplier
                    eq -= comm + slip
                    fp = fill + slippage if qty > 0 else fill - slippage
                    k = _record(t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused, k,
                                i, _TRADE, _SIGNAL, qty, fp, comm, slip, refused)
                    if new == 0:
                        sl_lvl = tp_lvl = best = tr_d = np.nan
                    elif pos == 0 or (new > 0) != (pos > 0):  # opened or flipped: new levels
                        entered = True
                        ro = raw_off[i] if off_per_bar else 0.0
                        sl_lvl, tp_lvl, best, tr_d = _levels(fp, new, i - 1, ro, sl_unit, sl, tp_unit, tp,
                                                             tr_unit, tr, atr, atr_per_bar)
                    pos = new
                elif refused > 0:
                    k = _record(t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused, k,
                                i, _TRADE, _SIGNAL, 0, fill, 0.0, 0.0, refused)
    if call != 0:
        held = abs(pos)
        q = held if stopped >= 0 else _liquidation(eq, held, m, unit_cost)
        qty = -q if pos > 0 else q
        comm = q * commission
        slip = q * slippage * multiplier
        eq -= comm + slip
        k = _record(t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused, k,
                    i, _TRADE, _CALL, qty, fill + slippage if qty > 0 else (fill - slippage if qty < 0 else fill),
                    comm, slip, 0)
        pos += qty
        call = 0
        if pos == 0:
            sl_lvl = tp_lvl = best = tr_d = np.nan
    if stopped >= 0:
        lim_on = False
    return pos, eq, k, call, blocked, lim_on, lim_px, lim_want, lim_dec, sl_lvl, tp_lvl, best, tr_d, entered


@njit(cache=True, nogil=True)
def _quiet(pos, call, stopped, blocked, blocked_val, lim_on, lim_want):
    """When :func:`_order_fill` would change nothing, as ``(quiet, expect)``.

    The order step is a no-op iff ``quiet`` and the target decided at the previous
    close equals ``expect`` (no pending call, the account trading; the
    position held, or after a stop's block its blocked value while flat, or
    the resting limit's contracts while flat). Recomputed after every change
    of the state, so the common bar tests one comparison."""
    if stopped >= 0 or call != 0:
        return False, 0
    if blocked:
        return pos == 0 and not lim_on, blocked_val
    if lim_on:
        return pos == 0, lim_want
    return True, pos


@njit(cache=True, nogil=True)
def _limit_fill(i, px, ref, pos, eq, k, lim_want, lim_dec, sl_lvl, tp_lvl, best, tr_d, m, multiplier, commission,
                slippage, sl_unit, sl, tp_unit, tp, tr_unit, tr, atr, raw_off, n, t_bar, t_kind, t_reason, t_qty,
                t_price, t_comm, t_slip, t_refused):
    """Step 2 of :func:`_orders_nb`: the resting limit entry, reached at ``px`` (points).

    On bar ``i`` of ``n``, flat. Returns (contracts, equity, records,
    limit still resting, stop, target, trailing reference, trailing distance)."""
    unit_cost = commission + slippage * multiplier
    eq += pos * (px - ref) * multiplier
    want2, refused = _affordable(eq, pos, lim_want, m, unit_cost)
    lim_on = True
    if want2 != 0:
        qty = want2
        comm = abs(qty) * commission
        slip = abs(qty) * slippage * multiplier
        eq -= comm + slip
        fp = px + slippage if qty > 0 else px - slippage
        k = _record(t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused, k,
                    i, _TRADE, _LIMIT, qty, fp, comm, slip, refused)
        pos = want2
        lim_on = False
        ro = raw_off[i] if len(raw_off) == n else 0.0
        sl_lvl, tp_lvl, best, tr_d = _levels(fp, pos, lim_dec, ro, sl_unit, sl, tp_unit, tp, tr_unit, tr, atr,
                                             len(atr) == n)
    elif refused > 0:  # the limit was reached but no contract is affordable: it keeps resting
        k = _record(t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused, k,
                    i, _TRADE, _LIMIT, 0, px, 0.0, 0.0, refused)
    return pos, eq, k, lim_on, sl_lvl, tp_lvl, best, tr_d


def _make_orders_bars(full: bool, checked: bool):
    """The orders loop of :func:`_orders_nb`, specialised on two flags.

    With (``full``) or without trailing stops and limit entries, with
    (``checked``) or without the per-bar maintenance test; both are constants
    of the compiled loop, so the branches of unused features vanish from it
    (each worth ~13 % of the stop-and-target pass on 3.5 M bars)."""

    @njit(cache=True, nogil=True)
    def orders_bars(i0, i1, si, sf, m, mm, next_open, target, open_, high, low, close, roll, multiplier, commission,
                    slippage, sl_unit, sl, tp_unit, tp, tr_unit, tr, lim_unit, lim, atr, raw_off, equity,
                    t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused):
        """Bars ``i0 <= i < i1`` of :func:`_orders_nb` (rules there).

        All in one margin segment (initial ``m``, maintenance ``mm`` per contract).
        The state lives in ``si`` (int64: contracts, records written, call
        pending, stop bar, blocked, blocked value, limit resting, limit
        contracts, limit's deciding bar) and ``sf`` (float64: equity, previous
        close, finiteness sum, limit price, stop, target, trailing reference,
        trailing distance), read into locals here and written back at the end;
        the record arrays must have room for ``6 x (i1 - i0)`` more records.
        Returns the lowest ``equity - maintenance need`` of the bars (inf when
        ``checked``), as :func:`_bars_nb` does.

        The common bar runs no order code: the fills, a limit entry's fill and
        the levels are in :func:`_order_fill` and :func:`_limit_fill`, called
        when something may change (``quiet``/``expect`` from :func:`_quiet`,
        recomputed after each change: one comparison a bar). Bars are indexed
        unsigned (``u``): with a signed index from ``i0`` Numba's negative-index
        wraparound cost a length load and a select per array read. (Measured on 3.5 M bars with a stop and a
        target: the loop with every feature tested per bar, a per-bar margin
        segment and maintenance test took ~3x a bare stop loop.) A per-bar
        capacity test that may replace the record arrays made the loop ~15x
        slower: Numba then counts references of the arrays on every bar.
        """
        n = len(close)
        tr_pct = tr_unit == _PERCENT
        pos, k, call, stopped = si[0], si[1], si[2], si[3]
        blocked, blocked_val, lim_on, lim_want, lim_dec = si[4] != 0, si[5], si[6] != 0, si[7], si[8]
        eq, prev_close, chk, lim_px = sf[0], sf[1], sf[2], sf[3]
        sl_lvl, tp_lvl, best, tr_d = sf[4], sf[5], sf[6], sf[7]
        lowest = np.inf
        quiet, expect = _quiet(pos, call, stopped, blocked, blocked_val, lim_on, lim_want)
        need = mm * abs(pos)  # maintenance margin of the position (NaN when margin calls are off)
        for i in range(i0, i1):
            u = np.uint64(i)  # an unsigned index: no negative-index wraparound code on the bar's loads
            o = open_[u]
            h = high[u]
            lo = low[u]
            c = close[u]
            chk += o + h + lo + c
            ref = prev_close  # the price the equity is marked at
            entered = False   # a position opened or flipped on this bar: its levels act by the touch rule only
            if i > 0:
                raw = target[u - _U1]
                if next_open:  # 1. at the open: the market order, then a pending margin call
                    eq += pos * (o - ref) * multiplier
                    ref = o
                    if not (quiet and raw == expect):
                        (pos, eq, k, call, blocked, lim_on, lim_px, lim_want, lim_dec, sl_lvl, tp_lvl, best, tr_d,
                         entered) = _order_fill(
                            i, o, raw, pos, eq, k, call, stopped, blocked, blocked_val, lim_on, lim_px, lim_want,
                            lim_dec, sl_lvl, tp_lvl, best, tr_d, m, multiplier, commission, slippage, sl_unit, sl,
                            tp_unit, tp, tr_unit, tr, lim_unit, lim, atr, raw_off, close, t_bar, t_kind, t_reason,
                            t_qty, t_price, t_comm, t_slip, t_refused)
                        quiet, expect = _quiet(pos, call, stopped, blocked, blocked_val, lim_on, lim_want)
                        need = mm * abs(pos)
                # ---- 2. a resting limit entry, 3. stops and targets (between the open and the close)
                if full and lim_on and stopped < 0 and pos == 0:
                    px = np.nan
                    if lim_want > 0:
                        if o <= lim_px:
                            px = o
                        elif lo <= lim_px:
                            px = lim_px
                    else:
                        if o >= lim_px:
                            px = o
                        elif h >= lim_px:
                            px = lim_px
                    if px == px:  # filled (not NaN)
                        pos, eq, k, lim_on, sl_lvl, tp_lvl, best, tr_d = _limit_fill(
                            i, px, ref, pos, eq, k, lim_want, lim_dec, sl_lvl, tp_lvl, best, tr_d, m, multiplier,
                            commission, slippage, sl_unit, sl, tp_unit, tp, tr_unit, tr, atr, raw_off, n, t_bar,
                            t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused)
                        ref = px
                        if not lim_on:  # filled
                            entered = True
                        quiet, expect = _quiet(pos, call, stopped, blocked, blocked_val, lim_on, lim_want)
                        need = mm * abs(pos)
                if pos != 0 and stopped < 0:
                    long_ = pos > 0
                    stop = sl_lvl
                    why = _STOP
                    if full and tr_d == tr_d:  # a trailing stop
                        ro = (raw_off[u] if len(raw_off) == n else 0.0) if tr_pct else 0.0
                        if long_:
                            tl = best - abs(best - ro) * tr_d if tr_pct else best - tr_d
                            if not (stop >= tl):  # stop is NaN or looser
                                stop = tl
                                why = _TRAILING
                        else:
                            tl = best + abs(best - ro) * tr_d if tr_pct else best + tr_d
                            if not (stop <= tl):
                                stop = tl
                                why = _TRAILING
                    px = np.nan
                    if long_:
                        if not entered and o <= stop:
                            px = o
                        elif not entered and o >= tp_lvl:
                            px = o
                            why = _TARGET
                        elif lo <= stop:
                            px = stop
                        elif h >= tp_lvl:
                            px = tp_lvl
                            why = _TARGET
                    else:
                        if not entered and o >= stop:
                            px = o
                        elif not entered and o <= tp_lvl:
                            px = o
                            why = _TARGET
                        elif h >= stop:
                            px = stop
                        elif lo <= tp_lvl:
                            px = tp_lvl
                            why = _TARGET
                    if px == px:
                        eq += pos * (px - ref) * multiplier
                        ref = px
                        qty = -pos
                        comm = abs(qty) * commission
                        slip = abs(qty) * slippage * multiplier
                        eq -= comm + slip
                        k = _record(t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused, k,
                                    i, _TRADE, why, qty, px + slippage if qty > 0 else px - slippage, comm, slip, 0)
                        pos = 0
                        sl_lvl = tp_lvl = best = tr_d = np.nan
                        blocked = True
                        blocked_val = raw
                        quiet, expect = _quiet(pos, call, stopped, blocked, blocked_val, lim_on, lim_want)
                        need = mm * abs(pos)
                if not next_open:  # 4. at the close: the market order, then a pending margin call
                    eq += pos * (c - ref) * multiplier
                    ref = c
                    if not (quiet and raw == expect):
                        (pos, eq, k, call, blocked, lim_on, lim_px, lim_want, lim_dec, sl_lvl, tp_lvl, best, tr_d,
                         entered) = _order_fill(
                            i, c, raw, pos, eq, k, call, stopped, blocked, blocked_val, lim_on, lim_px, lim_want,
                            lim_dec, sl_lvl, tp_lvl, best, tr_d, m, multiplier, commission, slippage, sl_unit, sl,
                            tp_unit, tp, tr_unit, tr, lim_unit, lim, atr, raw_off, close, t_bar, t_kind, t_reason,
                            t_qty, t_price, t_comm, t_slip, t_refused)
                        quiet, expect = _quiet(pos, call, stopped, blocked, blocked_val, lim_on, lim_want)
                        need = mm * abs(pos)
                # ---- 5. mark to the close; the trailing reference follows the best close
                eq += pos * (c - ref) * multiplier
                if full:
                    if pos > 0 and best == best and c > best:
                        best = c
                    elif pos < 0 and best == best and c < best:
                        best = c
            if roll[u] and pos != 0:
                comm = 2 * abs(pos) * commission
                slip = 2 * abs(pos) * slippage * multiplier
                eq -= comm + slip
                k = _record(t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused, k,
                            i, _ROLL, _ROLL_R, pos, c, comm, slip, 0)
            if checked:
                if eq <= need:  # below maintenance, or exhausted (need is NaN when margin calls are off)
                    if stopped < 0 and eq <= 0.0:
                        stopped = i
                    if pos != 0 and (eq + MARGIN_TOL < need or stopped >= 0):
                        call = 1
                    quiet, expect = _quiet(pos, call, stopped, blocked, blocked_val, lim_on, lim_want)
            else:
                slack = eq - need  # the lowest slack tells the caller whether to redo the block checked
                lowest = slack if slack < lowest else lowest
            equity[u] = eq
            prev_close = c
        si[0], si[1], si[2], si[3] = pos, k, call, stopped
        si[4], si[5], si[6] = 1 if blocked else 0, blocked_val, 1 if lim_on else 0
        si[7], si[8] = lim_want, lim_dec
        sf[0], sf[1], sf[2], sf[3] = eq, prev_close, chk, lim_px
        sf[4], sf[5], sf[6], sf[7] = sl_lvl, tp_lvl, best, tr_d
        return lowest

    return orders_bars


# the orders loops (full: trailing stops or limit entries); the fill rule is a per-call flag (constant: ~4 %
# faster on 3.5 M bars, but twice the loops to compile)
_orders_bars_nb = _make_orders_bars(False, True)
_orders_bars_quick_nb = _make_orders_bars(False, False)
_orders_full_nb = _make_orders_bars(True, True)
_orders_full_quick_nb = _make_orders_bars(True, False)


@njit(cache=True, nogil=True)
def _orders_nb(target, open_, high, low, close, roll, multiplier, commission, slippage, m_start, m_init, m_maint,
               capital, fill_rule, sl_unit, sl, tp_unit, tp, tr_unit, tr, lim_unit, lim, atr, raw_off, equity):
    """The pass with stop-loss, take-profit, trailing-stop and limit-entry
    orders (distances ``sl``, ``tp``, ``tr``, ``lim`` in their ``*_unit``;
    ``DistanceUnit.NONE``: no such order). ``atr``: ATR(14) in points known at
    each bar's close (float64[n], or float64[1] when no distance is in ATR).

    On bar i (``want`` = target[i-1], the position decided at the previous close):

    1. with ``NEXT_OPEN``, at the open: the market order to ``want`` (an
       increase margin-capped as always), then a pending margin call;
    2. a resting limit entry (buy: fills at the open when the bar opens at or
       below the limit, else at the limit when the low reaches it; sell: the
       mirror image);
    3. the stop, trailing stop and target of the position held, if any: a bar
       that opens beyond a level that was live before it exits at the open
       (a gap); otherwise a low (long; high for a short) at or through the
       stop exits at the stop, a high (long) at or through the target at the
       target; both touched: the stop. A position entered on this bar (at its
       open, or by a limit inside it) has its levels live from its fill on
       for the rest of the bar, by the touch rule. Stop and trailing stop
       together: the tighter one acts (``TRAILING_STOP`` when it is the
       trailing level);
    4. with ``NEXT_CLOSE``, at the close: the market order, then a pending
       margin call;
    5. the trailing reference follows the best close (highest for a long,
       lowest for a short) and acts from the next bar; rolls; the
       maintenance and account checks.

    Levels are set from the entry fill price (slippage included) when a
    position opens or flips side, and kept while it only changes size: stop
    ``entry -/+ distance``, target ``entry +/- distance``, trailing reference
    the entry price then the best close, trailing level ``reference -/+
    distance`` (a percentage trailing distance is of the reference). A
    distance in % is of the entry price; prices in % are RAW prices of the
    held contract (adjusted price - ``raw_off``), so a % level does not move
    when later rolls change the Panama offset; in ATR, ATR(14) of the bar whose
    close decided the entry (no level while ATR is undefined). After a stop,
    trailing-stop or target exit the position stays flat until the wanted
    position differs from the one wanted when it exited.

    Limit entries (``lim_unit`` not NONE): a market order that would open a
    position or flip side becomes a limit order (a flip first closes at market)
    at ``close[d] -/+ distance`` (buy/sell; ``d`` the deciding bar, % of
    raw ``close[d]``, ATR of bar d), placed when a market order would fill
    (``NEXT_OPEN``: checked from that open; ``NEXT_CLOSE``: from the next
    bar) and resting until filled or until the wanted position changes.
    Exits and size changes stay market orders.

    Returns (equity is written in place) the record arrays (full capacity),
    the record count, the finiteness sum and the stop bar.
    """
    n = len(close)
    cap = _ORDER_PER_BAR * min(n, _BLOCK) + _ORDER_PER_BAR
    t_bar = np.empty(cap, dtype=np.int64)
    t_kind = np.empty(cap, dtype=np.int64)
    t_reason = np.empty(cap, dtype=np.int64)
    t_qty = np.empty(cap, dtype=np.int64)
    t_price = np.empty(cap)
    t_comm = np.empty(cap)
    t_slip = np.empty(cap)
    t_refused = np.empty(cap, dtype=np.int64)
    si = np.zeros(9, dtype=np.int64)
    si[3] = -1  # no stop bar
    sf = np.array([capital, 0.0, 0.0, 0.0, np.nan, np.nan, np.nan, np.nan])
    si0 = np.empty(9, dtype=np.int64)  # the state at a block's start, for a checked redo
    sf0 = np.empty(8)
    next_open = fill_rule == FillRule.NEXT_OPEN
    full = tr_unit != _NONE or lim_unit != _NONE  # trailing stops or limit entries: the full loop
    calls_on = not np.isnan(m_maint[0])  # maintenance margins given
    n_seg = len(m_start)
    seg = 0
    i0 = np.int64(0)  # (a literal 0 would make Numba compile the loops twice: for Literal[int](0), then int64)
    while i0 < n:
        while seg + 1 < n_seg and m_start[seg + 1] <= i0:
            seg += 1
        seg_end = m_start[seg + 1] if seg + 1 < n_seg else n
        i1 = min(i0 + _BLOCK, n, seg_end)  # a block stays inside one margin segment
        while len(t_bar) - si[1] < _ORDER_PER_BAR * (i1 - i0):
            t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused = _grow(
                t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused)
        args = (i0, i1, si, sf, m_init[seg], m_maint[seg], next_open, target, open_, high, low, close, roll, multiplier,
                commission, slippage, sl_unit, sl, tp_unit, tp, tr_unit, tr, lim_unit, lim, atr, raw_off, equity,
                t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused)
        redo = True
        if si[2] == 0:  # no call pending: optimistic, no per-bar test; redone checked if some close may need one
            for j in range(9):  # (loops: slice assignment compiles shape-error formatting, ~2 s)
                si0[j] = si[j]
            for j in range(8):
                sf0[j] = sf[j]
            lowest = _orders_full_quick_nb(*args) if full else _orders_bars_quick_nb(*args)
            redo = calls_on and not (lowest > 0.0)
            if redo:
                for j in range(9):
                    si[j] = si0[j]
                for j in range(8):
                    sf[j] = sf0[j]
        if redo:
            if full:
                _orders_full_nb(*args)
            else:
                _orders_bars_nb(*args)
        i0 = i1
    return t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused, si[1], sf[2], si[3]


@njit(cache=True, nogil=True)
def backtest_nb(
    target: np.ndarray,      # int64[n]: contracts wanted, decided at bar i's close
    open_: np.ndarray,       # float64[n]: back-adjusted open (points)
    high: np.ndarray,        # float64[n]: back-adjusted high (points; read only with stop/target/trailing/limit orders)
    low: np.ndarray,         # float64[n]: back-adjusted low (points; idem)
    close: np.ndarray,       # float64[n]: back-adjusted close (points)
    roll: np.ndarray,        # bool[n]: the held contract is switched at bar i's close
    multiplier: float,       # currency per point
    commission: float,       # currency per contract per side
    slippage: float,         # points per contract per side (ticks x tick size)
    m_start: np.ndarray,     # int64[k]: first bar of each margin segment (m_start[0] = 0, increasing)
    m_init: np.ndarray,      # float64[k]: initial margin per contract of each segment (currency)
    m_maint: np.ndarray,     # float64[k]: maintenance margin per contract (currency); NaN: no margin calls
    capital: float,          # starting equity (currency)
    fill_rule: int,          # a FillRule code: int(FillRule.NEXT_OPEN) or int(FillRule.NEXT_CLOSE)
    sl_unit: int,            # DistanceUnit code of the stop-loss (0: none)
    sl: float,               # its distance (points, %, or ATR multiples)
    tp_unit: int,            # DistanceUnit code of the take-profit
    tp: float,
    tr_unit: int,            # DistanceUnit code of the trailing stop
    tr: float,
    lim_unit: int,           # DistanceUnit code of the limit-entry offset (0: market entries)
    lim: float,
    atr: np.ndarray,         # float64[n]: ATR(14) in points at each close (ATR units), else float64[1]
    raw_off=None,            # float64[n]: adjusted - raw price of the held contract (points); % distances
                             # are of raw prices. None or float64[1]: prices are raw (no adjustment)
):
    """Simulate whole-contract futures positions; one pass, per-bar equity only.

    Margins are segments (a :class:`~fbt_pipelines.futures.margin.MarginSchedule`'s
    arrays): bar i is in the last segment j with ``m_start[j] <= i``. A trade
    filled on bar i is margin-checked against that segment's initial margin;
    held contracts are reduced only by a margin call (see the module
    docstring). Returns a :class:`KernelResult`:

    - ``equity``: float64[n], currency, marked at each bar's close;
    - trade records ``t_bar, t_kind, t_qty, t_price, t_comm, t_slip,
      t_refused, t_reason`` (bar index, :class:`TradeKind` code, signed
      contracts, fill price in adjusted points incl. slippage, commission and
      slippage in currency, contracts refused for margin,
      :class:`TradeReason` code), in bar order;
    - ``bad_row``: -1, or the first row whose open or close (and, with
      orders, high or low) is not finite (then the other outputs are
      meaningless);
    - ``stopped_bar``: -1, or the bar whose close found the equity at or
      below zero (the account stops trading; needs maintenance margins).
    """
    n = len(close)
    equity = np.empty(n)
    if sl_unit != 0 or tp_unit != 0 or tr_unit != 0 or lim_unit != 0:
        if raw_off is None:
            off = np.zeros(1)
        else:
            off = raw_off
        t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused, k, chk, stopped = _orders_nb(
            target, open_, high, low, close, roll, multiplier, commission, slippage, m_start, m_init, m_maint,
            capital, fill_rule, sl_unit, sl, tp_unit, tp, tr_unit, tr, lim_unit, lim, atr, off, equity)
        finite_cols = 4
    else:
        cap = _PER_BAR * min(n, _BLOCK) + _PER_BAR  # room for the first block; doubled when a block might not fit
        t_bar = np.empty(cap, dtype=np.int64)
        t_kind = np.empty(cap, dtype=np.int64)
        t_reason = np.empty(cap, dtype=np.int64)
        t_qty = np.empty(cap, dtype=np.int64)
        t_price = np.empty(cap)
        t_comm = np.empty(cap)
        t_slip = np.empty(cap)
        t_refused = np.empty(cap, dtype=np.int64)
        fill_px = open_ if fill_rule == FillRule.NEXT_OPEN else close  # the price of bar i's fills
        # (np.int64: literal ints would make Numba compile the loops twice, for Literal[int] then int64)
        zero = np.int64(0)
        pos, eq, prev_close, k, chk, call, stopped = zero, capital, 0.0, zero, 0.0, zero, zero - 1
        n_seg = len(m_start)
        calls_on = not np.isnan(m_maint[0])  # maintenance margins given
        seg = 0
        i0 = zero
        while i0 < n:
            while seg + 1 < n_seg and m_start[seg + 1] <= i0:
                seg += 1
            seg_end = m_start[seg + 1] if seg + 1 < n_seg else n
            i1 = min(i0 + _BLOCK, n, seg_end)  # a block stays inside one margin segment
            while len(t_bar) - k < _PER_BAR * (i1 - i0):
                t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused = _grow(
                    t_bar, t_kind, t_reason, t_qty, t_price, t_comm, t_slip, t_refused)
            if call == 0:  # optimistic: no per-bar test; redone checked if some close may need one
                out = _bars_quick_nb(
                    i0, i1, pos, eq, prev_close, k, chk, call, stopped, seg, target, open_, close, fill_px, roll,
                    multiplier, commission, slippage, m_start, m_init, m_maint, equity, t_bar, t_kind, t_reason,
                    t_qty, t_price, t_comm, t_slip, t_refused)
                redo = calls_on and not (out[7] > 0.0)
            else:
                redo = True
            if redo:
                out = _bars_nb(
                    i0, i1, pos, eq, prev_close, k, chk, call, stopped, seg, target, open_, close, fill_px, roll,
                    multiplier, commission, slippage, m_start, m_init, m_maint, equity, t_bar, t_kind, t_reason,
                    t_qty, t_price, t_comm, t_slip, t_refused)
            pos, eq, prev_close, k, chk, call, stopped = out[0], out[1], out[2], out[3], out[4], out[5], out[6]
            i0 = i1
        finite_cols = 2
    bad_row = -1
    if not np.isfinite(chk):  # some price is NaN or inf (or the sum overflowed: then none is)
        for i in range(n):
            if not (np.isfinite(open_[i]) and np.isfinite(close[i])):
                bad_row = i
                break
            if finite_cols == 4 and not (np.isfinite(high[i]) and np.isfinite(low[i])):
                bad_row = i
                break
    return KernelResult(equity, _resized(t_bar, k, k), _resized(t_kind, k, k), _resized(t_qty, k, k),
                        _resized(t_price, k, k), _resized(t_comm, k, k), _resized(t_slip, k, k),
                        _resized(t_refused, k, k), bad_row, _resized(t_reason, k, k), stopped)


_RUN_CHUNK = 4096  # bars per chunk of :func:`margin_runs_nb`'s counting pass


@njit(cache=True, nogil=True)
def _runs_chunk(x, y, lo, hi, limit):
    """Run starts and bad values among bars ``lo <= i < hi`` (``lo >= 1``).

    How many bars start a new run of equal (``x``, ``y``), and whether some value is NaN, < 0 or > ``limit``.
    (Written to vectorise: no early exit, no store.)"""
    count = 0
    bad = False
    for i in range(lo, hi):
        u = np.uint64(i)  # unsigned: no wraparound code, which kept the loop from vectorising (7x slower)
        a = x[u]
        b = y[u]
        bad |= (a < 0.0) | (a > limit) | (a != a) | (b < 0.0) | (b > limit) | (b != b)
        count += (a != x[u - _U1]) | (b != y[u - _U1])
    return count, bad


@njit(cache=True, nogil=True)
def margin_runs_nb(initial, maintenance, n):
    """The first bar of each run of bars with equal margins (a schedule's starts).

    For a :class:`~fbt_pipelines.futures.margin.MarginSchedule` (float64 currency per contract: ``initial`` and ``maintenance`` float64[n],
    or float64[1] for the same value on every bar; ``maintenance`` float64[0]:
    none). Returns int64[k] (``starts[0] = 0``), or int64[0] when some value is
    NaN, infinite, negative or above ``DBL_MAX / (2 n)`` (a sum of them could
    overflow): the caller's exact checks then decide.

    Two passes: per chunk of bars, a vectorised count of run starts with the
    value test, then a scan of the chunks that hold a start (3.5 M bars with a
    monthly history: ~2 ms, where numpy's validation and ``!=`` arrays took ~7)."""
    limit = 1.7976931348623157e308 / (2.0 * max(n, 1))
    x = initial if len(initial) == n else maintenance
    y = maintenance if len(maintenance) == n else x
    for a in (initial[0], maintenance[0] if len(maintenance) > 0 else 0.0):
        if not (0.0 <= a <= limit):
            return np.zeros(0, dtype=np.int64)
    if len(x) != n or n <= 1:  # no per-bar array (or one bar): one run
        return np.zeros(1, dtype=np.int64)
    n_chunks = (n - 2) // _RUN_CHUNK + 1
    counts = np.empty(n_chunks, dtype=np.int64)
    total = 1
    for c in range(n_chunks):
        lo = 1 + c * _RUN_CHUNK
        count, bad = _runs_chunk(x, y, lo, min(lo + _RUN_CHUNK, n), limit)
        if bad:
            return np.zeros(0, dtype=np.int64)
        counts[c] = count
        total += count
    starts = np.empty(total, dtype=np.int64)
    starts[0] = 0
    k = 1
    for c in range(n_chunks):
        if counts[c] > 0:
            lo = 1 + c * _RUN_CHUNK
            for i in range(lo, min(lo + _RUN_CHUNK, n)):
                if (x[i] != x[i - 1]) | (y[i] != y[i - 1]):
                    starts[k] = i
                    k += 1
    return starts


@njit(cache=True, nogil=True)
def bar_state_nb(n, t_bar, t_kind, t_qty, t_comm, t_slip, m_start, m_init):
    """Per-bar position (contracts at the close), margin in use (currency:
    |position| x the bar's initial margin per contract) and costs (commission
    + slippage, currency) from :func:`backtest_nb`'s trade records (bar
    order), as a :class:`BarState`. Margins as segments (``m_start``,
    ``m_init``: see :func:`backtest_nb`)."""
    position = np.empty(n, dtype=np.int64)
    margin_used = np.empty(n)
    costs = np.empty(n)
    pos = 0
    j = 0
    seg = 0
    n_seg = len(m_start)
    n_rec = len(t_bar)
    for i in range(n):
        while seg + 1 < n_seg and m_start[seg + 1] <= i:
            seg += 1
        cost_i = 0.0
        while j < n_rec and t_bar[j] == i:
            if t_kind[j] == TradeKind.TRADE:
                pos += t_qty[j]
            cost_i += t_comm[j] + t_slip[j]
            j += 1
        position[i] = pos
        margin_used[i] = abs(pos) * m_init[seg]
        costs[i] = cost_i
    return BarState(position, margin_used, costs)


@njit(cache=True, nogil=True)
def simulate_futures_nb(target, open_, high, low, close, roll, multiplier, commission, slippage, m_start, m_init,
                        m_maint, capital, fill_rule, sl_unit, sl, tp_unit, tp, tr_unit, tr, lim_unit, lim, atr,
                        raw_off=None):
    """:func:`backtest_nb` plus :func:`bar_state_nb`: per-bar position, equity,
    margin in use, costs, and the trade records, as a
    :class:`SimulationResult`.

    Arguments as :func:`backtest_nb`. Raises ``ValueError`` on a non-finite
    price.
    """
    r = backtest_nb(target, open_, high, low, close, roll, multiplier, commission, slippage, m_start, m_init, m_maint,
                    capital, fill_rule, sl_unit, sl, tp_unit, tp, tr_unit, tr, lim_unit, lim, atr, raw_off)
    if r.bad_row >= 0:
        raise ValueError("non-finite price")
    s = bar_state_nb(len(close), r.t_bar, r.t_kind, r.t_qty, r.t_comm, r.t_slip, m_start, m_init)
    return SimulationResult(s.position, r.equity, s.margin_used, s.costs, r.t_bar, r.t_kind, r.t_qty, r.t_price,
                            r.t_comm, r.t_slip, r.t_refused, r.t_reason, r.stopped_bar)
