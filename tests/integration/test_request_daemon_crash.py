"""50 queued backtest requests through a real ``dagster-daemon`` that is
SIGKILLed (its whole process group) twice: every request is backtested in
exactly one batch run and gets exactly one ``backtest_done`` event.

The sensor turns the requests of a tick into one batch run (here at most 10
a batch, ``FBT_REQUEST_BATCH=10``, so 50 requests make several batches over
several ticks). The crash points are where a request can be lost or doubled:

1. right after the sensor has read requests from the consumer group, mostly
   before Dagster has created their batch run (an acknowledgement here would
   lose them; a new batch made of them later would run them twice), else
   just after it (which of the two is printed);
2. once the daemon has created the first batch runs (the other requests are
   still queued or pending).

The instance is fbt's production one (``deploy/postgres/dagster.yaml``,
``FBT_DAGSTER_INSTANCE=postgres``) on a fresh PostgreSQL database: a
long-running daemon is what it is for. No PostgreSQL: a loud skip, or a
failure with ``FBT_REQUIRE_POSTGRES=1``.

So that a kill never hits a run in execution (a killed run worker stays
STARTED for ever: fbt's instances have no run monitoring), the daemon runs
with ``max_concurrent_runs: 0`` in that yaml until both kills are done: runs
are created and queued, none launched. Then it runs on fbt's yaml unchanged
until every run has finished.

The code location is fbt's with the bus on a private key prefix (a file
written here, ``-f``), on the test Redis; FBT_HOME and DAGSTER_HOME are the
test's own. The warehouse holds three years of sample ES bars with their
continuous series (``fbt sample-data``, ``fbt ingest``, ``fbt continuous``).
Each request has its own ``fast`` parameter, and each result is checked
against the same backtest computed here from the warehouse.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections import Counter
from pathlib import Path

import duckdb
import pytest
import redis

from fbt_pipelines.config import REPO_ROOT
from fbt_pipelines.location.instance import POSTGRES_DEFAULTS
from fbt_pipelines.services.bus import Bus
from tests.conftest import delete_prefix

N = 50
BATCH = 10  # FBT_REQUEST_BATCH of the daemon: 50 requests make at least 5 batch runs
BIN = Path(sys.executable).parent
SENSOR = "backtest_request_sensor"
LOCATION = '''"""fbt's code location with the bus on the key prefix {prefix!r} (test_request_daemon_crash)."""
from dagster import Definitions, EnvVar

from fbt_pipelines.location.definitions import build_defs, local_resources
from resources import BusResource



def _with_private_bus(fbt: Definitions) -> Definitions:
    bus = BusResource(url=EnvVar("REDIS_URL"), prefix={prefix!r})
    return Definitions(assets=fbt.assets, jobs=fbt.jobs, schedules=fbt.schedules, sensors=fbt.sensors,
                       executor=fbt.executor, resources={{**local_resources(), "bus": bus}})


