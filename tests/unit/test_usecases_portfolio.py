"""The portfolio, risk and report use cases on a real DuckDB warehouse and a trader's workspace
(user markets, dated margin histories), checked against the domain functions run by hand."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog.specs import BUILTIN_TABLE, market_spec
from fbt_pipelines.engine.futures_engine import EngineConfig, run_backtest
from fbt_pipelines.errors import DataError
from fbt_pipelines.portfolio.book import MarketBook, portfolio_book
from fbt_pipelines.portfolio.sizing import VolTargetConfig
from fbt_pipelines.portfolio.targets import market_targets
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.usecases.portfolio import (PortfolioSpec, book_snapshot, breaches, build_portfolio,
                                              read_portfolio_inputs, store_portfolio)
from fbt_pipelines.usecases.report import UnknownRun, read_backtest_run
from fbt_pipelines.usecases.risk import (RiskSettings, compare_backtests, parse_replay_windows, read_risk_inputs,
                                         risk_report, store_risk_report)
from fbt_pipelines.usecases.workspace import Workspace

PARAMS = {"fast": 5, "slow": 20}


def synthetic_prices(root: str, p0: float, seed: int, tick: float, n: int = 260) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    trend = np.where(np.arange(n) < n // 2, 0.002, -0.002)
    raw = np.round(p0 * np.cumprod(1 + trend + rng.normal(0, 0.01, n)) / tick) * tick
    return pd.DataFrame({"root": root, "method": "panama", "ts": pd.bdate_range("2023-01-02", periods=n, tz="UTC"),
                         "contract": f"{root}Z2023", "open": raw, "high": raw, "low": raw, "close": raw,
                         "raw_close": raw, "volume": 1000, "open_interest": 1000, "days_to_expiry": 100,
                         "roll": False})


@pytest.fixture
def home(tmp_path):
    """A trader's home with one market of their own (MES: ES at a tenth of the multiplier)."""
    es = BUILTIN_TABLE.read_text().split("[ES]")[1].split("\n[")[0]
    (tmp_path / "markets.toml").write_text("[MES]" + es.replace("multiplier = 50.0", "multiplier = 5.0"))
    return tmp_path


@pytest.fixture
def conn(home):
    c = duckdb.connect(str(home / "warehouse.duckdb"))
    for root, p0, seed, tick in (("MES", 4000.0, 1, 0.25), ("CL", 70.0, 2, 0.01)):
        wh.replace_partition(c, "continuous_prices", root, synthetic_prices(root, p0, seed, tick))
    yield c
    c.close()


def portfolio_spec(workspace: Workspace, **kw) -> PortfolioSpec:
    return PortfolioSpec.create("sma_crossover", PARAMS, library=workspace.strategies(), capital=1_000_000.0, **kw)


def test_book_equals_targets_engine_and_book_by_hand_with_user_markets(conn, home):
    ws = Workspace(home)
    inputs = read_portfolio_inputs(conn, ws)
    assert inputs.roots == ["CL", "MES"] and inputs.markets["MES"].spec.multiplier == 5.0  # the trader's market
    book = build_portfolio(portfolio_spec(ws), inputs)
    # by hand: each market at weight 1/2 on the whole capital, the catalogue margin, one USD book
    sizing = VolTargetConfig(capital=1_000_000.0, annual_risk_target=0.20, idm=1.5)
    books = {}
    for root in ("CL", "MES"):
        prices = wh.read_partition(conn, "continuous_prices", root, order_by=["ts"])
        spec = ws.market(root)
        frame, target = market_targets(prices, spec, "sma_crossover", PARAMS, sizing, 0.5, 0.10)
        result = run_backtest(frame, target, spec, EngineConfig(initial_capital=1_000_000.0, slippage_ticks=1.0))
        books[root] = MarketBook(spec, result.bars.assign(raw_close=frame["raw_close"].to_numpy(float)), result.trades)
    positions, equity, trades = portfolio_book(books, 1_000_000.0)
    pd.testing.assert_frame_equal(book.equity, equity)
    pd.testing.assert_frame_equal(book.positions, positions)
    assert len(book.trades) == len(trades) > 0
    assert dict(book.margin_sources) == {"CL": "catalogue", "MES": "catalogue"}
    # P&L by market is the book's USD P&L; it adds up to the final equity
    by_market = book.pnl_by_market().set_index("market")
    assert by_market["net_pnl_usd"].sum() == pytest.approx(book.final_equity - 1_000_000.0, abs=1e-6)
    assert all(c.passed for c in book.checks) and breaches(book.checks) == {}


