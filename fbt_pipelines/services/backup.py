"""Back up and restore everything under ``FBT_HOME`` that is state.

- warehouse: ``EXPORT DATABASE`` (Parquet per table + schema), restored with
  ``IMPORT DATABASE`` into a fresh file;
- MLflow: the SQLite store copied with SQLite's online backup API (consistent
  even if a reader is open), artifacts copied as files;
- catalogue and margin files: ``markets.toml``, ``markets.d/``, ``margins/``;
- Dagster instance storage (``dagster/``): copied as files.

A ``manifest.json`` records, per warehouse table, the row count and an
order-independent checksum, so a restore can be verified. Take a backup while
nothing writes (the DuckDB export takes the write lock anyway).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
from pathlib import Path

import duckdb

from fbt_pipelines.services.home import FbtPaths
from fbt_pipelines.errors import FbtError

COPIED = ["markets.toml", "markets.d", "margins", "dagster"]


class BackupError(FbtError):
    """A backup or restore cannot be done (the message says why)."""


def _path_literal(path: Path) -> str:
    """A SQL string literal for a folder path: quotes doubled, control characters refused.

    EXPORT/IMPORT DATABASE take no bound parameters, hence the literal.
    """
    text = str(path.resolve())
    if any(ord(c) < 32 for c in text):
        raise BackupError(f"{text!r}: control characters in a backup path")
    return "'" + text.replace("'", "''") + "'"


def table_fingerprints(conn: duckdb.DuckDBPyConnection) -> dict[str, dict[str, int]]:
    """Row count and an order-independent content checksum per table."""
    tables = [r[0] for r in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1").fetchall()]
    out = {}
    for t in tables:
        rows, checksum = conn.execute(f'SELECT count(*), coalesce(sum(hash(t)), 0) FROM "{t}" AS t').fetchall()[0]
        out[t] = {"rows": int(rows), "checksum": int(checksum) % (1 << 63)}
    return out


def backup(paths: FbtPaths, dest: Path) -> dict:
    """Write a backup of ``paths.home`` to the new folder ``dest``; returns the manifest."""
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} exists and is not empty; choose a new folder")
    if not paths.warehouse.exists():
        raise BackupError(f"no warehouse at {paths.warehouse}: nothing to back up")
    dest.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(paths.warehouse), read_only=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        fingerprints = table_fingerprints(conn)
        conn.execute(f"EXPORT DATABASE {_path_literal(dest / 'warehouse')} (FORMAT parquet)")
    mlflow_db = paths.mlflow_dir / "mlflow.db"
    if mlflow_db.exists():
        (dest / "mlflow").mkdir()
        with sqlite3.connect(mlflow_db) as src, sqlite3.connect(dest / "mlflow" / "mlflow.db") as out:
            src.backup(out)
        if paths.mlflow_artifacts.exists():
            shutil.copytree(paths.mlflow_artifacts, dest / "mlflow" / "artifacts")
    for name in COPIED:
        src_path = paths.home / name
        if src_path.is_dir():
            shutil.copytree(src_path, dest / name)
        elif src_path.is_file():
            shutil.copy2(src_path, dest / name)
    manifest = {"created_utc": dt.datetime.now(dt.UTC).isoformat(), "source": str(paths.home),
                "warehouse": fingerprints}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def restore(src: Path, paths: FbtPaths, force: bool = False) -> dict[str, dict[str, int]]:
    """Restore a backup folder into ``paths.home`` and verify the restored warehouse.

    The warehouse is verified against the manifest. Refuses to overwrite an
    existing warehouse unless ``force``.
    """
    manifest_path = src / "manifest.json"
    if not manifest_path.is_file():
        raise BackupError(f"{src} is not an fbt backup (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    if paths.warehouse.exists() and not force:
        raise BackupError(f"{paths.warehouse} exists; restore with --force to replace it")
    paths.home.mkdir(parents=True, exist_ok=True)
    staging = paths.home / "warehouse.restoring.duckdb"
    staging.unlink(missing_ok=True)
    with duckdb.connect(str(staging)) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute(f"IMPORT DATABASE {_path_literal(src / 'warehouse')}")
        restored = table_fingerprints(conn)
    if restored != manifest["warehouse"]:
        staging.unlink(missing_ok=True)
        raise BackupError(f"restored warehouse differs from the manifest of {src}; nothing replaced")
    staging.replace(paths.warehouse)
    if (src / "mlflow").is_dir():
        shutil.rmtree(paths.mlflow_dir, ignore_errors=True)
        shutil.copytree(src / "mlflow", paths.mlflow_dir)
    for name in COPIED:
        target = paths.home / name
        if (src / name).is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(src / name, target)
        elif (src / name).is_file():
            shutil.copy2(src / name, target)
    return restored
