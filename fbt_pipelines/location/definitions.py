"""The fbt code location: assets, checks, resources, jobs, schedules, sensors.

Resources are chosen here, once: local defaults under ``FBT_HOME`` unless the
environment names other services (``REDIS_URL``, ``MLFLOW_TRACKING_URI``,
``FBT_WAREHOUSE``), passed as ``EnvVar`` so their values never show in the UI.
"""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar, load_assets_from_modules

from fbt_pipelines.config import paths  # noqa: E402  (before the assets: see below)
from fbt_pipelines.usecases.workspace import Workspace

# the trader's strategy files are registered before the assets' config descriptions list the strategies
Workspace(paths().home).strategies()

import assets.backtests  # noqa: E402
import assets.catalog
import assets.intraday
import assets.intraday_features
import assets.intraday_portfolio
import assets.intraday_sweep
import assets.ml
import assets.portfolio
import assets.raw_bars
import assets.rolls
import assets.sweeps
from assets.sweep_fanout import ChunkParquetIOManager
from fbt_pipelines.location.request_batches import backtest_requests_job
from fbt_pipelines.location.sweep_fanout import sweep_fanout
from fbt_pipelines.location.automation import (backtest_job, backtest_request_sensor, catalog_job, check_failure_alert,
                                               continuous_job, daily_ingest,
                                      ingest_job, landing_files_sensor, portfolio_job, run_failure_alert, train_job)
from fbt_pipelines.location.automation_backup import backup_job, nightly_backup
from fbt_pipelines.location.automation_ml import model_retrain_sensor
from fbt_pipelines.config import DEFAULT_REDIS_URL, mlflow_ui_url
from fbt_pipelines.location.executors import fbt_executor
from fbt_pipelines.location.intraday import intraday_job
from resources import BusResource, FilesResource, TrackingResource, WarehouseResource


def _env_or(name: str, default: str):
    return EnvVar(name) if os.environ.get(name) else default


def local_resources() -> dict[str, object]:
    """Resources for this machine: state under FBT_HOME, services from the environment."""
    p = paths()
    return {
        "warehouse": WarehouseResource(database=_env_or("FBT_WAREHOUSE", str(p.warehouse))),
        "bus": BusResource(url=_env_or("REDIS_URL", DEFAULT_REDIS_URL)),
        "tracking": TrackingResource(tracking_uri=_env_or("MLFLOW_TRACKING_URI", p.mlflow_tracking_uri),
                                     ui_url=mlflow_ui_url(),
                                     artifact_root=str(p.mlflow_artifacts)),
        "files": FilesResource(landing_dir=str(p.landing), reports_dir=str(p.reports), home_dir=str(p.home),
                               margins_dir=str(p.home / "margins")),
        "sweep_io": ChunkParquetIOManager(base_dir=str(p.home / "scratch")),
    }


ALL_ASSETS = load_assets_from_modules(
    [assets.catalog, assets.raw_bars, assets.rolls, assets.ml, assets.backtests, assets.sweeps, assets.portfolio,
     assets.intraday, assets.intraday_features, assets.intraday_portfolio, assets.intraday_sweep]
)

def build_defs() -> Definitions:
    """The code location with the resources of the environment as it is now."""
    return Definitions(
        assets=ALL_ASSETS,
        jobs=[catalog_job, ingest_job, continuous_job, train_job, backtest_job, portfolio_job, sweep_fanout, backup_job,
              backtest_requests_job, intraday_job],
        schedules=[daily_ingest, nightly_backup],
        sensors=[landing_files_sensor, backtest_request_sensor, run_failure_alert, check_failure_alert,
                 model_retrain_sensor],
        resources=local_resources(),
        executor=fbt_executor,  # in_process | multiprocess | celery: run config or FBT_EXECUTOR
    )


defs = build_defs()

_ENVIRONMENT = ("FBT_HOME", "FBT_WAREHOUSE", "REDIS_URL", "MLFLOW_TRACKING_URI")
_built: dict[tuple, Definitions] = {}


def current_defs() -> Definitions:
    """``defs`` for the environment of this moment.

    The same as ``defs`` unless ``FBT_HOME`` or a service variable changed
    since import (one process that runs jobs for several homes: the tests, or
    a CLI command after it moved).
    """
    key = tuple(os.environ.get(k) for k in _ENVIRONMENT)
    if key not in _built:
        _built[key] = build_defs()
    return _built[key]
