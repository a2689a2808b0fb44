"""Buffering, fixed fractional, fractional Kelly and the margin cap, on hand-worked numbers."""

import numpy as np
import pytest

from fbt_pipelines.portfolio.sizing import (buffer_width, buffered_positions, fixed_fractional_contracts,
                                            kelly_contracts, kelly_fraction, margin_cap)


def test_buffer_trades_only_outside_and_to_the_edge():
    # optimum 10.0 with buffer 1.5 -> zone [round(8.5), round(11.5)] = [8, 12] (numpy rounds half to even)
    optimal = np.array([10.0, 10.4, 11.0, 14.0, 13.0, 5.0, np.nan, 5.2])
    held = buffered_positions(optimal, 1.5, start=0)
    # bar 0: 0 < 8 -> buy to 8 ; bar 1: zone [round(8.9)=9, round(11.9)=12], 8 < 9 -> 9
    # bar 2: zone [10, 12] -> 10 ; bar 3: zone [12, 16] -> 12 ; bar 4: zone [12, 14] -> stays 12
    # bar 5: zone [4, 6] (round(3.5)=4, round(6.5)=6) -> sell to 6 ; bar 6: NaN -> hold 6 ; bar 7: [4, 7] -> 6
    assert held.tolist() == [8, 9, 10, 12, 12, 6, 6, 6]
    assert held.dtype == np.int64
    # zero buffer = plain rounding of the optimum
    assert buffered_positions(np.array([1.2, -2.7]), 0.0).tolist() == [1, -3]


def test_buffer_cuts_turnover_on_a_noisy_optimum():
    rng = np.random.default_rng(0)
    optimal = 20 + rng.normal(0, 1.0, 500)
    plain = np.round(optimal)
    buffered = buffered_positions(optimal, 2.0, start=20)
    assert np.abs(np.diff(buffered)).sum() < 0.2 * np.abs(np.diff(plain)).sum()
    assert (np.abs(buffered - optimal) <= 2.0 + 0.5).all()


def test_buffer_width_is_a_fraction_of_the_average_position():
    # budget 150,000 USD of risk, one contract 15,000 USD of vol -> average position 10 contracts -> 10% = 1
    assert buffer_width(np.array([15_000.0]), 150_000.0, 0.1)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        buffer_width(np.array([1.0]), 1.0, 1.5)


def test_fixed_fractional_by_hand():
    # 1,000,000 USD x 1% = 10,000 USD at risk; ES stop 20 points x 50 USD = 1,000 USD per contract -> 10
    assert fixed_fractional_contracts(1_000_000, 0.01, 20.0, 50.0) == 10
    # 21 points -> 1,050 per contract -> 9.52 -> 9 (rounded down: never risk more than 1%)
    assert fixed_fractional_contracts(1_000_000, 0.01, 21.0, 50.0) == 9
    # a EUR contract: FESX 10 EUR/point, stop 50 points, EURUSD 1.10 -> 550 USD per contract -> 18.18 -> 18
    assert fixed_fractional_contracts(1_000_000, 0.01, 50.0, 10.0, fx_rate=1.10) == 18
    assert fixed_fractional_contracts(-5.0, 0.01, 20.0, 50.0) == 0
    with pytest.raises(ValueError):
        fixed_fractional_contracts(1e6, 0.0, 20.0, 50.0)


def test_kelly_fraction_by_hand():
    r = np.array([0.02, -0.01, 0.03, 0.00])
    mean = 0.01
    var = ((0.01**2) + (0.02**2) + (0.02**2) + (0.01**2)) / 3  # ddof=1 = 0.000333...
    assert kelly_fraction(r, fraction=1.0, cap=100.0) == pytest.approx(mean / var)  # 30
    assert kelly_fraction(r, fraction=0.25, cap=100.0) == pytest.approx(7.5)
    assert kelly_fraction(r, fraction=0.25, cap=2.0) == 2.0  # capped
    assert kelly_fraction(-r, fraction=0.5) == 0.0  # a losing strategy gets no leverage
    assert kelly_fraction(np.array([0.01, 0.01, np.nan])) == 0.0  # zero variance


