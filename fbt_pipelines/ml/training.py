"""Train a direction classifier on an in-sample window; predict out of sample.

The split is by time: rows with ``ts <= train_end`` train the model, except
the last ``horizon`` sessions before ``train_end`` whose labels look past it
(purged). Predictions start after ``train_end`` plus an embargo of
``embargo_days`` calendar days.

Two model kinds (``TrainingConfig.model``): ``"random_forest"`` (default) and
``"logistic"`` (StandardScaler + LogisticRegression). With ``tune=True`` one
hyperparameter (RF ``max_depth``, logistic ``C``) is chosen from a small grid
by expanding-window time-series folds over the training rows only, scored by
log loss, and the model is then refit on all training rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score
from sklearn.model_selection import TimeSeriesSplit
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from fbt_pipelines.ml.features import FEATURE_COLUMNS

MODEL_KINDS = ("random_forest", "logistic")
MAX_DEPTH_GRID: tuple[int, ...] = (2, 3, 5, 8)
"""``max_depth`` values tried by ``tune=True`` for the random forest."""
C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
"""Inverse L2 strengths ``C`` tried by ``tune=True`` for the logistic model."""
TUNE_SPLITS = 3


@dataclass(frozen=True)
class TrainingConfig:
    """Frozen training settings (hashed into the model's MLflow run).

    The attribute docstrings are also the descriptions of the ``model``
    asset's run config (its fields and defaults come from here).
    """

    train_end: str = "2018-12-31"
    """Last date (UTC) of the training rows (purged: their labels end by it)."""
    horizon: int = 5
    """Label horizon in sessions (the features table's)."""
    embargo_days: int = 10
    """Calendar days after train_end before the first prediction."""
    n_estimators: int = 50
    """Trees per fold (small: six folds on the sample data)."""
    max_depth: int = 5
    """Depth of each tree (random_forest)."""
    min_samples_leaf: int = 50
    """Training rows per leaf at least (random_forest)."""
    seed: int = 0
    """Random state of the forest's bootstrap / the logistic solver."""
    features: tuple[str, ...] = field(default=tuple(FEATURE_COLUMNS))
    model: str = "random_forest"
    """random_forest or logistic (StandardScaler + LogisticRegression)."""
    logistic_c: float = 1.0
    """Inverse L2 strength of the logistic model when not tuned."""
    tune: bool = False
    """Choose max_depth (forest) or C (logistic) on purged inner time-series folds of each fold's training rows."""
    train_start: str | None = None
    """First date (UTC) of the training window (a rolling walk-forward window); None = all history."""
    test_end: str | None = None
    """Last date (UTC) scored and predicted (a walk-forward fold's window ends where the next model takes over)."""

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ValueError(f"model must be one of {MODEL_KINDS}, got {self.model!r}")

    def params(self) -> dict[str, object]:
        d = asdict(self)
        d["features"] = ",".join(self.features)
        return d

    @property
    def train_end_ts(self) -> pd.Timestamp:
        return pd.Timestamp(self.train_end, tz="UTC")

    @property
    def predict_from_ts(self) -> pd.Timestamp:
        """Predictions are for sessions strictly after this instant (train_end + embargo)."""
        return self.train_end_ts + pd.Timedelta(days=self.embargo_days)

    @property
    def train_start_ts(self) -> pd.Timestamp | None:
        return None if self.train_start is None else pd.Timestamp(self.train_start, tz="UTC")

    @property
    def test_end_ts(self) -> pd.Timestamp | None:
        return None if self.test_end is None else pd.Timestamp(self.test_end, tz="UTC")


@dataclass(frozen=True)
class TrainedModel:
    model: RandomForestClassifier | Pipeline
    config: TrainingConfig
    metrics: dict[str, float]
    importances: pd.Series
    train_rows: int
    test_rows: int


def split_in_out_of_sample(frame: pd.DataFrame, config: TrainingConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) rows of a features+label frame, purged and embargoed."""
    train_mask, test_mask = _split_masks(frame, config)
    return frame[train_mask], frame[test_mask]


def _split_masks(frame: pd.DataFrame, config: TrainingConfig) -> tuple[np.ndarray, np.ndarray]:
    has_features = frame[list(config.features)].notna().all(axis=1).to_numpy()
    ts = pd.to_datetime(frame["ts"], utc=True)
    after_embargo = np.asarray(ts > config.predict_from_ts)
    if config.test_end_ts is not None:
        after_embargo = after_embargo & np.asarray(ts <= config.test_end_ts)
    # purge: a training row's label (its market's next ``horizon`` rows) must end by train_end
    train = has_features & _label_known_by(frame, config) & frame["label"].notna().to_numpy()
    if config.train_start_ts is not None:
        train = train & np.asarray(ts >= config.train_start_ts)
    return train, has_features & after_embargo


def _label_end(frame: pd.DataFrame, horizon: int) -> pd.DatetimeIndex:
    """Per row (positionally): ts of the last bar its label uses (NaT past the data).

    That is the session ``horizon`` rows later in the same market.
    """
    ts = pd.to_datetime(frame["ts"], utc=True).reset_index(drop=True)
    market = (frame["root"] if "root" in frame.columns else pd.Series("", index=frame.index)).reset_index(drop=True)
    order = pd.DataFrame({"market": market, "ts": ts}).sort_values(["market", "ts"], kind="stable")
    shifted = order.groupby("market", sort=False)["ts"].shift(-horizon)
    return pd.DatetimeIndex(shifted.sort_index())  # back to row order (the index is 0..n-1)


def _label_known_by(frame: pd.DataFrame, config: TrainingConfig) -> np.ndarray:
    """Per row: is its label known by train_end?

    That is, is the session ``horizon`` rows later in the same market on or
    before train_end? (The label uses exactly those rows; counting rows, not
    calendar days, is exact across weekends and holidays.)
    """
    return np.asarray(_label_end(frame, config.horizon) <= config.train_end_ts)  # NaT -> False


def make_estimator(config: TrainingConfig, value: float | None = None) -> RandomForestClassifier | Pipeline:
    """The unfitted estimator of ``config.model``.

    ``value`` overrides the tuned hyperparameter (RF ``max_depth``, logistic
    ``C``).
    """
    if config.model == "logistic":
        c = config.logistic_c if value is None else float(value)
        return Pipeline([
            ("scale", StandardScaler()),
            ("logistic", LogisticRegression(C=c, max_iter=1000, random_state=config.seed)),
        ])
    depth = config.max_depth if value is None else int(value)
    return RandomForestClassifier(
        n_estimators=config.n_estimators, max_depth=depth,
        min_samples_leaf=config.min_samples_leaf, random_state=config.seed, n_jobs=1,
    )


def tuned_parameter(config: TrainingConfig) -> tuple[str, tuple[float, ...]]:
    """(name, grid) of the hyperparameter ``tune=True`` chooses for ``config.model``."""
    if config.model == "logistic":
        return "C", C_GRID
    return "max_depth", MAX_DEPTH_GRID


@dataclass(frozen=True)
class TuningResult:
    """Outcome of the inner time-series search.

    ``scores``: mean inner-fold log loss per grid value (lower is better);
    ``folds``: (last inner-training ts, first and last validation ts) per fold.
    """

    parameter: str
    chosen: float
    scores: dict[float, float]
    folds: list[tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp]]


def inner_folds(ts: pd.Series, label_end: pd.DatetimeIndex, horizon: int,
                n_splits: int = TUNE_SPLITS) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window folds over the training rows, as positions into ``ts``.

    Each fold is (fit rows, validation rows).

    sklearn ``TimeSeriesSplit(n_splits, gap=horizon)`` runs over the distinct
    sessions (rows of all markets at one ts fall on the same side); a fit row
    is then also dropped when its label ends on or after the first
    validation session (exact purge for markets with sparser calendars,
    where ``horizon`` own rows can span more than ``horizon`` sessions; for a
    market trading every session it drops exactly the rows the gap drops).
    Validation rows end by train_end: they are training rows.
    """
    t = pd.DatetimeIndex(pd.to_datetime(ts, utc=True))
    sessions = t.unique().sort_values()
    folds = []
    for fit_s, val_s in TimeSeriesSplit(n_splits=n_splits, gap=horizon).split(np.arange(len(sessions))):
        last_fit, first_val, last_val = sessions[fit_s[-1]], sessions[val_s[0]], sessions[val_s[-1]]
        fit_rows = np.flatnonzero(np.asarray((t <= last_fit) & (label_end < first_val)))
        val_rows = np.flatnonzero(np.asarray((t >= first_val) & (t <= last_val)))
        folds.append((fit_rows, val_rows))
    return folds


def _tune(train: pd.DataFrame, label_end: pd.DatetimeIndex, config: TrainingConfig) -> TuningResult:
    """Grid search on inner folds of ``train`` (the training rows only)."""
    name, grid = tuned_parameter(config)
    x = train[list(config.features)].to_numpy(float)
    y = train["label"].to_numpy(int)
    ts = pd.DatetimeIndex(pd.to_datetime(train["ts"], utc=True))
    folds = [(f, v) for f, v in inner_folds(train["ts"], label_end, config.horizon)
             if len(f) and len(v) and len(np.unique(y[f])) == 2]
    if not folds:
        raise ValueError("no inner fold with both classes in its fit rows; cannot tune")
    scores: dict[float, float] = {}
    for value in grid:
        losses = []
        for fit_rows, val_rows in folds:
            est = make_estimator(config, value).fit(x[fit_rows], y[fit_rows])
            losses.append(log_loss(y[val_rows], est.predict_proba(x[val_rows])[:, 1], labels=[0, 1]))
        scores[value] = float(np.mean(losses))
    chosen = min(grid, key=lambda v: scores[v])  # ties -> the earlier (simpler) grid value
    spans = [(ts[f].max(), ts[v].min(), ts[v].max()) for f, v in folds]
    return TuningResult(name, chosen, scores, spans)


def tune_hyperparameter(frame: pd.DataFrame, config: TrainingConfig) -> TuningResult:
    """The ``tune=True`` search of :func:`train_direction_model`.

    On its training rows (purged at train_end) only.
    """
    train_mask, _ = _split_masks(frame, config)
    return _tune(frame[train_mask], _label_end(frame, config.horizon)[train_mask], config)


def _importances(model: RandomForestClassifier | Pipeline, features: list[str]) -> pd.Series:
    """Feature importances of a fitted model, by feature, largest first.

    RF: impurity importances. Logistic: |coefficient| on the standardised
    features, scaled to sum to 1.
    """
    if isinstance(model, Pipeline):
        w = np.abs(model[-1].coef_.ravel())
        w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))
    else:
        w = model.feature_importances_
    return pd.Series(w, index=features).sort_values(ascending=False)


