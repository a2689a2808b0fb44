"""Features, training and predictions of the direction model.

One function per step, for the ``features``, ``model`` and ``predictions``
assets (and any command that does the same):

- :func:`market_features`: a market's features table (features, planned roll
  dates, roll yield, forward-return label) from its continuous prices and bars;
- :func:`train_model`: the walk-forward model on every market's pooled
  features (cross-market returns joined), logged to MLflow (one parent run,
  a child run and registered version per fold, the latest ``champion``),
  with the fold table and the stitched out-of-sample predictions to store;
- :func:`market_predictions`: one market's stitched predictions and what their
  checks read (rows before their model's embargo end, feature drift against
  the champion's training window, rolling hit rate).

``read_*`` and ``store_*`` are the warehouse side of each step. Times are UTC
throughout; returns and thresholds are fractions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.contracts import Contract
from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.errors import DataError
from fbt_pipelines.futures.back_adjust import roll_yield
from fbt_pipelines.ml.dataset import LabelConfig, feature_table
from fbt_pipelines.ml.features import (FEATURE_COLUMNS, MODEL_FEATURES, add_cross_market_features, available_features,
                                       planned_roll_dates)
from fbt_pipelines.ml.monitoring import (DRIFT_WINDOW, MonitoringConfig, drift_alarms, feature_drift, rolling_accuracy,
                                         usual_drift)
from fbt_pipelines.ml.training import TrainingConfig
from fbt_pipelines.ml.walk_forward import FoldResult, WalkForwardConfig, WalkForwardResult, walk_forward
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.services.model_tracking import WalkForwardRecord, log_walk_forward
from fbt_pipelines.usecases.continuous import market_contracts
from fbt_pipelines.usecases.workspace import Workspace

if TYPE_CHECKING:
    from fbt_pipelines.services.bus import Bus
    from fbt_pipelines.services.tracking import Tracking

MODEL_NAME = "fbt-direction-rf"
"""Registered model name of the walk-forward direction classifier (and the warehouse key of its folds)."""
WARMUP_BARS = 64
"""Bars before every feature can be finite (the slowest is the 64-bar EWMA of ewmac_16_64)."""
FOLD_METRICS = ["train_rows", "test_rows", "oos_accuracy", "oos_auc", "oos_log_loss", "oos_brier", "oos_base_rate"]
"""Per-fold metrics stored in ``model_runs`` (NaN when a fold has none)."""


# -- features --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FeatureInputs:
    """What one market's features are built from.

    ``prices``: the continuous (Panama) series (ts UTC, contract, adjusted OHLC
    in points, raw_close); ``bars``: every contract's daily bars (for the roll
    yield); ``contracts``: the market's contracts (expiries, roll references);
    ``prices_from_cache``: the prices came from the Redis cache.
    """

    root: str
    spec: ContractSpec
    prices: pd.DataFrame
    bars: pd.DataFrame
    contracts: Sequence[Contract]
    prices_from_cache: bool = False


def read_feature_inputs(conn, root: str, workspace: Workspace, cache: Bus | None = None) -> FeatureInputs:
    """A market's continuous prices, bars, contracts and spec, as features need them.

    Prices, bars and contracts come from the warehouse (through the Redis cache
    when ``cache`` is a bus), the spec from the trader's workspace (built-in or
    the trader's own market).
    """
    spec = workspace.market(root)
    if cache is not None:
        from fbt_pipelines.services.cached_reads import read_bars_cached, read_partition_cached

        prices, cached = read_partition_cached(conn, cache, "continuous_prices", root, order_by=["ts"])
        bars, _ = read_bars_cached(conn, cache, root)
    else:
        prices, cached = wh.read_partition(conn, "continuous_prices", root, order_by=["ts"]), False
        bars = wh.read_bars(conn, root)
    if prices.empty:
        raise DataError(f"no continuous prices for {root}: materialize continuous_prices first")
    return FeatureInputs(root, spec, prices, bars, market_contracts(conn, spec, bars), cached)


@dataclass(frozen=True)
class MarketFeatures:
    """One market's features table, one row per session of the continuous series.

    Columns: root, ts, :data:`FEATURE_COLUMNS`, label, horizon, dead_zone.
    """

    root: str
    table: pd.DataFrame
    label: LabelConfig
    prices_from_cache: bool = False

    @property
    def labelled_rows(self) -> int:
        return int(self.table["label"].notna().sum())

    @property
    def up_label_share(self) -> float:
        """Share of labelled rows whose label is an up move (NaN with no label)."""
        return float(self.table["label"].mean())

    @property
    def mean_roll_yield(self) -> float:
        """Mean annualised roll yield (fraction per year; NaN without a second contract)."""
        return float(self.table["roll_yield"].mean())

    @property
    def finite_after_warmup(self) -> float:
        """Share of rows after the first :data:`WARMUP_BARS` with every feature finite.

        0 when there is no such row.
        """
        if len(self.table) <= WARMUP_BARS:
            return 0.0
        return float(self.table[FEATURE_COLUMNS].iloc[WARMUP_BARS:].notna().all(axis=1).mean())


def market_features(inputs: FeatureInputs, label: LabelConfig = LabelConfig()) -> MarketFeatures:
    """The features table of ``inputs``' market.

    Planned (calendar) roll dates from the contracts and the market's
    ``roll_days_before``, the roll yield from the bars, the features and the
    forward-return label.
    """
    roll_dates = planned_roll_dates(inputs.prices, inputs.contracts, inputs.spec.roll_days_before)
    carry = roll_yield(inputs.bars, inputs.prices, inputs.contracts)
    table = feature_table(inputs.prices, label.horizon, carry, roll_dates, label.dead_zone)
    return MarketFeatures(inputs.root, table, label, inputs.prices_from_cache)


def store_features(conn, features: MarketFeatures) -> str:
    """Replace the market's ``features`` rows; returns their data version."""
    return wh.replace_partition(conn, "features", features.root, features.table)


