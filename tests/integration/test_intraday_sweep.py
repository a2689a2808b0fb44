"""Intraday sweeps end to end: `fbt sweep --interval 1m`, the intraday_parameter_sweep asset, job sweep_fanout.

Generated ES one-minute bars (two contracts over the March 2024 roll, inside
CME Globex sessions) ingested with ``interval='1m'`` into a private home with
the real warehouse, MLflow store and Redis. Each path's stored numbers are
checked against ``backtest_intraday`` of the same set on the same series,
computed here (the one intraday backtest path, checked by hand in
tests/integration/test_intraday.py); the walk-forward's windows are counted
by hand from the number of sessions.
"""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner
from dagster import DagsterInstance, materialize

START, END = dt.date(2024, 2, 12), dt.date(2024, 3, 22)  # 30 weekdays, each a Globex session
GRID = {"fast": [15, 30], "slow": [120, 240]}
TRAIN, TEST = 20, 4
SESSIONS = int(np.busday_count(START, END + dt.timedelta(days=1)))  # Presidents' Day trades (a short session)


def cli(*args: str):
    from fbt_pipelines.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


@pytest.fixture(scope="module")
def home(tmp_path_factory, redis_url):
    from tests.conftest import use_private_home

    mp = pytest.MonkeyPatch()
    home = use_private_home(mp, tmp_path_factory.mktemp("intraday_sweep") / "home", redis_url)
    from fbt_pipelines.catalog import market_spec
    from fbt_pipelines.marketdata.sample_minutes import write_minute_sample
    from fbt_pipelines.services import warehouse as wh
    from fbt_pipelines.usecases.market_data import ingest_bar_files
    from fbt_pipelines.usecases.workspace import Workspace

    folder = home / "minute" / "ES"
    write_minute_sample(folder, market_spec("ES"), START, END, seed=9)
    with duckdb.connect(str(home / "warehouse.duckdb")) as conn:
        wh.ensure_schema(conn)
        outcome = ingest_bar_files(conn, sorted(folder.glob("*.csv")), Workspace(home), interval="1m",
                                   keep_going=False)
    assert outcome.new == 2 and not outcome.failures
    yield home
    mp.undo()


def _query(home, sql: str, *params):
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        return conn.execute(sql, list(params)).df()


def _single(home, series_prices, values: dict, contracts: int = 1):
    """``backtest_intraday`` of one set on ``series_prices`` (the reference each sweep must equal)."""
    from fbt_pipelines.usecases import intraday as uc
    from fbt_pipelines.usecases.intraday_sweep import intraday_sweep_spec
    from fbt_pipelines.usecases.workspace import Workspace

    workspace = Workspace(home)
    spec = intraday_sweep_spec("sma_crossover", workspace.strategies(), contracts=contracts).with_params(values)
    return uc.backtest_intraday(spec, uc.intraday_market_data("ES", workspace, series_prices), "1m").summary


