"""Scale-out of the parameter sweep: in process vs multiprocess vs Celery (1 and 2 workers).

    .venv/bin/python bench/scaleout.py              # 12 markets x 1 year of minute bars x 3,000 sets
    .venv/bin/python bench/scaleout.py --quick      # 4 markets x 3 months x 200 sets
    .venv/bin/python bench/scaleout.py --daily      # 20 markets x 10 years daily x 1,000 sets (the engines
                                                    # issue's workload: 0.5 s in process, no fan-out pays)
    .venv/bin/python bench/scaleout.py --chunk 100  # parameter sets per step (default: the rule
                                                    # compute >= 10x overhead, usecases/fanout.py)
    .venv/bin/python bench/scaleout.py --json       # per mode backtests_per_s + engine_backtests_per_s

Default workload (a fan-out must have work to pay for): 12 markets
(``MINUTE_ROOTS``: equity index, energy and FX futures), the sessions of
2023 (~353,000 bars each) of one-minute bars from
:func:`fbt_pipelines.marketdata.sample_minutes.simulate_minutes` (CME Globex
sessions, contracts side by side around each roll) built into ``ROOT|1m``
Panama series by the intraday use cases and stored in
``intraday_continuous_prices``, and the SMA grid fast 2..51 x slow 60..650
step 10 (3,000 sets): 36,000 backtests of 1 contract, P&L per session. The
in-process engine run of it takes > 60 s on this 2-core machine with 2
threads (printed). Why a year, not two: a set's arrays on a year of minute
bars (~20 MB) stay in this machine's 32 MB L3 cache, and two processes
scale 2x; on two years they fight for memory bandwidth (measured: 1.40x).
``--daily``: bench/engine.py's 20 synthetic daily markets of 2,520
sessions, 1,000 sets.

Each mode runs job ``sweep_fanout`` (plan -> one step per chunk -> one
writer; walk-forward included, MLflow off; ``interval: 1m`` unless
``--daily``) with ``dagster job execute`` on its executor:

- in_process (2 kernel threads per chunk);
- multiprocess, max_concurrent 2 (1 thread per chunk);
- Celery, 1 worker (concurrency 1, 1 thread) and 2 workers (1 thread each),
  started with ``fbt workers start`` on a private Redis database (13) and
  stopped by PID afterwards.

Times come from the Dagster instance: run wall = RUN_START..RUN_SUCCESS
(the CLI's ~5 s import excluded); per chunk step its compute (the sweep
call, from the step's metadata) and its duration as Dagster saw it.
"ovh/step" = what each chunk step costs besides backtesting: its time in
Dagster outside the sweep call (Parquet in/out, the market's inputs, event
writes) plus the mean gap between consecutive steps on one worker process
(the Celery hand-off); "ovh %" = that over the mean step's compute (goal
<= 10 %). "idle/step" = ((wall - plan - writer) x processes - compute) /
chunk steps: every idle second, including the wait for the first step and
the uneven end of the last ones (per run, not per step); for multiprocess,
a process per step, it is the only figure. Goals (issue 21, printed as met or not): two
Celery workers >= 1.6x one worker and >= 60 % of the in-process engine's
rate (its own sweep, 2 threads, no Dagster, no storage). The 10 workers x 8
cores line is an EXTRAPOLATION from the measured per-backtest compute and
per-step overhead, labelled so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
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
    """20 synthetic daily markets of 2,520 sessions in ``continuous_prices`` (bench/engine.py's)."""
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


# Markets that roll by expiry: simulate_minutes lists a contract only 16 days before its predecessor's last
# trade, so markets rolled before first notice (GC, SI, HG, the grains and bonds) get no roll and a few weeks.
MINUTE_ROOTS = ["ES", "NQ", "YM", "RTY", "CL", "HO", "RB", "NG", "6E", "6J", "6B", "6A", "6C"]


def seed_minute_series(home: Path, n_markets: int, start: dt.date, end: dt.date) -> list[str]:
    """``ROOT|1m`` Panama series of simulated minute bars in ``intraday_continuous_prices``.

    The first ``n_markets`` of :data:`MINUTE_ROOTS`, sessions ``start..end``: raw
    bars of every contract (:func:`simulate_minutes`), then the intraday use
    cases' roll schedule and back-adjusted series, as the
    ``intraday_continuous_prices`` asset builds it."""
    import duckdb

    from fbt_pipelines.catalog import load_catalog
    from fbt_pipelines.catalog.contracts import listed_contracts
    from fbt_pipelines.marketdata.sample_minutes import simulate_minutes
    from fbt_pipelines.services import warehouse as wh
    from fbt_pipelines.usecases import intraday as uc
    from fbt_pipelines.usecases.continuous import roll_rule_for

    catalog = load_catalog()
    roots = MINUTE_ROOTS[:n_markets]
    with duckdb.connect(str(home / "warehouse.duckdb")) as conn:
        for i, root in enumerate(roots):
            spec = catalog[root]
            bars = simulate_minutes(spec, start, end, seed=100 + i).frame().assign(root=root, interval="1m")
            contracts = listed_contracts(spec, start.year - 1, end.year + 2)
            sb = uc.sessioned_bars(bars, spec)
            key = uc.series_key(root, "1m")
            rolls = uc.intraday_roll_schedule(sb, contracts, roll_rule_for(spec), key, "1m")
            built = uc.intraday_continuous(sb, rolls.schedule, rolls.start_contract, contracts, key, "1m")
            wh.replace_partition(conn, "intraday_continuous_prices", key, built.prices)
            log(f"seeded {key}: {len(built.prices):,} bars")
    return roots


def grid(quick: bool, daily: bool) -> dict:
    """The SMA grid: quick 200 sets; daily 1,000 (bench/engine.py's); minute bars 3,000."""
    if quick:
        return {"fast": list(range(2, 42, 4)), "slow": list(range(50, 250, 10))}
    if daily:
        return {"fast": list(range(2, 42)), "slow": list(range(50, 300, 10))}
    return {"fast": list(range(2, 52)), "slow": list(range(60, 660, 10))}


def engine_run(home: Path, roots: list[str], cfg: dict) -> tuple[float, float]:
    """(backtests/s, seconds): the same sweep by the engine in this process, 2 threads.

    ``sweep_fanout``'s own sweep call (daily ``run_sweep`` or the intraday
    sweep) on every market, no Dagster, no storage: the reference rate a
    fan-out is compared with. Inputs are read first and one warm-up set is
    run per market (Numba's first call), neither timed."""
    import duckdb

    from assets.sweep_fanout import SweepFanoutConfig
    from fbt_pipelines.usecases import intraday as uc
    from fbt_pipelines.usecases.backtest import read_market_data
    from fbt_pipelines.usecases.workspace import Workspace

    workspace = Workspace(home)
    config = SweepFanoutConfig(**cfg)
    sets = config.sets()
    base = config.base_spec(workspace.strategies())
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        if config.intraday:
            data = [uc.intraday_market_data(r, workspace, uc.read_intraday_prices(conn, uc.series_key(r, config.interval)))
                    for r in roots]
        else:
            data = [read_market_data(conn, r, workspace) for r in roots]
    for d in data:
        config.sweep(base, d, sets[:1], workers=2)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for d in data:
        config.sweep(base, d, sets, workers=2)
    seconds = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    log(f"engine run: {seconds:.1f} s wall, {r1.ru_utime - r0.ru_utime:.1f} s user, {r1.ru_stime - r0.ru_stime:.1f} s "
        f"system, {r1.ru_minflt - r0.ru_minflt:,} minor page faults (engine/allocator.py keeps them low)")
    return len(sets) * len(data) / seconds, seconds


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
    """Wall, compute and overheads of one ``sweep_fanout`` run, from the Dagster instance.

    ``step_overhead``: what each chunk step costs besides its sweep call:
    its time inside Dagster (step duration - compute: Parquet in/out, the
    market's inputs, events) plus the mean hand-off gap between consecutive
    steps on one worker process (none for multiprocess, a process per step:
    there the idle figure stands in). ``idle_per_step``: every second of the
    run's processes not spent in a sweep call, plan or writer, per chunk step
    (so also the wait for the first step and the last steps' uneven end).
    """
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.get() as instance:
        rec = instance.get_run_record_by_id(run_id)
        steps = {s.step_key: s for s in instance.get_run_step_stats(run_id)}
        compute, pid = {}, {}
        for r in instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_OUTPUT, limit=100_000).records:
            md = r.event_log_entry.dagster_event.step_output_data.metadata
            if "compute_seconds" in md:
                compute[r.event_log_entry.step_key] = float(md["compute_seconds"].value)
                pid[r.event_log_entry.step_key] = int(md["pid"].value)
    wall = rec.end_time - rec.start_time
    chunk_steps = sorted(compute, key=lambda k: steps[k].start_time)
    total_compute = sum(compute.values())
    writer = steps["write_sweep_results"].end_time - steps["write_sweep_results"].start_time
    plan = steps["plan_sweep_chunks"].end_time - steps["plan_sweep_chunks"].start_time
    idle = ((wall - plan - writer) * processes - total_compute) / len(chunk_steps)
    in_step = sum(steps[k].end_time - steps[k].start_time - compute[k] for k in chunk_steps) / len(chunk_steps)
    gaps, last_end = [], {}
    for k in chunk_steps:
        if pid[k] in last_end:
            gaps.append(steps[k].start_time - last_end[pid[k]])
        last_end[pid[k]] = steps[k].end_time
    step_overhead = in_step + sum(gaps) / len(gaps) if gaps else idle
    per_step_compute = total_compute / len(chunk_steps)
    return {
        "wall": wall, "throughput": n_backtests / wall, "chunks": len(chunk_steps), "compute": total_compute,
        "per_backtest": total_compute / n_backtests, "overhead_per_step": step_overhead,
        "overhead_pct": 100.0 * step_overhead / per_step_compute, "idle_per_step": idle,
        "idle_pct": 100.0 * idle / per_step_compute, "hand_off_measured": bool(gaps),
        "step_seen": sum(steps[k].end_time - steps[k].start_time for k in chunk_steps) / len(chunk_steps),
        "writer": writer, "plan": plan,
    }