# -- training --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSettings:
    """What the trader chooses for the walk-forward model.

    The attribute docstrings and defaults here and in the two configs are the
    ``model`` asset's run config (flattened).
    """

    walk_forward: WalkForwardConfig = WalkForwardConfig()
    """When to retrain and how much history each fold's model sees."""
    training: TrainingConfig = TrainingConfig()
    """Every other training setting; its train_end, train_start and test_end are set per fold,
    its horizon (the features table's) and features (those with a finite value) by :func:`train_model`."""
    cross_market: bool = True
    """Add the ES and ZN 5/20-session returns as features of every market (left out when not in the warehouse)."""


@dataclass(frozen=True)
class PooledFeatures:
    """Every market's features and which of them the model uses.

    Every market's features (with the cross-market columns when asked), the
    model's features (the candidates with a finite value) and those left out.
    """

    table: pd.DataFrame
    features: list[str]
    left_out: list[str]


def pooled_features(table: pd.DataFrame, cross_market: bool = True) -> PooledFeatures:
    """Pool every market's ``features`` rows for the model (see :class:`PooledFeatures`)."""
    candidates = MODEL_FEATURES if cross_market else FEATURE_COLUMNS
    pooled = add_cross_market_features(table) if cross_market else table
    feats = available_features(pooled, candidates)
    return PooledFeatures(pooled, feats, [c for c in candidates if c not in feats])


def read_features_table(conn) -> pd.DataFrame:
    """Every market's ``features`` rows, by root and ts."""
    table = wh.read_table(conn, "features", order_by=["root", "ts"])
    if table.empty:
        raise DataError("no features in the warehouse: materialize features first")
    return table


@dataclass(frozen=True)
class TrainedWalkForward:
    """A walk-forward training, logged to MLflow.

    ``runs``: one ``model_runs`` row per fold (model_name, fold, registered
    version, run ids, train_start/train_end/predict_from/predict_to UTC,
    embargo_days, horizon, window, features, :data:`FOLD_METRICS`);
    ``predictions``: the stitched out-of-sample predictions as
    ``model_predictions`` stores them (model_name, root, ts, prob_up,
    model_version, run_id, fold, train_end).
    """

    model_name: str
    settings: ModelSettings
    base: TrainingConfig
    """The training config every fold starts from (horizon and features filled in)."""
    pooled: PooledFeatures = field(repr=False)
    result: WalkForwardResult = field(repr=False)
    record: WalkForwardRecord
    runs: pd.DataFrame = field(repr=False)
    predictions: pd.DataFrame = field(repr=False)

    @property
    def champion(self) -> FoldResult:
        """The latest fold (its registered version carries the alias ``champion``)."""
        return self.result.latest

    @property
    def features(self) -> list[str]:
        return self.pooled.features

    @property
    def left_out(self) -> list[str]:
        return self.pooled.left_out

    @property
    def horizon(self) -> int:
        return self.base.horizon


