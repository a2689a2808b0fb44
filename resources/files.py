"""``files``: where landing files are read and reports written."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource


class FilesResource(ConfigurableResource):
    """Landing folder (``<landing_dir>/<ROOT>/<CONTRACT>.csv``), report folder and
    margin histories (``<margins_dir>/<ROOT>.csv``; catalogue margins otherwise)."""

    landing_dir: str
    reports_dir: str
    margins_dir: str = ""

    def margin_history(self, root: str) -> Path | None:
        """``<margins_dir>/<ROOT>.csv`` (LEAN format ``date,initial,maintenance``) if present."""
        path = Path(self.margins_dir) / f"{root}.csv" if self.margins_dir else None
        return path if path is not None and path.is_file() else None

    def landing(self, root: str) -> Path:
        return Path(self.landing_dir) / root

    def reports(self) -> Path:
        path = Path(self.reports_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path
