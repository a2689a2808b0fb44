"""fbt's engine against lib-pybroker (fbt_pipelines.engine.pybroker_engine).

The same whole-contract targets go through fbt's ``run_backtest`` and through
PyBroker's ``Strategy`` API (one contract = ``multiplier`` shares, commission
per contract = ``commission / multiplier`` per share, fills at the next bar's
open +/- slippage ticks). Both must give the same fills (bar, contracts,
price) and the same net P&L to the cent once fbt's roll costs, which
PyBroker cannot express, are taken off PyBroker's P&L. Every comparison is
also pinned to a number worked out by hand (or by an independent NumPy sum),
so a mistake shared by both engines still fails.

Market: an E-mini S&P 500 spec pinned here (multiplier 50 USD/point, tick
0.25, commission 2.10 USD per contract per side), with an initial margin of
1,000 USD per contract against 1,000,000 USD of capital so fbt's margin cap
never binds (PyBroker has no margin model). 1 tick of slippage each side of
each contract costs 2.10 + 0.25 x 50 = 14.60 USD.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog.specs import ContractSpec, market_spec
from fbt_pipelines.engine.futures_engine import EngineConfig, run_backtest
from fbt_pipelines.engine.pybroker_engine import FILL_COLUMNS, PyBrokerResult, run_pybroker_backtest
from fbt_pipelines.engine.strategies import sma_crossover

import pybroker  # noqa: E402,F401  (a declared dependency: missing it fails these tests, never skips them)

CENT = 0.005  # USD: "to the cent"
CAPITAL = 1_000_000.0
CFG = EngineConfig(initial_capital=CAPITAL, slippage_ticks=1.0)  # commission from the spec: 2.10


@pytest.fixture(scope="module")
def es() -> ContractSpec:
    return dataclasses.replace(
        market_spec("ES"), multiplier=50.0, tick_size=0.25, commission=2.10, initial_margin=1_000.0
    )


def fbt_fills(prices: pd.DataFrame, trades: pd.DataFrame) -> pd.DataFrame:
    """fbt's ordinary (non-roll) trades as (bar, contracts, price)."""
    t = trades[trades["kind"] == "trade"]
    bar = pd.Index(prices["ts"]).get_indexer(t["ts"])
    return pd.DataFrame({"bar": bar, "contracts": t["contracts"].to_numpy(np.int64),
                         "price": t["price"].to_numpy(float)})


def assert_same_fills(prices: pd.DataFrame, fbt, pb: PyBrokerResult) -> None:
    ours = fbt_fills(prices, fbt.trades)
    theirs = pb.fills
    assert list(theirs.columns) == FILL_COLUMNS
    assert theirs["bar"].tolist() == ours["bar"].tolist()
    assert theirs["contracts"].tolist() == ours["contracts"].tolist()
    np.testing.assert_allclose(theirs["price"].to_numpy(), ours["price"].to_numpy(), rtol=0, atol=1e-9)
    # PyBroker's per-share fee is fbt's per-contract commission
    fbt_comm = fbt.trades.loc[fbt.trades["kind"] == "trade", "commission"].to_numpy(float)
    np.testing.assert_allclose(theirs["commission"].to_numpy(), fbt_comm, rtol=0, atol=1e-9)


def by_hand_net_pnl(prices: pd.DataFrame, target: np.ndarray, spec: ContractSpec, cfg: EngineConfig) -> float:
    """Independent sum: position x price change x multiplier, minus costs.

    The target decided at bar i-1's close is held from bar i's fill (open or
    close); before the fill the previous position is held. Each contract
    traded pays commission + slippage once; each contract held at a roll
    bar's close pays them twice.
    """
    close = prices["close"].to_numpy(float)
    fill = prices["open" if cfg.fill == "next_open" else "close"].to_numpy(float)
    held = np.r_[0, np.asarray(target)[:-1]].astype(float)     # after bar i's fill
    before = np.r_[0, held[:-1]]                                # before bar i's fill
    gross = (before[1:] * (fill[1:] - close[:-1]) + held[1:] * (close[1:] - fill[1:])).sum() * spec.multiplier
    commission = spec.commission if cfg.commission is None else cfg.commission
    per_side = commission + cfg.slippage_ticks * spec.tick_size * spec.multiplier
    traded = np.abs(np.diff(held)).sum()
    rolled = np.abs(held[prices["roll"].to_numpy(bool)]).sum()
    return float(gross - (traded + 2 * rolled) * per_side)


