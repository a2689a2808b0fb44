"""fbt_pipelines.ml.features / dataset: causality ("never leak the future"),
held-contract returns across a roll, each feature against a plain numpy
re-implementation, and the forward label.

Hand Panama series (two rolls), raw held closes:

    bar   contract  raw   adjusted close (Panama)
     0       A      100   108   (A segment + 5 + 3)
     1       A       99   107
     2       A       97   105   roll A->B: B closes 102 here, gap 102 - 97 = +5
     3       B      104   107   (B segment + 3)
     4       B      101   104
     5       B      100   103   roll B->C: C closes 103 here, gap +3
     6       C      106   106
     7       C       99    99

Held-contract returns: r1 = 99/100 - 1 = -0.01, r2 = 97/99 - 1, r3 = 104/102 - 1 (B's own
move from its roll-date close 102; NOT 107/105 - 1 of the adjusted series and NOT
104/97 - 1 of raw stitching), r4 = 101/104 - 1, r5 = 100/101 - 1, r6 = 106/103 - 1,
r7 = 99/106 - 1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.futures.back_adjust import back_adjust
from fbt_pipelines.futures.roll_schedule import calendar_roll_schedule
from fbt_pipelines.ml.dataset import feature_table
from fbt_pipelines.ml.features import FEATURE_COLUMNS, build_features, contract_returns, forward_return_label
from tests.unit._futures_data import ROOT, random_market, xnys_sessions

NaN = np.nan


def hand_prices() -> pd.DataFrame:
    return pd.DataFrame({
        "root": ROOT,
        "ts": xnys_sessions("2024-03-11", "2024-03-20"),
        "contract": ["A", "A", "A", "B", "B", "B", "C", "C"],
        "close": [108.0, 107.0, 105.0, 107.0, 104.0, 103.0, 106.0, 99.0],
        "raw_close": [100.0, 99.0, 97.0, 104.0, 101.0, 100.0, 106.0, 99.0],
        "days_to_expiry": [4, 3, 2, 99, 98, 95, 185, 184],
    })


HAND_RETURNS = [NaN, 99 / 100 - 1, 97 / 99 - 1, 104 / 102 - 1, 101 / 104 - 1, 100 / 101 - 1,
                106 / 103 - 1, 99 / 106 - 1]


def test_contract_returns_hand_example_across_rolls():
    r = contract_returns(hand_prices())
    np.testing.assert_allclose(r.to_numpy(), HAND_RETURNS, rtol=1e-14, atol=0)
    assert np.isnan(r.iloc[0])
    # Guards that the hand example discriminates: the naive alternatives differ on the roll bar.
    assert abs(r.iloc[3] - (107 / 105 - 1)) > 1e-4  # pct change of the adjusted series (2/102 vs 2/105)
    assert abs(r.iloc[3] - (104 / 97 - 1)) > 1e-2  # raw stitched (includes the roll gap)


@pytest.mark.parametrize(
    "horizon, expected",
    [
        # h = 1: sign of the next bar's held return: r1<0, r2<0, r3>0, r4<0, r5<0, r6>0, r7<0, -
        (1, [0, 0, 1, 0, 0, 1, 0, NaN]),
        # h = 2: bar 0: (99/100)(97/99) = 0.97 -> 0;  bar 1: (97/99)(104/102) = 0.9990 -> 0;
        #        bar 2: (104/102)(101/104) = 101/102 -> 0; bar 3: (101/104)(100/101) = 100/104 -> 0;
        #        bar 4: (100/101)(106/103) = 1.0189 -> 1; bar 5: (106/103)(99/106) = 99/103 -> 0.
        (2, [0, 0, 0, 0, 1, 0, NaN, NaN]),
        # h = 3: bar 0: 0.97 x 104/102 = 0.98902 -> 0; bar 1: (97/99)(104/102)(101/104) = 0.97019 -> 0;
        #        bar 2: (101/102)(100/101) = 100/102 -> 0; bar 3: (100/104)(106/103) = 0.98954 -> 0;
        #        bar 4: (100/101)(106/103)(99/106) = 0.95166 -> 0.
        (3, [0, 0, 0, 0, 0, NaN, NaN, NaN]),
    ],
)
def test_forward_label_hand_example(horizon, expected):
    label = forward_return_label(hand_prices(), horizon)
    np.testing.assert_array_equal(label.to_numpy(), np.array(expected, dtype=float))
    assert label.name == "label"


def test_forward_label_rejects_bad_horizon():
    with pytest.raises(ValueError, match="horizon must be >= 1, got 0"):
        forward_return_label(hand_prices(), 0)


def test_feature_table_has_label_and_horizon():
    prices = hand_prices()
    table = feature_table(prices, horizon=2)
    assert list(table.columns) == ["root", "ts", *FEATURE_COLUMNS, "label", "horizon"]
    np.testing.assert_array_equal(table["label"].to_numpy(), [0, 0, 0, 0, 1, 0, NaN, NaN])
    assert (table["horizon"] == 2).all()
    assert table["days_to_expiry"].tolist() == [4.0, 3.0, 2.0, 99.0, 98.0, 95.0, 185.0, 184.0]


# --- seeded random Panama series --------------------------------------------


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    contracts, closes, bars = random_market(11)
    schedule = calendar_roll_schedule(ROOT, contracts, closes, 5)
    out = back_adjust(bars, schedule, contracts, "panama")
    assert len(out) > 300 and out["roll"].sum() == 5  # guard: long enough for every window, has rolls
    return out


def outputs(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    # carry comes from other contracts' prices in production; here a same-bar
    # function of the frame, so the pass-through is checked for alignment too
    feats = build_features(frame, carry=frame["raw_close"] * 1e-3)
    result = {c: feats[c].to_numpy(float) for c in FEATURE_COLUMNS}
    result["contract_returns"] = contract_returns(frame).to_numpy(float)
    return result


def perturb_from(frame: pd.DataFrame, t: int, seed: int) -> pd.DataFrame:
    """A copy in which every bar after t is different (same held contracts):
    the held contract moves differently, so close and raw_close shift by the
    same random amounts; days_to_expiry changes too."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    later = np.arange(len(frame)) > t
    bump = rng.normal(0.0, 2.0, later.sum()) + 1.0
    out.loc[later, "close"] = out.loc[later, "close"] + bump
    out.loc[later, "raw_close"] = out.loc[later, "raw_close"] + bump
    out.loc[later, "days_to_expiry"] = out.loc[later, "days_to_expiry"] + 7
    return out


