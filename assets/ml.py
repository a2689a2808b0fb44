"""Stage 3: features, the trained model (MLflow) and out-of-sample predictions."""

import pandas as pd
from dagster import (AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext, Config, DataVersion,
                     MaterializeResult, MetadataValue, asset)

from assets._support import WRITER_POOL, announce, date_range, md_table
from assets.partitions import market_partitions
from assets.rolls import continuous_prices
from fbt_pipelines.catalog.contracts import contracts_from_frame
from fbt_pipelines.futures.back_adjust import roll_yield
from fbt_pipelines.ml.dataset import feature_table
from fbt_pipelines.ml.features import FEATURE_COLUMNS
from fbt_pipelines.ml.monitoring import PSI_SIGNIFICANT, feature_drift
from fbt_pipelines.ml.training import TrainingConfig, predict_out_of_sample, train_direction_model
from fbt_pipelines.stores import warehouse as wh
from fbt_pipelines.stores.cached_reads import read_bars_cached, read_partition_cached
from fbt_pipelines.versioning import code_version
from resources import BusResource, TrackingResource, WarehouseResource

MODEL_NAME = "fbt-direction-rf"
DRIFT_WINDOW = 250  # sessions of recent features compared with the training window


class FeaturesConfig(Config):
    horizon: int = 5
    """Label horizon: sign of the held-contract return over the next N sessions."""


@asset(
    partitions_def=market_partitions, group_name="ml", kinds={"duckdb", "pandas"}, deps=[continuous_prices],
    pool=WRITER_POOL,
    check_specs=[AssetCheckSpec("features_finite_after_warmup", asset="features",
                                description="After the 64-bar warm-up, at least 99% of feature rows are finite.")],
)
def features(context: AssetExecutionContext, config: FeaturesConfig, warehouse: WarehouseResource,
             bus: BusResource) -> MaterializeResult:
    """Per-market features (held-contract returns, volatility, EWMAC trend, distance from highs, days to expiry, roll yield) and the forward-return label."""
    root = context.partition_key
    with warehouse.connect() as conn:
        prices, cached = read_partition_cached(conn, bus.get(), "continuous_prices", root, order_by=["ts"])
        bars, _ = read_bars_cached(conn, bus.get(), root)
        contracts = contracts_from_frame(wh.read_contracts(conn, root))
        table = feature_table(prices, config.horizon, roll_yield(bars, prices, contracts))
        version = wh.replace_partition(conn, "features", root, table)
    finite = table[FEATURE_COLUMNS].iloc[64:].notna().all(axis=1).mean() if len(table) > 64 else 0.0
    announce(context, bus.get(), rows=len(table), data_version=version)
    return MaterializeResult(
        metadata={"rows": len(table), "date_range": date_range(table["ts"]), "features": len(FEATURE_COLUMNS),
                  "up_label_share": float(table["label"].mean()), "prices_from_cache": cached,
                  "mean_roll_yield": float(table["roll_yield"].mean())},
        data_version=DataVersion(version),
        check_results=[AssetCheckResult(check_name="features_finite_after_warmup", passed=bool(finite >= 0.99),
                                        metadata={"finite_share": float(finite)})],
    )


class ModelConfig(Config):
    train_end: str = "2018-12-31"
    """Last date (UTC) of the in-sample window; predictions start after it plus the embargo."""
    embargo_days: int = 10
    n_estimators: int = 200
    max_depth: int = 5
    min_samples_leaf: int = 50
    seed: int = 0
    model: str = "random_forest"
    """random_forest or logistic."""
    tune: bool = False
    """Choose max_depth (forest) or C (logistic) on purged inner time-series folds of the training rows."""

    def training(self, horizon: int) -> TrainingConfig:
        # every field here is a TrainingConfig field of the same name
        return TrainingConfig(horizon=horizon, **self.model_dump())


