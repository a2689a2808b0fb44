"""fbt_pipelines.ml.walk_forward: fold plan, purge and embargo per fold,
stitched out-of-sample predictions, pooled scores, expanding vs rolling.

Synthetic pooled table: markets "AA" (every XNYS session 2014-01-02 ..
2018-06-29) and "BB" (skips every 7th session: a different calendar), eight
random normal features (first 3 rows NaN), label = ``ret_5 + 0.5 noise > 0``
(learnable), the last ``horizon`` labels NaN, as forward_return_label leaves
them. Small forests (10 trees) keep it fast.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.ml.training import TrainingConfig
from fbt_pipelines.ml.walk_forward import WalkForwardConfig, plan_folds, walk_forward
from tests.unit._futures_data import utc, xnys_sessions

NaN = np.nan
FEATURES = ("ret_1", "ret_5", "ret_20", "vol_20", "ewmac_16_64", "dist_high_60", "days_to_expiry", "roll_yield")
HORIZON = 5


def make_table(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for k, root in enumerate(("AA", "BB")):
        ts = xnys_sessions("2014-01-02", "2018-06-29")
        if k == 1:
            ts = ts[np.arange(len(ts)) % 7 != 3]
        n = len(ts)
        x = rng.normal(size=(n, len(FEATURES)))
        x[:3] = NaN
        label = (x[:, 1] + 0.5 * rng.normal(size=n) > 0).astype(float)
        label[-HORIZON:] = NaN
        f = pd.DataFrame(x, columns=list(FEATURES))
        f.insert(0, "ts", ts)
        f.insert(0, "root", root)
        f["label"] = label
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


BASE = TrainingConfig(train_end="2015-12-31", horizon=HORIZON, embargo_days=10, n_estimators=10,
                      min_samples_leaf=20, seed=2, features=FEATURES)
EXPANDING = WalkForwardConfig(first_train_end="2015-12-31", retrain_months=6)
ROLLING = WalkForwardConfig(first_train_end="2015-12-31", retrain_months=6, window="rolling", rolling_months=12)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return make_table()


@pytest.fixture(scope="module", params=["expanding", "rolling"])
def run(request, table):
    wf = EXPANDING if request.param == "expanding" else ROLLING
    return wf, walk_forward(table, BASE, wf)


def test_fold_plan_by_hand():
    folds = plan_folds(utc("2018-06-29"), BASE, EXPANDING)
    # train ends every 6 months from 2015-12-31 while end + 10 days < the last session (2018-06-29):
    # 2018-06-30 + 10 days is past it, so five folds.
    assert [f.train_end for f in folds] == [utc(d) for d in ("2015-12-31", "2016-06-30", "2016-12-31",
                                                              "2017-06-30", "2017-12-31")]
    assert [f.predict_from for f in folds] == [utc(d) for d in ("2016-01-10", "2016-07-10", "2017-01-10",
                                                                 "2017-07-10", "2018-01-10")]
    # each fold predicts until the next one's embargo ends; the last to the end of the data
    assert [f.predict_to for f in folds] == [utc(d) for d in ("2016-07-10", "2017-01-10", "2017-07-10",
                                                               "2018-01-10")] + [None]
    assert all(f.config.train_start is None for f in folds)
    rolling = plan_folds(utc("2018-06-29"), BASE, ROLLING)
    assert [f.config.train_start for f in rolling] == ["2015-01-01", "2015-07-01", "2016-01-01", "2016-07-01",
                                                       "2017-01-01"]
    assert [f.fold for f in rolling] == [0, 1, 2, 3, 4]
    # 2018-01-10 is not before the data end: no fold
    assert plan_folds(utc("2018-01-10"), BASE, WalkForwardConfig("2017-12-31")) == []
    with pytest.raises(ValueError, match="window must be one of"):
        WalkForwardConfig(window="sliding")


def independent_label_end(table: pd.DataFrame) -> dict:
    """(root, ts) -> ts of the row ``HORIZON`` rows later in the same market (None past the data)."""
    out = {}
    for root, g in table.groupby("root"):
        ts = list(g.sort_values("ts")["ts"])
        for i, t in enumerate(ts):
            out[(root, t)] = ts[i + HORIZON] if i + HORIZON < len(ts) else None
    return out


def test_every_prediction_after_its_models_training_end_plus_embargo(run):
    wf, result = run
    preds = result.predictions
    folds = {fr.fold.fold: fr.fold for fr in result.folds}
    assert len(folds) == 5 and set(preds["fold"]) == set(folds)
    for row in preds.itertuples():
        fold = folds[row.fold]
        assert row.ts > fold.train_end + pd.Timedelta(days=BASE.embargo_days)
        assert row.train_end == fold.train_end
        assert fold.predict_to is None or row.ts <= fold.predict_to
    # stitched: every (root, session) after the first embargo with features, exactly once, from one model
    usable = make_table().dropna(subset=list(FEATURES))
    expected = usable[usable["ts"] > utc("2016-01-10")]
    assert sorted(zip(preds["root"], preds["ts"])) == sorted(zip(expected["root"], expected["ts"]))
    assert not preds.duplicated(["root", "ts"]).any()


def test_no_training_row_label_window_overlaps_a_prediction(run, table):
    wf, result = run
    ends = independent_label_end(table)
    for fr in result.folds:
        rows = table.iloc[fr.train_rows]
        first_pred = fr.predictions["ts"].min()
        assert len(rows) == fr.trained.train_rows > 100
        label_ends = [ends[k] for k in zip(rows["root"], rows["ts"])]
        assert None not in label_ends
        # purge: every training label is settled by train_end, before the fold's first prediction
        assert max(label_ends) <= fr.fold.train_end < first_pred
        assert rows["label"].notna().all() and rows[list(FEATURES)].notna().all().all()
        # and nothing purgeable was left out: the latest settled row of AA is in
        aa = table[(table["root"] == "AA")]
        settled = [t for t in aa["ts"] if ends[("AA", t)] is not None and ends[("AA", t)] <= fr.fold.train_end]
        assert rows.loc[rows["root"] == "AA", "ts"].max() == max(settled)
        if wf.window == "rolling":
            assert rows["ts"].min() >= fr.fold.config.train_start_ts
            assert fr.fold.config.train_start_ts == fr.fold.train_end - pd.DateOffset(months=12) + pd.Timedelta(days=1)
        else:
            assert rows["ts"].min() == table.dropna(subset=list(FEATURES))["ts"].min()


def test_probabilities_come_from_the_tagged_fold_model(run, table):
    _, result = run
    keyed = table.set_index(["root", "ts"])
    for fr in result.folds:
        mine = result.predictions[result.predictions["fold"] == fr.fold.fold]
        x = keyed.loc[list(zip(mine["root"], mine["ts"])), list(FEATURES)].to_numpy(float)
        np.testing.assert_array_equal(mine["prob_up"].to_numpy(), fr.trained.model.predict_proba(x)[:, 1])
        # the fold's OOS metrics score exactly its own labelled predictions
        assert fr.trained.test_rows == int(mine["label"].notna().sum())


def test_pooled_scores_by_hand(run):
    _, result = run
    known = result.predictions.dropna(subset=["label"])
    y, p = known["label"].to_numpy(), known["prob_up"].to_numpy()
    assert result.metrics["oos_rows"] == len(known)
    assert result.metrics["oos_accuracy"] == pytest.approx(np.mean((p > 0.5) == (y == 1)), rel=1e-12)
    assert result.metrics["oos_brier"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-9)
    pc = np.clip(p, 1e-15, 1 - 1e-15)
    assert result.metrics["oos_log_loss"] == pytest.approx(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)),
                                                           rel=1e-9)
    # AUC as the share of (up, down) pairs ranked right (ties count half)
    up, down = p[y == 1], p[y == 0]
    pairs = (up[:, None] > down[None, :]).mean() + 0.5 * (up[:, None] == down[None, :]).mean()
    assert result.metrics["oos_auc"] == pytest.approx(pairs, rel=1e-9)
    assert result.metrics["oos_auc"] > 0.7  # the learnable signal is found out of sample
    assert result.metrics["folds"] == 5


def test_expanding_and_rolling_differ_and_are_reproducible(table):
    a = walk_forward(table, BASE, EXPANDING)
    b = walk_forward(table.sample(frac=1.0, random_state=3), BASE, EXPANDING)  # row order does not matter
    pd.testing.assert_frame_equal(a.predictions, b.predictions)
    r = walk_forward(table, BASE, ROLLING)
    assert r.folds[0].trained.train_rows < a.folds[0].trained.train_rows  # fold 0: one year vs two
    assert r.folds[-1].trained.train_rows < a.folds[-1].trained.train_rows
    assert not np.array_equal(a.predictions["prob_up"], r.predictions["prob_up"])


def test_no_fold_is_a_clear_error(table):
    with pytest.raises(ValueError, match="no walk-forward fold"):
        walk_forward(table, BASE, WalkForwardConfig(first_train_end="2018-06-29"))
