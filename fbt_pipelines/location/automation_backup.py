"""The scheduled backup of ``FBT_HOME`` (Dagster wiring).

``backup_job`` and the ``nightly_backup`` schedule (03:00 UTC, ships stopped).

The op runs in the ``duckdb_writer`` pool, so no asset writes the warehouse
while it is exported (the backup is consistent while nothing writes).
"""


from pathlib import Path

from dagster import Config, DefaultScheduleStatus, MetadataValue, OpExecutionContext, Output, job, op, schedule
from pydantic import Field

from assets._support import WRITER_POOL
from fbt_pipelines.config import paths
from fbt_pipelines.services.backup_rotation import backup_and_rotate, default_backup_root


class BackupConfig(Config):
    """Where the backups go and how many are kept."""

    keep_last: int = Field(default=7, description="Backups kept under the backup folder; older ones are deleted.")
    backup_root: str = Field(default="", description="Folder of the timestamped backups (default $FBT_HOME/backups).")


@op(pool=WRITER_POOL)
def backup_fbt_home(context: OpExecutionContext, config: BackupConfig) -> Output[str]:
    """Back up FBT_HOME into ``<backup_root>/<UTC timestamp>-<run id>``.

    Backs up the warehouse export, MLflow store, catalogue and Dagster
    storage; keeps the newest ``keep_last`` backups.
    """
    p = paths()
    root = Path(config.backup_root) if config.backup_root else default_backup_root(p)
    done = backup_and_rotate(p, root, config.keep_last, tag=context.run_id.split("-")[0])
    tables = done.manifest["warehouse"]
    context.log.info(f"backup of {p.home} in {done.path}: {len(tables)} tables, "
                     f"{sum(t['rows'] for t in tables.values()):,} rows; pruned {len(done.pruned)} old backup(s)")
    return Output(str(done.path), metadata={
        "path": MetadataValue.path(str(done.path)), "tables": len(tables),
        "rows": sum(t["rows"] for t in tables.values()), "pruned": MetadataValue.json([str(x) for x in done.pruned]),
    })


@job(description="Back up FBT_HOME into $FBT_HOME/backups/<UTC timestamp>, keeping the newest N.")
def backup_job():
    backup_fbt_home()


@schedule(job=backup_job, cron_schedule="0 3 * * *", execution_timezone="UTC",
          default_status=DefaultScheduleStatus.STOPPED)
def nightly_backup(_context):
    """03:00 UTC every day: a backup of FBT_HOME with the default config (keep 7)."""
    return {}