# --------------------------------------------------------------------------- (a) 30 hand-built bars

# closes: up 2 points a bar to bar 9, down 3 a bar to bar 19, up 1 a bar to bar 29;
# each open is the previous close + 0.50 (bar 0 opens at 3999.50)
CLOSE30 = np.r_[4000.0 + 2.0 * np.arange(10), 4018.0 - 3.0 * np.arange(1, 11), 3988.0 + np.arange(1, 11)]
OPEN30 = np.r_[3999.5, CLOSE30[:-1] + 0.5]
# SMA(2)/SMA(5) crossover on CLOSE30: 0 until bar 4 (5 closes), +1 on bars 4..10, -1 from bar 11
# (bar 11: SMA2 = (4015 + 4012) / 2 = 4013.5 < SMA5 = 4015.0); sized 1 contract long,
# 2 short, and flattened from bar 20 on.
TARGET30 = np.array([0] * 4 + [1] * 7 + [-2] * 9 + [0] * 10)


def frame30() -> pd.DataFrame:
    n = len(CLOSE30)
    return pd.DataFrame({
        "ts": pd.date_range("2024-03-01", periods=n, freq="D", tz="UTC"),
        "contract": ["ESH4"] * n,
        "open": OPEN30, "high": np.maximum(OPEN30, CLOSE30) + 1.0, "low": np.minimum(OPEN30, CLOSE30) - 1.0,
        "close": CLOSE30, "raw_close": CLOSE30, "roll": np.zeros(n, dtype=bool),
    })


def test_hand_built_target_is_the_sma_crossover() -> None:
    signal = sma_crossover(CLOSE30, fast=2, slow=5)
    sized = np.where(signal > 0, 1, 2) * signal
    sized[20:] = 0
    assert sized.tolist() == TARGET30.tolist()
    assert CLOSE30[[0, 9, 19, 29]].tolist() == [4000.0, 4018.0, 3988.0, 3998.0]


def test_thirty_bars_long_short_flat(es: ContractSpec) -> None:
    prices = frame30()
    fbt = run_backtest(prices, TARGET30, es, CFG)
    pb = run_pybroker_backtest(prices, TARGET30, es, CFG)
    # target +1 after bar 4  -> bar 5 buys 1 at open 4008.50 + 0.25 = 4008.75
    # target -2 after bar 11 -> bar 12 sells 3 at open 4012.50 - 0.25 = 4012.25
    # target  0 after bar 20 -> bar 21 buys 2 at open 3989.50 + 0.25 = 3989.75
    expected = [(5, 1, 4008.75), (12, -3, 4012.25), (21, 2, 3989.75)]
    for fills in (fbt_fills(prices, fbt.trades), pb.fills):
        assert list(zip(fills["bar"], fills["contracts"], fills["price"])) == expected
    assert_same_fills(prices, fbt, pb)
    # long 1:  (4012.25 - 4008.75) x 1 x 50 =  175.00
    # short 2: (4012.25 - 3989.75) x 2 x 50 = 2250.00
    # commission: (1 + 3 + 2) x 2.10 = 12.60   ->   175 + 2250 - 12.60 = 2412.40
    assert pb.roll_costs == 0.0
    assert pb.pybroker_pnl == pytest.approx(2412.40, abs=CENT)
    assert fbt.net_pnl == pytest.approx(2412.40, abs=CENT)
    assert abs(pb.net_pnl - fbt.net_pnl) < CENT
    assert by_hand_net_pnl(prices, TARGET30, es, CFG) == pytest.approx(2412.40, abs=CENT)
    # PyBroker's own trade list: one long, one short round trip
    assert pb.trades["type"].tolist() == ["long", "short"]
    assert pb.trades["shares"].tolist() == [50, 100]
    assert pb.trades["pnl"].sum() == pytest.approx(2425.00, abs=CENT)  # before commission


def test_thirty_bars_without_costs(es: ContractSpec) -> None:
    prices = frame30()
    cfg = EngineConfig(initial_capital=CAPITAL, slippage_ticks=0.0, commission=0.0)
    fbt = run_backtest(prices, TARGET30, es, cfg)
    pb = run_pybroker_backtest(prices, TARGET30, es, cfg)
    # long 1 from 4008.50 to 4012.50: 4.00 x 50 = 200.00; short 2 from 4012.50 to 3989.50:
    # 23.00 x 2 x 50 = 2300.00  ->  2500.00
    assert fbt.net_pnl == pytest.approx(2500.00, abs=CENT)
    assert pb.net_pnl == pytest.approx(2500.00, abs=CENT)
    assert pb.fills["commission"].tolist() == [0.0, 0.0, 0.0]