def _windows(sessions: int) -> int:
    return -(-(sessions - TRAIN) // TEST)  # ceil: the last window may be short


@pytest.fixture(scope="module")
def swept(home):
    out = cli("sweep", "--market", "ES", "--interval", "1m", "--grid", "fast=15,30", "--grid", "slow=120,240",
              "--train-sessions", str(TRAIN), "--test-sessions", str(TEST), "--walk-forward", "--json")
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def test_cli_sweep_on_minute_bars_equals_backtest_intraday(home, swept):
    """No stored series yet: the command builds ES|1m from the stored bars, as `fbt backtest --interval 1m`."""
    from fbt_pipelines.usecases.intraday_sweep import load_intraday_series
    from fbt_pipelines.usecases.workspace import Workspace

    assert swept["series"] == {"ES": "ES|1m"} and swept["sources"] == {"ES": "built from the stored bars"}
    assert swept["sets"] == 4 and swept["interval"] == "1m"
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        prices = load_intraday_series(conn, "ES", "1m", Workspace(home)).data.prices
    sessions = prices["session"].nunique()
    assert sessions == SESSIONS
    rows = _query(home, "SELECT * FROM intraday_sweep_results WHERE series = ? ORDER BY set", "ES|1m")
    assert len(rows) == 4 and set(rows["interval"]) == {"1m"} and set(rows["root"]) == {"ES"}
    for row in rows.itertuples():
        values = {k: v for k, v in json.loads(row.params).items() if k in ("fast", "slow")}
        s = _single(home, prices, values)
        assert row.net_pnl == pytest.approx(s["net_pnl"], abs=0.005)  # to the cent
        assert (row.trades, row.rolls) == (s["trades"], s["rolls"]) and row.rolls == 1
        assert row.sharpe == pytest.approx(s["sharpe"], rel=1e-12)
        assert row.max_drawdown == pytest.approx(s["max_drawdown"], rel=1e-12)
    d = swept["diagnostics"]["ES"]
    assert d["walk_forward_windows"] == _windows(sessions) == 3  # 30 sessions: test 20-23, 24-27, 28-29
    assert [w["window"] for w in d["walk_forward"]] == [0, 1, 2]
    wf = _query(home, "SELECT * FROM intraday_walk_forward_equity WHERE series = ? ORDER BY ts", "ES|1m")
    assert len(wf) == sessions - TRAIN
    assert d["tear_sheet"].endswith("sweep_ES_1m_sma_crossover.html") and d["mlflow_parent_run"]
    tables = set(_query(home, "SELECT table_name FROM information_schema.tables")["table_name"])
    assert "sweep_results" not in tables  # the daily sweep's table is untouched


def test_cli_refuses_what_it_cannot_sweep(home, swept):
    out = cli("sweep", "--market", "ES", "--interval", "1m", "--grid", "fast=15", "--grid", "slow=120",
              "--train-years", "2")
    assert out.exit_code == 2 and "intraday walk-forward windows count sessions" in out.output
    out = cli("sweep", "--market", "ES", "--grid", "fast=15", "--grid", "slow=120", "--train-sessions", "5")
    assert out.exit_code == 2 and "daily walk-forward windows count years" in out.output
    out = cli("sweep", "--market", "ES", "--interval", "1m", "--grid", "fast=15", "--grid", "slow=120")
    assert out.exit_code == 1  # 30 sessions, the default 63 in sample
    assert "ES|1m: the walk-forward needs more than 63 sessions (30 in the series); use --train-sessions 20" \
        in out.output
    out = cli("sweep", "--market", "NQ", "--interval", "1h", "--grid", "fast=3", "--grid", "slow=12")
    assert out.exit_code == 1 and "no 1h continuous prices for NQ" in out.output and "--interval 1d" in out.output


@pytest.fixture(scope="module")
def asset_run(home, swept):
    from fbt_pipelines.location.definitions import ALL_ASSETS, local_resources
    from fbt_pipelines.location.intraday import intraday_run_config

    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("markets", ["ES"])
    config = intraday_run_config("1m", assets=["intraday_roll_schedule", "intraday_continuous_prices"])
    config["ops"]["intraday_parameter_sweep"] = {"config": {
        "interval": "1m", "grid": GRID, "contracts": 2, "train_sessions": TRAIN, "test_sessions": TEST}}
    result = materialize(ALL_ASSETS, selection=["intraday_roll_schedule", "intraday_continuous_prices",
                                                "intraday_parameter_sweep"],
                         partition_key="ES", instance=instance, resources=local_resources(), run_config=config)
    assert result.success
    return instance, result


def test_the_asset_stores_the_sweep_of_the_stored_series(home, asset_run):
    from fbt_pipelines.usecases import intraday as uc

    _, result = asset_run
    meta = {k: v.value for k, v in result.asset_materializations_for_node("intraday_parameter_sweep")[0]
            .metadata.items()}
    assert meta["series"] == "ES|1m" and meta["sets"] == 4 and meta["compute_seconds"] > 0
    assert meta["walk_forward_windows"] == 3 and "fast" in meta["best_sets"]
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        prices = uc.read_intraday_prices(conn, "ES|1m")
    rows = _query(home, "SELECT * FROM intraday_sweep_results WHERE series = ? ORDER BY set", "ES|1m")
    assert len(rows) == 4  # the asset replaced the command's rows of the series
    for row in rows.itertuples():
        params = json.loads(row.params)
        assert params["contracts"] == 2
        s = _single(home, prices, {"fast": params["fast"], "slow": params["slow"]}, contracts=2)
        assert row.net_pnl == pytest.approx(s["net_pnl"], abs=0.005)
        assert (row.trades, row.rolls) == (s["trades"], s["rolls"])
        assert row.sharpe == pytest.approx(s["sharpe"], rel=1e-12)
        assert row.max_drawdown == pytest.approx(s["max_drawdown"], rel=1e-12)
    best = rows.sort_values("sharpe", ascending=False).iloc[0]
    assert meta["best_params"] == best["params"] and meta["best_sharpe"] == pytest.approx(best["sharpe"], abs=1e-3)


def test_sweep_fanout_on_minute_bars_equals_the_asset(home, asset_run):
    from fbt_pipelines.location.definitions import local_resources
    from fbt_pipelines.location.sweep_fanout import sweep_fanout

    before = _query(home, "SELECT params, net_pnl, sharpe, max_drawdown, trades, rolls FROM intraday_sweep_results "
                          "WHERE series = 'ES|1m' ORDER BY set")
    config = {"ops": {"plan_sweep_chunks": {"config": {
        "interval": "1m", "markets": ["ES"], "grid": GRID, "contracts": 2, "chunk_size": 3,
        "train_sessions": TRAIN, "test_sessions": TEST, "track_mlflow": False}}}}
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("markets", ["ES"])
        run = sweep_fanout.execute_in_process(run_config=config, instance=instance, resources=local_resources())
        assert run.success
        chunks = [e for e in run.all_events if e.is_step_success and e.step_key.startswith("run_sweep_chunk")]
        assert len(chunks) == 2  # 4 sets in chunks of 3
        owners = {e.asset_key.to_user_string() for e in run.all_events if e.is_step_materialization}
    assert owners == {"intraday_parameter_sweep"}
    after = _query(home, "SELECT params, net_pnl, sharpe, max_drawdown, trades, rolls FROM intraday_sweep_results "
                         "WHERE series = 'ES|1m' ORDER BY set")
    assert after.to_dict("records") == before.to_dict("records")
    wf = _query(home, "SELECT count(*) AS n, count(DISTINCT \"window\") AS w FROM intraday_walk_forward_equity "
                      "WHERE series = 'ES|1m'")
    assert (int(wf["n"].iat[0]), int(wf["w"].iat[0])) == (SESSIONS - TRAIN, 3)
    assert not (home / "scratch").exists() or not any((home / "scratch").rglob("*.parquet"))  # chunks removed
