"""The shared primitives (fbt_pipelines.primitives): returns of the held
contract, Wilder smoothing, RSI, ATR, annualisation, Sharpe and equity
validation, checked against numbers worked by hand and against empyrical."""

from __future__ import annotations

import math

import empyrical
import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.portfolio.sizing import VolTargetConfig
from fbt_pipelines.primitives.indicators import rsi, true_range, wilder_atr, wilder_mean
from fbt_pipelines.primitives.performance import (PERIODS_PER_YEAR, ZERO_VOL, annualisation, sharpe_from_moments,
                                                  sharpe_ratio, sharpe_ratios, validate_equity)
from fbt_pipelines.primitives.returns import contract_returns

NaN = np.nan


# --- returns of the held contract -----------------------------------------------------------------


def test_contract_returns_by_hand_across_a_roll():
    # Panama series rolled at bar 2 into a contract 2 points dearer: offset close - raw = 0, 0, -2, -2.
    # bar 1: 1 / 10; bar 2: +2 points over the held (new) contract's previous raw price 11 + 2 = 13;
    # bar 3: -1 point over 13 + 2 = 15.
    prices = pd.DataFrame({"close": [10.0, 11.0, 13.0, 12.0], "raw_close": [10.0, 11.0, 15.0, 14.0]},
                          index=[5, 6, 7, 8])
    r = contract_returns(prices)
    np.testing.assert_allclose(r.to_numpy(), [NaN, 0.1, 2 / 13, -1 / 15], rtol=1e-15, equal_nan=True)
    assert r.name == "ret_1" and list(r.index) == [5, 6, 7, 8]
    # the naive percentage change of the adjusted series is wrong on the roll bar
    assert abs(r.iloc[2] - 2 / 11) > 0.02


# --- Wilder smoothing, RSI, ATR -------------------------------------------------------------------


def test_wilder_mean_by_hand():
    # window 2: seed = mean(1, 2) = 1.5 at bar 2; then avg += (x - avg) / 2:
    # 1.5 + 1.5/2 = 2.25; 2.25 + 1.75/2 = 3.125; 3.125 + 1.875/2 = 4.0625
    x = pd.Series([NaN, 1.0, 2.0, 3.0, 4.0, 5.0], index=list("abcdef"))
    got = wilder_mean(x, 2)
    np.testing.assert_array_equal(got.to_numpy(), [NaN, NaN, 1.5, 2.25, 3.125, 4.0625])
    assert list(got.index) == list("abcdef")
    # too short for a seed: all NaN
    assert wilder_mean(x.iloc[:2], 2).isna().all()


def test_wilder_mean_rejects_a_window_below_one():
    with pytest.raises(ValueError, match="window"):
        wilder_mean(pd.Series([NaN, 1.0, 2.0]), 0)


def test_rsi_by_hand():
    # window 2; changes +1 -1 +2 +1 -> gains 1 0 2 1, losses 0 1 0 0
    # bar 2: avg gain 0.5, avg loss 0.5 -> RS 1 -> RSI 50
    # bar 3: gain 0.5 + (2 - 0.5)/2 = 1.25, loss 0.5 + (0 - 0.5)/2 = 0.25 -> RS 5 -> 100 - 100/6
    # bar 4: gain 1.25 + (1 - 1.25)/2 = 1.125, loss 0.125 -> RS 9 -> 90
    got = rsi(np.array([10.0, 11.0, 10.0, 12.0, 13.0]), 2)
    np.testing.assert_allclose(got, [NaN, NaN, 50.0, 250 / 3, 90.0], rtol=1e-13, equal_nan=True)


def test_rsi_limits():
    assert (rsi(np.full(10, 7.0), 3)[3:] == 50.0).all()  # no move at all: neutral
    assert (rsi(np.arange(10.0), 3)[3:] == 100.0).all()  # only gains
    assert (rsi(-np.arange(10.0), 3)[3:] == 0.0).all()  # only losses
    assert np.isnan(rsi(np.arange(10.0), 3)[:3]).all()


