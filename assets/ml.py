"""Stage 3: features, the walk-forward model (MLflow) and out-of-sample predictions."""

import numpy as np
import pandas as pd
from dagster import (AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext, Config, DataVersion,
                     MaterializeResult, MetadataValue, asset)

from assets._support import WRITER_POOL, announce, date_range, md_table
from assets.partitions import market_partitions
from assets.rolls import continuous_prices
from fbt_pipelines.catalog import market_spec
from fbt_pipelines.catalog.contracts import contracts_from_frame
from fbt_pipelines.futures.back_adjust import roll_yield
from fbt_pipelines.ml.dataset import feature_table
from fbt_pipelines.ml.features import (FEATURE_COLUMNS, MODEL_FEATURES, add_cross_market_features, available_features,
                                       planned_roll_dates)
from fbt_pipelines.ml.monitoring import PSI_SIGNIFICANT, feature_drift, rolling_accuracy
from fbt_pipelines.ml.training import TrainingConfig
from fbt_pipelines.ml.walk_forward import WalkForwardConfig, walk_forward
from fbt_pipelines.stores import warehouse as wh
from fbt_pipelines.stores.cached_reads import read_bars_cached, read_partition_cached
from fbt_pipelines.stores.model_tracking import log_walk_forward
from fbt_pipelines.versioning import code_version
from resources import BusResource, TrackingResource, WarehouseResource

MODEL_NAME = "fbt-direction-rf"
DRIFT_WINDOW = 250  # sessions of recent features compared with the training window
ACCURACY_WINDOW = 250  # labelled predictions in the rolling hit rate
MIN_ROLLING_ACCURACY = 0.45  # warn below this rolling hit rate (a coin scores 0.5 +- 0.03 over 250 calls)
FOLD_METRICS = ["train_rows", "test_rows", "oos_accuracy", "oos_auc", "oos_log_loss", "oos_brier", "oos_base_rate"]


class FeaturesConfig(Config):
    horizon: int = 5
    """Label horizon: sign of the held-contract return over the next N sessions."""
    dead_zone: float = 0.0
    """Forward returns with |return| below this fraction get no label (excluded from training and scoring)."""


@asset(
    partitions_def=market_partitions, group_name="ml", kinds={"duckdb", "pandas"}, deps=[continuous_prices],
    pool=WRITER_POOL,
    check_specs=[AssetCheckSpec("features_finite_after_warmup", asset="features",
                                description="After the 64-bar warm-up, at least 99% of feature rows are finite.")],
)
def features(context: AssetExecutionContext, config: FeaturesConfig, warehouse: WarehouseResource,
             bus: BusResource) -> MaterializeResult:
    """Per-market features (held-contract returns, volatility, EWMAC trend, RSI, ATR, distance from 60-day high/low, days to expiry and to the planned roll, roll yield, weekday, month) and the forward-return label. Cross-market features (ES, ZN returns) are joined when the model pools the markets."""
    root = context.partition_key
    with warehouse.connect() as conn:
        prices, cached = read_partition_cached(conn, bus.get(), "continuous_prices", root, order_by=["ts"])
        bars, _ = read_bars_cached(conn, bus.get(), root)
        contracts = contracts_from_frame(wh.read_contracts(conn, root))
        roll_dates = planned_roll_dates(prices, contracts, market_spec(root).roll_days_before)
        table = feature_table(prices, config.horizon, roll_yield(bars, prices, contracts), roll_dates,
                              config.dead_zone)
        version = wh.replace_partition(conn, "features", root, table)
    finite = table[FEATURE_COLUMNS].iloc[64:].notna().all(axis=1).mean() if len(table) > 64 else 0.0
    announce(context, bus.get(), rows=len(table), data_version=version)
    return MaterializeResult(
        metadata={"rows": len(table), "date_range": date_range(table["ts"]), "features": len(FEATURE_COLUMNS),
                  "up_label_share": float(table["label"].mean()), "labelled_rows": int(table["label"].notna().sum()),
                  "prices_from_cache": cached, "mean_roll_yield": float(table["roll_yield"].mean())},
        data_version=DataVersion(version),
        check_results=[AssetCheckResult(check_name="features_finite_after_warmup", passed=bool(finite >= 0.99),
                                        metadata={"finite_share": float(finite)})],
    )


