"""End to end: the whole lineage graph materialized by Dagster on a small sample.

Real components throughout: a DuckDB file, the test Redis, an MLflow SQLite
store, and a Dagster instance recording every materialization.
"""

from __future__ import annotations

import csv
import datetime as dt
import shutil
from pathlib import Path

import duckdb
import empyrical
import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, AssetSelection, DagsterInstance, materialize
from mlflow.tracking import MlflowClient

from fbt_pipelines.catalog import market_spec
from fbt_pipelines.catalog.expiry import business_day_offset
from fbt_pipelines.config import paths
from fbt_pipelines.marketdata.sample_data import write_sample_data
from fbt_pipelines.services.tracking import BACKTEST_EXPERIMENT
from tests.conftest import use_private_home

MARKETS = ["ES", "CL"]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
STAGES = [
    (["market_catalog"], False),
    (["raw_bars", "roll_schedule", "continuous_prices", "features"], True),
    (["model"], False),
    (["predictions", "backtests", "parameter_sweep"], True),
    (["strategy_comparison", "portfolio", "risk_report", "tear_sheet"], False),
]
ALL_KEYS = [k for keys, _ in STAGES for k in keys]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def graph(tmp_path_factory, redis_url):
    """Materialize every stage once for the module; yield (home, instance, results)."""
    home = tmp_path_factory.mktemp("fbt_home")
    mp = pytest.MonkeyPatch()
    use_private_home(mp, home, redis_url)
    write_sample_data(paths().landing, [market_spec(m) for m in MARKETS], dt.date(2015, 1, 2), dt.date(2020, 12, 31))
    (home / "margins").mkdir()
    shutil.copy(FIXTURES / "lean" / "margins" / "ES.csv", home / "margins" / "ES.csv")  # CL keeps catalogue margins
    from fbt_pipelines.location.definitions import ALL_ASSETS, local_resources

    from fbt_pipelines.location.instance import ensure_dagster_home

    ensure_dagster_home()  # $FBT_HOME/dagster with the repo's dagster.yaml, as `make demo` uses
    instance = DagsterInstance.get()
    instance.add_dynamic_partitions("markets", MARKETS)
    resources = local_resources()
    results = []
    for keys, partitioned in STAGES:
        for partition in (MARKETS if partitioned else [None]):
            result = materialize(ALL_ASSETS, selection=AssetSelection.assets(*keys), partition_key=partition,
                                 resources=resources, instance=instance)
            assert result.success
            results.append(result)
    yield home, instance, results
    instance.dispose()
    mp.undo()


def query(home, sql: str, params=()) -> pd.DataFrame:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        return conn.execute(sql, list(params)).df()


def test_every_asset_materialized_and_every_check_passed(graph):
    _, instance, results = graph
    for key in ALL_KEYS:
        assert instance.get_latest_materialization_event(AssetKey(key)) is not None, key
    evaluations = [e for r in results for e in r.get_asset_check_evaluations()]
    assert len(evaluations) >= 15
    failed = [(e.asset_key.to_user_string(), e.check_name) for e in evaluations
              if not e.passed and e.severity.value == "ERROR"]
    assert failed == []
    # warn-level checks may fire on sample data; the drift check's verdict must carry its evidence
    drift = [e for e in evaluations if e.check_name == "feature_drift"]
    assert len(drift) == 2 and all("max_psi" in e.metadata and "worst_feature" in e.metadata for e in drift)


def test_bars_ingested_for_each_market(graph):
    home, _, _ = graph
    per_root = query(home, "SELECT root, count(*) AS n, count(DISTINCT contract) AS c FROM bars GROUP BY root ORDER BY root")
    assert per_root["root"].tolist() == ["CL", "ES"]
    files = {m: len(list((home / "landing" / m).glob("*.csv"))) for m in MARKETS}
    ingests = query(home, "SELECT root, count(*) AS n, sum(accepted) AS acc FROM ingests GROUP BY root ORDER BY root")
    assert dict(zip(ingests["root"], ingests["n"])) == files
    assert dict(zip(per_root["root"], per_root["n"])) == dict(zip(ingests["root"], ingests["acc"]))
    assert query(home, "SELECT count(*) AS n FROM quarantine")["n"].iloc[0] == 0