def test_margin_history_of_the_workspace_sets_the_margin_per_bar(conn, home):
    ws = Workspace(home)
    plain = build_portfolio(portfolio_spec(ws), read_portfolio_inputs(conn, ws))
    (home / "margins").mkdir()
    (home / "margins" / "MES.csv").write_text("date,initial,maintenance\n20221201,1000,900\n20230601,3000,2700\n")
    inputs = read_portfolio_inputs(conn, ws)
    book = build_portfolio(portfolio_spec(ws), inputs)
    assert book.margin_sources["MES"].endswith("MES.csv") and book.margin_sources["CL"] == "catalogue"
    mes = book.positions[book.positions["root"] == "MES"]
    per_contract = np.where(mes["ts"] < pd.Timestamp("2023-06-01", tz="UTC"), 1000.0, 3000.0)
    assert np.allclose(mes["margin_usd"], mes["position"].abs() * per_contract)
    assert (mes["position"] != 0).any()
    # the same trades (margin is far from binding here), a different margin in use
    pd.testing.assert_series_equal(book.positions["position"], plain.positions["position"])
    assert not np.allclose(book.equity["margin"], plain.equity["margin"])


def test_limits_store_and_snapshot(conn, home):
    ws = Workspace(home)
    with pytest.raises(DataError, match="no portfolio book"):
        book_snapshot(conn)
    ok = build_portfolio(portfolio_spec(ws), read_portfolio_inputs(conn, ws))
    book = build_portfolio(portfolio_spec(ws, max_leverage=ok.max_leverage / 2), read_portfolio_inputs(conn, ws))
    checks = {c.name: c for c in book.checks}
    assert checks["market_exposure_limit"].passed and not checks["leverage_limit"].passed
    assert checks["market_exposure_limit"].metadata()["market"] in ("CL", "MES")
    assert breaches(book.checks) == {"max_leverage": {"value": pytest.approx(ok.max_leverage),
                                                      "limit": ok.max_leverage / 2}}
    store_portfolio(conn, book)
    snap = book_snapshot(conn)
    assert snap["as_of"] == pd.Timestamp(book.equity["ts"].iloc[-1]).date().isoformat()
    assert snap["equity"] == pytest.approx(book.final_equity)
    assert book_snapshot(conn, "2023-03-01")["as_of"] == "2023-03-01"
    with pytest.raises(DataError, match="starts on 2023-01-02"):
        book_snapshot(conn, "2022-01-01")


def test_risk_report_of_the_stored_book(conn, home):
    ws = Workspace(home)
    store_portfolio(conn, build_portfolio(portfolio_spec(ws), read_portfolio_inputs(conn, ws)))
    inputs = read_risk_inputs(conn, ws)
    assert dict(inputs.asset_classes) == {"CL": "energy", "MES": "equity"}  # MES from the trader's table
    margin_ratio = float((inputs.equity["margin"] / inputs.equity["equity"]).max())
    report = risk_report(inputs, RiskSettings(monte_carlo_paths=200, max_var_99=1e-6,
                                              max_margin_to_equity=margin_ratio), code_version="test")
    assert report.max_margin_to_equity == pytest.approx(margin_ratio)
    checks = {c.name: c.passed for c in report.checks}
    assert checks == {"max_drawdown_limit": True, "var_limit": False, "margin_limit": True}
    assert set(breaches(report.checks)) == {"var_99"}
    assert report.benchmark == "CL"  # no ES held: the first market
    store_risk_report(conn, report)
    row = wh.read_partition(conn, "risk_report", "main").iloc[0]
    assert row["code_version"] == "test" and row["sharpe"] == pytest.approx(report.metrics.sharpe)
    assert row["mc_max_drawdown_p50"] == pytest.approx(report.monte_carlo["max_drawdown_p50"])
    assert len(wh.read_partition(conn, "risk_scenarios", "main")) > 0


def test_errors_name_what_is_missing(conn, home):
    with pytest.raises(DataError, match="no backtest runs"):
        compare_backtests(pd.DataFrame())
    with pytest.raises(ValueError, match="NAME:YYYY-MM-DD:YYYY-MM-DD"):
        parse_replay_windows(["covid:2020-02-19"])
    assert parse_replay_windows(["x:2023-01-02:2023-02-01"])[-1] == ("x", "2023-01-02", "2023-02-01")
    with pytest.raises(DataError, match="no book for portfolio"):
        read_risk_inputs(conn, Workspace(home))
    with pytest.raises(UnknownRun, match=r"unknown run id .abc.*no backtest run is stored yet"):
        read_backtest_run(conn, "abc")
    empty = duckdb.connect(str(home / "empty.duckdb"))
    with pytest.raises(DataError, match="no continuous prices"):
        read_portfolio_inputs(empty, Workspace(home))
    empty.close()
    assert market_spec("ES").multiplier == 50.0  # the trader's table did not touch the built-ins