class ModelConfig(Config):
    train_end: str = "2018-12-31"
    """Training end (UTC) of the first walk-forward fold; predictions start after it plus the embargo."""
    retrain_months: int = 12
    """Retrain every K months: fold i ends train_end + i*K months."""
    window: str = "expanding"
    """expanding (all history) or rolling (the last rolling_months months)."""
    rolling_months: int = 60
    embargo_days: int = 10
    n_estimators: int = 50
    """Trees per fold (small: six folds on the sample data)."""
    max_depth: int = 5
    min_samples_leaf: int = 50
    seed: int = 0
    model: str = "random_forest"
    """random_forest or logistic."""
    tune: bool = False
    """Choose max_depth (forest) or C (logistic) on purged inner time-series folds of each fold's training rows."""
    cross_market: bool = True
    """Add the ES and ZN 5/20-session returns as features of every market (left out when not in the warehouse)."""

    def training(self, horizon: int, features: list[str]) -> TrainingConfig:
        return TrainingConfig(train_end=self.train_end, horizon=horizon, embargo_days=self.embargo_days,
                              n_estimators=self.n_estimators, max_depth=self.max_depth,
                              min_samples_leaf=self.min_samples_leaf, seed=self.seed, features=tuple(features),
                              model=self.model, tune=self.tune)

    def walk_forward(self) -> WalkForwardConfig:
        return WalkForwardConfig(first_train_end=self.train_end, retrain_months=self.retrain_months,
                                 window=self.window, rolling_months=self.rolling_months)


