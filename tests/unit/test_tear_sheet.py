"""Tear sheet analytics (monthly returns, rolling Sharpe / vol, round trips),
the HTML page and the CSV export."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog import market_spec
from fbt_pipelines.engine.futures_engine import EngineConfig, run_backtest
from fbt_pipelines.reports.analytics import (
    monthly_returns,
    rolling_sharpe,
    rolling_vol,
    round_trips,
    trade_stats,
)
from fbt_pipelines.reports.export import export_csv
from fbt_pipelines.reports.tear_sheet import BUNDLE, write_tear_sheet


def ts(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


# --------------------------------------------------------------------------- monthly returns


def test_monthly_returns_hand_example():
    # 100 -> 110 during January, 110 -> 99 during February: +10 %, -10 %
    eq = pd.Series([100.0, 104.0, 110.0, 120.0, 99.0],
                   index=[ts("2020-01-02"), ts("2020-01-15"), ts("2020-01-31"), ts("2020-02-10"), ts("2020-02-28")])
    table = monthly_returns(eq)
    assert list(table.index) == [2020] and list(table.columns) == list(range(1, 13))
    assert table.loc[2020, 1] == pytest.approx(0.10, abs=1e-12)
    assert table.loc[2020, 2] == pytest.approx(-0.10, abs=1e-12)
    assert table.loc[2020, 3:].isna().all()


def test_monthly_returns_span_years_and_gaps():
    # Dec 2019 ends at 200; Jan 2020 ends at 210 (+5 % of 200); March 2020 ends at 189
    # (-10 % of the last value before March, January's 210: February has no data)
    eq = pd.Series([100.0, 200.0, 210.0, 189.0],
                   index=[ts("2019-11-29"), ts("2019-12-31"), ts("2020-01-31"), ts("2020-03-31")])
    table = monthly_returns(eq)
    assert list(table.index) == [2019, 2020]
    assert table.loc[2019, 11] == 0.0 and table.loc[2019, 12] == pytest.approx(1.0)
    assert table.loc[2020, 1] == pytest.approx(0.05) and math.isnan(table.loc[2020, 2])
    assert table.loc[2020, 3] == pytest.approx(-0.10)
    # compounding the months gives the whole-period return
    assert (1 + table.stack().dropna()).prod() == pytest.approx(189.0 / 100.0)


def test_monthly_returns_refuses_bad_input():
    with pytest.raises(ValueError, match="DatetimeIndex"):
        monthly_returns(pd.Series([1.0, 2.0]))
    with pytest.raises(ValueError, match="> 0"):
        monthly_returns(pd.Series([1.0, -2.0], index=[ts("2020-01-02"), ts("2020-01-03")]))


# --------------------------------------------------------------------------- rolling Sharpe / vol


def _random_equity(n: int = 300, seed: int = 3) -> pd.Series:
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0004, 0.01, n - 1)
    values = 1e6 * np.cumprod(np.r_[1.0, 1.0 + r])
    return pd.Series(values, index=pd.bdate_range("2020-01-01", periods=n, tz="UTC"))


def test_rolling_sharpe_and_vol_match_numpy():
    eq, window = _random_equity(), 126
    r = eq.to_numpy()[1:] / eq.to_numpy()[:-1] - 1.0
    sharpe, vol = rolling_sharpe(eq, window), rolling_vol(eq, window)
    assert sharpe.index.equals(eq.index) and vol.index.equals(eq.index)
    assert sharpe.iloc[:window].isna().all() and vol.iloc[:window].isna().all()
    for t in range(window, len(eq)):
        w = r[t - window:t]  # the window returns ending at session t (return t-1 is eq[t] / eq[t-1] - 1)
        assert sharpe.iloc[t] == pytest.approx(w.mean() / w.std(ddof=1) * np.sqrt(252), rel=1e-9)
        assert vol.iloc[t] == pytest.approx(w.std(ddof=1) * np.sqrt(252), rel=1e-9)


def test_rolling_sharpe_is_nan_on_a_flat_window_and_checks_the_window():
    eq = pd.Series(1e6, index=pd.bdate_range("2020-01-01", periods=10, tz="UTC"))
    assert rolling_sharpe(eq, 5).isna().all()
    assert (rolling_vol(eq, 5).iloc[5:] == 0.0).all()
    with pytest.raises(ValueError, match="window"):
        rolling_sharpe(eq, 1)


# --------------------------------------------------------------------------- round trips


def _trades(rows: list[tuple]) -> pd.DataFrame:
    cols = ["ts", "kind", "contracts", "price", "commission", "slippage"]
    frame = pd.DataFrame(rows, columns=cols)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame.assign(contract="ESH0", refused=0)


def test_round_trips_by_hand():
    # long 2 at 100, add 1 at 104, roll (costs 6), sell 3 at 110 -> flat: gross (3*110 - 2*100 - 104) * 50 = 1300
    # then short 1 at 108 flipped to long 1 at 103 (the flip's 2 contracts split 1 / 1), open at the end (close 101)
    trades = _trades([
        ("2020-01-02", "trade", 2, 100.0, 4.0, 2.0),
        ("2020-01-06", "trade", 1, 104.0, 2.0, 1.0),
        ("2020-01-06", "roll", 3, 104.5, 5.0, 1.0),
        ("2020-01-10", "trade", -3, 110.0, 6.0, 3.0),
        ("2020-01-13", "trade", -1, 108.0, 2.0, 1.0),
        ("2020-01-14", "trade", 0, 108.0, 0.0, 0.0),  # refused-only record: ignored
        ("2020-01-20", "trade", 2, 103.0, 4.0, 2.0),
    ])
    trips = round_trips(trades, 50.0, last_close=101.0, last_ts=ts("2020-01-31"))
    assert list(trips["side"]) == ["long", "short", "long"] and list(trips["open"]) == [False, False, True]
    first, second, third = trips.to_dict("records")
    assert first["gross_pnl"] == pytest.approx(1300.0) and first["roll_costs"] == 6.0 and first["rolls"] == 1
    assert first["net_pnl"] == pytest.approx(1300.0 - 12.0 - 6.0) and first["max_contracts"] == 3
    assert first["holding_days"] == 8.0 and first["exit_ts"] == ts("2020-01-10")
    assert second["gross_pnl"] == pytest.approx(5 * 50.0) and second["commission"] == pytest.approx(2.0 + 2.0)
    assert second["net_pnl"] == pytest.approx(250.0 - 4.0) and second["holding_days"] == 7.0
    assert third["gross_pnl"] == pytest.approx(-2 * 50.0) and third["commission"] == pytest.approx(2.0)
    assert third["holding_days"] == 11.0
    stats = trade_stats(trades, trips)
    assert stats["round_trips"] == 2 and stats["open_round_trips"] == 1 and stats["win_rate"] == 1.0
    assert stats["best"] == pytest.approx(1282.0) and stats["worst"] == pytest.approx(246.0)
    assert stats["roll_costs"] == 6.0 and stats["other_costs"] == pytest.approx(6 + 3 + 9 + 3 + 6)
    assert stats["fills"] == 5 and stats["rolls"] == 1
    # without a multiplier: points x contracts, costs not subtracted
    points = round_trips(trades)
    assert points["net_pnl"].tolist() == pytest.approx([26.0, 5.0])  # the open one has no mark: left out


def test_round_trips_add_up_to_the_engine_net_pnl():
    spec = dataclasses.replace(market_spec("ES"), multiplier=50.0, tick_size=0.25, commission=2.10,
                               initial_margin=1_000.0)
    rng = np.random.default_rng(1)
    n = 400
    close = 4000.0 + np.cumsum(rng.normal(0, 10, n))
    roll = np.zeros(n, dtype=bool)
    roll[::60] = True
    prices = pd.DataFrame({"ts": pd.date_range("2020-01-01", periods=n, freq="D", tz="UTC"), "contract": "ESH0",
                           "open": close + rng.normal(0, 3, n), "close": close, "raw_close": close - 5.0,
                           "roll": roll})
    target = np.round(np.cumsum(rng.normal(0, 1.5, n)) / 2).astype(int)
    result = run_backtest(prices, target, spec, EngineConfig(initial_capital=1e6))
    trips = round_trips(result.trades, 50.0, last_close=float(result.bars["close"].iloc[-1]),
                        last_ts=result.bars["ts"].iloc[-1])
    assert len(trips) > 5 and (trips["rolls"] > 0).any()
    assert trips["net_pnl"].sum() == pytest.approx(result.net_pnl, abs=1e-6)


# --------------------------------------------------------------------------- HTML page and CSV


FIGURE_TITLES = [
    "Equity (USD)", "Drawdown", "Monthly returns (% of start-of-month equity)",
    "Rolling 126-day Sharpe and annualised volatility", "Rolling 126-day Sharpe",
    "Rolling 126-day annualised volatility", "Net P&L by market (USD, after costs)",
    "Round-trip net P&L (USD)", "Holding time of round trips (days)", "Costs (USD): rolls vs other fills",
]


def _backtest():
    eq = _random_equity(400)
    bars = pd.DataFrame({"ts": eq.index, "contract": "ESH0", "close": np.linspace(4000, 4100, len(eq)),
                         "equity": eq.to_numpy()})
    trades = _trades([
        (eq.index[5], "trade", 2, 4001.0, 4.2, 25.0), (eq.index[60], "roll", 2, 4020.0, 8.4, 50.0),
        (eq.index[90], "trade", -4, 4030.0, 8.4, 50.0), (eq.index[200], "trade", 2, 4050.0, 4.2, 25.0),
    ])
    return bars, trades


def test_tear_sheet_has_every_figure_and_references_the_shared_bundle(tmp_path):
    bars, trades = _backtest()
    path = write_tear_sheet(tmp_path / "reports" / "run.html", "sma on ES", bars, {"Sharpe": "1.00"},
                            pd.Series({"ES": 123.0}), {"run id": "abc"}, trades=trades, multiplier=50.0)
    page = path.read_text(encoding="utf-8")
    titles = set(re.findall(r'"text":"([^"]*)"', page))
    missing = [t for t in [*FIGURE_TITLES, "sma on ES"] if t not in titles]
    assert not missing, f"figure titles missing: {missing}"
    assert page.count('class="plotly-graph-div"') == 7
    assert '<script src="plotly.min.js"></script>' in page
    assert len(page) < 500_000 and "* plotly.js v" not in page  # the bundle sits beside the page, not inline
    assert (tmp_path / "reports" / BUNDLE).read_text(encoding="utf-8").startswith("/**\n* plotly.js v")
    for heading in ["<h2>Trades</h2>", "Win rate", "Median holding time (days)"]:
        assert heading in page
    # rolls 8.4 + 50; other fills (4.2 + 25) + (8.4 + 50) + (4.2 + 25)
    assert "<th>Roll costs / other costs (USD)</th><td>58.40 / 116.80</td>" in page
    assert "<th>Round trips (closed / open)</th><td>2 / 0</td>" in page


def test_tear_sheet_without_trades_keeps_the_portfolio_layout(tmp_path):
    bars, _ = _backtest()
    (tmp_path / BUNDLE).write_text("// an existing bundle is reused", encoding="utf-8")
    path = write_tear_sheet(tmp_path / "tear_sheet.html", "portfolio", bars[["ts", "equity"]], {"Max drawdown": "5%"},
                            pd.Series({"ES": 1.0, "CL": -2.0}), {"data version": "x"})
    page = path.read_text(encoding="utf-8")
    assert page.count('class="plotly-graph-div"') == 4 and "<h2>Trades</h2>" not in page
    assert "Monthly returns (% of start-of-month equity)" in page and "Max drawdown" in page
    assert (tmp_path / BUNDLE).read_text(encoding="utf-8") == "// an existing bundle is reused"


def test_tear_sheet_short_history_and_negative_equity_still_render(tmp_path):
    bars, trades = _backtest()
    short = bars.iloc[:30]
    page = write_tear_sheet(tmp_path / "a.html", "short", short, {}, pd.Series(dtype=float), {},
                            trades=trades.iloc[:1]).read_text(encoding="utf-8")
    assert "fewer than 126 daily returns" in page
    assert "Round-trip net P&L (points x contracts, before costs)" in page
    broke = bars.assign(equity=np.linspace(1e6, -1e5, len(bars)))
    page = write_tear_sheet(tmp_path / "b.html", "broke", broke, {}, pd.Series({"ES": -1.1e6}), {}).read_text()
    assert "monthly and rolling returns are omitted" in page


def test_export_csv_writes_three_files(tmp_path):
    bars, trades = _backtest()
    files = export_csv(tmp_path / "out", bars, trades,
                       {"sharpe": 1.25, "calmar": float("nan"), "start": pd.Timestamp("2020-01-01").date(),
                        "trades": np.int64(4), "params": json.dumps({"fast": 10})})
    assert sorted(p.name for p in files.values()) == ["equity.csv", "metrics.csv", "trades.csv"]
    equity = pd.read_csv(files["equity"])
    assert len(equity) == len(bars) and list(equity.columns) == list(bars.columns)
    assert list(pd.to_datetime(equity["ts"], utc=True)) == list(bars["ts"])
    assert np.allclose(equity["equity"], bars["equity"])
    assert len(pd.read_csv(files["trades"])) == len(trades)
    metrics = pd.read_csv(files["metrics"], keep_default_na=False).set_index("metric")["value"].to_dict()
    assert metrics == {"sharpe": "1.25", "calmar": "", "start": "2020-01-01", "trades": "4", "params": '{"fast": 10}'}
    assert not list((tmp_path / "out").glob("*.tmp"))
    # a Series is written as ts, equity
    series = bars.set_index("ts")["equity"]
    again = export_csv(tmp_path / "series", series, trades.iloc[:0], {})
    assert list(pd.read_csv(again["equity"]).columns) == ["ts", "equity"]
