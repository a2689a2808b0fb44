"""The intraday portfolio on two small hand-made markets, worked by hand.

ES (USD, 50 USD a point) with two strategies on five bars over three
sessions, and a euro market (20 EUR a point, EURUSD 1.10 then 1.20) with one
strategy on three bars at other times and no bar in the third session. The
session P&L, equity, returns, Sharpe, drawdown, notional and leverage are
written out below; the per-bar leverage is also recomputed with a pandas pivot.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog import market_spec
from fbt_pipelines.errors import DataError
from fbt_pipelines.usecases import intraday_portfolio as up

D1, D2, D3 = (pd.Timestamp(d, tz="UTC") for d in ("2024-03-04", "2024-03-05", "2024-03-06"))
ES = market_spec("ES")
EU = dataclasses.replace(market_spec("NQ"), root="EU", currency="EUR", multiplier=20.0)
FX = {"EUR": pd.Series([1.10, 1.20], index=pd.DatetimeIndex([D1, D2]))}  # D3: 1.20 carried


def at(day: pd.Timestamp, hhmm: str) -> pd.Timestamp:
    return day + pd.Timedelta(hours=int(hhmm[:2]), minutes=int(hhmm[2:]))


def sleeve(root, strategy, spec, capital, ts, session, position, pnl, costs, margin, raw) -> up.Sleeve:
    bars = pd.DataFrame({"ts_ns": pd.DatetimeIndex(ts).as_unit("ns").asi8,
                         "session_ns": pd.DatetimeIndex(session).as_unit("ns").asi8, "position": position,
                         "pnl": pnl, "costs": costs, "margin": margin, "raw_close": raw})
    return up.Sleeve(root, strategy, f"{root}|1m", spec, capital, bars)


ES_TS = [at(D1, "1000"), at(D1, "1100"), at(D2, "1000"), at(D2, "1100"), at(D3, "1000")]
ES_DAY = [D1, D1, D2, D2, D3]
EU_TS = [at(D1, "1030"), at(D2, "1000"), at(D2, "1130")]
EU_DAY = [D1, D2, D2]
SLEEVES = [
    sleeve("ES", "a", ES, 100_000.0, ES_TS, ES_DAY, [1, 1, 2, 2, 0], [100.0, -50.0, 200.0, -300.0, 25.0],
           [2.0, 0.0, 2.0, 0.0, 4.0], [10_000.0, 10_000.0, 20_000.0, 20_000.0, 0.0],
           [5000.0, 5001.0, 5004.0, 5001.0, 5002.0]),
    sleeve("ES", "b", ES, 100_000.0, ES_TS, ES_DAY, [-1, 0, 0, 1, 1], [-10.0, 20.0, 0.0, 50.0, -5.0],
           [2.0, 2.0, 0.0, 2.0, 0.0], [10_000.0, 0.0, 0.0, 10_000.0, 10_000.0],
           [5000.0, 5001.0, 5004.0, 5001.0, 5002.0]),
    sleeve("EU", "c", EU, 50_000.0, EU_TS, EU_DAY, [3, 3, -1], [30.0, -60.0, 90.0], [1.0, 0.0, 1.0],
           [6_000.0, 6_000.0, 2_000.0], [100.0, 101.0, 99.0]),
]
CAPITAL = 100_000 + 100_000 + 50_000 * 1.10  # EUR capital at the first session's rate: 255,000 USD


@pytest.fixture(scope="module")
def book() -> up.IntradayPortfolio:
    return up.build_intraday_portfolio(up.IntradayPortfolioSpec("1m"), SLEEVES, FX)


def test_session_pnl_equity_returns_by_hand(book):
    eq = book.equity
    assert list(eq.columns) == up.EQUITY_COLUMNS and (eq["portfolio"] == "ALL|1m").all()
    assert book.capital == CAPITAL == 255_000.0
    assert eq["session"].tolist() == [D1, D2, D3]
    # D1: ES 100 - 50 - 10 + 20 = 60, EU 30 EUR x 1.10 = 33; D2: ES 200 - 300 + 0 + 50 = -50, EU 30 x 1.20 = 36;
    # D3: ES 25 - 5 = 20, EU no bar
    np.testing.assert_allclose(eq["pnl"], [93.0, -14.0, 20.0], atol=1e-9)
    np.testing.assert_allclose(eq["costs"], [4 + 2 + 1.1, 2 + 2 + 1.2, 4.0], atol=1e-9)
    np.testing.assert_allclose(eq["equity"], [255_093.0, 255_079.0, 255_099.0], atol=1e-9)
    r = np.array([93 / 255_000, -14 / 255_093, 20 / 255_079])
    np.testing.assert_allclose(eq["session_return"], r, rtol=1e-12)
    assert book.sharpe == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(252), rel=1e-12)
    assert book.max_drawdown == pytest.approx(1 - 255_079 / 255_093, rel=1e-12)
    assert book.net_pnl == pytest.approx(99.0) and book.final_equity == pytest.approx(255_099.0)
    # the session's close is its last bar of any market: D2 closes at EU's 11:30 bar
    assert eq["ts"].tolist() == [at(D1, "1100"), at(D2, "1130"), at(D3, "1000")]


def test_pnl_per_market_and_strategy(book):
    p = book.pnl.set_index(["session", "root", "strategy"])
    assert p.loc[(D2, "EU", "c"), "pnl"] == pytest.approx(36.0)
    assert p.loc[(D2, "ES", "a"), "pnl"] == pytest.approx(-100.0) and p.loc[(D2, "ES", "a"), "bars"] == 2
    assert p.loc[(D3, "ES", "b"), "position"] == 1 and (D3, "EU", "c") not in p.index
    by = book.pnl_by_market().set_index(["market", "strategy"])["net_pnl_usd"]
    assert by.to_dict() == pytest.approx({("ES", "a"): -25.0, ("ES", "b"): 55.0, ("EU", "c"): 69.0})


def test_exposure_and_leverage_at_every_bar(book):
    # D1 10:00: ES net 1 - 1 = 0 contracts; EU none yet -> 0
    # D1 10:30: EU 3 x 100 x 20 x 1.10 = 6,600 USD; equity 255,000 + 90 + 33 = 255,123
    # D2 10:00: ES 2 x 5004 x 50 = 500,400; EU 3 x 101 x 20 x 1.20 = 7,272; equity 255,093 + 200 - 60 x 1.2 = 255,221
    assert book.equity["leverage"].iloc[0] == pytest.approx((1 * 5001 * 50 + 6_600) / 255_093)  # D1 11:00
    worst = (500_400 + 7_272) / 255_221
    d2_1100 = (3 * 5001 * 50 + 7_272) / (255_221 - 300 + 50)
    d2_1130 = (3 * 5001 * 50 + 1 * 99 * 20 * 1.2) / (255_221 - 300 + 50 + 108)
    d3 = (1 * 5002 * 50 + 1 * 99 * 20 * 1.2) / 255_099
    assert book.max_leverage == pytest.approx(max(worst, d2_1100, d2_1130, d3), rel=1e-12)
    np.testing.assert_allclose(book.equity["max_leverage"], [(5001 * 50 + 6_600) / 255_093,
                                                             max(worst, d2_1100, d2_1130), d3], rtol=1e-12)
    assert book.exposure["ES"] == pytest.approx(3 * 5001 * 50 / (255_221 - 250), rel=1e-12)
    assert book.exposure["EU"] == pytest.approx(7_272 / (255_221 - 250), rel=1e-12)  # carried into ES's 11:00 bar
    # margin at each session's close: EU's 2,000 EUR at 1.20 from D2 on
    np.testing.assert_allclose(book.equity["margin"], [10_000 + 6_000 * 1.1, 30_000 + 2_400, 10_000 + 2_400])


def test_leverage_matches_a_pandas_pivot(book):
    rows = []
    for s in SLEEVES:
        rate = 1.0 if s.spec.currency == "USD" else np.where(s.bars["session_ns"] == D1.value, 1.10, 1.20)
        rows.append(pd.DataFrame({"ts": s.bars["ts_ns"], "root": s.root, "pnl": s.bars["pnl"] * rate,
                                  "notional": s.bars["position"] * s.bars["raw_close"] * s.spec.multiplier * rate}))
    bars = pd.concat(rows)
    notional = bars.pivot_table(index="ts", columns="root", values="notional", aggfunc="sum").ffill().fillna(0.0)
    equity = CAPITAL + bars.groupby("ts")["pnl"].sum().cumsum()
    leverage = notional.abs().sum(axis=1) / equity
    assert book.max_leverage == pytest.approx(leverage.max(), rel=1e-12)
    assert book.exposure.to_dict() == pytest.approx(notional.abs().div(equity, axis=0).max().to_dict(), rel=1e-12)


def test_limits_pass_and_fail(book):
    assert [(c.name, c.passed) for c in book.checks] == [("market_exposure_limit", True), ("leverage_limit", True)]
    tight = up.build_intraday_portfolio(up.IntradayPortfolioSpec("1m", max_market_exposure=1.5, max_leverage=1.9),
                                        SLEEVES, FX)
    failed = {c.name: c.metadata() for c in tight.checks if not c.passed}
    assert set(failed) == {"market_exposure_limit", "leverage_limit"}
    assert failed["market_exposure_limit"]["market"] == "ES"


def test_capital_strategies_and_fx_rules():
    given = up.build_intraday_portfolio(up.IntradayPortfolioSpec("1m", capital=1_000_000.0), SLEEVES, FX)
    assert given.capital == 1_000_000.0 and given.equity["equity"].iloc[0] == pytest.approx(1_000_093.0)
    with pytest.raises(ValueError, match="no FX series for EUR"):
        up.build_intraday_portfolio(up.IntradayPortfolioSpec("1m"), SLEEVES, {})
    with pytest.raises(DataError, match="capital must be > 0"):
        up.IntradayPortfolioSpec("1m", capital=-1.0)
    with pytest.raises(DataError, match="1m or 1h"):
        up.IntradayPortfolioSpec("1d")
    assert up.portfolio_key("1h") == "ALL|1h"
    line = up.portfolio_line(up.build_intraday_portfolio(up.IntradayPortfolioSpec("1m"), SLEEVES, FX).equity)
    assert line.startswith("portfolio ALL|1m: net P&L 99 USD over 3 sessions") and "max drawdown 0.01%" in line
