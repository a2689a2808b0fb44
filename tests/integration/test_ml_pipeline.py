"""The ML stage through Dagster with real stores: the walk-forward `model`
asset (MLflow SQLite store under FBT_HOME), the `predictions` asset and its
checks, the MLflow client listing runs and the `champion` alias, and the
retrain sensor evaluated over the same instance.

Data: a features table written straight to the warehouse for two markets
("ES", "CL"; XNYS sessions 2014-01-02 .. 2017-12-29), every model feature
random normal, label = ``ret_5 + 0.5 noise > 0`` (learnable, so the rolling
accuracy is high). "Drifting" adds 3 to every feature of CL's last 300
sessions: PSI far above 0.25 there, the sensor must ask for a retrain.
"Healthy" is the same instance afterwards: CL rewritten without the shift,
model retrained, predictions rerun: no request.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from dagster import AssetSelection, DagsterInstance, SkipReason, build_sensor_context, materialize
from mlflow.tracking import MlflowClient

from fbt_pipelines.config import paths
from fbt_pipelines.ml.features import FEATURE_COLUMNS
from tests.conftest import use_private_home
from tests.unit._futures_data import utc, xnys_sessions

MARKETS = ["ES", "CL"]
HORIZON = 5
RUN_CONFIG = {"ops": {"model": {"config": {"train_end": "2015-12-31", "retrain_months": 12, "n_estimators": 10,
                                           "min_samples_leaf": 20}}}}


def features_table(drift: bool) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    frames = []
    for root in MARKETS:
        ts = xnys_sessions("2014-01-02", "2017-12-29")
        n = len(ts)
        x = rng.normal(size=(n, len(FEATURE_COLUMNS)))
        x[:3] = np.nan
        label = (x[:, FEATURE_COLUMNS.index("ret_5")] + 0.5 * rng.normal(size=n) > 0).astype(float)
        label[-HORIZON:] = np.nan
        if drift and root == "CL":
            x[-300:] += 3.0
        f = pd.DataFrame(x, columns=FEATURE_COLUMNS)
        f.insert(0, "ts", ts)
        f.insert(0, "root", root)
        f["label"] = label
        f["horizon"] = HORIZON
        f["dead_zone"] = 0.0
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def run_stage(tmp_path_factory, redis_url, drift: bool):
    """A private FBT_HOME with the features table, the walk-forward model and
    both markets' predictions materialized through its Dagster instance."""
    from fbt_pipelines.location.definitions import ALL_ASSETS, local_resources
    from fbt_pipelines.location.instance import ensure_dagster_home
    from fbt_pipelines.services import warehouse as wh

    home = tmp_path_factory.mktemp("ml_drift" if drift else "ml_healthy")
    mp = pytest.MonkeyPatch()
    use_private_home(mp, home, redis_url)
    resources = local_resources()
    with duckdb.connect(str(paths().warehouse)) as conn:
        for root, part in features_table(drift).groupby("root"):
            wh.replace_partition(conn, "features", root, part.reset_index(drop=True))
    ensure_dagster_home()
    instance = DagsterInstance.get()
    instance.add_dynamic_partitions("markets", MARKETS)
    results = [materialize(ALL_ASSETS, selection=AssetSelection.assets("model"), resources=resources,
                           instance=instance, run_config=RUN_CONFIG)]
    for root in MARKETS:
        results.append(materialize(ALL_ASSETS, selection=AssetSelection.assets("predictions"), partition_key=root,
                                   resources=resources, instance=instance))
    assert all(r.success for r in results)
    return home, instance, results, mp


@pytest.fixture(scope="module")
def drifting(tmp_path_factory, redis_url):
    home, instance, results, mp = run_stage(tmp_path_factory, redis_url, drift=True)
    yield home, instance, results
    instance.dispose()
    mp.undo()


def checks(results) -> dict:
    return {(e.asset_key.to_user_string(), e.check_name, r.dagster_run.tags.get("dagster/partition")): e
            for r in results for e in r.get_asset_check_evaluations()}


def test_mlflow_lists_the_training_runs_and_the_champion(drifting):
    home, _, results = drifting
    uri = paths().mlflow_tracking_uri
    assert str(home) in uri
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("fbt-models")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "walk_forward"]
    folds = sorted((r for r in runs if r.data.tags.get("kind") == "walk_forward_fold"),
                   key=lambda r: int(r.data.tags["fold"]))
    # train ends 2015-12-31 and 2016-12-31 (2017-12-31 + 10 days is past the data): two folds
    assert len(parents) == 1 and [r.data.params["train_end"] for r in folds] == ["2015-12-31", "2016-12-31"]
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in folds)
    for r in folds:
        assert {"oos_accuracy", "oos_auc", "oos_log_loss", "oos_brier"} <= set(r.data.metrics)
        assert r.data.metrics["oos_auc"] > 0.7
        names = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"feature_importances.csv", "feature_importances.svg"} <= names
    assert {"oos_accuracy", "oos_auc", "oos_log_loss", "oos_brier"} <= set(parents[0].data.metrics)
    champion = client.get_model_version_by_alias("fbt-direction-rf", "champion")
    versions = client.search_model_versions("name='fbt-direction-rf'")
    assert len(versions) == 2 and champion.run_id == folds[-1].info.run_id
    # the model asset's metadata links the parent run and the champion's version and run
    model_meta = results[0].asset_materializations_for_node("model")[0].metadata
    assert parents[0].info.run_id in model_meta["mlflow_run"].value
    assert champion.run_id in model_meta["champion_run"].value
    assert model_meta["model"].value == f"fbt-direction-rf v{champion.version} (@champion)"