MODES = {  # label: (executor, processes, kernel threads per step, Celery workers)
    "in_process": ("in_process", 1, 2, 0), "multiprocess": ("multiprocess", 2, 1, 0),
    "celery1": ("celery", 1, 1, 1), "celery2": ("celery", 2, 1, 2)}
NAMES = {"in_process": "in process", "multiprocess": "multiprocess (2)", "celery1": "Celery, 1 worker",
         "celery2": "Celery, 2 workers"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 markets x 3 months of minute bars x 200 sets")
    ap.add_argument("--daily", action="store_true", help="20 daily markets x 10 years x 1,000 sets")
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
    from fbt_pipelines.location.instance import ensure_dagster_home

    ensure_dagster_home()
    load0 = os.getloadavg()
    g = grid(args.quick, args.daily)
    if args.daily:
        roots = seed_warehouse(home, 4 if args.quick else 20)
        workload = f"{len(roots)} daily markets x 2,520 sessions"
        base = {"grid": g}
    else:
        first = dt.date(2023, 10, 2) if args.quick else dt.date(2023, 1, 3)
        roots = seed_minute_series(home, 4 if args.quick else 12, first, dt.date(2023, 12, 29))
        workload = f"{len(roots)} markets x 1m bars {first}..2023-12-29"
        base = {"grid": g, "interval": "1m"}
    base.update(track_mlflow=False, **({"chunk_size": args.chunk} if args.chunk else {}))
    engine_rate, engine_s = engine_run(home, roots, base)
    from assets.sweep_fanout import SweepFanoutConfig

    n_sets = len(SweepFanoutConfig(**base).sets())
    n_bt = n_sets * len(roots)
    log(f"{workload}: {len(roots)} x {n_sets} sets = {n_bt} backtests, chunk {args.chunk or 'auto'}; state in {tmp}")
    log(f"in-process engine (2 threads, no Dagster): {engine_s:.1f} s, {engine_rate:,.0f} backtests/s")
    rows = {}
    try:
        for label in args.modes.split(","):
            mode, processes, threads, n_workers = MODES[label]
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
    goals = {}
    if "celery1" in rows and "celery2" in rows:
        goals["celery2_over_celery1"] = rows["celery2"]["throughput"] / rows["celery1"]["throughput"]
    if "celery2" in rows:
        goals["celery2_over_engine"] = rows["celery2"]["throughput"] / engine_rate
        goals["celery2_overhead_pct"] = rows["celery2"]["overhead_pct"]
    if args.json:
        print(json.dumps({"workload": workload, "markets": len(roots), "sets": n_sets, "backtests": n_bt,
                          "load_avg_1m": [round(load0[0], 2), round(load[0], 2)],
                          "engine_backtests_per_s": round(engine_rate, 1), "engine_s": round(engine_s, 2),
                          "goals": {k: round(v, 3) for k, v in goals.items()},
                          "modes": {label: {"backtests_per_s": round(r["throughput"], 1), "wall_s": round(r["wall"], 2),
                                            "chunks": r["chunks"], "overhead_per_step_s": round(r["overhead_per_step"], 3),
                                            "overhead_pct": round(r["overhead_pct"], 1),
                                            "idle_per_step_s": round(r["idle_per_step"], 3),
                                            "idle_pct": round(r["idle_pct"], 1),
                                            "compute_s": round(r["compute"], 2), "plan_s": round(r["plan"], 2),
                                            "writer_s": round(r["writer"], 2)} for label, r in rows.items()}}))
        return
    print(f"\nsweep_fanout: {workload}, {n_sets} sets = {n_bt:,} backtests, chunk {args.chunk or 'auto'} "
          f"-> {rows[next(iter(rows))]['chunks']} chunk steps; {os.cpu_count()} cores; load average "
          f"{load0[0]:.1f} -> {load[0]:.1f}")
    print(f"in-process engine (2 threads, no Dagster, no storage): {engine_s:.1f} s, {engine_rate:,.0f} backtests/s")
    head = f"{'executor':<22}{'wall s':>8}{'bt/s':>8}{'vs engine':>10}{'compute s':>11}{'plan s':>8}{'writer s':>9}" \
           f"{'step s':>8}{'ovh/step s':>11}{'ovh %':>7}{'idle/step s':>12}{'idle %':>8}"
    print(head)
    print("-" * len(head))
    for label, r in rows.items():
        print(f"{NAMES[label]:<22}{r['wall']:>8.1f}{r['throughput']:>8.0f}{r['throughput'] / engine_rate:>10.2f}"
              f"{r['compute']:>11.1f}{r['plan']:>8.1f}{r['writer']:>9.1f}{r['step_seen']:>8.2f}"
              f"{r['overhead_per_step']:>11.2f}{r['overhead_pct']:>7.1f}{r['idle_per_step']:>12.2f}"
              f"{r['idle_pct']:>8.1f}" + ("" if r["hand_off_measured"] or label == "in_process" else "  (ovh = idle)"))
    for name, value, goal, unit in (("Celery 2 workers / 1 worker", goals.get("celery2_over_celery1"), 1.6, "x"),
                                    ("Celery 2 workers / in-process engine", goals.get("celery2_over_engine"), 0.6, "x"),
                                    ("Celery 2 workers: overhead / step compute", goals.get("celery2_overhead_pct"),
                                     10.0, " %")):
        if value is not None:
            met = value <= goal if unit == " %" else value >= goal
            print(f"goal {name}: {value:.2f}{unit} ({'<=' if unit == ' %' else '>='} {goal:g}{unit}: "
                  f"{'met' if met else 'NOT met'})")
    ref = rows.get("celery2") or rows[next(iter(rows))]
    c, o = ref["per_backtest"], ref["overhead_per_step"]
    serial = ref["plan"] + ref["writer"]
    wall = n_bt * c / 80 + ref["chunks"] * ref["idle_per_step"] / 80 + serial
    print(f"EXTRAPOLATED 10 workers x 8 cores: ~{wall:.0f} s for this workload ({n_bt / wall:,.0f} bt/s), of which "
          f"plan + writer (serial) {serial:.0f} s; per backtest {c * 1e3:.2f} ms, overhead {o:.2f} s/step")
    print("columns: wall = RUN_START..RUN_SUCCESS; compute = sum of the sweep calls in chunk steps; step s = mean "
          "chunk-step duration seen by Dagster; ovh/step = a step's time in Dagster besides its sweep call + the "
          "mean gap between steps on one worker process; ovh % = that over a step's mean compute (goal <= 10 %); "
          "idle/step = ((wall - plan - writer) x processes - compute) / chunk steps: also the wait for the first "
          "step and the uneven end")


if __name__ == "__main__":
    main()
