"""The optimised engine path equals the original engine on random inputs.

``original_kernel`` below is a verbatim pure-Python copy of the all-in-one
Numba kernel the engine had before its single-pass rewrite (git 4c53333,
``fbt_pipelines/engine/kernel.py``, ``simulate_futures_nb`` without
``@njit``): one loop writing position, equity, margin in use and costs per bar
plus the trade records. Every output of the new path -- ``run_backtest``'s
lazily built ``bars`` and ``trades`` frames, ``BacktestResult.equity`` and the
``simulate_futures_nb`` wrapper -- is compared with it on seeded random
markets: long/short/flip targets, rolls, per-bar and fixed margins that bind,
zero margins, both fill rules, commission and slippage, record counts beyond
the kernel's first record capacity.

Equality: trades, positions, margin in use and costs exactly; equity and
P&L to 1e-6 USD (the new pass sums the two marks of a holding bar before
adding them to the equity: a different rounding order, measured ~1e-11 USD).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog.specs import ContractSpec, market_spec
from fbt_pipelines.engine.futures_engine import TRADE_COLUMNS, BacktestResult, EngineConfig, run_backtest
from fbt_pipelines.engine.kernel import backtest_nb, simulate_futures_nb
from fbt_pipelines.engine.rules import FillRule, TradeKind, TradeReason
from fbt_pipelines.futures.margin import MarginSchedule

NO_ORDERS = (0, 0.0, 0, 0.0, 0, 0.0, 0, 0.0, np.zeros(1))  # no stop, target, trailing stop or limit


def segments(margins, maintenance=None):
    """The kernel's margin arguments (starts, initial, maintenance) of per-bar
    arrays; ``maintenance`` None: no margin calls (the original kernel had none)."""
    s = MarginSchedule.from_per_bar(np.asarray(margins, dtype=float),
                                    None if maintenance is None else np.asarray(maintenance, dtype=float))
    return s.starts, s.initial, s.maintenance


def original_kernel(target, open_, close, roll, multiplier, commission, slippage, margin, capital, fill_rule):
    """The pre-rewrite kernel, line for line (pure Python)."""
    n = len(close)
    position = np.zeros(n, dtype=np.int64)
    equity = np.zeros(n)
    margin_used = np.zeros(n)
    costs = np.zeros(n)
    t_bar, t_kind, t_qty, t_price, t_comm, t_slip, t_refused = [], [], [], [], [], [], []
    pos = 0
    eq = capital
    for i in range(n):
        cost_i = 0.0
        if i > 0:
            want = int(target[i - 1])
            fill = open_[i] if fill_rule == FillRule.NEXT_OPEN else close[i]
            eq += pos * (fill - close[i - 1]) * multiplier
            refused = 0
            if want != pos and (abs(want) > abs(pos) or want * pos < 0):
                unit_cost = commission + slippage * multiplier
                held = abs(pos) if want * pos > 0 else -abs(pos)
                m = margin[i]
                if m > 0:
                    affordable = int(np.floor(max(eq + held * unit_cost, 0.0) / (m + unit_cost)))
                else:
                    affordable = abs(want)
                if abs(want) > affordable:
                    keep = max(affordable, abs(pos)) if want * pos > 0 else affordable
                    refused = abs(want) - keep
                    want = keep if want > 0 else -keep
            if want != pos:
                qty = want - pos
                comm = abs(qty) * commission
                slip = abs(qty) * slippage * multiplier
                eq -= comm + slip
                cost_i += comm + slip
                for lst, v in zip((t_bar, t_kind, t_qty, t_price, t_comm, t_slip, t_refused),
                                  (i, 0, qty, fill + slippage if qty > 0 else fill - slippage, comm, slip, refused)):
                    lst.append(v)
                pos = want
            elif refused > 0:
                for lst, v in zip((t_bar, t_kind, t_qty, t_price, t_comm, t_slip, t_refused),
                                  (i, 0, 0, fill, 0.0, 0.0, refused)):
                    lst.append(v)
            eq += pos * (close[i] - fill) * multiplier
        if roll[i] and pos != 0:
            comm = 2 * abs(pos) * commission
            slip = 2 * abs(pos) * slippage * multiplier
            eq -= comm + slip
            cost_i += comm + slip
            for lst, v in zip((t_bar, t_kind, t_qty, t_price, t_comm, t_slip, t_refused),
                              (i, TradeKind.ROLL, pos, close[i], comm, slip, 0)):
                lst.append(v)
        position[i] = pos
        equity[i] = eq
        margin_used[i] = abs(pos) * margin[i]
        costs[i] = cost_i
    ints = [np.array(x, dtype=np.int64) for x in (t_bar, t_kind, t_qty)]
    floats = [np.array(x, dtype=np.float64) for x in (t_price, t_comm, t_slip)]
    return (position, equity, margin_used, costs, *ints, *floats, np.array(t_refused, dtype=np.int64))


def random_market(n: int, seed: int, *, tick_grid: bool, capital: float, hold: int = 1):
    """Prices (ES-like around 4000), rolls, targets in [-6, 6] held ``hold``
    bars, margins per bar that move; capital chosen by the caller (small
    capital makes the margin cut bind)."""
    rng = np.random.default_rng(seed)
    close = 4000.0 + np.cumsum(rng.normal(0.0, 3.0, n))
    open_ = close + rng.normal(0.0, 1.5, n)
    if tick_grid:
        close, open_ = np.round(close * 4) / 4, np.round(open_ * 4) / 4
    raw_close = close - np.round(rng.normal(20.0, 5.0, n) * 4) / 4
    roll = rng.random(n) < 0.05
    target = np.repeat(rng.integers(-6, 7, n // hold + 1), hold)[:n].astype(np.int64)
    margins = rng.choice([0.0, 6_000.0, 13_200.0, 25_000.0], n, p=[0.1, 0.3, 0.4, 0.2])
    ts = pd.date_range("2024-01-02", periods=n, freq="min", tz="UTC")
    contract = np.array([f"ES{k:03d}" for k in np.r_[0, np.cumsum(roll)[:-1]]], dtype=object) if n else []
    prices = pd.DataFrame({"ts": ts, "contract": contract, "open": open_, "close": close,
                           "raw_close": raw_close, "roll": roll})
    return prices, target, margins, capital


@pytest.fixture(scope="module")
def es() -> ContractSpec:
    return dataclasses.replace(market_spec("ES"), multiplier=50.0, tick_size=0.25, commission=2.10,
                               initial_margin=13_200.0)


def expected_frames(prices, target, spec, cfg, margins):
    """bars and trades frames as the original ``run_backtest`` built them."""
    n = len(prices)
    per_bar = np.full(n, spec.initial_margin) if margins is None else np.asarray(margins, dtype=float)
    commission = spec.commission if cfg.commission is None else cfg.commission
    open_, close = prices["open"].to_numpy(float), prices["close"].to_numpy(float)
    out = original_kernel(target, open_, close, prices["roll"].to_numpy(bool), spec.multiplier, commission,
                          cfg.slippage_ticks * spec.tick_size, per_bar, cfg.initial_capital,
                          int(cfg.fill_rule))
    position, equity, margin, costs, t_bar, t_kind, t_qty, t_price, t_comm, t_slip, t_refused = out
    ts, contract = prices["ts"].array, prices["contract"].array
    bars = pd.DataFrame({"ts": ts, "contract": contract, "close": close, "position": position, "equity": equity,
                         "pnl": np.diff(equity, prepend=cfg.initial_capital), "margin": margin, "costs": costs})
    offset = close - prices["raw_close"].to_numpy(float)
    next_offset = np.r_[offset[1:], offset[-1:]] if n else offset
    is_roll = t_kind == TradeKind.ROLL
    trades = pd.DataFrame({
        "ts": ts[t_bar], "contract": contract[t_bar], "kind": np.where(is_roll, "roll", "trade"),
        "reason": np.where(is_roll, "roll", "signal"),
        "contracts": t_qty, "price": t_price, "raw_price": t_price - offset[t_bar],
        "to_raw_price": np.where(is_roll, t_price - next_offset[t_bar], np.nan),
        "commission": t_comm, "slippage": t_slip, "refused": t_refused}, columns=TRADE_COLUMNS)
    return bars, trades, out


CASES = [
    # (n, seed, prices on the tick grid, capital, hold, fill, slippage ticks, per-bar margins)
    (0, 0, True, 1e6, 1, "next_open", 1.0, False),
    (1, 1, True, 1e6, 1, "next_open", 1.0, True),
    (2, 2, False, 1e6, 1, "next_close", 0.0, True),
    (300, 3, True, 1e6, 7, "next_open", 1.0, False),
    (300, 4, False, 60_000.0, 3, "next_open", 2.0, True),   # margin binds often
    (300, 5, False, 60_000.0, 3, "next_close", 0.5, True),
    (300, 6, True, 30_000.0, 1, "next_close", 1.0, False),
    (12_000, 7, True, 1e7, 1, "next_open", 1.0, False),     # > 2 x 4096 + 2 records: the record arrays grow
    (12_000, 8, False, 90_000.0, 2, "next_close", 1.0, True),
]


@pytest.mark.parametrize("n, seed, tick_grid, capital, hold, fill, slip, per_bar", CASES)
def test_run_backtest_equals_the_original_engine(es, n, seed, tick_grid, capital, hold, fill, slip, per_bar):
    prices, target, margins, capital = random_market(n, seed, tick_grid=tick_grid, capital=capital, hold=hold)
    cfg = EngineConfig(initial_capital=capital, slippage_ticks=slip, fill=fill)
    margins = margins if per_bar else None
    bars, trades, ref = expected_frames(prices, target, es, cfg, margins)
    if n >= 300:  # the cases exercise what they claim
        assert (ref[10] > 0).any() or capital >= 1e6, "margin never bound"
        assert (ref[5] == TradeKind.ROLL).any()
    if n == 12_000 and seed == 7:
        assert len(ref[4]) > 2 * 4096 + 2
    r = run_backtest(prices, target, es, cfg, margins)
    got_bars, got_trades = r.bars, r.trades
    exact = ["ts", "contract", "close", "position", "margin", "costs"]
    pd.testing.assert_frame_equal(got_bars[exact], bars[exact], check_exact=True)
    pd.testing.assert_frame_equal(got_trades, trades, check_exact=True)
    np.testing.assert_allclose(got_bars["equity"], bars["equity"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got_bars["pnl"], bars["pnl"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(r.equity, got_bars["equity"].to_numpy())
    assert abs(r.final_equity - (ref[1][-1] if n else capital)) < 1e-6


@pytest.mark.parametrize("fill", [int(FillRule.NEXT_OPEN), int(FillRule.NEXT_CLOSE)])
def test_simulate_futures_nb_keeps_its_outputs(fill: int) -> None:
    prices, target, margins, capital = random_market(2_000, 11, tick_grid=True, capital=80_000.0, hold=2)
    args = (target, prices["open"].to_numpy(), prices["close"].to_numpy(), prices["roll"].to_numpy(),
            50.0, 2.10, 0.25, margins, capital, fill)
    o, c = prices["open"].to_numpy(), prices["close"].to_numpy()
    got = simulate_futures_nb(target, o, c, c, c, prices["roll"].to_numpy(), 50.0, 2.10, 0.25, *segments(margins),
                              capital, fill, *NO_ORDERS)
    ref = original_kernel(*args)
    assert len(got) == 13 and len(ref) == 11
    assert got.stopped_bar == -1
    assert set(got.t_reason[got.t_kind == TradeKind.ROLL]) == {TradeReason.ROLL}
    assert set(got.t_reason[got.t_kind == TradeKind.TRADE]) == {TradeReason.SIGNAL}
    for k, (g, e) in enumerate(zip(got, ref)):
        assert g.dtype == e.dtype
        if k == 1:  # equity: summation order (module docstring)
            np.testing.assert_allclose(g, e, rtol=0, atol=1e-6)
        else:
            np.testing.assert_array_equal(g, e)
    assert (ref[10] > 0).any()  # margin cut exercised


def test_one_margin_for_every_bar_equals_a_full_margin_array() -> None:
    prices, target, _, capital = random_market(3_000, 12, tick_grid=False, capital=70_000.0, hold=3)
    c = prices["close"].to_numpy()
    args = (target, prices["open"].to_numpy(), c, c, c, prices["roll"].to_numpy(), 50.0, 2.10, 0.25)
    for maint in (None, 13_100.0):
        mm = np.array([np.nan if maint is None else maint])
        one = backtest_nb(*args, np.zeros(1, np.int64), np.array([13_200.0]), mm,
                          capital, int(FillRule.NEXT_OPEN), *NO_ORDERS)
        # the same margins per bar, cut into many equal segments
        starts = np.arange(0, 3_000, 7, dtype=np.int64)
        full = backtest_nb(*args, starts, np.full(len(starts), 13_200.0),
                           np.full(len(starts), np.nan if maint is None else maint), capital, int(FillRule.NEXT_OPEN),
                           *NO_ORDERS)
        assert one.bad_row == full.bad_row == -1
        assert (one.t_refused > 0).any()
        for a, b in zip(one, full):
            np.testing.assert_array_equal(a, b)
    assert (one.t_reason == TradeReason.MARGIN_CALL).any()  # the second pair has margin calls


@pytest.mark.parametrize("column, row", [("open", 0), ("close", 0), ("open", 4_999), ("close", 2_500)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_the_pass_finds_any_non_finite_price(es, column: str, row: int, bad: float) -> None:
    prices, target, _, _ = random_market(5_000, 13, tick_grid=True, capital=1e6)
    prices.loc[row, column] = bad
    with pytest.raises(ValueError, match=f"prices.{column} has non-finite values"):
        run_backtest(prices, target, es, EngineConfig())
    c = prices["close"].to_numpy()
    args = (target, prices["open"].to_numpy(), c, c, c, prices["roll"].to_numpy(),
            50.0, 2.10, 0.25, *segments(np.full(5_000, 13_200.0)), 1e6, int(FillRule.NEXT_CLOSE), *NO_ORDERS)
    assert backtest_nb(*args).bad_row == row
    with pytest.raises(ValueError, match="non-finite"):
        simulate_futures_nb(*args)


def test_huge_finite_prices_are_not_mistaken_for_non_finite(es) -> None:
    # the finiteness check is a running sum: it may overflow on finite prices; then
    # a row-by-row scan decides, and finds nothing
    prices, target, _, _ = random_market(10, 14, tick_grid=True, capital=1e6)
    prices[["open", "close", "raw_close"]] = 1e308
    r = run_backtest(prices, np.zeros(10, dtype=np.int64), es, EngineConfig())
    assert r.final_equity == 1e6


def test_frames_read_later_show_the_prices_of_the_call(es) -> None:
    prices, target, _, _ = random_market(400, 15, tick_grid=True, capital=1e6)
    expected = run_backtest(prices.copy(), target, es, EngineConfig())
    r = run_backtest(prices, target, es, EngineConfig())
    prices.loc[:, "close"] = 1.0          # the caller changes its frame afterwards
    prices.loc[:, "raw_close"] = 2.0
    prices.loc[:, "contract"] = "XX"
    prices.loc[:, "ts"] = pd.Timestamp("2030-01-01", tz="UTC")
    pd.testing.assert_frame_equal(r.bars, expected.bars)
    pd.testing.assert_frame_equal(r.trades, expected.trades)


def test_frames_are_built_once_and_a_result_can_wrap_given_frames(es) -> None:
    prices, target, _, _ = random_market(100, 16, tick_grid=True, capital=1e6)
    r = run_backtest(prices, target, es, EngineConfig())
    assert r.bars is r.bars and r.trades is r.trades
    assert not r.equity.flags.writeable
    wrapped = BacktestResult(bars=r.bars, trades=r.trades, initial_capital=1e6)
    assert wrapped.final_equity == r.final_equity and wrapped.net_pnl == r.net_pnl
    np.testing.assert_array_equal(wrapped.equity, r.equity)
    with pytest.raises(TypeError, match="needs bars and trades"):
        BacktestResult(initial_capital=1e6)
