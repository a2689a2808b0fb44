"""The sweep on real Celery workers: two `fbt workers` subprocesses on a real Redis broker.

One test, three runs of job ``sweep_fanout`` (2 markets x 120 parameter sets,
chunks of 30 = 8 chunk steps) against a private instance. Each run writes its
OWN warehouse: a fresh copy of the same input warehouse, named in the run's
config (``resources: warehouse: config: database``, which the workers' steps
resolve too), so every comparison reads rows that run wrote and nothing
another run left behind:

A. in process (``execute_in_process``, the reference), while the workers start,
   its chunk size left to the rule (compute >= 10x per-step overhead);
   B and C are launched with ``dagster job execute`` as an operator would;
B. on the Celery executor with two workers: every chunk step ran in a pool
   process of one of the two workers (its PID, from the step's output
   metadata, is a child of a worker PID and not the launcher's), both workers
   took steps, and B's warehouse rows equal A's to the cent;
D. on Celery with MLflow tracked (``track_mlflow: true``) on 4 of the 120
   parameter sets: the writer step, run by a worker, logged one parent run per
   market with a child per set to the MLflow store of ``FBT_HOME``, tagged
   with D's run id; each child's metrics equal D's rows, which equal A's rows
   of the same parameters to the cent, and name their parent run. (A small
   grid because MLflow logs ~50 ms per set: the writer of 240 sets would
   outlast the 8 s visibility timeout and be handed out twice, see below);
C. on Celery again, one worker SIGKILLed (its whole process group) while it
   executes a chunk step: the run still succeeds, every chunk step succeeded
   exactly once, the killed step was finished by the other worker, and C's
   rows equal A's. What holds here is Celery's late acknowledgement
   (``task_acks_late``): the dead worker never acknowledged the task, so
   Redis handed it to the survivor after the visibility timeout (8 s here).
   Dagster's step retries play no part: no failure event is ever written for
   a worker that vanished.

Broker and backend: the test Redis server on its own database 13 (keys there
are deleted before and after). Workers are stopped by their PIDs in
``finally``, also when the test fails.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import duckdb
import numpy as np
import pandas as pd
import pytest
import redis

from fbt_pipelines.catalog import market_spec
from fbt_pipelines.config import REPO_ROOT
from fbt_pipelines.services import warehouse as wh

pytestmark = pytest.mark.slow

CELERY_DB = 13
MARKETS = ("ES", "CL")
GRID = {"fast": list(range(2, 32)), "slow": [50, 100, 150, 200]}  # 120 sets
MLFLOW_GRID = {"fast": [10, 20], "slow": [50, 100]}  # 4 of them
SETS = 120
CHUNK = 30
SESSIONS = 1260  # 5 years: two walk-forward windows (3 years in sample)
CENT = 0.005
BIN = Path(sys.executable).parent


def daily_market(root: str, sessions: int, seed: int) -> pd.DataFrame:
    """Synthetic Panama frame on the market's tick grid, a roll every 63 sessions."""
    spec = market_spec(root)
    rng = np.random.default_rng(seed)
    tick, start = spec.tick_size, float(spec.sample.get("start_price", 100.0))
    vol = float(spec.sample.get("annual_vol", 0.2)) / np.sqrt(252.0)
    close = np.round(np.exp(np.log(start) + np.cumsum(rng.normal(0.0, vol, sessions))) / tick) * tick
    open_ = np.round(np.r_[close[0], close[:-1]] * np.exp(rng.normal(0.0, vol / 3, sessions)) / tick) * tick
    roll = np.zeros(sessions, dtype=bool)
    roll[np.arange(62, sessions - 1, 63)] = True
    segment = np.r_[0, np.cumsum(roll)[:-1]]
    later = np.r_[np.cumsum(np.full(roll.sum(), 10 * tick))[::-1], 0.0]
    return pd.DataFrame({
        "ts": pd.bdate_range("2012-01-02", periods=sessions, tz="UTC"),
        "contract": [f"{root}{k:03d}" for k in segment], "open": open_,
        "high": np.maximum(open_, close), "low": np.minimum(open_, close), "close": close,
        "raw_close": close - later[segment], "roll": roll, "root": root,
    })


def _db(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


def _clear_db(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(count=500))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])
    finally:
        client.close()


