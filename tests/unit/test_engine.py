"""fbt_pipelines.engine: hand-worked futures accounting, rolls, margin, no
lookahead, validation and the strategy templates.

Every number in the hand-worked examples is worked out in the comments next
to it. Market: an E-mini S&P 500 spec pinned here (not read from the
catalogue, so a catalogue edit cannot silently change these numbers):

    multiplier 50 USD/point, tick 0.25 points, commission 2.10 USD per
    contract per side, initial margin 13,200 USD per contract.

With 1 tick of slippage each side of each contract costs
2.10 + 0.25 x 50 = 2.10 + 12.50 = 14.60 USD.

Money tolerance: ``abs=1e-6`` USD (every example is exact in binary floating
point up to summation order; a wrong convention is off by whole dollars).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog.specs import ContractSpec, market_spec
from fbt_pipelines.engine.summary import summarise
from fbt_pipelines.engine.futures_engine import TRADE_COLUMNS, EngineConfig, run_backtest
from fbt_pipelines.engine.strategies import (
    STRATEGIES,
    ml_signal,
    sma_crossover,
    strategy_signal,
    validate_params,
)
from fbt_pipelines.errors import StrategyError

USD = 1e-6  # absolute tolerance on money


@pytest.fixture(scope="module")
def es() -> ContractSpec:
    return dataclasses.replace(
        market_spec("ES"), multiplier=50.0, tick_size=0.25, commission=2.10, initial_margin=13_200.0
    )


def frame(open_, close, *, raw_close=None, roll=None, contract=None) -> pd.DataFrame:
    """Continuous-price frame in the engine's input layout (daily ts)."""
    n = len(close)
    return pd.DataFrame({
        "ts": pd.date_range("2024-03-01", periods=n, freq="D", tz="UTC"),
        "contract": contract if contract is not None else ["ESH4"] * n,
        "open": np.asarray(open_, dtype=float),
        "close": np.asarray(close, dtype=float),
        "raw_close": np.asarray(raw_close if raw_close is not None else close, dtype=float),
        "roll": np.asarray(roll if roll is not None else [False] * n, dtype=bool),
    })


CAPITAL = 100_000.0
CFG = EngineConfig(initial_capital=CAPITAL, slippage_ticks=1.0)  # commission from the spec (2.10)

# the 5-bar example used by (a), (b) and (e)
OPEN5 = [4000.00, 4003.00, 4008.00, 4006.50, 4011.00]
CLOSE5 = [4002.00, 4010.00, 4005.00, 4012.25, 4009.50]
TARGET5 = [2, 2, 0, 0, 0]  # long 2 after bar 0's close, flat after bar 2's close


# --------------------------------------------------------------------------- (a) next open


def test_five_bar_es_next_open(es: ContractSpec) -> None:
    r = run_backtest(frame(OPEN5, CLOSE5), np.array(TARGET5), es, CFG)
    # bar 0: target decided at this close, nothing filled yet            -> 100,000.00
    # bar 1: buy 2 at open 4003.00 (+1 tick = 4003.25 fill)
    #        costs 2 x 2.10 = 4.20 commission + 2 x 12.50 = 25.00 slippage -> 99,970.80
    #        mark open -> close: 2 x (4010.00 - 4003.00) x 50 = +700.00    -> 100,670.80
    # bar 2: hold 2: 2 x (4005.00 - 4010.00) x 50 = -500.00               -> 100,170.80
    # bar 3: mark to the open: 2 x (4006.50 - 4005.00) x 50 = +150.00     -> 100,320.80
    #        sell 2 at 4006.50 (-1 tick = 4006.25 fill), costs 29.20      -> 100,291.60
    # bar 4: flat                                                         -> 100,291.60
    # check: (4006.25 - 4003.25) x 2 x 50 = 300.00 - 8.40 commission = +291.60
    assert r.bars["equity"].tolist() == pytest.approx(
        [100_000.00, 100_670.80, 100_170.80, 100_291.60, 100_291.60], abs=USD)
    assert r.bars["position"].tolist() == [0, 2, 2, 0, 0]
    assert r.bars["pnl"].tolist() == pytest.approx([0.0, 670.80, -500.00, 120.80, 0.0], abs=USD)
    assert r.bars["costs"].tolist() == pytest.approx([0.0, 29.20, 0.0, 29.20, 0.0], abs=USD)
    assert r.bars["margin"].tolist() == pytest.approx([0.0, 26_400.0, 26_400.0, 0.0, 0.0])  # 2 x 13,200
    assert r.final_equity == pytest.approx(100_291.60, abs=USD)
    assert r.net_pnl == pytest.approx(291.60, abs=USD)

    t = r.trades
    assert list(t.columns) == TRADE_COLUMNS
    assert t["kind"].tolist() == ["trade", "trade"]
    assert t["ts"].tolist() == [r.bars["ts"][1], r.bars["ts"][3]]
    assert t["contracts"].tolist() == [2, -2]
    assert t["price"].tolist() == pytest.approx([4003.25, 4006.25])   # open +/- 0.25
    assert t["raw_price"].tolist() == pytest.approx([4003.25, 4006.25])  # no adjustment here
    assert t["commission"].tolist() == pytest.approx([4.20, 4.20])    # 2 x 2.10
    assert t["slippage"].tolist() == pytest.approx([25.00, 25.00])    # 2 x 0.25 x 50
    assert t["refused"].tolist() == [0, 0]
    assert t["to_raw_price"].isna().all()


