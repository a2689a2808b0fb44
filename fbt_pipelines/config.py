"""Where fbt keeps its local state, and how it finds Redis.

All local state lives under one folder, ``FBT_HOME`` (default ``<repo>/.fbt``):

- ``warehouse.duckdb``   the DuckDB warehouse (single source of truth)
- ``mlflow/``            MLflow SQLite backend (``mlflow.db``) and artifacts
- ``dagster/``           ``DAGSTER_HOME``: the instance's runs and event logs
- ``landing/``           per-contract bar files waiting to be ingested
- ``reports/``           tear sheets (HTML, plotly bundle beside them)
- ``redis/``             data folder of a Redis started by fbt itself

This module is plain Python (no Dagster) so the CLI, the code location and the
tests agree on the same paths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class FbtPaths:
    """Resolved local-state paths under ``home``."""

    home: Path

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{(self.mlflow_dir / 'mlflow.db').as_posix()}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def redis_dir(self) -> Path:
        return self.home / "redis"

    @property
    def numba_cache(self) -> Path:
        return self.home / "numba-cache"


def fbt_home() -> Path:
    """``FBT_HOME`` if set, else ``<repo>/.fbt`` (absolute)."""
    return Path(os.environ.get("FBT_HOME") or REPO_ROOT / ".fbt").resolve()


def paths() -> FbtPaths:
    """Paths for the current ``FBT_HOME`` (read on every call, so tests can switch)."""
    return FbtPaths(fbt_home())


def redis_url() -> str:
    """``REDIS_URL`` if set, else ``redis://127.0.0.1:6379/0``."""
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


# Numba writes its on-disk cache next to the sources unless told otherwise; keep
# it under FBT_HOME so nothing lands outside it. Must run before numba imports.
os.environ.setdefault("NUMBA_CACHE_DIR", str(paths().numba_cache))
