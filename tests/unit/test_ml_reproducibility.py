"""fbt_pipelines.ml.training: reproducibility of both model kinds (with and
without tuning), the default model unchanged, and hyperparameter tuning that
only ever sees the purged training rows.

Synthetic table: markets "AA" (every XNYS session 2015-01-02 .. 2018-12-31)
and "BB" (skips every 7th session), the FEATURE_COLUMNS random normal (first
3 rows NaN), last ``horizon`` labels NaN. ``learnable`` labels are
``ret_5 + 0.5 * noise > 0``; otherwise labels are coin flips (pure noise, on
which the simplest grid value should win).

Leak check, two ways:

- a real wrapper estimator (no sklearn internals touched) records every
  matrix it is fit on or asked to score; each row maps back to its (root, ts)
  through its unique ``ret_1`` value, and every inner-fold row must be a
  training row (label end on or before train_end), purged against its
  validation window;
- rows after train_end are given a label pattern that does change the chosen
  hyperparameter when those rows are in the training window (train_end moved
  to the end of the data), yet with the real train_end the tuning scores are
  bit-for-bit those of the unaltered table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import TimeSeriesSplit
from sklearn.pipeline import Pipeline

from fbt_pipelines.ml import training
from fbt_pipelines.ml.training import (
    C_GRID,
    MAX_DEPTH_GRID,
    TrainingConfig,
    split_in_out_of_sample,
    train_direction_model,
    tune_hyperparameter,
)
from tests.unit._futures_data import utc, xnys_sessions

NaN = np.nan
# The eight features these tables were designed with (the noise table's
# draws, hence the expected tuning outcomes, depend on the column count).
FEATURE_COLUMNS = ["ret_1", "ret_5", "ret_20", "vol_20", "ewmac_16_64", "dist_high_60", "days_to_expiry", "roll_yield"]
TRAIN_END = "2016-06-30"
HORIZON = 5


def make_table(learnable: bool, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for k, root in enumerate(("AA", "BB")):
        ts = xnys_sessions("2015-01-02", "2018-12-31")
        if k == 1:
            ts = ts[np.arange(len(ts)) % 7 != 3]
        n = len(ts)
        x = rng.normal(size=(n, len(FEATURE_COLUMNS)))
        x[:3] = NaN
        if learnable:
            label = (x[:, FEATURE_COLUMNS.index("ret_5")] + 0.5 * rng.normal(size=n) > 0).astype(float)
        else:
            label = (rng.random(n) > 0.5).astype(float)
        label[-HORIZON:] = NaN
        f = pd.DataFrame(x, columns=FEATURE_COLUMNS)
        f.insert(0, "ts", ts)
        f.insert(0, "root", root)
        f["label"] = label
        f["horizon"] = HORIZON
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def config(**kw) -> TrainingConfig:
    base = {"train_end": TRAIN_END, "horizon": HORIZON, "n_estimators": 20, "min_samples_leaf": 20, "seed": 1,
            "features": tuple(FEATURE_COLUMNS)}
    return TrainingConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def learnable() -> pd.DataFrame:
    return make_table(learnable=True)


@pytest.fixture(scope="module")
def noise() -> pd.DataFrame:
    return make_table(learnable=False, seed=5)


def all_x(table: pd.DataFrame) -> np.ndarray:
    return table.dropna(subset=FEATURE_COLUMNS)[FEATURE_COLUMNS].to_numpy(float)


# --- reproducibility -----------------------------------------------------------------------------

@pytest.mark.parametrize("tune", [False, True])
@pytest.mark.parametrize("kind", ["random_forest", "logistic"])
def test_same_data_and_config_give_identical_probabilities(learnable, kind, tune):
    cfg = config(model=kind, tune=tune)
    a = train_direction_model(learnable, cfg)
    b = train_direction_model(learnable.copy(), cfg)
    x = all_x(learnable)
    assert np.array_equal(a.model.predict_proba(x), b.model.predict_proba(x))
    assert a.metrics == b.metrics
    pd.testing.assert_series_equal(a.importances, b.importances)
    assert isinstance(a.model, Pipeline if kind == "logistic" else RandomForestClassifier)
    assert a.metrics["oos_auc"] > 0.7  # both kinds learn the ret_5 signal
    assert a.importances.index[0] == "ret_5"
    assert a.importances.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("tune", [False, True])
def test_a_different_seed_changes_the_forest(learnable, tune):
    x = all_x(learnable)
    p1 = train_direction_model(learnable, config(seed=1, tune=tune)).model.predict_proba(x)
    p2 = train_direction_model(learnable, config(seed=2, tune=tune)).model.predict_proba(x)
    assert not np.array_equal(p1, p2)


def test_defaults_are_todays_random_forest(learnable):
    cfg = config()
    assert (cfg.model, cfg.tune) == ("random_forest", False)
    trained = train_direction_model(learnable, cfg)
    train, _ = split_in_out_of_sample(learnable, cfg)
    today = RandomForestClassifier(n_estimators=20, max_depth=5, min_samples_leaf=20, random_state=1, n_jobs=1)
    today.fit(train[FEATURE_COLUMNS].to_numpy(float), train["label"].to_numpy(int))
    x = all_x(learnable)
    assert np.array_equal(trained.model.predict_proba(x), today.predict_proba(x))
    assert set(trained.metrics) == {"train_rows", "test_rows", "oos_accuracy", "oos_auc", "oos_log_loss",
                                    "oos_brier", "oos_base_rate"}


@pytest.mark.parametrize("kind, key, grid", [("random_forest", "chosen_max_depth", MAX_DEPTH_GRID),
                                             ("logistic", "chosen_C", C_GRID)])
def test_tuned_value_is_recorded_in_metrics(learnable, kind, key, grid):
    cfg = config(model=kind, tune=True)
    trained = train_direction_model(learnable, cfg)
    result = tune_hyperparameter(learnable, cfg)
    assert trained.metrics[key] == float(result.chosen)
    assert result.chosen in grid and set(result.scores) == set(grid)
    assert result.scores[result.chosen] == min(result.scores.values())
    assert trained.metrics["tune_log_loss"] == result.scores[result.chosen]
    assert all(isinstance(v, float) for v in trained.metrics.values())  # loggable as MLflow metrics
    # the refit uses the chosen value
    est = trained.model[-1] if kind == "logistic" else trained.model
    assert (est.C if kind == "logistic" else est.max_depth) == result.chosen


def test_config_rejects_an_unknown_model_and_logs_the_new_fields():
    with pytest.raises(ValueError, match="model must be one of"):
        TrainingConfig(model="xgboost")
    params = config(model="logistic", tune=True).params()
    assert params["model"] == "logistic" and params["tune"] is True and params["logistic_c"] == 1.0


# --- tuning sees the training rows only ----------------------------------------------------------

class Recorder:
    """A real estimator wrapper: records each matrix it is fit on / scores, delegates the rest."""

    def __init__(self, inner, log: list):
        self.inner, self.log = inner, log

    def fit(self, x, y):
        self.log.append(("fit", np.array(x, copy=True)))
        self.inner.fit(x, y)
        return self

    def predict_proba(self, x):
        self.log.append(("score", np.array(x, copy=True)))
        return self.inner.predict_proba(x)

    def __getattr__(self, name):  # feature_importances_ etc.
        return getattr(self.__dict__["inner"], name)


def independent_purge(table: pd.DataFrame, train_end: str, horizon: int) -> tuple[set, dict]:
    """Training keys and every row's label end, by a plain loop per market."""
    end = utc(train_end)
    keys, label_end = set(), {}
    for root, g in table.groupby("root"):
        g = g.sort_values("ts")
        ts, lab = list(g["ts"]), g["label"].tolist()
        ok = g[FEATURE_COLUMNS].notna().all(axis=1).tolist()
        for i in range(len(g)):
            label_end[(root, ts[i])] = ts[i + horizon] if i + horizon < len(g) else None
            if ok[i] and not np.isnan(lab[i]) and label_end[(root, ts[i])] is not None \
                    and label_end[(root, ts[i])] <= end:
                keys.add((root, ts[i]))
    return keys, label_end