def test_five_bar_short_is_the_mirror(es: ContractSpec) -> None:
    r = run_backtest(frame(OPEN5, CLOSE5), -np.array(TARGET5), es, CFG)
    # sell 2 at 4002.75 (4003.00 - 0.25), buy back at 4006.75 (4006.50 + 0.25):
    # (4002.75 - 4006.75) x 2 x 50 = -400.00, minus 8.40 commission = -408.40
    assert r.net_pnl == pytest.approx(-408.40, abs=USD)
    assert r.trades["price"].tolist() == pytest.approx([4002.75, 4006.75])
    assert r.bars["position"].tolist() == [0, -2, -2, 0, 0]


def test_commission_override_and_zero_slippage(es: ContractSpec) -> None:
    cfg = EngineConfig(initial_capital=CAPITAL, slippage_ticks=0.0, commission=1.00)
    r = run_backtest(frame(OPEN5, CLOSE5), np.array(TARGET5), es, cfg)
    # (4006.50 - 4003.00) x 2 x 50 = 350.00, minus 4 sides x 1.00 = 346.00
    assert r.net_pnl == pytest.approx(346.00, abs=USD)
    assert r.trades["slippage"].tolist() == [0.0, 0.0]
    assert r.trades["commission"].tolist() == pytest.approx([2.0, 2.0])


def test_flip_long_to_short_trades_the_difference(es: ContractSpec) -> None:
    r = run_backtest(frame(OPEN5, CLOSE5), np.array([2, -1, 0, 0, 0]), es, CFG)
    # bar 1: buy 2 at 4003.25; bar 2: sell 3 at 4007.75 (4008.00 - 0.25): 3 contracts of costs;
    # bar 3: buy 1 back at 4006.75.
    # long leg: (4007.75 - 4003.25) x 2 x 50 = +450.00; short leg: (4007.75 - 4006.75) x 1 x 50 = +50.00
    # commission: (2 + 3 + 1) x 2.10 = 12.60  ->  450 + 50 - 12.60 = 487.40
    assert r.trades["contracts"].tolist() == [2, -3, 1]
    assert r.trades["price"].tolist() == pytest.approx([4003.25, 4007.75, 4006.75])
    assert r.trades["commission"].tolist() == pytest.approx([4.20, 6.30, 2.10])
    assert r.net_pnl == pytest.approx(487.40, abs=USD)


def test_result_frames_keep_dtypes_and_positions(es: ContractSpec) -> None:
    # a filtered frame (index 10..14) with tz-aware ts: results are positional with
    # a fresh RangeIndex and keep the ts dtype (no object arrays of Timestamps)
    prices = frame(OPEN5, CLOSE5)
    prices.index = range(10, 15)
    r = run_backtest(prices, np.array(TARGET5), es, CFG)
    assert r.bars.index.tolist() == [0, 1, 2, 3, 4]
    assert r.bars["ts"].dtype == prices["ts"].dtype and str(r.bars["ts"].dt.tz) == "UTC"
    assert r.trades["ts"].dtype == prices["ts"].dtype
    assert r.trades["ts"].tolist() == [prices["ts"].iloc[1], prices["ts"].iloc[3]]
    assert r.bars["contract"].tolist() == ["ESH4"] * 5
    assert r.net_pnl == pytest.approx(291.60, abs=USD)


# --------------------------------------------------------------------------- (b) next close


def test_five_bar_es_next_close(es: ContractSpec) -> None:
    cfg = dataclasses.replace(CFG, fill="next_close")
    r = run_backtest(frame(OPEN5, CLOSE5), np.array(TARGET5), es, cfg)
    # bar 1: buy 2 at the close 4010.00 (fill 4010.25), costs 29.20   -> 99,970.80
    # bar 2: 2 x (4005.00 - 4010.00) x 50 = -500.00                    -> 99,470.80
    # bar 3: 2 x (4012.25 - 4005.00) x 50 = +725.00                    -> 100,195.80
    #        sell 2 at the close 4012.25 (fill 4012.00), costs 29.20   -> 100,166.60
    # check: (4012.00 - 4010.25) x 100 = 175.00 - 8.40 = 166.60
    assert r.bars["equity"].tolist() == pytest.approx(
        [100_000.00, 99_970.80, 99_470.80, 100_166.60, 100_166.60], abs=USD)
    assert r.bars["position"].tolist() == [0, 2, 2, 0, 0]
    assert r.trades["price"].tolist() == pytest.approx([4010.25, 4012.00])
    assert r.trades["ts"].tolist() == [r.bars["ts"][1], r.bars["ts"][3]]


def test_fill_rule_changes_the_config_hash() -> None:
    a, b = EngineConfig(), EngineConfig(fill="next_close")
    assert a.config_hash() == EngineConfig().config_hash()
    assert a.config_hash() != b.config_hash()


# --------------------------------------------------------------------------- (c) rolls

