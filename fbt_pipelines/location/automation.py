"""Jobs, schedules and sensors of the code location (Dagster wiring)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable


from dagster import (AssetSelection, DagsterInstance, DagsterRunStatus, DefaultScheduleStatus,
                     DefaultSensorStatus, RunFailureSensorContext, RunRequest, RunsFilter, SensorEvaluationContext,
                     SensorResult, SkipReason, define_asset_job, run_failure_sensor, schedule, sensor)

from assets.backtests import backtests
from assets.catalog import market_catalog
from assets.ml import features, model, predictions
from assets.partitions import MARKETS, market_partitions
from assets.portfolio import portfolio, risk_report, strategy_comparison, tear_sheet
from assets.raw_bars import raw_bars
from assets.rolls import continuous_prices, roll_schedule
from assets.sweeps import parameter_sweep
from fbt_pipelines.config import alert_webhook
from fbt_pipelines.errors import StrategyError
from fbt_pipelines.services.bus import BusUnavailable
from fbt_pipelines.services.limits import LimitExceeded
from fbt_pipelines.location.request_batches import backtest_requests_job
from fbt_pipelines.usecases.requests import accept_request, batch_key
from resources import BusResource, FilesResource

catalog_job = define_asset_job("catalog", AssetSelection.assets(market_catalog),
                               description="Write the contract catalogue to the warehouse.")
ingest_job = define_asset_job(
    "ingest_market", AssetSelection.assets(raw_bars, roll_schedule, continuous_prices, features),
    partitions_def=market_partitions,
    description="One market: ingest landing files, roll schedule, continuous prices, features.",
)
continuous_job = define_asset_job(
    "continuous_market", AssetSelection.assets(roll_schedule, continuous_prices), partitions_def=market_partitions,
    description="One market: roll schedule and continuous prices from the bars in the warehouse (`fbt continuous`).",
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
    catalog = files.workspace().catalog()
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


REQUEST_CONSUMER = "dagster-sensor"  # the sensor's name in the request stream's consumer group
BATCH_TAG = "fbt/batch"  # run tag holding the batch key (also the run key)
STALE_READER_IDLE_MS = 60_000  # entries idle this long under another consumer name are taken over
DEFAULT_REQUEST_BATCH = 500
REQUEST_BATCH_ENV = "FBT_REQUEST_BATCH"


def request_batch_size() -> int:
    """``FBT_REQUEST_BATCH`` (default 500): requests one run backtests at most (one run per sensor tick)."""
    raw = os.environ.get(REQUEST_BATCH_ENV) or str(DEFAULT_REQUEST_BATCH)
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= 10_000:
        raise ValueError(f"{REQUEST_BATCH_ENV}={raw!r}: expected a whole number from 1 to 10000")
    return size


def batch_run_request(key: str, entries: list[tuple[str, dict]]) -> RunRequest:
    """The run of one batch: run key and ``fbt/batch`` tag = the batch key; the bodies in its op config."""
    bodies = [json.dumps(body, sort_keys=True, default=str) for _, body in entries]
    return RunRequest(
        run_key=key, job_name=backtest_requests_job.name,
        run_config={"ops": {"backtest_requests": {"config": {"batch": key, "requests": bodies}}}},
        tags={BATCH_TAG: key, "fbt/requests": str(len(entries))},
    )


def submitted_batches(instance: DagsterInstance, keys: Iterable[str]) -> set[str]:
    """Those of the batch ``keys`` that have a submitted run (tag ``fbt/batch``, status past NOT_STARTED).

    A run in NOT_STARTED was created but never handed to the run queue (the
    daemon died in between); re-emitting its run request makes the sensor
    daemon submit that same run, so it does not count as launched yet.
    """
    wanted = sorted(set(keys))
    if not wanted:
        return set()
    runs = instance.get_runs(filters=RunsFilter(tags={BATCH_TAG: wanted}))
    return {run.tags[BATCH_TAG] for run in runs if run.status != DagsterRunStatus.NOT_STARTED}


def _request_id(body: dict) -> str | None:
    """The body's ``request_id`` if it is a string (validation of its form is accept_request's)."""
    rid = body.get("request_id")
    return rid if isinstance(rid, str) else None


@sensor(jobs=[backtest_requests_job], minimum_interval_seconds=2, default_status=DefaultSensorStatus.STOPPED)
def backtest_request_sensor(context: SensorEvaluationContext, bus: BusResource, files: FilesResource):
    """All pending backtest requests of a tick become ONE run (up to
    ``FBT_REQUEST_BATCH``), done exactly once through a crash of the daemon.

    Each tick: (1) the entries this sensor read earlier and has not
    acknowledged (and those of a dead reader, idle 60 s) are looked up: an
    entry in a recorded batch whose run was submitted is acknowledged; a
    recorded batch without a submitted run is emitted again, whole, from its
    Redis record (same run key: Dagster creates or submits that run once);
    (2) the other pending entries and new ones (up to the batch size) are
    validated: a bad one is announced (``request_rejected``) and acknowledged
    at once, a request id already batched is a duplicate (acknowledged,
    announced ``request_duplicate``); the rest form a batch, recorded in Redis
    BEFORE its run request is emitted, acknowledged on a later tick once its
    run exists.
    """
    b = bus.get()
    markets_with_data = set(context.instance.get_dynamic_partitions(MARKETS))
    workspace = files.workspace()
    library = workspace.strategies()
    size = request_batch_size()
    runs: list[RunRequest] = []
    acked = rejected = duplicates = 0
    try:
        pending = b.pending_requests(REQUEST_CONSUMER, min_idle_ms=STALE_READER_IDLE_MS, count=max(size, 100))
        batch_of = b.batches_of([rid for _, body in pending if (rid := _request_id(body))])
        submitted = submitted_batches(context.instance, batch_of.values())
        done = [eid for eid, body in pending if batch_of.get(_request_id(body) or "") in submitted]
        for key in sorted(submitted):
            done += [eid for eid, _ in b.batch_entries(key) or []]
            b.forget_batch(key)
        if done:
            b.ack(*sorted(set(done)))
            acked = len(set(done))
        for key in sorted(set(batch_of.values()) - submitted):
            entries = b.batch_entries(key)
            if entries:
                runs.append(batch_run_request(key, entries))
        loose = [(eid, body) for eid, body in pending if (_request_id(body) or "") not in batch_of]
        new = b.new_requests(REQUEST_CONSUMER, count=max(0, size - len(loose)))
        known = b.batches_of([rid for _, body in new if (rid := _request_id(body))])
        fresh: list[tuple[str, dict]] = []
        seen: set[str] = set()
        for eid, body in loose + new:
            rid = _request_id(body)
            if rid is not None and (rid in known or rid in seen):
                b.publish("request_duplicate", {"request_id": rid, "entry_id": eid,
                                                "batch": known.get(rid, "this tick")})
                b.ack(eid)
                duplicates += 1
                continue
            try:
                accept_request(body, markets_with_data, library)
            except (StrategyError, LimitExceeded) as exc:
                context.log.error(str(exc))
                b.publish("request_rejected", {"request_id": rid, "entry_id": eid, "reason": str(exc)})
                b.ack(eid)
                rejected += 1
                continue
            seen.add(rid)  # type: ignore[arg-type]  (accept_request checked it is a string)
            fresh.append((eid, body))
        if fresh:
            key = batch_key([str(body["request_id"]) for _, body in fresh])
            b.record_batch(key, fresh)  # before the run request: a crash from here re-emits this batch
            runs.append(batch_run_request(key, fresh))
    except BusUnavailable as exc:
        return SkipReason(f"Redis unavailable, backtest requests not read: {exc}")
    if acked or rejected or duplicates or runs:
        context.log.info(f"{acked} request(s) acknowledged (batch run submitted), {rejected} rejected, "
                         f"{duplicates} duplicate(s), {len(runs)} batch run request(s) emitted")
    return runs or SkipReason("no backtest requests")


@run_failure_sensor(default_status=DefaultSensorStatus.STOPPED)
def run_failure_alert(context: RunFailureSensorContext, bus: BusResource):
    """A failed run publishes an ``alert`` event on Redis and, if
    ``FBT_ALERT_WEBHOOK`` is set, POSTs it there."""
    from fbt_pipelines.services.alerts import send_alert

    run = context.dagster_run
    send_alert(bus.get(), {
        "kind": "run_failure", "job": run.job_name, "run_id": run.run_id,
        "partition": run.tags.get("dagster/partition"), "message": context.failure_event.message,
    }, alert_webhook())


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
    from fbt_pipelines.services.alerts import send_alert

    keys = context.repository_def.asset_graph.asset_check_keys
    after = int(context.cursor or 0)
    alerts, newest = failed_check_alerts(context.instance, keys, after)
    for alert in alerts:
        send_alert(bus.get(), alert, alert_webhook())
    context.update_cursor(str(newest))
    return SkipReason(f"{len(alerts)} failed check(s) alerted" if alerts else "no new failed checks")
