"""The intraday asset group end to end on generated minute bars, checked by independent computations.

Two ES contracts (ESH2024, ESM2024) over the March 2024 roll, one-minute bars
inside CME Globex sessions, ingested with ``interval='1m'`` and materialized
through Dagster with the real warehouse, Redis and MLflow. Every number is
recomputed here without fbt's session, roll or engine code: the trading day
from the Chicago clock (17:00 CT opens the next day's session), the volume
roll rule, Panama shifts, the P&L of a fixed two-contract SMA crossover by
position x price change x multiplier minus costs, and the Sharpe ratio with
1,380 one-minute bars per session (CME Globex 17:00-16:00 CT: 23 hours).
"""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance, materialize

START, END = dt.date(2024, 2, 26), dt.date(2024, 3, 15)
FAST, SLOW, CONTRACTS = 30, 120, 2
ES_MULT, ES_TICK, ES_COMMISSION, SLIP_TICKS = 50.0, 0.25, 2.10, 1.0
BARS_PER_SESSION_ES_1M = 23 * 60  # CME Globex equity: 17:00-16:00 CT


def trading_day(ts: pd.Series) -> pd.Series:
    """The CME trading day of a UTC bar time, from the Chicago clock alone (weekdays only here)."""
    local = pd.DatetimeIndex(ts).tz_convert("America/Chicago")
    day = local.normalize().tz_localize(None)
    return pd.Series(np.where(local.hour >= 17, day + pd.Timedelta(days=1), day), index=ts.index)


@pytest.fixture(scope="module")
def intraday_home(tmp_path_factory, redis_url):
    from tests.conftest import use_private_home

    mp = pytest.MonkeyPatch()
    home = use_private_home(mp, tmp_path_factory.mktemp("intraday") / "home", redis_url)
    from fbt_pipelines.catalog import market_spec
    from fbt_pipelines.config import paths
    from fbt_pipelines.marketdata.sample_minutes import write_minute_sample

    folder = paths().landing / "ES" / "1m"  # the intraday_raw_bars asset ingests it
    sample = write_minute_sample(folder, market_spec("ES"), START, END, seed=3)
    assert sorted(sample.bars) == ["ESH2024", "ESM2024"]
    yield home, sample.frame()
    mp.undo()


@pytest.fixture(scope="module")
def materialized(intraday_home):
    from fbt_pipelines.location.definitions import ALL_ASSETS, local_resources
    from fbt_pipelines.location.intraday import intraday_run_config

    home, bars = intraday_home
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("markets", ["ES"])
    selection = ["intraday_raw_bars", "intraday_roll_schedule", "intraday_continuous_prices", "intraday_backtests",
                 "intraday_tear_sheet"]
    result = materialize(
        ALL_ASSETS, selection=selection, partition_key="ES", instance=instance, resources=local_resources(),
        run_config=intraday_run_config("1m", backtests={
            "strategies": [{"name": "sma_crossover", "params": {"fast": FAST, "slow": SLOW}}],
            "contracts": CONTRACTS}, assets=selection))
    assert result.success
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        tables = {t: conn.execute(f"SELECT * FROM {t} WHERE series = 'ES|1m' ORDER BY ALL").df()
                  for t in ("intraday_roll_schedule", "intraday_backtest_runs")}
        tables["prices"] = conn.execute(
            "SELECT * FROM intraday_continuous_prices WHERE series = 'ES|1m' ORDER BY ts").df()
        tables["equity"] = conn.execute(
            "SELECT * FROM intraday_backtest_equity WHERE series = 'ES|1m' ORDER BY ts").df()
        tables["daily_tables"] = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name IN "
            "('roll_schedule', 'continuous_prices', 'backtest_runs')").fetchone()[0]
    return home, bars, result, tables


def test_checks_pass_and_daily_tables_untouched(materialized):
    _, _, result, tables = materialized
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"ohlc_valid": True, "no_duplicate_bars": True, "no_quarantined_rows": True,
                      "no_price_spikes": True, "roll_gaps_plausible": True, "no_gaps_at_rolls": True,
                      "last_segment_is_raw": True, "margin_within_equity": True}
    assert tables["daily_tables"] == 0  # the daily assets' tables were not written


def test_raw_bars_ingested_from_the_landing_subfolder(materialized):
    home, bars, result, _ = materialized
    [mat] = [m for m in result.get_asset_materialization_events()
             if m.asset_key.to_user_string() == "intraday_raw_bars"]
    meta = {k: v.value for k, v in mat.materialization.metadata.items()}
    assert (meta["files"], meta["files_new"], meta["interval"]) == (2, 2, "1m")
    assert (meta["rows"], meta["contracts"]) == (len(bars), bars["contract"].nunique())
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        by_interval = dict(conn.execute("SELECT interval, count(*) FROM bars GROUP BY 1").fetchall())
    assert by_interval == {"1m": len(bars)}  # all stored as 1m, nothing as daily


def test_raw_bars_without_files_or_stored_bars_fail_clearly(tmp_path, redis_url):
    from dagster import DagsterInstance as Instance

    from fbt_pipelines.location.definitions import ALL_ASSETS, local_resources
    from tests.conftest import use_private_home

    mp = pytest.MonkeyPatch()
    try:
        use_private_home(mp, tmp_path / "home", redis_url)
        instance = Instance.ephemeral()
        instance.add_dynamic_partitions("markets", ["ES"])
        result = materialize(ALL_ASSETS, selection=["intraday_raw_bars"], partition_key="ES", instance=instance,
                             resources=local_resources(), raise_on_error=False,
                             run_config={"ops": {"intraday_raw_bars": {"config": {"interval": "1h"}}}})
    finally:
        mp.undo()
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message
    assert "no 1h bars for ES" in message and str(tmp_path / "home" / "landing" / "ES" / "1h") in message


