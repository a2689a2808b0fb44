"""The kernel against a reference account written from the orders rules.

:func:`reference` is a plain-Python broker statement written from the rules
in docs/guide.md ("Orders and margin"), in another style than the kernel: a
cash ledger (equity = cash + contracts x price x multiplier; a fill moves
``contracts x fill price x multiplier`` and the commission out of cash, the
slippage being in the fill price), brute-force searches for the contracts
the initial margin carries and for the smallest margin-call liquidation,
and each intrabar event priced on its own. It shares no code with fbt
(NumPy only). Compared on random markets with gaps, rolls, margins that bind
and calls that happen, for both fill rules and every kind of order: equity
at each close (1e-6 USD), every record (bar, kind, reason, contracts, price,
costs, refused) and the stop bar.

A second test checks that the market-order loop and the orders loop (stops
so far away that they never act) give the same result, margin calls
included: the two loops of the kernel are one set of rules.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fbt_pipelines.engine.kernel import backtest_nb
from fbt_pipelines.engine.rules import DistanceUnit, FillRule, TradeKind, TradeReason
from fbt_pipelines.futures.margin import MarginSchedule

MULT, COMM, SLIP = 50.0, 2.10, 0.25  # ES: USD per point, USD per contract per side, points per side
R = TradeReason


def segments(margin, maint):
    """The kernel's margin arguments: per-bar arrays as segments."""
    s = MarginSchedule.from_per_bar(margin, maint)
    return s.starts, s.initial, s.maintenance


def dist(unit, value, price, atr):
    """Distance in points of an order (NaN: none)."""
    if unit == DistanceUnit.POINTS:
        return value
    if unit == DistanceUnit.PERCENT:
        return abs(price) * value / 100
    if unit == DistanceUnit.ATR:
        return value * atr
    return math.nan