def _run_config(path: Path, executor: str, warehouse: Path, grid: dict = GRID, chunk: int = CHUNK,
                track_mlflow: bool = False) -> Path:
    """Run config of one run: its executor, its own warehouse file, the grid, MLflow on or off."""
    cfg = {"execution": {"config": {executor: {}}},
           "resources": {"warehouse": {"config": {"database": str(warehouse)}}},
           "ops": {"plan_sweep_chunks": {"config": {"grid": grid, "chunk_size": chunk, "track_mlflow": track_mlflow,
                                                    "workers": 1}}}}
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def _fresh_warehouse(seed: Path, path: Path) -> Path:
    """A copy of the input warehouse (continuous prices only) for one run to write its results to."""
    shutil.copyfile(seed, path)
    conn = duckdb.connect(str(path), read_only=True)
    try:
        assert not wh.table_exists(conn, "sweep_results")
    finally:
        conn.close()
    return path


def _launch(env: dict, config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "dagster"), "job", "execute", "-m", "fbt_pipelines.location.definitions",
                             "-j", "sweep_fanout", "-c", str(config)], env=env, cwd=str(REPO_ROOT),
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _results(warehouse: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        sweep = conn.execute("SELECT root, \"set\", params, net_pnl, sharpe, trades, rolls, roll_costs "
                             "FROM sweep_results ORDER BY root, \"set\"").df()
        wf = conn.execute("SELECT root, ts, \"set\", pnl, equity FROM walk_forward_equity ORDER BY root, ts").df()
    finally:
        conn.close()
    return sweep, wf


def _assert_same_to_the_cent(got: tuple[pd.DataFrame, pd.DataFrame], ref: tuple[pd.DataFrame, pd.DataFrame]):
    (sweep, wf), (ref_sweep, ref_wf) = got, ref
    assert len(sweep) == len(ref_sweep) == len(MARKETS) * SETS
    assert not sweep.duplicated(["root", "set"]).any()
    assert (sweep[["root", "set", "params", "trades", "rolls"]].to_numpy()
            == ref_sweep[["root", "set", "params", "trades", "rolls"]].to_numpy()).all()
    for col in ("net_pnl", "roll_costs"):
        assert np.abs(sweep[col] - ref_sweep[col]).max() < CENT, col
    assert np.allclose(sweep["sharpe"], ref_sweep["sharpe"], rtol=0, atol=1e-12, equal_nan=True)
    assert len(wf) == len(ref_wf) and (wf["set"].to_numpy() == ref_wf["set"].to_numpy()).all()
    assert np.abs(wf["equity"] - ref_wf["equity"]).max() < CENT


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])


def _newest_run(instance, after: set[str], timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [r for r in instance.get_runs(limit=5) if r.run_id not in after]
        if runs:
            return runs[0]
        time.sleep(0.2)
    raise AssertionError("the Celery run did not start")


def _step_pids(instance, run_id: str) -> dict[str, int]:
    from dagster import DagsterEventType

    out = {}
    for rec in instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_OUTPUT, limit=10_000).records:
        md = rec.event_log_entry.dagster_event.step_output_data.metadata
        if "pid" in md:
            out[rec.event_log_entry.step_key] = int(md["pid"].value)
    return out


def _successes(instance, run_id: str) -> Counter:
    from dagster import DagsterEventType

    recs = instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_SUCCESS, limit=10_000).records
    return Counter(r.event_log_entry.step_key for r in recs)


def _started_on(instance, run_id: str) -> list[tuple[str, str]]:
    """(step key, Celery worker name) of every 'Executing steps ... in celery worker' event so far."""
    from dagster import DagsterEventType

    out = []
    for rec in instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=10_000).records:
        ev = rec.event_log_entry.dagster_event
        md = ev.engine_event_data.metadata if ev.engine_event_data else {}
        if "Celery worker" in md:
            out.append((rec.event_log_entry.step_key, md["Celery worker"].value))
    return out