def test_roll_at_the_sessions_last_bar(materialized):
    _, bars, _, tables = materialized
    schedule = tables["intraday_roll_schedule"]
    assert len(schedule) == 1
    roll = schedule.iloc[0]
    assert (roll["from_contract"], roll["to_contract"]) == ("ESH2024", "ESM2024")
    # the volume rule on session-built daily volumes: the first session where ESM trades more than ESH,
    # at the latest 5 business days before ESH's last trade (2024-03-15): 2024-03-08
    b = bars.assign(day=trading_day(bars["ts"]))
    vol = b.pivot_table(index="day", columns="contract", values="volume", aggfunc="sum")
    crossed = vol.index[(vol["ESM2024"] > vol["ESH2024"]) & (vol.index <= pd.Timestamp("2024-03-08"))]
    expected_day = crossed[0] if len(crossed) else pd.Timestamp("2024-03-08")
    assert pd.Timestamp(roll["roll_date"]).tz_localize(None) == expected_day
    # at the old contract's last bar of that session
    old = b[(b["contract"] == "ESH2024") & (b["day"] == expected_day)]
    assert pd.Timestamp(roll["roll_ts"]) == old["ts"].max()
    new = b[(b["contract"] == "ESM2024") & (b["ts"] <= old["ts"].max())].iloc[-1]
    assert roll["gap"] == pytest.approx(new["close"] - old["close"].iloc[-1], abs=1e-9)
    prices = tables["prices"]
    assert prices.loc[prices["roll"], "ts"].tolist() == [pd.Timestamp(roll["roll_ts"])]
    assert (prices.loc[prices["ts"] <= roll["roll_ts"], "contract"] == "ESH2024").all()
    assert (prices.loc[prices["ts"] > roll["roll_ts"], "contract"] == "ESM2024").all()
    # the next bar of the series opens the next session
    after = prices.loc[prices["ts"] > roll["roll_ts"], "ts"].iloc[0]
    assert trading_day(pd.Series([after])).iloc[0] > expected_day


def test_point_changes_equal_the_held_contracts(materialized):
    _, bars, _, tables = materialized
    prices, roll = tables["prices"], tables["intraday_roll_schedule"].iloc[0]
    held_bars = bars.merge(prices[["ts", "contract"]], on=["ts", "contract"])
    assert len(held_bars) == len(prices)  # every series bar is a raw bar of the held contract
    assert np.array_equal(held_bars["close"].to_numpy(), prices["raw_close"].to_numpy())
    d_close = np.diff(prices["close"].to_numpy())
    d_raw = np.diff(prices["raw_close"].to_numpy())
    first_after = int(np.flatnonzero(prices["ts"] > roll["roll_ts"])[0])
    jump = np.zeros(len(d_raw))
    jump[first_after - 1] = -roll["gap"]  # the stitched raw series jumps by the gap there, the Panama one not
    np.testing.assert_allclose(d_close - d_raw, jump, atol=1e-9)
    last = prices["ts"] > roll["roll_ts"]
    np.testing.assert_array_equal(prices.loc[last, "close"], prices.loc[last, "raw_close"])
    np.testing.assert_allclose(prices.loc[~last, "close"] - prices.loc[~last, "raw_close"], roll["gap"], atol=1e-9)


def test_net_pnl_and_sharpe_by_hand(materialized):
    _, _, _, tables = materialized
    prices, run, equity = tables["prices"], tables["intraday_backtest_runs"].iloc[0], tables["equity"]
    close, open_ = prices["close"].to_numpy(), prices["open"].to_numpy()
    fast = pd.Series(close).rolling(FAST).mean().to_numpy()
    slow = pd.Series(close).rolling(SLOW).mean().to_numpy()
    target = np.where(np.isnan(fast - slow), 0, np.sign(fast - slow)) * CONTRACTS
    held = np.r_[0, target[:-1]]  # decided at t-1's close, filled at t's open
    side_cost = ES_COMMISSION + SLIP_TICKS * ES_TICK * ES_MULT  # USD per contract per side
    pnl = 0.0
    for t in range(1, len(close)):
        before, after = held[t - 1], held[t]
        pnl += before * (open_[t] - close[t - 1]) * ES_MULT + after * (close[t] - open_[t]) * ES_MULT
        pnl -= abs(after - before) * side_cost
        if prices["roll"].iloc[t]:
            pnl -= abs(after) * 2 * side_cost  # sell the old, buy the new contract
    assert held[0] == 0
    assert run["net_pnl"] == pytest.approx(pnl, abs=1e-6)
    assert len(equity) == len(prices)  # every bar stored
    assert np.array_equal(equity["position"].to_numpy(), held)
    eq = equity["equity"].to_numpy()
    r = eq[1:] / eq[:-1] - 1
    sharpe = r.mean() / r.std(ddof=1) * np.sqrt(BARS_PER_SESSION_ES_1M * 252)
    assert run["sharpe"] == pytest.approx(sharpe, rel=1e-9)
    assert run["periods_per_year"] == BARS_PER_SESSION_ES_1M * 252
    assert abs(run["sharpe"]) > 1.1 * abs(r.mean() / r.std(ddof=1) * np.sqrt(252))  # not the daily factor
    assert run["rolls"] == (1 if held[prices["roll"].to_numpy()][0] != 0 else 0)


def test_tear_sheet_written(materialized):
    home, _, _, _ = materialized
    page = home / "reports" / "intraday" / "ES_1m_sma_crossover.html"
    text = page.read_text(encoding="utf-8")
    assert "sma_crossover on ES|1m" in text and "Sharpe (per 1m bar" in text