# ESH4 is held through bar 2 (the roll date); the switch to ESM4 happens at bar 2's close.
# Raw prices (points):
#   bar  contract  open     close    | ESM4 close on the roll date: 4050.00
#   0    ESH4      3998.00  4000.00  | gap = 4050.00 - 4020.00 = +30.00
#   1    ESH4      4001.00  4010.00  | Panama: ESH4 bars + 30.00
#   2    ESH4      4011.00  4020.00  (roll)
#   3    ESM4      4052.00  4060.00
#   4    ESM4      4058.00  4045.00
RAW_OPEN = [3998.0, 4001.0, 4011.0, 4052.0, 4058.0]
RAW_CLOSE = [4000.0, 4010.0, 4020.0, 4060.0, 4045.0]
GAP = 30.0
ADJ_OPEN = [o + GAP for o in RAW_OPEN[:3]] + RAW_OPEN[3:]      # 4028, 4031, 4041, 4052, 4058
ADJ_CLOSE = [c + GAP for c in RAW_CLOSE[:3]] + RAW_CLOSE[3:]   # 4030, 4040, 4050, 4060, 4045
ROLL = [False, False, True, False, False]
HELD = ["ESH4", "ESH4", "ESH4", "ESM4", "ESM4"]


def rolled_frame() -> pd.DataFrame:
    return frame(ADJ_OPEN, ADJ_CLOSE, raw_close=RAW_CLOSE, roll=ROLL, contract=HELD)


@pytest.mark.parametrize("side", [1, -1])
def test_roll_while_positioned(es: ContractSpec, side: int) -> None:
    pos = 2 * side
    r = run_backtest(rolled_frame(), np.full(5, pos), es, CFG)
    rolls = r.trades[r.trades["kind"] == "roll"]
    assert len(rolls) == 1
    roll = rolls.iloc[0]
    # one round trip: 2 x |2| x (2.10 + 1 x 0.25 x 50) = 4 x 14.60 = 58.40
    assert roll["commission"] == pytest.approx(2 * 2 * 2.10)       # 8.40
    assert roll["slippage"] == pytest.approx(2 * 2 * 1 * 0.25 * 50)  # 50.00
    assert roll["commission"] + roll["slippage"] == pytest.approx(58.40)
    assert roll["contracts"] == pos
    assert roll["ts"] == r.bars["ts"][2] and roll["contract"] == "ESH4"
    assert roll["price"] == pytest.approx(4050.0)          # adjusted close of the roll date
    assert roll["raw_price"] == pytest.approx(4020.0)      # ESH4 sold at its raw close
    assert roll["to_raw_price"] == pytest.approx(4050.0)   # ESM4 bought at its raw close

    entry = r.trades.iloc[0]
    assert entry["kind"] == "trade" and entry["contracts"] == pos
    # filled at bar 1's open 4031.00 adjusted = ESH4 raw 4001.00, +/- 1 tick
    assert entry["price"] == pytest.approx(4031.0 + side * 0.25)
    assert entry["raw_price"] == pytest.approx(4001.0 + side * 0.25)

    # P&L across the roll, from raw prices only:
    #   ESH4 from the raw fill 4001.00 to its roll close 4020.00 = +19.00 points
    #   ESM4 from its roll close 4050.00 to the last close 4045.00 = -5.00 points
    #   (19 - 5) x 2 x 50 = 1,400.00 (long); costs: entry 29.20 + roll 58.40 = 87.60
    old_leg = RAW_CLOSE[2] - RAW_OPEN[1]
    new_leg = RAW_CLOSE[4] - 4050.0
    costs = 2 * (2.10 + 12.50) + 2 * 2 * (2.10 + 12.50)
    assert r.net_pnl == pytest.approx(side * (old_leg + new_leg) * 2 * 50 - costs, abs=USD)
    assert r.trades[["commission", "slippage"]].to_numpy().sum() == pytest.approx(costs)
    if side == 1:
        # bar 1: -29.20 + 2 x 50 x (4040 - 4031) = +870.80           -> 100,870.80
        # bar 2: + 2 x 50 x (4050 - 4040) = +1,000.00, roll -58.40     -> 101,812.40
        # bar 3: + 2 x 50 x (4060 - 4050) = +1,000.00                  -> 102,812.40
        # bar 4: + 2 x 50 x (4045 - 4060) = -1,500.00                  -> 101,312.40
        assert r.bars["equity"].tolist() == pytest.approx(
            [100_000.00, 100_870.80, 101_812.40, 102_812.40, 101_312.40], abs=USD)
        assert r.bars["costs"].tolist() == pytest.approx([0.0, 29.20, 58.40, 0.0, 0.0], abs=USD)
        assert r.net_pnl == pytest.approx(1_312.40, abs=USD)


@pytest.mark.parametrize("target", [
    [0, 0, 0, 0, 0],     # never positioned
    [2, 0, 0, 2, 2],     # closed at the roll bar's open (flat at its close), reopened after
    [0, 0, 2, 2, 2],     # opened only after the roll date's close (filled at bar 3's open)
])
def test_no_roll_cost_when_flat_at_the_roll_close(es: ContractSpec, target: list[int]) -> None:
    r = run_backtest(rolled_frame(), np.array(target), es, CFG)
    assert (r.trades["kind"] == "roll").sum() == 0
    assert r.bars["position"][2] == 0
    # every cost is a plain trade: 14.60 per contract per side
    traded = np.abs(r.trades["contracts"]).sum()
    assert r.bars["costs"].sum() == pytest.approx(traded * 14.60, abs=USD)


