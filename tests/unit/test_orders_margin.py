"""Maintenance margin, margin calls and the account stop, worked by hand.

Every number below is computed in the comments from the rule (docs/guide.md,
"Orders and margin"; the kernel's module docstring):

- at each close, equity < maintenance x |contracts| issues a margin call;
- at the next fill (the fill rule's price, slippage against the trader) the
  smallest q contracts are sold (bought back) with
  ``equity_at_fill - q x cost_per_contract >= (held - q) x initial margin``
  (all of them if none does); one ``margin_call`` record per call;
- equity <= 0 at a close stops the account: what is held is liquidated at the
  next fill, nothing trades afterwards.

ES terms: 50 USD a point, commission 2.10 USD and slippage 1 tick (0.25
points = 12.50 USD) per contract per side, so 14.60 USD per contract per side;
initial margin 13,200 USD, maintenance 12,000 USD.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog.specs import ContractSpec, market_spec
from fbt_pipelines.engine.futures_engine import EngineConfig, run_backtest
from fbt_pipelines.engine.summary import summarise

UNIT = 2.10 + 0.25 * 50  # 14.60 USD per contract per side


@pytest.fixture(scope="module")
def es() -> ContractSpec:
    return dataclasses.replace(market_spec("ES"), multiplier=50.0, tick_size=0.25, commission=2.10,
                               initial_margin=13_200.0, maintenance_margin=12_000.0)


def frame(open_, close, high=None, low=None) -> pd.DataFrame:
    n = len(close)
    out = pd.DataFrame({"ts": pd.date_range("2024-01-02", periods=n, tz="UTC"), "contract": "ESH4",
                        "open": np.asarray(open_, float), "close": np.asarray(close, float),
                        "raw_close": np.asarray(close, float), "roll": False})
    if high is not None:
        out["high"], out["low"] = np.asarray(high, float), np.asarray(low, float)
    return out


def test_partial_margin_call_next_open(es: ContractSpec) -> None:
    prices = frame([4000, 4000, 3980, 3955, 3940, 3950], [4000, 3990, 3960, 3950, 3945, 3950])
    r = run_backtest(prices, np.full(6, 7), es, EngineConfig(initial_capital=100_000.0), maintenance_margins=12_000.0)
    # bar 1: buy 7 at 4000.25 (7 fit: 100,000 / (13,200 + 14.60) = 7.57); costs 7 x 14.60 = 102.20
    #        close 3990: 100,000 - 102.20 + 7 x (3990 - 4000) x 50 = 96,397.80   (need 7 x 12,000 = 84,000)
    # bar 2: 96,397.80 + 7 x (3960 - 3990) x 50 = 85,897.80 >= 84,000: no call
    # bar 3: 85,897.80 + 7 x (3950 - 3960) x 50 = 82,397.80 <  84,000: margin call at this close
    # bar 4: at the open 3940: 82,397.80 - 3,500 = 78,897.80; q = 1 leaves 78,883.20 < 6 x 13,200 = 79,200;
    #        q = 2 leaves 78,868.60 >= 5 x 13,200 = 66,000 -> sell 2 at 3939.75; close 3945:
    #        78,868.60 + 5 x 5 x 50 = 80,118.60
    # bar 5: the strategy still wants 7: the cap allows floor((80,118.60 + 5 x 14.60) / 13,214.60) = 6
    #        -> buy 1 at 3950.25 (1 refused); equity 80,118.60 - 14.60 + 6 x 0 + 5 x (3950 - 3945) x 50 = 81,354.00
    np.testing.assert_allclose(r.equity, [100_000.0, 96_397.80, 85_897.80, 82_397.80, 80_118.60, 81_354.00],
                               rtol=0, atol=1e-9)
    t = r.trades
    assert t["reason"].tolist() == ["signal", "margin_call", "signal"]
    assert t["contracts"].tolist() == [7, -2, 1]
    assert t["price"].tolist() == [4000.25, 3939.75, 3950.25]
    assert t["refused"].tolist() == [0, 0, 1]
    assert r.bars["position"].tolist() == [0, 7, 7, 7, 5, 6]
    calls = r.margin_calls
    assert calls["called"].tolist() == [prices["ts"][3]] and calls["ts"].tolist() == [prices["ts"][4]]
    assert r.account_stopped is None
    s = summarise(r)
    assert s["margin_calls"] == 1.0 and s["margin_call_contracts"] == 2.0 and s["account_stopped"] == 0.0


def test_partial_margin_call_next_close_liquidates_back_to_initial(es: ContractSpec) -> None:
    prices = frame([4000, 4000, 3980, 3955, 3940, 3950], [4000, 3990, 3960, 3940, 3945, 3950])
    cfg = EngineConfig(initial_capital=100_000.0, fill="next_close")
    r = run_backtest(prices, np.full(6, 7), es, cfg, maintenance_margins=np.full(6, 12_000.0))
    # bar 1: buy 7 at the close 3990.25: 100,000 - 102.20 = 99,897.80
    # bar 2: 99,897.80 - 7 x 30 x 50 = 89,397.80; bar 3: - 7 x 20 x 50 = 82,397.80 < 84,000: call
    # bar 4: at the close 3945: 82,397.80 + 7 x 5 x 50 = 84,147.80 (above maintenance again, below the
    #        initial 92,400): q = 1 leaves 84,133.20 >= 6 x 13,200 = 79,200 -> sell 1 at 3944.75
    # bar 5: 6 contracts: 84,133.20 + 6 x 5 x 50 = 85,633.20, then the strategy's 7th contract is bought at
    #        that close (85,633.20 + 6 x 14.60) / 13,214.60 = 6.49 -> refused
    np.testing.assert_allclose(r.equity, [100_000.0, 99_897.80, 89_397.80, 82_397.80, 84_133.20, 85_633.20],
                               rtol=0, atol=1e-9)
    assert r.trades["reason"].tolist() == ["signal", "margin_call", "signal"]
    assert r.trades["contracts"].tolist() == [7, -1, 0] and r.trades["refused"].tolist() == [0, 0, 1]
    assert r.trades["price"].tolist()[:2] == [3990.25, 3944.75]


def test_a_call_the_open_already_met_liquidates_nothing(es: ContractSpec) -> None:
    prices = frame([4000, 4000, 3980, 3955, 3980, 3990], [4000, 3990, 3960, 3950, 3985, 3990])
    r = run_backtest(prices, np.full(6, 7), es, EngineConfig(initial_capital=100_000.0), maintenance_margins=12_000.0)
    # call at bar 3's close (82,397.80 as above); bar 4 opens at 3980: 82,397.80 + 7 x 30 x 50 = 92,897.80
    # >= 7 x 13,200 = 92,400: nothing to liquidate; the call is recorded with 0 contracts
    t = r.trades
    assert t["reason"].tolist() == ["signal", "margin_call"]
    assert t["contracts"].tolist() == [7, 0] and t["commission"].tolist()[1] == 0.0
    assert summarise(r)["margin_calls"] == 1.0 and summarise(r)["margin_call_contracts"] == 0.0
    np.testing.assert_allclose(r.equity[-1], 82_397.80 + 7 * 40 * 50, rtol=0, atol=1e-9)


def test_the_account_stops_when_the_equity_is_exhausted(es: ContractSpec) -> None:
    prices = frame([4000, 4000, 3700, 3600, 3700, 3800], [4000, 3990, 3590, 3650, 3750, 3800])
    r = run_backtest(prices, np.full(6, 1), es, EngineConfig(initial_capital=20_000.0), maintenance_margins=12_000.0)
    # bar 1: buy 1 at 4000.25: 20,000 - 14.60 + (3990 - 4000) x 50 = 19,485.40
    # bar 2: gap: 19,485.40 + (3590 - 3990) x 50 = -514.60 <= 0: the account stops at this close
    # bar 3: at the open 3600: -514.60 + 10 x 50 = -14.60; the contract is sold at 3599.75 (-14.60): -29.20
    # bars 4-5: nothing trades although the strategy still wants 1 contract
    np.testing.assert_allclose(r.equity, [20_000.0, 19_485.40, -514.60, -29.20, -29.20, -29.20], rtol=0, atol=1e-9)
    assert r.trades["reason"].tolist() == ["signal", "margin_call"]
    assert r.trades["contracts"].tolist() == [1, -1] and r.trades["price"].tolist() == [4000.25, 3599.75]
    assert r.account_stopped == prices["ts"][2]
    assert r.margin_calls["called"].tolist() == [prices["ts"][2]]
    s = summarise(r)
    assert s["account_stopped"] == 1.0 and s["ruined"] == 1.0 and s["margin_calls"] == 1.0


def test_without_maintenance_margins_there_are_no_calls(es: ContractSpec) -> None:
    prices = frame([4000, 4000, 3700, 3600, 3700, 3800], [4000, 3990, 3590, 3650, 3750, 3800])
    r = run_backtest(prices, np.full(6, 1), es, EngineConfig(initial_capital=20_000.0))
    assert r.trades["reason"].tolist() == ["signal"] and r.account_stopped is None
    assert r.equity[-1] == pytest.approx(20_000.0 - 14.60 + (3800 - 4000) * 50)


def test_zero_maintenance_margin_still_stops_an_exhausted_account(es: ContractSpec) -> None:
    # a market table without a maintenance margin (0: pysystemtrade imports) never calls above zero equity
    prices = frame([4000, 4000, 3700, 3600, 3700, 3800], [4000, 3990, 3590, 3650, 3750, 3800])
    r = run_backtest(prices, np.full(6, 1), es, EngineConfig(initial_capital=20_000.0), maintenance_margins=0.0)
    assert r.account_stopped == prices["ts"][2]
    r2 = run_backtest(prices, np.full(6, 1), es, EngineConfig(initial_capital=40_000.0), maintenance_margins=0.0)
    assert r2.account_stopped is None and r2.trades["reason"].tolist() == ["signal"]


@pytest.mark.parametrize("bad, message", [
    (np.full(3, 1.0), "maintenance_margins has shape"),
    (-1.0, "maintenance_margins must be finite and >= 0"),
    (np.nan, "maintenance_margins must be finite and >= 0"),
])
def test_bad_maintenance_margins_are_refused(es: ContractSpec, bad, message: str) -> None:
    prices = frame([4000] * 6, [4000] * 6)
    with pytest.raises(ValueError, match=message):
        run_backtest(prices, np.zeros(6), es, EngineConfig(), maintenance_margins=bad)


# --------------------------------------------------------------------------- property: no unrecorded ruin

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ORDER_CHOICES = [{}, {"stop_loss": "30"}, {"take_profit": "2%", "trailing_stop": "20"}, {"limit_offset": "5"},
                 {"stop_loss": "1.5atr", "take_profit": "3atr"}]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(20, 160), capital=st.sampled_from([14_000.0, 30_000.0, 80_000.0]),
       fill=st.sampled_from(["next_open", "next_close"]), orders=st.sampled_from(ORDER_CHOICES),
       maint_ratio=st.sampled_from([0.0, 0.8, 0.91, 1.0]), crash=st.floats(0.0, 0.5))
def test_no_equity_goes_below_zero_without_a_margin_call_or_an_account_stop(es, seed, n, capital, fill, orders,
                                                                          maint_ratio, crash) -> None:
    rng = np.random.default_rng(seed)
    c = 4000 + np.cumsum(rng.normal(0, 15, n))
    jumps = np.where(rng.random(n) < 0.05, -crash * 4000 * rng.random(n), 0.0)  # gaps that can wipe out the account
    c = np.maximum(c + np.cumsum(jumps), 50.0)
    o = np.r_[c[0], c[:-1]] + jumps * 0.8
    o = np.maximum(o, 25.0)
    h, lo = np.maximum(o, c) + rng.random(n) * 10, np.minimum(o, c) - rng.random(n) * 10
    prices = frame(o, c, h, lo)
    target = np.repeat(rng.integers(-5, 6, n // 3 + 1), 3)[:n]
    cfg = EngineConfig(initial_capital=capital, fill=fill, **orders)
    margins = np.full(n, 13_200.0)
    r = run_backtest(prices, target, es, cfg, margins=margins, maintenance_margins=margins * maint_ratio)
    eq = r.equity
    t = r.trades
    stop = r.account_stopped
    called = r.margin_calls["called"]
    for i in np.flatnonzero(eq < 0):
        ts = prices["ts"][i]
        assert (stop is not None and stop <= ts) or (called <= ts).any(), f"equity {eq[i]} at bar {i} unrecorded"
    if stop is not None:
        s = int(np.flatnonzero(prices["ts"] == stop)[0])
        assert eq[s] <= 0 and (eq[:s] > 0).all()  # the first close at or below zero stops the account
        after = t[t["ts"] > stop]
        assert after["reason"].isin(["margin_call"]).all() and len(after) <= 1  # one liquidation, then nothing
        assert (r.bars["position"].to_numpy()[s + 1:] == 0).all() or s == n - 1
        if s + 1 < n:
            assert np.all(eq[s + 1:] == eq[s + 1])  # flat: the equity no longer moves
    else:
        assert (eq > 0).all()
    # every close below maintenance (not the last) is followed by a margin-call record on the next bar
    pos = r.bars["position"].to_numpy()
    below = np.flatnonzero((eq < margins * maint_ratio * np.abs(pos)) & (pos != 0) & (np.arange(n) < n - 1))
    call_bars = set(np.flatnonzero(prices["ts"].isin(t.loc[t["reason"] == "margin_call", "ts"])))
    assert {i + 1 for i in below} <= call_bars


def test_the_tear_sheet_shows_when_the_margin_calls_happened(es: ContractSpec, tmp_path) -> None:
    from fbt_pipelines.reports.tear_sheet import write_tear_sheet

    prices = frame([4000, 4000, 3980, 3955, 3940, 3950], [4000, 3990, 3960, 3950, 3945, 3950])
    r = run_backtest(prices, np.full(6, 7), es, EngineConfig(initial_capital=100_000.0), maintenance_margins=12_000.0)
    page = write_tear_sheet(tmp_path / "r.html", "calls", r.bars[["ts", "equity", "close"]], {}, pd.Series({"ES": 0.0}),
                            {}, trades=r.trades, multiplier=50.0, monte_carlo_paths=0).read_text()
    assert "<th>Margin calls</th><td>1</td>" in page
    assert "<th>Margin calls liquidated on</th><td>2024-01-06</td>" in page
    assert '"name":"margin call"' in page  # the marker on the equity curve
