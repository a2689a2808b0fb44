"""fbt_pipelines.ml.monitoring: PSI against hand-worked numbers and known
shifts, per-feature drift with NaNs, rolling hit rate by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.ml.monitoring import (
    PSI_MODERATE,
    PSI_SIGNIFICANT,
    feature_drift,
    population_stability_index,
    rolling_accuracy,
)

NaN = np.nan


def test_psi_of_a_sample_against_itself_is_zero():
    x = np.random.default_rng(0).normal(size=5000)
    assert abs(population_stability_index(x, x)) < 1e-9
    assert abs(population_stability_index(x, x.copy(), bins=20)) < 1e-9
    # ties merge quantile edges (here 0, 0, 0.25 -> edges 0 and 0.25), still exactly 0 against itself
    d = np.array([0.0, 0.0, 0.0, 1.0])
    assert abs(population_stability_index(d, d, bins=4)) < 1e-9


def test_psi_two_bins_by_hand():
    # expected 1, 2, 3, 4: median 2.5 -> bins (-inf, 2.5], (2.5, inf), shares e = 0.5, 0.5
    # actual 1..8: 2 of 8 in the first bin (a = 0.25), 6 of 8 in the second (a = 0.75; 5..8 lie
    # beyond the expected range and still count, the outer bin is open)
    # PSI = (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    #     = 0.25 ln 2 + 0.25 ln 1.5 = 0.25 ln 3 = 0.274653...
    psi = population_stability_index(np.array([1.0, 2, 3, 4]), np.arange(1.0, 9.0), bins=2)
    assert psi == pytest.approx(0.25 * math.log(3.0), rel=1e-12)
    assert psi == pytest.approx(0.2746531, abs=1e-7)


def test_psi_empty_bin_uses_epsilon_by_hand():
    # actual 0, 1, 2: all in (-inf, 2.5] -> a = 1, 0 -> 0 is replaced by eps = 1e-4
    # PSI = (1 - 0.5) ln(1 / 0.5) + (1e-4 - 0.5) ln(1e-4 / 0.5)
    #     = 0.5 ln 2 + 0.4999 ln 5000 = 0.346574 + 4.257745 = 4.604319
    psi = population_stability_index(np.array([1.0, 2, 3, 4]), np.array([0.0, 1, 2]), bins=2)
    assert np.isfinite(psi)
    assert psi == pytest.approx(0.5 * math.log(2) + 0.4999 * math.log(5000), rel=1e-12)
    assert psi == pytest.approx(4.604319, abs=1e-6)


def test_psi_flags_a_one_sd_shift_but_not_a_tiny_one():
    rng = np.random.default_rng(7)
    train = rng.normal(size=20_000)
    fresh = rng.normal(size=20_000)
    big = population_stability_index(train, fresh + 1.0)
    tiny = population_stability_index(train, fresh + 0.02)
    same = population_stability_index(train, fresh)
    assert big > PSI_SIGNIFICANT == 0.25
    assert tiny < PSI_MODERATE == 0.1
    assert same < PSI_MODERATE
    assert big > tiny


def test_psi_rejects_empty_samples_and_bad_bins():
    with pytest.raises(ValueError, match="non-empty"):
        population_stability_index(np.array([NaN, NaN]), np.array([1.0]))
    with pytest.raises(ValueError, match="bins"):
        population_stability_index(np.array([1.0]), np.array([1.0]), bins=0)


def test_feature_drift_drops_nans_per_feature():
    rng = np.random.default_rng(1)
    n = 4000
    train = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": np.full(n, NaN)})
    recent = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n) + 1.0, "c": rng.normal(size=n)})
    train.loc[:99, "a"] = NaN  # warm-up rows
    recent.loc[n - 500:, "b"] = NaN  # a feature missing recently
    drift = feature_drift(train, recent, ["b", "a", "c"])
    assert list(drift.index) == ["b", "a", "c"] and drift.name == "psi"
    assert drift["a"] == population_stability_index(train["a"].dropna().to_numpy(), recent["a"].to_numpy())
    assert drift["b"] == population_stability_index(train["b"].to_numpy(), recent["b"].dropna().to_numpy())
    assert drift["a"] < PSI_MODERATE
    assert drift["b"] > PSI_SIGNIFICANT
    assert np.isnan(drift["c"])  # no training values at all
    assert not np.isnan(drift[["a", "b"]]).any()


def test_rolling_accuracy_by_hand():
    y = pd.Series([1.0, 0.0, 1.0, 1.0, 0.0], index=pd.date_range("2024-01-01", periods=5, tz="UTC"))
    p = np.array([0.6, 0.7, 0.4, 0.9, 0.2])
    # predicted up (p > 0.5): 1, 1, 0, 1, 0 -> hits 1, 0, 0, 1, 1
    # window 3: NaN, NaN, (1+0+0)/3, (0+0+1)/3, (0+1+1)/3
    acc = rolling_accuracy(y, p, window=3)
    assert acc.index.equals(y.index)
    np.testing.assert_allclose(acc.to_numpy(), [NaN, NaN, 1 / 3, 1 / 3, 2 / 3], rtol=1e-12)
    # window 1 is the hit series itself; p == 0.5 is not an up call
    np.testing.assert_array_equal(rolling_accuracy([1, 0, 0], [0.5, 0.5, 0.51], 1).to_numpy(), [0.0, 1.0, 0.0])


def test_rolling_accuracy_skips_unknown_labels():
    y = [1.0, 0.0, NaN, 1.0, NaN]  # NaN: label not known yet
    p = [0.6, 0.3, 0.8, 0.2, 0.9]
    # hits 1, 1, -, 0, -
    full = rolling_accuracy(y, p, window=2)
    np.testing.assert_allclose(full.to_numpy(), [NaN, 1.0, NaN, NaN, NaN])
    loose = rolling_accuracy(y, p, window=3, min_periods=1)
    # windows: [1] -> 1; [1, 1] -> 1; [1, 1, -] -> 1; [1, -, 0] -> 0.5; [-, 0, -] -> 0
    np.testing.assert_allclose(loose.to_numpy(), [1.0, 1.0, 1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="shape"):
        rolling_accuracy([1.0, 0.0], [0.5], window=1)


def test_usual_drift_of_a_ramp_by_hand():
    from fbt_pipelines.ml.monitoring import drift_alarms, usual_drift

    # 0..999, deciles at 99.9, 199.8, ...: the stretch 0..249 fills bins 1-3 with
    # 0.4, 0.4, 0.2 and leaves 7 bins at eps=1e-4 (the stretch at 125 scores less)
    train = pd.DataFrame({"ramp": np.arange(1000.0)})
    by_hand = 2 * 0.3 * np.log(4.0) + 0.1 * np.log(2.0) + 7 * (1e-4 - 0.1) * np.log(1e-4 / 0.1)
    usual = usual_drift(train, ["ramp"], window=250)
    assert usual["ramp"] == pytest.approx(by_hand, rel=1e-12)
    # a feature drawn independently shows little usual drift (PSI ~ bins/n)
    rng = np.random.default_rng(3)
    iid = usual_drift(pd.DataFrame({"x": rng.standard_normal(3000)}), ["x"], window=250)["x"]
    assert 0.0 < iid < 0.25
    # alarms: at or above both the rule of thumb and the usual PSI
    psi = pd.Series({"ramp": 5.0, "x": 0.3, "y": 0.2, "z": 0.3})
    usual = pd.Series({"ramp": by_hand, "x": 0.1, "y": 0.1, "z": np.nan})
    assert list(drift_alarms(psi, usual).index) == ["x", "z"]
    assert usual_drift(pd.DataFrame({"s": [1.0, 2.0]}), ["s"], window=250).isna().all()
    with pytest.raises(ValueError, match="window"):
        usual_drift(train, ["ramp"], window=0)
