"""fbt_pipelines.ml.training: purged/embargoed split, out-of-sample predictions,
determinism and the too-few-rows error, on small synthetic feature tables.

Synthetic table: two markets, real XNYS sessions 2016-01-04 .. 2018-06-29 ("BB"
skips every 7th session, so the markets have different calendars), the seven
FEATURE_COLUMNS random normal (first 3 rows NaN = warm-up), label = 1 when
``ret_5 + 0.5 * noise > 0`` (learnable), last ``horizon`` rows of each market
without a label (as forward_return_label leaves them). ts are UTC midnights.

Purge rule under test: a training row's label uses the next ``horizon`` rows
(sessions) of its market, so the row is in-sample only if the session
``horizon`` rows later is on or before train_end.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.ml.features import FEATURE_COLUMNS
from fbt_pipelines.ml.training import (
    TrainingConfig,
    predict_out_of_sample,
    split_in_out_of_sample,
    train_direction_model,
)
from tests.unit._futures_data import utc, xnys_sessions

NaN = np.nan


def synthetic_table(horizon: int = 5, seed: int = 0, start: str = "2016-01-04", end: str = "2018-06-29",
                    roots: tuple[str, ...] = ("AA", "BB")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for k, root in enumerate(roots):
        ts = xnys_sessions(start, end)
        if k == 1:
            ts = ts[np.arange(len(ts)) % 7 != 3]
        n = len(ts)
        x = rng.normal(size=(n, len(FEATURE_COLUMNS)))
        x[:3] = NaN
        label = (x[:, FEATURE_COLUMNS.index("ret_5")] + 0.5 * rng.normal(size=n) > 0).astype(float)
        label[:3] = (rng.random(3) > 0.5).astype(float)
        label[-horizon:] = NaN
        f = pd.DataFrame(x, columns=FEATURE_COLUMNS)
        f.insert(0, "ts", ts)
        f.insert(0, "root", root)
        f["label"] = label
        f["horizon"] = horizon
        frames.append(f)
    return pd.concat(frames, ignore_index=True)  # ordered by root, ts like the warehouse read


def expected_split(table: pd.DataFrame, config: TrainingConfig) -> tuple[set, set]:
    """Independent: a plain loop over each market's rows."""
    train, test = set(), set()
    end = pd.Timestamp(config.train_end, tz="UTC")
    predict_from = end + pd.Timedelta(days=config.embargo_days)
    for root, g in table.groupby("root"):
        g = g.sort_values("ts")
        ts, label = list(g["ts"]), g["label"].tolist()
        has_features = g[list(config.features)].notna().all(axis=1).tolist()
        for i in range(len(g)):
            if not has_features[i]:
                continue
            label_end = ts[i + config.horizon] if i + config.horizon < len(g) else None
            if label_end is not None and label_end <= end and not np.isnan(label[i]):
                train.add((root, ts[i]))
            if ts[i] > predict_from:
                test.add((root, ts[i]))
    return train, test


def keys(frame: pd.DataFrame) -> set:
    return set(zip(frame["root"], frame["ts"]))


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return synthetic_table()


CONFIG = TrainingConfig(train_end="2017-12-31", horizon=5, embargo_days=10, n_estimators=10, seed=3)


@pytest.mark.parametrize("train_end, horizon", [
    ("2017-12-31", 5), ("2018-01-15", 2), ("2017-06-30", 5), ("2017-06-30", 1), ("2017-11-23", 3),
])
def test_split_matches_independent_purge_and_embargo(table, train_end, horizon):
    t = table.copy()
    for root in t["root"].unique():  # relabel the NaN tail for this horizon
        idx = t.index[t["root"] == root]
        t.loc[idx[-5:], "label"] = 1.0
        t.loc[idx[-horizon:], "label"] = NaN
    config = TrainingConfig(train_end=train_end, horizon=horizon, embargo_days=10, n_estimators=10)
    train, test = split_in_out_of_sample(t, config)
    exp_train, exp_test = expected_split(t, config)
    assert keys(train) == exp_train
    assert keys(test) == exp_test
    assert len(train) == len(exp_train) and len(test) == len(exp_test)
    assert train[list(config.features)].notna().all().all() and train["label"].notna().all()


@pytest.mark.parametrize(
    "train_end, horizon, last_in, first_out",
    [
        # Christmas 2017 (Mon 12-25) and New Year (Mon 01-01) are holidays. Row 12-21's label uses
        # 12-22, 26, 27, 28, 29 (all <= 12-31); row 12-22's uses 12-26 .. 2018-01-02: it crosses.
        ("2017-12-31", 5, "2017-12-21", "2017-12-22"),
        # MLK day Mon 2018-01-15 is a holiday: row 01-11 (Thu) uses 01-12 and 01-16 -> crosses;
        # row 01-10 uses 01-11 and 01-12.
        ("2018-01-15", 2, "2018-01-10", "2018-01-11"),
        # No holiday: train_end Fri 2017-06-30. Row 06-23 uses 06-26 .. 06-30 (kept);
        # row 06-26 uses 06-27 .. 07-03 -> crosses. Only the last 5 sessions are purged.
        ("2017-06-30", 5, "2017-06-23", "2017-06-26"),
    ],
)
def test_purge_boundary_by_hand(train_end, horizon, last_in, first_out):
    t = synthetic_table(horizon=horizon, roots=("AA",))
    train, _ = split_in_out_of_sample(t, TrainingConfig(train_end=train_end, horizon=horizon, n_estimators=10))
    assert train["ts"].max() == utc(last_in)
    assert utc(first_out) in set(t["ts"])
    assert utc(first_out) not in set(train["ts"])


