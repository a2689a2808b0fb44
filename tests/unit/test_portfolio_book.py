"""The USD book: a hand-worked EUR contract next to a USD one on a different calendar.

FESX-like market (EUR, 10 EUR/point, margin 3,000 EUR), sessions D1, D2, D3:
  position 0, 2, 2; raw close 5000, 5010, 4990; P&L 0, +200, -400 EUR; costs 0, 5, 0 EUR.
  EURUSD 1.10 on D1, 1.20 on D2, none on D3 (the D2 rate is carried).
  USD: P&L 0, 240, -480; costs 0, 6; margin 0, 7,200, 7,200; notional 0, 120,240, 119,760.
ES short one contract (50 USD/point, margin 13,200), sessions D1 and D3 only:
  raw close 4000, 4010; P&L 0, -500 USD; notional -200,000 (carried on D2), -200,500.
Book, capital 1,000,000 USD: pnl 0, 240, -980 -> equity 1,000,000, 1,000,240, 999,260.
  D2: gross 120,240 + 200,000 = 320,240; net 120,240 - 200,000 = -79,760; margin 7,200 + 13,200 = 20,400.
"""

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog import market_spec
from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.portfolio.book import (MarketBook, fx_from_future, market_exposure, portfolio_book,
                                          snapshot)

D1, D2, D3 = (pd.Timestamp(d, tz="UTC") for d in ("2024-03-04", "2024-03-05", "2024-03-06"))
FESX = ContractSpec(root="FESX", name="Euro Stoxx 50", exchange="EUREX", asset_class="equity", currency="EUR",
                    multiplier=10.0, tick_size=1.0, cycle="HMUZ", expiry_rule="third_friday",
                    first_notice_rule="none", roll_days_before=5, commission=1.0, initial_margin=3000.0,
                    maintenance_margin=2700.0)


def books():
    fesx = pd.DataFrame({"ts": [D1, D2, D3], "close": [5000.0, 5010.0, 4990.0], "raw_close": [5000.0, 5010.0, 4990.0],
                         "position": [0, 2, 2], "pnl": [0.0, 200.0, -400.0], "margin": [0.0, 6000.0, 6000.0],
                         "costs": [0.0, 5.0, 0.0]})
    fesx_trades = pd.DataFrame({"ts": [D2], "contract": ["FESXH2024"], "kind": ["fill"], "contracts": [2],
                                "price": [5005.0], "raw_price": [5005.0], "commission": [2.0], "slippage": [3.0]})
    es = pd.DataFrame({"ts": [D1, D3], "close": [4000.0, 4010.0], "raw_close": [4000.0, 4010.0],
                       "position": [-1, -1], "pnl": [0.0, -500.0], "margin": [13200.0, 13200.0], "costs": [0.0, 0.0]})
    return {"FESX": MarketBook(FESX, fesx, fesx_trades), "ES": MarketBook(market_spec("ES"), es)}


FX = {"EUR": pd.Series([1.10, 1.20], index=[D1, D2])}


def test_book_in_usd_by_hand():
    positions, equity, trades = portfolio_book(books(), 1_000_000.0, FX)
    fesx = positions[positions["root"] == "FESX"].reset_index(drop=True)
    assert fesx["fx_rate"].tolist() == [1.10, 1.20, 1.20]
    assert fesx["pnl"].tolist() == pytest.approx([0.0, 240.0, -480.0])
    assert fesx["costs_usd"].tolist() == pytest.approx([0.0, 6.0, 0.0])
    assert fesx["margin_usd"].tolist() == pytest.approx([0.0, 7200.0, 7200.0])
    assert fesx["notional_usd"].tolist() == pytest.approx([0.0, 120_240.0, 119_760.0])
    assert fesx["trade"].tolist() == [0, 2, 0]
    es = positions[positions["root"] == "ES"]
    assert es["trade"].tolist() == [-1, 0] and es["notional_usd"].tolist() == pytest.approx([-200_000.0, -200_500.0])

    e = equity.set_index("ts")
    assert e["pnl"].tolist() == pytest.approx([0.0, 240.0, -980.0])
    assert e["equity"].tolist() == pytest.approx([1_000_000.0, 1_000_240.0, 999_260.0])
    assert (e["cash"] == e["equity"]).all()
    assert e.loc[D2, "margin"] == pytest.approx(20_400.0)
    assert e.loc[D2, "free_cash"] == pytest.approx(1_000_240.0 - 20_400.0)
    assert e.loc[D2, "gross_exposure"] == pytest.approx(320_240.0)
    assert e.loc[D2, "net_exposure"] == pytest.approx(-79_760.0)
    assert e.loc[D2, "leverage"] == pytest.approx(320_240.0 / 1_000_240.0)
    assert e.loc[D3, "gross_exposure"] == pytest.approx(119_760.0 + 200_500.0)
    assert e["gross_positions"].tolist() == [1, 3, 3]
    # trade converted at its session's rate: 2 x 5005 x 10 x 1.2 = 120,120 USD; costs 2.4 + 3.6
    assert trades["notional_usd"].tolist() == pytest.approx([120_120.0])
    assert trades["commission_usd"].iloc[0] + trades["slippage_usd"].iloc[0] == pytest.approx(6.0)
    exposure = market_exposure(positions, equity)
    assert exposure.loc[D2, "ES"] == pytest.approx(200_000.0 / 1_000_240.0)


def test_snapshot_on_a_date_the_usd_market_did_not_trade():
    positions, equity, _ = portfolio_book(books(), 1_000_000.0, FX)
    snap = snapshot(positions, equity, "2024-03-05")
    assert snap["as_of"] == "2024-03-05" and snap["equity"] == pytest.approx(1_000_240.0)
    by = {m["root"]: m for m in snap["markets"]}
    assert by["ES"]["last_session"] == "2024-03-04" and by["ES"]["pnl_day"] == 0.0
    assert by["FESX"]["pnl_day"] == pytest.approx(240.0) and by["FESX"]["position"] == 2
    assert snap["net_exposure"] == pytest.approx(-79_760.0)
    # a weekend date takes the last session before it
    assert snapshot(positions, equity, "2024-03-09")["as_of"] == "2024-03-06"
    with pytest.raises(ValueError, match="starts on 2024-03-04"):
        snapshot(positions, equity, "2024-01-01")


def test_missing_fx_is_a_clear_error_and_fx_comes_from_the_6e_future():
    with pytest.raises(ValueError, match="no FX series for EUR.*6E"):
        portfolio_book(books(), 1_000_000.0, None)
    with pytest.raises(ValueError, match="no rate on or before 2024-03-04"):
        portfolio_book(books(), 1_000_000.0, {"EUR": pd.Series([1.2], index=[D2])})
    prices_6e = pd.DataFrame({"ts": [D2, D1], "raw_close": [1.0850, 1.0900], "close": [1.08, 1.09]})
    fx = fx_from_future(prices_6e)
    assert fx.index.tolist() == [D1, D2] and fx.tolist() == [1.0900, 1.0850]


def test_usd_only_book_equals_combine_markets():
    from fbt_pipelines.portfolio.portfolio import combine_markets

    b = books()
    es = b["ES"].bars
    positions, equity, _ = portfolio_book({"ES": b["ES"]}, 500.0)
    old_equity, _ = combine_markets({"ES": es}, 500.0)
    assert np.allclose(equity["equity"], old_equity["equity"]) and np.allclose(equity["margin"], old_equity["margin"])
