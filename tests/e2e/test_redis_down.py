"""With Redis unreachable the graph still materializes, with one clear warning."""

from __future__ import annotations

import datetime as dt
import logging

import duckdb
import pytest
from dagster import AssetSelection, DagsterInstance, materialize

from fbt_pipelines.catalog import market_spec
from fbt_pipelines.config import paths
from fbt_pipelines.marketdata.sample_data import write_sample_data

pytestmark = pytest.mark.slow
DOWN = "redis://127.0.0.1:1/7"  # nothing listens on port 1


def test_graph_runs_without_redis(fbt_home, monkeypatch, caplog):
    monkeypatch.setenv("REDIS_URL", DOWN)
    write_sample_data(paths().landing, [market_spec("ES")], dt.date(2019, 1, 2), dt.date(2020, 6, 30))
    from fbt_pipelines.location.definitions import ALL_ASSETS, local_resources

    caplog.set_level(logging.WARNING, logger="fbt.bus")
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("markets", ["ES"])
    for keys, partition in [(["market_catalog"], None),
                            (["raw_bars", "roll_schedule", "continuous_prices", "features"], "ES")]:
        result = materialize(ALL_ASSETS, selection=AssetSelection.assets(*keys), partition_key=partition,
                             resources=local_resources(), instance=instance)
        assert result.success
    warnings = [r for r in caplog.records if r.name == "fbt.bus"]
    assert len(warnings) == 1 and DOWN in warnings[0].getMessage() and "cache and events skipped" in warnings[0].getMessage()
    with duckdb.connect(str(paths().warehouse), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM features WHERE root = 'ES'").fetchone()[0] > 300
