"""``tracking``: MLflow (local SQLite + artifact folder by default)."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from fbt_pipelines.stores.tracking import Tracking


class TrackingResource(ConfigurableResource):
    """MLflow at ``tracking_uri``; new experiments store artifacts under ``artifact_root``."""

    tracking_uri: str
    artifact_root: str | None = None
    ui_url: str = "http://127.0.0.1:5000"

    def get(self) -> Tracking:
        return Tracking(self.tracking_uri, Path(self.artifact_root) if self.artifact_root else None)
