"""MLflow records of a walk-forward training: a parent run and one child per fold.

Each fold's child run holds its parameters, OOS accuracy / AUC / log loss /
Brier, feature importances as CSV and SVG bar chart, and the model with its
signature, stored with skops and registered as a version; the latest fold's
version gets the alias ``champion``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import mlflow
import mlflow.sklearn
import numpy
import pandas as pd
import sklearn
import skops
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from fbt_pipelines.ml.walk_forward import WalkForwardResult
from fbt_pipelines.reports.sparkline import svg_bars
from fbt_pipelines.services.tracking import CHAMPION, MODEL_EXPERIMENT, SKOPS_TRUSTED, Tracking


# Stated, not inferred: MLflow infers a model's requirements by loading it in
# a subprocess, ~4 s per logged model here (0.16 s with the list given).
MODEL_REQUIREMENTS = [f"mlflow=={mlflow.__version__}", f"scikit-learn=={sklearn.__version__}",
                      f"skops=={skops.__version__}", f"numpy=={numpy.__version__}"]


@dataclass(frozen=True)
class FoldRecord:
    fold: int
    run_id: str
    version: str


@dataclass(frozen=True)
class WalkForwardRecord:
    model_name: str
    experiment_id: str
    parent_run_id: str
    folds: list[FoldRecord]

    @property
    def champion(self) -> FoldRecord:
        return self.folds[-1]


#: Metrics a registry version states (description and tags), when the training measured them.
VERSION_METRICS = ("oos_auc", "oos_accuracy", "oos_log_loss", "oos_brier", "train_rows", "test_rows")


def training_window(config) -> str:
    """``trained 2012-01-03..2018-12-31, predicts after 2019-01-05`` (UTC dates)."""
    start = getattr(config, "train_start", None) or "first bar"
    return f"trained {start}..{config.train_end}, predicts after {config.predict_from_ts:%Y-%m-%d}"


def describe_version(client: MlflowClient, model_name: str, version: str, fold: int, config,
                     metrics: Mapping[str, float]) -> None:
    """Write the training window and out-of-sample metrics on a registry version.

    A description for the registry page (``Fold 3: trained ..; OOS AUC
    0.531, accuracy 0.515 ...``) and one tag each (``train_start``,
    ``train_end``, ``predict_from``, the metrics), so the Models page can
    show them as columns.
    """
    shown = {k: float(metrics[k]) for k in VERSION_METRICS if k in metrics and pd.notna(metrics[k])}
    numbers = ", ".join(f"{k.removeprefix('oos_').replace('_', ' ')} {v:,.0f}" if k.endswith("_rows")
                        else f"OOS {k.removeprefix('oos_').replace('_', ' ')} {v:.3f}" for k, v in shown.items())
    client.update_model_version(model_name, version,
                                description=f"Fold {fold}: {training_window(config)} (UTC). {numbers}.")
    tags = {"fold": str(fold), "train_start": str(getattr(config, "train_start", None) or ""),
            "train_end": str(config.train_end), "predict_from": f"{config.predict_from_ts:%Y-%m-%d}",
            **{k: f"{v:.6g}" for k, v in shown.items()}}
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)


def log_walk_forward(tracking: Tracking, result: WalkForwardResult, model_name: str, sample: pd.DataFrame,
                     params: Mapping[str, object], tags: Mapping[str, str] | None = None) -> WalkForwardRecord:
    """Log ``result`` under experiment ``fbt-models``.

    ``params`` (the walk-forward settings) go on the parent run, each fold's
    TrainingConfig on its child; ``sample`` (rows with the model's features)
    gives the signature.
    """
    exp_id = tracking.experiment_id(MODEL_EXPERIMENT)  # also points mlflow at the store
    client = MlflowClient(tracking.tracking_uri, tracking.tracking_uri)
    tags = dict(tags or {})
    records = []
    first, last = result.folds[0].fold.config, result.folds[-1].fold.config
    with mlflow.start_run(experiment_id=exp_id,
                          run_name=f"{model_name} walk-forward, {len(result.folds)} folds "
                                   f"(training ends {first.train_end}..{last.train_end})",
                          tags={**tags, "kind": "walk_forward"}) as parent:
        mlflow.log_params({k: v for k, v in params.items()})
        mlflow.log_metrics(result.metrics)
        for fr in result.folds:
            cfg = fr.fold.config
            features = list(cfg.features)
            x = sample[features].astype(float).head(50)
            with mlflow.start_run(experiment_id=exp_id, nested=True,
                                  run_name=f"{model_name} fold {fr.fold.fold}: {training_window(cfg)}",
                                  tags={**tags, "kind": "walk_forward_fold", "fold": str(fr.fold.fold),
                                        "parent": parent.info.run_id}) as child:
                mlflow.log_params({**cfg.params(), "fold": fr.fold.fold})
                mlflow.log_metrics(fr.trained.metrics)
                with tempfile.TemporaryDirectory(dir=tracking.artifact_root) as tmp:
                    path = Path(tmp) / "feature_importances.csv"
                    fr.trained.importances.rename("importance").to_csv(path, index_label="feature")
                    mlflow.log_artifact(str(path))
                mlflow.log_text(svg_bars(fr.trained.importances.to_dict()), "feature_importances.svg")
                info = mlflow.sklearn.log_model(
                    fr.trained.model, name="model", serialization_format="skops",
                    skops_trusted_types=SKOPS_TRUSTED,
                    signature=infer_signature(x, fr.trained.model.predict_proba(x.to_numpy())[:, 1]),
                    registered_model_name=model_name, pip_requirements=MODEL_REQUIREMENTS,
                )
                version = str(info.registered_model_version)
                records.append(FoldRecord(fr.fold.fold, child.info.run_id, version))
            describe_version(client, model_name, version, fr.fold.fold, cfg, fr.trained.metrics)
        mlflow.set_tag("champion_version", records[-1].version)
    client.set_registered_model_alias(model_name, CHAMPION, records[-1].version)
    return WalkForwardRecord(model_name, exp_id, parent.info.run_id, records)
