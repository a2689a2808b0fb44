"""Jobs, schedules and sensors of the code location (Dagster wiring)."""

from __future__ import annotations

import hashlib
import json

import os

from dagster import (AssetKey, AssetSelection, DefaultScheduleStatus, DefaultSensorStatus, RunFailureSensorContext, RunRequest,
                     SensorEvaluationContext, SensorResult, SkipReason, define_asset_job, run_failure_sensor, schedule,
                     sensor)

from assets.backtests import backtests
from assets.catalog import market_catalog
from assets.ml import features, model, predictions
from assets.partitions import MARKETS, market_partitions
from assets.portfolio import portfolio, risk_report, strategy_comparison, tear_sheet
from assets.raw_bars import raw_bars
from assets.rolls import continuous_prices, roll_schedule
from assets.sweeps import parameter_sweep
from fbt_pipelines.catalog import load_catalog
from fbt_pipelines.engine.strategies import validate_params
from fbt_pipelines.errors import StrategyError
from fbt_pipelines.limits import LimitExceeded, check_backtest_request
from fbt_pipelines.stores.bus import BusUnavailable
from resources import BusResource, FilesResource

catalog_job = define_asset_job("catalog", AssetSelection.assets(market_catalog),
                               description="Write the contract catalogue to the warehouse.")
ingest_job = define_asset_job(
    "ingest_market", AssetSelection.assets(raw_bars, roll_schedule, continuous_prices, features),
    partitions_def=market_partitions,
    description="One market: ingest landing files, roll schedule, continuous prices, features.",
)
train_job = define_asset_job("train_model", AssetSelection.assets(model),
                             description="Train the direction model on every market; register it in MLflow.")
backtest_job = define_asset_job(
    "backtest_market", AssetSelection.assets(predictions, backtests, parameter_sweep), partitions_def=market_partitions,
    description="One market: out-of-sample predictions, every strategy's backtest, the parameter sweep.",
)
portfolio_job = define_asset_job("portfolio_report",
                                 AssetSelection.assets(strategy_comparison, portfolio, risk_report, tear_sheet),
                                 description="Strategy comparison, portfolio across markets, risk report, tear sheet.")

# The order `fbt demo` runs them in: the whole lineage graph.
PIPELINE = [
    (catalog_job.name, False),
    (ingest_job.name, True),
    (train_job.name, False),
    (backtest_job.name, True),
    (portfolio_job.name, False),
]


@schedule(job=ingest_job, cron_schedule="30 22 * * 1-5", execution_timezone="UTC",
          default_status=DefaultScheduleStatus.STOPPED)
def daily_ingest(context):
    """After the US close (22:30 UTC, weekdays): ingest every market's landing folder."""
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    for root in sorted(context.instance.get_dynamic_partitions(MARKETS)):
        yield RunRequest(run_key=f"{root}-{day}", partition_key=root)


def landing_fingerprint(files: FilesResource, root: str) -> str:
    """Hash of (name, size, mtime) of a market's landing files."""
    h = hashlib.sha256()
    folder = files.landing(root)
    for p in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


@sensor(job=ingest_job, minimum_interval_seconds=60, default_status=DefaultSensorStatus.STOPPED)
def landing_files_sensor(context: SensorEvaluationContext, files: FilesResource):
    """New or changed files in a market's landing folder start that market's
    ingest; a catalogue market seen for the first time becomes a partition."""
    cursor = json.loads(context.cursor) if context.cursor else {}
    catalog = load_catalog()
    known = set(context.instance.get_dynamic_partitions(MARKETS))
    root_dir = files.landing("").resolve()
    folders = sorted(p for p in root_dir.iterdir() if p.is_dir()) if root_dir.is_dir() else []
    requests, new_markets = [], []
    for folder in folders:
        root = folder.name
        if root not in catalog:
            context.log.warning(f"{folder}: {root!r} is not a catalogue market; add it to markets.toml to ingest it")
            continue
        fp = landing_fingerprint(files, root)
        if fp != cursor.get(root):
            if root not in known:
                new_markets.append(root)
            requests.append(RunRequest(run_key=f"{root}-{fp}", partition_key=root))
            cursor[root] = fp
    context.update_cursor(json.dumps(cursor, sort_keys=True))
    if not requests:
        return SkipReason("no new landing files")
    return SensorResult(run_requests=requests,
                        dynamic_partitions_requests=[market_partitions.build_add_request(new_markets)] if new_markets else [])