def reference(target, o, h, lo, c, roll, margin, maint, capital, fill, sl=(0, 0.0), tp=(0, 0.0), tr=(0, 0.0),
              lim=(0, 0.0), atr=None):
    """Equity per close, records (bar, kind, reason, qty, price, comm, slip, refused) and the stop bar."""
    n = len(c)
    cash, pos = capital, 0
    rec = []
    eqs = []
    call, stopped = False, -1
    blocked, blocked_val = False, 0
    limit = None  # (want, price, deciding bar)
    lv = None     # dict of levels of the held position

    def equity(px):
        return cash + pos * px * MULT

    def book(i, qty, px, reason, refused=0, kind=TradeKind.TRADE):
        nonlocal cash, pos
        fpx = px + SLIP if qty > 0 else (px - SLIP if qty < 0 else px)
        cash -= qty * fpx * MULT + abs(qty) * COMM
        pos += qty
        rec.append((i, int(kind), int(reason), qty, fpx, abs(qty) * COMM, abs(qty) * SLIP * MULT, refused))
        return fpx

    def carried(i, px, want):
        """Contracts of ``want`` the initial margin carries at ``px`` (brute force) and the refused ones."""
        m = margin[i]
        if m <= 0:
            return want, 0
        side = 1 if want > 0 else -1
        floor_n = abs(pos) if pos * want > 0 else 0
        for k in range(abs(want), floor_n - 1, -1):
            after = equity(px) - abs(side * k - pos) * (COMM + SLIP * MULT)
            if after >= k * m or k == floor_n:
                return side * k, abs(want) - k
        raise AssertionError

    def levels(fpx, d):
        s = 1 if pos > 0 else -1
        a = atr[d] if atr is not None else math.nan
        return {"sl": fpx - s * dist(*sl, fpx, a), "tp": fpx + s * dist(*tp, fpx, a), "best": fpx,
                "tr": (tr[1] / 100 if tr[0] == DistanceUnit.PERCENT else dist(*tr, fpx, a))}

    def market(i, px, raw):
        """The fill of the fill rule at price px: the strategy's order, then a margin call."""
        nonlocal blocked, limit, lv, call
        entered = False
        if stopped < 0:
            want = raw
            if blocked:
                if raw == blocked_val:
                    want = 0
                else:
                    blocked = False
            if limit is not None and limit[0] != want:
                limit = None
            if want != pos:
                opening = want != 0 and (pos == 0 or (want > 0) != (pos > 0))
                if lim[0] and opening:
                    if pos != 0:
                        book(i, -pos, px, R.SIGNAL)
                        lv = None
                    if limit is None:
                        d = i - 1
                        off = dist(*lim, c[d], atr[d] if atr is not None else math.nan)
                        if not math.isnan(off):
                            limit = (want, c[d] - off if want > 0 else c[d] + off, d)
                else:
                    new, refused = want, 0
                    if abs(want) > abs(pos) or want * pos < 0:
                        new, refused = carried(i, px, want)
                    if new != pos:
                        was = pos
                        fpx = book(i, new - pos, px, R.SIGNAL, refused)
                        if new == 0:
                            lv = None
                        elif was == 0 or (new > 0) != (was > 0):
                            lv = levels(fpx, i - 1)
                            entered = True
                    elif refused:
                        rec.append((i, int(TradeKind.TRADE), int(R.SIGNAL), 0, px, 0.0, 0.0, refused))
        if call:
            held = abs(pos)
            q = held
            if stopped < 0:
                m = margin[i]
                q = next((q for q in range(held + 1)
                          if equity(px) - q * (COMM + SLIP * MULT) >= (held - q) * m), held)
            book(i, -q if pos > 0 else q, px, R.MARGIN_CALL)
            call = False
            if pos == 0:
                lv = None
        return entered

    for i in range(n):
        entered = False
        if i > 0:
            raw = int(target[i - 1])
            if fill == FillRule.NEXT_OPEN:
                entered = market(i, o[i], raw)
            # a resting limit entry
            if limit is not None and stopped < 0 and pos == 0:
                want, lp, d = limit
                px = None
                if want > 0:
                    px = o[i] if o[i] <= lp else (lp if lo[i] <= lp else None)
                else:
                    px = o[i] if o[i] >= lp else (lp if h[i] >= lp else None)
                if px is not None:
                    new, refused = carried(i, px, want)
                    if new != 0:
                        fpx = book(i, new, px, R.LIMIT, refused)
                        lv = levels(fpx, d)
                        limit = None
                        entered = True
                    else:
                        rec.append((i, int(TradeKind.TRADE), int(R.LIMIT), 0, px, 0.0, 0.0, refused))
            # stop, trailing stop, target
            if pos != 0 and stopped < 0 and lv is not None:
                long_ = pos > 0
                stop, why = lv["sl"], R.STOP
                if not math.isnan(lv["tr"]):
                    tl = (lv["best"] - (abs(lv["best"]) * lv["tr"] if tr[0] == DistanceUnit.PERCENT else lv["tr"])
                          if long_ else
                          lv["best"] + (abs(lv["best"]) * lv["tr"] if tr[0] == DistanceUnit.PERCENT else lv["tr"]))
                    if math.isnan(stop) or (tl > stop if long_ else tl < stop):
                        stop, why = tl, R.TRAILING_STOP
                tgt = lv["tp"]
                beyond = (lambda x, lvl: x <= lvl) if long_ else (lambda x, lvl: x >= lvl)
                reach_stop = lo[i] if long_ else h[i]
                reach_tgt = h[i] if long_ else lo[i]
                px = None
                if not entered and beyond(o[i], stop):
                    px = o[i]
                elif not entered and not math.isnan(tgt) and beyond(tgt, o[i]):
                    px, why = o[i], R.TARGET
                elif beyond(reach_stop, stop):
                    px = stop
                elif not math.isnan(tgt) and beyond(tgt, reach_tgt):
                    px, why = tgt, R.TARGET
                if px is not None:
                    book(i, -pos, px, why)
                    lv = None
                    blocked, blocked_val = True, raw
            if fill == FillRule.NEXT_CLOSE:
                market(i, c[i], raw)
            if lv is not None and pos != 0:
                lv["best"] = max(lv["best"], c[i]) if pos > 0 else min(lv["best"], c[i])
        if roll[i] and pos != 0:
            cash -= 2 * abs(pos) * (COMM + SLIP * MULT)
            rec.append((i, int(TradeKind.ROLL), int(R.ROLL), pos, c[i], 2 * abs(pos) * COMM,
                        2 * abs(pos) * SLIP * MULT, 0))
        e = equity(c[i])
        if maint is not None:
            if stopped < 0 and e <= 0:
                stopped = i
            if pos != 0 and (e < maint[i] * abs(pos) or stopped >= 0):
                call = True
        if stopped >= 0:
            limit = None
        eqs.append(e)
    return np.array(eqs), rec, stopped


