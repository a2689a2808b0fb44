"""The futures engine against two independent references, to the cent.

(a) plain NumPy, no engine code: an SMA crossover on a seeded random walk
    (no rolls, margin never binding). Positions are the signals shifted one
    bar and fill at the next open; P&L = sum(position x price change) x
    multiplier - costs, costs = |contracts traded| x (commission + slippage
    ticks x tick size x multiplier).

(b) vectorbt (a peer backtester written for shares, not futures). Mapping,
    as in PITFALLS.md "PyBroker and futures":

    - 1 contract = ``multiplier`` shares, so shares x price change =
      contracts x multiplier x price change (the futures P&L);
    - a per-contract, per-side commission is a per-share fee of
      ``commission / multiplier``. vectorbt has only a percentage fee and a
      FIXED fee PER ORDER, so the per-share fee is charged as a fixed fee on
      each order of ``|shares| x commission / multiplier``
      (= ``|contracts| x commission``), and vectorbt's own fee records are
      checked against that;
    - slippage of ``s`` points is vectorbt's percentage ``slippage = s / open``
      (vectorbt applies it against the trader by order direction itself);
    - fills at the open: ``price=open``; the orders are the engine's targets
      shifted one bar (decided at bar t's close, executed at bar t+1's open);
      ``size_type="targetamount"`` so vectorbt works out the order sizes;
    - cash: vectorbt spends cash on the notional; it starts with a large
      ``init_cash`` and its P&L is ``value - init_cash`` (futures need no
      cash for the notional, which does not change the P&L);
    - no rolls and no margin binding in this example (vectorbt has neither).

Tolerance: abs 0.005 USD on the final P&L (the brief: "to the cent"); the
per-bar equity path is also compared at 0.005 USD.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import vectorbt as vbt  # dev dependency: a missing library must fail, never skip

from fbt_pipelines.catalog.specs import ContractSpec, market_spec
from fbt_pipelines.engine.futures_engine import EngineConfig, run_backtest
from fbt_pipelines.engine.strategies import sma_crossover

CENT = 0.005  # USD
N_BARS = 2_000
CONTRACTS = 3
FAST, SLOW = 10, 40
CAPITAL = 1_000_000.0
SLIPPAGE_TICKS = 1.0


@pytest.fixture(scope="module")
def es() -> ContractSpec:
    return dataclasses.replace(
        market_spec("ES"), multiplier=50.0, tick_size=0.25, commission=2.10, initial_margin=13_200.0
    )


@pytest.fixture(scope="module")
def walk() -> pd.DataFrame:
    """Seeded random walk on the 0.25 tick grid, open = previous close + a gap."""
    rng = np.random.default_rng(20240611)
    steps = np.round(rng.normal(0.0, 8.0, N_BARS) * 4) / 4
    close = 4500.0 + np.cumsum(steps)
    gap = np.round(rng.normal(0.0, 2.0, N_BARS) * 4) / 4
    open_ = np.r_[close[0] - gap[0], close[:-1] + gap[1:]]
    assert close.min() > 1000 and open_.min() > 1000  # vectorbt wants positive prices
    return pd.DataFrame({
        "ts": pd.date_range("2015-01-02", periods=N_BARS, freq="B", tz="UTC"),
        "contract": "ESH5", "open": open_, "close": close, "raw_close": close, "roll": False,
    })


def numpy_sma_signal(close: np.ndarray, fast: int, slow: int) -> np.ndarray:
    cs = np.concatenate([[0.0], np.cumsum(close)])
    sma_f = np.full(len(close), np.nan)
    sma_s = np.full(len(close), np.nan)
    sma_f[fast - 1:] = (cs[fast:] - cs[:-fast]) / fast
    sma_s[slow - 1:] = (cs[slow:] - cs[:-slow]) / slow
    diff = sma_f - sma_s
    return np.where(np.isnan(diff), 0, np.sign(diff)).astype(np.int64)


@pytest.fixture(scope="module")
def target(walk: pd.DataFrame) -> np.ndarray:
    close = walk["close"].to_numpy()
    sig = numpy_sma_signal(close, FAST, SLOW)
    # the engine's strategy template gives the same signal (checked; not used below)
    np.testing.assert_array_equal(sma_crossover(close, fast=FAST, slow=SLOW), sig)
    assert (np.diff(sig) != 0).sum() > 20  # plenty of long/short flips
    return sig * CONTRACTS


@pytest.fixture(scope="module")
def engine_result(walk: pd.DataFrame, target: np.ndarray, es: ContractSpec):
    cfg = EngineConfig(initial_capital=CAPITAL, slippage_ticks=SLIPPAGE_TICKS, fill="next_open")
    r = run_backtest(walk, target, es, cfg)
    assert r.trades["refused"].sum() == 0  # margin never binds: nothing the references lack
    return r


def test_engine_matches_numpy_by_hand(walk, target, es, engine_result) -> None:
    open_, close = walk["open"].to_numpy(), walk["close"].to_numpy()
    mult, comm = es.multiplier, es.commission
    slip_usd = SLIPPAGE_TICKS * es.tick_size * mult  # 12.50 USD per contract per side
    # position held during bar t (from its open) = target decided at bar t-1's close
    pos = np.r_[0, target[:-1]]
    # while held from open[t] to open[t+1] it earns pos[t] x (open[t+1] - open[t]);
    # the last bar's position is marked to the last close
    next_mark = np.r_[open_[1:], close[-1]]
    gross = np.sum(pos * (next_mark - open_)) * mult
    traded = np.abs(np.diff(np.r_[0, pos])).sum()  # contracts bought or sold
    costs = traded * (comm + slip_usd)
    by_hand = gross - costs
    assert abs(engine_result.net_pnl - by_hand) < CENT
    assert abs(engine_result.final_equity - (CAPITAL + by_hand)) < CENT
    # the pieces too: costs and the number of fills
    assert abs(engine_result.bars["costs"].sum() - costs) < CENT
    assert len(engine_result.trades) == int((np.diff(np.r_[0, pos]) != 0).sum())
    np.testing.assert_array_equal(engine_result.bars["position"].to_numpy(), pos)


def test_engine_matches_vectorbt(walk, target, es, engine_result) -> None:
    open_, close = walk["open"].to_numpy(), walk["close"].to_numpy()
    mult, comm = es.multiplier, es.commission
    slip_points = SLIPPAGE_TICKS * es.tick_size

    shares = np.r_[0, target[:-1]].astype(float) * mult       # contracts x multiplier
    order_shares = np.abs(np.diff(np.r_[0.0, shares]))
    per_share_fee = comm / mult                                 # 2.10 / 50 = 0.042 USD
    init_cash = 1e8  # covers the notional vectorbt pays for: 150 shares x ~5,000
    pf = vbt.Portfolio.from_orders(
        close=pd.Series(close, index=walk["ts"]),
        size=shares,
        size_type="targetamount",
        direction="both",
        price=open_,
        slippage=slip_points / open_,                  # percent of price, by direction
        fixed_fees=order_shares * per_share_fee,       # per order = |shares| x per-share fee
        init_cash=init_cash,
        allow_partial=False, raise_reject=True,        # a refused order must fail loudly
        freq="1D",
    )
    vbt_pnl = float(pf.final_value()) - init_cash
    assert abs(engine_result.net_pnl - vbt_pnl) < CENT, (engine_result.net_pnl, vbt_pnl)

    # the same orders, prices and fees as the engine's trades
    orders = pf.orders.records_readable
    trades = engine_result.trades
    assert len(orders) == len(trades)
    np.testing.assert_allclose(orders["Size"].to_numpy(), np.abs(trades["contracts"].to_numpy()) * mult)
    np.testing.assert_allclose(orders["Price"].to_numpy(), trades["price"].to_numpy(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(orders["Fees"].to_numpy(), trades["commission"].to_numpy(), rtol=0, atol=1e-9)
    # and the whole equity path
    vbt_equity = CAPITAL + pf.value().to_numpy() - init_cash
    assert np.max(np.abs(vbt_equity - engine_result.bars["equity"].to_numpy())) < CENT


def test_vectorbt_mapping_on_a_hand_example(es) -> None:
    """The mapping itself, on numbers worked by hand (PITFALLS: check before trusting).

    Buy 2 ES at 4003.00 (+0.25 slippage), sell at 4006.50 (-0.25), commission 2.10
    per contract per side: (4006.25 - 4003.25) x 2 x 50 - 4 x 2.10 = 300 - 8.40 = 291.60.
    """
    open_ = np.array([4000.00, 4003.00, 4008.00, 4006.50, 4011.00])
    close = np.array([4002.00, 4010.00, 4005.00, 4012.25, 4009.50])
    shares = np.array([0, 2, 2, 0, 0]) * 50.0
    pf = vbt.Portfolio.from_orders(
        close=close, size=shares, size_type="targetamount", price=open_,
        slippage=0.25 / open_, fixed_fees=np.abs(np.diff(np.r_[0.0, shares])) * 2.10 / 50,
        init_cash=1e7, allow_partial=False, raise_reject=True,
    )
    assert float(pf.final_value()) - 1e7 == pytest.approx(291.60, abs=1e-6)