def test_predictions_stitched_and_tagged_with_their_fold_model(drifting):
    home, _, _ = drifting
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        preds = conn.execute("SELECT * FROM predictions ORDER BY root, ts").df()
        folds = conn.execute("SELECT * FROM model_runs ORDER BY fold").df()
    client = MlflowClient(paths().mlflow_tracking_uri)
    assert set(preds["root"]) == set(MARKETS) and not preds.duplicated(["root", "ts"]).any()
    for row in folds.itertuples():
        mine = preds[preds["fold"] == row.fold]
        assert (mine["model_version"] == row.version).all() and (mine["run_id"] == row.run_id).all()
        assert client.get_model_version("fbt-direction-rf", row.version).run_id == row.run_id
        # every prediction is later than its model's training end plus the 10-day embargo
        assert (mine["ts"] > row.train_end + pd.Timedelta(days=10)).all()
        assert (mine["train_end"] == row.train_end).all()
    assert preds["ts"].min() > utc("2016-01-10") and preds["ts"].max() == utc("2017-12-29")
    # the registered champion, loaded back from the store, reproduces its rows' probabilities
    import mlflow.sklearn

    from fbt_pipelines.ml.features import add_cross_market_features
    mlflow.set_registry_uri(paths().mlflow_tracking_uri)
    champion = mlflow.sklearn.load_model("models:/fbt-direction-rf@champion")
    used = folds["features"].iloc[-1].split(",")
    assert "es_ret_5" in used and "zn_ret_5" not in used  # ZN is not in this warehouse: left out
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        pooled = add_cross_market_features(conn.execute("SELECT * FROM features ORDER BY root, ts").df())
    last = preds[preds["fold"] == folds["fold"].max()].merge(pooled, on=["root", "ts"])
    assert len(last) > 200
    np.testing.assert_allclose(champion.predict_proba(last[used].to_numpy(float))[:, 1], last["prob_up"], rtol=1e-12)
    # fold 0 hands over to fold 1 exactly when fold 1's embargo ends
    assert preds.loc[preds["fold"] == 0, "ts"].max() <= utc("2017-01-10") < preds.loc[preds["fold"] == 1, "ts"].min()


def test_checks_report_the_drift_and_the_accuracy(drifting):
    _, _, results = drifting
    c = checks(results)
    assert c[("predictions", "predictions_out_of_sample", "CL")].passed
    cl, es = c[("predictions", "feature_drift", "CL")], c[("predictions", "feature_drift", "ES")]
    assert not cl.passed and cl.metadata["max_psi"].value > 1.0
    assert es.passed and es.metadata["max_psi"].value < 0.25
    acc = c[("predictions", "rolling_accuracy", "ES")]
    assert acc.passed and acc.metadata["rolling_accuracy"].value > 0.6 and acc.metadata["window"].value == 250
    assert acc.severity.value == "WARN" and cl.severity.value == "WARN"


def test_retrain_sensor_requests_a_run_on_drift(drifting):
    from fbt_pipelines.location.automation_ml import model_retrain_sensor, retrain_evidence
    _, instance, _ = drifting
    evidence = retrain_evidence(instance)
    assert len(evidence.reasons) == 1 and evidence.reasons[0].startswith("CL: feature_drift")
    result = model_retrain_sensor(build_sensor_context(instance=instance))
    assert result.run_key == f"retrain-{evidence.newest_id}" and result.job_name in (None, "train_model")
    assert "CL: feature_drift" in result.tags["fbt/retrain_reason"]
    # a stricter accuracy floor also fires on the healthy market
    assert any(r.startswith("ES: rolling_accuracy") for r in retrain_evidence(instance, min_accuracy=0.99).reasons)


@pytest.fixture(scope="module")
def healthy(drifting):
    """The same instance and stores after the drift is gone: CL's features
    rewritten without the shift, the model retrained, predictions rerun."""
    from fbt_pipelines.location.automation_ml import retrain_evidence
    from fbt_pipelines.location.definitions import ALL_ASSETS, local_resources
    from fbt_pipelines.services import warehouse as wh

    home, instance, _ = drifting
    resources = local_resources()
    clean = features_table(drift=False)
    with duckdb.connect(str(paths().warehouse)) as conn:
        wh.replace_partition(conn, "features", "CL", clean[clean["root"] == "CL"].reset_index(drop=True))
    assert materialize(ALL_ASSETS, selection=AssetSelection.assets("model"), resources=resources,
                       instance=instance, run_config=RUN_CONFIG).success
    # every check result now predates the current model: none counts, whatever the threshold
    stale = retrain_evidence(instance, max_psi=0.0, min_accuracy=1.0)
    results = [materialize(ALL_ASSETS, selection=AssetSelection.assets("predictions"), partition_key=root,
                           resources=resources, instance=instance) for root in MARKETS]
    assert all(r.success for r in results)
    return instance, results, stale


def test_retrain_sensor_quiet_when_healthy(healthy):
    from fbt_pipelines.location.automation_ml import model_retrain_sensor, retrain_evidence
    instance, results, stale = healthy
    assert stale.reasons == []
    assert len(checks(results)) == 6 and all(e.passed for e in checks(results).values())
    assert retrain_evidence(instance).reasons == []
    assert isinstance(model_retrain_sensor(build_sensor_context(instance=instance)), SkipReason)
    # the new evaluations do count: with a zero PSI limit both markets would ask
    assert [r.split(":")[0] for r in retrain_evidence(instance, max_psi=0.0).reasons] == ["CL", "ES"]
