"""`fbt sweep` on a real warehouse (sample ES and NQ, 2015-2019) with the real MLflow store.

Each stored set's Sharpe is checked against `backtest_market` for that set (the
single-backtest path, computed here independently of the sweep engine).
"""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import pytest
from click.testing import CliRunner

from fbt_pipelines.cli import main

MARKETS = ("ES", "NQ")
GRID = ("--grid", "fast=5:15:5", "--grid", "slow=30,45,60")  # 3 x 3, every set valid (fast < slow)
SETS = [{"fast": f, "slow": s} for f in (5, 10, 15) for s in (30, 45, 60)]


def cli(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def _build_continuous(root: str) -> None:
    """The roll_schedule and continuous_prices rows of ``root``, by the calls their assets make.

    (Without Dagster: the sweep reads only the warehouse.)
    """
    from fbt_pipelines.cli.app import workspace_here
    from fbt_pipelines.cli.data import connect_warehouse
    from fbt_pipelines.services import warehouse as wh
    from fbt_pipelines.usecases.continuous import (continuous_for_market, market_contracts, roll_rule_for,
                                                   roll_schedule_for_market)

    spec = workspace_here().market(root)
    conn = connect_warehouse()
    try:
        bars = wh.read_bars(conn, root)
        contracts = market_contracts(conn, spec, bars)
        rolls = roll_schedule_for_market(spec, bars, contracts, roll_rule_for(spec, ""))
        wh.replace_partition(conn, "roll_schedule", root, rolls.schedule)
        schedule = wh.read_partition(conn, "roll_schedule", root, order_by=["roll_date"])
        wh.replace_partition(conn, "continuous_prices", root, continuous_for_market(bars, schedule, contracts).prices)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def home(tmp_path_factory, redis_url):
    """ES and NQ sample bars 2015-2019 ingested (`fbt ingest`) and their continuous series stored."""
    from tests.conftest import use_private_home

    mp = pytest.MonkeyPatch()
    home = use_private_home(mp, tmp_path_factory.mktemp("cli_sweep") / "home", redis_url)
    from fbt_pipelines.catalog import market_spec
    from fbt_pipelines.config import paths
    from fbt_pipelines.marketdata.sample_data import write_sample_data

    write_sample_data(paths().landing, [market_spec(m) for m in MARKETS], dt.date(2015, 1, 2), dt.date(2019, 12, 31))
    for root in MARKETS:
        assert cli("ingest", str(paths().landing / root), "--json").exit_code == 0
        _build_continuous(root)
    yield home
    mp.undo()


@pytest.fixture(scope="module")
def swept(home):
    out = cli("sweep", "--market", ",".join(MARKETS), *GRID, "--train-years", "2", "--top", "18", "--json")
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def _stored(home) -> list[tuple]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        return conn.execute("SELECT root, params, sharpe, net_pnl, trades, mlflow_parent_run FROM sweep_results "
                            "ORDER BY root, set").fetchall()


def test_json_counts_every_backtest_and_times_the_sweep(swept):
    assert {"backtests", "elapsed_s", "best", "diagnostics"} <= set(swept)
    assert swept["sets"] == 9 and swept["backtests"] == 18  # 9 sets x 2 markets
    assert swept["grid"] == {"fast": [5, 10, 15], "slow": [30, 45, 60]}
    assert 0 < swept["elapsed_s"] < 60
    assert len(swept["best"]) == 18 and {b["market"] for b in swept["best"]} == set(MARKETS)
    sharpes = [b["sharpe"] for b in swept["best"]]
    assert sharpes == sorted(sharpes, reverse=True)  # best first
    for root in MARKETS:
        d = swept["diagnostics"][root]
        assert 0.0 <= d["pbo"] <= 1.0 and 0.0 <= d["deflated_sharpe"] <= 1.0
        assert d["walk_forward_windows"] == 3  # train 2015-16 -> test 2017, ... -> test 2019
        assert d["best_set"]["sharpe"] == max(b["sharpe"] for b in swept["best"] if b["market"] == root)


def test_each_sets_sharpe_equals_the_single_backtest(home, swept):
    from fbt_pipelines.usecases.backtest import backtest_market, read_market_data
    from fbt_pipelines.usecases.spec import BacktestSpec, MarginSource
    from fbt_pipelines.usecases.workspace import Workspace

    workspace = Workspace(home)
    base = BacktestSpec.create("sma_crossover", {}, library=workspace.strategies(), margin_source=MarginSource.HISTORY)
    stored = {(root, params): (sharpe, pnl, trades) for root, params, sharpe, pnl, trades, _ in _stored(home)}
    shown = {(b["market"], json.dumps(b["params"], sort_keys=True)): b for b in swept["best"]}
    assert len(stored) == 18 and set(shown) == set(stored)
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        data = {root: read_market_data(conn, root, workspace) for root in MARKETS}
    for root in MARKETS:
        for values in SETS:
            key = (root, json.dumps(values, sort_keys=True))
            summary = backtest_market(base.with_params(values), data[root]).summary
            sharpe, pnl, trades = stored[key]
            assert sharpe == pytest.approx(summary["sharpe"], abs=1e-9), key
            assert pnl == pytest.approx(summary["net_pnl"], abs=1e-6) and trades == summary["trades"], key
            assert shown[key]["sharpe"] == pytest.approx(summary["sharpe"], abs=1e-9), key


def test_rows_and_the_mlflow_parent_runs_are_stored(home, swept):
    from mlflow.tracking import MlflowClient

    from fbt_pipelines.config import paths

    rows = _stored(home)
    parents = {root: swept["diagnostics"][root]["mlflow_parent_run"] for root in MARKETS}
    assert all(parents.values()) and len(set(parents.values())) == 2
    assert sorted({(r[0], r[5]) for r in rows}) == sorted(parents.items())  # 9 rows per market, its parent run
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        wf = dict(conn.execute("SELECT root, count(DISTINCT \"window\") FROM walk_forward_equity GROUP BY root")
                  .fetchall())
    assert wf == {"ES": 3, "NQ": 3}
    client = MlflowClient(paths().mlflow_tracking_uri)
    for root, run_id in parents.items():
        run = client.get_run(run_id)
        assert client.get_experiment(run.info.experiment_id).name == "fbt-sweeps"
        assert run.data.tags["market"] == root and run.data.tags["source"] == "fbt sweep"
        assert run.data.metrics["sets"] == 9.0
        assert run.data.metrics["pbo"] == pytest.approx(swept["diagnostics"][root]["pbo"])
        children = client.search_runs([run.info.experiment_id], filter_string=f"tags.parent = '{run_id}'")
        assert len(children) == 9  # 9 sets <= --mlflow-children (200): a child per set


def test_above_the_children_limit_the_parent_keeps_the_table(home, swept):
    from mlflow.tracking import MlflowClient

    from fbt_pipelines.config import paths

    out = cli("sweep", "--market", "ES", *GRID, "--train-years", "2", "--mlflow-children", "4", "--json")
    assert out.exit_code == 0, out.output
    run_id = json.loads(out.stdout)["diagnostics"]["ES"]["mlflow_parent_run"]
    client = MlflowClient(paths().mlflow_tracking_uri)
    run = client.get_run(run_id)
    assert run.data.metrics["sets"] == 9.0
    assert client.search_runs([run.info.experiment_id], filter_string=f"tags.parent = '{run_id}'") == []
    assert [a.path for a in client.list_artifacts(run_id)] == ["sweep_results.csv"]
    assert {r[5] for r in _stored(home) if r[0] == "ES"} == {run_id}  # ES's rows replaced, NQ's kept


def test_terminal_output_shows_the_best_sets_and_diagnostics(home, swept):
    out = cli("sweep", "--market", "NQ", *GRID, "--train-years", "2", "--walk-forward", "--top", "3")
    assert out.exit_code == 0, out.output
    text = out.output
    assert "9 sets x 1 markets = 9 backtests" in text
    assert "Best 3 sets by Sharpe" in text and "PBO" in text and "NQ walk-forward" in text
    best = max((b for b in swept["best"] if b["market"] == "NQ"), key=lambda b: b["sharpe"])
    assert f"fast={best['params']['fast']} slow={best['params']['slow']}" in text


def test_an_interval_without_continuous_prices_exits_1(home):
    out = cli("sweep", "--market", "ES", *GRID, "--interval", "1m")
    assert out.exit_code == 1, out.output
    assert "no 1m continuous prices for ES" in out.output and "--interval 1d" in out.output


def test_a_market_without_continuous_prices_exits_1(home):
    out = cli("sweep", "--market", "CL", *GRID)
    assert out.exit_code == 1, out.output
    assert "no continuous prices for CL" in out.output


def test_a_walk_forward_without_a_test_year_exits_1_storing_nothing(home, swept):
    before = _stored(home)
    out = cli("sweep", "--market", "NQ,ES", *GRID, "--train-years", "5")  # 2015-2019: no year left to test
    assert out.exit_code == 1, out.output
    assert ("NQ: the walk-forward needs more than 5 calendar years of data (2015-2019); use --train-years 4"
            in out.output)
    assert _stored(home) == before


def test_the_progress_slices_stitch_back_into_the_one_call_result(home):
    """The command sweeps in slices (the progress bar's steps): the same table and P&L as one run_sweep call."""
    import pandas as pd

    from fbt_pipelines.cli.sweep import _sweep_market
    from fbt_pipelines.usecases.backtest import read_market_data
    from fbt_pipelines.usecases.spec import BacktestSpec, MarginSource
    from fbt_pipelines.usecases.sweep import parameter_sets, run_sweep
    from fbt_pipelines.usecases.workspace import Workspace

    workspace = Workspace(home)
    base = BacktestSpec.create("sma_crossover", {}, library=workspace.strategies(), margin_source=MarginSource.HISTORY)
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        data = read_market_data(conn, "ES", workspace)
    sets = parameter_sets("sma_crossover", {"fast": [5, 10, 15], "slow": [30, 45, 60]})
    steps: list[int] = []
    sliced, spent = _sweep_market(base, data, sets, 2, 4, steps.append)
    whole = run_sweep(base, data, sets)
    assert steps == [4, 4, 1] and spent > 0
    pd.testing.assert_frame_equal(sliced.table, whole.table)
    pd.testing.assert_frame_equal(sliced.pnl, whole.pnl)
    assert list(sliced.pnl.columns) == list(range(9))