def test_roll_dates_follow_each_markets_rule(graph):
    home, _, _ = graph
    # ES rolls on the volume crossover, never after the 5-business-day backstop
    rolls = query(home, """SELECT r.*, c.last_trade FROM roll_schedule r JOIN contracts c ON c.contract = r.from_contract
                           WHERE r.root = 'ES' ORDER BY roll_date""")
    assert 22 <= len(rolls) <= 24  # 6 years x 4 quarterly rolls, minus the ones before the data starts
    volume = query(home, "SELECT contract, ts, volume FROM bars WHERE root = 'ES'").pivot(
        index="ts", columns="contract", values="volume")
    previous = None
    for row in rolls.itertuples():
        backstop = pd.Timestamp(business_day_offset(row.last_trade.date(), -5), tz="UTC")
        assert row.rule == "volume,backstop=5" and row.roll_date <= backstop
        window = volume.loc[(volume.index > (previous if previous is not None else volume.index[0] - pd.Timedelta(days=1)))
                            & (volume.index <= row.roll_date), [row.from_contract, row.to_contract]].fillna(0)
        crossed = window[row.to_contract] > window[row.from_contract]
        assert crossed.iloc[-1] or row.roll_date == backstop
        assert not crossed.iloc[:-1].any()  # the first crossover, not a later one
        assert row.gap == pytest.approx(row.to_close - row.from_close, abs=1e-9)
        previous = row.roll_date
    # CL rolls 5 business days before first notice (physically delivered)
    cl = query(home, """SELECT r.roll_date, c.first_notice FROM roll_schedule r JOIN contracts c
                        ON c.contract = r.from_contract WHERE r.root = 'CL' ORDER BY roll_date""")
    assert len(cl) >= 70
    for row in cl.itertuples():
        assert row.roll_date.date() == business_day_offset(row.first_notice.date(), -5)


def test_continuous_prices_end_on_raw_prices_of_the_current_contract(graph):
    home, _, _ = graph
    for root in MARKETS:
        cp = query(home, "SELECT * FROM continuous_prices WHERE root = ? ORDER BY ts", [root])
        last = cp[cp["contract"] == cp["contract"].iloc[-1]]
        np.testing.assert_array_equal(last["close"], last["raw_close"])
        assert cp["ts"].is_unique and cp["roll"].sum() == len(query(home, "SELECT * FROM roll_schedule WHERE root = ?", [root]))


def test_model_registered_and_predictions_out_of_sample(graph):
    home, _, _ = graph
    client = MlflowClient(paths().mlflow_tracking_uri)
    champion = client.get_model_version_by_alias("fbt-direction-rf", "champion")
    preds = query(home, "SELECT * FROM predictions ORDER BY root, ts")
    assert set(preds["root"]) == set(MARKETS)
    # walk-forward (retrain every 12 months): the latest fold's model is the champion
    assert (preds.loc[preds["ts"] > pd.Timestamp("2020-01-10", tz="UTC"), "model_version"] == str(champion.version)).all()
    assert (preds["ts"] > pd.to_datetime(preds["train_end"], utc=True) + pd.Timedelta(days=10)).all()
    embargo_end = pd.Timestamp("2018-12-31", tz="UTC") + pd.Timedelta(days=10)
    assert (preds["ts"] > embargo_end).all() and preds["prob_up"].between(0, 1).all()


