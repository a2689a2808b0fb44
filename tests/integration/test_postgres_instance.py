"""The production instance (deploy/postgres/dagster.yaml) on a real PostgreSQL,
running fbt's own job: 12 partitioned runs of ``continuous_market``
(``roll_schedule`` + ``continuous_prices``, both in the ``duckdb_writer`` pool)
over four markets of sample data, submitted at once to the queued run
coordinator of a fresh database; a real ``dagster-daemon`` launches them (one
process each, through fbt's code server). All succeed, none logs a DuckDB
lock/IO error, at most ``max_concurrent_runs`` are in progress at once, and
the pool's steps -- every warehouse write -- never overlap in time.

Needs PostgreSQL at FBT_PG_HOST:FBT_PG_PORT (default 127.0.0.1:5432, user
postgres). With none answering the test FAILS when ``FBT_REQUIRE_POSTGRES=1``
(set by ``.ci/run``, which starts a server when none answers) and is skipped
loudly, with the reason, on a developer machine. A fresh database with a
unique name is created and dropped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections import Counter
from pathlib import Path

import duckdb
import pytest
import yaml

from fbt_pipelines.config import REPO_ROOT
from fbt_pipelines.location.instance import POSTGRES_DEFAULTS

N_RUNS = 12  # 3 per market, 3x max_concurrent_runs: the queue must hold runs back (20 cost ~4 min in CI)
JOB = "continuous_market"
MARKETS = ("ES", "CL", "GC", "ZN")  # 3 runs each: runs of one partition also rewrite the same rows
WRITER_STEPS = ("roll_schedule", "continuous_prices")
RUN_CONFIG = {"execution": {"config": {"in_process": {}}}}  # one process per run, not one per step
LOCATION = "fbt"
TIMEOUT_S = 900  # a liveness guard for a loaded machine, not a speed check (~2 min on 2 idle cores)
LOCK_ERRORS = ("Could not set lock", "IO Error", "Conflicting lock")
REQUIRE_ENV = "FBT_REQUIRE_POSTGRES"


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
    """A fresh, uniquely named database; dropped (with its connections) afterwards.

    No server: a failure under CI (``FBT_REQUIRE_POSTGRES=1``), else a loud skip."""
    import psycopg2
    from psycopg2 import sql

    try:
        admin, error = _admin_connection(), None
    except psycopg2.OperationalError as exc:
        admin, error = None, str(exc).strip()
    if admin is None:
        s = _pg_settings()
        reason = (f"NO POSTGRESQL at {s['FBT_PG_HOST']}:{s['FBT_PG_PORT']} (user {s['FBT_PG_USER']}): "
                  f"the production-instance test did not run ({error})")
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason}; {REQUIRE_ENV}=1 (CI: .ci/run starts a server when none answers)", pytrace=False)
        warnings.warn(reason, stacklevel=1)
        pytest.skip(reason)
    name = f"fbt_pgtest_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
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
    """Stop a process we started and what it started (its own process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_code_server(port: int, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    from dagster._grpc.client import DagsterGrpcClient

    client = DagsterGrpcClient(port=port, host="127.0.0.1")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"code server exited: {log.read_text()[-3000:]}"
        try:
            client.ping("up")
            return
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.5)
    raise AssertionError(f"code server on port {port} did not answer in {timeout:.0f} s: {log.read_text()[-3000:]}")


def _submit_runs(instance, workspace_file: Path, markets: list[str]) -> list[str]:
    """Create one queued run of JOB per entry of ``markets`` (its partition) and submit them all,
    as `dagster job launch` does (fbt_pipelines' code location, through the code server)."""
    from dagster._core.definitions.selector import JobSubsetSelector
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(workspace_file)])) as process_context:
        workspace = process_context.create_request_context()
        location = workspace.get_code_location(LOCATION)
        (repo,) = location.get_repositories().values()
        remote_job = location.get_job(JobSubsetSelector(location_name=LOCATION, repository_name=repo.name,
                                                        job_name=JOB, op_selection=None))
        plan = location.get_execution_plan(remote_job, RUN_CONFIG, step_keys_to_execute=None, known_state=None,
                                           instance=instance).execution_plan_snapshot
        runs = [instance.create_run(
            job_name=JOB, run_id=None, run_config=RUN_CONFIG, resolved_op_selection=None,
            step_keys_to_execute=plan.step_keys_to_execute, op_selection=None, status=None, root_run_id=None,
            parent_run_id=None, tags={**remote_job.tags, "dagster/partition": market},
            job_snapshot=remote_job.job_snapshot, execution_plan_snapshot=plan,
            parent_job_snapshot=remote_job.parent_job_snapshot, remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(), asset_selection=None, asset_check_selection=None,
            asset_graph=repo.asset_graph) for market in markets]
        for run in runs:  # all queued within a second or two; the daemon launches them
            instance.submit_run(run.run_id, workspace)
    return [r.run_id for r in runs]