def train_model(table: pd.DataFrame, settings: ModelSettings, tracking: Tracking, *, code_version: str,
                model_name: str = MODEL_NAME, log: Callable[[str], None] | None = None) -> TrainedWalkForward:
    """Train the walk-forward direction model on every market and log it to MLflow.

    Trains on every market's ``features`` rows (``table``: root, ts, features,
    label, horizon); the MLflow run goes to experiment ``fbt-models``, tagged
    with the markets and ``code_version``.

    ``log`` gets one line describing the plan before the (slow) training.
    """
    horizon = int(table["horizon"].iloc[0])
    pooled = pooled_features(table, settings.cross_market)
    feats = pooled.features
    wf = settings.walk_forward
    base = replace(settings.training, train_end=wf.first_train_end, horizon=horizon, features=tuple(feats))
    markets = sorted(table["root"].unique())
    if log is not None:
        log(f"walk-forward on {len(markets)} markets, {len(table)} rows, {len(feats)} features "
            f"(left out: {pooled.left_out}), first train_end={wf.first_train_end}, every {wf.retrain_months} months")
    result = walk_forward(pooled.table, base, wf)
    record = log_walk_forward(tracking, result, model_name, pooled.table.dropna(subset=feats),
                              params={**wf.params(), "horizon": horizon, "model": base.model,
                                      "n_estimators": base.n_estimators, "features": ",".join(feats),
                                      "left_out": ",".join(pooled.left_out) or "-"},
                              tags={"markets": ",".join(markets), "code_version": code_version})
    runs = _fold_rows(model_name, result, record, base, wf)
    version_of = {rec.fold: rec for rec in record.folds}
    preds = result.predictions.assign(
        model_name=model_name,
        model_version=[version_of[f].version for f in result.predictions["fold"]],
        run_id=[version_of[f].run_id for f in result.predictions["fold"]],
    )[["model_name", "root", "ts", "prob_up", "model_version", "run_id", "fold", "train_end"]]
    return TrainedWalkForward(model_name, settings, base, pooled, result, record, runs, preds)


def _fold_rows(model_name: str, result: WalkForwardResult, record: WalkForwardRecord, base: TrainingConfig,
               wf: WalkForwardConfig) -> pd.DataFrame:
    rows = pd.DataFrame([{
        "model_name": model_name, "fold": fr.fold.fold, "version": rec.version, "run_id": rec.run_id,
        "parent_run_id": record.parent_run_id, "train_start": fr.fold.config.train_start_ts,
        "train_end": fr.fold.train_end, "predict_from": fr.fold.predict_from, "predict_to": fr.fold.predict_to,
        "embargo_days": base.embargo_days, "horizon": base.horizon, "window": wf.window,
        "features": ",".join(base.features),
        **{k: float(fr.trained.metrics.get(k, np.nan)) for k in FOLD_METRICS},
    } for fr, rec in zip(result.folds, record.folds)])
    rows["train_start"] = pd.to_datetime(rows["train_start"], utc=True)
    rows["predict_to"] = pd.to_datetime(rows["predict_to"], utc=True)
    return rows


def store_model(conn, trained: TrainedWalkForward) -> None:
    """Replace the model's ``model_runs`` and ``model_predictions`` rows."""
    wh.replace_partition(conn, "model_runs", trained.model_name, trained.runs)
    wh.replace_partition(conn, "model_predictions", trained.model_name, trained.predictions)


# -- predictions -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelOutputs:
    """What a training stored, with the features the checks compare.

    ``runs`` (``model_runs``, by fold; the last is the champion), ``stitched``
    (``model_predictions`` of every market, by root and ts) and ``features``
    (every market's ``features`` rows, by root and ts).
    """

    runs: pd.DataFrame
    stitched: pd.DataFrame
    features: pd.DataFrame


def read_model_outputs(conn, model_name: str = MODEL_NAME) -> ModelOutputs:
    """The stored folds and stitched predictions of ``model_name``, and the features.

    The features are every market's stored ``features`` rows.
    """
    runs = wh.read_partition(conn, "model_runs", model_name, order_by=["fold"])
    if runs.empty:
        raise DataError(f"no trained {model_name} in the warehouse: materialize model first")
    return ModelOutputs(runs, wh.read_partition(conn, "model_predictions", model_name, order_by=["root", "ts"]),
                        wh.read_table(conn, "features", order_by=["root", "ts"]))


