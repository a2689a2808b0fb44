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
    """Frozen training settings (hashed into the model's MLflow run)."""

    train_end: str = "2018-12-31"
    horizon: int = 5
    embargo_days: int = 10
    n_estimators: int = 200
    max_depth: int = 5
    min_samples_leaf: int = 50
    seed: int = 0
    features: tuple[str, ...] = field(default=tuple(FEATURE_COLUMNS))
    model: str = "random_forest"
    """``"random_forest"`` or ``"logistic"`` (StandardScaler + LogisticRegression)."""
    logistic_c: float = 1.0
    """Inverse L2 strength of the logistic model when not tuned."""
    tune: bool = False
    """Choose max_depth (RF) or C (logistic) on inner time-series folds of the training rows."""

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
        return self.train_end_ts + pd.Timedelta(days=self.embargo_days)


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
    after_embargo = (pd.to_datetime(frame["ts"], utc=True) > config.predict_from_ts).to_numpy()
    # purge: a training row's label (its market's next ``horizon`` rows) must end by train_end
    train = has_features & _label_known_by(frame, config) & frame["label"].notna().to_numpy()
    return train, has_features & after_embargo


def _label_end(frame: pd.DataFrame, horizon: int) -> pd.DatetimeIndex:
    """Per row (positionally): ts of the session ``horizon`` rows later in the
    same market, the last bar its label uses (NaT past the data)."""
    ts = pd.to_datetime(frame["ts"], utc=True).reset_index(drop=True)
    market = (frame["root"] if "root" in frame.columns else pd.Series("", index=frame.index)).reset_index(drop=True)
    order = pd.DataFrame({"market": market, "ts": ts}).sort_values(["market", "ts"], kind="stable")
    shifted = order.groupby("market", sort=False)["ts"].shift(-horizon)
    return pd.DatetimeIndex(shifted.sort_index())  # back to row order (the index is 0..n-1)


def _label_known_by(frame: pd.DataFrame, config: TrainingConfig) -> np.ndarray:
    """Per row: is the session ``horizon`` rows later in the same market on or
    before train_end? (The label uses exactly those rows; counting rows, not
    calendar days, is exact across weekends and holidays.)"""
    return np.asarray(_label_end(frame, config.horizon) <= config.train_end_ts)  # NaT -> False


def train_direction_model(frame: pd.DataFrame, config: TrainingConfig) -> TrainedModel:
    """Fit a RandomForest on the in-sample rows; score it on the later rows.

    Metrics (out of sample, rows with a known label): accuracy, AUC, log loss,
    Brier score, and the base rate of up moves.
    """
    train, test = split_in_out_of_sample(frame, config)
    if len(train) < 100:
        raise ValueError(f"only {len(train)} training rows before {config.train_end}; need >= 100")
    model = RandomForestClassifier(
        n_estimators=config.n_estimators, max_depth=config.max_depth,
        min_samples_leaf=config.min_samples_leaf, random_state=config.seed, n_jobs=1,
    )
    model.fit(train[list(config.features)].to_numpy(float), train["label"].to_numpy(int))
    scored = test.dropna(subset=["label"])
    metrics: dict[str, float] = {"train_rows": float(len(train)), "test_rows": float(len(scored))}
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
    importances = pd.Series(model.feature_importances_, index=list(config.features)).sort_values(ascending=False)
    return TrainedModel(model, config, metrics, importances, len(train), len(scored))


def predict_out_of_sample(model, features: pd.DataFrame, config: TrainingConfig,
                          model_version: str) -> pd.DataFrame:
    """Probabilities of an up move for rows after train_end + embargo only.

    Returns root, ts, prob_up, model_version, train_end.
    """
    usable = features.dropna(subset=list(config.features))
    ts = pd.to_datetime(usable["ts"], utc=True)
    oos = usable[ts > config.predict_from_ts]
    prob = model.predict_proba(oos[list(config.features)].to_numpy(float))[:, 1] if len(oos) else np.array([])
    return pd.DataFrame({
        "root": oos["root"].to_numpy(),
        "ts": oos["ts"].to_numpy(),
        "prob_up": prob,
        "model_version": model_version,
        "train_end": config.train_end_ts,
    })
