"""``files``: where landing files are read and reports written."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource


class FilesResource(ConfigurableResource):
    """Landing folder (``<landing_dir>/<ROOT>/<CONTRACT>.csv``) and report folder."""

    landing_dir: str
    reports_dir: str

    def landing(self, root: str) -> Path:
        return Path(self.landing_dir) / root

    def reports(self) -> Path:
        path = Path(self.reports_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path
