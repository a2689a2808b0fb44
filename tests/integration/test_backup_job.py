"""The scheduled backup: backup_job runs through Dagster into
$FBT_HOME/backups/<UTC timestamp>-<run>, keeps the newest N, and what it wrote
restores with the same row counts (counted here by SQL, not by the manifest)."""

import datetime as dt
import shutil

import duckdb
from click.testing import CliRunner
from dagster import DagsterInstance, DefaultScheduleStatus, build_schedule_context

from fbt_pipelines.location.automation_backup import backup_job, nightly_backup
from fbt_pipelines.catalog import market_spec
from fbt_pipelines.cli import main
from fbt_pipelines.config import paths
from fbt_pipelines.marketdata.sample_data import write_sample_data
from fbt_pipelines.services.backup import restore
from fbt_pipelines.services.backup_rotation import list_backups


def _row_counts() -> dict[str, int]:
    with duckdb.connect(str(paths().warehouse), read_only=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


def test_backup_job_keeps_the_newest_and_restores(fbt_home, tmp_path):
    write_sample_data(paths().landing, [market_spec("ES")], dt.date(2019, 1, 2), dt.date(2019, 6, 28))
    assert CliRunner().invoke(main, ["ingest", str(paths().landing / "ES")]).exit_code == 0
    before = _row_counts()
    assert before["bars"] > 100

    instance = DagsterInstance.ephemeral()
    config = {"ops": {"backup_fbt_home": {"config": {"keep_last": 2}}}}
    made = []
    for _ in range(3):
        result = backup_job.execute_in_process(run_config=config, instance=instance)
        assert result.success
        made.append(result.output_for_node("backup_fbt_home"))
        with duckdb.connect(str(paths().warehouse)) as conn:  # a later write must not reach older backups
            conn.execute("INSERT INTO quarantine VALUES ('x', 'f', 1, 'raw', 'later write')")
    kept = list_backups(fbt_home / "backups")
    assert [str(p) for p in kept] == made[1:]  # oldest pruned, names sort in time order
    assert all(p.parent == fbt_home / "backups" for p in kept)

    first_kept = kept[0]
    shutil.rmtree(fbt_home / "dagster", ignore_errors=True)
    paths().warehouse.unlink()
    restore(first_kept, paths())
    # second backup was taken after one extra quarantine row
    assert _row_counts() == {**before, "quarantine": before["quarantine"] + 1}


def test_nightly_backup_ships_stopped_at_three_utc():
    assert nightly_backup.default_status == DefaultScheduleStatus.STOPPED
    assert nightly_backup.cron_schedule == "0 3 * * *" and nightly_backup.execution_timezone == "UTC"
    ctx = build_schedule_context(scheduled_execution_time=dt.datetime(2026, 1, 5, 3, tzinfo=dt.UTC))
    assert nightly_backup.evaluate_tick(ctx).run_requests[0].job_name in (None, backup_job.name)