def test_sweep_on_two_celery_workers_survives_a_killed_worker(tmp_path, redis_url, monkeypatch):
    home = tmp_path / "fbt"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "MLFLOW_TRACKING_URI", "FBT_WAREHOUSE")}
    env.update(FBT_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), REDIS_URL=redis_url,
               FBT_CELERY_DB=str(CELERY_DB), FBT_CELERY_VISIBILITY_TIMEOUT="8", FBT_EXECUTOR="in_process",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    broker = _db(redis_url, CELERY_DB)
    _clear_db(broker)

    seed = tmp_path / "seed.duckdb"
    conn = duckdb.connect(str(seed))
    for i, root in enumerate(MARKETS):
        wh.replace_partition(conn, "continuous_prices", root, daily_market(root, SESSIONS, seed=i))
    conn.close()
    warehouses = {run: _fresh_warehouse(seed, tmp_path / f"warehouse_{run}.duckdb") for run in "ABCD"}

    from fbt_pipelines.cli import workers as w
    from fbt_pipelines.location.instance import ensure_dagster_home

    ensure_dagster_home()
    starter = subprocess.Popen([str(BIN / "fbt"), "workers", "start", "-n", "2", "--timeout", "100"], env=env,
                               cwd=str(REPO_ROOT), stdout=(tmp_path / "start.log").open("wb"), stderr=subprocess.STDOUT)
    try:
        # A: the in-process reference, while the workers start
        from dagster import DagsterInstance

        from assets.sweep_fanout import ChunkParquetIOManager
        from fbt_pipelines.location.sweep_fanout import sweep_fanout
        from resources import FilesResource, TrackingResource, WarehouseResource

        cfg_a = json.loads(_run_config(tmp_path / "a.yaml", "in_process", warehouses["A"]).read_text())
        del cfg_a["execution"], cfg_a["resources"]
        del cfg_a["ops"]["plan_sweep_chunks"]["config"]["chunk_size"]  # A: the chunk rule sizes its steps
        with DagsterInstance.ephemeral() as ephemeral:
            run_a = sweep_fanout.execute_in_process(run_config=cfg_a, instance=ephemeral, resources={
                "warehouse": WarehouseResource(database=str(warehouses["A"])),
                "tracking": TrackingResource(tracking_uri=f"sqlite:///{home}/mlflow.db"),
                "sweep_io": ChunkParquetIOManager(base_dir=str(home / "scratch")),
                "files": FilesResource(landing_dir=str(home / "landing"), reports_dir=str(home / "reports"),
                                       home_dir=str(home))})
        assert run_a.success
        # in process a step costs ~0.05 s, so 10x that is a few hundred daily backtests: far fewer
        # steps than B's and C's explicit chunks of 30 (whose rows must still equal A's)
        a_chunks = [e for e in run_a.all_events
                    if e.is_step_success and e.step_key.startswith("run_sweep_chunk")]
        assert 2 <= len(a_chunks) < 2 * 120 // CHUNK, [e.step_key for e in a_chunks]
        reference = _results(warehouses["A"])
        from mlflow.tracking import MlflowClient

        from fbt_pipelines.config import paths

        paths().mlflow_dir.mkdir(parents=True, exist_ok=True)
        MlflowClient(paths().mlflow_tracking_uri).search_experiments()  # the store's schema, made once (~3-5 s)
        assert starter.wait(timeout=110) == 0, (tmp_path / "start.log").read_text()[-3000:]
        procs = {p.name: p.pid for p in w.list_workers()}
        assert len(procs) == 2 and all(p.alive for p in w.list_workers())

        instance = DagsterInstance.get()
        seen = {r.run_id for r in instance.get_runs()}

        # B: on the two workers
        run_b = _launch(env, _run_config(tmp_path / "b.yaml", "celery", warehouses["B"]), tmp_path / "b.log")
        assert run_b.wait(timeout=110) == 0, (tmp_path / "b.log").read_text()[-3000:]
        b = _newest_run(instance, seen)
        seen.add(b.run_id)
        pids = _step_pids(instance, b.run_id)
        assert len(pids) == len(MARKETS) * SETS // CHUNK
        assert run_b.pid not in pids.values() and os.getpid() not in pids.values()
        parents = {pid: _ppid(pid) for pid in set(pids.values())}
        assert set(parents.values()) <= set(procs.values()), (parents, procs)  # pool processes of our workers
        assert len(set(parents.values())) == 2, parents  # both workers took steps
        assert all(n == 1 for n in _successes(instance, b.run_id).values())
        _assert_same_to_the_cent(_results(warehouses["B"]), reference)

        # D: MLflow tracked by the writer step on a worker (4 sets per market, 2 chunk steps each)
        run_d = _launch(env, _run_config(tmp_path / "d.yaml", "celery", warehouses["D"], grid=MLFLOW_GRID, chunk=2,
                                         track_mlflow=True), tmp_path / "d.log")
        assert run_d.wait(timeout=110) == 0, (tmp_path / "d.log").read_text()[-3000:]
        d = _newest_run(instance, seen)
        seen.add(d.run_id)
        writer_on = [name for k, name in _started_on(instance, d.run_id) if k == "write_sweep_results"]
        assert len(writer_on) == 1 and writer_on[0] in procs, writer_on  # MLflow was logged from a worker
        _assert_mlflow_holds_the_run(d.run_id, warehouses["D"], reference[0])

        # C: kill one worker while it runs a chunk step
        run_c = _launch(env, _run_config(tmp_path / "c.yaml", "celery", warehouses["C"]), tmp_path / "c.log")
        c = _newest_run(instance, seen)
        killed = None
        deadline = time.monotonic() + 90
        while killed is None and time.monotonic() < deadline:
            done = set(_successes(instance, c.run_id))
            running = [(k, name) for k, name in _started_on(instance, c.run_id)
                       if k.startswith("run_sweep_chunk") and k not in done]
            if running:
                killed = running[0]
                os.killpg(procs[killed[1]], signal.SIGKILL)
                break
            time.sleep(0.05)
        assert killed is not None, "no chunk step seen running"
        assert run_c.wait(timeout=110) == 0, (tmp_path / "c.log").read_text()[-3000:]
        step, dead_worker = killed
        survivor = next(pid for name, pid in procs.items() if name != dead_worker)
        successes = _successes(instance, c.run_id)
        assert len(successes) == 2 + len(MARKETS) * SETS // CHUNK and set(successes.values()) == {1}, successes
        assert [name for k, name in _started_on(instance, c.run_id) if k == step] == [dead_worker, _name_of(procs, survivor)]
        assert _ppid(_step_pids(instance, c.run_id)[step]) == survivor
        _assert_same_to_the_cent(_results(warehouses["C"]), reference)
    finally:
        if starter.poll() is None:
            starter.kill()
        w.stop_workers(timeout=5)
        _clear_db(broker)


