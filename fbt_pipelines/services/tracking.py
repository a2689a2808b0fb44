"""The MLflow adapter: experiments, model training runs, registry, backtest runs.

Local default: a SQLite backend and an artifact folder under
``$FBT_HOME/mlflow``; any tracking URI by configuration. Experiments are
created with their ``artifact_location`` under the artifact root so nothing
lands in ``./mlruns``. Models are stored with skops (no pickle).

MLflow is a side record of a backtest, not its store: the warehouse is.
:meth:`Tracking.try_log_backtest` and :meth:`Tracking.try_log_sweep` never
fail the caller. When the tracking store cannot be written they return
``None``, log one warning (logger ``fbt.tracking``) and set
:attr:`Tracking.failure`; later calls on the same object skip MLflow at once
(a dead tracking server otherwise costs MLflow's HTTP retries, measured at
~250 s per call with the defaults). An ``http(s)://`` URI is probed at
``/health`` (3 s timeout) before the first call for the same reason.
"""

from __future__ import annotations

import json
import logging
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from fbt_pipelines.errors import FbtError
from fbt_pipelines.ml.training import TrainedModel
from fbt_pipelines.services.bus import redact_url

log = logging.getLogger("fbt.tracking")

MODEL_EXPERIMENT = "fbt-models"
BACKTEST_EXPERIMENT = "fbt-backtests"
SWEEP_EXPERIMENT = "fbt-sweeps"
CHAMPION = "champion"
# Types inside a RandomForest that skops must be told to trust on load; the
# models are ours (trained by this code), never a third party's file.
SKOPS_TRUSTED = ["sklearn.tree._tree.Tree", "numpy.dtype"]
# The experiment's kind (values from the 3.17 UI bundle: genai_development, custom_model_development).
# The 3.17 UI reads it only when its GenAI / Model training switcher is off; with the switcher (the
# default) the view follows the URL's ``workflowType`` (else localStorage ``mlflow.workflowType``,
# default genai) -- measured in chromium: a tagged experiment's bare URL still opened the GenAI
# overview, the same URL with ``?workflowType=machine_learning`` the runs table. So every link
# carries that parameter and every experiment carries the tag.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_DEVELOPMENT = "custom_model_development"
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def runs_page_url(ui_base: str, experiment_id: str) -> str:
    """Link to an experiment's runs table in the MLflow UI's model-training view."""
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING_VIEW}"


def run_page_url(ui_base: str, experiment_id: str, run_id: str) -> str:
    """Link to one run's page in the MLflow UI's model-training view."""
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING_VIEW}"


def params_label(params: Mapping[str, Any]) -> str:
    """``fast=20 slow=100``: parameters as a run name shows them (numbers with ``:g``)."""
    def fmt(v: Any) -> str:
        return format(v, "g") if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)

    return " ".join(f"{k}={fmt(v)}" for k, v in params.items())


def _training_run_name(model_name: str, config: Any) -> str:
    """A training run's name, e.g. ``fbt-direction trained 2012-01-03..2018-12-31``.

    The window appears when the config has one.
    """
    start, end = getattr(config, "train_start", None), getattr(config, "train_end", None)
    if end:
        return f"{model_name} trained {start or 'start'}..{end}"
    return f"{model_name} training"


def model_version_description(trained: Any) -> str:
    """A registry version's description: its training window and out-of-sample metrics.

    E.g. ``trained 2012-01-03..2018-12-31; oos_auc 0.5312, oos_accuracy 0.5140``
    (metrics sorted by name, 4 decimals).
    """
    config = trained.config
    start, end = getattr(config, "train_start", None), getattr(config, "train_end", None)
    window = f"trained {start or 'start'}..{end}" if end else "trained on every labelled row"
    metrics = ", ".join(f"{k} {float(v):.4f}" for k, v in sorted(trained.metrics.items()))
    return f"{window}; {metrics}" if metrics else window


class TrackingFailed(FbtError):
    """The MLflow tracking store cannot be reached or written."""


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    run_id: str
    experiment_id: str


