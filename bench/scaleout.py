"""Scale-out of the parameter sweep: in process vs multiprocess vs Celery (1 and 2 workers).

    .venv/bin/python bench/scaleout.py              # 1000 sets x 20 markets (the engines issue's workload)
    .venv/bin/python bench/scaleout.py --quick      # 200 sets x 4 markets
    .venv/bin/python bench/scaleout.py --chunk 100  # parameter sets per step (default: the rule
                                                    # compute >= 10x overhead, usecases/fanout.py)
    .venv/bin/python bench/scaleout.py --json       # per mode backtests_per_s + engine_backtests_per_s

Workload: the same synthetic daily markets and SMA grid as bench/engine.py
(20 catalogue roots, 2,520 sessions each; fast 2..41 x slow 50..290 step 10 =
1,000 sets), written to a private FBT_HOME's warehouse, then job
``sweep_fanout`` (plan -> one step per chunk -> one writer; walk-forward
included, MLflow off) launched with ``dagster job execute`` on each executor:

- in_process (2 kernel threads per chunk);
- multiprocess, max_concurrent 2 (1 thread per chunk);
- Celery, 1 worker (concurrency 1, 2 threads) and 2 workers (1 thread each),
  started with ``fbt workers start`` on a private Redis database (13) and
  stopped by PID afterwards.

Each mode gets the machine's 2 cores. Times come from the Dagster instance:
run wall = RUN_START..RUN_SUCCESS (the CLI's ~5 s import excluded); per chunk
step its compute (the ``run_sweep`` call, from the step's metadata) and its
duration as Dagster saw it. "overhead / step" = (wall x processes - total
compute) / chunk steps: everything that is not backtesting (process start or
Celery hand-off, Parquet in/out, event writes), per step. The fan-out pays
when a chunk's compute exceeds overhead / (processes - 1); the table prints
that chunk size. The 10 workers x 8 cores line is an EXTRAPOLATION from the
measured per-backtest compute and per-step overhead, labelled so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

BIN = Path(sys.executable).parent
CELERY_DB = "13"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def seed_warehouse(home: Path, n_markets: int) -> list[str]:
    import duckdb

    from engine import SESSIONS, make_daily_market
    from fbt_pipelines.catalog import load_catalog
    from fbt_pipelines.services import warehouse as wh

    catalog = load_catalog()
    roots = list(catalog)[:n_markets]
    conn = duckdb.connect(str(home / "warehouse.duckdb"))
    for i, r in enumerate(roots):
        wh.replace_partition(conn, "continuous_prices", r, make_daily_market(catalog[r], SESSIONS, 100 + i).assign(root=r))
    conn.close()
    return roots


def grid(quick: bool) -> dict:
    return ({"fast": list(range(2, 42, 4)), "slow": list(range(50, 250, 10))} if quick
            else {"fast": list(range(2, 42)), "slow": list(range(50, 300, 10))})


def engine_backtests_per_s(home: Path, roots: list[str], g: dict) -> float:
    """The same sweep by the engine in this process (2 threads, no Dagster, no storage): the
    reference rate a fan-out is compared with. One warm-up set per market first (Numba)."""
    import duckdb

    from fbt_pipelines.usecases.backtest import read_market_data
    from fbt_pipelines.usecases.spec import BacktestSpec, MarginSource
    from fbt_pipelines.usecases.sweep import parameter_sets, run_sweep
    from fbt_pipelines.usecases.workspace import Workspace

    workspace = Workspace(home)
    sets = parameter_sets("sma_crossover", g)
    base = BacktestSpec.create("sma_crossover", {}, library=workspace.strategies(), capital=1_000_000.0,
                               margin_source=MarginSource.HISTORY)
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        data = [read_market_data(conn, r, workspace) for r in roots]
    run_sweep(base, data[0], sets[:1], workers=2)
    t0 = time.perf_counter()
    for d in data:
        run_sweep(base, d, sets, workers=2)
    return len(sets) * len(data) / (time.perf_counter() - t0)


def run_job(env: dict, mode: str, cfg: dict, tmp: Path, label: str) -> str:
    from dagster import DagsterInstance

    run_cfg = {"execution": {"config": {mode: ({"max_concurrent": 2} if mode == "multiprocess" else {})}},
               "ops": {"plan_sweep_chunks": {"config": cfg}}}
    path = tmp / f"{label}.yaml"
    path.write_text(json.dumps(run_cfg))
    with DagsterInstance.get() as instance:
        before = {r.run_id for r in instance.get_runs()}
    out = tmp / f"{label}.log"
    rc = subprocess.call([str(BIN / "dagster"), "job", "execute", "-m", "fbt_pipelines.location.definitions", "-j",
                          "sweep_fanout", "-c", str(path)], env=env, cwd=str(REPO), stdout=out.open("wb"),
                         stderr=subprocess.STDOUT)
    if rc:
        sys.exit(f"{label}: dagster job execute failed (rc {rc}); see {out}")
    with DagsterInstance.get() as instance:
        return next(r.run_id for r in instance.get_runs() if r.run_id not in before)


def run_stats(run_id: str, processes: int, n_backtests: int) -> dict:
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.get() as instance:
        rec = instance.get_run_record_by_id(run_id)
        steps = {s.step_key: s for s in instance.get_run_step_stats(run_id)}
        compute = {}
        for r in instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_OUTPUT, limit=100_000).records:
            md = r.event_log_entry.dagster_event.step_output_data.metadata
            if "compute_seconds" in md:
                compute[r.event_log_entry.step_key] = float(md["compute_seconds"].value)
    wall = rec.end_time - rec.start_time
    chunk_steps = [k for k in steps if k.startswith("run_sweep_chunk")]
    total_compute = sum(compute.values())
    writer = steps["write_sweep_results"]
    plan = steps["plan_sweep_chunks"]
    return {
        "wall": wall, "throughput": n_backtests / wall, "chunks": len(chunk_steps), "compute": total_compute,
        "per_backtest": total_compute / n_backtests,
        "overhead_per_step": (wall * processes - total_compute) / len(chunk_steps),
        "step_seen": sum(steps[k].end_time - steps[k].start_time for k in chunk_steps) / len(chunk_steps),
        "writer": writer.end_time - writer.start_time, "plan": plan.end_time - plan.start_time,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--chunk", type=int, default=None,
                    help="parameter sets per step (default: sized by the plan step, compute >= 10x overhead)")
    ap.add_argument("--json", action="store_true", help="print one JSON object (per mode backtests_per_s, ...)")
    ap.add_argument("--modes", default="in_process,multiprocess,celery1,celery2")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="fbt-scaleout-"))
    home = tmp / "fbt"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "MLFLOW_TRACKING_URI", "FBT_WAREHOUSE")}
    env.update(FBT_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), FBT_CELERY_DB=CELERY_DB,
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    os.environ.update(env)
    from fbt_pipelines.cli import workers as w
    from fbt_pipelines.usecases.sweep import parameter_sets
    from fbt_pipelines.location.instance import ensure_dagster_home

    ensure_dagster_home()
    n_markets = 4 if args.quick else 20
    roots = seed_warehouse(home, n_markets)
    g = grid(args.quick)
    n_sets = len(parameter_sets("sma_crossover", g))
    n_bt = n_sets * len(roots)
    log(f"{len(roots)} markets x {n_sets} sets = {n_bt} backtests, chunk {args.chunk or 'auto'}; state in {tmp}")
    base = {"grid": g, "track_mlflow": False, **({"chunk_size": args.chunk} if args.chunk else {})}
    engine_rate = engine_backtests_per_s(home, roots, g)
    log(f"in-process engine (run_sweep, 2 threads, no Dagster): {engine_rate:,.0f} backtests/s")
    plan = {"in_process": ("in_process", 1, 2, 0), "multiprocess": ("multiprocess", 2, 1, 0),
            "celery1": ("celery", 1, 2, 1), "celery2": ("celery", 2, 1, 2)}
    rows = {}
    try:
        for label in args.modes.split(","):
            mode, processes, threads, n_workers = plan[label]
            if n_workers:
                w.stop_workers(timeout=10)
                t0 = time.perf_counter()
                w.start_workers(n_workers, concurrency=1, wait=180)
                log(f"{label}: {n_workers} worker(s) ready in {time.perf_counter() - t0:.1f} s")
            log(f"{label}: running")
            run_id = run_job(env, mode, {**base, "workers": threads}, tmp, label)
            rows[label] = run_stats(run_id, processes, n_bt)
            log(f"{label}: {rows[label]['wall']:.1f} s")
    finally:
        w.stop_workers(timeout=10)
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"markets": len(roots), "sets": n_sets, "backtests": n_bt, "load_avg_1m": round(load[0], 2),
                          "engine_backtests_per_s": round(engine_rate, 1),
                          "modes": {label: {"backtests_per_s": round(r["throughput"], 1), "wall_s": round(r["wall"], 2),
                                            "chunks": r["chunks"], "overhead_per_step_s": round(r["overhead_per_step"], 3),
                                            "compute_s": round(r["compute"], 2), "plan_s": round(r["plan"], 2),
                                            "writer_s": round(r["writer"], 2)} for label, r in rows.items()}}))
        return
    print(f"\nsweep_fanout: {len(roots)} markets x {n_sets} sets = {n_bt:,} backtests, chunk {args.chunk or 'auto'} sets "
          f"-> {rows[next(iter(rows))]['chunks']} chunk steps; 2 cores; load avg at end {load[0]:.1f}")
    head = f"{'executor':<22}{'wall s':>8}{'bt/s':>8}{'compute s':>11}{'plan s':>8}{'writer s':>9}" \
           f"{'step s':>8}{'ovh/step s':>11}{'pays from':>11}"
    print(head)
    print("-" * len(head))
    names = {"in_process": "in process", "multiprocess": "multiprocess (2)", "celery1": "Celery, 1 worker",
             "celery2": "Celery, 2 workers"}
    for label, r in rows.items():
        processes = plan[label][1]
        pays = "-" if processes == 1 else f"{r['overhead_per_step'] / ((processes - 1) * r['per_backtest']):,.0f} sets"
        print(f"{names[label]:<22}{r['wall']:>8.1f}{r['throughput']:>8.0f}{r['compute']:>11.1f}{r['plan']:>8.1f}"
              f"{r['writer']:>9.1f}{r['step_seen']:>8.2f}{r['overhead_per_step']:>11.2f}{pays:>11}")
    ref = rows.get("celery2") or rows[next(iter(rows))]
    c, o = ref["per_backtest"], ref["overhead_per_step"]
    serial = ref["plan"] + ref["writer"] * 1.0
    for label, n_proc in (("EXTRAPOLATED 10 workers x 8 cores", 80),):
        wall = n_bt * c / n_proc + ref["chunks"] * o / n_proc + serial
        print(f"{label}: ~{wall:.0f} s for this workload ({n_bt / wall:,.0f} bt/s), of which plan + writer "
              f"(serial) {serial:.0f} s; per backtest {c * 1e3:.2f} ms, overhead {o:.2f} s/step (from Celery, "
              f"{'2 workers' if 'celery2' in rows else next(iter(rows))}), chunk {args.chunk or 'auto'}")
    print(f"in-process engine (run_sweep, 2 threads, no Dagster): {engine_rate:,.0f} backtests/s")
    print("columns: wall = RUN_START..RUN_SUCCESS; compute = sum of run_sweep time in chunk steps; step s = mean "
          "chunk-step duration seen by Dagster; ovh/step = (wall x processes - compute) / chunk steps; pays from = "
          "chunk size above which a chunk's compute exceeds ovh/step / (processes - 1)")


if __name__ == "__main__":
    main()
