"""One spec, one result: `fbt backtest`, the `backtests` asset and the sweep (asset and
use case) give the same result for the same spec, on a real warehouse and a real
Dagster materialization, with a margin history that binds on some bars.

Before the use-case layer these paths disagreed: the CLI backtest and both sweep
paths ignored the market's margin history that the asset used. The history here
makes the margin high enough to refuse contracts, so a path that drops it
gives another P&L (checked: the catalogue-margin run differs).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner
from dagster import DagsterInstance, materialize

from fbt_pipelines.cli import main

FAST, SLOW = 10, 40


def cli(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


@pytest.fixture(scope="module")
def es_home(tmp_path_factory, redis_url):
    from tests.conftest import use_private_home

    mp = pytest.MonkeyPatch()
    home = use_private_home(mp, tmp_path_factory.mktemp("one_path") / "home", redis_url)
    from fbt_pipelines.catalog import market_spec
    from fbt_pipelines.config import paths
    from fbt_pipelines.marketdata.sample_data import write_sample_data

    write_sample_data(paths().landing, [market_spec("ES")], dt.date(2015, 1, 2), dt.date(2019, 12, 31))
    assert cli("ingest", str(paths().landing / "ES"), "--json").exit_code == 0
    assert cli("continuous", "ES", "--json").exit_code == 0
    # a dated margin history: 200,000 USD per contract from 2017 on refuses most of the wanted contracts
    (home / "margins").mkdir()
    (home / "margins" / "ES.csv").write_text("date,initial,maintenance\n20150101,12000,11000\n20170103,200000,180000\n")
    yield home
    mp.undo()


def test_cli_asset_and_sweep_agree_for_one_spec(es_home):
    from fbt_pipelines.location.definitions import ALL_ASSETS, local_resources

    out = json.loads(cli("backtest", "--strategy", "sma_crossover", "--market", "ES", "--param", f"fast={FAST}",
                         "--param", f"slow={SLOW}", "--json").stdout)
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("markets", ["ES"])
    result = materialize(
        ALL_ASSETS, selection=["backtests", "parameter_sweep"], partition_key="ES", instance=instance,
        resources=local_resources(),
        run_config={"ops": {
            "backtests": {"config": {"strategies": [{"name": "sma_crossover", "params": {"fast": FAST, "slow": SLOW}}]}},
            "parameter_sweep": {"config": {"grid": {"fast": [5, FAST], "slow": [SLOW]}, "train_years": 1}},
        }})
    assert result.success
    with duckdb.connect(str(es_home / "warehouse.duckdb"), read_only=True) as conn:
        asset = conn.execute("SELECT net_pnl, sharpe, trades, rolls, spec_hash, margin_source, refused_contracts "
                             "FROM backtest_runs WHERE root = 'ES'").fetchone()
        adhoc = conn.execute("SELECT net_pnl, sharpe, trades, rolls, spec_hash, margin_source, refused_contracts "
                             "FROM adhoc_backtest_runs WHERE run_id = ?", [out["run_id"]]).fetchone()
        swept = conn.execute("SELECT net_pnl, sharpe, trades, rolls FROM sweep_results WHERE root = 'ES' AND params = ?",
                             [json.dumps({"fast": FAST, "slow": SLOW}, sort_keys=True)]).fetchall()
    assert asset[4] == adhoc[4]  # the same spec hash
    assert asset[5].endswith("ES.csv") and adhoc[5] == asset[5]  # both took the margin history
    assert asset[6] > 0  # the history binds: contracts were refused
    assert len(swept) == 1
    for got in (adhoc[:4], swept[0]):
        np.testing.assert_allclose(got, asset[:4], rtol=0, atol=1e-6)
    assert round(asset[0], 2) == out["total_pnl"]


def test_the_use_case_sweep_equals_the_use_case_backtest_with_a_margin_history(es_home):
    from fbt_pipelines.usecases.backtest import backtest_market, read_market_data
    from fbt_pipelines.usecases.spec import BacktestSpec, MarginSource
    from fbt_pipelines.usecases.sweep import parameter_sets, run_sweep
    from fbt_pipelines.usecases.workspace import Workspace

    workspace = Workspace(es_home)
    with duckdb.connect(str(es_home / "warehouse.duckdb"), read_only=True) as conn:
        data = read_market_data(conn, "ES", workspace)
    base = BacktestSpec.create("sma_crossover", {}, library=workspace.strategies())
    sets = parameter_sets("sma_crossover", {"fast": [5, FAST], "slow": [SLOW, 60]})
    sweep = run_sweep(base, data, sets)
    for row in sweep.table.itertuples():
        bt = backtest_market(base.with_params(sets[row.set]), data)
        assert row.net_pnl == pytest.approx(bt.summary["net_pnl"], abs=1e-6)
        assert row.trades == bt.summary["trades"]
    # the margin source matters here, so a path that dropped it could not pass the checks above
    catalogue = backtest_market(replace(base.with_params(sets[0]), margin_source=MarginSource.CATALOGUE), data)
    assert catalogue.summary["net_pnl"] != pytest.approx(sweep.table["net_pnl"].iloc[0], abs=1.0)


def test_cli_with_a_stop_and_a_target_equals_the_reference_account_to_the_cent(es_home):
    """`fbt backtest --contracts 1 --stop-loss 40 --take-profit 120` on the warehouse's ES series (with its
    margin history) against the plain-Python reference account of tests/unit/test_orders_reference.py
    (written from the rules, sharing no code with the engine): the same trades and net P&L to the cent."""
    from fbt_pipelines.catalog import market_spec
    from fbt_pipelines.engine.rules import DistanceUnit, FillRule
    from fbt_pipelines.engine.strategies import sma_crossover
    from fbt_pipelines.futures.margin import margin_per_bar, read_margin_history
    from tests.unit.test_orders_reference import reference

    out = json.loads(cli("backtest", "--strategy", "sma_crossover", "--market", "ES", "--param", f"fast={FAST}",
                         "--param", f"slow={SLOW}", "--contracts", "1", "--stop-loss", "40", "--take-profit", "120",
                         "--json").stdout)
    assert out["orders"] == {"fill": "next_open", "stop_loss": "40", "take_profit": "120", "contracts": 1}
    with duckdb.connect(str(es_home / "warehouse.duckdb"), read_only=True) as conn:
        prices = conn.execute("SELECT * FROM continuous_prices WHERE root = 'ES' ORDER BY ts").df()
        trades = conn.execute("SELECT reason, contracts, price FROM adhoc_backtest_trades WHERE run_id = ? "
                              "ORDER BY ts, reason", [out["run_id"]]).df()
    spec = market_spec("ES")
    history = read_margin_history(es_home / "margins" / "ES.csv")
    margin = margin_per_bar(prices["ts"], spec, history)
    maint = margin_per_bar(prices["ts"], spec, history, "maintenance")
    close = prices["close"].to_numpy(float)
    target = np.sign(sma_crossover(close, FAST, SLOW)).astype(np.int64)  # 1 contract in the signal's direction
    eq, rec, stopped = reference(target, prices["open"].to_numpy(float), prices["high"].to_numpy(float),
                                 prices["low"].to_numpy(float), close, prices["roll"].to_numpy(bool), margin, maint,
                                 1_000_000.0, FillRule.NEXT_OPEN, sl=(DistanceUnit.POINTS, 40.0),
                                 tp=(DistanceUnit.POINTS, 120.0))
    assert stopped == -1
    assert out["total_pnl"] == round(eq[-1] - 1_000_000.0, 2)
    reasons = [r[2] for r in rec]
    assert {1, 2} <= set(reasons)  # the stop and the target both act in this run
    assert len(trades) == len(rec)
    names = {0: "signal", 1: "stop", 2: "target", 5: "roll"}
    got = sorted(zip(trades["reason"], trades["contracts"], trades["price"].round(6)))
    want = sorted((names[r[2]], r[3], round(r[4], 6)) for r in rec)
    assert got == want