@pytest.mark.parametrize("what", ["last bar", "after 100", "after 250", "after roll"])
def test_never_leak_the_future(prices, what):
    n = len(prices)
    roll_bars = np.flatnonzero(prices["roll"].to_numpy())
    t = {"last bar": n - 2, "after 100": 100, "after 250": 250, "after roll": int(roll_bars[-1])}[what]
    base = outputs(prices)
    changed = outputs(perturb_from(prices, t, seed=t))
    for name in base:
        assert np.array_equal(base[name][: t + 1], changed[name][: t + 1], equal_nan=True), \
            f"{name}: values up to bar {t} changed when only bars after {t} changed"
        # the perturbation is visible in every output (else this test could not fail)
        assert not np.array_equal(base[name][t + 1:], changed[name][t + 1:], equal_nan=True), name


def test_changing_only_the_close_of_the_last_bar(prices):
    # only the adjusted close of the last bar (an inconsistent edit: raw_close untouched)
    edited = prices.copy()
    edited.loc[len(edited) - 1, "close"] += 1.5
    base, changed = outputs(prices), outputs(edited)
    for name in base:
        assert np.array_equal(base[name][:-1], changed[name][:-1], equal_nan=True), name


def test_features_finite_after_warm_up(prices):
    feats = build_features(prices)
    # the longest window is the 64-bar EWMA / 60-bar high; ret_20 and vol_20 need 21 bars
    price_features = [c for c in FEATURE_COLUMNS if c != "roll_yield"]
    assert feats[price_features].iloc[64:].notna().all().all()
    assert feats["roll_yield"].isna().all()  # no carry given -> NaN, never invented
    assert feats["ret_20"].iloc[:20].isna().all() and np.isfinite(feats["ret_20"].iloc[20])
    assert feats["dist_high_60"].iloc[:59].isna().all() and np.isfinite(feats["dist_high_60"].iloc[59])


