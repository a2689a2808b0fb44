"""MLflow on a real SQLite store: training runs, registry alias, backtest runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from fbt_pipelines.ml.features import FEATURE_COLUMNS
from fbt_pipelines.ml.training import TrainingConfig, train_direction_model
from fbt_pipelines.services.tracking import BACKTEST_EXPERIMENT, Tracking


def synthetic_features(n: int = 600, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.bdate_range("2016-01-01", periods=n, tz="UTC")
    frame = pd.DataFrame(rng.standard_normal((n, len(FEATURE_COLUMNS))), columns=FEATURE_COLUMNS)
    frame.insert(0, "ts", ts)
    frame.insert(0, "root", "ES")
    frame["label"] = (frame["ret_5"] + 0.5 * rng.standard_normal(n) > 0).astype(float)
    return frame


def test_training_is_logged_registered_and_reloadable(tmp_path):
    store = tmp_path / "mlflow"
    tracking = Tracking(f"sqlite:///{store / 'mlflow.db'}", store / "artifacts")
    store.mkdir(exist_ok=True)
    frame = synthetic_features()
    config = TrainingConfig(train_end="2017-06-30", n_estimators=10, min_samples_leaf=5)
    trained = train_direction_model(frame, config)
    reg = tracking.log_training(trained, "test-model", frame, tags={"markets": "ES"})
    assert reg.version == "1"
    model, loaded = tracking.load_champion("test-model")
    assert loaded.version == "1" and loaded.run_id == reg.run_id
    x = frame[FEATURE_COLUMNS].to_numpy(float)
    np.testing.assert_array_equal(model.predict_proba(x), trained.model.predict_proba(x))
    client = MlflowClient(tracking.tracking_uri)
    run = client.get_run(reg.run_id)
    assert run.data.params["train_end"] == "2017-06-30"
    assert abs(run.data.metrics["oos_auc"] - trained.metrics["oos_auc"]) < 1e-12
    assert run.data.tags["markets"] == "ES"
    assert run.info.artifact_uri.startswith((store / "artifacts").as_uri())
    artifacts = {a.path for a in client.list_artifacts(reg.run_id)}
    assert "feature_importances.csv" in artifacts
    # the registry version says what it was trained on and how it scored out of sample
    description = client.get_model_version("test-model", "1").description
    assert description.startswith("trained start..2017-06-30; ")
    assert f"oos_auc {trained.metrics['oos_auc']:.4f}" in description
    # a second training becomes version 2 and takes the alias
    reg2 = tracking.log_training(trained, "test-model", frame)
    assert reg2.version == "2" and tracking.load_champion("test-model")[1].version == "2"


def test_backtest_run_has_params_metrics_tags_and_tables(tmp_path):
    tracking = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    equity = pd.DataFrame({"ts": pd.date_range("2020-01-01", periods=3, tz="UTC"), "equity": [1.0, 2.0, 3.0]})
    run_id = tracking.log_backtest("sma-ES", {"fast": 20, "params": {"a": 1}}, {"sharpe": 1.25, "nan": float("nan")},
                                   {"strategy": "sma_crossover", "data_version": "abc"}, {"equity": equity})
    client = MlflowClient(tracking.tracking_uri)
    run = client.get_run(run_id)
    assert run.data.params == {"fast": "20", "params": '{"a": 1}'}
    assert run.data.metrics == {"sharpe": 1.25}
    assert run.data.tags["data_version"] == "abc"
    assert client.get_experiment(run.info.experiment_id).name == BACKTEST_EXPERIMENT
    local = client.download_artifacts(run_id, "equity.csv", str(tmp_path))
    assert pd.read_csv(local)["equity"].tolist() == [1.0, 2.0, 3.0]


def test_backtest_run_keeps_an_equity_chart(tmp_path):
    from fbt_pipelines.reports.sparkline import svg_lines

    tracking = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    svg = svg_lines({"equity (USD)": [1.0, 2.0, 1.5]})
    run_id = tracking.log_backtest("x", {}, {"sharpe": 1.0}, {"strategy": "s"}, figures={"equity": svg})
    local = MlflowClient(tracking.tracking_uri).download_artifacts(run_id, "equity.svg", str(tmp_path))
    assert open(local).read() == svg


def test_experiments_open_in_model_development_mode(tmp_path):
    from fbt_pipelines.services.tracking import EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT

    tracking = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    client = MlflowClient(tracking.tracking_uri)
    new = tracking.experiment_id("fbt-new")
    assert client.get_experiment(new).tags[EXPERIMENT_KIND_TAG] == "custom_model_development" == MODEL_DEVELOPMENT
    # an experiment made before (no tag: the MLflow 3 UI opens it as GenAI) gets the tag on first use
    old = client.create_experiment("fbt-old")
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert tracking.experiment_id("fbt-old") == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == MODEL_DEVELOPMENT


def test_sweep_parent_logs_overfitting_numbers_report_and_named_children(tmp_path):
    from fbt_pipelines.services.tracking import SWEEP_EXPERIMENT

    tracking = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    table = pd.DataFrame({"set": [0, 1], "params": ['{"fast": 10, "slow": 50}', '{"fast": 20, "slow": 100}'],
                          "sharpe": [0.4, 0.7], "net_pnl": [10.0, 30.0]})
    report = tmp_path / "sweep_ES_sma_crossover.html"
    report.write_text("<html>sweep</html>", encoding="utf-8")
    parent = tracking.log_sweep("ES sma_crossover sweep", {"strategy": "sma_crossover"}, table,
                                tags={"strategy": "sma_crossover", "market": "ES"},
                                metrics={"pbo": 0.25, "deflated_sharpe": 0.12, "walk_forward_oos_sharpe": float("nan")},
                                artifacts={"report": report})
    client = MlflowClient(tracking.tracking_uri)
    run = client.get_run(parent)
    assert run.info.run_name == "ES sma_crossover sweep"
    assert run.data.metrics == {"best_sharpe": 0.7, "sets": 2.0, "pbo": 0.25, "deflated_sharpe": 0.12}
    assert [a.path for a in client.list_artifacts(parent, "reports")] == ["reports/sweep_ES_sma_crossover.html"]
    children = client.search_runs([run.info.experiment_id], f"tags.parent = '{parent}'")
    names = {c.info.run_name: c.data.metrics["sharpe"] for c in children}
    assert names == {"ES sma_crossover fast=10 slow=50": 0.4, "ES sma_crossover fast=20 slow=100": 0.7}
    # numbers known after the run: added to the finished parent
    tracking.log_to_run(parent, metrics={"walk_forward_oos_sharpe": 0.31}, artifacts={"again": report})
    assert client.get_run(parent).data.metrics["walk_forward_oos_sharpe"] == 0.31
    assert client.get_experiment_by_name(SWEEP_EXPERIMENT).experiment_id == run.info.experiment_id
    import pytest

    with pytest.raises(FileNotFoundError, match="no file"):
        tracking.log_to_run(parent, artifacts={"gone": tmp_path / "missing.html"})


def test_registry_versions_carry_the_training_window_and_metrics(tmp_path):
    from fbt_pipelines.ml.walk_forward import WalkForwardConfig, walk_forward
    from fbt_pipelines.services.model_tracking import log_walk_forward

    tracking = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    frame = synthetic_features(n=900)
    base = TrainingConfig(n_estimators=5, min_samples_leaf=5, features=tuple(FEATURE_COLUMNS))
    result = walk_forward(frame, base, WalkForwardConfig(first_train_end="2017-06-30", retrain_months=12))
    assert len(result.folds) >= 2
    record = log_walk_forward(tracking, result, "wf-model", frame, {"window": "expanding"})
    client = MlflowClient(tracking.tracking_uri)
    for fr, rec in zip(result.folds, record.folds):
        cfg, m = fr.fold.config, fr.trained.metrics
        mv = client.get_model_version("wf-model", rec.version)
        assert mv.tags["train_end"] == cfg.train_end and mv.tags["fold"] == str(fr.fold.fold)
        assert float(mv.tags["oos_auc"]) == float(f"{m['oos_auc']:.6g}")
        assert f"trained first bar..{cfg.train_end}" in mv.description
        assert f"OOS auc {m['oos_auc']:.3f}" in mv.description and f"train rows {m['train_rows']:,.0f}" in mv.description
        assert client.get_run(rec.run_id).info.run_name.startswith(f"wf-model fold {fr.fold.fold}: trained ")
    parent = client.get_run(record.parent_run_id).info.run_name
    assert parent == (f"wf-model walk-forward, {len(result.folds)} folds (training ends "
                      f"{result.folds[0].fold.config.train_end}..{result.folds[-1].fold.config.train_end})")