def test_test_rows_start_strictly_after_embargo(table):
    _, test = split_in_out_of_sample(table, CONFIG)
    # train_end 2017-12-31 + 10 days = 2018-01-10 (a Wednesday session): excluded; 01-11 is the first
    aa = test[test["root"] == "AA"]
    assert aa["ts"].min() == utc("2018-01-11")
    assert utc("2018-01-10") in set(table.loc[table["root"] == "AA", "ts"])
    assert (pd.to_datetime(test["ts"], utc=True) > CONFIG.predict_from_ts).all()
    assert CONFIG.predict_from_ts == utc("2018-01-10")
    # test rows keep rows without a label (the last horizon rows): predictions are still wanted there
    assert test["label"].isna().sum() == 2 * CONFIG.horizon


@pytest.fixture(scope="module")
def trained(table):
    return train_direction_model(table, CONFIG)


def test_train_direction_model_rows_and_metrics(table, trained):
    exp_train, exp_test = expected_split(table, CONFIG)
    assert trained.train_rows == len(exp_train)
    scored = table[[k in exp_test for k in zip(table["root"], table["ts"])]].dropna(subset=["label"])
    assert trained.test_rows == len(scored)
    assert trained.metrics["train_rows"] == float(len(exp_train))
    y = scored["label"].to_numpy(int)
    p = trained.model.predict_proba(scored[FEATURE_COLUMNS].to_numpy(float))[:, 1]
    assert trained.metrics["oos_base_rate"] == pytest.approx(y.mean(), rel=1e-12)
    assert trained.metrics["oos_accuracy"] == pytest.approx(((p > 0.5) == y).mean(), rel=1e-12)
    brier = np.mean((p - y) ** 2)
    assert trained.metrics["oos_brier"] == pytest.approx(brier, rel=1e-9)
    logloss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert trained.metrics["oos_log_loss"] == pytest.approx(logloss, rel=1e-9)
    # the label is learnable from ret_5: the forest must find it out of sample
    assert trained.metrics["oos_auc"] > 0.7
    assert trained.importances.index[0] == "ret_5"
    assert trained.importances.sum() == pytest.approx(1.0)


def test_training_is_deterministic_with_a_seed(table, trained):
    again = train_direction_model(table, CONFIG)
    x = table.dropna(subset=FEATURE_COLUMNS)[FEATURE_COLUMNS].to_numpy(float)
    p1 = trained.model.predict_proba(x)[:, 1]
    p2 = again.model.predict_proba(x)[:, 1]
    assert np.array_equal(p1, p2)
    assert trained.metrics == again.metrics
    # and the seed matters (else the check above could not fail)
    other = train_direction_model(table, TrainingConfig(**{**CONFIG.__dict__, "seed": 4}))
    assert not np.array_equal(p1, other.model.predict_proba(x)[:, 1])


def test_too_few_training_rows_raises():
    # One market, no NaN features. With train_end = the 104th session and horizon 5, rows 0..98
    # have their label's last bar (row i + 5 <= 103) on or before train_end: 99 rows.
    t = synthetic_table(roots=("AA",), start="2017-01-03", end="2017-12-29")
    t.loc[:2, FEATURE_COLUMNS] = 0.0
    sessions = list(t["ts"])
    end_99 = sessions[103].strftime("%Y-%m-%d")
    cfg = TrainingConfig(train_end=end_99, horizon=5, n_estimators=10)
    with pytest.raises(ValueError, match=rf"only 99 training rows before {end_99}; need >= 100"):
        train_direction_model(t, cfg)
    # one session later: 100 rows, enough
    end_100 = sessions[104].strftime("%Y-%m-%d")
    ok = train_direction_model(t, TrainingConfig(train_end=end_100, horizon=5, n_estimators=10))
    assert ok.train_rows == 100


def test_predict_out_of_sample_rows_and_tags(table, trained):
    features = table.copy()
    # a NaN feature after the embargo: that row cannot be predicted
    hole = features.index[(features["root"] == "BB") & (features["ts"] > utc("2018-03-01"))][0]
    features.loc[hole, "vol_20"] = NaN
    preds = predict_out_of_sample(trained.model, features, CONFIG, model_version="7")
    assert list(preds.columns) == ["root", "ts", "prob_up", "model_version", "train_end"]
    usable = features.dropna(subset=FEATURE_COLUMNS)
    expected = usable[pd.to_datetime(usable["ts"], utc=True) > utc("2018-01-10")]
    assert list(zip(preds["root"], preds["ts"])) == list(zip(expected["root"], expected["ts"]))
    assert (features.loc[hole, "root"], features.loc[hole, "ts"]) not in keys(preds)
    assert (pd.to_datetime(preds["ts"], utc=True) > CONFIG.predict_from_ts).all()
    assert preds.groupby("root")["ts"].min().to_dict() == {"AA": utc("2018-01-11"), "BB": utc("2018-01-11")}
    assert (preds["model_version"] == "7").all()
    assert (pd.to_datetime(preds["train_end"], utc=True) == utc("2017-12-31")).all()
    np.testing.assert_array_equal(
        preds["prob_up"].to_numpy(), trained.model.predict_proba(expected[FEATURE_COLUMNS].to_numpy(float))[:, 1])
    assert preds["prob_up"].between(0, 1).all()


def test_predict_out_of_sample_with_nothing_after_embargo(table, trained):
    early = table[table["ts"] <= utc("2018-01-10")]
    preds = predict_out_of_sample(trained.model, early, CONFIG, model_version="1")
    assert len(preds) == 0
    assert list(preds.columns) == ["root", "ts", "prob_up", "model_version", "train_end"]


def test_config_params_and_timestamps():
    assert CONFIG.train_end_ts == utc("2017-12-31")
    assert CONFIG.params()["features"] == ",".join(FEATURE_COLUMNS)
    assert CONFIG.params()["n_estimators"] == 10
