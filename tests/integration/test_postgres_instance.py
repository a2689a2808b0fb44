"""The production instance (deploy/postgres/dagster.yaml) on a real PostgreSQL:
20 runs submitted at once go through the queue, the daemon launches them (one
process each), the duckdb_writer pool serialises their warehouse writes, all
succeed, and no run's event log holds a DuckDB lock error.

Needs PostgreSQL at FBT_PG_HOST:FBT_PG_PORT (default 127.0.0.1:5432, user
postgres); skipped, with the reason, when none answers. A fresh database with
a unique name is created and dropped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import duckdb
import pytest

from fbt_pipelines.config import REPO_ROOT
from fbt_pipelines.instance import POSTGRES_DEFAULTS

N_RUNS = 20
MAX_CONCURRENT_RUNS = 4  # deploy/postgres/dagster.yaml
TIMEOUT_S = 240
LOCK_ERRORS = ("Could not set lock", "IO Error", "Conflicting lock")


def _pg_settings() -> dict[str, str]:
    return {k: os.environ.get(k) or v for k, v in POSTGRES_DEFAULTS.items()}


def _admin_connection():
    import psycopg2

    s = _pg_settings()
    conn = psycopg2.connect(host=s["FBT_PG_HOST"], port=int(s["FBT_PG_PORT"]), user=s["FBT_PG_USER"],
                            password=s["FBT_PG_PASSWORD"] or None, dbname="postgres", connect_timeout=3)
    conn.autocommit = True
    return conn


@pytest.fixture
def pg_database():
    """A fresh, uniquely named database; dropped (with its connections) afterwards."""
    import psycopg2

    try:
        admin = _admin_connection()
    except psycopg2.OperationalError as exc:
        s = _pg_settings()
        reason = (f"NO POSTGRESQL at {s['FBT_PG_HOST']}:{s['FBT_PG_PORT']} (user {s['FBT_PG_USER']}): "
                  f"the production-instance test did not run ({str(exc).strip()})")
        warnings.warn(reason, stacklevel=1)
        pytest.skip(reason)
    name = f"fbt_pgtest_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')  # name is ours: hex only
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _undo_env_afterwards(monkeypatch: pytest.MonkeyPatch) -> None:
    """ensure_dagster_home sets DAGSTER_HOME and FBT_PG_* in os.environ: restore them after the test."""
    for name in ["DAGSTER_HOME", "FBT_DAGSTER_INSTANCE", *POSTGRES_DEFAULTS]:
        value = os.environ.get(name)
        monkeypatch.setenv(name, "placeholder")
        if value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)


def _stop(proc: subprocess.Popen) -> None:
    """Stop the daemon and what it started (its own process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_twenty_queued_runs_write_the_warehouse_one_at_a_time(fbt_home, pg_database, monkeypatch, tmp_path):
    from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

    from assets._support import WRITER_POOL
    from fbt_pipelines.instance import ensure_dagster_home
    from tests.integration import pg_writer_location

    assert pg_writer_location.POOL == WRITER_POOL
    _undo_env_afterwards(monkeypatch)
    monkeypatch.setenv("FBT_DAGSTER_INSTANCE", "postgres")
    monkeypatch.setenv("FBT_PG_DB", pg_database)
    monkeypatch.setenv("FBT_WAREHOUSE", str(fbt_home / "warehouse.duckdb"))
    monkeypatch.setenv("FBT_PGTEST_RUNS", str(N_RUNS))
    home = ensure_dagster_home()  # $FBT_HOME/dagster with the postgres yaml, FBT_PG_* defaults filled in
    assert (home / "dagster.yaml").read_bytes() == (REPO_ROOT / "deploy/postgres/dagster.yaml").read_bytes()

    bindir = Path(sys.executable).parent
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [str(bindir / "dagster-daemon"), "run", "-m", "tests.integration.pg_writer_location", "-d", str(REPO_ROOT)],
        cwd=REPO_ROOT, env={**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        with DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline:
                runs = instance.get_runs()
                if len(runs) >= N_RUNS and all(r.is_finished for r in runs):
                    break
                assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
                time.sleep(1)
            runs = instance.get_runs()
            assert len(runs) == N_RUNS, f"{len(runs)} runs after {TIMEOUT_S} s; daemon log:\n" + \
                (tmp_path / "daemon.log").read_text()[-3000:]
            statuses = {r.run_id: r.status for r in runs}
            assert set(statuses.values()) == {DagsterRunStatus.SUCCESS}, statuses

            lock_errors, records = [], instance.get_run_records(RunsFilter(run_ids=list(statuses)))
            for run_id in statuses:
                events = instance.all_logs(run_id)
                kinds = {e.dagster_event.event_type for e in events if e.dagster_event}
                assert DagsterEventType.PIPELINE_ENQUEUED in kinds, f"{run_id} did not pass through the queue"
                lock_errors += [e.message for e in events if any(s in (e.message or "") for s in LOCK_ERRORS)]
                lock_errors += [str(e.dagster_event.event_specific_data) for e in events if e.dagster_event
                                and any(s in str(e.dagster_event.event_specific_data) for s in LOCK_ERRORS)]
            assert lock_errors == []

            # the run queue limit: never more than max_concurrent_runs in progress, and runs did
            # overlap (so the serialised writes below are the pool's doing)
            spans = [(r.start_time, r.end_time) for r in records]
            peak = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
            assert 2 <= peak <= MAX_CONCURRENT_RUNS, f"peak {peak} runs in progress: the writers never overlapped"
    finally:
        _stop(daemon)
        log.close()

    # the warehouse saw every run's row, and no two writes overlapped in time
    with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as conn:
        rows = conn.execute("SELECT run_id, started, finished, pid FROM pg_probe ORDER BY started").fetchall()
    assert sorted(r[0] for r in rows) == sorted(statuses)
    assert len({r[3] for r in rows}) == N_RUNS  # one process per run
    assert all(nxt[1] >= prev[2] for prev, nxt in zip(rows, rows[1:]))


def test_instance_yaml_is_chosen_by_env_and_an_operators_dagster_home_is_kept(fbt_home, monkeypatch, tmp_path):
    from fbt_pipelines.instance import InstanceConfigError, ensure_dagster_home

    local, pg = (REPO_ROOT / "dagster.yaml").read_bytes(), (REPO_ROOT / "deploy/postgres/dagster.yaml").read_bytes()
    _undo_env_afterwards(monkeypatch)
    for name in ["DAGSTER_HOME", "FBT_DAGSTER_INSTANCE", *POSTGRES_DEFAULTS]:
        monkeypatch.delenv(name, raising=False)
    assert (ensure_dagster_home() / "dagster.yaml").read_bytes() == local  # default: SQLite under FBT_HOME
    assert "FBT_PG_HOST" not in os.environ
    monkeypatch.setenv("FBT_DAGSTER_INSTANCE", "postgres")
    assert (ensure_dagster_home() / "dagster.yaml").read_bytes() == pg
    assert os.environ["FBT_PG_HOST"] == "127.0.0.1" and os.environ["FBT_PG_DB"] == "fbt_dagster"

    operator_home = tmp_path / "ops_home"
    operator_home.mkdir()
    (operator_home / "dagster.yaml").write_bytes(pg)
    monkeypatch.delenv("FBT_DAGSTER_INSTANCE")
    monkeypatch.setenv("DAGSTER_HOME", str(operator_home))
    assert ensure_dagster_home() == operator_home
    assert (operator_home / "dagster.yaml").read_bytes() == pg  # not replaced by the local yaml

    monkeypatch.setenv("FBT_DAGSTER_INSTANCE", "k8s")
    with pytest.raises(InstanceConfigError, match="expected one of local, postgres"):
        ensure_dagster_home()
