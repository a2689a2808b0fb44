"""Stage 3: features, the walk-forward model (MLflow) and out-of-sample predictions.

Each asset reads its inputs, makes one call into :mod:`fbt_pipelines.usecases.ml`
and stores and describes the result. The run configs are the use cases'
settings (:class:`~fbt_pipelines.ml.dataset.LabelConfig`,
:class:`~fbt_pipelines.usecases.ml.ModelSettings`,
:class:`~fbt_pipelines.ml.monitoring.MonitoringConfig`) flattened by
:func:`domain_config`: one source of fields, defaults and descriptions.
"""

import ast
import dataclasses
import inspect
import textwrap
from typing import Any, ClassVar, Collection, Mapping, get_type_hints

from dagster import (AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext, Config, DataVersion,
                     MaterializeResult, MetadataValue, asset)
import pandas as pd
from pydantic import Field, create_model

from assets._support import WRITER_POOL, announce, date_range, md_table
from assets.partitions import market_partitions
from assets.rolls import continuous_prices
from fbt_pipelines.config import code_version
from fbt_pipelines.ml.dataset import LabelConfig
from fbt_pipelines.ml.features import FEATURE_COLUMNS
from fbt_pipelines.ml.monitoring import DRIFT_MARGIN, DRIFT_WINDOW, MonitoringConfig
from fbt_pipelines.usecases.ml import (MODEL_NAME, ModelSettings, market_features, market_predictions,
                                       read_feature_inputs, read_features_table, read_model_outputs, store_features,
                                       store_model, store_predictions, train_model)
from resources import BusResource, FilesResource, TrackingResource, WarehouseResource

__all__ = ["FeaturesConfig", "ModelConfig", "PredictionsConfig", "MODEL_NAME", "features", "model", "predictions"]


# -- run configs from the domain's settings ----------------------------------------------------------------------------

def _attribute_docs(cls: type) -> dict[str, str]:
    """``{field: its attribute docstring}`` of a dataclass, on one line each ({} when the source is unavailable)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    return {stmt.target.id: " ".join(nxt.value.value.split())
            for stmt, nxt in zip(body, body[1:])
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)}


@dataclasses.dataclass(frozen=True)
class _Leaf:
    """One run-config field: its path in the domain settings and its name in the config."""

    path: tuple[str, ...]
    name: str
    type: Any
    default: Any
    description: str | None


def _leaves(cls: type, defaults: Any, prefix: tuple[str, ...], rename: Mapping[str, str],
            exclude: Collection[str]) -> list[_Leaf]:
    hints, docs = get_type_hints(cls), _attribute_docs(cls)
    out: list[_Leaf] = []
    for f in dataclasses.fields(cls):
        path = prefix + (f.name,)
        dotted = ".".join(path)
        if dotted in exclude:
            continue
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            out += _leaves(hints[f.name], value, path, rename, exclude)
        else:
            out.append(_Leaf(path, rename.get(dotted, f.name), hints[f.name], value, docs.get(f.name)))
    return out


class DomainConfig(Config):
    """A run config whose fields are a domain settings dataclass's (see :func:`domain_config`)."""

    domain_defaults: ClassVar[Any] = None
    domain_leaves: ClassVar[tuple[_Leaf, ...]] = ()

    def domain(self) -> Any:
        """The domain settings: its defaults with this config's values (validated by the dataclass)."""
        values = {leaf.path: getattr(self, leaf.name) for leaf in self.domain_leaves}
        return _rebuild(self.domain_defaults, (), values)


def _rebuild(defaults: Any, prefix: tuple[str, ...], values: Mapping[tuple[str, ...], Any]) -> Any:
    changes = {}
    for f in dataclasses.fields(defaults):
        path = prefix + (f.name,)
        if path in values:
            changes[f.name] = values[path]
        elif any(p[:len(path)] == path for p in values):
            changes[f.name] = _rebuild(getattr(defaults, f.name), path, values)
    return dataclasses.replace(defaults, **changes)


