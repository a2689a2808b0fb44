"""Walk-forward training: retrain every K months, each model predicting until the next.

Each model predicts only the sessions until the next one takes over. Fold i
has training end ``E_i`` (``first_train_end``, then every
``retrain_months`` months, while a later session exists). Its model trains on
rows whose label window ends on or before ``E_i`` (purge; see
:mod:`fbt_pipelines.ml.training`) -- all history (``window="expanding"``) or
the last ``rolling_months`` months (``window="rolling"``) -- and predicts the
sessions in ``(E_i + embargo, E_{i+1} + embargo]``; the last fold predicts to
the end of the data. So every prediction is strictly later than its own
model's training end plus the embargo, and the stitched predictions cover
each session once, from one model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score

from fbt_pipelines.ml.training import (TrainedModel, TrainingConfig, _label_end, _split_masks,
                                       predict_out_of_sample, train_direction_model)

WINDOWS = ("expanding", "rolling")


@dataclass(frozen=True)
class WalkForwardConfig:
    """When to retrain and how much history each model sees.

    The attribute docstrings are also the descriptions of the ``model``
    asset's run config (``first_train_end`` is its ``train_end``).
    """

    first_train_end: str = "2018-12-31"
    """Training end (UTC) of the first walk-forward fold; predictions start after it plus the embargo."""
    retrain_months: int = 12
    """Retrain every K months: fold i's training ends i*K months after the first fold's."""
    window: str = "expanding"
    """expanding (all history up to each training end) or rolling (the last rolling_months months)."""
    rolling_months: int = 60
    """Training window length of rolling (months before the training end)."""

    def __post_init__(self) -> None:
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, got {self.window!r}")
        if self.retrain_months < 1 or self.rolling_months < 1:
            raise ValueError(f"retrain_months and rolling_months must be >= 1, got "
                             f"{self.retrain_months}, {self.rolling_months}")

    def params(self) -> dict[str, object]:
        return {"first_train_end": self.first_train_end, "retrain_months": self.retrain_months,
                "window": self.window, "rolling_months": self.rolling_months}


@dataclass(frozen=True)
class Fold:
    """One walk-forward step, predicting ``predict_from < ts <= predict_to``.

    ``predict_to`` None: to the end of the data.
    """

    fold: int
    config: TrainingConfig

    @property
    def train_end(self) -> pd.Timestamp:
        return self.config.train_end_ts

    @property
    def predict_from(self) -> pd.Timestamp:
        return self.config.predict_from_ts

    @property
    def predict_to(self) -> pd.Timestamp | None:
        return self.config.test_end_ts


def plan_folds(last_ts: pd.Timestamp, base: TrainingConfig, wf: WalkForwardConfig) -> list[Fold]:
    """The folds for data ending at ``last_ts`` (UTC).

    A fold exists while some session after its embargo does; ``base`` gives
    every other setting.
    """
    ends = []
    first = pd.Timestamp(wf.first_train_end, tz="UTC")
    embargo = pd.Timedelta(days=base.embargo_days)
    # end_i = first + i*K months, counted from the first end (Dec 31 + 6 months = Jun 30, + 12 = Dec 31 again)
    while (end := first + pd.DateOffset(months=wf.retrain_months * len(ends))) + embargo < last_ts:
        ends.append(end)
    folds = []
    for i, e in enumerate(ends):
        nxt = ends[i + 1] + embargo if i + 1 < len(ends) else None
        start = (e - pd.DateOffset(months=wf.rolling_months) + pd.Timedelta(days=1)) if wf.window == "rolling" else None
        cfg = replace(base, train_end=e.strftime("%Y-%m-%d"),
                      train_start=None if start is None else start.strftime("%Y-%m-%d"),
                      test_end=None if nxt is None else nxt.strftime("%Y-%m-%d"))
        folds.append(Fold(i, cfg))
    return folds


@dataclass(frozen=True)
class FoldResult:
    fold: Fold
    trained: TrainedModel
    predictions: pd.DataFrame
    """root, ts, prob_up, fold, train_end (model version / run id are added once registered)."""
    train_rows: np.ndarray
    """Positions, in the frame given to :func:`walk_forward` sorted by (root, ts), of the rows the model was fit on."""


@dataclass(frozen=True)
class WalkForwardResult:
    folds: list[FoldResult]
    predictions: pd.DataFrame
    """Every fold's out-of-sample predictions stitched: root, ts, prob_up, fold, train_end, label."""
    metrics: dict[str, float]
    """Pooled out-of-sample scores over every fold's labelled predictions."""

    @property
    def latest(self) -> FoldResult:
        return self.folds[-1]


def oos_scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Accuracy, AUC, log loss, Brier score and base rate of rows with a known label.

    Accuracy: p > 0.5 is an up call. Empty dict when both classes are not
    present.
    """
    known = ~(np.isnan(y) | np.isnan(p))
    y, p = y[known].astype(int), p[known]
    if len(y) == 0 or len(np.unique(y)) < 2:
        return {}
    return {"oos_accuracy": float(accuracy_score(y, p > 0.5)), "oos_auc": float(roc_auc_score(y, p)),
            "oos_log_loss": float(log_loss(y, p, labels=[0, 1])), "oos_brier": float(brier_score_loss(y, p)),
            "oos_base_rate": float(y.mean()), "oos_rows": float(len(y))}


def walk_forward(frame: pd.DataFrame, base: TrainingConfig, wf: WalkForwardConfig) -> WalkForwardResult:
    """Train every fold of :func:`plan_folds` on ``frame`` and stitch their predictions.

    ``frame``: pooled features + label, any row order (it is sorted by root,
    ts first, so the forest's bootstrap and the result do not depend on it).
    The stitched predictions are the folds' out-of-sample ones.
    """
    frame = frame.sort_values(["root", "ts"], kind="stable").reset_index(drop=True)
    last = pd.to_datetime(frame["ts"], utc=True).max()
    folds = plan_folds(last, base, wf)
    if not folds:
        raise ValueError(f"no walk-forward fold: the data end {last:%Y-%m-%d} is not after "
                         f"{wf.first_train_end} + {base.embargo_days} days")
    results = []
    for fold in folds:
        trained = train_direction_model(frame, fold.config)
        train_mask, _ = _split_masks(frame, fold.config)
        preds = predict_out_of_sample(trained.model, frame, fold.config, model_version="")
        preds = preds.drop(columns=["model_version"]).assign(fold=fold.fold)
        results.append(FoldResult(fold, trained, preds, np.flatnonzero(train_mask)))
    stitched = pd.concat([r.predictions for r in results], ignore_index=True)
    labels = frame[["root", "ts", "label"]].assign(ts=pd.to_datetime(frame["ts"], utc=True))
    stitched = stitched.assign(ts=pd.to_datetime(stitched["ts"], utc=True)).merge(labels, on=["root", "ts"], how="left")
    metrics = oos_scores(stitched["label"].to_numpy(float), stitched["prob_up"].to_numpy(float))
    metrics["folds"] = float(len(results))
    return WalkForwardResult(results, stitched.sort_values(["root", "ts"], ignore_index=True), metrics)


def label_end(frame: pd.DataFrame, horizon: int) -> pd.DatetimeIndex:
    """Per row of ``frame`` (positionally): the last session its label uses."""
    return _label_end(frame.reset_index(drop=True), horizon)