def train_direction_model(frame: pd.DataFrame, config: TrainingConfig) -> TrainedModel:
    """Fit ``config.model`` on the in-sample rows; score it on the later rows.

    Metrics (out of sample, rows with a known label): accuracy, AUC, log loss,
    Brier score, and the base rate of up moves. With ``config.tune`` also
    ``chosen_max_depth`` / ``chosen_C`` and ``tune_log_loss`` (its mean
    inner-fold log loss).
    """
    train_mask, test_mask = _split_masks(frame, config)
    train, test = frame[train_mask], frame[test_mask]
    if len(train) < 100:
        raise ValueError(f"only {len(train)} training rows before {config.train_end}; need >= 100")
    tuning = _tune(train, _label_end(frame, config.horizon)[train_mask], config) if config.tune else None
    model = make_estimator(config, tuning.chosen if tuning else None)
    model.fit(train[list(config.features)].to_numpy(float), train["label"].to_numpy(int))
    scored = test.dropna(subset=["label"])
    metrics: dict[str, float] = {"train_rows": float(len(train)), "test_rows": float(len(scored))}
    if tuning is not None:
        metrics[f"chosen_{tuning.parameter}"] = float(tuning.chosen)
        metrics["tune_log_loss"] = tuning.scores[tuning.chosen]
    if len(scored) and scored["label"].nunique() == 2:
        y = scored["label"].to_numpy(int)
        p = model.predict_proba(scored[list(config.features)].to_numpy(float))[:, 1]
        metrics.update({
            "oos_accuracy": float(accuracy_score(y, p > 0.5)),
            "oos_auc": float(roc_auc_score(y, p)),
            "oos_log_loss": float(log_loss(y, p, labels=[0, 1])),
            "oos_brier": float(brier_score_loss(y, p)),
            "oos_base_rate": float(y.mean()),
        })
    importances = _importances(model, list(config.features))
    return TrainedModel(model, config, metrics, importances, len(train), len(scored))


def predict_out_of_sample(model, features: pd.DataFrame, config: TrainingConfig,
                          model_version: str) -> pd.DataFrame:
    """Probabilities of an up move for rows after train_end + embargo only.

    And up to ``config.test_end`` when set.

    Returns root, ts, prob_up, model_version, train_end.
    """
    usable = features.dropna(subset=list(config.features))
    ts = pd.to_datetime(usable["ts"], utc=True)
    keep = ts > config.predict_from_ts
    if config.test_end_ts is not None:
        keep &= ts <= config.test_end_ts
    oos = usable[keep]
    prob = model.predict_proba(oos[list(config.features)].to_numpy(float))[:, 1] if len(oos) else np.array([])
    return pd.DataFrame({
        "root": oos["root"].to_numpy(),
        "ts": oos["ts"].to_numpy(),
        "prob_up": prob,
        "model_version": model_version,
        "train_end": config.train_end_ts,
    })
