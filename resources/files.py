"""``files``: the trader's workspace, landing and report folders.

The workspace holds the trader's markets, strategies and margin histories.
"""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from fbt_pipelines.usecases.workspace import Workspace


class FilesResource(ConfigurableResource):
    """Landing folder, report folder, margin histories and the trader's home.

    Landing folder ``<landing_dir>/<ROOT>/<CONTRACT>.csv``; margin histories
    ``<margins_dir>/<ROOT>.csv`` (catalogue margins otherwise); the trader's
    home ``home_dir`` (``markets.toml``, ``strategies/*.py``).
    """

    landing_dir: str
    reports_dir: str
    margins_dir: str = ""
    home_dir: str = ""

    def workspace(self) -> Workspace:
        """The trader's files as the use cases take them.

        From ``home_dir``, else the landing folder's parent.
        """
        home = Path(self.home_dir) if self.home_dir else Path(self.landing_dir).parent
        return Workspace(home, Path(self.margins_dir) if self.margins_dir else None)

    def margin_history(self, root: str) -> Path | None:
        """``<margins_dir>/<ROOT>.csv`` (LEAN format ``date,initial,maintenance``) if present."""
        return self.workspace().margin_history_file(root)

    def landing(self, root: str) -> Path:
        return Path(self.landing_dir) / root

    def reports(self) -> Path:
        path = Path(self.reports_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path
