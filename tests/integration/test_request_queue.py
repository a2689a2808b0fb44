"""Backtest requests travel Redis stream -> sensor -> ONE batch run -> one result event each.

Real Redis (private key prefix), real DuckDB warehouse, a real Dagster
instance; the batch job runs in process with the run config and tags the
sensor emitted. The daemon-crash test (test_request_daemon_crash.py) runs the
same path through a real ``dagster-daemon``.
"""

from __future__ import annotations

import datetime as dt
import uuid

import duckdb
import pytest
from dagster import AssetSelection, DagsterInstance, Definitions, SkipReason, build_sensor_context, materialize

from fbt_pipelines.catalog import market_spec
from fbt_pipelines.config import paths
from fbt_pipelines.location.automation import backtest_request_sensor
from fbt_pipelines.location.request_batches import backtest_requests_job
from fbt_pipelines.marketdata.sample_data import write_sample_data
from fbt_pipelines.services.bus import Bus
from fbt_pipelines.usecases.requests import batch_key
from resources import BusResource
from tests.conftest import delete_prefix


def _tick(instance, resources):
    return backtest_request_sensor(build_sensor_context(
        instance=instance, resources={"bus": resources["bus"], "files": resources["files"]}))


def test_a_tick_of_requests_is_one_batch_run_each_request_done_once(fbt_home, redis_url):
    from fbt_pipelines.location.definitions import ALL_ASSETS, local_resources
    from fbt_pipelines.usecases.backtest import backtest_market, read_market_data
    from fbt_pipelines.usecases.spec import BacktestSpec
    from fbt_pipelines.usecases.workspace import Workspace

    prefix = f"fbttest-{uuid.uuid4().hex[:12]}"
    bus = Bus(redis_url, prefix)
    resources = {**local_resources(), "bus": BusResource(url=redis_url, prefix=prefix)}
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("markets", ["ES", "NQ"])  # NQ: a partition without data yet
    write_sample_data(paths().landing, [market_spec("ES")], dt.date(2017, 1, 3), dt.date(2019, 12, 31))
    try:
        for keys, partition in [(["market_catalog"], None),
                                (["raw_bars", "roll_schedule", "continuous_prices", "features"], "ES")]:
            assert materialize(ALL_ASSETS, selection=AssetSelection.assets(*keys), partition_key=partition,
                               resources=resources, instance=instance).success
        cursor = bus.events_cursor()
        ids = [bus.submit_request({"market": "ES", "strategy": "sma_crossover", "params": {"fast": f}})
               for f in (10, 20)]
        bad = bus.submit_request({"market": "NQ", "strategy": "sma_crossover", "params": {"fast": 10}})
        wrong = bus.submit_request({"market": "ES", "strategy": "no_such_strategy"})

        (run_request,) = _tick(instance, resources)  # one run for the whole tick
        assert run_request.run_key == batch_key([*ids, bad]) == run_request.tags["fbt/batch"]
        assert bus.queue_depth() == {"length": 3, "pending": 3}  # read, not acknowledged: no run exists yet
        # the daemon died before creating the run: the next tick emits the SAME batch (same key, same requests)
        (again,) = _tick(instance, resources)
        assert (again.run_key, again.run_config) == (run_request.run_key, run_request.run_config)

        job = Definitions(jobs=[backtest_requests_job], resources=resources).get_job_def(backtest_requests_job.name)
        result = job.execute_in_process(run_config=run_request.run_config, tags=run_request.tags, instance=instance)
        assert result.success  # the NQ request failed alone
        assert isinstance(_tick(instance, resources), SkipReason)  # the run exists: the batch is acknowledged
        assert bus.queue_depth() == {"length": 0, "pending": 0}

        # a request id sent again is a duplicate: acknowledged, announced, never run again
        bus.submit_request({"request_id": ids[0], "market": "ES", "strategy": "sma_crossover", "params": {"fast": 10}})
        assert isinstance(_tick(instance, resources), SkipReason)
        assert bus.queue_depth() == {"length": 0, "pending": 0}

        events = [e for e in bus.recent_events(100) if e.get("request_id") in {*ids, bad, wrong}]
        done = {e["request_id"]: e for e in events if e["type"] == "backtest_done"}
        assert sorted(done) == sorted(ids) and len([e for e in events if e["type"] == "backtest_done"]) == 2
        assert all(e["run_id"] == result.run_id for e in done.values())
        reasons = {e["request_id"]: e["reason"] for e in events if e["type"] == "request_rejected"}
        assert set(reasons) == {bad, wrong}
        assert "no continuous prices for NQ" in reasons[bad] and "no_such_strategy" in reasons[wrong]
        assert [e["request_id"] for e in events if e["type"] == "request_duplicate"] == [ids[0]]

        # each stored result is its own request's backtest, recomputed here through the single-backtest path
        workspace = Workspace(fbt_home)
        with duckdb.connect(str(paths().warehouse), read_only=True) as conn:
            stored = dict(conn.execute("SELECT request_id, net_pnl FROM request_backtest_runs").fetchall())
            n_equity = dict(conn.execute(
                "SELECT request_id, count(*) FROM request_backtest_equity GROUP BY ALL").fetchall())
            data = read_market_data(conn, "ES", workspace)
        assert sorted(stored) == sorted(ids)
        for rid, fast in zip(ids, (10, 20)):
            spec = BacktestSpec.create("sma_crossover", {"fast": fast}, library=workspace.strategies())
            expected = backtest_market(spec, data).summary["net_pnl"]
            assert stored[rid] == pytest.approx(expected, abs=0.005)
            assert done[rid]["results"][0]["net_pnl"] == pytest.approx(expected, abs=0.005)
            assert n_equity[rid] == len(data.prices)
        assert stored[ids[0]] != pytest.approx(stored[ids[1]], abs=1.0)  # the parameters matter
    finally:
        delete_prefix(redis_url, prefix)