defs = _with_private_bus(build_defs())
'''
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def _pg_settings() -> dict[str, str]:
    return {k: os.environ.get(k) or v for k, v in POSTGRES_DEFAULTS.items()}


@pytest.fixture
def pg_database():
    """A fresh, uniquely named PostgreSQL database, dropped afterwards (skip loudly without a server)."""
    import psycopg2
    from psycopg2 import sql

    s = _pg_settings()
    try:
        admin = psycopg2.connect(host=s["FBT_PG_HOST"], port=int(s["FBT_PG_PORT"]), user=s["FBT_PG_USER"],
                                 password=s["FBT_PG_PASSWORD"] or None, dbname="postgres", connect_timeout=3)
    except psycopg2.OperationalError as exc:
        reason = (f"NO POSTGRESQL at {s['FBT_PG_HOST']}:{s['FBT_PG_PORT']}: the daemon-crash test of the request "
                  f"queue did not run ({str(exc).strip()})")
        if os.environ.get("FBT_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        warnings.warn(reason, stacklevel=1)
        pytest.skip(reason)
    admin.autocommit = True
    name = f"fbt_rqtest_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def _group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the daemon's process group (daemon, code server, any run worker) and wait until it is gone."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while _group_alive(proc.pid):
        assert time.monotonic() < deadline, f"process group {proc.pid} survived SIGKILL: {_group_alive(proc.pid)}"
        time.sleep(0.05)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the daemon's process group; SIGKILL whatever of it is left after 30 s (a code server was)."""
    if _group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        proc.poll()
        time.sleep(0.2)
    if _group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


class Daemon:
    """``dagster-daemon run`` on the test's location, in its own process group, logging to a file."""

    def __init__(self, env: dict[str, str], location: Path, log: Path) -> None:
        self.log = log
        with log.open("a") as out:
            out.write(f"\n===== daemon start {time.time():.3f}\n")
            out.flush()
            self.proc = subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-f", str(location), "-d", str(REPO_ROOT)],
                cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def check_alive(self) -> None:
        assert self.proc.poll() is None, "dagster-daemon exited:\n" + self.log.read_text()[-4000:]


def _cli(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    proc = subprocess.run(list(args), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _batch_runs(instance):
    """The batch runs of the request sensor (job ``backtest_requests_job``)."""
    from dagster import RunsFilter

    return instance.get_runs(filters=RunsFilter(job_name="backtest_requests_job"))


def _requests_of(run) -> list[str]:
    """The request ids a batch run backtests (its op config, as the sensor emitted it)."""
    bodies = run.run_config["ops"]["backtest_requests"]["config"]["requests"]
    return [json.loads(body)["request_id"] for body in bodies]


def _wait(what: str, condition, timeout_s: float, poll_s: float, daemon: Daemon | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if daemon is not None:
            daemon.check_alive()
        time.sleep(poll_s)
    log = daemon.log.read_text()[-4000:] if daemon is not None else ""
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}\n{log}")


@pytest.mark.slow
def test_fifty_requests_run_exactly_once_through_two_daemon_kills(fbt_home, redis_url, pg_database, monkeypatch,
                                                                   tmp_path):
    from dagster import DagsterInstance

    t0 = time.monotonic()
    timings: dict[str, float] = {}
    prefix = f"fbttest-{uuid.uuid4().hex[:12]}"
    dagster_home = fbt_home / "dagster"
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("FBT_DAGSTER_INSTANCE", "postgres")  # fbt copies deploy/postgres/dagster.yaml there
    for name, value in {**_pg_settings(), "FBT_PG_DB": pg_database}.items():
        monkeypatch.setenv(name, value)  # exported: the daemon's yaml reads them (`env:`)
    env = {**os.environ, "FBT_EXECUTOR": "in_process", "FBT_REQUEST_BATCH": str(BATCH),
           "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1",
           "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}

    # -- a warehouse with ES continuous prices, ES a market partition of the instance
    fbt = str(BIN / "fbt")
    _cli(env, fbt, "sample-data", "--markets", "ES", "--start", "2021-01-04", "--end", "2023-12-29")
    _cli(env, fbt, "ingest", str(fbt_home / "landing" / "ES"))
    _cli(env, fbt, "continuous", "ES")
    fbt_yaml = (REPO_ROOT / "deploy" / "postgres" / "dagster.yaml").read_text()
    assert (dagster_home / "dagster.yaml").read_text() == fbt_yaml
    timings["seed"] = time.monotonic() - t0

    location = tmp_path / "request_location.py"
    location.write_text(LOCATION.format(prefix=prefix))
    held_yaml = fbt_yaml.replace("max_concurrent_runs: 4", "max_concurrent_runs: 0")
    assert held_yaml != fbt_yaml
    (dagster_home / "dagster.yaml").write_text(held_yaml)  # runs are created and queued, none launched
    _cli(env, str(BIN / "dagster"), "sensor", "start", SENSOR, "-f", str(location), "-d", str(REPO_ROOT))

    bus = Bus(redis_url, prefix)
    raw = redis.Redis.from_url(redis_url)
    log = tmp_path / "daemon.log"
    daemon: Daemon | None = None
    try:
        ids = [bus.submit_request({"market": "ES", "strategy": "sma_crossover", "params": {"fast": 5 + i}})
               for i in range(N)]
        assert bus.queue_depth() == {"length": N, "pending": 0}

        with DagsterInstance.get() as instance:
            # -- kill 1: the sensor has just read requests (polled every 2 ms), the kill follows at once.
            # A batch sensor records its batch and emits the run request within milliseconds of the read,
            # so the daemon sometimes creates the run before the kill lands: both orders are crash points
            # the rest of the test must survive; which one this run hit is printed.
            daemon = Daemon(env, location, log)
            t_start = time.monotonic()
            _wait("the sensor to read requests",
                  lambda: raw.xinfo_groups(bus.requests_stream)[0]["last-delivered-id"] != b"0-0",
                  timeout_s=180, poll_s=0.002, daemon=daemon)
            t_read = time.monotonic()
            _kill_group(daemon.proc)
            timings["daemon start to first read"] = t_read - t_start
            runs_at_kill_1 = len(_batch_runs(instance))
            assert runs_at_kill_1 <= 1, "kill 1 came after a second batch"
            depth_at_kill_1 = bus.queue_depth()  # checked at the end (an early acknowledgement would show)

            # -- kill 2: the daemon has created the first batch runs, other requests are still waiting
            daemon = Daemon(env, location, log)
            def new_runs():
                runs = _batch_runs(instance)
                return runs if len(runs) > runs_at_kill_1 else None

            runs = _wait("a batch run created by this daemon", new_runs, timeout_s=180, poll_s=0.01, daemon=daemon)
            _kill_group(daemon.proc)
            at_kill = len(runs)
            after_kill = _batch_runs(instance)
            covered = {rid for r in after_kill for rid in _requests_of(r)}
            assert 1 <= at_kill <= len(after_kill) and len(covered) < N
            assert {r.status.value for r in after_kill} <= {"NOT_STARTED", "QUEUED"}  # none launched
            timings["kills done"] = time.monotonic() - t0

            # -- fbt's own instance settings: the runs are launched and finish
            (dagster_home / "dagster.yaml").write_text(fbt_yaml)
            daemon = Daemon(env, location, log)
            t_run = time.monotonic()
            empty_since: list[float] = []  # when the queue was first seen empty with requests lacking a run

            def all_done() -> bool:
                runs = _batch_runs(instance)
                depth = bus.queue_depth()
                missing = set(ids) - {rid for r in runs for rid in _requests_of(r)}
                if depth == {"length": 0, "pending": 0} and missing:  # acknowledged without a run?
                    empty_since[:] = empty_since or [time.monotonic()]
                    assert time.monotonic() - empty_since[0] < 30, \
                        f"queue empty but {len(missing)} request(s) have no run (lost): {sorted(missing)[:5]}"
                else:
                    empty_since.clear()
                return not missing and all(r.status.value in FINISHED for r in runs) \
                    and depth == {"length": 0, "pending": 0}

            _wait("every request's batch run to finish and every request to be acknowledged", all_done,
                  timeout_s=1800, poll_s=1.0, daemon=daemon)
            timings[f"{N} requests after restart"] = time.monotonic() - t_run
            _stop_group(daemon.proc)

            runs = _batch_runs(instance)
            # nothing was acknowledged before its run existed: at kill 1 the queue still held every request
            assert depth_at_kill_1["length"] == N, depth_at_kill_1
            by_request = Counter(rid for r in runs for rid in _requests_of(r))
            assert sorted(by_request) == sorted(ids) and set(by_request.values()) == {1}, \
                [rid for rid, n in by_request.items() if n > 1]  # each request in exactly one batch run
            assert len(runs) >= N // BATCH and all(len(_requests_of(r)) <= BATCH for r in runs)
            for run in runs:
                assert run.tags["dagster/run_key"] == run.tags["fbt/batch"]
                assert run.tags["dagster/sensor_name"] == SENSOR
                assert run.status.value == "SUCCESS", (run.run_id, run.status)
            run_of = {rid: r.run_id for r in runs for rid in _requests_of(r)}

        events = [e for e in bus.recent_events(5000) if e.get("request_id") in set(ids)]
        assert [e for e in events if e["type"] == "request_rejected"] == []
        done = [e for e in events if e["type"] == "backtest_done"]
        assert Counter(e["request_id"] for e in done) == Counter(ids)  # every request once
        assert all(e["run_id"] == run_of[e["request_id"]] for e in done)

        # -- each result is its own request's backtest: recomputed here from the warehouse
        from fbt_pipelines.usecases.backtest import backtest_market, read_market_data
        from fbt_pipelines.usecases.spec import BacktestSpec
        from fbt_pipelines.usecases.workspace import Workspace

        workspace = Workspace(fbt_home)
        with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as conn:
            data = read_market_data(conn, "ES", workspace, cache=None)
        pnl = {}
        for i, rid in enumerate(ids):
            spec = BacktestSpec.create("sma_crossover", {"fast": 5 + i}, library=workspace.strategies())
            pnl[rid] = backtest_market(spec, data).summary["net_pnl"]
        assert len({round(v, 2) for v in pnl.values()}) > N // 2  # the parameters matter: results differ
        for event in done:
            (result,) = event["results"]
            assert result["strategy"] == "sma_crossover"
            assert result["net_pnl"] == pytest.approx(pnl[event["request_id"]], abs=0.01), event["request_id"]
        timings["total"] = time.monotonic() - t0
        print("timings (s):", json.dumps({k: round(v, 1) for k, v in timings.items()}),
              f"batch runs at kill 1: {runs_at_kill_1}, at kill 2: {at_kill} (then {len(after_kill)}), "
              f"in all {len(runs)}")
    finally:
        if daemon is not None:
            _stop_group(daemon.proc)
        raw.close()
        bus.close()
        delete_prefix(redis_url, prefix)