def test_backtests_logged_and_consistent(graph):
    home, _, _ = graph
    runs = query(home, "SELECT * FROM backtest_runs ORDER BY root, strategy")
    strategies = {"sma_crossover", "ml_signal", "ewmac_multi", "carry", "buy_and_hold"}
    assert len(runs) == 10 and set(runs["strategy"]) == strategies
    client = MlflowClient(paths().mlflow_tracking_uri)
    exp = client.get_experiment_by_name(BACKTEST_EXPERIMENT)
    per_backtest = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("kind") != "comparison"]
    assert len(per_backtest) == 10
    for run in runs.itertuples():
        eq = query(home, "SELECT * FROM backtest_equity WHERE root = ? AND strategy = ? ORDER BY ts",
                   [run.root, run.strategy])
        trades = query(home, "SELECT * FROM backtest_trades WHERE root = ? AND strategy = ?", [run.root, run.strategy])
        # the stored daily P&L adds up to the net P&L, and costs to the trades' costs
        assert eq["pnl"].sum() == pytest.approx(run.net_pnl, abs=0.01)
        assert eq["costs"].sum() == pytest.approx(trades["commission"].sum() + trades["slippage"].sum(), abs=0.01)
        assert client.get_run(run.mlflow_run_id).data.tags["data_version"] == run.data_version
        if run.strategy == "sma_crossover":
            assert run.rolls > 0 and run.roll_costs > 0


def test_portfolio_and_risk_report_match_an_independent_computation(graph):
    home, _, _ = graph
    equity = query(home, "SELECT * FROM portfolio_equity ORDER BY ts")
    positions = query(home, "SELECT * FROM portfolio_positions")
    assert set(positions["root"]) == set(MARKETS)
    assert (positions["position"] == positions["position"].round()).all()
    assert equity["equity"].iloc[-1] == pytest.approx(10_000_000 + positions["pnl"].sum(), abs=0.01)
    report = query(home, "SELECT * FROM risk_report").iloc[0]
    returns = equity.set_index("ts")["equity"].pct_change().dropna()
    assert report["sharpe"] == pytest.approx(empyrical.sharpe_ratio(returns), rel=1e-9)
    assert report["max_drawdown"] == pytest.approx(-empyrical.max_drawdown(returns), rel=1e-9)
    assert report["var_99"] == pytest.approx(-empyrical.value_at_risk(returns, cutoff=0.01), rel=1e-9)


def test_tear_sheet_written_with_its_plotly_bundle(graph):
    home, _, _ = graph
    page = (home / "reports" / "tear_sheet.html").read_text()
    assert 'src="plotly.min.js"' in page and "plotly-graph-div" in page and "Max drawdown" in page
    assert (home / "reports" / "plotly.min.js").stat().st_size > 1_000_000


def test_sweep_tear_sheet_shows_the_walk_forward_equity(graph):
    home, instance, _ = graph
    for root in MARKETS:
        page = (home / "reports" / f"sweep_{root}_sma_crossover.html").read_text()
        wf = query(home, "SELECT pnl FROM walk_forward_equity WHERE root = ?", [root])
        assert f"{wf['pnl'].sum():,.2f}" in page  # the stitched out-of-sample P&L, as stored
        assert "probability of backtest overfitting" in page and "plotly-graph-div" in page
    meta = instance.get_latest_materialization_event(AssetKey("parameter_sweep")).asset_materialization.metadata
    assert meta["tear_sheet"].value.endswith("_sma_crossover.html")