def pooled_features(table: pd.DataFrame, cross_market: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """Every market's features with the cross-market columns, and the model's
    feature list (the candidates with at least one finite value)."""
    if not cross_market:
        return table, available_features(table, FEATURE_COLUMNS)
    pooled = add_cross_market_features(table)
    return pooled, available_features(pooled, MODEL_FEATURES)


@asset(group_name="ml", kinds={"mlflow", "sklearn"}, deps=[features], pool=WRITER_POOL)
def model(context: AssetExecutionContext, config: ModelConfig, warehouse: WarehouseResource,
          tracking: TrackingResource) -> MaterializeResult:
    """Walk-forward direction classifier on every market's pooled features: retrained every K months, purged and embargoed; an MLflow parent run with a child run (and registered version) per fold, the latest with alias `champion`."""
    with warehouse.connect() as conn:
        table = wh.read_table(conn, "features", order_by=["root", "ts"])
    horizon = int(table["horizon"].iloc[0])
    pooled, feats = pooled_features(table, config.cross_market)
    left_out = [c for c in (MODEL_FEATURES if config.cross_market else FEATURE_COLUMNS) if c not in feats]
    base = config.training(horizon, feats)
    wf = config.walk_forward()
    context.log.info(f"walk-forward on {table['root'].nunique()} markets, {len(table)} rows, {len(feats)} features "
                     f"(left out: {left_out}), first train_end={config.train_end}, every {config.retrain_months} months")
    result = walk_forward(pooled, base, wf)
    markets = ",".join(sorted(table["root"].unique()))
    record = log_walk_forward(tracking.get(), result, MODEL_NAME, pooled.dropna(subset=feats),
                              params={**wf.params(), "horizon": horizon, "model": config.model,
                                      "n_estimators": config.n_estimators, "features": ",".join(feats),
                                      "left_out": ",".join(left_out) or "-"},
                              tags={"markets": markets, "code_version": code_version()})
    fold_rows = pd.DataFrame([{
        "model_name": MODEL_NAME, "fold": fr.fold.fold, "version": rec.version, "run_id": rec.run_id,
        "parent_run_id": record.parent_run_id, "train_start": fr.fold.config.train_start_ts,
        "train_end": fr.fold.train_end, "predict_from": fr.fold.predict_from, "predict_to": fr.fold.predict_to,
        "embargo_days": base.embargo_days, "horizon": horizon, "window": wf.window, "features": ",".join(feats),
        **{k: float(fr.trained.metrics.get(k, np.nan)) for k in FOLD_METRICS},
    } for fr, rec in zip(result.folds, record.folds)])
    fold_rows["train_start"] = pd.to_datetime(fold_rows["train_start"], utc=True)
    fold_rows["predict_to"] = pd.to_datetime(fold_rows["predict_to"], utc=True)
    version_of = {rec.fold: rec for rec in record.folds}
    preds = result.predictions.assign(
        model_name=MODEL_NAME,
        model_version=[version_of[f].version for f in result.predictions["fold"]],
        run_id=[version_of[f].run_id for f in result.predictions["fold"]],
    )[["model_name", "root", "ts", "prob_up", "model_version", "run_id", "fold", "train_end"]]
    with warehouse.connect() as conn:
        wh.replace_partition(conn, "model_runs", MODEL_NAME, fold_rows)
        wh.replace_partition(conn, "model_predictions", MODEL_NAME, preds)
    url = tracking.ui_url
    champion = result.latest
    folds_md = fold_rows[["fold", "version", "train_end", "predict_to", "train_rows", "test_rows", "oos_accuracy",
                          "oos_auc", "oos_log_loss", "oos_brier"]].assign(
        train_end=lambda f: f["train_end"].dt.strftime("%Y-%m-%d"),
        predict_to=lambda f: f["predict_to"].dt.strftime("%Y-%m-%d").fillna("end"))
    return MaterializeResult(metadata={
        "model": f"{MODEL_NAME} v{record.champion.version} (@champion)",
        "mlflow_run": MetadataValue.url(f"{url}/#/experiments/{record.experiment_id}/runs/{record.parent_run_id}"),
        "champion_run": MetadataValue.url(f"{url}/#/experiments/{record.experiment_id}/runs/{record.champion.run_id}"),
        "versions": ",".join(r.version for r in record.folds),
        "folds": md_table(folds_md, ".3f"),
        **{k: float(v) for k, v in result.metrics.items()},
        "features_used": ",".join(feats), "features_left_out": ",".join(left_out) or "-",
        "champion_train_end": champion.fold.train_end.strftime("%Y-%m-%d"),
        "importances": md_table(champion.trained.importances.rename("importance").reset_index()
                                .rename(columns={"index": "feature"}), ".3f"),
    })


class PredictionsConfig(Config):
    accuracy_window: int = ACCURACY_WINDOW
    """Labelled predictions in the rolling hit rate of the rolling_accuracy check."""
    min_rolling_accuracy: float = MIN_ROLLING_ACCURACY
    """The rolling_accuracy check warns below this hit rate."""
    max_psi: float = PSI_SIGNIFICANT
    """The feature_drift check warns at or above this PSI."""


@asset(
    partitions_def=market_partitions, group_name="ml", kinds={"duckdb", "mlflow"}, deps=[model, features],
    pool=WRITER_POOL,
    check_specs=[AssetCheckSpec("predictions_out_of_sample", asset="predictions", blocking=True,
                                description="Every prediction is later than its own model's training end plus the "
                                            "embargo."),
                 AssetCheckSpec("feature_drift", asset="predictions",
                                description=f"PSI of every feature, last {DRIFT_WINDOW} sessions vs the champion's "
                                            f"training window, below {PSI_SIGNIFICANT} (warns)."),
                 AssetCheckSpec("rolling_accuracy", asset="predictions",
                                description=f"Hit rate of the last {ACCURACY_WINDOW} labelled predictions at least "
                                            f"{MIN_ROLLING_ACCURACY} (warns).")],
)
def predictions(context: AssetExecutionContext, config: PredictionsConfig, warehouse: WarehouseResource,
                bus: BusResource) -> MaterializeResult:
    """Out-of-sample probability of an up move per session, stitched from the walk-forward folds; each row tagged with the model version and run that produced it and that model's training end."""
    root = context.partition_key
    with warehouse.connect() as conn:
        folds = wh.read_partition(conn, "model_runs", MODEL_NAME, order_by=["fold"])
        stitched = wh.read_partition(conn, "model_predictions", MODEL_NAME, order_by=["root", "ts"])
        preds = stitched[stitched["root"] == root].drop(columns=["model_name"]).reset_index(drop=True)
        all_features = wh.read_table(conn, "features", order_by=["root", "ts"])
        version = wh.replace_partition(conn, "predictions", root, preds)
    # out of sample: each row after its own fold's train_end + embargo
    by_fold = folds.set_index("fold")
    allowed = pd.to_datetime(by_fold.loc[preds["fold"], "predict_from"].to_numpy(), utc=True)
    leaks = int((pd.to_datetime(preds["ts"], utc=True).to_numpy() <= allowed).sum())
    mine = folds["features"].iloc[-1].split(",")
    pooled = add_cross_market_features(all_features) if any(c not in FEATURE_COLUMNS for c in mine) else all_features
    table = pooled[pooled["root"] == root].reset_index(drop=True)
    latest = folds.iloc[-1]
    ts = pd.to_datetime(table["ts"], utc=True)
    in_training = ts <= pd.Timestamp(latest["train_end"])
    if pd.notna(latest["train_start"]):
        in_training &= ts >= pd.Timestamp(latest["train_start"])
    drift = feature_drift(table[in_training], table.tail(DRIFT_WINDOW), mine)
    worst = drift.idxmax() if drift.notna().any() else None
    max_psi = float(drift.max()) if worst else 0.0
    labelled = preds.assign(ts=pd.to_datetime(preds["ts"], utc=True)).merge(
        table.assign(ts=ts)[["ts", "label"]], on="ts", how="left")
    known = labelled.dropna(subset=["label"])
    acc = rolling_accuracy(known["label"], known["prob_up"], config.accuracy_window)
    latest_acc = float(acc.iloc[-1]) if len(acc) and pd.notna(acc.iloc[-1]) else float("nan")
    announce(context, bus.get(), rows=len(preds), model_version=str(latest["version"]))
    return MaterializeResult(
        metadata={"rows": len(preds), "date_range": date_range(preds["ts"]),
                  "model_versions": ",".join(sorted(preds["model_version"].unique(), key=int)),
                  "champion_version": str(latest["version"]),
                  "mean_prob_up": float(preds["prob_up"].mean()) if len(preds) else float("nan")},
        data_version=DataVersion(version),
        check_results=[
            AssetCheckResult(check_name="predictions_out_of_sample", passed=leaks == 0 and len(preds) > 0,
                             metadata={"rows_before_embargo_end": leaks, "rows": len(preds)}),
            AssetCheckResult(check_name="feature_drift", severity=AssetCheckSeverity.WARN,
                             passed=bool(drift.fillna(0).max() < config.max_psi),
                             metadata={"max_psi": max_psi, "threshold": config.max_psi,
                                       "worst_feature": str(worst), "psi": md_table(drift.rename("psi").reset_index()
                                                                                  .rename(columns={"index": "feature"}), ".3f")}),
            AssetCheckResult(check_name="rolling_accuracy", severity=AssetCheckSeverity.WARN,
                             passed=bool(not latest_acc < config.min_rolling_accuracy),
                             metadata={"rolling_accuracy": latest_acc, "threshold": config.min_rolling_accuracy,
                                       "window": config.accuracy_window, "labelled_predictions": len(known),
                                       "oos_accuracy_all": float(((known["prob_up"] > 0.5) == (known["label"] > 0.5))
                                                                 .mean()) if len(known) else float("nan")}),
        ],
    )