def test_features_match_plain_numpy(prices):
    """Every feature against a loop written from the docstring definitions."""
    feats = build_features(prices)
    close = prices["close"].to_numpy(float)
    raw = prices["raw_close"].to_numpy(float)
    contract = prices["contract"].to_numpy()
    n = len(close)
    # held-contract return: raw move of the contract held at t over its raw close at t-1
    # (after a roll the previous raw close is the new contract's roll-date close = close[t-1] - offset[t])
    r = np.full(n, np.nan)
    for t in range(1, n):
        prev_raw = raw[t - 1] if contract[t] == contract[t - 1] else close[t - 1] - (close[t] - raw[t])
        r[t] = (close[t] - close[t - 1]) / prev_raw
    np.testing.assert_allclose(feats["ret_1"], r, rtol=1e-12, equal_nan=True)
    same = contract[1:] == contract[:-1]
    np.testing.assert_allclose(r[1:][same], raw[1:][same] / raw[:-1][same] - 1, rtol=1e-9)

    def window(k, fn):
        out = np.full(n, np.nan)
        for t in range(k - 1, n):
            w = r[t - k + 1: t + 1]
            if np.isfinite(w).all():
                out[t] = fn(w)
        return out

    np.testing.assert_allclose(feats["ret_5"], window(5, lambda w: np.prod(1 + w) - 1), rtol=1e-10, atol=1e-14,
                               equal_nan=True)
    np.testing.assert_allclose(feats["ret_20"], window(20, lambda w: np.prod(1 + w) - 1), rtol=1e-10, atol=1e-14,
                               equal_nan=True)
    np.testing.assert_allclose(feats["vol_20"], window(20, lambda w: np.std(w, ddof=1) * np.sqrt(252)),
                               rtol=1e-9, equal_nan=True)

    def ewma(x, span):  # adjust=False recursion: e0 = x0, e_t = a x_t + (1 - a) e_{t-1}
        a = 2.0 / (span + 1.0)
        e = np.empty_like(x)
        e[0] = x[0]
        for t in range(1, len(x)):
            e[t] = a * x[t] + (1 - a) * e[t - 1]
        return e

    d = np.r_[np.nan, np.diff(close)]
    point_vol = np.full(n, np.nan)
    for t in range(25, n):
        point_vol[t] = np.std(d[t - 24: t + 1], ddof=1)
    np.testing.assert_allclose(feats["ewmac_16_64"], (ewma(close, 16) - ewma(close, 64)) / point_vol,
                               rtol=1e-9, atol=1e-12, equal_nan=True)
    high = np.full(n, np.nan)
    for t in range(59, n):
        high[t] = close[t - 59: t + 1].max()
    np.testing.assert_allclose(feats["dist_high_60"], close / high - 1, rtol=1e-12, atol=1e-15, equal_nan=True)
    assert (feats["dist_high_60"].dropna() <= 0).all()
    np.testing.assert_array_equal(feats["days_to_expiry"], prices["days_to_expiry"].to_numpy(float))
    assert feats["root"].tolist() == prices["root"].tolist()
    assert list(feats["ts"]) == list(prices["ts"])


@pytest.mark.parametrize("horizon", [1, 5])
def test_label_uses_only_the_next_horizon_bars(prices, horizon):
    t = 200
    base_label = forward_return_label(prices, horizon).to_numpy()
    base_feats = outputs(prices)

    def with_raw_move(k: int, factor: float) -> pd.DataFrame:
        """Bar k (and everything after it, same contract path) moved by factor x the held raw price."""
        out = prices.copy()
        move = out.loc[k, "raw_close"] * (factor - 1.0)
        later = out.index >= k
        out.loc[later, "close"] += move
        out.loc[later, "raw_close"] += move
        return out

    for k in range(t + 1, t + horizon + 1):
        up = with_raw_move(k, 1.5)    # +50% on bar k: the horizon return is positive
        down = with_raw_move(k, 0.5)  # -50% on bar k: negative
        lab_up = forward_return_label(up, horizon).to_numpy()
        lab_down = forward_return_label(down, horizon).to_numpy()
        assert lab_up[t] == 1.0 and lab_down[t] == 0.0, f"label at {t} ignores bar {k}"
        # nothing at or before t that is a feature may see bar k
        for name, values in outputs(up).items():
            assert np.array_equal(values[: t + 1], base_feats[name][: t + 1], equal_nan=True), name
        # labels before t - horizon + ... : label at s uses s+1..s+h, so labels of bars < k - horizon are unchanged
        assert np.array_equal(lab_up[: k - horizon], base_label[: k - horizon], equal_nan=True)
    # a bar beyond the horizon (t + h + 1) does not move the label at t
    for factor in (1.5, 0.5):
        beyond = forward_return_label(with_raw_move(t + horizon + 1, factor), horizon).to_numpy()
        assert beyond[t] == base_label[t]
        assert np.array_equal(beyond[: t + 1], base_label[: t + 1], equal_nan=True)


def test_label_is_nan_only_where_the_horizon_runs_past_the_data(prices):
    for h in (1, 5):
        label = forward_return_label(prices, h).to_numpy()
        assert np.isnan(label[-h:]).all()
        assert np.isfinite(label[:-h]).all()  # bar 0's label uses r1..rh, all defined
        assert set(np.unique(label[:-h])) == {0.0, 1.0}