def market(n: int, seed: int):
    """Random ES-like bars (gaps now and then), rolls, held targets in [-4, 4]."""
    rng = np.random.default_rng(seed)
    c = 4000 + np.cumsum(rng.normal(0, 8, n))
    gap = rng.normal(0, 3, n) + np.where(rng.random(n) < 0.05, rng.normal(0, 40, n), 0)
    o = np.r_[c[0], c[:-1]] + gap
    wide = np.where(rng.random(n) < 0.08, 60.0, 6.0)  # some bars wide enough to touch a stop and a target
    h = np.maximum(o, c) + np.abs(rng.normal(0, wide, n))
    lo = np.minimum(o, c) - np.abs(rng.normal(0, wide, n))
    o, h, lo, c = (np.round(x * 4) / 4 for x in (o, h, lo, c))
    roll = rng.random(n) < 0.03
    hold = int(rng.integers(1, 8))
    target = np.repeat(rng.integers(-4, 5, n // hold + 1), hold)[:n].astype(np.int64)
    margin = rng.choice([0.0, 6_000.0, 13_200.0], n, p=[0.1, 0.3, 0.6])
    maint = margin * rng.choice([0.8, 0.9, 1.0])
    tr_range = np.maximum(h, np.r_[c[0], c[:-1]]) - np.minimum(lo, np.r_[c[0], c[:-1]])
    atr = np.full(n, np.nan)
    if n > 14:  # Wilder's ATR(14), as the engine computes it (NaN before bar 14)
        atr[14] = tr_range[1:15].mean()
        for i in range(15, n):
            atr[i] = atr[i - 1] + (tr_range[i] - atr[i - 1]) / 14
    return target, o, h, lo, c, roll, margin, maint, atr


ORDERS = [
    # (stop-loss, take-profit, trailing stop, limit offset) as (DistanceUnit, value)
    ((1, 30.0), (1, 60.0), (0, 0.0), (0, 0.0)),
    ((2, 1.0), (2, 2.0), (0, 0.0), (0, 0.0)),
    ((0, 0.0), (0, 0.0), (1, 25.0), (0, 0.0)),
    ((1, 40.0), (0, 0.0), (2, 0.5), (0, 0.0)),
    ((3, 2.0), (3, 4.0), (3, 3.0), (0, 0.0)),
    ((0, 0.0), (0, 0.0), (0, 0.0), (1, 5.0)),
    ((1, 20.0), (1, 50.0), (1, 30.0), (2, 0.2)),
    ((3, 1.5), (0, 0.0), (0, 0.0), (3, 0.5)),
    ((0, 0.0), (0, 0.0), (0, 0.0), (0, 0.0)),  # market orders only
]


@pytest.mark.parametrize("orders", ORDERS, ids=[f"orders{k}" for k in range(len(ORDERS))])
@pytest.mark.parametrize("fill", [FillRule.NEXT_OPEN, FillRule.NEXT_CLOSE], ids=["next_open", "next_close"])
@pytest.mark.parametrize("seed, capital", [(1, 1e6), (2, 60_000.0), (3, 30_000.0), (4, 15_000.0)])
def test_kernel_equals_the_reference_account(orders, fill, seed: int, capital: float) -> None:
    n = 400
    target, o, h, lo, c, roll, margin, maint, atr = market(n, seed)
    sl, tp, tr, lim = orders
    got = backtest_nb(target, o, h, lo, c, roll, MULT, COMM, SLIP, *segments(margin, maint), capital, int(fill),
                      sl[0], sl[1], tp[0], tp[1], tr[0], tr[1], lim[0], lim[1], atr)
    eq, rec, stopped = reference(target, o, h, lo, c, roll, margin, maint, capital, fill, sl, tp, tr, lim, atr)
    assert got.bad_row == -1
    records = list(zip(got.t_bar.tolist(), got.t_kind.tolist(), got.t_reason.tolist(), got.t_qty.tolist(),
                       got.t_price.tolist(), got.t_comm.tolist(), got.t_slip.tolist(), got.t_refused.tolist()))
    assert len(records) == len(rec)
    for a, b in zip(records, rec):
        assert a[:4] == b[:4] and a[7] == b[7], (a, b)
        np.testing.assert_allclose(a[4:7], b[4:7], rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.equity, eq, rtol=0, atol=1e-6)
    assert got.stopped_bar == stopped


def test_the_cases_exercise_every_rule() -> None:
    """Across the cases above: every reason, calls that liquidate, stopped accounts and refusals occur."""
    seen: set[int] = set()
    stops = calls = refusals = 0
    for seed, capital in [(1, 1e6), (2, 60_000.0), (3, 30_000.0), (4, 15_000.0)]:
        target, o, h, lo, c, roll, margin, maint, atr = market(400, seed)
        for fill in FillRule:
            for sl, tp, tr, lim in ORDERS:
                _, rec, stopped = reference(target, o, h, lo, c, roll, margin, maint, capital, fill, sl, tp, tr,
                                            lim, atr)
                seen |= {r[2] for r in rec}
                stops += stopped >= 0
                calls += sum(1 for r in rec if r[2] == R.MARGIN_CALL and r[3] != 0)
                refusals += sum(1 for r in rec if r[7] > 0)
    assert seen == {int(r) for r in TradeReason}
    assert stops > 0 and calls > 0 and refusals > 0


@pytest.mark.parametrize("fill", [FillRule.NEXT_OPEN, FillRule.NEXT_CLOSE])
@pytest.mark.parametrize("seed, capital", [(5, 1e6), (6, 40_000.0), (7, 15_000.0)])
def test_the_two_loops_agree_when_no_order_acts(fill, seed: int, capital: float) -> None:
    n = 9_000  # more than two blocks of the market-order loop
    target, o, h, lo, c, roll, margin, maint, atr = market(n, seed)
    args = (target, o, h, lo, c, roll, MULT, COMM, SLIP, *segments(margin, maint), capital, int(fill))
    plain = backtest_nb(*args, 0, 0.0, 0, 0.0, 0, 0.0, 0, 0.0, np.zeros(1))
    far = backtest_nb(*args, 1, 1e9, 1, 1e9, 0, 0.0, 0, 0.0, np.zeros(1))  # orders loop, levels never reached
    for name in ("t_bar", "t_kind", "t_reason", "t_qty", "t_price", "t_comm", "t_slip", "t_refused"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(far, name), err_msg=name)
    np.testing.assert_allclose(plain.equity, far.equity, rtol=0, atol=1e-6)
    assert plain.stopped_bar == far.stopped_bar
    if capital < 1e6:
        assert (plain.t_reason == R.MARGIN_CALL).any()
