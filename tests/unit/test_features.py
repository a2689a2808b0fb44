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

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.futures.back_adjust import back_adjust
from fbt_pipelines.futures.roll_schedule import calendar_roll_schedule
from fbt_pipelines.ml.dataset import feature_table
from fbt_pipelines.ml.features import (CROSS_MARKET_COLUMNS, FEATURE_COLUMNS, MODEL_FEATURES, add_cross_market_features,
                                       available_features, build_features, forward_return, forward_return_label,
                                       planned_roll_dates)
from fbt_pipelines.primitives.returns import contract_returns
from tests.unit._futures_data import ROOT, make_contract, random_market, utc, xnys_sessions

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
    assert list(table.columns) == ["root", "ts", *FEATURE_COLUMNS, "label", "horizon", "dead_zone"]
    np.testing.assert_array_equal(table["label"].to_numpy(), [0, 0, 0, 0, 1, 0, NaN, NaN])
    assert (table["horizon"] == 2).all()
    assert table["days_to_expiry"].tolist() == [4.0, 3.0, 2.0, 99.0, 98.0, 95.0, 185.0, 184.0]


# --- seeded random Panama series --------------------------------------------


@pytest.fixture(scope="module")
def market() -> tuple[list, pd.DataFrame]:
    contracts, closes, bars = random_market(11)
    schedule = calendar_roll_schedule(ROOT, contracts, closes, 5)
    out = back_adjust(bars, schedule, contracts, "panama")
    assert len(out) > 300 and out["roll"].sum() == 5  # guard: long enough for every window, has rolls
    return contracts, out


@pytest.fixture(scope="module")
def prices(market) -> pd.DataFrame:
    return market[1]


# Features that are functions of the session date and the held contract's
# exchange calendar only: no price can move them (checked unchanged anyway).
CALENDAR_ONLY = {"day_of_week", "month", "days_to_roll"}


def outputs(frame: pd.DataFrame, contracts=None) -> dict[str, np.ndarray]:
    # carry comes from other contracts' prices in production; here a same-bar
    # function of the frame, so the pass-through is checked for alignment too
    roll_dates = planned_roll_dates(frame, contracts, 5) if contracts is not None else None
    feats = build_features(frame, carry=frame["raw_close"] * 1e-3, roll_dates=roll_dates)
    result = {c: feats[c].to_numpy(float) for c in FEATURE_COLUMNS}
    result["contract_returns"] = contract_returns(frame).to_numpy(float)
    return result