def test_two_rolls_each_cost_a_round_trip_of_the_position(es: ContractSpec) -> None:
    n = 9
    close = 4000.0 + np.arange(n)
    roll = np.zeros(n, dtype=bool)
    roll[[3, 6]] = True
    # 3 contracts from bar 1, 1 contract from bar 5 (sell 2 at bar 5's open)
    target = np.array([3, 3, 3, 3, 1, 1, 1, 1, 1])
    r = run_backtest(frame(close, close, roll=roll), target, es, CFG)
    rolls = r.trades[r.trades["kind"] == "roll"]
    assert rolls["contracts"].tolist() == [3, 1]
    # 2 x 3 x 14.60 = 87.60 and 2 x 1 x 14.60 = 29.20
    assert (rolls["commission"] + rolls["slippage"]).tolist() == pytest.approx([87.60, 29.20])
    assert summarise(r)["roll_costs"] == pytest.approx(87.60 + 29.20)
    assert summarise(r)["rolls"] == 2.0


# --------------------------------------------------------------------------- (d) margin


def flat_frame(n: int, price: float = 4000.0) -> pd.DataFrame:
    return frame([price] * n, [price] * n)


def test_margin_cuts_to_affordable_whole_contracts(es: ContractSpec) -> None:
    cfg = EngineConfig(initial_capital=30_000.0, slippage_ticks=1.0)
    r = run_backtest(flat_frame(4), np.array([5, 5, 5, 5]), es, cfg)
    # floor(30,000 / 13,200) = 2 contracts affordable; 3 refused
    first = r.trades.iloc[0]
    assert first["contracts"] == 2 and first["refused"] == 3
    assert r.bars["position"].tolist() == [0, 2, 2, 2]
    assert r.bars["margin"][1] == pytest.approx(26_400.0)
    # costs on the 2 filled contracts only: 2 x 14.60 = 29.20
    assert r.bars["equity"][1] == pytest.approx(30_000.0 - 29.20, abs=USD)
    # later bars asking again for 5 are still refused 3, trading nothing
    later = r.trades.iloc[1:]
    assert (later["contracts"] == 0).all() and (later["refused"] == 3).all()
    assert summarise(r)["trades"] == 1.0  # refusal-only rows are not fills


def test_margin_cut_short_side(es: ContractSpec) -> None:
    cfg = EngineConfig(initial_capital=30_000.0, slippage_ticks=0.0)
    r = run_backtest(flat_frame(3), np.array([-5, -5, -5]), es, cfg)
    assert r.trades["contracts"].iloc[0] == -2 and r.trades["refused"].iloc[0] == 3


def test_nothing_affordable_refuses_everything(es: ContractSpec) -> None:
    cfg = EngineConfig(initial_capital=13_199.0, slippage_ticks=0.0)
    r = run_backtest(flat_frame(3), np.array([1, 1, 1]), es, cfg)
    assert r.bars["position"].tolist() == [0, 0, 0]
    assert r.trades["contracts"].tolist() == [0, 0] and r.trades["refused"].tolist() == [1, 1]
    assert r.final_equity == pytest.approx(13_199.0)


def test_reductions_are_never_refused(es: ContractSpec) -> None:
    # capital 30,000, long 2 at 4000 (no costs), then the price falls 200 points:
    # equity 30,000 - 2 x 200 x 50 = 10,000 < one contract's margin (13,200).
    cfg = EngineConfig(initial_capital=30_000.0, slippage_ticks=0.0, commission=0.0)
    close = [4000.0, 4000.0, 3800.0, 3800.0, 3800.0]
    r = run_backtest(frame(close, close), np.array([2, 2, 1, 0, 0]), es, cfg)
    assert r.bars["equity"][2] == pytest.approx(10_000.0)
    assert r.bars["position"].tolist() == [0, 2, 2, 1, 0]
    assert r.trades["refused"].tolist() == [0, 0, 0]
    assert r.trades["contracts"].tolist() == [2, -1, -1]


def test_increase_is_cut_never_turned_into_a_reduction(es: ContractSpec) -> None:
    # long 2, equity falls to 15,000: floor(15,000 / 13,200) = 1 affordable.
    # Asking for 5 keeps the 2 held (a reduction to 1 would be a trade nobody asked for).
    cfg = EngineConfig(initial_capital=30_000.0, slippage_ticks=0.0, commission=0.0)
    close = [4000.0, 4000.0, 3850.0, 3850.0, 3850.0]
    r = run_backtest(frame(close, close), np.array([2, 2, 5, 5, 5]), es, cfg)
    assert r.bars["equity"][2] == pytest.approx(15_000.0)   # 30,000 - 2 x 150 x 50
    assert r.bars["position"].tolist() == [0, 2, 2, 2, 2]
    assert r.trades["contracts"].tolist() == [2, 0, 0]
    assert r.trades["refused"].tolist() == [0, 3, 3]


def test_flip_is_margin_checked_on_the_new_side(es: ContractSpec) -> None:
    # long 2 with 30,000 equity (2 affordable); flip to -5: closing the long is free of
    # margin, the short side is cut to -2 and 3 are refused: trade -4 contracts.
    cfg = EngineConfig(initial_capital=30_000.0, slippage_ticks=0.0, commission=0.0)
    r = run_backtest(flat_frame(3), np.array([2, -5, -5]), es, cfg)
    assert r.trades["contracts"].tolist()[:2] == [2, -4]
    assert r.trades["refused"].tolist()[:2] == [0, 3]
    assert r.bars["position"].tolist() == [0, 2, -2]


def test_zero_margin_never_refuses(es: ContractSpec) -> None:
    spec = dataclasses.replace(es, initial_margin=0.0)
    r = run_backtest(flat_frame(3), np.array([500, 500, 500]), spec, EngineConfig(initial_capital=1_000.0))
    assert r.bars["position"].tolist() == [0, 500, 500]
    assert r.trades["refused"].sum() == 0