def test_true_range_and_atr_by_hand_with_talib_seeding():
    high = pd.Series([10.0, 11.0, 12.0, 11.0, 14.0], index=[100, 101, 102, 103, 104])
    low = pd.Series([9.0, 10.0, 10.0, 9.0, 12.0], index=high.index)
    close = pd.Series([9.5, 10.5, 11.5, 10.0, 13.0], index=high.index)
    # TR1 = max(11, 9.5) - min(10, 9.5) = 1.5; TR2 = max(12, 10.5) - min(10, 10.5) = 2;
    # TR3 = max(11, 11.5) - min(9, 11.5) = 2.5; TR4 = max(14, 10) - min(12, 10) = 4 (gap up)
    np.testing.assert_array_equal(true_range(high, low, close).to_numpy(), [NaN, 1.5, 2.0, 2.5, 4.0])
    # TA-Lib seeding: ATR3 = mean(TR1..TR3) = 2 (bar 0's high - low = 1 is not used),
    # then ATR4 = 2 + (4 - 2) / 3 = 8/3
    atr = wilder_atr(high, low, close, 3)
    np.testing.assert_allclose(atr.to_numpy(), [NaN, NaN, NaN, 2.0, 8 / 3], rtol=1e-15, equal_nan=True)
    assert list(atr.index) == [100, 101, 102, 103, 104]


# --- annualisation and Sharpe ---------------------------------------------------------------------


def test_annualisation():
    assert annualisation() == math.sqrt(252) == annualisation(PERIODS_PER_YEAR)
    assert annualisation(12) == math.sqrt(12)
    assert annualisation(1) == 1.0


def test_sharpe_of_four_returns_by_hand():
    # mean 0.01; deviations 0, -0.03, 0.02, 0.01 -> sum of squares 0.0014 -> var (ddof 1) 0.0014/3
    # per period: 0.01 / sqrt(0.0014/3) = sqrt(3/14); annualised x sqrt(252) = sqrt(54)
    r = np.array([0.01, -0.02, 0.03, 0.02])
    assert sharpe_ratio(r) == pytest.approx(math.sqrt(54), rel=1e-12)
    assert sharpe_ratio(r, 1) == pytest.approx(math.sqrt(3 / 14), rel=1e-12)
    assert sharpe_from_moments(0.01, math.sqrt(0.0014 / 3)) == pytest.approx(math.sqrt(54), rel=1e-12)
    assert isinstance(sharpe_from_moments(0.01, 0.02), float)


def test_zero_volatility_rule():
    # sd = 0 exactly, and too few returns: no Sharpe
    assert math.isnan(sharpe_ratio(np.full(10, 0.001)))
    assert math.isnan(sharpe_ratio(np.array([0.01])))
    assert math.isnan(sharpe_ratio(np.array([])))
    # two returns 2e-12 apart: sd (ddof 1) = 2e-12 / sqrt(2) = 1.41e-12, just above ZERO_VOL: defined,
    # mean 2e-12 -> per-period Sharpe sqrt(2)
    above = np.array([1e-12, 3e-12])
    assert ZERO_VOL < above.std(ddof=1) < 1.5 * ZERO_VOL
    assert sharpe_ratio(above, 1) == pytest.approx(math.sqrt(2), rel=1e-6)
    # 1.4e-12 apart: sd = 0.99e-12, at or below ZERO_VOL -> NaN
    below = np.array([1e-12, 2.4e-12])
    assert 0.9 * ZERO_VOL < below.std(ddof=1) <= ZERO_VOL
    assert math.isnan(sharpe_ratio(below))
    # the same rule in the moment form and the vectorised form
    assert math.isnan(sharpe_from_moments(0.01, ZERO_VOL))
    assert sharpe_from_moments(0.01, 2 * ZERO_VOL) > 0
    assert math.isnan(sharpe_from_moments(0.01, NaN))
    got = sharpe_ratios(np.column_stack([above, below, [0.5, 0.5]]), 1)
    assert got[0] == pytest.approx(math.sqrt(2), rel=1e-6) and np.isnan(got[1]) and np.isnan(got[2])


