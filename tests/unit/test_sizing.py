"""fbt_pipelines.portfolio: volatility-targeted sizing and the multi-market combine.

Sizing formula (sizing.py docstring):
    contracts = round(signal * capital * target * weight * idm
                      / (annual_vol * raw_close * multiplier)),
    annual_vol = EWMA st. dev. (span, min_periods = span) of the held
    contract's daily returns x sqrt(252).

Pure hand example (constant 1% daily vol): capital 1e6, target 0.2, weight
0.5, idm 1.5 -> budget 1e6 x 0.2 x 0.5 x 1.5 = 150,000 USD of annual risk;
one contract at raw_close 100 x multiplier 1000 = 100,000 USD notional with
annual vol 0.01 x sqrt(252) = 0.158745 -> 15,874.5 USD; 150,000 / 15,874.5
= 9.449 -> 9 contracts.

The EWMA estimate on alternating +1% / -1% returns is not exactly 1%: pandas'
``ewm(span).std()`` is the bias-corrected weighted st. dev. with weights
q^(n-1-i), q = 1 - 2/(span+1). For x_i = +/-0.01 alternating, x_i^2 = 1e-4, so
(closed form, n observations, last one +0.01 when n is odd):
    S1 = sum q^j = (1 - q^n) / (1 - q),  S2 = sum q^2j = (1 - q^2n) / (1 - q^2)
    mean = +0.01 (1 + q^n) / (1 + q) / S1  (n odd),  -0.01 (1 - q^n) / (1 + q) / S1  (n even)
    var  = (1e-4 - mean^2) x S1^2 / (S1^2 - S2)
n = 35, span = 35 (q = 17/18): mean = 3.75097e-4, st. dev. = 0.0101858.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.portfolio.portfolio import combine_markets
from fbt_pipelines.portfolio.sizing import VolTargetConfig, contracts_for_risk

SPEC = ContractSpec(
    root="TS", name="test", exchange="CME", asset_class="equity", currency="USD", multiplier=1000.0,
    tick_size=0.01, cycle="HMUZ", expiry_rule="third_friday", first_notice_rule="none", roll_days_before=5,
    commission=2.0, initial_margin=5000.0, maintenance_margin=4000.0,
)
SPAN = 35


def alternating_prices(n_bars: int = 61, offset: float = 0.0) -> pd.DataFrame:
    """Raw closes 100 x 1.01 x 0.99 x 1.01 ...: returns +1%, -1%, ... from bar 1.
    ``offset`` shifts the (Panama) adjusted close only; raw_close stays raw."""
    raw = [100.0]
    for k in range(1, n_bars):
        raw.append(raw[-1] * (1.01 if k % 2 == 1 else 0.99))
    raw = np.array(raw)
    return pd.DataFrame({"close": raw + offset, "raw_close": raw})


def closed_form_vol(n: int, span: int = SPAN) -> float:
    """EWMA st. dev. of n alternating +/-1% returns (first +), bias-corrected; see docstring."""
    q = 1.0 - 2.0 / (span + 1.0)
    s1 = (1 - q ** n) / (1 - q)
    s2 = (1 - q ** (2 * n)) / (1 - q ** 2)
    sign = 1.0 if n % 2 == 1 else -1.0  # sign of the newest return
    mean = sign * 0.01 * (1 - (-q) ** n) / (1 + q) / s1  # newest weight q^0, then -q, +q^2, ...
    var = (1e-4 - mean ** 2) * s1 ** 2 / (s1 ** 2 - s2)
    return math.sqrt(var)


def expected_contracts(prices: pd.DataFrame, signal, capital, target, weight, idm) -> tuple[np.ndarray, np.ndarray]:
    n = len(prices)
    budget = capital * target * weight * idm
    raw = np.zeros(n)
    for t in range(SPAN, n):  # bar t has t returns (bars 1..t); vol known from span returns
        vol = closed_form_vol(t)
        raw[t] = signal[t] * budget / (vol * math.sqrt(252) * prices["raw_close"].iloc[t] * SPEC.multiplier)
    return np.round(raw).astype(np.int64), raw


def test_closed_form_vol_numbers():
    # hand numbers quoted in the module docstring
    assert closed_form_vol(35) == pytest.approx(0.01018582183, rel=1e-9)
    q = 17 / 18
    assert (0.01 * (1 + q ** 35) / (1 + q)) / ((1 - q ** 35) / (1 - q)) == pytest.approx(3.75097e-4, rel=1e-5)
    # even n: the newest return is -1%: mean = -0.01 (1 - q^n) / (1 + q) / S1 = -0.01 (1 - q) / (1 + q) = -1/3500
    s1 = (1 - q ** 36) / (1 - q)
    var = (1e-4 - (1 / 3500) ** 2) * s1 ** 2 / (s1 ** 2 - (1 - q ** 72) / (1 - q ** 2))
    assert closed_form_vol(36) == pytest.approx(math.sqrt(var), rel=1e-12)


def test_pure_hand_example_constant_vol():
    # 150,000 / (0.01 x sqrt(252) x 100 x 1000) = 9.449 -> 9 (no EWMA involved: checks the arithmetic)
    assert 150_000 / (0.01 * math.sqrt(252) * 100 * 1000) == pytest.approx(9.44911, rel=1e-5)


def test_brief_example_on_alternating_returns():
    prices = alternating_prices()
    cfg = VolTargetConfig(capital=1e6, annual_risk_target=0.2, idm=1.5, vol_span=SPAN)
    got = contracts_for_risk(prices, np.ones(len(prices)), SPEC, 0.5, cfg)
    # bar 35: vol 0.0101858, raw_close 100.828 -> 150,000 / (0.0101858 x 15.8745 x 100,828) = 9.2005 -> 9
    assert got[35] == 9
    assert (got[:35] == 0).all()  # vol unknown before 35 returns
    assert (got[35:] == 9).all()  # raw 9.20 .. 9.30 on every later bar (see the next test)


def test_contracts_match_closed_form_at_high_resolution():
    # capital 1e8 -> ~920 contracts: a 0.1% error in the vol estimate or the notional moves the integer
    prices = alternating_prices()
    cfg = VolTargetConfig(capital=1e8, annual_risk_target=0.2, idm=1.5, vol_span=SPAN)
    signal = np.ones(len(prices))
    got = contracts_for_risk(prices, signal, SPEC, 0.5, cfg)
    expected, raw = expected_contracts(prices, signal, 1e8, 0.2, 0.5, 1.5)
    # guard: no value sits near a rounding boundary, so float noise cannot flip the expectation
    frac = np.abs(raw[SPAN:] - np.floor(raw[SPAN:]) - 0.5)
    assert frac.min() > 0.01
    assert raw[35] == pytest.approx(920.0509, rel=1e-6)
    np.testing.assert_array_equal(got, expected)
    assert got[35] == 920 and got[36] == 929
    assert got.dtype == np.int64


def test_notional_uses_the_raw_close_not_the_adjusted_close():
    # A Panama series 50 points above raw: same held-contract returns, same raw notional -> same contracts.
    cfg = VolTargetConfig(capital=1e8, annual_risk_target=0.2, idm=1.5, vol_span=SPAN)
    base = contracts_for_risk(alternating_prices(), np.ones(61), SPEC, 0.5, cfg)
    shifted = contracts_for_risk(alternating_prices(offset=50.0), np.ones(61), SPEC, 0.5, cfg)
    np.testing.assert_array_equal(base, shifted)


def test_sign_and_scale_follow_the_signal():
    prices = alternating_prices()
    cfg = VolTargetConfig(capital=1e8, annual_risk_target=0.2, idm=1.5, vol_span=SPAN)
    rng = np.random.default_rng(5)
    signal = rng.uniform(-2, 2, len(prices))
    signal[40] = 0.0
    signal[41] = np.nan
    got = contracts_for_risk(prices, signal, SPEC, 0.5, cfg)
    expected, raw = expected_contracts(prices, np.nan_to_num(signal), 1e8, 0.2, 0.5, 1.5)
    assert np.abs(np.abs(raw) - np.floor(np.abs(raw)) - 0.5).min() > 1e-6  # guard vs. rounding ties
    np.testing.assert_array_equal(got, expected)
    assert got[40] == 0 and got[41] == 0  # zero / unknown signal -> flat
    known = np.arange(len(prices)) >= SPAN
    nonzero = known & (np.abs(signal) > 0.01)
    assert (np.sign(got[nonzero]) == np.sign(signal[nonzero])).all()
    neg = contracts_for_risk(prices, -np.nan_to_num(signal), SPEC, 0.5, cfg)
    np.testing.assert_array_equal(neg, -got)


def test_zero_volatility_gives_zero_contracts():
    prices = pd.DataFrame({"close": np.full(50, 100.0), "raw_close": np.full(50, 100.0)})
    got = contracts_for_risk(prices, np.ones(50), SPEC, 1.0, VolTargetConfig(vol_span=10))
    assert (got == 0).all()


@pytest.mark.parametrize("kwargs", [
    {"capital": 0.0}, {"capital": -1.0}, {"annual_risk_target": 0.0}, {"annual_risk_target": 2.0},
    {"annual_risk_target": -0.1}, {"idm": 0.99}, {"vol_span": 1},
])
def test_invalid_config_raises(kwargs):
    with pytest.raises(ValueError, match="invalid sizing config"):
        VolTargetConfig(**kwargs)


def test_valid_config_boundaries():
    VolTargetConfig(capital=1.0, annual_risk_target=1.99, idm=1.0, vol_span=2)


# --- combine_markets ---------------------------------------------------------

D = {k: pd.Timestamp(f"2024-03-{d}", tz="UTC") for k, d in
     {"d1": 11, "d2": 12, "d3": 13, "d4": 14, "d5": 15}.items()}


def market_a() -> pd.DataFrame:  # trades d1..d4
    return pd.DataFrame({
        "ts": [D["d1"], D["d2"], D["d3"], D["d4"]],
        "position": np.array([1, 2, 2, -1], dtype=np.int64),
        "pnl": [100.0, -50.0, 30.0, 20.0],
        "margin": [1000.0, 2000.0, 2000.0, 1000.0],
        "costs": [5.0, 5.0, 0.0, 7.5],
        "close": [10.0, 11.0, 12.0, 13.0],
    })


def market_b() -> pd.DataFrame:  # no session on d2; trades d5
    return pd.DataFrame({
        "ts": [D["d1"], D["d3"], D["d4"], D["d5"]],
        "position": np.array([-3, -3, 0, 2], dtype=np.int64),
        "pnl": [-40.0, 60.0, -10.0, 25.0],
        "margin": [600.0, 600.0, 0.0, 400.0],
        "costs": [2.0, 0.0, 3.0, 4.0],
        "close": [50.0, 51.0, 52.0, 53.0],
    })


def test_combine_markets_with_different_calendars():
    equity, positions = combine_markets({"BB": market_b(), "AA": market_a()}, capital=1_000_000.0)
    assert list(equity.columns) == ["ts", "pnl", "equity", "margin", "costs", "gross_positions"]
    assert list(equity["ts"]) == [D[k] for k in ("d1", "d2", "d3", "d4", "d5")]
    # pnl: d1 100 - 40 = 60; d2 A only -50; d3 30 + 60 = 90; d4 20 - 10 = 10; d5 B only 25
    assert equity["pnl"].tolist() == [60.0, -50.0, 90.0, 10.0, 25.0]
    # equity = 1e6 + cumulative pnl
    assert equity["equity"].tolist() == [1_000_060.0, 1_000_010.0, 1_000_100.0, 1_000_110.0, 1_000_135.0]
    # costs: d1 5 + 2; d2 5; d3 0 + 0; d4 7.5 + 3; d5 4
    assert equity["costs"].tolist() == [7.0, 5.0, 0.0, 10.5, 4.0]
    # margin: positions stay open on a session their market does not trade:
    # d1 1000 + 600; d2 2000 + B's 600 carried; d3 2000 + 600; d4 1000 + 0; d5 A's 1000 carried + 400
    assert equity["margin"].tolist() == [1600.0, 2600.0, 2600.0, 1000.0, 1400.0]
    # gross |contracts|: d1 1 + 3; d2 2 + 3 (carried); d3 2 + 3; d4 1 + 0; d5 1 (carried) + 2
    assert equity["gross_positions"].tolist() == [4, 5, 5, 1, 3]
    # positions: one row per market bar, ordered by ts then root
    assert list(zip(positions["ts"], positions["root"])) == [
        (D["d1"], "AA"), (D["d1"], "BB"), (D["d2"], "AA"), (D["d3"], "AA"), (D["d3"], "BB"),
        (D["d4"], "AA"), (D["d4"], "BB"), (D["d5"], "BB"),
    ]
    assert positions["position"].tolist() == [1, -3, 2, 2, -3, -1, 0, 2]
    assert positions["close"].tolist() == [10.0, 50.0, 11.0, 12.0, 51.0, 13.0, 52.0, 53.0]
    assert positions["pnl"].sum() == equity["pnl"].sum() == 135.0


def test_combine_single_market_is_that_market():
    equity, _ = combine_markets({"AA": market_a()}, capital=500.0)
    a = market_a()
    assert equity["pnl"].tolist() == a["pnl"].tolist()
    assert equity["equity"].tolist() == [600.0, 550.0, 580.0, 600.0]
    assert equity["margin"].tolist() == a["margin"].tolist()
    assert equity["gross_positions"].tolist() == [1, 2, 2, 1]


def test_combine_markets_needs_results():
    with pytest.raises(ValueError, match="no market results to combine"):
        combine_markets({}, capital=1.0)