# margin per contract changing over time (``margins``: one value per bar).
# Capital 100,000, no costs, flat prices, so equity stays 100,000 throughout.
#   bar      0       1       2       3       4       5       6       7
#   margin   10,000  10,000  10,000  25,000  25,000  40,000  40,000  40,000
RISING = np.array([10_000.0] * 3 + [25_000.0] * 2 + [40_000.0] * 3)
NO_COSTS = EngineConfig(initial_capital=100_000.0, slippage_ticks=0.0, commission=0.0)


@pytest.mark.parametrize("fill", ["next_open", "next_close"])
def test_margin_rise_cuts_increases_but_never_reduces(es: ContractSpec, fill: str) -> None:
    cfg = dataclasses.replace(NO_COSTS, fill=fill)
    target = np.array([3, 3, 5, 5, 6, 6, 6, 6])
    r = run_backtest(flat_frame(8), target, es, cfg, RISING)
    # bar 1: buy 3 at margin 10,000 (10 would fit)                          -> 3, in use 30,000
    # bar 3: the margin rose to 25,000 on this bar; 5 wanted (decided at bar 2's close),
    #        floor(100,000 / 25,000) = 4 fit: buy 1, refuse 1                -> 4, in use 100,000
    # bar 4: 5 still wanted, 4 fit: refuse 1, trade nothing                  -> 4
    # bar 5: margin 40,000; 6 wanted, floor(100,000 / 40,000) = 2 fit < the 4 held:
    #        keep the 4 (never a reduction), refuse 2                        -> 4, in use 160,000
    assert r.bars["position"].tolist() == [0, 3, 3, 4, 4, 4, 4, 4]
    assert r.trades["contracts"].tolist() == [3, 1, 0, 0, 0, 0]
    assert r.trades["refused"].tolist() == [0, 1, 1, 2, 2, 2]
    assert r.trades["ts"].tolist() == r.bars["ts"][[1, 3, 4, 5, 6, 7]].tolist()
    assert r.bars["margin"].tolist() == [0.0, 30_000.0, 30_000.0, 100_000.0, 100_000.0,
                                         160_000.0, 160_000.0, 160_000.0]
    assert r.bars["equity"].tolist() == [100_000.0] * 8
    # margin in use = |position| x the bar's margin per contract, on every bar
    np.testing.assert_array_equal(r.bars["margin"].to_numpy(), np.abs(r.bars["position"].to_numpy()) * RISING)
    # the same targets at the catalogue's constant 13,200: floor(100,000 / 13,200) = 7, all filled
    flat = run_backtest(flat_frame(8), target, es, cfg)
    assert flat.bars["position"].tolist() == [0, 3, 3, 5, 5, 6, 6, 6]
    assert flat.trades["refused"].sum() == 0


def test_margin_rise_keeps_contracts_bought_before_it(es: ContractSpec) -> None:
    # 5 decided at bar 1's close fill on bar 2 at 10,000 (before the rise): all 5 are kept
    # through bars 3..7 although 5 x 25,000 = 125,000 and 5 x 40,000 = 200,000 exceed the equity;
    # a short side is treated alike
    for sign in (1, -1):
        r = run_backtest(flat_frame(8), sign * np.array([3, 5, 5, 5, 5, 5, 5, 5]), es, NO_COSTS, RISING)
        assert r.bars["position"].tolist() == [0, 3 * sign] + [5 * sign] * 6
        assert r.trades["refused"].sum() == 0
        assert r.bars["margin"].tolist() == [0.0, 30_000.0, 50_000.0, 125_000.0, 125_000.0,
                                             200_000.0, 200_000.0, 200_000.0]
        # reductions after the rise go through in full
        r = run_backtest(flat_frame(8), sign * np.array([5, 5, 5, 5, 2, 1, 1, 1]), es, NO_COSTS, RISING)
        assert r.bars["position"].tolist() == [0] + [5 * sign] * 4 + [2 * sign, sign, sign]
        assert r.trades["contracts"].tolist() == [5 * sign, -3 * sign, -1 * sign]
        assert r.trades["refused"].sum() == 0


def test_per_bar_margin_counts_the_trades_own_costs(es: ContractSpec) -> None:
    # as test_margin_check_counts_the_trades_own_costs, but the 13,200 is bar 1's entry of the
    # array (bars 0 and 2 say 99,999): 13,214.60 buys exactly 1 contract on bar 1
    margins = np.array([99_999.0, 13_200.0, 99_999.0])
    r = run_backtest(flat_frame(3), np.array([1, 1, 1]), es, EngineConfig(initial_capital=13_214.60), margins)
    assert r.bars["position"].tolist() == [0, 1, 1]
    assert r.bars["margin"].tolist() == pytest.approx([0.0, 13_200.0, 99_999.0])
    r = run_backtest(flat_frame(3), np.array([1, 1, 1]), es, EngineConfig(initial_capital=13_214.59), margins)
    assert r.bars["position"].tolist() == [0, 0, 0] and r.trades["refused"].tolist() == [1, 1]