def test_sharpe_from_moments_keeps_the_pandas_index():
    mean = pd.Series([0.01, 0.02, 0.03], index=list("xyz"))
    sd = pd.Series([0.02, 0.0, NaN], index=list("xyz"))
    got = sharpe_from_moments(mean, sd, 4)
    assert list(got.index) == list("xyz")
    assert got["x"] == pytest.approx(0.01 / 0.02 * 2.0) and np.isnan(got["y"]) and np.isnan(got["z"])


def test_sharpe_ratios_are_the_columnwise_and_rowwise_sharpe():
    rng = np.random.default_rng(5)
    m = rng.normal(0.0005, 0.01, (250, 6))
    m[:, 4] = 0.002  # a flat column
    expected = [sharpe_ratio(m[:, j]) for j in range(m.shape[1])]
    np.testing.assert_allclose(sharpe_ratios(m), expected, rtol=1e-13, equal_nan=True)
    np.testing.assert_allclose(sharpe_ratios(m.T, axis=1), expected, rtol=1e-13, equal_nan=True)
    assert np.isnan(expected[4])
    assert np.isnan(sharpe_ratios(m[:1])).all() and sharpe_ratios(m[:1]).shape == (6,)
    with pytest.raises(ValueError, match="2-D"):
        sharpe_ratios(m[:, 0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sharpe_matches_empyrical_on_random_returns(seed):
    rng = np.random.default_rng(seed)
    r = rng.standard_t(4, size=500) * 0.01 + 0.0004
    assert sharpe_ratio(r) == pytest.approx(empyrical.sharpe_ratio(r), rel=1e-12)
    assert sharpe_ratio(r, 12) == pytest.approx(empyrical.sharpe_ratio(r, annualization=12), rel=1e-12)
    m = rng.normal(0.0, 0.02, (300, 4))
    np.testing.assert_allclose(sharpe_ratios(m), empyrical.sharpe_ratio(m), rtol=1e-12)


# --- equity validation ----------------------------------------------------------------------------

IDX = pd.bdate_range("2024-01-01", periods=4)


def test_validate_equity_returns_the_values():
    values = validate_equity(pd.Series([100, 110, 99, 120], index=IDX))
    assert values.dtype == float and values.tolist() == [100.0, 110.0, 99.0, 120.0]
    assert validate_equity(pd.Series([], dtype=float), min_points=0).size == 0


@pytest.mark.parametrize(("equity", "match"), [
    (pd.Series([100.0], index=IDX[:1]), "book equity needs at least 2 points, got 1"),
    (pd.Series([100.0, 101.0, 102.0, 103.0], index=IDX[::-1]), "book equity index must be sorted"),
    (pd.Series([100.0, 101.0, 102.0, 103.0], index=IDX[[0, 1, 1, 2]]), "no duplicate sessions"),
    (pd.Series([100.0, 0.0, 50.0, 60.0], index=IDX), r"book equity must be finite and > 0; got 0\.0 at 2024-01-02"),
    (pd.Series([100.0, 90.0, -5.0, 60.0], index=IDX), r"got -5\.0 at 2024-01-03"),
    (pd.Series([100.0, np.inf, 50.0, 60.0], index=IDX), "got inf"),
    (pd.Series([100.0, 90.0, 50.0, np.nan], index=IDX), "got nan"),
])
def test_validate_equity_names_what_is_wrong(equity, match):
    with pytest.raises(ValueError, match=match):
        validate_equity(equity, "book equity")


def test_validate_equity_wants_a_series():
    with pytest.raises(TypeError, match="equity must be a pandas Series, got list"):
        validate_equity([100.0, 110.0])  # type: ignore[arg-type]


# --- the one risk budget formula ------------------------------------------------------------------


def test_vol_target_budget():
    cfg = VolTargetConfig(capital=1e6, annual_risk_target=0.2, idm=1.5, vol_span=35)
    assert cfg.budget(0.5) == pytest.approx(1e6 * 0.2 * 0.5 * 1.5) == pytest.approx(150_000.0)
    assert cfg.budget() == pytest.approx(300_000.0)
