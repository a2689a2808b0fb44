"""fbt_pipelines.risk.overfitting: deflated Sharpe ratio and CSCV PBO.

DSR is checked against the worked example of Bailey & Lopez de Prado (2014,
section "A numerical example"), recomputed by hand below, plus its limiting
cases and monotonicity; PBO against a brute-force loop over combinations and
its two textbook regimes (pure noise ~0.5, a real persistent edge ~0).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from fbt_pipelines.risk.overfitting import (
    EULER_MASCHERONI,
    cscv_logits,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
)

# --------------------------------------------------------------------------- DSR


def test_dsr_hand_example_bailey_lopez_de_prado() -> None:
    # The paper's example: annualised SR 2.5 over 5 years of daily data
    # (T = 1250, 250 days a year), skew -3, Pearson kurtosis 10, best of N = 100
    # trials whose annualised Sharpe ratios have variance 0.5.
    # Per-period units (what the function takes):
    #   SR   = 2.5 / sqrt(250)            = 0.158114
    #   V    = 0.5 / 250                  = 0.002,   sqrt(V) = 0.044721
    # Expected maximum Sharpe of 100 skill-less trials, gamma = 0.577216:
    #   Phi^-1(1 - 1/100)       = Phi^-1(0.99)     = 2.326348
    #   Phi^-1(1 - 1/(100 e))   = Phi^-1(0.996321) = 2.680210
    #   SR0 = 0.044721 * (0.422784 * 2.326348 + 0.577216 * 2.680210)
    #       = 0.044721 * (0.983542 + 1.547060) = 0.044721 * 2.530602 = 0.113172
    #   (annualised: 0.113172 * sqrt(250) = 1.789)
    # PSR denominator: 1 - skew * SR + (kurt - 1) / 4 * SR^2
    #       = 1 + 3 * 0.158114 + 9/4 * 0.025 = 1 + 0.474342 + 0.05625 = 1.530592
    #   z   = (0.158114 - 0.113172) * sqrt(1249) / sqrt(1.530592)
    #       = 0.044942 * 35.341194 / 1.237171 = 1.283816
    #   DSR = Phi(1.283816) = 0.9004   (the paper reports 0.9004)
    sr, var = 2.5 / math.sqrt(250), 0.5 / 250
    assert expected_max_sharpe(100, var) == pytest.approx(0.113172, abs=1e-6)
    dsr = deflated_sharpe_ratio(sr, n_trials=100, sharpe_trials_var=var, n_obs=1250, skew=-3.0, kurtosis=10.0)
    assert dsr == pytest.approx(0.9004, abs=5e-5)
    assert dsr == pytest.approx(norm.cdf(1.283816), abs=1e-6)


def test_dsr_is_psr_against_zero_without_selection() -> None:
    sr, n_obs, skew, kurt = 0.08, 500, -0.4, 5.0
    # PSR(SR* = 0) by hand: Phi(SR sqrt(T - 1) / sqrt(1 - skew SR + (kurt - 1)/4 SR^2)).
    psr0 = norm.cdf(sr * math.sqrt(n_obs - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2))
    assert probabilistic_sharpe_ratio(sr, 0.0, n_obs, skew, kurt) == pytest.approx(psr0, rel=1e-12)
    assert deflated_sharpe_ratio(sr, 1, 0.0, n_obs, skew, kurt) == pytest.approx(psr0, rel=1e-12)
    assert deflated_sharpe_ratio(sr, 1, 0.01, n_obs, skew, kurt) == pytest.approx(psr0, rel=1e-12)
    assert deflated_sharpe_ratio(sr, 500, 0.0, n_obs, skew, kurt) == pytest.approx(psr0, rel=1e-12)
    # Normal returns (skew 0, kurtosis 3) and SR = 0: exactly a coin flip.
    assert deflated_sharpe_ratio(0.0, 1, 0.0, 100, 0.0, 3.0) == 0.5


def test_dsr_monotone_in_trials_and_variance() -> None:
    args = {"n_obs": 1_000, "skew": 0.0, "kurtosis": 3.0}
    by_trials = [deflated_sharpe_ratio(0.1, n, 0.001, **args) for n in (1, 2, 5, 10, 100, 1_000, 10**6)]
    assert all(a > b for a, b in itertools.pairwise(by_trials))
    by_var = [deflated_sharpe_ratio(0.1, 50, v, **args) for v in (0.0, 1e-4, 1e-3, 1e-2)]
    assert all(a > b for a, b in itertools.pairwise(by_var))
    # More observations of the same Sharpe above SR0: more confidence.
    by_obs = [deflated_sharpe_ratio(0.1, 50, 1e-4, n, 0.0, 3.0) for n in (100, 1_000, 10_000)]
    assert all(a < b for a, b in itertools.pairwise(by_obs))


def test_expected_max_sharpe_approximates_simulated_maximum() -> None:
    # Mean of the max of N iid N(0, V) draws, simulated (20,000 x 100): within 3 %.
    var = 0.002
    draws = np.random.default_rng(0).normal(0.0, math.sqrt(var), size=(20_000, 100))
    assert expected_max_sharpe(100, var) == pytest.approx(draws.max(axis=1).mean(), rel=0.03)
    g = EULER_MASCHERONI
    assert expected_max_sharpe(2, 1.0) == pytest.approx(g * norm.ppf(1 - 1 / (2 * math.e)), rel=1e-12)


def test_dsr_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="Pearson"):  # excess kurtosis passed by mistake
        deflated_sharpe_ratio(0.1, 10, 0.001, 1_000, skew=0.0, kurtosis=0.0)
    with pytest.raises(ValueError, match="n_trials"):
        deflated_sharpe_ratio(0.1, 0, 0.001, 1_000, 0.0, 3.0)
    with pytest.raises(ValueError, match="sharpe_trials_var"):
        deflated_sharpe_ratio(0.1, 10, -0.001, 1_000, 0.0, 3.0)
    with pytest.raises(ValueError, match="n_obs"):
        deflated_sharpe_ratio(0.1, 10, 0.001, 1, 0.0, 3.0)


# --------------------------------------------------------------------------- PBO


def _brute_force_logits(pnl: pd.DataFrame, n_splits: int) -> np.ndarray:
    """Plain-loop CSCV: pandas Sharpe per half, argmax, average OOS rank."""
    blocks = np.array_split(np.arange(len(pnl)), n_splits)
    n = pnl.shape[1]
    out = []
    for combo in itertools.combinations(range(n_splits), n_splits // 2):
        is_rows = np.concatenate([blocks[i] for i in combo])
        oos_rows = np.concatenate([blocks[i] for i in range(n_splits) if i not in combo])
        is_sr = pnl.iloc[is_rows].mean() / pnl.iloc[is_rows].std()
        oos_sr = pnl.iloc[oos_rows].mean() / pnl.iloc[oos_rows].std()
        best = int(np.argmax(is_sr.to_numpy()))
        rank = oos_sr.rank(method="average").iloc[best]
        w = rank / (n + 1)
        out.append(math.log(w / (1 - w)))
    return np.array(out)


def test_cscv_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    pnl = pd.DataFrame(rng.normal(0.0, 1_000.0, size=(203, 7)) + np.linspace(-50, 50, 7),
                       index=pd.bdate_range("2020-01-01", periods=203))
    logits = cscv_logits(pnl, n_splits=8)
    assert logits.shape == (math.comb(8, 4),)
    np.testing.assert_allclose(logits, _brute_force_logits(pnl, 8), rtol=1e-12)


def test_pbo_pure_noise_is_about_one_half() -> None:
    # 100 skill-less strategies: in-sample selection carries no information, so the
    # winner's OOS rank is uniform and PBO ~ 0.5 (12,870 combinations, S = 16).
    pnl = pd.DataFrame(np.random.default_rng(11).normal(size=(1_600, 100)))
    pbo = probability_of_backtest_overfitting(pnl, n_splits=16)
    assert 0.3 < pbo < 0.7


def test_pbo_near_zero_with_persistent_edge() -> None:
    # Column 0 has a drift of 0.5 s.d. per day in every block (per-block Sharpe
    # ~0.5 +- 0.1 over 100 rows); it wins in sample and out of sample every time.
    rng = np.random.default_rng(12)
    values = rng.normal(size=(1_600, 50))
    values[:, 0] += 0.5
    logits = cscv_logits(values, n_splits=16)
    np.testing.assert_allclose(logits, math.log(50), rtol=1e-12)  # OOS rank 50 of 50: w = 50/51
    assert probability_of_backtest_overfitting(values) == 0.0


def test_pbo_deterministic_and_subsampled() -> None:
    pnl = np.random.default_rng(13).normal(size=(400, 30))
    a = probability_of_backtest_overfitting(pnl, n_splits=16)
    assert a == probability_of_backtest_overfitting(pnl.copy(), n_splits=16)
    # C(20, 10) = 184,756 > max_combinations: a seeded subset of distinct combinations.
    sub = cscv_logits(pnl, n_splits=20, max_combinations=500, seed=4)
    assert sub.shape == (500,)
    np.testing.assert_array_equal(sub, cscv_logits(pnl, n_splits=20, max_combinations=500, seed=4))
    assert probability_of_backtest_overfitting(pnl, 20, 500, 4) == float(np.mean(sub <= 0))


def test_pbo_flat_column_and_bad_input() -> None:
    values = np.random.default_rng(14).normal(size=(200, 5))
    values[:, 2] = 0.0  # a parameter set that never trades: Sharpe 0, not NaN
    assert np.isfinite(cscv_logits(values, n_splits=4)).all()
    with pytest.raises(ValueError, match="even"):
        probability_of_backtest_overfitting(values, n_splits=5)
    with pytest.raises(ValueError, match="2 rows per block"):
        probability_of_backtest_overfitting(values[:15], n_splits=8)
    with pytest.raises(ValueError, match="2 strategies"):
        probability_of_backtest_overfitting(values[:, :1])
    values[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        probability_of_backtest_overfitting(values)
