"""A backtest request travels Redis stream -> sensor -> Dagster run -> result event."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import duckdb
import pytest
from dagster import AssetSelection, DagsterInstance, build_sensor_context, materialize

from fbt_pipelines.automation import backtest_request_sensor
from fbt_pipelines.catalog import market_spec
from fbt_pipelines.config import paths
from fbt_pipelines.marketdata.sample_data import write_sample_data
from fbt_pipelines.stores.bus import Bus
from resources import BusResource
from tests.conftest import delete_prefix


def test_request_is_run_once_and_its_result_announced(fbt_home, redis_url):
    from fbt_pipelines.definitions import ALL_ASSETS, local_resources

    prefix = f"fbttest-{uuid.uuid4().hex[:12]}"
    bus = Bus(redis_url, prefix)
    resources = {**local_resources(), "bus": BusResource(url=redis_url, prefix=prefix)}
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("markets", ["ES"])
    write_sample_data(paths().landing, [market_spec("ES")], dt.date(2017, 1, 3), dt.date(2019, 12, 31))
    try:
        for keys, partition in [(["market_catalog"], None),
                                (["raw_bars", "roll_schedule", "continuous_prices", "features"], "ES")]:
            assert materialize(ALL_ASSETS, selection=AssetSelection.assets(*keys), partition_key=partition,
                               resources=resources, instance=instance).success

        cursor = bus.events_cursor()
        request_id = bus.submit_request({"market": "ES", "strategy": "sma_crossover", "params": {"fast": 10}})
        received: dict = {}
        waiter = threading.Thread(target=lambda: received.update(bus.wait_for_event(request_id, cursor, 120) or {}))
        waiter.start()

        ctx = build_sensor_context(instance=instance, resources={"bus": resources["bus"]})
        (run_request,) = backtest_request_sensor(ctx)
        assert run_request.run_key == request_id  # Dagster never launches a run key twice
        assert bus.queue_depth() == {"length": 0, "pending": 0}  # acknowledged once the run was requested
        result = materialize(ALL_ASSETS, selection=AssetSelection.assets("backtests"), partition_key="ES",
                             run_config=run_request.run_config, tags=run_request.tags, resources=resources,
                             instance=instance)
        assert result.success
        waiter.join(timeout=120)
        assert received.get("type") == "backtest_done" and received["request_id"] == request_id
        (only,) = received["results"]
        with duckdb.connect(str(paths().warehouse), read_only=True) as conn:
            stored = conn.execute("SELECT strategy, params, net_pnl FROM backtest_runs WHERE root = 'ES'").fetchall()
        assert stored == [("sma_crossover", '{"fast": 10, "slow": 100}', pytest.approx(only["net_pnl"], abs=0.005))]
    finally:
        delete_prefix(redis_url, prefix)
