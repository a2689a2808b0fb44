"""Retrain the direction model when it degrades: a sensor over the latest
results of the ``predictions`` checks ``feature_drift`` (PSI) and
``rolling_accuracy`` (hit rate of the last labelled predictions).

Each market partition's newest evaluation counts, and only evaluations made
after the current model was materialized (older ones judged a model that has
since been replaced). When any market's PSI is at or above
:data:`RETRAIN_MAX_PSI` or its rolling accuracy below
:data:`RETRAIN_MIN_ACCURACY`, the sensor requests one ``train_model`` run;
the run key is the newest evaluation's storage id, so the same evidence never
requests twice. Ships stopped, like the other sensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dagster import (AssetCheckKey, AssetKey, DagsterInstance, DefaultSensorStatus, RunRequest,
                     SensorEvaluationContext, SkipReason, sensor)

from fbt_pipelines.automation import check_record_partition, train_job

RETRAIN_MAX_PSI = 0.25
"""Retrain when a feature's population stability index reaches this (a 'significant shift')."""
RETRAIN_MIN_ACCURACY = 0.45
"""Retrain when a market's rolling out-of-sample hit rate falls below this."""
PREDICTIONS = AssetKey("predictions")
MODEL = AssetKey("model")


@dataclass(frozen=True)
class RetrainEvidence:
    reasons: list[str]
    newest_id: int
    """Storage id of the newest evaluation considered (0 if none)."""


def _number(metadata, name: str) -> float:
    entry = metadata.get(name)
    value = getattr(entry, "value", entry)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def retrain_evidence(instance: DagsterInstance, max_psi: float = RETRAIN_MAX_PSI,
                     min_accuracy: float = RETRAIN_MIN_ACCURACY) -> RetrainEvidence:
    """Reasons to retrain found in the instance's latest check evaluations."""
    model_event = instance.get_latest_materialization_event(MODEL)
    since = model_event.timestamp if model_event is not None else 0.0
    rules = [("feature_drift", "max_psi", lambda v: v >= max_psi, f">= {max_psi}"),
             ("rolling_accuracy", "rolling_accuracy", lambda v: v < min_accuracy, f"< {min_accuracy}")]
    reasons, newest = [], 0
    for check, field, crossed, text in rules:
        records = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(PREDICTIONS, check), limit=200)
        seen: set = set()
        for rec in records:  # newest first
            evaluation = rec.evaluation
            # older evaluations judged a replaced model (the event's own timestamp: the
            # record's create_timestamp is stored to the second only)
            if evaluation is None or rec.event is None or rec.event.timestamp < since:
                continue
            market = check_record_partition(instance, rec)
            if market in seen:
                continue
            seen.add(market)
            newest = max(newest, rec.id)
            value = _number(evaluation.metadata, field)
            if not math.isnan(value) and crossed(value):
                reasons.append(f"{market or '-'}: {field} {value:.3f} {text}")
    return RetrainEvidence(sorted(reasons), newest)


@sensor(job=train_job, minimum_interval_seconds=300, default_status=DefaultSensorStatus.STOPPED)
def model_retrain_sensor(context: SensorEvaluationContext):
    """Request a `train_model` run when the latest predictions checks show feature drift or falling accuracy."""
    evidence = retrain_evidence(context.instance)
    if not evidence.reasons:
        return SkipReason("model healthy: no feature drift or accuracy drop in the latest predictions checks")
    return RunRequest(run_key=f"retrain-{evidence.newest_id}",
                      tags={"fbt/retrain_reason": "; ".join(evidence.reasons)[:4000]})
