"""fbt_pipelines.usecases.ml: the features, training and predictions steps
the ML assets call, and the assets' run configs derived from the domain
settings.

Data: a seeded random market ("TS" contracts, stored under the built-in root
ES) through a DuckDB warehouse for the features step; a pooled features table
of two markets ("ES", "CL"; XNYS sessions 2014-01-02 .. 2017-12-29, random
normal features, label = ``ret_5 + 0.5 noise > 0``) for training, with
MLflow replaced by a recorder (the real logging is in
tests/integration/test_ml_pipeline.py).
"""

from __future__ import annotations

import dataclasses

import duckdb
import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog.specs import market_spec
from fbt_pipelines.futures.back_adjust import back_adjust, roll_yield
from fbt_pipelines.futures.roll_schedule import calendar_roll_schedule
from fbt_pipelines.ml.dataset import LabelConfig, feature_table
from fbt_pipelines.ml.features import FEATURE_COLUMNS, add_cross_market_features, planned_roll_dates
from fbt_pipelines.ml.monitoring import DRIFT_WINDOW, MonitoringConfig, feature_drift, rolling_accuracy
from fbt_pipelines.ml.training import TrainingConfig
from fbt_pipelines.ml.walk_forward import WalkForwardConfig
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.services.model_tracking import FoldRecord, WalkForwardRecord
from fbt_pipelines.usecases import ml as uc
from fbt_pipelines.usecases.workspace import Workspace
from tests.unit._futures_data import random_market, xnys_sessions

HORIZON = 5


# -- features ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stored_market(tmp_path_factory):
    """A warehouse holding ES's bars, contracts and continuous prices (a random market)."""
    contracts, closes, bars = random_market(11)
    schedule = calendar_roll_schedule("TS", contracts, closes, 5)
    prices = back_adjust(bars, schedule, contracts, "panama").assign(root="ES")
    bars = bars.assign(root="ES")
    path = tmp_path_factory.mktemp("wh") / "warehouse.duckdb"
    with duckdb.connect(str(path)) as conn:
        wh.ensure_schema(conn)
        conn.register("b", bars.assign(interval="1d", ingest_id="test"))
        conn.execute("INSERT INTO bars SELECT contract, root, interval, ts, open, high, low, close, volume, "
                     "open_interest, ingest_id FROM b")
        conn.register("c", pd.DataFrame([{"contract": c.contract_id, "root": "ES", "year": c.year, "month": c.month,
                                          "first_notice": c.first_notice, "last_trade": c.last_trade}
                                         for c in contracts]))
        conn.execute("INSERT INTO contracts SELECT * FROM c")
        wh.replace_partition(conn, "continuous_prices", "ES", prices)
    return path, contracts, prices, bars


def test_market_features_are_the_domain_pieces_on_the_stored_market(stored_market, tmp_path):
    path, contracts, prices, bars = stored_market
    label = LabelConfig(horizon=3, dead_zone=0.001)
    with duckdb.connect(str(path)) as conn:
        wh.ensure_schema(conn)
        inputs = uc.read_feature_inputs(conn, "ES", Workspace(tmp_path))
        made = uc.market_features(inputs, label)
        version = uc.store_features(conn, made)
        stored = wh.read_partition(conn, "features", "ES", order_by=["ts"])
    spec = market_spec("ES")
    assert inputs.spec == spec and not inputs.prices_from_cache
    assert sorted(c.contract_id for c in inputs.contracts) == sorted(c.contract_id for c in contracts)
    p = inputs.prices
    roll_dates = planned_roll_dates(p, contracts, spec.roll_days_before)
    expected = feature_table(p, 3, roll_yield(bars, p, contracts), roll_dates, 0.001)
    pd.testing.assert_frame_equal(made.table, expected)
    assert len(stored) == len(expected) and version and made.label == label
    finite = expected[FEATURE_COLUMNS].iloc[64:].notna().all(axis=1).mean()
    assert made.finite_after_warmup == pytest.approx(finite) and 0 < made.finite_after_warmup <= 1
    assert made.labelled_rows == int(expected["label"].notna().sum())
    assert made.up_label_share == pytest.approx(expected["label"].mean())
    assert made.mean_roll_yield == pytest.approx(expected["roll_yield"].mean())