# --------------------------------------------------------------------------- (b) random walk with rolls


def panama_walk(seed: int = 7, n: int = 500, level: float = 4000.0) -> pd.DataFrame:
    """Seeded random walk of quarterly-ish contracts, Panama back-adjusted.

    Contract k = common spot walk + its own carry + its own small walk, all on
    the 0.25 tick grid. A roll about every 60 bars (55..65): the roll bar is
    the last session held in the old contract (``roll=True``); the next bar
    shows the new one. Panama: each contract's prices + the sum of the roll
    gaps (new close - old close on the roll date) of every later roll, so the
    last contract is unadjusted and ``close - raw_close`` is the offset.
    """
    rng = np.random.default_rng(seed)
    rolls = []
    i = -1
    while True:
        i += int(rng.integers(55, 66))
        if i >= n - 1:
            break
        rolls.append(i)
    k_of = np.searchsorted(np.array(rolls), np.arange(n), side="left")  # contract held on each bar
    n_contracts = len(rolls) + 1
    tick = lambda x: np.round(np.asarray(x) * 4.0) / 4.0  # noqa: E731
    spot = level + np.cumsum(rng.normal(0.0, 8.0, n))
    carry = rng.uniform(-20.0, 20.0, n_contracts)
    raw_close = tick(spot[None, :] + carry[:, None] + np.cumsum(rng.normal(0.0, 1.5, (n_contracts, n)), axis=1))
    raw_open = tick(np.c_[raw_close[:, :1], raw_close[:, :-1]] + rng.normal(0.0, 3.0, (n_contracts, n)))
    wick = tick(np.abs(rng.normal(0.0, 4.0, (n_contracts, n))))
    raw_high = np.maximum(raw_open, raw_close) + wick
    raw_low = np.minimum(raw_open, raw_close) - wick
    gaps = np.array([raw_close[k + 1, r] - raw_close[k, r] for k, r in enumerate(rolls)])
    offset = np.r_[np.cumsum(gaps[::-1])[::-1], 0.0]  # contract k: sum of gaps of rolls k, k+1, ...
    bars = np.arange(n)
    held = lambda a: a[k_of, bars]  # noqa: E731
    roll = np.zeros(n, dtype=bool)
    roll[rolls] = True
    return pd.DataFrame({
        "ts": pd.bdate_range("2021-01-04", periods=n, tz="UTC"),
        "contract": [f"ESC{k:02d}" for k in k_of],
        "open": held(raw_open) + offset[k_of], "high": held(raw_high) + offset[k_of],
        "low": held(raw_low) + offset[k_of], "close": held(raw_close) + offset[k_of],
        "raw_close": held(raw_close), "roll": roll,
    })