def perturb_from(frame: pd.DataFrame, t: int, seed: int) -> pd.DataFrame:
    """A copy in which every bar after t is different (same held contracts):
    the held contract moves differently, so open/high/low/close and raw_close
    shift by the same random amounts; days_to_expiry changes too."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    later = np.arange(len(frame)) > t
    bump = rng.normal(0.0, 2.0, later.sum()) + 1.0
    for col in ("open", "high", "low", "close", "raw_close"):
        out.loc[later, col] = out.loc[later, col] + bump
    out.loc[later, "days_to_expiry"] = out.loc[later, "days_to_expiry"] + 7
    return out


@pytest.mark.parametrize("what", ["last bar", "after 100", "after 250", "after roll"])
def test_never_leak_the_future(market, what):
    contracts, prices = market
    n = len(prices)
    roll_bars = np.flatnonzero(prices["roll"].to_numpy())
    t = {"last bar": n - 2, "after 100": 100, "after 250": 250, "after roll": int(roll_bars[-1])}[what]
    base = outputs(prices, contracts)
    changed = outputs(perturb_from(prices, t, seed=t), contracts)
    assert set(base) == {*FEATURE_COLUMNS, "contract_returns"}
    for name in base:
        assert np.array_equal(base[name][: t + 1], changed[name][: t + 1], equal_nan=True), \
            f"{name}: values up to bar {t} changed when only bars after {t} changed"
        assert np.isfinite(base[name][t + 1:]).all(), name  # every feature defined there (incl. days_to_roll)
        if name in CALENDAR_ONLY:
            assert np.array_equal(base[name], changed[name]), name
        else:  # the perturbation is visible in every price output (else this test could not fail)
            assert not np.array_equal(base[name][t + 1:], changed[name][t + 1:], equal_nan=True), name


def shift_panama_levels_up_to(frame: pd.DataFrame, r: int, points: float) -> pd.DataFrame:
    """A copy as if the gap of a roll after bar ``r`` had changed by ``points``
    (a later print corrected, new data): the Panama open/high/low/close of
    every bar up to ``r`` move by ``points``; raw prices and contracts stay."""
    out = frame.copy()
    earlier = np.arange(len(frame)) <= r
    for col in ("open", "high", "low", "close"):
        out.loc[earlier, col] = out.loc[earlier, col] + points
    return out


@pytest.mark.parametrize("points", [37.25, -61.5])
def test_a_later_roll_gap_moves_no_feature(market, points):
    """Causality by construction: Panama adjustment adds the sum of all later
    roll gaps to every earlier bar, so a feature may use only what that shift
    cannot move (point differences, the held contract's raw prices). Every
    feature of every bar up to the last roll is unchanged when that roll's gap
    changes: to 1e-9 (the float rounding of ``level + shift`` differs in the
    last bits; a ratio of Panama levels such as ``close / 60-bar high - 1``
    moves by ~1e-2 here)."""
    contracts, prices = market
    r = int(np.flatnonzero(prices["roll"].to_numpy())[-1])
    moved = shift_panama_levels_up_to(prices, r, points)
    assert moved.loc[r, "close"] - prices.loc[r, "close"] == pytest.approx(points)  # guard: levels moved
    base, changed = outputs(prices, contracts), outputs(moved, contracts)
    for name in base:
        np.testing.assert_allclose(changed[name][: r + 1], base[name][: r + 1], rtol=1e-9, atol=1e-12,
                                   equal_nan=True, err_msg=f"{name} moved with a later roll gap")
    # the old ratio form would have moved (else this test could not fail)
    close = prices["close"]
    ratio = (close / close.rolling(60).max() - 1.0).to_numpy()[: r + 1]
    ratio_moved = (moved["close"] / moved["close"].rolling(60).max() - 1.0).to_numpy()[: r + 1]
    assert np.nanmax(np.abs(ratio - ratio_moved)) > 1e-4


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
    price_features = [c for c in FEATURE_COLUMNS if c not in ("roll_yield", "days_to_roll")]
    assert feats[price_features].iloc[64:].notna().all().all()
    assert feats["roll_yield"].isna().all()  # no carry given -> NaN, never invented
    assert feats["days_to_roll"].isna().all()  # no roll dates given -> NaN
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
    # a point distance over the held contract's raw close (not close / high - 1: a ratio of Panama levels)
    np.testing.assert_allclose(feats["dist_high_60"], (close - high) / raw, rtol=1e-12, atol=1e-15, equal_nan=True)
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


# --- RSI, ATR, distance from the low, calendar, days to roll ------------------


def test_new_features_match_plain_loops(market):
    """RSI, ATR (points and % of the raw price), distance from the 60-bar low
    and the calendar features against loops written from their definitions."""
    contracts, prices = market
    feats = build_features(prices)
    close = prices["close"].to_numpy(float)
    high, low = prices["high"].to_numpy(float), prices["low"].to_numpy(float)
    raw = prices["raw_close"].to_numpy(float)
    n = len(close)

    def wilder(x, w):  # x[0] undefined; seed = mean of x[1..w], then avg += (x - avg) / w
        out = np.full(n, np.nan)
        avg = np.mean(x[1: w + 1])
        out[w] = avg
        for t in range(w + 1, n):
            avg = avg + (x[t] - avg) / w
            out[t] = avg
        return out

    d = np.r_[np.nan, np.diff(close)]
    gain, loss = wilder(np.where(d > 0, d, 0.0), 14), wilder(np.where(d < 0, -d, 0.0), 14)
    np.testing.assert_allclose(feats["rsi_14"], 100 - 100 / (1 + gain / loss), rtol=1e-9, equal_nan=True)
    assert feats["rsi_14"].iloc[:14].isna().all() and feats["rsi_14"].dropna().between(0, 100).all()
    tr = np.full(n, np.nan)
    for t in range(1, n):
        tr[t] = max(high[t], close[t - 1]) - min(low[t], close[t - 1])
    atr = wilder(tr, 14)
    np.testing.assert_allclose(feats["atr_14"], atr, rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(feats["atr_pct_14"], atr / raw, rtol=1e-9, equal_nan=True)
    # the fixture's bars span close +- 1 point: ATR is at least the 2-point range
    assert (feats["atr_14"].dropna() >= 2.0 - 1e-12).all()
    low60 = np.full(n, np.nan)
    for t in range(59, n):
        low60[t] = close[t - 59: t + 1].min()
    np.testing.assert_allclose(feats["dist_low_60"], (close - low60) / raw, rtol=1e-12, atol=1e-15, equal_nan=True)
    assert (feats["dist_low_60"].dropna() >= 0).all()
    days = [pd.Timestamp(t) for t in prices["ts"]]
    assert feats["day_of_week"].tolist() == [float(d.weekday()) for d in days]
    assert feats["month"].tolist() == [float(d.month) for d in days]


def test_atr_by_hand():
    """Three-bar true ranges with a gap across the previous close, window 2."""
    from fbt_pipelines.primitives.indicators import wilder_atr
    high = pd.Series([10.0, 12.0, 11.0, 15.0])
    low = pd.Series([9.0, 10.5, 8.0, 13.0])
    close = pd.Series([9.5, 11.0, 10.0, 14.0])
    # TR1 = max(12, 9.5) - min(10.5, 9.5) = 2.5; TR2 = max(11, 11) - min(8, 11) = 3;
    # TR3 = max(15, 10) - min(13, 10) = 5.  ATR2 = (2.5 + 3) / 2 = 2.75; ATR3 = 2.75 + (5 - 2.75) / 2 = 3.875
    np.testing.assert_allclose(wilder_atr(high, low, close, 2).to_numpy(), [NaN, NaN, 2.75, 3.875], equal_nan=True)


def test_days_to_roll_by_hand():
    """Planned roll = 5 XNYS business days before the roll reference (first
    notice when there is one, else last trade)."""
    a = make_contract("TSH2021", dt.date(2021, 3, 19))  # cash settled: from last trade
    b = make_contract("TSK2021", dt.date(2021, 5, 20), first_notice=dt.date(2021, 4, 30))  # delivered
    prices = pd.DataFrame({"root": ROOT, "contract": ["TSH2021", "TSH2021", "TSK2021"],
                           "ts": [utc("2021-03-01"), utc("2021-03-12"), utc("2021-03-15")]})
    planned = planned_roll_dates(prices, [a, b], 5)
    # 5 business days before Fri 2021-03-19: 18, 17, 16, 15, 12 -> Fri 2021-03-12.
    # 5 business days before Fri 2021-04-30: 29, 28, 27, 26, 23 -> Fri 2021-04-23 (Good Friday was 04-02).
    assert list(planned) == [utc("2021-03-12"), utc("2021-03-12"), utc("2021-04-23")]
    frame = prices.assign(close=[1.0, 2.0, 3.0], raw_close=[1.0, 2.0, 3.0], days_to_expiry=[18, 7, 66])
    assert build_features(frame, roll_dates=planned)["days_to_roll"].tolist() == [11.0, 0.0, 39.0]


# --- cross-market features ------------------------------------------------------


def market_features(seed: int, root: str, drop_every: int = 0) -> tuple[pd.DataFrame, list]:
    contracts, closes, bars = random_market(seed)
    out = back_adjust(bars, calendar_roll_schedule(ROOT, contracts, closes, 5), contracts, "panama")
    out["root"] = root
    if drop_every:
        out = out[np.arange(len(out)) % drop_every != 3].reset_index(drop=True)
    return out, contracts


def pooled(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return add_cross_market_features(pd.concat([build_features(f) for f in frames.values()], ignore_index=True))


def test_cross_market_alignment_by_hand():
    """The source's value at its last session strictly before t."""
    ts = [utc(d) for d in ("2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-08")]
    table = pd.DataFrame({
        "root": ["ES"] * 4 + ["CL"] * 5,
        "ts": [ts[0], ts[1], ts[3], ts[4]] + ts,  # ES has no bar on 01-04
        "ret_5": [0.1, 0.2, 0.3, 0.4] + [9.0] * 5,
        "ret_20": [1.0, 2.0, 3.0, 4.0] + [9.0] * 5,
    })
    out = add_cross_market_features(table, sources=("ES", "ZN"))
    cl = out[out["root"] == "CL"]
    # CL 01-02: nothing before; 01-03: ES 01-02; 01-04: ES 01-03; 01-05: ES 01-03 (no 01-04 bar); 01-08: ES 01-05
    np.testing.assert_array_equal(cl["es_ret_5"], [NaN, 0.1, 0.2, 0.2, 0.3])
    np.testing.assert_array_equal(cl["es_ret_20"], [NaN, 1.0, 2.0, 2.0, 3.0])
    np.testing.assert_array_equal(out[out["root"] == "ES"]["es_ret_5"], [NaN, 0.1, 0.2, 0.3])
    assert out["zn_ret_5"].isna().all() and out["zn_ret_20"].isna().all()  # ZN absent: NaN, not invented
    assert list(out.index) == list(table.index) and out["ret_5"].tolist() == table["ret_5"].tolist()
    feats = available_features(out)
    assert "es_ret_5" in feats and "zn_ret_5" not in feats and "zn_ret_20" not in feats
    assert available_features(out, ["ret_5", "es_ret_20"]) == ["ret_5", "es_ret_20"]


@pytest.mark.parametrize("t", [100, 250])
def test_cross_market_features_never_leak_the_future(t):
    """Shift ES's and ZN's prices after bar t: no feature of any market at a
    session up to ES's bar t changes (the sources' own features included),
    and the change does reach later rows (else the test could not fail)."""
    es, _ = market_features(21, "ES")
    zn, _ = market_features(22, "ZN", drop_every=9)  # a sparser calendar than the target's
    cl, _ = market_features(23, "CL")
    base = pooled({"ES": es, "ZN": zn, "CL": cl})
    cut = es["ts"].iloc[t]
    later_zn = int((zn["ts"] <= cut).sum()) - 1
    moved = pooled({"ES": perturb_from(es, t, seed=1), "ZN": perturb_from(zn, later_zn, seed=2), "CL": cl})
    assert list(moved.columns) == list(base.columns)
    assert set(CROSS_MARKET_COLUMNS) <= set(base.columns)
    upto = pd.to_datetime(base["ts"], utc=True) <= cut
    for col in MODEL_FEATURES:
        assert np.array_equal(base.loc[upto, col].to_numpy(float), moved.loc[upto, col].to_numpy(float),
                              equal_nan=True), f"{col}: a value up to {cut} changed"
    later_cl = (base["root"] == "CL") & ~upto
    for col in CROSS_MARKET_COLUMNS:
        assert not np.array_equal(base.loc[later_cl, col].to_numpy(float), moved.loc[later_cl, col].to_numpy(float),
                                  equal_nan=True), col
    # CL's own features do not depend on ES or ZN at all
    for col in FEATURE_COLUMNS:
        assert np.array_equal(base.loc[base["root"] == "CL", col].to_numpy(float),
                              moved.loc[moved["root"] == "CL", col].to_numpy(float), equal_nan=True), col
    # at CL's first session after the cut, the ES value is still ES's bar t (strictly before): unchanged
    first_after = base.index[later_cl][0]
    assert base.loc[first_after, "es_ret_5"] == moved.loc[first_after, "es_ret_5"]
    assert base.loc[first_after, "es_ret_5"] == build_features(es)["ret_5"].iloc[t]


# --- dead zone --------------------------------------------------------------------


def test_dead_zone_label_by_hand():
    prices = hand_prices()
    fwd = forward_return(prices, 1).to_numpy()
    # h = 1 forward returns: r1..r7 = -1.0%, -2.02%, +1.96%, -2.88%, -0.99%, +2.91%, -6.60%
    np.testing.assert_allclose(fwd[:-1], HAND_RETURNS[1:], rtol=1e-12)
    # dead zone 1.5%: |-1.0%| and |-0.99%| are inside -> no label; the rest keep their sign
    label = forward_return_label(prices, 1, dead_zone=0.015).to_numpy()
    np.testing.assert_array_equal(label, [NaN, 0, 1, 0, NaN, 1, 0, NaN])
    np.testing.assert_array_equal(forward_return_label(prices, 1, dead_zone=0.0).to_numpy(),
                                  forward_return_label(prices, 1).to_numpy())
    table = feature_table(prices, horizon=1, dead_zone=0.015)
    np.testing.assert_array_equal(table["label"].to_numpy(), label)
    assert (table["dead_zone"] == 0.015).all()
    with pytest.raises(ValueError, match="dead_zone must be >= 0"):
        forward_return_label(prices, 1, dead_zone=-0.01)
