"""The code location loads, and its jobs, schedules and sensors work against
real services (Redis request stream, landing folder, Dagster CLI)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from dagster import (AssetKey, DagsterInstance, Definitions, RunRequest, SkipReason, build_schedule_context,
                     build_sensor_context, instance_for_test)

from fbt_pipelines.automation import (backtest_request_sensor, daily_ingest, landing_files_sensor, PIPELINE)
from fbt_pipelines.catalog import load_catalog
from fbt_pipelines.stores.bus import Bus
from resources import BusResource, FilesResource
from tests.conftest import delete_prefix

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_definitions_resolve_every_job_schedule_and_sensor(fbt_home):
    from fbt_pipelines.definitions import defs

    Definitions.validate_loadable(defs)
    for job, _ in PIPELINE:
        assert defs.resolve_job_def(job).name == job
    assert defs.resolve_schedule_def("daily_ingest").cron_schedule == "30 22 * * 1-5"
    for name in ("landing_files_sensor", "backtest_request_sensor", "run_failure_alert"):
        assert defs.resolve_sensor_def(name).name == name
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert keys == {"market_catalog", "raw_bars", "roll_schedule", "continuous_prices", "features", "model",
                    "predictions", "backtests", "parameter_sweep", "strategy_comparison", "portfolio", "risk_report", "tear_sheet"}


def test_daily_schedule_requests_every_market_with_data():
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("markets", ["ES", "CL"])
        ctx = build_schedule_context(instance=instance,
                                     scheduled_execution_time=dt.datetime(2024, 3, 1, 22, 30, tzinfo=dt.UTC))
        requests = list(daily_ingest(ctx))
    assert [r.partition_key for r in requests] == ["CL", "ES"]
    assert requests[0].run_key == "CL-2024-03-01"


def test_landing_sensor_fires_once_per_change_and_adds_new_markets(tmp_path):
    files = FilesResource(landing_dir=str(tmp_path / "landing"), reports_dir=str(tmp_path / "reports"))
    for folder in ("ES", "XX"):
        (tmp_path / "landing" / folder).mkdir(parents=True)
    (tmp_path / "landing" / "ES" / "ESZ2013.csv").write_text("date,open,high,low,close,volume\n")
    (tmp_path / "landing" / "XX" / "XXZ2013.csv").write_text("date,open,high,low,close,volume\n")
    with instance_for_test() as instance:
        ctx = build_sensor_context(instance=instance, resources={"files": files})
        first = landing_files_sensor(ctx)
        assert [r.partition_key for r in first.run_requests] == ["ES"]  # XX is not a catalogue market
        assert [r.partition_keys for r in first.dynamic_partitions_requests] == [["ES"]]
        instance.add_dynamic_partitions("markets", ["ES"])
        ctx2 = build_sensor_context(instance=instance, cursor=ctx.cursor, resources={"files": files})
        assert isinstance(landing_files_sensor(ctx2), SkipReason)
        (tmp_path / "landing" / "ES" / "ESH2014.csv").write_text("date,open,high,low,close,volume\n")
        ctx3 = build_sensor_context(instance=instance, cursor=ctx.cursor, resources={"files": files})
        third = landing_files_sensor(ctx3)
        assert [r.partition_key for r in third.run_requests] == ["ES"] and third.dynamic_partitions_requests == []


def test_backtest_request_sensor_turns_requests_into_runs(redis_url):
    prefix = f"fbttest-{uuid.uuid4().hex[:12]}"
    try:
        bus = Bus(redis_url, prefix)
        good = bus.submit_request({"market": "ES", "strategy": "sma_crossover", "params": {"fast": 10.0}})
        bus.submit_request({"market": "XX", "strategy": "sma_crossover"})
        bus.submit_request({"market": "ES", "strategy": "sma_crossover", "params": {"speed": 3}})
        instance = DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("markets", ["ES", "CL"])
        ctx = build_sensor_context(instance=instance, resources={"bus": BusResource(url=redis_url, prefix=prefix)})
        runs = backtest_request_sensor(ctx)
        assert [type(r) for r in runs] == [RunRequest]
        run = runs[0]
        assert run.run_key == good and run.partition_key == "ES"
        assert run.asset_selection == [AssetKey("backtests")]  # not the market's predictions and sweep
        assert run.run_config["ops"]["backtests"]["config"]["strategies"] == {"sma_crossover": {"fast": 10, "slow": 100}}
        assert bus.queue_depth() == {"length": 0, "pending": 0}  # all three acknowledged
        rejected = [e for e in bus.recent_events(10) if e["type"] == "request_rejected"]
        assert len(rejected) == 2 and any("speed" in e["reason"] for e in rejected)
        assert any("no data for market 'XX'" in e["reason"] for e in rejected)
        assert isinstance(backtest_request_sensor(ctx), SkipReason)
    finally:
        delete_prefix(redis_url, prefix)


def test_backtest_request_sensor_reports_a_redis_outage():
    ctx = build_sensor_context(instance=DagsterInstance.ephemeral(),
                               resources={"bus": BusResource(url="redis://127.0.0.1:1/0")})
    result = backtest_request_sensor(ctx)
    assert isinstance(result, SkipReason) and "Redis unavailable" in result.skip_message


@pytest.mark.slow
def test_dagster_cli_materializes_into_the_configured_instance(fbt_home):
    env = {**os.environ, "DAGSTER_HOME": str(fbt_home / "dagster")}
    from fbt_pipelines.instance import ensure_dagster_home

    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    try:
        ensure_dagster_home()
        proc = subprocess.run(
            [str(BIN / "dagster"), "asset", "materialize", "-m", "fbt_pipelines.definitions", "--select", "market_catalog"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        with DagsterInstance.get() as instance:
            event = instance.get_latest_materialization_event(AssetKey("market_catalog"))
            assert event is not None
            assert event.asset_materialization.metadata["markets"].value == len(load_catalog())
    finally:
        del os.environ["DAGSTER_HOME"]


def test_import_contracts_hold():
    proc = subprocess.run([str(BIN / "lint-imports")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "broken" in proc.stdout and " 0 broken" in proc.stdout