def _name_of(procs: dict[str, int], pid: int) -> str:
    return next(name for name, p in procs.items() if p == pid)


def _assert_mlflow_holds_the_run(run_id: str, warehouse: Path, reference: pd.DataFrame) -> None:
    """MLflow (the FBT_HOME store the workers log to) holds the sweep of Dagster run ``run_id``:
    per market a parent run and a child per set whose metrics are that warehouse's rows, which
    equal the reference run's rows of the same parameters."""
    from mlflow.tracking import MlflowClient

    from fbt_pipelines.config import paths
    from fbt_pipelines.services.tracking import SWEEP_EXPERIMENT

    client = MlflowClient(paths().mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(SWEEP_EXPERIMENT)
    assert experiment is not None, f"no experiment {SWEEP_EXPERIMENT} in {paths().mlflow_tracking_uri}"
    runs = client.search_runs([experiment.experiment_id], f"tags.dagster_run = '{run_id}'", max_results=5000)
    parents = {r.data.tags["market"]: r for r in runs if "parent" not in r.data.tags}
    assert sorted(parents) == sorted(MARKETS), [r.data.tags for r in runs[:3]]
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        rows = conn.execute("SELECT root, \"set\", params, net_pnl, trades, mlflow_parent_run FROM sweep_results").df()
    finally:
        conn.close()
    sets = len(MLFLOW_GRID["fast"]) * len(MLFLOW_GRID["slow"])
    for root, parent in parents.items():
        mine = rows[rows["root"] == root].set_index("set")
        assert set(mine["mlflow_parent_run"]) == {parent.info.run_id}  # the rows name the run that logged them
        children = [r for r in runs if r.data.tags.get("parent") == parent.info.run_id]
        assert len(children) == sets and all(r.info.status == "FINISHED" for r in children)
        # a child per parameter set (its params logged as MLflow params), its net P&L that of the row
        by_params = {json.dumps(r.data.params, sort_keys=True): r.data.metrics["net_pnl"] for r in children}
        row_params = {json.dumps({k: str(v) for k, v in json.loads(p).items()}, sort_keys=True): pnl
                      for p, pnl in zip(mine["params"], mine["net_pnl"])}
        assert sorted(by_params) == sorted(row_params) and len(row_params) == sets, (by_params, row_params)
        assert max(abs(by_params[k] - row_params[k]) for k in by_params) < CENT
        same = mine.merge(reference[reference["root"] == root], on="params", suffixes=("", "_ref"))
        assert len(same) == sets and (same["trades"] == same["trades_ref"]).all()
        assert np.abs(same["net_pnl"] - same["net_pnl_ref"]).max() < CENT