def test_es_backtests_use_the_margin_history_file(graph):
    home, _, _ = graph
    with open(FIXTURES / "lean" / "margins" / "ES.csv") as fh:
        history = [(pd.Timestamp(r["date"], tz="UTC"), float(r["initial"])) for r in csv.DictReader(fh)]
    eq = query(home, "SELECT ts, position, margin FROM backtest_equity WHERE root = 'ES' AND strategy = 'sma_crossover'")
    held = eq[eq["position"] != 0]
    assert len(held) > 100
    for row in held.iloc[:: max(len(held) // 50, 1)].itertuples():
        in_force = [m for d, m in history if d <= row.ts]
        expected = in_force[-1] if in_force else market_spec("ES").initial_margin
        assert row.margin == pytest.approx(abs(row.position) * expected, abs=1e-6)
    cl = query(home, "SELECT position, margin FROM backtest_equity WHERE root = 'CL' AND position <> 0 LIMIT 20")
    assert (cl["margin"] == cl["position"].abs() * market_spec("CL").initial_margin).all()


def test_sweep_children_walk_forward_and_consistency_with_the_backtest(graph):
    home, _, _ = graph
    sweep = query(home, "SELECT * FROM sweep_results ORDER BY root, set")
    assert sweep.groupby("root").size().to_dict() == {"CL": 9, "ES": 9}
    runs = query(home, "SELECT root, net_pnl FROM backtest_runs WHERE strategy = 'sma_crossover'")
    for root in MARKETS:
        same = sweep[(sweep["root"] == root) & (sweep["params"] == '{"fast": 20, "slow": 100}')]
        # the sweep's (20, 100) set is the backtests asset's default SMA: same P&L, except where a
        # margin history (ES) changed what the engine could hold
        if root == "CL":
            assert same["net_pnl"].iloc[0] == pytest.approx(runs.set_index("root").loc[root, "net_pnl"], abs=0.01)
    client = MlflowClient(paths().mlflow_tracking_uri)
    exp = client.get_experiment_by_name("fbt-sweeps")
    all_runs = client.search_runs([exp.experiment_id])
    parents = [r for r in all_runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2 and len(all_runs) == 2 + 18
    wf = query(home, "SELECT * FROM walk_forward_equity WHERE root = 'ES' ORDER BY ts")
    assert sorted(wf["ts"].dt.year.unique()) == [2018, 2019, 2020] and wf["window"].nunique() == 3
    assert wf["equity"].iloc[-1] == pytest.approx(1_000_000 + wf["pnl"].sum(), abs=0.01)


def test_risk_limit_breach_fails_its_check_and_raises_an_alert(graph, redis_url):
    from fbt_pipelines.location.definitions import ALL_ASSETS, local_resources
    from fbt_pipelines.services.bus import Bus

    _, instance, _ = graph
    config = {"ops": {"risk_report": {"config": {"max_drawdown": 0.01, "max_var_99": 0.5,
                                                  "max_margin_to_equity": 0.9}}}}
    result = materialize(ALL_ASSETS, selection=AssetSelection.assets("risk_report"), run_config=config,
                         resources=local_resources(), instance=instance)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"max_drawdown_limit": False, "var_limit": True, "margin_limit": True}
    alerts = [e for e in Bus(redis_url).recent_events(50) if e["type"] == "alert" and e["run_id"] == result.run_id]
    assert len(alerts) == 1 and set(alerts[0]["breaches"]) == {"max_drawdown"}


def test_risk_report_carries_a_monte_carlo_of_the_portfolio(graph):
    home, _, _ = graph
    report = query(home, "SELECT * FROM risk_report").iloc[0]
    assert report["mc_max_drawdown_p5"] <= report["mc_max_drawdown_p50"] <= report["mc_max_drawdown_p95"]
    assert report["mc_sharpe_ci_low"] < report["sharpe"] < report["mc_sharpe_ci_high"]
    assert 0.0 <= report["mc_prob_drawdown_exceeds"] <= 1.0


def test_fbt_risk_prints_the_report_as_json(graph):
    import json

    from click.testing import CliRunner

    from fbt_pipelines.cli import main

    home, _, _ = graph
    out = CliRunner().invoke(main, ["risk", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["sharpe"] == pytest.approx(query(home, "SELECT sharpe FROM risk_report")["sharpe"].iloc[0])
    assert "mc_sharpe_ci_low" in report and report["portfolio"] == "main"


def test_strategy_comparison_against_buy_and_hold(graph):
    home, _, _ = graph
    runs = query(home, "SELECT root, strategy, sharpe, net_pnl FROM backtest_runs")
    table = query(home, "SELECT * FROM strategy_comparison").set_index("strategy")
    assert set(table.index) == set(runs["strategy"])
    for strategy, group in runs.groupby("strategy"):
        assert table.loc[strategy, "mean_sharpe"] == pytest.approx(group["sharpe"].mean(), rel=1e-12)
        assert table.loc[strategy, "total_net_pnl"] == pytest.approx(group["net_pnl"].sum(), abs=0.01)
        base = runs[runs["strategy"] == "buy_and_hold"].set_index("root")["sharpe"]
        expected = (group.set_index("root")["sharpe"] - base).mean()
        assert table.loc[strategy, "sharpe_vs_buy_and_hold"] == pytest.approx(expected, abs=1e-12)
    assert table.loc["buy_and_hold", "sharpe_vs_buy_and_hold"] == 0.0
