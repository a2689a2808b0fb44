"""Retrain the direction model when it degrades (drift or falling hit rate).

A sensor over the latest results of the ``predictions`` checks
``feature_drift`` (PSI) and ``rolling_accuracy`` (hit rate of the last
labelled predictions).

Each market partition's newest evaluation counts, and only evaluations made
after the current model was materialized (older ones judged a model that has
since been replaced). When any market's ``feature_drift`` check failed (a
feature's PSI at or above :data:`RETRAIN_MAX_PSI` AND at least twice its usual
PSI in the training window) or its rolling accuracy is below
:data:`RETRAIN_MIN_ACCURACY`, the sensor requests one ``train_model`` run;
the run key is the newest evaluation's storage id, so the same evidence never
requests twice. Ships stopped, like the other sensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dagster import (AssetCheckKey, AssetKey, DagsterInstance, DefaultSensorStatus, RunRequest,
                     SensorEvaluationContext, SkipReason, sensor)

from fbt_pipelines.location.automation import check_record_partition, train_job
from fbt_pipelines.ml.monitoring import MonitoringConfig

RETRAIN_MAX_PSI = MonitoringConfig().max_psi
"""Retrain when a feature's population stability index reaches this (a 'significant shift')."""
RETRAIN_MIN_ACCURACY = MonitoringConfig().min_rolling_accuracy
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


def retrain_evidence(instance: DagsterInstance, max_psi: float | None = None,
                     min_accuracy: float = RETRAIN_MIN_ACCURACY) -> RetrainEvidence:
    """Reasons to retrain found in the instance's latest check evaluations.

    Drift: the ``feature_drift`` check failed (its own rule), or with
    ``max_psi`` given, its largest PSI is at least that (an operator's override).
    """
    model_event = instance.get_latest_materialization_event(MODEL)
    since = model_event.timestamp if model_event is not None else 0.0
    def drift(evaluation) -> str | None:
        """A drift reason: the check's verdict, or ``max_psi`` crossed when given.

        The check's rule is PSI >= its threshold AND >= 2x the feature's usual PSI:
        a carry feature such as roll_yield cycles past 0.25 inside its own training
        years, so max_psi alone would ask for a retrain on healthy data.
        """
        if max_psi is not None:
            value = _number(evaluation.metadata, "max_psi")
            return None if math.isnan(value) or value < max_psi else f"max_psi {value:.3f} >= {max_psi}"
        if evaluation.passed:
            return None
        drifting = getattr(evaluation.metadata.get("drifting"), "value", None) or "-"
        return f"feature_drift {drifting} (PSI over its threshold and 2x its usual level)"

    def accuracy(evaluation) -> str | None:
        value = _number(evaluation.metadata, "rolling_accuracy")
        return None if math.isnan(value) or value >= min_accuracy else \
            f"rolling_accuracy {value:.3f} < {min_accuracy}"

    rules = [("feature_drift", drift), ("rolling_accuracy", accuracy)]
    reasons, newest = [], 0
    for check, reason_of in rules:
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
            reason = reason_of(evaluation)
            if reason:
                reasons.append(f"{market or '-'}: {reason}")
    return RetrainEvidence(sorted(reasons), newest)


@sensor(job=train_job, minimum_interval_seconds=300, default_status=DefaultSensorStatus.STOPPED)
def model_retrain_sensor(context: SensorEvaluationContext):
    """Request a `train_model` run when the predictions checks show a degraded model.

    That is, when the latest checks show feature drift or falling accuracy.
    """
    evidence = retrain_evidence(context.instance)
    if not evidence.reasons:
        return SkipReason("model healthy: no feature drift or accuracy drop in the latest predictions checks")
    return RunRequest(run_key=f"retrain-{evidence.newest_id}",
                      tags={"fbt/retrain_reason": "; ".join(evidence.reasons)[:4000]})
