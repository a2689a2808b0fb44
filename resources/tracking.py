"""``tracking``: MLflow (local SQLite + artifact folder by default)."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from fbt_pipelines.config import DEFAULT_MLFLOW_UI_URL
from fbt_pipelines.services.tracking import Tracking, run_page_url, runs_page_url


class TrackingResource(ConfigurableResource):
    """MLflow at ``tracking_uri``; new experiments store artifacts under ``artifact_root``."""

    tracking_uri: str
    artifact_root: str | None = None
    ui_url: str = DEFAULT_MLFLOW_UI_URL
    """The MLflow UI every link points at (``FBT_MLFLOW_UI_URL`` in the code location)."""

    def get(self) -> Tracking:
        return Tracking(self.tracking_uri, Path(self.artifact_root) if self.artifact_root else None)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """Link to one run's page in the MLflow UI."""
        return run_page_url(self.ui_url, experiment_id, run_id)

    def runs_url(self, experiment_id: str) -> str:
        """Link to an experiment's runs table in the MLflow UI (not its GenAI overview)."""
        return runs_page_url(self.ui_url, experiment_id)