def _instance_limits() -> tuple[int, int]:
    cfg = yaml.safe_load((REPO_ROOT / "deploy/postgres/dagster.yaml").read_text())["concurrency"]
    return int(cfg["runs"]["max_concurrent_runs"]), int(cfg["pools"]["default_limit"])


@pytest.mark.slow
def test_twenty_queued_runs_of_fbt_jobs_write_the_warehouse_one_at_a_time(fbt_home, pg_database, monkeypatch,
                                                                          tmp_path):
    from click.testing import CliRunner
    from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

    from assets._support import WRITER_POOL
    from assets.rolls import continuous_prices, roll_schedule
    from fbt_pipelines.cli import main as fbt
    from fbt_pipelines.location.instance import ensure_dagster_home
    from fbt_pipelines.services import warehouse as wh

    max_runs, pool_limit = _instance_limits()
    assert pool_limit == 1 and roll_schedule.op.pool == continuous_prices.op.pool == WRITER_POOL
    _undo_env_afterwards(monkeypatch)
    monkeypatch.setenv("FBT_DAGSTER_INSTANCE", "postgres")
    monkeypatch.setenv("FBT_PG_DB", pg_database)
    home = ensure_dagster_home()  # $FBT_HOME/dagster with the postgres yaml, FBT_PG_* defaults filled in
    assert (home / "dagster.yaml").read_bytes() == (REPO_ROOT / "deploy/postgres/dagster.yaml").read_bytes()

    # fbt's code location served once (as in a deployment: `dagster api grpc`); the daemon and the
    # submitting workspace both use it, and it starts each run's process
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    port = _free_port()
    workspace_file = tmp_path / "workspace.yaml"
    workspace_file.write_text(yaml.safe_dump(
        {"load_from": [{"grpc_server": {"host": "127.0.0.1", "port": port, "location_name": LOCATION}}]}))
    logs = {name: tmp_path / f"{name}.log" for name in ("code_server", "daemon")}
    procs: list[subprocess.Popen] = []

    def start(name: str, args: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=logs[name].open("w"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        return proc

    def tail(name: str) -> str:
        return f"\n--- {name} log ---\n" + logs[name].read_text()[-3000:]

    try:
        code_server = start("code_server", [
            str(bindir / "dagster"), "api", "grpc", "-m", "fbt_pipelines.location.definitions", "-d", str(REPO_ROOT),
            "-h", "127.0.0.1", "-p", str(port), "--location-name", LOCATION, "--use-python-environment-entry-point"])
        # while it imports: the trader's data, as a trader makes it (sample bars, ingest)
        runner = CliRunner()
        for args in (["sample-data", "--markets", ",".join(MARKETS), "--start", "2023-01-03", "--end", "2023-12-29"],
                     ["ingest", str(fbt_home / "landing"), "--json"]):
            result = runner.invoke(fbt, args)
            assert result.exit_code == 0, result.output
        with DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
            instance.add_dynamic_partitions("markets", list(MARKETS))
            _wait_for_code_server(port, code_server, logs["code_server"])
            daemon = start("daemon", [str(bindir / "dagster-daemon"), "run", "-w", str(workspace_file)])

            partitions = [MARKETS[i % len(MARKETS)] for i in range(N_RUNS)]
            run_ids = _submit_runs(instance, workspace_file, partitions)
            submitted = time.time()
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline:
                runs = instance.get_runs(RunsFilter(run_ids=run_ids))
                if len(runs) == N_RUNS and all(r.is_finished for r in runs):
                    break
                assert daemon.poll() is None and code_server.poll() is None, tail("daemon") + tail("code_server")
                time.sleep(1)
            runs = instance.get_runs(RunsFilter(run_ids=run_ids))
            statuses = {r.run_id: r.status for r in runs}
            assert list(statuses.values()).count(DagsterRunStatus.SUCCESS) == N_RUNS, \
                f"after {TIMEOUT_S} s: {Counter(s.value for s in statuses.values())}" + tail("daemon")

            lock_errors, writes, pids, versions, checks, spans = [], [], {}, {}, Counter(), []
            for run in runs:
                market = run.tags["dagster/partition"]
                events = instance.all_logs(run.run_id)
                at = {e.dagster_event.event_type: e.timestamp for e in events if e.dagster_event}
                assert DagsterEventType.RUN_ENQUEUED in at, f"{run.run_id} did not pass through the queue"
                # in progress as the coordinator counts it: from its dequeue (RUN_STARTING, written by
                # the daemon before it launches the process) to the end
                spans.append((at[DagsterEventType.RUN_STARTING], at[DagsterEventType.RUN_SUCCESS]))
                lock_errors += [e.message for e in events if any(s in (e.message or "") for s in LOCK_ERRORS)]
                lock_errors += [str(e.dagster_event.event_specific_data) for e in events if e.dagster_event
                                and any(s in str(e.dagster_event.event_specific_data) for s in LOCK_ERRORS)]
                started = {e.step_key: e.timestamp for e in events
                           if e.dagster_event and e.dagster_event.event_type == DagsterEventType.STEP_START}
                ended = {e.step_key: e.timestamp for e in events
                         if e.dagster_event and e.dagster_event.event_type == DagsterEventType.STEP_SUCCESS}
                assert set(started) == set(ended) == set(WRITER_STEPS), (run.run_id, started, ended)
                writes += [(started[s], ended[s], run.run_id, s) for s in WRITER_STEPS]
                pids[run.run_id] = {e.dagster_event.pid for e in events
                                    if e.step_key and e.dagster_event and e.dagster_event.pid}
                for e in events:
                    if e.dagster_event and e.dagster_event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
                        mat = e.dagster_event.event_specific_data.materialization
                        count = mat.metadata["rows" if "rows" in mat.metadata else "rolls"].value
                        versions.setdefault((mat.asset_key.path[-1], market), set()).add(
                            (mat.tags["dagster/data_version"], count))
                    if e.dagster_event and e.dagster_event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
                        checks[e.dagster_event.event_specific_data.passed] += 1
            assert lock_errors == []
            assert checks == {True: 3 * N_RUNS}  # roll_gaps_plausible, no_gaps_at_rolls, last_segment_is_raw

            # one process per run, none of them this one
            assert all(len(p) == 1 for p in pids.values()), pids
            assert len({p for ps in pids.values() for p in ps} - {os.getpid()}) == N_RUNS

            # the run queue limit: never more than max_concurrent_runs in progress, and runs did
            # overlap (so the serialised writes below are the pool's doing)
            peak = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
            assert 2 <= peak <= max_runs, f"peak {peak} runs in progress (limit {max_runs})"
            print(f"\n{N_RUNS} runs done {max(e for _, e in spans) - submitted:.0f} s after submission; "
                  f"peak {peak} in progress; pool steps {sum(b - a for a, b, *_ in writes):.1f} s in all")
    finally:
        for proc in reversed(procs):
            _stop(proc)

    # no two pool steps (each holds the warehouse for its whole write) overlapped in time
    writes.sort()
    assert len(writes) == 2 * N_RUNS
    overlaps = [(a[2:], b[2:], round(a[1] - b[0], 3)) for a, b in zip(writes, writes[1:]) if b[0] < a[1]]
    assert overlaps == [], f"overlapping writes (run, step) pairs and seconds: {overlaps}"

    # every run of a market wrote the same data version; the warehouse holds it, whole
    with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as conn:
        for market in MARKETS:
            for table in WRITER_STEPS:
                (version, rows), = versions[(table, market)]
                assert wh.partition_version(conn, table, market) == version
                stored = conn.execute(f"SELECT count(*) FROM {table} WHERE root = ?", [market]).fetchone()[0]
                assert stored == rows > 0, (table, market, stored, rows)


def test_instance_yaml_is_chosen_by_env_and_an_operators_dagster_home_is_kept(fbt_home, monkeypatch, tmp_path):
    from fbt_pipelines.location.instance import InstanceConfigError, ensure_dagster_home

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