class Tracking:
    """MLflow tracking + registry at ``tracking_uri``."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = Path(artifact_root) if artifact_root else None
        self.failure: str | None = None  # why tracking failed (then try_* calls skip MLflow)
        self._probed = False
        if self.artifact_root is not None:
            self.artifact_root.mkdir(parents=True, exist_ok=True)

    # -- best effort ------------------------------------------------------------
    def _probe(self) -> None:
        """Fail fast on an http(s) tracking server that does not answer ``/health``."""
        if self._probed or not self.tracking_uri.startswith(("http://", "https://")):
            return
        url = self.tracking_uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=3.0):  # noqa: S310 - http(s) only, checked above
                pass
        except urllib.error.HTTPError:
            pass  # it answered (auth, proxy...): let MLflow report what is wrong
        except OSError as exc:
            raise TrackingFailed(f"no answer from {redact_url(url)} ({exc})") from exc
        self._probed = True

    def _best_effort(self, what: str, fn, *args, **kwargs) -> str | None:
        if self.failure is not None:
            return None
        try:
            self._probe()
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking is a side record: any failure is reported, never fatal
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            self.failure = f"MLflow tracking at {redact_url(self.tracking_uri)} failed ({type(exc).__name__}: {first})"
            log.warning("%s; %s kept in the warehouse without an MLflow run", self.failure, what)
            return None

    def try_log_backtest(self, *args: Any, **kwargs: Any) -> str | None:
        """:meth:`log_backtest`, or ``None`` if MLflow fails.

        On failure: one warning, and :attr:`failure` set.
        """
        return self._best_effort("backtest", self.log_backtest, *args, **kwargs)

    def try_log_sweep(self, *args: Any, **kwargs: Any) -> str | None:
        """:meth:`log_sweep`, or ``None`` (one warning, :attr:`failure` set) if MLflow fails."""
        return self._best_effort("sweep", self.log_sweep, *args, **kwargs)

    def _activate(self) -> MlflowClient:
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        return MlflowClient(self.tracking_uri, self.tracking_uri)

    def experiment_id(self, name: str) -> str:
        """Id of experiment ``name``, created (artifacts under the root) if new.

        Every fbt experiment is a model-development one (tag
        ``mlflow.experimentKind=custom_model_development``, set on older
        experiments that lack it): the MLflow 3 UI then opens its runs.
        """
        client = self._activate()
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.tags.get(EXPERIMENT_KIND_TAG) != MODEL_DEVELOPMENT:
                client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT)
            return exp.experiment_id
        location = (self.artifact_root / name).as_uri() if self.artifact_root else None
        return client.create_experiment(name, artifact_location=location,
                                        tags={EXPERIMENT_KIND_TAG: MODEL_DEVELOPMENT})

    def log_training(self, trained: TrainedModel, model_name: str, sample: pd.DataFrame,
                     tags: Mapping[str, str] | None = None) -> RegisteredModel:
        """One MLflow run for a training, registered under ``model_name`` as ``champion``.

        Params, OOS metrics, feature importances (CSV), the model with its
        signature; the model is registered with alias ``champion``.
        """
        client = self._activate()
        exp_id = self.experiment_id(MODEL_EXPERIMENT)
        features = list(trained.config.features)
        x = sample[features].astype(float).head(50)
        with mlflow.start_run(experiment_id=exp_id, run_name=_training_run_name(model_name, trained.config),
                              tags=dict(tags or {})) as run:
            mlflow.log_params(trained.config.params())
            mlflow.log_metrics(trained.metrics)
            with tempfile.TemporaryDirectory(dir=self.artifact_root) as tmp:
                path = Path(tmp) / "feature_importances.csv"
                trained.importances.rename("importance").to_csv(path, index_label="feature")
                mlflow.log_artifact(str(path))
            info = mlflow.sklearn.log_model(
                trained.model, name="model", serialization_format="skops",
                skops_trusted_types=SKOPS_TRUSTED,
                signature=infer_signature(x, trained.model.predict_proba(x.to_numpy())[:, 1]),
                registered_model_name=model_name,
            )
            run_id = run.info.run_id
        version = str(info.registered_model_version)
        client.update_model_version(model_name, version, description=model_version_description(trained))
        client.set_registered_model_alias(model_name, CHAMPION, version)
        return RegisteredModel(model_name, version, run_id, exp_id)

    def load_champion(self, model_name: str) -> tuple[Any, RegisteredModel]:
        """The model behind alias ``champion`` and its registry entry."""
        client = self._activate()
        mv = client.get_model_version_by_alias(model_name, CHAMPION)
        model = mlflow.sklearn.load_model(f"models:/{model_name}@{CHAMPION}")
        exp_id = client.get_run(mv.run_id).info.experiment_id
        return model, RegisteredModel(model_name, str(mv.version), mv.run_id, exp_id)

    def log_backtest(self, run_name: str, params: Mapping[str, Any], metrics: Mapping[str, float],
                     tags: Mapping[str, str], tables: Mapping[str, pd.DataFrame] | None = None,
                     experiment: str = BACKTEST_EXPERIMENT, figures: Mapping[str, str] | None = None) -> str:
        """One MLflow run for one backtest, with its tables and figures as artifacts.

        ``tables`` are logged as CSV artifacts, ``figures`` (name -> SVG text)
        as ``<name>.svg``.
        """
        self._activate()
        exp_id = self.experiment_id(experiment)
        with mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=dict(tags)) as run:
            mlflow.log_params({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in params.items()})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if pd.notna(v)})
            if tables:
                with tempfile.TemporaryDirectory(dir=self.artifact_root) as tmp:
                    for name, frame in tables.items():
                        path = Path(tmp) / f"{name}.csv"
                        frame.to_csv(path, index=False)
                        mlflow.log_artifact(str(path))
            for name, svg in (figures or {}).items():
                mlflow.log_text(svg, f"{name}.svg")
            return run.info.run_id

    def log_sweep(self, run_name: str, params: Mapping[str, Any], table: pd.DataFrame, tags: Mapping[str, str],
                  experiment: str = SWEEP_EXPERIMENT, metrics: Mapping[str, float] | None = None,
                  artifacts: Mapping[str, Path] | None = None) -> str:
        """A parent run for the sweep, one nested child per parameter set; returns its id.

        The parent logs ``params``, ``best_sharpe``, ``sets`` and ``metrics``
        (e.g. ``pbo``, ``deflated_sharpe``, ``walk_forward_oos_sharpe``; NaNs
        are left out), and ``artifacts`` (name -> file, e.g. the sweep's HTML
        report) under ``reports/``. Each child holds its params + metrics, so
        the MLflow UI compares them; it is named ``<market> <strategy>
        fast=20 slow=100`` when ``tags`` name the market and strategy.
        """
        self._activate()
        exp_id = self.experiment_id(experiment)
        metric_cols = [c for c in table.columns if c not in ("set", "params")]
        prefix = " ".join(tags[k] for k in ("market", "strategy") if tags.get(k))
        with mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=dict(tags)) as parent:
            mlflow.log_params({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in params.items()})
            best = table.sort_values("sharpe", ascending=False).iloc[0]
            mlflow.log_metrics({"best_sharpe": float(best["sharpe"]), "sets": float(len(table))})
            mlflow.set_tag("best_params", best["params"])
            self._log_extras(metrics, artifacts)
            for row in table.itertuples(index=False):
                set_params = json.loads(row.params)
                name = f"{prefix} {params_label(set_params)}".strip() if prefix else f"{run_name}#{row.set}"
                with mlflow.start_run(experiment_id=exp_id, run_name=name, nested=True,
                                      tags={**tags, "parent": parent.info.run_id, "set": str(row.set)}):
                    mlflow.log_params(set_params)
                    mlflow.log_metrics({c: float(getattr(row, c)) for c in metric_cols
                                        if pd.notna(getattr(row, c))})
            return parent.info.run_id

    @staticmethod
    def _log_extras(metrics: Mapping[str, float] | None, artifacts: Mapping[str, Path] | None) -> None:
        """Finite ``metrics`` and ``artifacts`` (files, under ``reports/``) on the active run."""
        finite = {k: float(v) for k, v in (metrics or {}).items() if v is not None and pd.notna(v)}
        if finite:
            mlflow.log_metrics(finite)
        for name, path in (artifacts or {}).items():
            if not Path(path).is_file():
                raise FileNotFoundError(f"artifact {name!r}: no file {path}")
            mlflow.log_artifact(str(path), artifact_path="reports")

    def log_to_run(self, run_id: str, metrics: Mapping[str, float] | None = None,
                   artifacts: Mapping[str, Path] | None = None) -> None:
        """Add metrics (NaNs left out) and files (under ``reports/``) to a finished run.

        For numbers known only after the run was logged (a sweep's PBO, its
        walk-forward Sharpe and report).
        """
        client = self._activate()
        for name, value in (metrics or {}).items():
            if value is not None and pd.notna(value):
                client.log_metric(run_id, name, float(value))
        for name, path in (artifacts or {}).items():
            if not Path(path).is_file():
                raise FileNotFoundError(f"artifact {name!r}: no file {path}")
            client.log_artifact(run_id, str(path), artifact_path="reports")

    def try_log_to_run(self, *args: Any, **kwargs: Any) -> None:
        """:meth:`log_to_run`, or nothing if MLflow fails (one warning, :attr:`failure` set)."""
        self._best_effort("sweep summary", self.log_to_run, *args, **kwargs)

    def runs_url(self, ui_base: str, experiment: str) -> str:
        """Link to an experiment's runs table in the MLflow UI."""
        return runs_page_url(ui_base, self.experiment_id(experiment))
