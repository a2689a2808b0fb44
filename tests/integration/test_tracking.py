"""MLflow on a real SQLite store: training runs, registry alias, backtest runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from fbt_pipelines.ml.features import FEATURE_COLUMNS
from fbt_pipelines.ml.training import TrainingConfig, train_direction_model
from fbt_pipelines.stores.tracking import BACKTEST_EXPERIMENT, Tracking


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
