"""The Dagster instance: ``DAGSTER_HOME`` under ``FBT_HOME``, SQLite or PostgreSQL.

Two instance configurations ship with fbt:

- ``local`` (default): the repo-root ``dagster.yaml``, SQLite storage under
  ``$FBT_HOME/dagster``;
- ``postgres``: ``deploy/postgres/dagster.yaml``, run/event-log/schedule
  storage in PostgreSQL, chosen with ``FBT_DAGSTER_INSTANCE=postgres``. Its
  connection comes from ``FBT_PG_HOST``/``FBT_PG_PORT``/``FBT_PG_USER``/
  ``FBT_PG_PASSWORD``/``FBT_PG_DB``; unset ones get the defaults in
  :data:`POSTGRES_DEFAULTS`.

``DAGSTER_HOME`` set by the caller wins: fbt then only copies the chosen
yaml there when that folder has none (an operator's own yaml is never
overwritten unless it is one of fbt's, kept in sync).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fbt_pipelines.config import REPO_ROOT, paths

INSTANCE_ENV = "FBT_DAGSTER_INSTANCE"
INSTANCE_FILES = {
    "local": REPO_ROOT / "dagster.yaml",
    "postgres": REPO_ROOT / "deploy" / "postgres" / "dagster.yaml",
}
POSTGRES_DEFAULTS = {
    "FBT_PG_HOST": "127.0.0.1",
    "FBT_PG_PORT": "5432",
    "FBT_PG_USER": "postgres",
    "FBT_PG_PASSWORD": "",
    "FBT_PG_DB": "fbt_dagster",
}


class InstanceConfigError(ValueError):
    """``FBT_DAGSTER_INSTANCE`` names no known instance configuration."""


def instance_kind() -> str:
    """``FBT_DAGSTER_INSTANCE`` (``local`` or ``postgres``), default ``local``."""
    kind = (os.environ.get(INSTANCE_ENV) or "local").strip().lower()
    if kind not in INSTANCE_FILES:
        raise InstanceConfigError(f"{INSTANCE_ENV}={kind!r}: expected one of {', '.join(sorted(INSTANCE_FILES))}")
    return kind


def set_postgres_env_defaults() -> dict[str, str]:
    """Fill unset ``FBT_PG_*`` variables with :data:`POSTGRES_DEFAULTS`.

    Returns the values in effect.
    """
    for name, value in POSTGRES_DEFAULTS.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in POSTGRES_DEFAULTS}


def ensure_dagster_home() -> Path:
    """Point ``DAGSTER_HOME`` at ``$FBT_HOME/dagster``, ensure an instance yaml is there.

    ``DAGSTER_HOME`` is only pointed there when not already set. Returns the
    folder.

    fbt keeps the yaml of its own folder (``$FBT_HOME/dagster``) in sync with
    the configuration ``FBT_DAGSTER_INSTANCE`` names. A ``DAGSTER_HOME`` the
    caller set is the operator's: its ``dagster.yaml`` is only written when
    missing or when ``FBT_DAGSTER_INSTANCE`` is set explicitly.
    """
    kind = instance_kind()
    chosen_home = os.environ.get("DAGSTER_HOME")
    home = Path(chosen_home or paths().dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    source = INSTANCE_FILES[kind]
    target = home / "dagster.yaml"
    managed = not chosen_home or bool(os.environ.get(INSTANCE_ENV))
    if source.exists() and (not target.exists() or (managed and target.read_bytes() != source.read_bytes())):
        shutil.copyfile(source, target)
    if target.exists() and b"FBT_PG_" in target.read_bytes():
        set_postgres_env_defaults()
    return home


def ensure_instance_storage() -> Path:
    """:func:`ensure_dagster_home`, then create the storage schemas in this process.

    Call before starting several Dagster processes on a new instance (the
    webserver and the daemon of ``fbt ui``, a test's webserver beside its own
    materializations): each would otherwise create the SQLite tables itself,
    and the loser of that race stops with ``table bulk_actions already
    exists``. Returns the ``DAGSTER_HOME`` folder.
    """
    from dagster import DagsterInstance

    home = ensure_dagster_home()
    with DagsterInstance.get() as instance:  # run, event-log and schedule storage: each creates its tables
        instance.get_runs_count()
        instance.get_dynamic_partitions("markets")
        instance.all_instigator_state()
    return home
