"""The risk report's assembly: strategy and market returns by hand, and risk_extras on a small book."""

import math

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog import market_spec
from fbt_pipelines.portfolio.book import MarketBook, portfolio_book
from fbt_pipelines.risk.metrics import cornish_fisher_var, daily_returns, ulcer_index
from fbt_pipelines.risk.report import _expand_shocks, market_returns, risk_extras, strategy_returns


def test_strategy_returns_by_hand():
    ts = pd.bdate_range("2024-01-01", periods=3, tz="UTC")
    rows = []
    # strategy A: ES equity 100, 110, 99 ; CL equity 100, 100, 120 -> returns (10 + 0) / 200, (-11 + 20) / 210
    for root, eq in (("ES", [100, 110, 99]), ("CL", [100, 100, 120])):
        pnl = np.diff(eq, prepend=100)
        rows += [{"ts": t, "root": root, "strategy": "A", "equity": float(e), "pnl": float(p)}
                 for t, e, p in zip(ts, eq, pnl)]
    out = strategy_returns(pd.DataFrame(rows))
    assert out["A"].tolist() == pytest.approx([10 / 200, 9 / 210])


def test_market_returns_are_the_held_contracts():
    ts = pd.bdate_range("2024-01-01", periods=3, tz="UTC")
    # Panama-adjusted close 110, 121 with raw 100, 110 (offset 10): return (121 - 110) / (110 - 10) = 11 %
    prices = pd.DataFrame({"ts": ts, "root": "ES", "close": [105.0, 110.0, 121.0], "raw_close": [95.0, 100.0, 111.0]})
    r = market_returns(prices)
    assert r["ES"].tolist() == pytest.approx([5 / 95, 11 / 100])


def test_expand_shocks_by_root_then_class_then_star():
    classes = {"ES": "equity", "NQ": "equity", "CL": "energy"}
    out = _expand_shocks({"s": {"ES": -0.3, "equity": -0.2, "*": -0.05}}, classes)
    assert out["s"] == {"ES": -0.3, "NQ": -0.2, "CL": -0.05}


def test_risk_extras_on_a_two_market_book():
    rng = np.random.default_rng(5)
    ts = pd.bdate_range("2021-01-04", periods=300, tz="UTC")
    books, price_rows = {}, []
    for root, mult, p0 in (("ES", 50.0, 4000.0), ("CL", 1000.0, 70.0)):
        r = rng.normal(0.0003, 0.012, ts.size)
        raw = p0 * np.cumprod(1 + r)
        pos = np.where(np.arange(ts.size) % 50 < 25, 2, -1)
        pnl = np.r_[0.0, pos[:-1] * np.diff(raw) * mult]
        costs = np.abs(np.diff(pos, prepend=0)) * 5.0
        bars = pd.DataFrame({"ts": ts, "close": raw, "raw_close": raw, "position": pos, "pnl": pnl - costs,
                             "margin": np.abs(pos) * 5000.0, "costs": costs})
        trades = pd.DataFrame({"ts": ts[np.diff(pos, prepend=0) != 0], "contract": root + "H2021", "kind": "trade",
                               "contracts": np.diff(pos, prepend=0)[np.diff(pos, prepend=0) != 0]})
        trades = trades.assign(price=raw[np.diff(pos, prepend=0) != 0], raw_price=lambda t: t["price"],
                               commission=2.0, slippage=3.0)
        books[root] = MarketBook(market_spec(root), bars, trades)
        price_rows.append(pd.DataFrame({"ts": ts, "root": root, "close": raw, "raw_close": raw}))
    positions, equity, trades = portfolio_book(books, 1_000_000.0)
    mret = market_returns(pd.concat(price_rows))
    ex = risk_extras(equity, positions, trades, mret, None, {"ES": "equity", "CL": "energy"}, benchmark="ES",
                     windows=[("spring", "2021-03-01", "2021-03-31")], worst_days=(5,))
    s = ex.scalars
    curve = equity.set_index("ts")["equity"]
    assert s["ulcer_index"] == pytest.approx(ulcer_index(curve))
    assert s["cf_var_99"] == pytest.approx(cornish_fisher_var(daily_returns(curve), 0.99))
    costs = equity["costs"].sum()
    assert s["cost_share"] == pytest.approx(costs / (equity["pnl"].sum() + costs)) if equity["pnl"].sum() + costs > 0 \
        else math.isnan(s["cost_share"])
    port = daily_returns(curve)
    common = port.index.intersection(mret.index)
    assert s["benchmark_correlation"] == pytest.approx(np.corrcoef(port.loc[common], mret["ES"].loc[common])[0, 1])
    assert s["max_leverage"] == pytest.approx(equity["leverage"].max())
    # last book: ES and CL positions x price x multiplier
    last = ex.exposure.set_index("root")
    assert last.loc["ES", "notional_usd"] == pytest.approx(positions[positions.root == "ES"]["notional_usd"].iloc[-1])
    assert set(ex.correlation["kind"]) == {"market", "market_rolling_63d"}
    assert {"all_down_5pct", "equity_crash_20pct", "spring", "worst_5d", "var_99_corr_1"} <= set(ex.scenarios["scenario"])
    crash = ex.scenarios[(ex.scenarios["scenario"] == "equity_crash_20pct")].set_index("root")["pnl_usd"]
    assert crash["ES"] == pytest.approx(-0.2 * last.loc["ES", "notional_usd"]) and crash["CL"] == 0.0
    assert s["worst_scenario_pnl_usd"] == pytest.approx(
        ex.scenarios[ex.scenarios["root"] == "total"]["pnl_usd"].min())


def test_round_trip_pnl_by_hand():
    from fbt_pipelines.risk.report import round_trip_pnl, trade_reshuffle_summary

    ts = pd.bdate_range("2024-01-01", periods=7, tz="UTC")
    # long 2 from bar 1, flat at bar 3, short from bar 4, flipped long at bar 6:
    # long trade owns bars 1, 2, 3 -> 10 + 5 - 3 = 12 ; short owns 4, 5, 6 -> 4 + 2 + 7 = 13
    es = pd.DataFrame({"ts": ts, "root": "ES", "position": [0, 2, 2, 0, -1, -1, 1],
                       "pnl": [0.0, 10.0, 5.0, -3.0, 4.0, 2.0, 7.0]})
    cl = pd.DataFrame({"ts": ts[:3], "root": "CL", "position": [1, 1, 1], "pnl": [-1.0, 3.0, 4.0]})
    assert round_trip_pnl(pd.concat([es, cl])).tolist() == [6.0, 12.0, 13.0]
    import itertools

    trades = [100.0, -300.0, 200.0, -50.0]
    exact = []  # max drawdown of each of the 24 orderings, by hand
    for order in itertools.permutations(trades):
        equity = np.cumsum([1000.0, *order])
        exact.append(float(np.max(1 - equity / np.maximum.accumulate(equity))))
    summary = trade_reshuffle_summary(np.array(trades), 1000.0, 4000, 0.3)
    assert summary["trades"] == 4
    assert min(exact) <= summary["max_drawdown_p5"] <= summary["max_drawdown_p95"] <= max(exact) + 1e-12
    share = np.mean(np.array(exact) > 0.3)  # 4,000 draws: within 4 standard errors
    assert summary["prob_drawdown_exceeds"] == pytest.approx(share, abs=4 * np.sqrt(share * (1 - share) / 4000))
    assert 0 < share < 1
