"""The local Dagster instance: ``DAGSTER_HOME`` under ``FBT_HOME``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fbt_pipelines.config import REPO_ROOT, paths


def ensure_dagster_home() -> Path:
    """Point ``DAGSTER_HOME`` at ``$FBT_HOME/dagster`` (unless already set) and
    make sure the repo's ``dagster.yaml`` is there. Returns the folder."""
    home = Path(os.environ.get("DAGSTER_HOME") or paths().dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    source = REPO_ROOT / "dagster.yaml"
    target = home / "dagster.yaml"
    if source.exists() and (not target.exists() or target.read_bytes() != source.read_bytes()):
        shutil.copyfile(source, target)
    return home
