"""Where fbt keeps its local state, and how it finds Redis.

All local state lives under one folder, ``FBT_HOME`` (default ``<repo>/.fbt``):

- ``warehouse.duckdb``   the DuckDB warehouse (single source of truth)
- ``mlflow/``            MLflow SQLite backend (``mlflow.db``) and artifacts
- ``dagster/``           ``DAGSTER_HOME``: the instance's runs and event logs
- ``landing/``           per-contract bar files waiting to be ingested
- ``reports/``           tear sheets (HTML, plotly bundle beside them)
- ``redis/``             data folder of a Redis started by fbt itself

This module is plain Python (no Dagster) so the CLI, the code location and the
tests agree on the same paths. It is the one place that reads the environment:
the layers below it (use cases and the domain) take paths and settings as
arguments. Importing it changes nothing; the entry points (the CLI, the code
location, the tests) call :func:`pin_process_settings`.
"""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path

from fbt_pipelines.services.home import REPO_ROOT, FbtPaths  # noqa: F401  (FbtPaths: callers' type)
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def fbt_home() -> Path:
    """``FBT_HOME`` if set, else ``<repo>/.fbt`` (absolute)."""
    return Path(os.environ.get("FBT_HOME") or REPO_ROOT / ".fbt").resolve()


def paths() -> FbtPaths:
    """Paths for the current ``FBT_HOME`` (read on every call, so tests can switch)."""
    return FbtPaths(fbt_home())


def redis_url() -> str:
    """``REDIS_URL`` if set, else ``redis://127.0.0.1:6379/0``."""
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def alert_webhook() -> str | None:
    """``FBT_ALERT_WEBHOOK``: URL for a JSON POST on a failed run or risk-limit breach.

    Unset: none.
    """
    return os.environ.get("FBT_ALERT_WEBHOOK") or None


EXECUTOR_ENV = "FBT_EXECUTOR"
EXECUTOR_MODES = ("in_process", "multiprocess", "celery")
DEFAULT_EXECUTOR = "in_process"


class ExecutorConfigError(ValueError):
    """``FBT_EXECUTOR`` or ``FBT_CELERY_DB`` holds a value fbt does not know."""


def executor_mode() -> str:
    """``FBT_EXECUTOR``: in_process (default), multiprocess or celery.

    Where a run's steps execute when its run config names no executor
    (fbt_pipelines/location/executors.py).
    """
    mode = (os.environ.get(EXECUTOR_ENV) or DEFAULT_EXECUTOR).strip().lower()
    if mode not in EXECUTOR_MODES:
        raise ExecutorConfigError(f"{EXECUTOR_ENV}={mode!r}: expected one of {', '.join(EXECUTOR_MODES)}")
    return mode


DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"


def mlflow_ui_url() -> str:
    """``FBT_MLFLOW_UI_URL``: where traders open the MLflow UI (every link uses it).

    Default ``http://127.0.0.1:5000`` (what ``fbt ui`` starts); no trailing slash.
    """
    return (os.environ.get("FBT_MLFLOW_UI_URL") or DEFAULT_MLFLOW_UI_URL).rstrip("/")


@lru_cache(maxsize=1)
def code_version() -> str:
    """Git commit of the checkout (``+dirty`` if it has local changes).

    ``unknown`` outside a git checkout.
    """
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def pin_process_settings() -> None:
    """Process-wide settings an entry point pins before Numba loads.

    Numba's on-disk cache under ``FBT_HOME`` (it writes next to the sources
    otherwise).
    """
    os.environ.setdefault("NUMBA_CACHE_DIR", str(paths().numba_cache))
