"""Timestamped backups under one folder, keeping the newest N.

``$FBT_HOME/backups/<YYYYmmddTHHMMSS.ffffffZ>-<tag>/`` each hold one
:func:`fbt_pipelines.services.backup.backup`; names sort in time order (UTC).
Only folders that look like ours (that name pattern and a ``manifest.json``)
are ever pruned.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from fbt_pipelines.services.home import FbtPaths
from fbt_pipelines.services.backup import BackupError, backup

NAME = re.compile(r"^\d{8}T\d{6}(\.\d{6})?Z(-[0-9A-Za-z]+)?$")


@dataclass(frozen=True)
class RotatedBackup:
    """Where the new backup went, its manifest, and the old backups removed."""

    path: Path
    manifest: dict
    pruned: list[Path]


def default_backup_root(paths: FbtPaths) -> Path:
    return paths.home / "backups"


def list_backups(root: Path) -> list[Path]:
    """fbt backup folders under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and NAME.match(p.name) and (p / "manifest.json").is_file())


def backup_and_rotate(paths: FbtPaths, root: Path, keep_last: int, tag: str = "",
                      now: dt.datetime | None = None) -> RotatedBackup:
    """Back up ``paths.home`` into ``root/<UTC timestamp>[-tag]``, then prune old backups.

    Deletes all but the newest ``keep_last`` backups under ``root``.
    """
    if keep_last < 1:
        raise BackupError(f"keep_last={keep_last}: keep at least one backup")
    if tag and not re.fullmatch(r"[0-9A-Za-z]+", tag):
        raise BackupError(f"backup tag {tag!r}: letters and digits only")
    stamp = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = root / (f"{stamp}-{tag}" if tag else stamp)
    manifest = backup(paths, dest)
    existing = list_backups(root)
    pruned = existing[:-keep_last] if len(existing) > keep_last else []
    for old in pruned:
        shutil.rmtree(old)
    return RotatedBackup(dest, manifest, pruned)