def domain_config(name: str, settings: type, *, rename: Mapping[str, str] | None = None,
                  exclude: Collection[str] = (), doc: str | None = None) -> type[DomainConfig]:
    """A Dagster ``Config`` class whose fields are the fields of the frozen
    dataclass ``settings`` -- nested dataclasses flattened into their fields --
    with the same types, the defaults of ``settings()`` and the attribute
    docstrings as descriptions. ``rename`` (dotted path -> config field) and
    ``exclude`` (dotted paths) pick what the launchpad offers; excluded fields
    keep the domain default. ``config.domain()`` gives the settings back."""
    defaults = settings()
    leaves = _leaves(settings, defaults, (), dict(rename or {}), set(exclude))
    names = [leaf.name for leaf in leaves]
    if len(set(names)) != len(names):
        raise TypeError(f"{name}: flattened fields of {settings.__name__} collide: {names}")
    fields = {leaf.name: (leaf.type, Field(default=leaf.default, description=leaf.description)) for leaf in leaves}
    cls = create_model(name, __base__=DomainConfig, __module__=__name__, __doc__=doc or settings.__doc__, **fields)
    cls.domain_defaults = defaults
    cls.domain_leaves = tuple(leaves)
    return cls


FeaturesConfig = domain_config("FeaturesConfig", LabelConfig, doc="The label of every market's features table.")

ModelConfig = domain_config(
    "ModelConfig", ModelSettings, rename={"walk_forward.first_train_end": "train_end"},
    # set per fold by the walk-forward, or from the features table; logistic_c is not offered (yet)
    exclude=("training.train_end", "training.train_start", "training.test_end", "training.horizon",
             "training.features", "training.logistic_c"),
    doc="The walk-forward direction model: retraining schedule, window, estimator and features.")

PredictionsConfig = domain_config("PredictionsConfig", MonitoringConfig,
                                  doc="Thresholds of the predictions checks feature_drift and rolling_accuracy.")

_MONITORING = MonitoringConfig()


# -- assets ----------------------------------------------------------------------------------------------------------

@asset(
    partitions_def=market_partitions, group_name="ml", kinds={"duckdb", "pandas"}, deps=[continuous_prices],
    pool=WRITER_POOL,
    check_specs=[AssetCheckSpec("features_finite_after_warmup", asset="features",
                                description="After the 64-bar warm-up, at least 99% of feature rows are finite.")],
)
def features(context: AssetExecutionContext, config: FeaturesConfig, warehouse: WarehouseResource,
             bus: BusResource, files: FilesResource) -> MaterializeResult:
    """Per-market features (held-contract returns, volatility, EWMAC trend, RSI, ATR, distance from 60-day high/low, days to expiry and to the planned roll, roll yield, weekday, month) and the forward-return label. Cross-market features (ES, ZN returns) are joined when the model pools the markets."""
    root = context.partition_key
    with warehouse.connect() as conn:
        made = market_features(read_feature_inputs(conn, root, files.workspace(), cache=bus.get()), config.domain())
        version = store_features(conn, made)
    table = made.table
    announce(context, bus.get(), rows=len(table), data_version=version)
    return MaterializeResult(
        metadata={"rows": len(table), "date_range": date_range(table["ts"]), "features": len(FEATURE_COLUMNS),
                  "up_label_share": made.up_label_share, "labelled_rows": made.labelled_rows,
                  "prices_from_cache": made.prices_from_cache, "mean_roll_yield": made.mean_roll_yield},
        data_version=DataVersion(version),
        check_results=[AssetCheckResult(check_name="features_finite_after_warmup",
                                        passed=bool(made.finite_after_warmup >= 0.99),
                                        metadata={"finite_share": made.finite_after_warmup})],
    )


