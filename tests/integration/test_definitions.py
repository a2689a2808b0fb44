"""The code location loads, and its jobs, schedules and sensors work against
real services (Redis request stream, landing folder, Dagster CLI)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest
from dagster import (AssetKey, DagsterInstance, DagsterRun, DagsterRunStatus, Definitions, RunRequest, SkipReason,
                     build_schedule_context, build_sensor_context, instance_for_test)

from fbt_pipelines.location.automation import (backtest_request_sensor, daily_ingest, landing_files_sensor, PIPELINE)
from fbt_pipelines.catalog import load_catalog
from fbt_pipelines.services.bus import Bus
from fbt_pipelines.usecases.requests import batch_key
from resources import BusResource, FilesResource
from tests.conftest import delete_prefix

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_definitions_resolve_every_job_schedule_and_sensor(fbt_home):
    from fbt_pipelines.location.definitions import defs

    Definitions.validate_loadable(defs)
    for job, _ in PIPELINE:
        assert defs.resolve_job_def(job).name == job
    assert defs.resolve_schedule_def("daily_ingest").cron_schedule == "30 22 * * 1-5"
    for name in ("landing_files_sensor", "backtest_request_sensor", "run_failure_alert"):
        assert defs.resolve_sensor_def(name).name == name
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert keys == {"market_catalog", "raw_bars", "roll_schedule", "continuous_prices", "features", "model",
                    "predictions", "backtests", "parameter_sweep", "strategy_comparison", "portfolio", "risk_report", "tear_sheet",
                    "intraday_raw_bars", "intraday_roll_schedule", "intraday_continuous_prices", "intraday_backtests",
                    "intraday_tear_sheet", "intraday_features", "intraday_portfolio", "intraday_parameter_sweep"}
    intraday = defs.resolve_job_def("intraday_market")  # the sweep is materialized on its own
    assert {k.to_user_string() for k in intraday.asset_layer.executable_asset_keys} == {
        "intraday_raw_bars", "intraday_roll_schedule", "intraday_continuous_prices", "intraday_backtests",
        "intraday_tear_sheet", "intraday_features", "intraday_portfolio"}


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
        ctx = build_sensor_context(instance=instance, resources={"bus": BusResource(url=redis_url, prefix=prefix),
                                                            "files": FilesResource(landing_dir="/nonexistent/landing", reports_dir="/nonexistent/reports")})
        runs = backtest_request_sensor(ctx)
        assert [type(r) for r in runs] == [RunRequest]
        run = runs[0]
        assert run.run_key == batch_key([good]) == run.tags["fbt/batch"] and run.job_name == "backtest_requests_job"
        (body,) = run.run_config["ops"]["backtest_requests"]["config"]["requests"]
        assert json.loads(body) == {"request_id": good, "market": "ES", "strategy": "sma_crossover",
                                    "params": {"fast": 10.0}}
        # the two rejected ones acknowledged at once; the good one stays pending until its run exists
        assert bus.queue_depth() == {"length": 1, "pending": 1}
        rejected = [e for e in bus.recent_events(10) if e["type"] == "request_rejected"]
        assert len(rejected) == 2 and any("speed" in e["reason"] for e in rejected)
        assert any("no data for market 'XX'" in e["reason"] for e in rejected)

        # no run yet (the daemon died before creating it): the same run request again, still pending
        (again,) = backtest_request_sensor(ctx)
        assert (again.run_key, again.run_config, again.tags) == (run.run_key, run.run_config, run.tags)
        assert bus.queue_depth() == {"length": 1, "pending": 1}
        # created but never submitted (NOT_STARTED): emitted again so the daemon submits that run
        created = DagsterRun(job_name="backtest_requests_job", run_id=str(uuid.uuid4()), tags=run.tags,
                             status=DagsterRunStatus.NOT_STARTED)
        instance.add_run(created)
        (third,) = backtest_request_sensor(ctx)
        assert third.run_key == run.run_key and bus.queue_depth() == {"length": 1, "pending": 1}
        # submitted and launched (a queued run needs a code-location origin this test has not): acknowledged,
        # nothing emitted
        instance.delete_run(created.run_id)
        instance.add_run(DagsterRun(job_name="backtest_requests_job", run_id=str(uuid.uuid4()), tags=run.tags,
                                    status=DagsterRunStatus.STARTED))
        assert isinstance(backtest_request_sensor(ctx), SkipReason)
        assert bus.queue_depth() == {"length": 0, "pending": 0}
        assert isinstance(backtest_request_sensor(ctx), SkipReason)
    finally:
        delete_prefix(redis_url, prefix)


def test_backtest_request_sensor_reports_a_redis_outage():
    ctx = build_sensor_context(instance=DagsterInstance.ephemeral(),
                               resources={"bus": BusResource(url="redis://127.0.0.1:1/0"),
                                          "files": FilesResource(landing_dir="/nonexistent/landing", reports_dir="/nonexistent/reports")})
    result = backtest_request_sensor(ctx)
    assert isinstance(result, SkipReason) and "Redis unavailable" in result.skip_message


@pytest.mark.slow
def test_dagster_cli_materializes_into_the_configured_instance(fbt_home):
    env = {**os.environ, "DAGSTER_HOME": str(fbt_home / "dagster")}
    from fbt_pipelines.location.instance import ensure_dagster_home

    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    try:
        ensure_dagster_home()
        proc = subprocess.run(
            [str(BIN / "dagster"), "asset", "materialize", "-m", "fbt_pipelines.location.definitions", "--select", "market_catalog"],
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
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert all(not c.get("allow_indirect_imports") for c in config["contracts"])  # no escape
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    packages = {p.name for p in (REPO / "fbt_pipelines").iterdir() if (p / "__init__.py").exists()}
    modules = {p.stem for p in (REPO / "fbt_pipelines").glob("*.py") if p.stem != "__init__"}
    named = {name.strip().split(".", 1)[1] for layer in layers for name in layer.split("|") if "." in name}
    assert packages | modules == named, "every package of fbt_pipelines sits in a layer"


def test_the_layers_contract_catches_an_upward_import(tmp_path):
    """The contract is not vacuous: a domain module importing a use case breaks it."""
    import shutil

    copy = tmp_path / "repo"
    for name in ("fbt_pipelines", "assets", "resources"):
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    target = copy / "fbt_pipelines" / "engine" / "summary.py"
    target.write_text(target.read_text() + "\nfrom fbt_pipelines.usecases import backtest as _upward  # noqa\n")
    proc = subprocess.run([str(BIN / "lint-imports")], cwd=copy, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(copy)})
    assert proc.returncode == 1 and "fbt_pipelines.engine is not allowed to import fbt_pipelines.usecases" in \
        " ".join(proc.stdout.split()), proc.stdout[-2000:]


def test_importing_the_domain_changes_nothing(tmp_path):
    """No environment variable set and no user file read at import: the layers below
    the config take their settings as arguments (the entry points pin Numba's cache)."""
    below_config = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for p in (REPO / "fbt_pipelines").rglob("*.py")
        if p.relative_to(REPO / "fbt_pipelines").parts[0] not in ("cli", "location", "config.py"))
    code = ("import os, importlib, sys; before = dict(os.environ)\n"
            f"for name in {below_config!r}:\n"
            "    importlib.import_module(name)\n"
            "assert not any(m.startswith(('fbt_pipelines.cli', 'fbt_pipelines.location', 'fbt_pipelines.config'))\n"
            "               for m in sys.modules), 'the domain imported an entry point'\n"
            "from fbt_pipelines.engine.strategies import STRATEGIES\n"
            "assert all(t.source is None for t in STRATEGIES.values()), 'a user strategy was loaded at import'\n"
            "added = {k for k in os.environ if os.environ[k] != before.get(k)}\n"
            "assert all(k.startswith('_MLFLOW_') for k in added), added  # MLflow's own telemetry id only\n")
    (tmp_path / "strategies").mkdir()  # a home with a strategy file and a market table that nothing may read
    (tmp_path / "strategies" / "momentum.py").write_text((REPO / "tests" / "user_strategies" / "momentum.py").read_text())
    (tmp_path / "markets.toml").write_text("not toml [")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**env, "FBT_HOME": str(tmp_path), "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