def test_read_feature_inputs_names_the_missing_step(stored_market, tmp_path):
    from fbt_pipelines.errors import DataError

    with duckdb.connect(str(stored_market[0])) as conn:
        wh.ensure_schema(conn)
        with pytest.raises(DataError, match="continuous_prices"):
            uc.read_feature_inputs(conn, "CL", Workspace(tmp_path))


# -- training -------------------------------------------------------------------------------------------------------

def pooled_table(drift: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    frames = []
    for root in ("ES", "CL"):
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


SETTINGS = uc.ModelSettings(walk_forward=WalkForwardConfig(first_train_end="2015-12-31", retrain_months=12),
                            training=TrainingConfig(n_estimators=10, min_samples_leaf=20))


class Recorder:
    """Stands in for services.model_tracking.log_walk_forward: versions 1, 2, ... per fold."""

    def __init__(self):
        self.calls = []

    def __call__(self, tracking, result, model_name, sample, params, tags=None):
        self.calls.append({"result": result, "model_name": model_name, "sample": sample, "params": params,
                           "tags": tags})
        folds = [FoldRecord(fr.fold.fold, f"run{fr.fold.fold}", str(fr.fold.fold + 1)) for fr in result.folds]
        return WalkForwardRecord(model_name, "exp", "parent", folds)


@pytest.fixture(scope="module")
def trained():
    mp = pytest.MonkeyPatch()
    recorder = Recorder()
    mp.setattr(uc, "log_walk_forward", recorder)
    lines = []
    try:
        out = uc.train_model(pooled_table(), SETTINGS, tracking=None, code_version="abc", log=lines.append)
    finally:
        mp.undo()
    return out, recorder, lines


def test_pooled_features_leave_out_the_absent_cross_markets():
    table = pooled_table()
    pooled = uc.pooled_features(table)
    assert "es_ret_5" in pooled.features and "zn_ret_5" not in pooled.features
    assert pooled.left_out == ["zn_ret_5", "zn_ret_20"]
    own = uc.pooled_features(table, cross_market=False)
    assert own.table is table and own.features == FEATURE_COLUMNS and own.left_out == []


def test_train_model_logs_once_and_returns_the_tables_to_store(trained):
    out, recorder, lines = trained
    (call,) = recorder.calls
    assert call["model_name"] == uc.MODEL_NAME == out.model_name
    assert call["params"]["n_estimators"] == 10 and call["params"]["first_train_end"] == "2015-12-31"
    assert call["params"]["left_out"] == "zn_ret_5,zn_ret_20" and call["params"]["horizon"] == HORIZON
    assert call["tags"] == {"markets": "CL,ES", "code_version": "abc"}
    assert call["sample"][out.features].notna().all().all()
    assert len(lines) == 1 and lines[0].startswith("walk-forward on 2 markets")
    assert out.base.horizon == HORIZON and out.base.features == tuple(out.features)
    assert out.base.train_end == "2015-12-31" and out.base.n_estimators == 10
    # two folds (2015-12-31, 2016-12-31), versions 1 and 2; the champion is the last
    assert out.runs["fold"].tolist() == [0, 1] and out.runs["version"].tolist() == ["1", "2"]
    assert out.runs["train_end"].dt.strftime("%Y-%m-%d").tolist() == ["2015-12-31", "2016-12-31"]
    assert out.runs["features"].iloc[-1] == ",".join(out.features) and out.champion is out.result.folds[-1]
    assert str(out.runs["predict_to"].dt.tz) == "UTC" and out.runs["predict_to"].isna().tolist() == [False, True]
    assert set(uc.FOLD_METRICS) <= set(out.runs.columns) and (out.runs["oos_auc"] > 0.7).all()
    preds = out.predictions
    assert list(preds.columns) == ["model_name", "root", "ts", "prob_up", "model_version", "run_id", "fold",
                                   "train_end"]
    assert (preds["model_version"] == (preds["fold"] + 1).astype(str)).all()
    assert (preds["run_id"] == "run" + preds["fold"].astype(str)).all()


def test_store_model_replaces_both_tables(trained, tmp_path):
    out = trained[0]
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        wh.ensure_schema(conn)
        uc.store_model(conn, out)
        uc.store_model(conn, out)
        runs = wh.read_partition(conn, "model_runs", uc.MODEL_NAME)
        preds = wh.read_partition(conn, "model_predictions", uc.MODEL_NAME)
    assert len(runs) == len(out.runs) and len(preds) == len(out.predictions)


# -- predictions ----------------------------------------------------------------------------------------------------

def test_market_predictions_and_their_checks(trained):
    out = trained[0]
    features = pooled_table(drift=True)
    outputs = uc.ModelOutputs(out.runs, out.predictions, features)
    es = uc.market_predictions("ES", outputs)
    cl = uc.market_predictions("CL", outputs, MonitoringConfig(accuracy_window=100))
    assert es.out_of_sample and es.before_embargo_end == 0 and es.champion_version == "2"
    assert es.model_versions == ["1", "2"] and "model_name" not in es.predictions.columns
    assert es.drift_ok and not cl.drift_ok and cl.max_psi > 1.0 and cl.worst_feature in out.features
    assert es.accuracy_ok and es.rolling_accuracy > 0.6 and len(cl.rolling) == len(cl.labelled)
    # the drift: the last DRIFT_WINDOW sessions against the champion's training rows (expanding: all to its end)
    pooled = add_cross_market_features(features)
    mine = pooled[pooled["root"] == "CL"].reset_index(drop=True)
    train = mine[pd.to_datetime(mine["ts"], utc=True) <= out.runs["train_end"].iloc[-1]]
    pd.testing.assert_series_equal(cl.drift, feature_drift(train, mine.tail(DRIFT_WINDOW), out.features))
    known = cl.labelled
    np.testing.assert_allclose(cl.rolling, rolling_accuracy(known["label"], known["prob_up"], 100))
    assert cl.oos_accuracy_all == pytest.approx(((known["prob_up"] > 0.5) == (known["label"] > 0.5)).mean())
    # a row at its model's embargo end is a leak
    stitched = out.predictions.copy()
    first = stitched.index[stitched["root"] == "ES"][0]
    stitched.loc[first, "ts"] = out.runs["predict_from"].iloc[int(stitched.loc[first, "fold"])]
    leaky = uc.market_predictions("ES", uc.ModelOutputs(out.runs, stitched, features))
    assert leaky.before_embargo_end == 1 and not leaky.out_of_sample


# -- the run configs are the domain settings ------------------------------------------------------------------------

def test_run_configs_take_fields_and_defaults_from_the_domain():
    from assets.ml import FeaturesConfig, ModelConfig, PredictionsConfig

    assert FeaturesConfig().domain() == LabelConfig()
    assert PredictionsConfig().domain() == MonitoringConfig()
    assert ModelConfig().domain() == uc.ModelSettings()
    # what the launchpad offers (unchanged by deriving them)
    assert list(FeaturesConfig.model_fields) == ["horizon", "dead_zone"]
    assert list(PredictionsConfig.model_fields) == ["accuracy_window", "min_rolling_accuracy", "max_psi"]
    assert list(ModelConfig.model_fields) == ["train_end", "retrain_months", "window", "rolling_months",
                                              "embargo_days", "n_estimators", "max_depth", "min_samples_leaf",
                                              "seed", "model", "tune", "cross_market"]
    defaults = {k: f.default for k, f in ModelConfig.model_fields.items()}
    assert defaults["train_end"] == "2018-12-31" and defaults["n_estimators"] == 50 and defaults["cross_market"]
    assert ModelConfig.model_fields["n_estimators"].description.startswith("Trees per fold")
    # values reach the nested settings; the fields not offered keep the domain default
    s = ModelConfig(train_end="2015-12-31", n_estimators=10, window="rolling", cross_market=False).domain()
    assert s.walk_forward == dataclasses.replace(WalkForwardConfig(), first_train_end="2015-12-31", window="rolling")
    assert s.training == dataclasses.replace(TrainingConfig(), n_estimators=10) and not s.cross_market
    with pytest.raises(ValueError, match="model must be one of"):
        ModelConfig(model="xgboost").domain()
