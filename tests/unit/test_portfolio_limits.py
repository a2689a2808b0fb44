"""The portfolio asset on a real DuckDB warehouse: the USD book it writes, and its blocking
exposure / leverage limits (a breach fails the step and publishes an alert on the real Redis)."""

import duckdb
import numpy as np
import pandas as pd
import pytest
from dagster import AssetSelection, DagsterInstance, materialize

from fbt_pipelines.catalog import market_spec
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.services.bus import Bus

pytestmark = pytest.mark.slow


def synthetic_prices(root: str, p0: float, seed: int, n: int = 260) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    trend = np.where(np.arange(n) < n // 2, 0.002, -0.002)
    raw = p0 * np.cumprod(1 + trend + rng.normal(0, 0.01, n))
    tick = market_spec(root).tick_size
    raw = np.round(raw / tick) * tick
    return pd.DataFrame({"root": root, "method": "panama", "ts": pd.bdate_range("2023-01-02", periods=n, tz="UTC"),
                         "contract": f"{root}Z2023", "open": raw, "high": raw, "low": raw, "close": raw,
                         "raw_close": raw, "volume": 1000, "open_interest": 1000, "days_to_expiry": 100,
                         "roll": False})


@pytest.fixture
def warehouse(fbt_home):
    with duckdb.connect(str(fbt_home / "warehouse.duckdb")) as conn:
        for root, p0, seed in (("ES", 4000.0, 1), ("CL", 70.0, 2)):
            wh.replace_partition(conn, "continuous_prices", root, synthetic_prices(root, p0, seed))
    return fbt_home


def run_portfolio(config: dict, instance):
    from fbt_pipelines.location.definitions import ALL_ASSETS, local_resources

    return materialize(ALL_ASSETS, selection=AssetSelection.assets("portfolio"), resources=local_resources(),
                       instance=instance, raise_on_error=False,
                       run_config={"ops": {"portfolio": {"config": config}}})


def test_book_written_and_limits_block_with_an_alert(warehouse, redis_url):
    instance = DagsterInstance.ephemeral()
    ok = run_portfolio({"params": {"fast": 5, "slow": 20}, "capital": 1_000_000.0}, instance)
    assert ok.success
    checks = {e.check_name: e.passed for e in ok.get_asset_check_evaluations()}
    assert checks == {"market_exposure_limit": True, "leverage_limit": True}
    with duckdb.connect(str(warehouse / "warehouse.duckdb"), read_only=True) as conn:
        equity = conn.execute("SELECT * FROM portfolio_equity ORDER BY ts").df()
        positions = conn.execute("SELECT * FROM portfolio_positions ORDER BY ts, root").df()
        trades = conn.execute("SELECT * FROM portfolio_trades").df()
    assert len(trades) > 0 and (positions["fx_rate"] == 1.0).all()
    # independent: notional = contracts x raw close x multiplier; gross = sum of |notional| per session
    mult = positions["root"].map({"ES": 50.0, "CL": 1000.0})
    assert np.allclose(positions["notional_usd"], positions["position"] * positions["raw_close"] * mult)
    gross = positions.assign(a=positions["notional_usd"].abs()).groupby("ts")["a"].sum().to_numpy()
    assert np.allclose(equity["gross_exposure"], gross)
    assert np.allclose(equity["leverage"], gross / equity["equity"])
    assert equity["equity"].iloc[-1] == pytest.approx(1_000_000.0 + positions["pnl"].sum(), abs=1e-6)
    # the traded contracts (fills, no rolls here) add up to each market's last position
    fills = trades[trades["kind"] != "roll"].groupby("root")["contracts"].sum()
    last = positions.groupby("root")["position"].last()
    assert fills.reindex(last.index, fill_value=0).tolist() == last.tolist()

    lev = float(equity["leverage"].max())
    breach = run_portfolio({"params": {"fast": 5, "slow": 20}, "capital": 1_000_000.0,
                            "max_leverage": lev / 2}, instance)
    assert not breach.success  # blocking check with ERROR severity fails the step
    checks = {e.check_name: e.passed for e in breach.get_asset_check_evaluations()}
    assert checks == {"market_exposure_limit": True, "leverage_limit": False}
    alerts = [e for e in Bus(redis_url).recent_events(50) if e["type"] == "alert" and e["run_id"] == breach.run_id]
    assert len(alerts) == 1 and set(alerts[0]["breaches"]) == {"max_leverage"}
    assert alerts[0]["breaches"]["max_leverage"]["value"] == pytest.approx(lev)