def walk_target(close: np.ndarray) -> np.ndarray:
    """SMA(5)/SMA(20) crossover, 1 to 3 contracts (the size steps every 23 bars)."""
    size = 1 + (np.arange(len(close)) // 23) % 3
    return sma_crossover(close, fast=5, slow=20) * size


def test_panama_walk_is_well_formed() -> None:
    p = panama_walk()
    assert len(p) == 500 and 7 <= int(p["roll"].sum()) <= 9
    gaps = np.diff(np.flatnonzero(p["roll"]))
    assert gaps.min() >= 55 and gaps.max() <= 65
    offset = (p["close"] - p["raw_close"]).to_numpy()
    last = p["contract"] == p["contract"].iloc[-1]
    assert (offset[last] == 0).all() and (offset != 0).any()  # last contract unadjusted, earlier ones shifted
    # the contract changes on the bar after each roll, and only there
    changes = np.flatnonzero(p["contract"].to_numpy()[1:] != p["contract"].to_numpy()[:-1])
    assert changes.tolist() == np.flatnonzero(p["roll"]).tolist()
    assert (p["low"] > 0).all() and (p["low"] <= p[["open", "close"]].min(axis=1)).all()


@pytest.mark.parametrize("fill", ["next_open", "next_close"])
def test_random_walk_with_rolls_matches(es: ContractSpec, fill: str) -> None:
    prices = panama_walk()
    target = walk_target(prices["close"].to_numpy())
    cfg = dataclasses.replace(CFG, fill=fill)
    fbt = run_backtest(prices, target, es, cfg)
    pb = run_pybroker_backtest(prices, target, es, cfg)
    assert int(fbt.trades["refused"].sum()) == 0  # margin never binds: PyBroker could not follow otherwise
    assert len(pb.fills) > 20 and (pb.fills["contracts"].abs() > 1).any()  # flips and resizes exercised
    assert_same_fills(prices, fbt, pb)
    rolls = fbt.trades[fbt.trades["kind"] == "roll"]
    assert len(rolls) >= 3  # positioned through several rolls
    assert pb.roll_costs == pytest.approx((rolls["commission"] + rolls["slippage"]).sum(), abs=1e-6)
    assert abs(pb.net_pnl - fbt.net_pnl) < CENT
    assert abs(pb.net_pnl - by_hand_net_pnl(prices, target, es, cfg)) < CENT
    # PyBroker alone misses exactly the roll costs
    assert pb.pybroker_pnl - fbt.net_pnl == pytest.approx(pb.roll_costs, abs=CENT)


def test_random_walk_without_costs_is_position_times_price_change(es: ContractSpec) -> None:
    prices = panama_walk()
    target = walk_target(prices["close"].to_numpy())
    cfg = EngineConfig(initial_capital=CAPITAL, slippage_ticks=0.0, commission=0.0)
    fbt = run_backtest(prices, target, es, cfg)
    pb = run_pybroker_backtest(prices, target, es, cfg)
    open_, close = prices["open"].to_numpy(), prices["close"].to_numpy()
    held = np.r_[0, target[:-1]]  # contracts held from bar i's open
    # close(i-1) -> open(i) with the old position, open(i) -> close(i) with the new one
    by_hand = sum(
        (held[i - 1] * (open_[i] - close[i - 1]) + held[i] * (close[i] - open_[i])) * 50.0 for i in range(1, len(prices))
    )
    assert pb.roll_costs == 0.0
    assert abs(fbt.net_pnl - by_hand) < CENT
    assert abs(pb.net_pnl - by_hand) < CENT
    assert abs(by_hand) > 1_000.0  # not trivially zero


def test_negative_panama_prices_are_shifted(es: ContractSpec) -> None:
    # the same walk 3,700 points lower crosses zero (a crude-oil-2020-like series);
    # PyBroker rejects fills <= 0, the adapter shifts its prices and P&L is unchanged
    prices = panama_walk(level=300.0)
    assert (prices["close"] < 0).any() and (prices["close"] > 0).any()
    target = walk_target(prices["close"].to_numpy())
    fbt = run_backtest(prices, target, es, CFG)
    pb = run_pybroker_backtest(prices, target, es, CFG)
    assert pb.price_offset > 0 and (pb.fills["fill_price"] > 0).all()
    assert_same_fills(prices, fbt, pb)
    assert abs(pb.net_pnl - fbt.net_pnl) < CENT
    assert abs(pb.net_pnl - by_hand_net_pnl(prices, target, es, CFG)) < CENT


def test_target_validation(es: ContractSpec) -> None:
    prices = frame30()
    with pytest.raises(ValueError, match="shape"):
        run_pybroker_backtest(prices, TARGET30[:-1], es, CFG)
    with pytest.raises(ValueError, match="whole contracts"):
        run_pybroker_backtest(prices, TARGET30 + 0.5, es, CFG)


# --------------------------------------------------------------------------- (c) stops, targets, trailing stops


def aligned_walk(seed: int, n: int = 400, wick: float = 2.0, wicks: bool = True):
    """Bars and a 1-contract long/short target where fbt's stop rules and PyBroker's coincide:
    each bar opens at the previous close (no gap can jump a level: a close beyond it would have
    touched it the bar before); the bar after each change of the target (an entry bar) does not
    move (open = high = low = close), so no level is touched on it (PyBroker's stops start on the
    next bar); ``wicks=False`` makes every high max(open, close) and every low min(open, close),
    so PyBroker's highest high (lowest low) since entry is fbt's best close."""
    rng = np.random.default_rng(seed)
    tick = lambda x: np.round(np.asarray(x) * 4.0) / 4.0  # noqa: E731
    target = np.repeat(rng.choice([-1, 1], n // 8 + 1), rng.integers(5, 12, n // 8 + 1))[:n].astype(np.int64)
    if len(target) < n:
        target = np.r_[target, np.full(n - len(target), target[-1])]
    entry = np.r_[False, False, target[1:-1] != target[:-2]]  # bar i fills the target decided at bar i - 1
    step = tick(rng.normal(0.0, 6.0, n))
    step[entry] = 0.0
    close = 4000.0 + np.cumsum(step)
    open_ = np.r_[close[0], close[:-1]]
    up = np.where(entry | (not wicks), 0.0, tick(np.abs(rng.normal(0.0, wick, n))))
    down = np.where(entry | (not wicks), 0.0, tick(np.abs(rng.normal(0.0, wick, n))))
    prices = pd.DataFrame({"ts": pd.bdate_range("2021-01-04", periods=n, tz="UTC"), "contract": "ESH1",
                           "open": open_, "high": np.maximum(open_, close) + up,
                           "low": np.minimum(open_, close) - down, "close": close, "raw_close": close, "roll": False})
    return prices, target


def entry_bar_touches(prices: pd.DataFrame, trades: pd.DataFrame) -> int:
    """fbt exits on the bar of their entry (PyBroker cannot: its stops start on the next bar)."""
    t = trades[trades["kind"] == "trade"]
    return int(sum(1 for ts, grp in t.groupby("ts") if len(grp) > 1 and set(grp["reason"]) & {"stop", "target",
                                                                                                   "trailing_stop"}))


@pytest.mark.parametrize("orders, wicks", [
    ({"stop_loss": "12"}, True),
    ({"stop_loss": "10", "take_profit": "15"}, True),
    ({"stop_loss": "0.25%", "take_profit": "0.4%"}, True),
    ({"take_profit": "2atr", "stop_loss": "1.5atr"}, True),
    ({"trailing_stop": "10"}, False),
])
def test_stops_agree_to_the_cent_where_the_rules_coincide(es: ContractSpec, orders: dict, wicks: bool) -> None:
    prices, target = aligned_walk(11, wicks=wicks)
    cfg = dataclasses.replace(CFG, **orders)
    fbt = run_backtest(prices, target, es, cfg)
    assert entry_bar_touches(prices, fbt.trades) == 0  # the bars avoid the one rule PyBroker lacks
    exits = fbt.trades["reason"].isin(["stop", "target", "trailing_stop"])
    assert exits.sum() >= 5  # the orders act
    pb = run_pybroker_backtest(prices, target, es, cfg)
    ours = fbt_fills(prices, fbt.trades)
    assert pb.fills["bar"].tolist() == ours["bar"].tolist()
    assert pb.fills["contracts"].tolist() == ours["contracts"].tolist()
    np.testing.assert_allclose(pb.fills["price"].to_numpy(), ours["price"].to_numpy(), rtol=0, atol=1e-9)
    assert abs(pb.net_pnl - fbt.net_pnl) < CENT


def test_a_gap_through_a_stop_is_where_pybroker_differs(es: ContractSpec) -> None:
    """fbt exits a long at the open of a bar that opens below its stop; PyBroker at ``min(stop,
    high)``. One contract, stop 40: entry 4000.25 (bar 1's open + 1 tick), stop 3960.25; bar 3
    opens at 3950 (high 3955): fbt sells at 3950 - 0.25 = 3949.75, PyBroker at its high, 3955 - 0.25
    = 3954.75, 5 points better: 5 x 50 = 250.00 USD."""
    rows = [(4000, 4005, 3995, 4000), (4000, 4010, 3990, 4005), (4005, 4010, 3970, 3975),
            (3950, 3955, 3940, 3945), (3945, 3950, 3940, 3948)]
    o, h, lo, c = (np.array(x, float) for x in zip(*rows))
    prices = pd.DataFrame({"ts": pd.bdate_range("2021-01-04", periods=5, tz="UTC"), "contract": "ESH1", "open": o,
                           "high": h, "low": lo, "close": c, "raw_close": c, "roll": False})
    cfg = dataclasses.replace(CFG, stop_loss="40")
    fbt = run_backtest(prices, np.ones(5, np.int64), es, cfg)
    pb = run_pybroker_backtest(prices, np.ones(5, np.int64), es, cfg)
    assert fbt.trades["price"].tolist() == [4000.25, 3949.75]
    assert pb.fills["price"].tolist() == [4000.25, 3954.75]
    assert pb.net_pnl - fbt.net_pnl == pytest.approx(250.00, abs=CENT)


def test_limit_entries_are_not_mapped_to_pybroker(es: ContractSpec) -> None:
    prices, _ = aligned_walk(1, n=30)
    with pytest.raises(ValueError, match="does not map limit entries"):
        run_pybroker_backtest(prices, np.ones(30, np.int64), es, dataclasses.replace(CFG, limit_offset="5"))
