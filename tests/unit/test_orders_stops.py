"""Stop-loss, take-profit, trailing stop, limit entries: each rule worked by hand.

ES terms: 50 USD a point, commission 2.10 USD and 1 tick of slippage (0.25
points) per contract per side, 1,000,000 USD so that margin never binds. A
round trip of one contract costs 2 x 2.10 = 4.20 USD of commission, the
slippage being in the fill prices (buy +0.25, sell -0.25 points). Bars are
(open, high, low, close) in points; the rules are docs/guide.md's ("Orders
and margin").
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog.specs import ContractSpec, market_spec
from fbt_pipelines.engine.futures_engine import EngineConfig, run_backtest
from fbt_pipelines.engine.rules import Distance, DistanceUnit
from fbt_pipelines.usecases.spec import OrderSettings

CAP = 1_000_000.0


@pytest.fixture(scope="module")
def es() -> ContractSpec:
    return dataclasses.replace(market_spec("ES"), multiplier=50.0, tick_size=0.25, commission=2.10,
                               initial_margin=13_200.0, maintenance_margin=12_000.0)


def bars(*rows) -> pd.DataFrame:
    o, h, lo, c = (np.array(x, float) for x in zip(*rows))
    return pd.DataFrame({"ts": pd.date_range("2024-01-02", periods=len(c), tz="UTC"), "contract": "ESH4",
                         "open": o, "high": h, "low": lo, "close": c, "raw_close": c, "roll": False})


def run(es, prices, target, **orders):
    fill = orders.pop("fill", "next_open")
    return run_backtest(prices, np.asarray(target), es, EngineConfig(initial_capital=CAP, fill=fill, **orders),
                        maintenance_margins=12_000.0)


def trades(r) -> list[tuple]:
    t = r.trades
    return list(zip(t["ts"].dt.day, t["reason"], t["contracts"], t["price"]))


LONG_ENTRY = [(4000, 4005, 3995, 4000), (4000, 4010, 3990, 4005)]  # bars 0-1: buy 1 at bar 1's open, 4000.25


def test_gap_through_a_stop_exits_at_the_open(es) -> None:
    prices = bars(*LONG_ENTRY, (4005, 4010, 3970, 3975), (3950, 3955, 3940, 3945), (3945, 3950, 3940, 3948))
    r = run(es, prices, [1] * 5, stop_loss="40", take_profit="120")
    # stop 4000.25 - 40 = 3960.25, target 4120.25; bar 2's low 3970 stays above the stop; bar 3 opens at
    # 3950, below it: sold at the open, 3950 - 0.25 = 3949.75. P&L (3949.75 - 4000.25) x 50 - 4.20 = -2,529.20
    assert trades(r) == [(3, "signal", 1, 4000.25), (5, "stop", -1, 3949.75)]
    # closes: 1,000,000 - 14.60 + 5 x 50 = 1,000,235.40; - 30 x 50 = 998,735.40; then flat at 997,470.80
    np.testing.assert_allclose(r.equity, [CAP, 1_000_235.40, 998_735.40, 997_470.80, 997_470.80], rtol=0, atol=1e-9)


def test_both_touched_takes_the_stop(es) -> None:
    prices = bars(*LONG_ENTRY, (4005, 4125, 3960, 4000))
    r = run(es, prices, [1] * 3, stop_loss="40", take_profit="120")
    # bar 2 opens between the levels and touches both (low 3960 <= 3960.25, high 4125 >= 4120.25): the stop,
    # sold at 3960.25 - 0.25 = 3960.00. P&L (3960.00 - 4000.25) x 50 - 4.20 = -2,016.70
    assert trades(r)[-1] == (4, "stop", -1, 3960.00)
    assert r.equity[-1] == pytest.approx(CAP - 2_016.70, abs=1e-9)


@pytest.mark.parametrize("bar, price, pnl", [
    ((4005, 4125, 4000, 4100), 4120.00, (4120.00 - 4000.25) * 50 - 4.20),  # touched: at the target, 5,983.30
    ((4130, 4140, 4120, 4135), 4129.75, (4129.75 - 4000.25) * 50 - 4.20),  # opens above it: at the open, 6,470.80
])
def test_take_profit_at_the_level_or_at_a_gap(es, bar, price, pnl) -> None:
    r = run(es, bars(*LONG_ENTRY, bar), [1] * 3, stop_loss="40", take_profit="120")
    assert trades(r)[-1] == (4, "target", -1, price)
    assert r.equity[-1] == pytest.approx(CAP + pnl, abs=1e-9)


def test_after_a_stop_the_position_stays_flat_until_the_wanted_position_changes(es) -> None:
    prices = bars(*LONG_ENTRY, (4005, 4010, 3950, 3955), *[(3955, 3960, 3950, 3955)] * 5)
    # stopped out on bar 2 (low 3950 <= 3960.25) while the strategy wanted 1; it still wants 1 after bars
    # 2 and 3 (flat), then 0 after bar 4 (nothing to do: flat), then 1 again after bar 5: bought at bar 6's open
    r = run(es, prices, [1, 1, 1, 1, 0, 1, 1, 1], stop_loss="40")
    assert trades(r) == [(3, "signal", 1, 4000.25), (4, "stop", -1, 3960.00), (8, "signal", 1, 3955.25)]
    # a change of size is a change of the wanted position too: 1 -> 2 re-enters with 2 contracts
    r2 = run(es, prices, [1, 1, 1, 2, 2, 2, 2, 2], stop_loss="40")
    assert trades(r2)[2:] == [(6, "signal", 2, 3955.25)]


def test_the_trailing_stop_follows_the_best_close_and_acts_from_the_next_bar(es) -> None:
    prices = bars((4000, 4005, 3995, 4000), (4000, 4012, 3995, 4010), (4010, 4060, 4005, 4030),
                  (4030, 4035, 4010, 4020), (4020, 4025, 3995, 4000))
    r = run(es, prices, [1] * 5, trailing_stop="30")
    # entry 4000.25: reference 4000.25, level 3970.25 on bar 1 (low 3995: kept); close 4010 -> level 3980 on
    # bar 2 (low 4005); close 4030 -> level 4000 on bar 3 (its high 4060 does not count; low 4010: kept);
    # close 4020 < 4030: level stays 4000; bar 4's low 3995 reaches it: sold at 4000 - 0.25 = 3999.75
    assert trades(r) == [(3, "signal", 1, 4000.25), (6, "trailing_stop", -1, 3999.75)]
    assert r.equity[-1] == pytest.approx(CAP + (3999.75 - 4000.25) * 50 - 4.20, abs=1e-9)  # -29.20
    # with a looser fixed stop too, the tighter trailing level acts (same exit); with a tighter stop the stop acts
    r2 = run(es, prices, [1] * 5, trailing_stop="30", stop_loss="50")
    assert trades(r2)[-1] == (6, "trailing_stop", -1, 3999.75)
    r3 = run(es, prices, [1] * 5, trailing_stop="30", stop_loss="1")  # stop 3999.25: bar 1's low 3995 hits it
    assert trades(r3)[-1] == (3, "stop", -1, 3999.00)


def test_the_short_side_is_the_mirror_with_percent_distances(es) -> None:
    prices = bars(*LONG_ENTRY, (3990, 4045, 3985, 4040))
    r = run(es, prices, [-1] * 3, stop_loss="1%", take_profit="2%")
    # sold at 4000 - 0.25 = 3999.75; stop 3999.75 x 1.01 = 4039.7475, target 3999.75 x 0.98 = 3919.755;
    # bar 2's high 4045 reaches the stop: bought back at 4039.7475 + 0.25 = 4039.9975
    assert trades(r) == [(3, "signal", -1, 3999.75), (4, "stop", 1, pytest.approx(4039.9975, abs=1e-9))]
    assert r.equity[-1] == pytest.approx(CAP + (3999.75 - 4039.9975) * 50 - 4.20, abs=1e-9)  # -2,016.575


def test_next_close_entries_are_live_from_the_next_bar(es) -> None:
    prices = bars(*LONG_ENTRY, (3960, 3970, 3950, 3965))
    r = run(es, prices, [1] * 3, stop_loss="40", fill="next_close")
    # bought at bar 1's close, 4005.25 (its low 3990 is before the fill: no stop there); stop 3965.25;
    # bar 2 opens at 3960, beyond it: sold at 3959.75. P&L (3959.75 - 4005.25) x 50 - 4.20 = -2,279.20
    assert trades(r) == [(3, "signal", 1, 4005.25), (4, "stop", -1, 3959.75)]
    assert r.equity[-1] == pytest.approx(CAP - 2_279.20, abs=1e-9)


def test_an_entry_bar_touching_its_stop_exits_the_same_bar(es) -> None:
    prices = bars((4000, 4005, 3995, 4000), (4000, 4010, 3955, 4005))
    r = run(es, prices, [1, 1], stop_loss="40")
    # bought at 4000.25 at bar 1's open; its low 3955 reaches the stop 3960.25 later in the bar
    assert trades(r) == [(3, "signal", 1, 4000.25), (3, "stop", -1, 3960.00)]


def test_atr_distances_use_the_deciding_bars_atr(es) -> None:
    # every bar: high - low = 10 around a flat close, so every true range is 10 and ATR(14) = 10 from bar 14
    flat = [(4000, 4005, 3995, 4000)] * 16
    prices = bars(*flat, (4000, 4005, 3995, 4000), (4000, 4002, 3965, 3970))
    target = [0] * 15 + [1, 1, 1]  # decided at bar 15's close (ATR 10): stop 4000.25 - 3 x 10 = 3970.25
    r = run(es, prices, target, stop_loss="3atr")
    assert trades(r) == [(18, "signal", 1, 4000.25), (19, "stop", -1, 3970.00)]
    # decided before ATR exists (bar 0): no stop is placed
    r2 = run(es, prices, [1] * 18, stop_loss="3atr")
    assert trades(r2) == [(3, "signal", 1, 4000.25)]


def test_levels_are_kept_while_the_position_only_changes_size(es) -> None:
    prices = bars(*LONG_ENTRY, (4020, 4025, 4015, 4020), (4020, 4022, 3960, 3970))
    r = run(es, prices, [1, 2, 2, 2], stop_loss="40")
    # bought 1 at 4000.25 (stop 3960.25), 1 more at 4020.25 on bar 2: the stop stays 3960.25 (not 3980.25);
    # bar 3's low 3960 reaches it: both sold at 3960.00
    assert trades(r) == [(3, "signal", 1, 4000.25), (4, "signal", 1, 4020.25), (5, "stop", -2, 3960.00)]


def test_a_limit_that_never_fills_rests_until_the_wanted_position_changes(es) -> None:
    prices = bars(*[(4000, 4005, 3995, 4000)] * 5, (4000, 4005, 3980, 4000))
    r = run(es, prices, [1, 1, 1, 1, 0, 0], limit_offset="10")
    # buy limit at 4000 - 10 = 3990: lows of 3995 never reach it; the strategy then wants 0 (after bar 4):
    # the order is cancelled, so bar 5's low of 3980 fills nothing
    assert trades(r) == [] and np.all(r.equity == CAP)


@pytest.mark.parametrize("bar, price", [((3985, 3990, 3980, 3988), 3985.25),  # opens below the limit: at the open
                                        ((3995, 3998, 3988, 3992), 3990.25)])  # the low reaches it: at the limit
def test_a_limit_fills_at_the_open_or_at_its_price(es, bar, price) -> None:
    prices = bars((4000, 4005, 3995, 4000), (4000, 4005, 3992, 4000), bar)
    r = run(es, prices, [1, 1, 1], limit_offset="10")
    assert trades(r) == [(4, "limit", 1, price)]


def test_a_limit_entry_bar_can_touch_its_stop(es) -> None:
    prices = bars((4000, 4005, 3995, 4000), (3995, 3998, 3965, 3970))
    r = run(es, prices, [1, 1], limit_offset="10", stop_loss="20")
    # filled at 3990.25 inside bar 1; stop 3970.25; the same bar's low 3965 reaches it: sold at 3970.00
    assert trades(r) == [(3, "limit", 1, 3990.25), (3, "stop", -1, 3970.00)]


def test_a_flip_with_limits_closes_at_market_and_rests_the_new_side(es) -> None:
    prices = bars((4000, 4005, 3995, 4000), (4000, 4005, 3985, 4000), (4000, 4015, 3995, 4005),
                  (4006, 4020, 4000, 4010))
    r = run(es, prices, [1, -1, -1, -1], limit_offset="10")
    # bar 1: buy limit 3990 filled at 3990.25 (low 3985); the strategy then wants -1: bar 2 sells the long
    # at its open (3999.75) and rests a sell limit at bar 1's close + 10 = 4010; bar 2's high 4015 reaches it
    assert trades(r) == [(3, "limit", 1, 3990.25), (4, "signal", -1, 3999.75), (4, "limit", -1, 4009.75)]


@pytest.mark.parametrize("text, unit, value, label", [
    ("40", DistanceUnit.POINTS, 40.0, "40"), (40, DistanceUnit.POINTS, 40.0, "40"),
    ("12.5 points", DistanceUnit.POINTS, 12.5, "12.5"), ("2%", DistanceUnit.PERCENT, 2.0, "2%"),
    (" 3ATR", DistanceUnit.ATR, 3.0, "3atr"), (".5atr", DistanceUnit.ATR, 0.5, "0.5atr"),
])
def test_distances_parse(text, unit, value, label) -> None:
    d = Distance.parse(text, "stop_loss")
    assert (d.unit, d.value, d.label) == (unit, value, label)
    assert Distance.parse(d.label) == d


@pytest.mark.parametrize("text, message", [
    ("-40", "stop_loss must be a positive distance, got '-40'"),
    ("0", "stop_loss must be a positive distance, got '0'"),
    ("40pips", "stop_loss '40pips' is not a distance"),
    ("abc", "stop_loss 'abc' is not a distance"),
    ("nan", "stop_loss 'nan' is not a distance"),
    ("150%", "stop_loss '150%': a percentage distance must be below 100%"),
    (True, "stop_loss must be a distance like 40"),
])
def test_bad_distances_name_the_option_and_the_value(text, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("%", "%")):
        Distance.parse(text, "stop_loss")
    with pytest.raises(ValueError, match="stop_loss"):
        EngineConfig(stop_loss=text)
    with pytest.raises(ValueError, match="stop_loss"):
        OrderSettings(stop_loss=text)


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True])
def test_bad_fixed_sizes_are_refused(value) -> None:
    with pytest.raises(ValueError, match=f"contracts must be a whole number >= 1, got {value!r}"):
        OrderSettings(contracts=value)


def test_orders_need_high_and_low(es) -> None:
    prices = bars(*LONG_ENTRY).drop(columns=["high", "low"])
    with pytest.raises(ValueError, match="need the bars' high and low; prices lack high, low"):
        run(es, prices, [1, 1], stop_loss="40")
    run(es, prices, [1, 1])  # market orders do not read them


def test_percent_distances_are_of_the_raw_price_of_the_held_contract(es) -> None:
    """Panama level 150, raw price 100 (an offset of 50 points from later rolls).

    Bought at bar 1's open, 150 + 0.25 = 150.25 adjusted = 100.25 raw. A 2 %
    stop is 2 % of the RAW entry, 2.005 points: 148.245 adjusted. Bar 2's low
    148.20 reaches it: sold at 148.245 - 0.25 = 147.995. (2 % of the Panama
    150.25 would be 3.005 points, a stop at 147.245 that the bar never
    reaches, and a level that moves whenever a later roll gap changes.)
    """
    rows = [(150, 151, 149, 150), (150, 151, 149.5, 150.5), (150.5, 150.75, 148.2, 149)]
    prices = bars(*rows).assign(raw_close=lambda f: f["close"] - 50.0)
    r = run(es, prices, [1] * 3, stop_loss="2%")
    assert trades(r) == [(3, "signal", 1, 150.25), (4, "stop", -1, pytest.approx(147.995, abs=1e-9))]
    # trailing 2 %: reference 150.25 (raw 100.25) -> level 148.245 on bar 1; close 150.5 -> 150.5 - 2 % of raw
    # 100.5 = 148.49 on bar 2; its low 148.2 reaches it: sold at 148.49 - 0.25 = 148.24
    r2 = run(es, prices, [1] * 3, trailing_stop="2%")
    assert trades(r2)[-1] == (4, "trailing_stop", -1, pytest.approx(148.24, abs=1e-9))
    # a 0.5 % buy limit below the deciding close 150 (raw 100): 150 - 0.5 = 149.5; bar 1's low 149.5 fills it
    r3 = run(es, prices, [1] * 3, limit_offset="0.5%")
    assert trades(r3)[0] == (3, "limit", 1, pytest.approx(149.75, abs=1e-9))