def test_zero_margin_bars_are_not_checked(es: ContractSpec) -> None:
    # 0 on bar 1: no check there (500 contracts fill); bar 2's 13,200 refuses the next increase
    margins = np.array([13_200.0, 0.0, 13_200.0, 13_200.0])
    r = run_backtest(flat_frame(4), np.array([500, 600, 600, 600]), es, EngineConfig(initial_capital=1_000.0),
                     margins)
    assert r.bars["position"].tolist() == [0, 500, 500, 500]
    assert r.trades["refused"].tolist() == [0, 100, 100]
    assert r.bars["margin"].tolist() == [0.0, 0.0, 500 * 13_200.0, 500 * 13_200.0]


@pytest.mark.parametrize("fill", ["next_open", "next_close"])
@pytest.mark.parametrize("capital", [1_000_000.0, 40_000.0])  # margin never binds / binds often
def test_default_margins_are_bit_identical_to_the_catalogue_array(es: ContractSpec, fill: str,
                                                                  capital: float) -> None:
    prices, target = random_case(200, seed=3)
    cfg = EngineConfig(initial_capital=capital, fill=fill)
    default = run_backtest(prices, target, es, cfg)
    explicit = run_backtest(prices, target, es, cfg, np.full(len(prices), es.initial_margin))
    pd.testing.assert_frame_equal(default.bars, explicit.bars, check_exact=True)
    pd.testing.assert_frame_equal(default.trades, explicit.trades, check_exact=True)
    # an integer array is taken as float64
    as_int = run_backtest(prices, target, es, cfg, np.full(len(prices), 13_200, dtype=np.int64))
    pd.testing.assert_frame_equal(default.bars, as_int.bars, check_exact=True)
    if capital < 100_000:
        assert default.trades["refused"].sum() > 0  # the margin check did bind