def request_to_run(body: dict, markets_with_data: set[str]) -> RunRequest:
    """A queued backtest request -> a run of ``backtest_market`` limited to the ``backtests`` asset (validated)."""
    check_backtest_request(body)  # shape and size (fbt_pipelines/limits.py)
    market = body.get("market")
    if market not in markets_with_data:
        raise StrategyError(f"request {body.get('request_id')}: no data for market {market!r}; "
                            f"markets with data: {', '.join(sorted(markets_with_data)) or 'none'}")
    strategy = body.get("strategy", "sma_crossover")
    params = validate_params(strategy, body.get("params", {}))
    return RunRequest(
        run_key=str(body["request_id"]), partition_key=market,
        asset_selection=[AssetKey("backtests")],  # the requested backtest only, not the market's sweep
        run_config={"ops": {"backtests": {"config": {"strategies": {strategy: params}}}}},
        tags={"fbt/request_id": str(body["request_id"]), "fbt/strategy": strategy},
    )


@sensor(job=backtest_job, minimum_interval_seconds=10, default_status=DefaultSensorStatus.STOPPED)
def backtest_request_sensor(context: SensorEvaluationContext, bus: BusResource):
    """Backtest requests from the Redis stream (consumer group) become runs; the
    request id is the run key, so a redelivered request never runs twice."""
    b = bus.get()
    try:
        entries = b.read_requests("dagster-sensor", count=20)
    except BusUnavailable as exc:
        return SkipReason(f"Redis unavailable, backtest requests not read: {exc}")
    runs = []
    markets_with_data = set(context.instance.get_dynamic_partitions(MARKETS))
    for entry_id, body in entries:
        try:
            runs.append(request_to_run(body, markets_with_data))
        except (StrategyError, LimitExceeded) as exc:
            context.log.error(str(exc))
            b.publish("request_rejected", {"request_id": body.get("request_id"), "reason": str(exc)})
        b.ack(entry_id)
    return runs or SkipReason("no backtest requests")


@run_failure_sensor(default_status=DefaultSensorStatus.STOPPED)
def run_failure_alert(context: RunFailureSensorContext, bus: BusResource):
    """A failed run publishes an ``alert`` event on Redis and, if
    ``FBT_ALERT_WEBHOOK`` is set, POSTs it there."""
    from fbt_pipelines.alerts import send_alert

    run = context.dagster_run
    send_alert(bus.get(), {
        "kind": "run_failure", "job": run.job_name, "run_id": run.run_id,
        "partition": run.tags.get("dagster/partition"), "message": context.failure_event.message,
    }, os.environ.get("FBT_ALERT_WEBHOOK"))


def check_record_partition(instance, record) -> str | None:
    """The market partition of an asset-check evaluation record (records of a
    partitioned asset's run do not always carry it; the run's tag does)."""
    if record.partition:
        return record.partition
    run = instance.get_run_by_id(record.run_id)
    return None if run is None else run.tags.get("dagster/partition")


def failed_check_alerts(instance, check_keys, after_id: int) -> tuple[list[dict], int]:
    """Alerts for asset-check evaluations that failed after storage id ``after_id``
    (newest id seen is returned as the next cursor)."""
    alerts, newest = [], after_id
    for key in sorted(check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        for rec in instance.event_log_storage.get_asset_check_execution_history(key, limit=50):
            if rec.id <= after_id or rec.evaluation is None:
                continue
            newest = max(newest, rec.id)
            if rec.evaluation.passed:
                continue
            severity = getattr(rec.evaluation.severity, "value", str(rec.evaluation.severity))
            alerts.append({"kind": "asset_check_failed", "asset": key.asset_key.to_user_string(), "check": key.name,
                           "severity": severity, "run_id": rec.run_id,
                           "partition": check_record_partition(instance, rec),
                           "description": rec.evaluation.description})
    return alerts, newest


@sensor(minimum_interval_seconds=60, default_status=DefaultSensorStatus.STOPPED)
def check_failure_alert(context: SensorEvaluationContext, bus: BusResource):
    """A failed asset check publishes an ``alert`` event on Redis and, if
    ``FBT_ALERT_WEBHOOK`` is set, POSTs it there (once per evaluation; the
    cursor is the newest check evaluation's storage id)."""
    from fbt_pipelines.alerts import send_alert

    keys = context.repository_def.asset_graph.asset_check_keys
    after = int(context.cursor or 0)
    alerts, newest = failed_check_alerts(context.instance, keys, after)
    for alert in alerts:
        send_alert(bus.get(), alert, os.environ.get("FBT_ALERT_WEBHOOK"))
    context.update_cursor(str(newest))
    return SkipReason(f"{len(alerts)} failed check(s) alerted" if alerts else "no new failed checks")