@asset(group_name="ml", kinds={"mlflow", "sklearn"}, deps=[features], pool=WRITER_POOL)
def model(context: AssetExecutionContext, config: ModelConfig, warehouse: WarehouseResource,
          tracking: TrackingResource) -> MaterializeResult:
    """RandomForest direction classifier trained on every market's in-sample features; logged to MLflow and registered with alias `champion`."""
    with warehouse.connect() as conn:
        table = wh.read_table(conn, "features", order_by=["root", "ts"])
    horizon = int(table["horizon"].iloc[0])
    training = config.training(horizon)
    context.log.info(f"training on {table['root'].nunique()} markets, {len(table)} rows, train_end={config.train_end}")
    trained = train_direction_model(table, training)
    client = tracking.get()
    registered = client.log_training(trained, MODEL_NAME, table.dropna(subset=list(training.features)),
                                     tags={"markets": ",".join(sorted(table["root"].unique())),
                                           "code_version": code_version()})
    run_row = pd.DataFrame([{"model_name": MODEL_NAME, "version": registered.version, "run_id": registered.run_id,
                             "train_end": training.train_end_ts, "embargo_days": training.embargo_days,
                             "horizon": horizon, **{k: v for k, v in trained.metrics.items()}}])
    with warehouse.connect() as conn:
        wh.replace_partition(conn, "model_runs", MODEL_NAME, run_row)
    runs_url = f"{tracking.ui_url}/#/experiments/{registered.experiment_id}/runs/{registered.run_id}"
    return MaterializeResult(metadata={
        "model": f"{MODEL_NAME} v{registered.version} (@champion)",
        "mlflow_run": MetadataValue.url(runs_url),
        "oos_auc": trained.metrics.get("oos_auc", float("nan")),
        "oos_accuracy": trained.metrics.get("oos_accuracy", float("nan")),
        "train_rows": trained.train_rows, "test_rows": trained.test_rows,
        "importances": md_table(trained.importances.rename("importance").reset_index()
                                .rename(columns={"index": "feature"}), ".3f"),
    })


@asset(
    partitions_def=market_partitions, group_name="ml", kinds={"duckdb", "mlflow"}, deps=[model, features],
    pool=WRITER_POOL,
    check_specs=[AssetCheckSpec("predictions_out_of_sample", asset="predictions", blocking=True,
                                description="Every prediction is later than its model's training end plus the embargo."),
                 AssetCheckSpec("feature_drift", asset="predictions",
                                description=f"PSI of every feature, last {DRIFT_WINDOW} sessions vs the training "
                                            f"window, below {PSI_SIGNIFICANT} (warns).")],
)
def predictions(context: AssetExecutionContext, warehouse: WarehouseResource, tracking: TrackingResource,
                bus: BusResource) -> MaterializeResult:
    """Out-of-sample probability of an up move per session, tagged with the model version and its training end."""
    root = context.partition_key
    estimator, registered = tracking.get().load_champion(MODEL_NAME)
    with warehouse.connect() as conn:
        run = wh.read_partition(conn, "model_runs", MODEL_NAME)
        run = run[run["version"] == registered.version].iloc[0]
        table, _ = read_partition_cached(conn, bus.get(), "features", root, order_by=["ts"])
        training = TrainingConfig(train_end=pd.Timestamp(run["train_end"]).strftime("%Y-%m-%d"),
                                  horizon=int(run["horizon"]), embargo_days=int(run["embargo_days"]))
        preds = predict_out_of_sample(estimator, table, training, registered.version)
        version = wh.replace_partition(conn, "predictions", root, preds)
    earliest_allowed = training.predict_from_ts
    leaks = int((pd.to_datetime(preds["ts"], utc=True) <= earliest_allowed).sum())
    ts = pd.to_datetime(table["ts"], utc=True)
    drift = feature_drift(table[ts <= training.train_end_ts], table.tail(DRIFT_WINDOW), list(training.features))
    worst = drift.idxmax() if drift.notna().any() else None
    announce(context, bus.get(), rows=len(preds), model_version=registered.version)
    return MaterializeResult(
        metadata={"rows": len(preds), "date_range": date_range(preds["ts"]), "model_version": registered.version,
                  "mean_prob_up": float(preds["prob_up"].mean()) if len(preds) else float("nan")},
        data_version=DataVersion(version),
        check_results=[
            AssetCheckResult(check_name="predictions_out_of_sample", passed=leaks == 0 and len(preds) > 0,
                             metadata={"rows_before_embargo_end": leaks, "rows": len(preds)}),
            AssetCheckResult(check_name="feature_drift", severity=AssetCheckSeverity.WARN,
                             passed=bool(drift.fillna(0).max() < PSI_SIGNIFICANT),
                             metadata={"max_psi": float(drift.max()) if worst else 0.0,
                                       "worst_feature": str(worst), "psi": md_table(drift.rename("psi").reset_index()
                                                                                  .rename(columns={"index": "feature"}), ".3f")}),
        ],
    )