@pytest.mark.parametrize("kind", ["random_forest", "logistic"])
def test_inner_folds_fit_and_score_training_rows_only(noise, monkeypatch, kind):
    table = noise
    rows = table.dropna(subset=FEATURE_COLUMNS)
    assert rows["ret_1"].is_unique
    key_of = dict(zip(rows["ret_1"], zip(rows["root"], rows["ts"])))
    log: list = []
    real = training.make_estimator
    monkeypatch.setattr(training, "make_estimator", lambda cfg, value=None: Recorder(real(cfg, value), log))
    cfg = config(model=kind, tune=True)
    if kind == "random_forest":
        trained = train_direction_model(table, cfg)
    else:
        training.tune_hyperparameter(table, cfg)

    train_keys, label_end = independent_purge(table, TRAIN_END, HORIZON)
    sessions = sorted({ts for _, ts in train_keys})
    events = [(what, [key_of[v] for v in x[:, FEATURE_COLUMNS.index("ret_1")]]) for what, x in log]
    n_grid = len(MAX_DEPTH_GRID if kind == "random_forest" else C_GRID)
    inner = events[: 2 * 3 * n_grid]  # (fit, score) per grid value and fold
    assert [w for w, _ in inner] == ["fit", "score"] * (3 * n_grid)
    # the folds: TimeSeriesSplit(n_splits=3, gap=horizon) over the distinct training sessions
    expected = [(sessions[f[-1]], sessions[v[0]], sessions[v[-1]])
                for f, v in TimeSeriesSplit(n_splits=3, gap=HORIZON).split(np.arange(len(sessions)))]
    windows = []
    for (_, fit), (_, val) in zip(inner[0::2], inner[1::2]):
        assert set(fit) <= train_keys and set(val) <= train_keys
        assert max(ts for _, ts in fit + val) <= utc(TRAIN_END)
        last_fit, first_val = max(ts for _, ts in fit), min(ts for _, ts in val)
        # gap of at least `horizon` sessions, and every fit row's label ends before validation starts
        assert sum(last_fit < s < first_val for s in sessions) >= HORIZON
        assert all(label_end[k] < first_val for k in fit)
        windows.append((last_fit, first_val, max(ts for _, ts in val)))
    assert windows == expected * n_grid  # the same three folds for every grid value
    if kind == "random_forest":
        # then one refit on all training rows, and the out-of-sample scoring
        (what, final_fit), (what2, oos) = events[len(inner)], events[len(inner) + 1]
        assert what == "fit" and what2 == "score" and len(events) == len(inner) + 2
        assert sorted(final_fit) == sorted(train_keys) and len(final_fit) == trained.train_rows
        assert min(ts for _, ts in oos) > cfg.predict_from_ts
    else:
        assert len(events) == len(inner)