@pytest.mark.parametrize("margins, message", [
    (np.full(4, 13_200.0), r"margins has shape \(4,\), prices have 5 rows"),
    (np.full((1, 5), 13_200.0), r"margins has shape \(1, 5\)"),
    (np.array([13_200.0, np.nan, 13_200.0, 13_200.0, 13_200.0]), "margins must be finite and >= 0"),
    (np.array([13_200.0, np.inf, 13_200.0, 13_200.0, 13_200.0]), "margins must be finite and >= 0"),
    (np.array([13_200.0, -1.0, 13_200.0, 13_200.0, 13_200.0]), "margins must be finite and >= 0"),
    (np.array(["13200"] * 5), "margins must be numbers"),
    (np.array([True] * 5), "margins must be numbers"),
])
def test_bad_margins_are_refused(es: ContractSpec, margins: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_backtest(frame(OPEN5, CLOSE5), np.array(TARGET5), es, CFG, margins)


# --------------------------------------------------------------------------- (e) no lookahead


def random_case(n: int, seed: int):
    rng = np.random.default_rng(seed)
    close = np.round((4000.0 + np.cumsum(rng.normal(0, 5, n))) * 4) / 4  # on the 0.25 tick grid
    open_ = close + rng.integers(-8, 9, n) * 0.25
    roll = np.zeros(n, dtype=bool)
    roll[10::15] = True
    target = rng.integers(-3, 4, n)
    return frame(open_, close, roll=roll), target


STATE = ["position", "equity", "margin", "costs", "pnl"]


@pytest.mark.parametrize("fill", ["next_open", "next_close"])
def test_changing_a_target_changes_nothing_before_the_next_bar(es: ContractSpec, fill: str) -> None:
    prices, target = random_case(60, seed=1)
    cfg = EngineConfig(initial_capital=1_000_000.0, fill=fill)
    base = run_backtest(prices, target, es, cfg)
    for t in (0, 7, 31, 58):
        changed = target.copy()
        changed[t] = target[t] + 2 if target[t] < 2 else -3
        r = run_backtest(prices, changed, es, cfg)
        pd.testing.assert_frame_equal(r.bars.iloc[: t + 1][STATE], base.bars.iloc[: t + 1][STATE])
        assert not r.bars.iloc[t + 1][STATE].equals(base.bars.iloc[t + 1][STATE])  # it is used at t+1
        before = base.trades["ts"] <= prices["ts"][t]
        pd.testing.assert_frame_equal(r.trades[r.trades["ts"] <= prices["ts"][t]], base.trades[before])
    # the last bar's target is never traded
    changed = target.copy()
    changed[-1] += 5
    pd.testing.assert_frame_equal(run_backtest(prices, changed, es, cfg).bars, base.bars)


@pytest.mark.parametrize("fill", ["next_open", "next_close"])
def test_changing_later_prices_changes_nothing_earlier(es: ContractSpec, fill: str) -> None:
    prices, target = random_case(60, seed=2)
    cfg = EngineConfig(initial_capital=1_000_000.0, fill=fill)
    base = run_backtest(prices, target, es, cfg)
    for k in (59, 40, 12):
        changed = prices.copy()
        changed.loc[k, ["open", "close"]] += [37.25, -61.5]
        r = run_backtest(changed, target, es, cfg)
        pd.testing.assert_frame_equal(r.bars.iloc[:k][STATE], base.bars.iloc[:k][STATE])
        assert r.bars["equity"][k] != base.bars["equity"][k] or base.bars["position"][k] == 0


# --------------------------------------------------------------------------- (f) validation


@pytest.mark.parametrize("target, message", [
    ([1.5, 0, 0, 0, 0], "whole contracts"),
    ([np.nan, 0, 0, 0, 0], "whole contracts"),
    ([np.inf, 0, 0, 0, 0], "whole contracts"),
    (["1", "0", "0", "0", "0"], "whole contracts"),
    ([1, None, 0, 0, 0], "whole contracts"),
    ([1, 0, 0, 0], r"shape \(4,\), prices have 5 rows"),
    ([[1, 0, 0, 0, 0]], "shape"),
])
def test_bad_targets_are_refused(es: ContractSpec, target, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_backtest(frame(OPEN5, CLOSE5), np.array(target, dtype=object if None in target else None), es, CFG)


def test_integer_valued_float_targets_are_accepted(es: ContractSpec) -> None:
    r = run_backtest(frame(OPEN5, CLOSE5), np.array(TARGET5, dtype=float), es, CFG)
    assert r.net_pnl == pytest.approx(291.60, abs=USD)


@pytest.mark.parametrize("column", ["open", "close"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_prices_are_refused(es: ContractSpec, column: str, bad: float) -> None:
    prices = frame(OPEN5, CLOSE5)
    prices.loc[3, column] = bad
    with pytest.raises(ValueError, match=f"prices.{column} has non-finite values"):
        run_backtest(prices, np.array(TARGET5), es, CFG)


@pytest.mark.parametrize("kwargs, message", [
    (dict(initial_capital=0.0), "initial_capital must be"),
    (dict(initial_capital=-5.0), "initial_capital must be"),
    (dict(initial_capital=float("nan")), "initial_capital must be"),
    (dict(initial_capital=float("inf")), "initial_capital must be"),
    (dict(slippage_ticks=-1.0), "slippage_ticks must be"),
    (dict(slippage_ticks=float("nan")), "slippage_ticks must be"),
    (dict(commission=-0.01), "commission must be"),
    (dict(commission=float("nan")), "commission must be"),
    (dict(fill="vwap"), "fill must be 'next_open' or 'next_close', got 'vwap'"),
])
def test_bad_engine_config_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EngineConfig(**kwargs)


def test_empty_prices_give_an_empty_result(es: ContractSpec) -> None:
    r = run_backtest(frame([], []), np.array([], dtype=np.int64), es, CFG)
    assert len(r.bars) == 0 and len(r.trades) == 0
    assert r.final_equity == CAPITAL and r.net_pnl == 0.0


# --------------------------------------------------------------------------- (g) strategies


def numpy_sma_signal(close: np.ndarray, fast: int, slow: int) -> np.ndarray:
    """Independent SMA crossover: cumulative sums, no pandas."""
    cs = np.concatenate([[0.0], np.cumsum(close)])

    def sma(k: int) -> np.ndarray:
        out = np.full(len(close), np.nan)
        out[k - 1:] = (cs[k:] - cs[:-k]) / k
        return out

    diff = sma(fast) - sma(slow)
    return np.where(np.isnan(diff), 0, np.sign(diff)).astype(np.int64), diff


def test_sma_crossover_by_hand() -> None:
    close = np.array([1, 2, 3, 4, 5, 4, 3, 2, 1], dtype=float)
    # SMA2: -, 1.5, 2.5, 3.5, 4.5, 4.5, 3.5, 2.5, 1.5
    # SMA3: -, -,   2,   3,   4,   4.333, 4, 3,   2
    # diff: -, -,  .5,  .5,  .5,  .167, -.5, -.5, -.5
    assert sma_crossover(close, fast=2, slow=3).tolist() == [0, 0, 1, 1, 1, 1, -1, -1, -1]


def test_sma_crossover_matches_numpy() -> None:
    rng = np.random.default_rng(7)
    close = 4000.0 + np.cumsum(rng.normal(0, 10, 2_000))
    for fast, slow in [(5, 20), (20, 100), (1, 2)]:
        got = sma_crossover(close, fast=fast, slow=slow)
        want, diff = numpy_sma_signal(close, fast, slow)
        assert got.dtype == np.int64
        assert (got[: slow - 1] == 0).all() and (got[slow - 1:] != 0).all()
        # pandas' rolling mean and cumsum differences differ by ~1e-12: no near-ties here
        assert np.nanmin(np.abs(diff)) > 1e-6
        np.testing.assert_array_equal(got, want)


def test_sma_crossover_flat_prices_give_no_signal() -> None:
    assert (sma_crossover(np.full(50, 4012.25), fast=3, slow=10) == 0).all()


@pytest.mark.parametrize("fast, slow", [(20, 20), (30, 20), (0, 5), (2.0, 5), (2, "5")])
def test_sma_crossover_refuses_bad_windows(fast, slow) -> None:
    with pytest.raises(StrategyError, match=r"sma_crossover: need integers 1 <= fast < slow"):
        sma_crossover(np.arange(30.0), fast=fast, slow=slow)


def test_ml_signal_thresholds() -> None:
    p = np.array([0.70, 0.55, 0.56, 0.45, 0.44, 0.50, np.nan, 0.0, 1.0])
    # > 0.55 long; < 1 - 0.55 = 0.45 short; the thresholds themselves and NaN are flat
    assert ml_signal(p, threshold=0.55).tolist() == [1, 0, 1, 0, -1, 0, 0, -1, 1]
    # threshold 0.5: everything but exactly 0.5 (and NaN) is traded
    assert ml_signal(p, threshold=0.5).tolist() == [1, 1, 1, -1, -1, 0, 0, -1, 1]


@pytest.mark.parametrize("threshold", [0.49, 1.0, float("nan"), "0.6", None])
def test_ml_signal_refuses_bad_threshold(threshold) -> None:
    with pytest.raises(StrategyError, match="ml_signal: threshold must be in"):
        ml_signal(np.array([0.6]), threshold=threshold)


def test_validate_params_defaults_and_merging() -> None:
    assert validate_params("sma_crossover", {}) == {"fast": 20, "slow": 100}
    assert validate_params("sma_crossover", {"fast": 5}) == {"fast": 5, "slow": 100}
    assert validate_params("ml_signal", {}) == {"threshold": 0.55}
    assert set(STRATEGIES) >= {"sma_crossover", "ml_signal"}


@pytest.mark.parametrize("value", [20.0, np.float64(20.0), np.int64(20), np.int32(20)])
def test_integer_valued_numbers_accepted_for_int_params(value) -> None:
    merged = validate_params("sma_crossover", {"fast": value, "slow": 100.0})
    assert merged == {"fast": 20, "slow": 100}
    assert type(merged["fast"]) is int and type(merged["slow"]) is int
    # and the merged parameters run
    assert len(sma_crossover(np.arange(200.0), **merged)) == 200


def test_int_accepted_for_float_param() -> None:
    merged = validate_params("ml_signal", {"threshold": np.float32(0.75)})
    assert type(merged["threshold"]) is float
    assert validate_params("ml_signal", {"threshold": 1})["threshold"] == 1.0  # type ok; range checked later


@pytest.mark.parametrize("params, message", [
    ({"fast": 20.5}, r"sma_crossover: parameter fast must be an integer, got 20\.5"),
    ({"slow": "100"}, r"sma_crossover: parameter slow must be an integer, got '100'"),
    ({"fast": True}, r"sma_crossover: parameter fast must be an integer, got True"),
    ({"fast": float("nan")}, r"sma_crossover: parameter fast must be an integer"),
    ({"fast": None}, r"sma_crossover: parameter fast must be an integer, got None"),
    ({"fats": 5}, r"sma_crossover: unknown parameter\(s\) \['fats'\]; known: \['fast', 'slow'\]"),
])
def test_validate_params_names_the_bad_parameter(params: dict, message: str) -> None:
    with pytest.raises(StrategyError, match=message):
        validate_params("sma_crossover", params)


def test_validate_params_float_param_errors() -> None:
    with pytest.raises(StrategyError, match=r"ml_signal: parameter threshold must be a number, got 'high'"):
        validate_params("ml_signal", {"threshold": "high"})
    with pytest.raises(StrategyError, match=r"ml_signal: parameter threshold must be a number, got False"):
        validate_params("ml_signal", {"threshold": False})


def test_unknown_strategy_is_named() -> None:
    with pytest.raises(StrategyError, match=r"unknown strategy 'sma_cross'; known: .*ml_signal.*sma_crossover"):
        validate_params("sma_cross", {})


def test_strategy_signal_runs_templates_and_names_missing_columns() -> None:
    prices = frame(OPEN5 * 10, CLOSE5 * 10)
    got = strategy_signal("sma_crossover", prices, {"fast": 2.0, "slow": 4})
    np.testing.assert_array_equal(got, sma_crossover(prices["close"].to_numpy(), fast=2, slow=4))
    with pytest.raises(StrategyError, match=r"ml_signal: input frame lacks column\(s\) \['prob_up'\]"):
        strategy_signal("ml_signal", prices, {})
    with pytest.raises(StrategyError, match=r"sma_crossover: need integers 1 <= fast < slow"):
        strategy_signal("sma_crossover", prices, {"fast": 10, "slow": 5})


def test_margin_check_counts_the_trades_own_costs(es: ContractSpec) -> None:
    # ES: margin 13,200; one fill costs 2.10 commission + 1 tick (0.25 x 50 = 12.50) slippage = 14.60.
    # Equity 13,200 cannot carry 1 contract after paying 14.60 for it: refused.
    r = run_backtest(flat_frame(3), np.array([1, 1, 1]), es, EngineConfig(initial_capital=13_200.0))
    assert r.bars["position"].tolist() == [0, 0, 0]
    assert int(r.trades["refused"].iloc[0]) == 1
    # 13,214.60 is exactly enough: after costs the equity equals the margin in use.
    r = run_backtest(flat_frame(3), np.array([1, 1, 1]), es, EngineConfig(initial_capital=13_214.60))
    assert r.bars["position"].tolist() == [0, 1, 1]
    assert r.bars["equity"].iloc[1] == pytest.approx(13_200.0, abs=1e-9)
    assert (r.bars["margin"] <= r.bars["equity"] + 1e-9).all()


def test_a_ruined_account_is_summarised_not_crashed(es: ContractSpec) -> None:
    from fbt_pipelines.engine.summary import summarise

    # long 10 ES from 4000 on 20,000 USD with no margin check; price falls 100 points:
    # loss 10 x 100 x 50 = 50,000 > equity -> equity negative, the account is ruined
    frame = flat_frame(4)
    frame.loc[2:, ["open", "close", "raw_close"]] = 3900.0
    spec = dataclasses.replace(es, initial_margin=0.0)
    result = run_backtest(frame, np.array([10, 10, 10, 10]), spec, EngineConfig(initial_capital=20_000.0,
                                                                                  slippage_ticks=0.0))
    assert result.bars["equity"].min() < 0
    s = summarise(result)
    assert s["ruined"] == 1.0 and np.isnan(s["sharpe"]) and np.isnan(s["cagr"]) and s["max_drawdown"] > 1.0