@dataclass(frozen=True)
class MarketPredictions:
    """One market's out-of-sample predictions and what their checks read.

    ``predictions``: root, ts, prob_up, model_version, run_id, fold, train_end;
    ``before_embargo_end``: rows not later than their own fold's train_end +
    embargo (must be 0); ``drift``: PSI per model feature, the last
    :data:`DRIFT_WINDOW` sessions against the champion's training window;
    ``rolling``: hit rate over the last ``monitoring.accuracy_window`` labelled
    predictions (by row of ``labelled``); ``labelled``: predictions with a
    known label (prob_up, label).
    """

    root: str
    predictions: pd.DataFrame
    champion_version: str
    before_embargo_end: int
    drift: pd.Series
    rolling: pd.Series
    labelled: pd.DataFrame
    monitoring: MonitoringConfig
    usual: pd.Series | None = None

    @property
    def out_of_sample(self) -> bool:
        """Some predictions, none before its model's embargo end."""
        return self.before_embargo_end == 0 and len(self.predictions) > 0

    @property
    def worst_feature(self) -> str | None:
        return str(self.drift.idxmax()) if self.drift.notna().any() else None

    @property
    def max_psi(self) -> float:
        return float(self.drift.max()) if self.worst_feature else 0.0

    @property
    def drift_alarms(self) -> pd.Series:
        """The drifting features' PSI: >= ``monitoring.max_psi`` and twice their usual PSI.

        The usual PSI (``usual``: :func:`~fbt_pipelines.ml.monitoring.usual_drift`
        of the training rows; None: ``max_psi`` alone) is what the feature
        shows with nothing wrong. Issue 20: the check was wrong, not the
        sample data: a persistent feature (``roll_yield``, a carry cycling
        over four years, PSI 4.9 on 2024 and up to 5.8 inside its own
        training years; ``atr_14`` in points) fills a few deciles in any one
        year, so PSI >= 0.25 alone fired on every market of healthy data.
        """
        usual = self.usual if self.usual is not None else pd.Series(dtype=float)
        return drift_alarms(self.drift, usual, self.monitoring.max_psi)

    @property
    def drift_ok(self) -> bool:
        """No feature drifts (see :attr:`drift_alarms`); a feature without a PSI does not."""
        return self.drift_alarms.empty

    @property
    def rolling_accuracy(self) -> float:
        """The latest rolling hit rate (NaN before a full window)."""
        return float(self.rolling.iloc[-1]) if len(self.rolling) and pd.notna(self.rolling.iloc[-1]) else float("nan")

    @property
    def accuracy_ok(self) -> bool:
        """Not below ``monitoring.min_rolling_accuracy`` (a NaN hit rate passes)."""
        return bool(not self.rolling_accuracy < self.monitoring.min_rolling_accuracy)

    @property
    def oos_accuracy_all(self) -> float:
        """Hit rate over every labelled prediction (NaN with none)."""
        known = self.labelled
        return float(((known["prob_up"] > 0.5) == (known["label"] > 0.5)).mean()) if len(known) else float("nan")

    @property
    def model_versions(self) -> list[str]:
        """Registered versions behind the predictions, oldest first."""
        return sorted(self.predictions["model_version"].unique(), key=int)

    @property
    def mean_prob_up(self) -> float:
        return float(self.predictions["prob_up"].mean()) if len(self.predictions) else float("nan")


def market_predictions(root: str, outputs: ModelOutputs,
                       monitoring: MonitoringConfig = MonitoringConfig()) -> MarketPredictions:
    """``root``'s stitched predictions, tagged with their model, and monitoring numbers.

    Each row is tagged with the model version and run that produced it. The
    monitoring numbers: rows before their fold's embargo end, feature drift
    (PSI) of the last :data:`DRIFT_WINDOW` sessions against the champion's
    training window, and the rolling hit rate of the labelled predictions.
    """
    runs, stitched = outputs.runs, outputs.stitched
    preds = stitched[stitched["root"] == root].drop(columns=["model_name"]).reset_index(drop=True)
    # out of sample: each row after its own fold's train_end + embargo
    allowed = pd.to_datetime(runs.set_index("fold").loc[preds["fold"], "predict_from"].to_numpy(), utc=True)
    leaks = int((pd.to_datetime(preds["ts"], utc=True).to_numpy() <= allowed).sum())
    champion = runs.iloc[-1]
    used = champion["features"].split(",")
    all_features = outputs.features
    pooled = add_cross_market_features(all_features) if any(c not in FEATURE_COLUMNS for c in used) else all_features
    table = pooled[pooled["root"] == root].reset_index(drop=True)
    ts = pd.to_datetime(table["ts"], utc=True)
    in_training = ts <= pd.Timestamp(champion["train_end"])
    if pd.notna(champion["train_start"]):
        in_training &= ts >= pd.Timestamp(champion["train_start"])
    drift = feature_drift(table[in_training], table.tail(DRIFT_WINDOW), used)
    labelled = preds.assign(ts=pd.to_datetime(preds["ts"], utc=True)).merge(
        table.assign(ts=ts)[["ts", "label"]], on="ts", how="left")
    known = labelled.dropna(subset=["label"])
    rolling = rolling_accuracy(known["label"], known["prob_up"], monitoring.accuracy_window)
    usual = usual_drift(table[in_training], used)
    return MarketPredictions(root, preds, str(champion["version"]), leaks, drift, rolling,
                             known[["ts", "prob_up", "label"]], monitoring, usual)


def store_predictions(conn, predictions: MarketPredictions) -> str:
    """Replace the market's ``predictions`` rows; returns their data version."""
    return wh.replace_partition(conn, "predictions", predictions.root, predictions.predictions)