def with_pattern_after(table: pd.DataFrame, after: str, kind: str) -> pd.DataFrame:
    """Every label that uses a bar after ``after`` (its window ends later, as
    with prices after ``after``: the purged rows too) replaced by a pattern
    that favours deep trees (RF: ret_1 > 0 XOR ret_5 > 0) or weak
    regularisation (logistic: ret_5 > 0)."""
    t = table.copy()
    _, label_end = independent_purge(t, after, HORIZON)
    ends = pd.Series([label_end[k] for k in zip(t["root"], t["ts"])], index=t.index)
    late = ends.notna() & (ends > utc(after))
    up1, up5 = t["ret_1"] > 0, t["ret_5"] > 0
    pattern = (up1 ^ up5) if kind == "random_forest" else up5
    t.loc[late, "label"] = pattern[late].astype(float)
    return t


@pytest.mark.parametrize("kind", ["random_forest", "logistic"])
def test_labels_after_train_end_cannot_move_the_tuning(noise, kind):
    grid = MAX_DEPTH_GRID if kind == "random_forest" else C_GRID
    cfg = config(model=kind, tune=True)
    altered = with_pattern_after(noise, TRAIN_END, kind)
    purged = (pd.to_datetime(noise["ts"], utc=True) <= utc(TRAIN_END)) & (altered["label"] != noise["label"])
    assert purged.sum() > 0  # some rows up to train_end (the purged ones) changed too
    clean = tune_hyperparameter(noise, cfg)
    assert clean.chosen == grid[0]  # noise in sample: the simplest model wins
    # the pattern is strong enough to change the choice once those rows are training rows ...
    seen = tune_hyperparameter(altered, config(model=kind, tune=True, train_end="2018-12-20"))
    assert seen.chosen != grid[0]
    # ... yet with the real train_end the search is bit-for-bit unaffected
    blind = tune_hyperparameter(altered, cfg)
    assert blind.scores == clean.scores and blind.chosen == clean.chosen and blind.folds == clean.folds
    a, b = train_direction_model(noise, cfg), train_direction_model(altered, cfg)
    x = all_x(noise)
    assert np.array_equal(a.model.predict_proba(x), b.model.predict_proba(x))
