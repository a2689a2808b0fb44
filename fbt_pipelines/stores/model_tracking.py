"""MLflow records of a walk-forward training: one parent run, one child run
per fold (parameters, OOS accuracy / AUC / log loss / Brier, feature
importances as CSV and SVG bar chart, the model with its signature, stored
with skops and registered as a version); the latest fold's version gets the
alias ``champion``."""

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
from fbt_pipelines.stores.tracking import CHAMPION, MODEL_EXPERIMENT, SKOPS_TRUSTED, Tracking


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


def log_walk_forward(tracking: Tracking, result: WalkForwardResult, model_name: str, sample: pd.DataFrame,
                     params: Mapping[str, object], tags: Mapping[str, str] | None = None) -> WalkForwardRecord:
    """Log ``result`` under experiment ``fbt-models``; ``params`` (the
    walk-forward settings) go on the parent run, each fold's TrainingConfig on
    its child; ``sample`` (rows with the model's features) gives the signature."""
    exp_id = tracking.experiment_id(MODEL_EXPERIMENT)  # also points mlflow at the store
    client = MlflowClient(tracking.tracking_uri, tracking.tracking_uri)
    tags = dict(tags or {})
    records = []
    with mlflow.start_run(experiment_id=exp_id, run_name=f"walk-forward-{model_name}",
                          tags={**tags, "kind": "walk_forward"}) as parent:
        mlflow.log_params({k: v for k, v in params.items()})
        mlflow.log_metrics(result.metrics)
        for fr in result.folds:
            cfg = fr.fold.config
            features = list(cfg.features)
            x = sample[features].astype(float).head(50)
            with mlflow.start_run(experiment_id=exp_id, run_name=f"{model_name}-fold{fr.fold.fold}", nested=True,
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
                records.append(FoldRecord(fr.fold.fold, child.info.run_id, str(info.registered_model_version)))
        mlflow.set_tag("champion_version", records[-1].version)
    client.set_registered_model_alias(model_name, CHAMPION, records[-1].version)
    return WalkForwardRecord(model_name, exp_id, parent.info.run_id, records)