@asset(group_name="ml", kinds={"mlflow", "sklearn"}, deps=[features], pool=WRITER_POOL)
def model(context: AssetExecutionContext, config: ModelConfig, warehouse: WarehouseResource,
          tracking: TrackingResource) -> MaterializeResult:
    """Walk-forward direction classifier on every market's pooled features: retrained every K months, purged and embargoed; an MLflow parent run with a child run (and registered version) per fold, the latest with alias `champion`."""
    with warehouse.connect() as conn:
        table = read_features_table(conn)
    trained = train_model(table, config.domain(), tracking.get(), code_version=code_version(), log=context.log.info)
    with warehouse.connect() as conn:
        store_model(conn, trained)
    record, champion = trained.record, trained.champion
    folds_md = trained.runs[["fold", "version", "train_end", "predict_to", "train_rows", "test_rows", "oos_accuracy",
                             "oos_auc", "oos_log_loss", "oos_brier"]].assign(
        train_end=lambda f: f["train_end"].dt.strftime("%Y-%m-%d"),
        predict_to=lambda f: f["predict_to"].dt.strftime("%Y-%m-%d").fillna("end"))
    return MaterializeResult(metadata={
        "model": f"{trained.model_name} v{record.champion.version} (@champion)",
        "mlflow_run": MetadataValue.url(tracking.run_url(record.experiment_id, record.parent_run_id)),
        "champion_run": MetadataValue.url(tracking.run_url(record.experiment_id, record.champion.run_id)),
        "versions": ",".join(r.version for r in record.folds),
        "folds": md_table(folds_md, ".3f"),
        **{k: float(v) for k, v in trained.result.metrics.items()},
        "features_used": ",".join(trained.features), "features_left_out": ",".join(trained.left_out) or "-",
        "champion_train_end": champion.fold.train_end.strftime("%Y-%m-%d"),
        "importances": md_table(champion.trained.importances.rename("importance").reset_index()
                                .rename(columns={"index": "feature"}), ".3f"),
    })


@asset(
    partitions_def=market_partitions, group_name="ml", kinds={"duckdb", "mlflow"}, deps=[model, features],
    pool=WRITER_POOL,
    check_specs=[AssetCheckSpec("predictions_out_of_sample", asset="predictions", blocking=True,
                                description="Every prediction is later than its own model's training end plus the "
                                            "embargo."),
                 AssetCheckSpec("feature_drift", asset="predictions",
                                description=f"PSI of every feature, last {DRIFT_WINDOW} sessions vs the champion's "
                                            f"training window, below {_MONITORING.max_psi} or below {DRIFT_MARGIN:g} x "
                                            "its usual PSI (the worst of its training stretches; warns)."),
                 AssetCheckSpec("rolling_accuracy", asset="predictions",
                                description=f"Hit rate of the last {_MONITORING.accuracy_window} labelled predictions "
                                            f"at least {_MONITORING.min_rolling_accuracy} (warns).")],
)
def predictions(context: AssetExecutionContext, config: PredictionsConfig, warehouse: WarehouseResource,
                bus: BusResource) -> MaterializeResult:
    """Out-of-sample probability of an up move per session, stitched from the walk-forward folds; each row tagged with the model version and run that produced it and that model's training end."""
    root = context.partition_key
    with warehouse.connect() as conn:
        made = market_predictions(root, read_model_outputs(conn, MODEL_NAME), config.domain())
        version = store_predictions(conn, made)
    preds, monitoring = made.predictions, made.monitoring
    announce(context, bus.get(), rows=len(preds), model_version=made.champion_version)
    return MaterializeResult(
        metadata={"rows": len(preds), "date_range": date_range(preds["ts"]),
                  "model_versions": ",".join(made.model_versions), "champion_version": made.champion_version,
                  "mean_prob_up": made.mean_prob_up},
        data_version=DataVersion(version),
        check_results=[
            AssetCheckResult(check_name="predictions_out_of_sample", passed=made.out_of_sample,
                             metadata={"rows_before_embargo_end": made.before_embargo_end, "rows": len(preds)}),
            AssetCheckResult(check_name="feature_drift", severity=AssetCheckSeverity.WARN, passed=made.drift_ok,
                             metadata={"max_psi": made.max_psi, "threshold": monitoring.max_psi,
                                       "worst_feature": str(made.worst_feature),
                                       "drifting": ", ".join(f"{k} {v:.2f}" for k, v in made.drift_alarms.items())
                                                   or "none",
                                       "psi": md_table(pd.DataFrame({"psi": made.drift, "usual_psi": made.usual})
                                                       .rename_axis("feature").reset_index(), ".3f")}),
            AssetCheckResult(check_name="rolling_accuracy", severity=AssetCheckSeverity.WARN,
                             passed=made.accuracy_ok,
                             metadata={"rolling_accuracy": made.rolling_accuracy,
                                       "threshold": monitoring.min_rolling_accuracy,
                                       "window": monitoring.accuracy_window, "labelled_predictions": len(made.labelled),
                                       "oos_accuracy_all": made.oos_accuracy_all}),
        ],
    )
