"""fbt_pipelines.engine.strategy_library (+ the registry in strategies.py).

What is checked:
- no look-ahead for EVERY registered strategy: a signal at bar t is a function
  of inputs up to t only (changing the last bar, or every bar after t, leaves
  the earlier signals bit-identical);
- hand-worked Donchian / Bollinger / RSI-reversion sequences;
- Wilder's RSI against a plain-Python loop (textbook Wilder: SMA seed of the
  first `window` changes, then avg += (x - avg) / window) and against
  StockCharts' published worked example;
- the EWMAC forecast against a NumPy loop (EWMA recursion, alpha = 2/(span+1),
  adjust=False; own bias-corrected EWM variance of price changes, span 35,
  min 10 observations), and a closed-form steady state on a linear trend with
  alternating noise; sign, scale invariance, cap +-20 -> signal in [-2, 2];
- carry sign / scaling / cap / missing roll yield;
- parameter validation and missing input columns raise StrategyError naming
  the strategy and the parameter / column.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.engine.strategies import STRATEGIES, strategy_signal, validate_params
from fbt_pipelines.engine.strategy_library import (
    EWMAC_SCALARS,
    FORECAST_CAP,
    bollinger_reversion,
    carry,
    donchian_breakout,
    ewmac,
    ewmac_forecast,
    ewmac_multi,
    rsi_reversion,
)
from fbt_pipelines.errors import StrategyError
from fbt_pipelines.primitives.indicators import rsi

N = 600
FORECAST_STRATEGIES = {"ewmac", "ewmac_multi", "carry"}  # signal in [-2, 2]; the others in {-1, 0, 1}


def _frame(seed: int = 7, n: int = N) -> pd.DataFrame:
    """Every column any strategy reads: a seeded random walk and friends."""
    rng = np.random.default_rng(seed)
    close = 100.0 + np.cumsum(rng.normal(0.0, 1.0, n))  # back-adjusted (may wander anywhere)
    raw_close = close - close.min() + 50.0  # held contract's price, > 0
    return pd.DataFrame({
        "close": close,
        "raw_close": raw_close,
        "roll_yield": rng.normal(0.0, 0.05, n),
        "prob_up": rng.uniform(0.0, 1.0, n),
    })


# defaults plus short-window variants, so the event-driven strategies trade often
PARAM_SETS = [(name, {}) for name in STRATEGIES] + [
    ("sma_crossover", {"fast": 3, "slow": 10}),
    ("donchian_breakout", {"window": 5}),
    ("ewmac", {"fast": 2}),
    ("ewmac_multi", {"fdm": 2.0}),
    ("carry", {"scalar": 300.0}),
    ("rsi_reversion", {"window": 3, "low": 40.0, "high": 60.0}),
    ("bollinger_reversion", {"window": 5, "k": 1.0}),
    ("ml_signal", {"threshold": 0.6}),
]


CONSTANT_SIGNALS = {"buy_and_hold"}


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


# ---------------------------------------------------------------- no look-ahead


def test_every_registered_strategy_is_covered():
    assert {name for name, _ in PARAM_SETS} == set(STRATEGIES)
    # the library this file is about registered itself on import
    assert {"donchian_breakout", "ewmac", "ewmac_multi", "carry", "rsi_reversion",
            "bollinger_reversion"} <= set(STRATEGIES)


@pytest.mark.parametrize("name,params", PARAM_SETS, ids=[f"{n}-{p}" for n, p in PARAM_SETS])
def test_never_leaks_the_future(name, params):
    base = _frame()
    sig = strategy_signal(name, base, params)
    assert sig.shape == (N,)
    assert np.isfinite(sig).all()
    if name in FORECAST_STRATEGIES:
        assert sig.min() >= -2.0 and sig.max() <= 2.0
    else:
        assert sig.dtype == np.int64 and set(np.unique(sig)) <= {-1, 0, 1}
    # deterministic: the same frame gives the same bits
    assert _bits(strategy_signal(name, base.copy(), params)) == _bits(sig)

    changed_something = False

    # 1) only the last bar's inputs change (a big jump in every column)
    last = base.copy()
    last.loc[N - 1, "close"] += 25.0
    last.loc[N - 1, "raw_close"] *= 1.5
    last.loc[N - 1, "roll_yield"] = -last.loc[N - 1, "roll_yield"] + 0.3
    last.loc[N - 1, "prob_up"] = 1.0 - last.loc[N - 1, "prob_up"]
    out = strategy_signal(name, last, params)
    assert _bits(out[: N - 1]) == _bits(sig[: N - 1]), f"{name}: last bar leaked into earlier signals"
    changed_something |= out[N - 1] != sig[N - 1]

    # 2) every bar after t replaced by another random path
    alt = _frame(seed=1234)
    for t in (30, 120, 299, 450, N - 2):
        tail = base.copy()
        tail.iloc[t + 1:] = alt.iloc[t + 1:].to_numpy()
        out = strategy_signal(name, tail, params)
        assert _bits(out[: t + 1]) == _bits(sig[: t + 1]), f"{name}: bars after {t} leaked into signals up to {t}"
        changed_something |= bool((out[t + 1:] != sig[t + 1:]).any())

    # the perturbations did reach the signal (the test is not vacuous) -- except for
    # the constant baseline, whose signal depends on no input by design
    assert changed_something or name in CONSTANT_SIGNALS


# ---------------------------------------------------------------- hand-worked examples


def test_donchian_hand_worked():
    # window 3; the channel at bar i is max/min of closes i-3..i-1 (NOT bar i):
    # i  close  prior 3      upper lower  ->  signal
    # 0  10     -                          0  (fewer than 3 prior bars)
    # 1  11     -                          0
    # 2  12     -                          0
    # 3  13     10 11 12     12    10     +1  13 > 12 breakout up
    # 4  12     11 12 13     13    11     +1  hold
    # 5  11     12 13 12     13    12     -1  11 < 12 breakout down (reverse)
    # 6  10     13 12 11     13    11     -1  10 < 11
    # 7  11     12 11 10     12    10     -1  hold
    # 8  12     11 10 11     11    10     +1  12 > 11
    # 9  13     10 11 12     12    10     +1
    # 10 13     11 12 13     13    11     +1  13 = upper is not a breakout: hold
    close = np.array([10, 11, 12, 13, 12, 11, 10, 11, 12, 13, 13], dtype=float)
    expected = [0, 0, 0, 1, 1, -1, -1, -1, 1, 1, 1]
    out = donchian_breakout(close, window=3)
    assert out.dtype == np.int64
    assert out.tolist() == expected
    assert strategy_signal("donchian_breakout", pd.DataFrame({"close": close}), {"window": 3}).tolist() == expected


def test_donchian_channel_excludes_current_bar():
    # a channel that included bar i could never be exceeded by bar i's close;
    # excluding it, a steadily rising close breaks out on every bar from `window` on
    close = np.arange(20, dtype=float)
    assert donchian_breakout(close, window=5).tolist() == [0] * 5 + [1] * 15
    assert donchian_breakout(-close, window=5).tolist() == [0] * 5 + [-1] * 15


def test_bollinger_hand_worked():
    # window 4 (includes bar i), k = 1, sample st. dev. (ddof 1): z = (close - mean) / sd
    # i  window          mean   sum sq dev       sd      z        -> signal
    # 3  10 10 10 10     10     0                0       0/0 NaN     0
    # 4  10 10 10 14     11     1+1+1+9=12       2       +1.5     -1  (z > k: short)
    # 5  10 10 14 12     11.5   11               1.915   +0.261   -1  hold
    # 6  10 14 12 11     11.75  8.75             1.708   -0.439    0  z crossed 0: flat
    # 7  14 12 11  8     11.25  18.75            2.5     -1.3     +1  (z < -k: long)
    # 8  12 11  8  6     9.25   22.75            2.754   -1.180   +1
    # 9  11  8  6 10     8.75   14.75            2.217   +0.564    0  z crossed 0: flat
    # 10  8  6 10 10     8.5    11               1.915   +0.783    0  (inside the band)
    close = np.array([10, 10, 10, 10, 14, 12, 11, 8, 6, 10, 10], dtype=float)
    expected = [0, 0, 0, 0, -1, -1, 0, 1, 1, 0, 0]
    out = bollinger_reversion(close, window=4, k=1.0)
    assert out.dtype == np.int64
    assert out.tolist() == expected
    # a wider band (k = 1.4) only catches bar 4's z = 1.5: short until z crosses 0 at bar 6
    assert bollinger_reversion(close, window=4, k=1.4).tolist() == [0, 0, 0, 0, -1, -1, 0, 0, 0, 0, 0]


def test_rsi_reversion_hand_worked():
    # window 3, low 30, high 70. Changes d = -1 -1 -1 +1 +1 +1 +1 +1 -1 -1 -1.
    # Wilder: seed = mean of the first 3 gains / losses, then avg = avg * 2/3 + x / 3.
    # i  d    avg gain    avg loss          RS       RSI    -> state
    # 3  -1   0           1                 0        0       +1  (< 30: long)
    # 4  +1   1/3         2/3               0.5      33.33   +1  hold
    # 5  +1   5/9         4/9               1.25     55.56    0  crossed 50: flat
    # 6  +1   19/27       8/27              2.375    70.37   -1  (> 70: short)
    # 7  +1   65/81       16/81             4.0625   80.25   -1
    # 8  +1   211/243     32/243            6.594    86.83   -1
    # 9  -1   422/729     307/729           1.375    57.89   -1  hold (still > 50)
    # 10 -1   844/2187    1343/2187         0.628    38.59    0  crossed 50: flat
    # 11 -1   1688/6561   4873/6561         0.346    25.73   +1  (< 30: long)
    close = np.array([10, 9, 8, 7, 8, 9, 10, 11, 12, 11, 10, 9], dtype=float)
    r = rsi(close, 3)
    assert np.isnan(r[:3]).all()
    averages = [(0, 1), (1 / 3, 2 / 3), (5 / 9, 4 / 9), (19 / 27, 8 / 27), (65 / 81, 16 / 81),
                (211 / 243, 32 / 243), (422 / 729, 307 / 729), (844 / 2187, 1343 / 2187), (1688 / 6561, 4873 / 6561)]
    np.testing.assert_allclose(r[3:], [100 - 100 / (1 + g / l) for g, l in averages], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r[3:], [0, 33.33, 55.56, 70.37, 80.25, 86.83, 57.89, 38.59, 25.73], atol=0.005)
    out = rsi_reversion(close, window=3, low=30.0, high=70.0)
    assert out.dtype == np.int64
    assert out.tolist() == [0, 0, 0, 1, 1, 0, -1, -1, -1, -1, 0, 1]


def test_rsi_reversion_holds_until_rsi_crosses_50():
    # window 3; changes -1 -1 -1 +1.5 +1:
    # i=3: gain 0, loss 1 -> RSI 0 -> long
    # i=4: gain 1.5/3 = 0.5, loss 2/3 -> RS 0.75 -> RSI 42.86: recovered past `low` but not 50 -> still long
    # i=5: gain 0.5 x 2/3 + 1/3 = 2/3, loss 4/9 -> RS 1.5 -> RSI 60: crossed 50 -> flat
    close = np.array([10, 9, 8, 7, 8.5, 9.5])
    np.testing.assert_allclose(rsi(close, 3)[3:], [0.0, 300 / 7, 60.0], atol=1e-12)
    assert rsi_reversion(close, window=3).tolist() == [0, 0, 0, 1, 1, 0]
    # mirror image: RSI 100, 57.14, 40 -> short, still short (above 50), flat
    np.testing.assert_allclose(rsi(-close, 3)[3:], [100.0, 400 / 7, 40.0], atol=1e-12)
    assert rsi_reversion(-close, window=3).tolist() == [0, 0, 0, -1, -1, 0]


def test_rsi_flat_price_is_neutral():
    # no gain and no loss: RSI 50 (neither overbought nor oversold), so no trade
    close = np.full(30, 100.0)
    r = rsi(close, 14)
    assert np.isnan(r[:14]).all() and (r[14:] == 50.0).all()
    assert (rsi_reversion(close) == 0).all()
    # only gains -> 100, only losses -> 0
    assert (rsi(np.arange(30.0), 14)[14:] == 100.0).all()
    assert (rsi(-np.arange(30.0), 14)[14:] == 0.0).all()


# ---------------------------------------------------------------- independent RSI


def _wilder_rsi_loop(close, window):
    """Textbook Wilder RSI in plain Python."""
    n = len(close)
    out = [math.nan] * n
    if n <= window:
        return out
    gains = [max(close[i] - close[i - 1], 0.0) for i in range(1, n)]
    losses = [max(close[i - 1] - close[i], 0.0) for i in range(1, n)]
    avg_g = sum(gains[:window]) / window  # simple mean of the first `window` changes
    avg_l = sum(losses[:window]) / window
    for i in range(window, n):  # close index i <-> change index i - 1
        if i > window:
            avg_g = (avg_g * (window - 1) + gains[i - 1]) / window
            avg_l = (avg_l * (window - 1) + losses[i - 1]) / window
        if avg_l == 0.0:
            out[i] = 50.0 if avg_g == 0.0 else 100.0
        else:
            out[i] = 100.0 - 100.0 / (1.0 + avg_g / avg_l)
    return out


@pytest.mark.parametrize("window", [2, 5, 14, 30])
def test_rsi_matches_plain_python_wilder(window):
    close = _frame(seed=3)["close"].to_numpy()
    expected = np.array(_wilder_rsi_loop(close.tolist(), window))
    got = rsi(close, window)
    assert np.isnan(got[:window]).all()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_rsi_matches_stockcharts_worked_example():
    # StockCharts ChartSchool "RSI" spreadsheet (14-day Wilder RSI); published
    # values 70.53 66.32 66.55 69.41 66.36 57.97 from the 15th close on
    close = np.array([44.3389, 44.0902, 44.1497, 43.6124, 44.3278, 44.8264, 45.0955, 45.4245, 45.8433,
                      46.0826, 45.8931, 46.0328, 45.6140, 46.2820, 46.2820, 46.0028, 46.0328, 46.4116,
                      46.2222, 45.6439])
    r = rsi(close, 14)
    assert np.isnan(r[:14]).all()
    np.testing.assert_allclose(r[14:], [70.53, 66.32, 66.55, 69.41, 66.36, 57.97], atol=0.006)


# ---------------------------------------------------------------- independent EWMAC


def _ewma_loop(x, span):
    a = 2.0 / (span + 1.0)
    out = np.empty(len(x))
    out[0] = x[0]
    for t in range(1, len(x)):
        out[t] = (1 - a) * out[t - 1] + a * x[t]
    return out


def _ewm_std_loop(x, span, min_periods):
    """Bias-corrected exponentially weighted st. dev. (weights q^(t-i), q = 1 - 2/(span+1)):
    mean = sum w x / sum w, var_b = sum w (x - mean)^2 / sum w,
    var = var_b * (sum w)^2 / ((sum w)^2 - sum w^2). NaN entries are skipped (only a leading one here)."""
    q = 1.0 - 2.0 / (span + 1.0)
    out = np.full(len(x), np.nan)
    for t in range(len(x)):
        obs = x[: t + 1]
        ok = ~np.isnan(obs)
        if ok.sum() < max(min_periods, 2):
            continue
        w = q ** (t - np.arange(t + 1))[ok]
        v = obs[ok]
        s1, s2 = w.sum(), (w * w).sum()
        mean = (w * v).sum() / s1
        var_b = (w * (v - mean) ** 2).sum() / s1
        out[t] = math.sqrt(var_b * s1 * s1 / (s1 * s1 - s2))
    return out


def _ewmac_forecast_loop(close, fast):
    raw = _ewma_loop(close, fast) - _ewma_loop(close, 4 * fast)
    vol = _ewm_std_loop(np.r_[np.nan, np.diff(close)], span=35, min_periods=10)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.clip(raw / vol * EWMAC_SCALARS[fast], -FORECAST_CAP, FORECAST_CAP)


@pytest.mark.parametrize("fast", sorted(EWMAC_SCALARS))
def test_ewmac_forecast_matches_numpy_loop(fast):
    close = _frame(seed=11)["close"].to_numpy()
    expected = _ewmac_forecast_loop(close, fast)
    got = ewmac_forecast(close, fast)
    # warm-up: the vol needs 10 price changes (bars 1..10)
    assert np.isnan(got[:10]).all() and np.isfinite(got[10:]).all()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    assert np.abs(got[10:]).max() <= FORECAST_CAP
    sig = ewmac(close, fast=fast)
    np.testing.assert_allclose(sig, np.nan_to_num(expected) / 10.0, rtol=1e-9, atol=1e-10)
    assert (sig[:10] == 0.0).all()


def test_pysystemtrade_forecast_scalars():
    assert EWMAC_SCALARS == {2: 10.6, 4: 7.5, 8: 5.3, 16: 3.75, 32: 2.65, 64: 1.87}
    assert FORECAST_CAP == 20.0


def test_ewmac_closed_form_on_trend_with_alternating_noise():
    # close_t = 100 + b t + e (-1)^t, b = 0.1, e = 0.5, EWMAC(16, 64), scalar 3.75.
    # Trend: an EWMA(span) of b t lags it by b (span - 1) / 2, so fast - slow = b (63 - 15) / 2 = 24 b = 2.4.
    # Noise: EWMA of e (-1)^t -> amplitude e a / (2 - a): e/16 (span 16), e/64 (span 64),
    #   so raw = 2.4 + (-1)^t 3e/64 = 2.4 +- 0.0234375.
    # Vol: changes are b +- 2e = 0.1 +- 1 alternating; steady-state EWM st. dev. (span 35, q = 17/18):
    #   mean -> +-(1-q)/(1+q) = 1/35 around b, var_b = 1 - 1/35^2, bias factor (1+q)/(2q) = 35/34
    #   -> sd = sqrt((1 - 1/1225) * 35/34) = 1.0141851.
    # Forecast = raw / sd * 3.75 = 8.96078 (t even), 8.78746 (t odd); signal = forecast / 10.
    n, b, e = 800, 0.1, 0.5
    t = np.arange(n)
    close = 100.0 + b * t + e * (-1.0) ** t
    sd = math.sqrt((1 - 1 / 35**2) * 35 / 34)
    assert sd == pytest.approx(1.0141851, abs=1e-7)
    f = ewmac_forecast(close, 16)
    np.testing.assert_allclose(f[-2:], [(2.4 + 3 * e / 64) / sd * 3.75, (2.4 - 3 * e / 64) / sd * 3.75], rtol=1e-6)
    np.testing.assert_allclose(f[-2:], [8.96078, 8.78746], atol=1e-5)
    np.testing.assert_allclose(ewmac(close, fast=16)[-2:], [0.896078, 0.878746], atol=1e-6)

    # sign: a falling trend gives the mirror forecast
    np.testing.assert_allclose(ewmac(200.0 - b * t - e * (-1.0) ** t, fast=16)[-2:], [-0.896078, -0.878746], atol=1e-6)
    # vol normalisation: forecasts are invariant to the price scale and level
    np.testing.assert_allclose(ewmac_forecast(7.0 * close + 1000.0, 16), f, rtol=1e-9, atol=1e-9)
    # the scalar: EWMAC(8, 32) is the same kind of ratio x 5.3; raw = 1.5 x 8 x b = 1.2, noise 3e/32 (1/8 - 1/32)
    f8 = ewmac_forecast(close, 8)
    np.testing.assert_allclose(f8[-2:], [(1.2 + 3 * e / 32) / sd * 5.3, (1.2 - 3 * e / 32) / sd * 5.3], rtol=1e-6)


def test_ewmac_cap_and_degenerate_series():
    n, e = 600, 0.5
    t = np.arange(n)
    # slope 1 with noise 0.5: uncapped forecast would be 24 x 1 / 1.014 x 3.75 ~ 89 -> capped at 20 -> 2.0
    steep = 100.0 + 1.0 * t + e * (-1.0) ** t
    assert (ewmac(steep, fast=16)[100:] == 2.0).all()
    assert (ewmac(-steep, fast=16)[100:] == -2.0).all()
    assert (ewmac_multi(steep)[300:] == 2.0).all()
    assert (ewmac_multi(-steep, fdm=1.5)[300:] == -2.0).all()
    # a noiseless trend has zero vol: infinite forecast, capped
    assert (ewmac(100.0 + 0.01 * t, fast=8)[10:] == 2.0).all()
    # a constant price: 0 / 0 -> no forecast -> flat, never NaN
    assert (ewmac(np.full(n, 50.0)) == 0.0).all()
    assert (ewmac_multi(np.full(n, 50.0)) == 0.0).all()


def test_ewmac_multi_blend_fdm_and_recap():
    close = _frame(seed=5)["close"].to_numpy()
    forecasts = np.vstack([_ewmac_forecast_loop(close, f) for f in (8, 16, 32, 64)])
    blend = forecasts.mean(axis=0)  # all four share the same warm-up
    for fdm in (1.0, 1.1, 2.0):
        expected = np.nan_to_num(np.clip(blend * fdm, -20, 20) / 10.0)
        np.testing.assert_allclose(ewmac_multi(close, fdm=fdm), expected, rtol=1e-9, atol=1e-10)
    assert np.abs(ewmac_multi(close, fdm=2.0)).max() <= 2.0


def test_ewmac_multi_warm_up_emits_no_warning(recwarn):
    ewmac_multi(np.arange(50.0) + np.sin(np.arange(50.0)))
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


# ---------------------------------------------------------------- carry


def test_carry_hand_worked_sign_scale_and_cap():
    # close alternates 100 +- 0.5: point changes +-1, steady EWM st. dev. 1.0141851 (see above);
    # raw_close 100 -> daily vol 1.0141851 % -> annual 0.010141851 x sqrt(252) = 0.160996.
    # roll yield +5 %/yr (backwardation): forecast = 0.05 / 0.160996 x 30 = 9.3169 -> signal +0.93169
    n = 400
    t = np.arange(n)
    close = 100.0 + 0.5 * (-1.0) ** t
    raw = np.full(n, 100.0)
    sd = math.sqrt((1 - 1 / 35**2) * 35 / 34)
    annual_vol = sd / 100.0 * math.sqrt(252)
    assert annual_vol == pytest.approx(0.160996, abs=1e-6)
    ry = np.full(n, 0.05)
    sig = carry(ry, close, raw)
    assert sig[-1] == pytest.approx(0.05 / annual_vol * 30 / 10, rel=1e-9)
    assert sig[-1] == pytest.approx(0.93169, abs=1e-5)
    # contango -> short, same size
    assert carry(-ry, close, raw)[-1] == pytest.approx(-0.93169, abs=1e-5)
    # linear in roll yield and scalar; inversely proportional to vol
    assert carry(ry / 2, close, raw)[-1] == pytest.approx(sig[-1] / 2, rel=1e-12)
    assert carry(ry, close, raw, scalar=15.0)[-1] == pytest.approx(sig[-1] / 2, rel=1e-12)
    wide = 100.0 + 1.0 * (-1.0) ** t  # twice the point vol on the same raw price
    assert carry(ry, wide, raw)[-1] == pytest.approx(sig[-1] / 2, rel=1e-9)
    # capped at +-20 -> +-2
    assert carry(np.full(n, 0.5), close, raw)[-1] == 2.0  # uncapped 93.2
    assert carry(np.full(n, -0.5), close, raw)[-1] == -2.0
    # no roll yield known (NaN) or vol warm-up -> flat, not invented
    ry_gap = ry.copy()
    ry_gap[200:210] = np.nan
    out = carry(ry_gap, close, raw)
    assert (out[200:210] == 0.0).all() and (out[:10] == 0.0).all()
    assert np.isfinite(out).all()


def test_carry_against_own_vol_on_random_frame():
    fr = _frame(seed=9)
    vol = _ewm_std_loop(np.r_[np.nan, np.diff(fr["close"].to_numpy())], 35, 10) / fr["raw_close"].to_numpy()
    expected = np.nan_to_num(np.clip(fr["roll_yield"].to_numpy() / (vol * np.sqrt(252)) * 30.0, -20, 20) / 10.0)
    np.testing.assert_allclose(strategy_signal("carry", fr, {}), expected, rtol=1e-9, atol=1e-10)
    assert np.sign(strategy_signal("carry", fr, {})[20:]).tolist() == np.sign(fr["roll_yield"][20:]).tolist()


# ---------------------------------------------------------------- parameter validation

BAD_PARAMS = [
    ("donchian_breakout", {"window": 1}, "window"),
    ("donchian_breakout", {"window": 2.5}, "window"),
    ("donchian_breakout", {"window": "55"}, "window"),
    ("donchian_breakout", {"window": True}, "window"),
    ("ewmac", {"fast": 10}, "fast"),
    ("ewmac", {"fast": 0}, "fast"),
    ("ewmac", {"fast": None}, "fast"),
    ("ewmac_multi", {"fdm": 0.5}, "fdm"),
    ("ewmac_multi", {"fdm": 3.0}, "fdm"),
    ("ewmac_multi", {"fdm": float("nan")}, "fdm"),
    ("ewmac_multi", {"fdm": "1.1"}, "fdm"),
    ("carry", {"scalar": 0.0}, "scalar"),
    ("carry", {"scalar": -30}, "scalar"),
    ("carry", {"scalar": float("nan")}, "scalar"),
    ("carry", {"scalar": [30]}, "scalar"),
    ("rsi_reversion", {"window": 1}, "window"),
    ("rsi_reversion", {"window": 14.5}, "window"),
    ("rsi_reversion", {"low": 60.0}, "low"),
    ("rsi_reversion", {"low": 0.0}, "low"),
    ("rsi_reversion", {"high": 40.0}, "high"),
    ("rsi_reversion", {"high": 100.0}, "high"),
    ("rsi_reversion", {"low": "30"}, "low"),
    ("bollinger_reversion", {"window": 1}, "window"),
    ("bollinger_reversion", {"window": -20}, "window"),
    ("bollinger_reversion", {"k": 0.0}, "k"),
    ("bollinger_reversion", {"k": -2}, "k"),
    ("bollinger_reversion", {"k": float("nan")}, "k"),
    ("sma_crossover", {"fast": 50, "slow": 20}, "fast"),
    ("sma_crossover", {"fast": 0}, "fast"),
    ("ml_signal", {"threshold": 0.4}, "threshold"),
    ("ml_signal", {"threshold": 1.0}, "threshold"),
]


@pytest.mark.parametrize("name,params,param", BAD_PARAMS, ids=[f"{n}-{p}" for n, p, _ in BAD_PARAMS])
def test_bad_parameter_raises_naming_strategy_and_parameter(name, params, param):
    with pytest.raises(StrategyError) as exc:
        strategy_signal(name, _frame(n=80), params)
    msg = str(exc.value)
    assert name in msg and param in msg, msg


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_unknown_parameter_raises(name):
    with pytest.raises(StrategyError, match=rf"{name}.*unknown parameter.*'bogus'"):
        validate_params(name, {"bogus": 1})
    with pytest.raises(StrategyError, match=rf"{name}.*bogus"):
        strategy_signal(name, _frame(n=80), {"bogus": 1})


def test_unknown_strategy_raises():
    with pytest.raises(StrategyError, match="unknown strategy 'turtle'"):
        strategy_signal("turtle", _frame(n=80), {})
    with pytest.raises(StrategyError, match="turtle"):
        validate_params("turtle", {})


def test_validate_params_coerces_config_numbers():
    # integers arriving as whole floats or NumPy scalars (config systems, grids) are accepted
    assert validate_params("donchian_breakout", {"window": 20.0}) == {"window": 20}
    assert type(validate_params("ewmac", {"fast": np.int64(8)})["fast"]) is int
    merged = validate_params("rsi_reversion", {"low": 25})
    assert merged == {"window": 14, "low": 25.0, "high": 70.0} and type(merged["low"]) is float
    assert validate_params("carry", {}) == {"scalar": 30.0}
    fr = _frame(n=200)
    assert _bits(strategy_signal("donchian_breakout", fr, {"window": 20.0})) == \
        _bits(strategy_signal("donchian_breakout", fr, {"window": 20}))


@pytest.mark.parametrize("name,column", [(name, col) for name in sorted(STRATEGIES)
                                         for col in STRATEGIES[name].inputs])
def test_missing_input_column_raises_naming_it(name, column):
    frame = _frame(n=80).drop(columns=[column])
    with pytest.raises(StrategyError) as exc:
        strategy_signal(name, frame, {})
    msg = str(exc.value)
    assert name in msg and repr(column) in msg, msg


def test_declared_inputs():
    assert STRATEGIES["carry"].inputs == ("roll_yield", "close", "raw_close")
    assert STRATEGIES["ml_signal"].inputs == ("prob_up",)
    for name in ("donchian_breakout", "ewmac", "ewmac_multi", "rsi_reversion", "bollinger_reversion"):
        assert STRATEGIES[name].inputs == ("close",)


def test_buy_and_hold_is_always_long():
    from fbt_pipelines.engine.strategies import strategy_signal as signal

    frame = pd.DataFrame({"close": [1.0, 2.0, 0.5]})
    assert signal("buy_and_hold", frame, {}).tolist() == [1, 1, 1]