def test_kelly_contracts_by_hand():
    # leverage 1.5 on 2,000,000 USD = 3,000,000 notional; CL at 75.00 x 1,000 = 75,000 per contract -> 40
    assert kelly_contracts(2_000_000, 1.5, 75.0, 1000.0) == 40
    assert kelly_contracts(2_000_000, 1.5, 75.0, 1000.0, direction=-1) == -40
    # EUR contract: 3,000,000 / (5,000 x 10 EUR x 1.2 USD/EUR = 60,000 USD) = 50
    assert kelly_contracts(2_000_000, 1.5, 5_000.0, 10.0, fx_rate=1.2, direction=1) == 50
    assert kelly_contracts(2_000_000, 0.0, 75.0, 1000.0) == 0


def test_margin_cap_by_hand():
    # 50% of 100,000 USD = 50,000 of margin at 6,000 per contract -> 8 contracts at most
    capped = margin_cap(np.array([3, 12, -12, 0]), 100_000.0, 6_000.0, 0.5)
    assert capped.tolist() == [3, 8, -8, 0]
    # per-bar equity; exactly 50,000 / 5,000 = 10 is allowed (edge), no equity -> 0
    assert margin_cap(np.array([20, 20, 20]), np.array([100_000.0, 80_000.0, -1.0]), 5_000.0).tolist() == [10, 8, 0]
    with pytest.raises(ValueError):
        margin_cap(1, 1.0, 0.0)


def test_market_targets_without_buffer_equal_contracts_for_risk_and_buffer_trades_less():
    import pandas as pd

    from fbt_pipelines.catalog import market_spec
    from fbt_pipelines.engine.strategies import strategy_signal, validate_params
    from fbt_pipelines.portfolio.sizing import VolTargetConfig, contracts_for_risk
    from fbt_pipelines.portfolio.targets import market_targets

    rng = np.random.default_rng(2)
    n = 400
    raw = 4000 * np.cumprod(1 + rng.normal(0.0002, 0.012, n))
    prices = pd.DataFrame({"ts": pd.bdate_range("2020-01-01", periods=n, tz="UTC"), "contract": "ESH2020",
                           "open": raw, "high": raw, "low": raw, "close": raw, "raw_close": raw, "roll": False,
                           "volume": 1000, "open_interest": 1000})
    spec, sizing = market_spec("ES"), VolTargetConfig(capital=10_000_000.0)
    params = {"fast": 8}
    frame, plain = market_targets(prices, spec, "ewmac", params, sizing, 0.5)
    expected = contracts_for_risk(frame, strategy_signal("ewmac", frame, validate_params("ewmac", params)),
                                  spec, 0.5, sizing)
    assert np.array_equal(plain, expected) and np.abs(plain).max() > 5
    _, buffered = market_targets(prices, spec, "ewmac", params, sizing, 0.5, buffer_fraction=0.1)
    assert np.abs(np.diff(buffered)).sum() < np.abs(np.diff(plain)).sum()
    assert np.abs(buffered - plain).max() <= np.ceil(0.1 * np.abs(plain).max()) + 2


def test_fixed_fractional_and_kelly_capped_by_margin():
    # fixed fractional wants 10 ES contracts (see above); margin 13,200 each, 50% of 200,000 = 100,000 -> 7
    assert fixed_fractional_contracts(200_000, 0.05, 20.0, 50.0) == 10
    assert fixed_fractional_contracts(200_000, 0.05, 20.0, 50.0, initial_margin=13_200.0) == 7
    # Kelly: 1.5 x 2,000,000 / 75,000 = 40 CL short; 50% of 2,000,000 / 6,000 = 166 -> not binding; 30% at 40,000 -> 15
    assert kelly_contracts(2_000_000, 1.5, 75.0, 1000.0, direction=-1, initial_margin=6_000.0) == -40
    assert kelly_contracts(2_000_000, 1.5, 75.0, 1000.0, direction=-1, initial_margin=40_000.0,
                           max_margin_fraction=0.3) == -15
