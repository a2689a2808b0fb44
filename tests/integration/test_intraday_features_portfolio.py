"""intraday_features and intraday_portfolio through Dagster on two generated markets, checked independently.

ES and NQ one-minute bars over the March 2024 roll (generated inside CME
Globex sessions), landed in landing/<ROOT>/1m/ and materialized market by
market with the real warehouse, Redis and MLflow: bars, roll schedule,
series, two strategies' backtests (2 contracts), features, portfolio. The
features are recomputed from the landed bars (returns from each contract's
own previous close, the roll yield from the next contract's last close in
the same trading day); the portfolio by a pandas groupby of the stored
per-bar backtest P&L by trading day (the Chicago clock, not fbt's session
code) and a pivot of the notional for the leverage.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance, materialize

START, END = dt.date(2024, 2, 26), dt.date(2024, 3, 15)
ROOTS = ("ES", "NQ")
MULTIPLIER = {"ES": 50.0, "NQ": 20.0}
SELECTION = ["intraday_raw_bars", "intraday_roll_schedule", "intraday_continuous_prices", "intraday_backtests",
             "intraday_features", "intraday_portfolio"]
STRATEGIES = [{"name": "sma_crossover", "params": {"fast": 30, "slow": 120}}, {"name": "buy_and_hold", "params": {}}]


def trading_day(ts: pd.Series) -> pd.Series:
    """The CME trading day of a UTC bar time from the Chicago clock alone (weekdays only here)."""
    local = pd.DatetimeIndex(ts).tz_convert("America/Chicago")
    day = local.normalize().tz_localize(None)
    return pd.Series(np.where(local.hour >= 17, day + pd.Timedelta(days=1), day), index=ts.index)


@pytest.fixture(scope="module")
def run(tmp_path_factory, redis_url):
    from tests.conftest import use_private_home

    mp = pytest.MonkeyPatch()
    home = use_private_home(mp, tmp_path_factory.mktemp("intraday_fp") / "home", redis_url)
    from fbt_pipelines.catalog import market_spec
    from fbt_pipelines.config import paths
    from fbt_pipelines.location.definitions import ALL_ASSETS, local_resources
    from fbt_pipelines.location.intraday import intraday_run_config
    from fbt_pipelines.marketdata.sample_minutes import write_minute_sample

    bars = {root: write_minute_sample(paths().landing / root / "1m", market_spec(root), START, END, seed=3).frame()
            for root in ROOTS}
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("markets", list(ROOTS))
    results = {}
    for root in ROOTS:
        results[root] = materialize(
            ALL_ASSETS, selection=SELECTION, partition_key=root, instance=instance, resources=local_resources(),
            run_config=intraday_run_config("1m", backtests={"strategies": STRATEGIES, "contracts": 2},
                                           assets=SELECTION))
        assert results[root].success
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        tables = {name: conn.execute(f"SELECT * FROM {name} ORDER BY ALL").df() for name in
                  ("intraday_features", "intraday_continuous_prices", "intraday_backtest_equity",
                   "intraday_backtest_runs", "intraday_portfolio_equity", "intraday_portfolio_pnl")}
    for frame in tables.values():  # DuckDB gives microseconds in Etc/UTC; the landed bars are ns UTC
        for col in ("ts", "session"):
            if col in frame:
                frame[col] = pd.to_datetime(frame[col], utc=True).dt.as_unit("ns")
    yield bars, results, tables
    mp.undo()


def meta(result, asset: str) -> dict:
    [event] = [m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_every_check_passes(run):
    _, results, _ = run
    for result in results.values():
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks["features_finite_after_warmup"] and checks["market_exposure_limit"] and checks["leverage_limit"]
        assert all(checks.values()), checks
    # the first run's portfolio holds ES only, the second both markets
    assert meta(results["ES"], "intraday_portfolio")["markets"] == "ES"
    assert meta(results["NQ"], "intraday_portfolio")["markets"] == "ES,NQ"


def test_features_from_the_landed_bars(run):
    bars, results, tables = run
    for root in ROOTS:
        key = f"{root}|1m"
        prices = tables["intraday_continuous_prices"].query("series == @key").sort_values("ts").reset_index(drop=True)
        feats = tables["intraday_features"].query("series == @key").sort_values("ts").reset_index(drop=True)
        assert len(feats) == len(prices) == 15 * 1380 and (feats["ts"] == prices["ts"]).all()
        raw = bars[root]
        # ret_1: the held contract's close over its own previous close at or before the previous bar
        look = prices[["ts", "contract", "raw_close"]].assign(prev_ts=prices["ts"].shift(1)).iloc[1:]
        own = raw[["contract", "ts", "close"]].rename(columns={"ts": "prev_ts", "close": "prev_close"})
        look = pd.merge_asof(look.sort_values("prev_ts"), own.sort_values("prev_ts"), on="prev_ts", by="contract")
        look = look.sort_values("ts")
        np.testing.assert_allclose(feats["ret_1"].to_numpy()[1:], look["raw_close"] / look["prev_close"] - 1,
                                   rtol=0, atol=1e-12)
        # roll_yield: the next (June) contract's last close at or before the bar, same trading day
        nxt = raw[raw["contract"] == f"{root}M2024"][["ts", "close"]]
        nxt = nxt.assign(next_day=trading_day(nxt["ts"]).to_numpy())
        joined = pd.merge_asof(prices[["ts", "contract", "raw_close"]].assign(
            day=trading_day(prices["ts"]).to_numpy()), nxt, on="ts")
        usable = (joined["contract"] == f"{root}H2024") & (joined["next_day"] == joined["day"])
        expected = np.where(usable, (joined["raw_close"] - joined["close"]) / joined["close"] * 365 / 98, np.nan)
        np.testing.assert_allclose(feats["roll_yield"].to_numpy(), expected, rtol=1e-12, equal_nan=True)
        assert usable.mean() > 0.2
        assert (feats["day_of_week"].to_numpy() == trading_day(prices["ts"]).dt.dayofweek.to_numpy()).all()
        m = meta(results[root], "intraday_features")
        assert (m["rows"], m["bars_per_year"]) == (15 * 1380, 1380 * 252)
        assert m["roll_yield_share"] == pytest.approx(usable.mean())


def test_portfolio_against_a_pandas_groupby(run):
    _, results, tables = run
    runs = tables["intraday_backtest_runs"]
    capital = float((runs["final_equity"] - runs["net_pnl"]).sum())
    assert capital == 4 * 1_000_000.0  # two markets x two strategies, 1,000,000 USD each
    eq = tables["intraday_backtest_equity"].merge(
        tables["intraday_continuous_prices"][["series", "ts", "raw_close"]], on=["series", "ts"], validate="m:1")
    eq["day"] = trading_day(eq["ts"]).to_numpy()
    eq["root"] = eq["series"].str.split("|").str[0]
    per_session = eq.groupby("day")["pnl"].sum()
    equity = capital + per_session.cumsum()
    returns = per_session / np.r_[capital, equity.to_numpy()[:-1]]
    drawdown = 1 - equity / np.maximum.accumulate(np.r_[capital, equity.to_numpy()])[1:]
    stored = tables["intraday_portfolio_equity"].query("portfolio == 'ALL|1m'").sort_values("session")
    assert stored["session"].dt.tz_localize(None).tolist() == list(per_session.index)
    np.testing.assert_allclose(stored["pnl"], per_session, atol=1e-6)
    np.testing.assert_allclose(stored["equity"], equity, rtol=1e-12)
    np.testing.assert_allclose(stored["session_return"], returns, rtol=1e-9)
    sharpe = returns.mean() / returns.std(ddof=1) * np.sqrt(252)
    m = meta(results["NQ"], "intraday_portfolio")
    assert m["sharpe"] == pytest.approx(sharpe, abs=1e-3)  # metadata rounds ratios to 3 decimals
    assert m["max_drawdown"] == pytest.approx(drawdown.max(), abs=1e-4)
    assert m["net_pnl_usd"] == pytest.approx(runs["net_pnl"].sum(), abs=0.01)  # the sleeves' P&L adds up
    # P&L per session, market and strategy
    pnl = tables["intraday_portfolio_pnl"].query("portfolio == 'ALL|1m'")
    mine = eq.groupby(["day", "root", "strategy"])["pnl"].sum()
    theirs = pnl.assign(day=pnl["session"].dt.tz_localize(None)).set_index(["day", "root", "strategy"])["pnl"]
    np.testing.assert_allclose(theirs.sort_index(), mine.sort_index(), atol=1e-6)
    # leverage at every bar: each market's net notional carried forward, over the equity of that time
    eq["notional"] = eq["position"] * eq["raw_close"] * eq["root"].map(MULTIPLIER)
    notional = eq.pivot_table(index="ts", columns="root", values="notional", aggfunc="sum").ffill().fillna(0.0)
    equity_t = capital + eq.groupby("ts")["pnl"].sum().cumsum()
    leverage = (notional.abs().sum(axis=1) / equity_t).max()
    [check] = [e for e in results["NQ"].get_asset_check_evaluations() if e.check_name == "leverage_limit"]
    assert check.metadata["max_leverage"].value == pytest.approx(leverage, rel=1e-9)
    assert 0.1 < leverage < 8.0
