"""Load test of the request path: N backtest requests on the Redis stream ->
``backtest_request_sensor`` -> runs of ``backtest_market`` -> ``backtest_done``.

What runs for real: Redis (XADD by ``Bus.submit_request``, the sensor's
consumer group, the events stream), the Dagster sensor (evaluated with
``build_sensor_context`` back to back, no 10 s interval), a Dagster run per
request executed in process against a SQLite instance (the ``backtests``
asset of ``backtest_market`` with the request's run config and tags, as
tests/integration/test_request_queue.py does), the fbt engine, MLflow
(SQLite store) and the DuckDB warehouse. What is not: the daemon's process
per run (a fresh process imports the code location, ~5 s of CPU on this
machine, see docs/operations.md) and the sensor's 10 s minimum interval.

All N requests are queued at once (XADD burst), then drained. Reported:

- throughput: requests / wall time from the first XADD to the last
  ``backtest_done``;
- latency percentiles (p50/p90/p99) from XADD to the ``backtest_done``
  event's publish time (end to end, queue wait included), and the service
  time (sensor read -> ``backtest_done``) without the queue wait;
- where a run's time goes: engine, MLflow logging, DuckDB reads and writes,
  and the rest (Dagster run bookkeeping: run/event storage, config, checks);
- machine: cores, load average before/after, this process's CPU use.

    .venv/bin/python bench/load.py            # 1,000 requests (~minutes)
    .venv/bin/python bench/load.py --n 50     # quick run
    .venv/bin/python bench/load.py --n 200 --json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="requests to queue (default 1000)")
    ap.add_argument("--markets", default="ES", help="comma-separated roots the requests spread over (default ES)")
    ap.add_argument("--start", default="2022-01-03", help="first day of the sample bars (default 2022-01-03)")
    ap.add_argument("--end", default="2024-12-31", help="last day of the sample bars (default 2024-12-31)")
    ap.add_argument("--home", help="FBT_HOME to use (default: a new temporary folder, deleted afterwards)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--profile", action="store_true",
                    help="profile the drain (cProfile) and print CPU self-time by package (slows it down)")
    return ap.parse_args()


class Stopwatch:
    """Accumulated seconds per label, for wrapped functions."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self._depth: dict[str, int] = defaultdict(int)

    def wrap(self, owner: object, name: str, label: str) -> None:
        fn = getattr(owner, name)

        def timed(*a, **kw):
            self._depth[label] += 1  # nested calls under one label count once
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                self._depth[label] -= 1
                if not self._depth[label]:
                    self.seconds[label] += time.perf_counter() - t0
                    self.cpu[label] += time.process_time() - c0

        setattr(owner, name, timed)

    @contextmanager
    def section(self, label: str):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[label] += time.perf_counter() - t0
            self.cpu[label] += time.process_time() - c0


def pct(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main() -> int:
    args = _args()
    tmp = None
    if args.home:
        home = Path(args.home).resolve()
    else:
        tmp = tempfile.TemporaryDirectory(prefix="fbt-load-")
        home = Path(tmp.name)
    os.environ["FBT_HOME"] = str(home)  # before fbt_pipelines.config is imported
    for var in ("MLFLOW_TRACKING_URI", "FBT_WAREHOUSE", "DAGSTER_HOME"):
        os.environ.pop(var, None)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("dagster").setLevel(logging.WARNING)

    t_import = time.perf_counter()
    import redis
    from dagster import AssetKey, AssetSelection, DagsterInstance, Definitions, build_sensor_context, materialize

    import assets.backtests
    import fbt_pipelines.stores.tracking as tracking_mod
    import fbt_pipelines.stores.warehouse as wh_mod
    from fbt_pipelines.automation import backtest_job, backtest_request_sensor
    from fbt_pipelines.catalog import market_spec
    from fbt_pipelines.config import paths, redis_url
    from fbt_pipelines.definitions import ALL_ASSETS, local_resources
    from fbt_pipelines.marketdata.sample_data import write_sample_data
    from fbt_pipelines.stores.bus import Bus
    from resources import BusResource

    import_s = time.perf_counter() - t_import
    roots = [m.strip().upper() for m in args.markets.split(",") if m.strip()]
    url = redis_url()
    prefix = f"fbtload-{uuid.uuid4().hex[:10]}"
    bus = Bus(url, prefix)
    if not bus.ping():
        print(f"Redis at {url} does not answer: the load test needs it", file=sys.stderr)
        return 1
    resources = {**local_resources(), "bus": BusResource(url=url, prefix=prefix)}
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    instance = DagsterInstance.local_temp(str(home / "dagster"))
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))
    try:
        # -- set-up: sample bars, catalogue, ingest (not timed in the figures) --
        t0 = time.perf_counter()
        write_sample_data(paths().landing, [market_spec(r) for r in roots],
                          dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end), 0)
        instance.add_dynamic_partitions("markets", roots)
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        assert materialize(ALL_ASSETS, selection=AssetSelection.assets("market_catalog"), resources=resources,
                           instance=instance, run_config=quiet).success
        for root in roots:
            assert materialize(ALL_ASSETS, selection=AssetSelection.assets("raw_bars", "roll_schedule",
                                                                           "continuous_prices", "features"),
                               partition_key=root, resources=resources, instance=instance, run_config=quiet).success
        setup_s = time.perf_counter() - t0
        log(f"set-up: {', '.join(roots)} {args.start}..{args.end} ingested in {setup_s:.1f} s "
            f"(imports {import_s:.1f} s), FBT_HOME={home}")

        job = Definitions(assets=ALL_ASSETS, jobs=[backtest_job], resources=resources).resolve_job_def(
            backtest_job.name)
        only_backtests = [AssetKey("backtests")]
        ctx = build_sensor_context(instance=instance, resources={"bus": resources["bus"]})

        def execute(run_request) -> None:
            result = job.execute_in_process(
                run_config={**run_request.run_config, **quiet}, instance=instance, partition_key=run_request.partition_key,
                tags=run_request.tags, asset_selection=only_backtests, raise_on_error=False)
            if not result.success:
                raise SystemExit(f"run for request {run_request.run_key} failed")

        # -- warm-up: one request end to end (numba compile, MLflow schema) --
        t0 = time.perf_counter()
        bus.submit_request({"market": roots[0], "strategy": "sma_crossover", "params": {"fast": 5, "slow": 60}})
        for rr in backtest_request_sensor(ctx):
            execute(rr)
        warmup_s = time.perf_counter() - t0
        log(f"warm-up request (numba compile, MLflow first use): {warmup_s:.1f} s")

        watch = Stopwatch()
        watch.wrap(assets.backtests, "backtest_market", "engine (backtest_market)")
        watch.wrap(tracking_mod.Tracking, "log_backtest", "MLflow log_backtest")
        watch.wrap(wh_mod, "replace_partition", "DuckDB writes")
        watch.wrap(assets.backtests, "read_partition_cached", "DuckDB/Redis reads")
        watch.wrap(assets.backtests.wh, "read_partition", "DuckDB/Redis reads")

        # -- the burst: N requests queued at once --
        events_cursor = bus.events_cursor()
        load_before = os.getloadavg()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        submitted: dict[str, float] = {}
        t_first = time.time()
        for i in range(args.n):
            body = {"market": roots[i % len(roots)], "strategy": "sma_crossover",
                    "params": {"fast": 5 + i % 40, "slow": 60 + (i // 40) % 100}}
            submitted[bus.submit_request(body)] = time.time()
        xadd_s = time.time() - t_first
        log(f"queued {args.n} requests in {xadd_s:.2f} s; draining through the sensor ...")

        dequeued: dict[str, float] = {}
        run_started: dict[str, float] = {}
        run_seconds: list[float] = []
        ticks, tick_seconds, rejected = 0, 0.0, 0
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        while len(dequeued) < args.n:
            with watch.section("sensor ticks"):
                t_tick = time.perf_counter()
                out = backtest_request_sensor(ctx)
                tick_seconds += time.perf_counter() - t_tick
            ticks += 1
            if not isinstance(out, list):  # SkipReason: nothing left (rejections are counted below)
                break
            now = time.time()
            for rr in out:
                dequeued[rr.run_key] = now
                run_started[rr.run_key] = time.time()
                t_run = time.perf_counter()
                with watch.section("runs (in process)"):
                    execute(rr)
                run_seconds.append(time.perf_counter() - t_run)
            if ticks % 10 == 0:
                log(f"  {len(dequeued)}/{args.n} runs done, {time.time() - t_first:.0f} s")
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        load_after = os.getloadavg()
        if profiler is not None:
            profiler.disable()
            _print_profile(profiler)

        # -- results: backtest_done events carry their publish time --
        client = redis.Redis.from_url(url)
        announced: dict[str, float] = {}
        for _id, fields in client.xrange(bus.events_stream, min=f"({events_cursor}"):
            event = json.loads(fields[b"body"])
            if event.get("type") == "request_rejected" and event.get("request_id") in submitted:
                rejected += 1
            if event.get("type") == "backtest_done" and event.get("request_id") in submitted:
                announced[event["request_id"]] = dt.datetime.fromisoformat(event["time"]).timestamp()
        client.close()
        done = [r for r in submitted if r in announced]
        t_last = max(announced.values()) if announced else time.time()
        wall = t_last - t_first
        latency = [announced[r] - submitted[r] for r in done]
        queue_wait = [dequeued[r] - submitted[r] for r in done if r in dequeued]
        service = [announced[r] - run_started[r] for r in done if r in run_started]
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        outer = ("runs (in process)", "sensor ticks")
        parts = {k: v for k, v in watch.seconds.items() if k not in outer}
        parts["Dagster run bookkeeping + rest"] = watch.seconds["runs (in process)"] - sum(parts.values())
        cpu_parts = {k: v for k, v in watch.cpu.items() if k not in outer}
        cpu_parts["Dagster run bookkeeping + rest"] = watch.cpu["runs (in process)"] - sum(cpu_parts.values())
        figures = {
            "requests": args.n, "completed": len(done), "rejected": rejected, "markets": roots,
            "bars_window": [args.start, args.end], "wall_s": round(wall, 2),
            "throughput_req_per_s": round(len(done) / wall, 3) if wall > 0 else None,
            "latency_s": {"p50": round(pct(latency, 50), 2), "p90": round(pct(latency, 90), 2),
                          "p99": round(pct(latency, 99), 2), "max": round(max(latency, default=float("nan")), 2)},
            "queue_wait_s": {"p50": round(pct(queue_wait, 50), 2), "p90": round(pct(queue_wait, 90), 2),
                             "p99": round(pct(queue_wait, 99), 2)},
            "service_time_s": {"p50": round(pct(service, 50), 3), "p90": round(pct(service, 90), 3),
                               "p99": round(pct(service, 99), 3)},
            "run_s": {"p50": round(pct(run_seconds, 50), 3), "p90": round(pct(run_seconds, 90), 3)},
            "sensor": {"ticks": ticks, "mean_tick_s": round(tick_seconds / max(ticks, 1), 4),
                       "share_of_wall": round(tick_seconds / wall, 4) if wall > 0 else None},
            "run_time_breakdown_s": {k: round(v, 1) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])},
            "run_cpu_breakdown_s": {k: round(cpu_parts.get(k, 0.0), 1) for k in
                                    sorted(parts, key=lambda k: -parts[k])},
            "xadd_burst_s": round(xadd_s, 3), "warmup_s": round(warmup_s, 1), "setup_s": round(setup_s, 1),
            "machine": {"cores": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                        "loadavg_after": [round(x, 2) for x in load_after],
                        "process_cpu_s": round(cpu, 1), "process_cpu_share": round(cpu / wall, 2) if wall else None},
            "daemon_sensor_cap_req_per_s": 20 / 10,  # count=20 per tick, minimum_interval_seconds=10
        }
        if args.json:
            print(json.dumps(figures, indent=2))
        else:
            _print(figures)
        return 0 if len(done) == args.n else 1
    finally:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            client.delete(*keys)
        client.close()
        bus.close()
        instance.dispose()
        if tmp is not None:
            tmp.cleanup()


def _package(filename: str) -> str:
    """'dagster', 'mlflow', 'sqlalchemy', 'fbt_pipelines', ... for a code file."""
    parts = Path(filename).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].split(".")[0]
    for mine in ("fbt_pipelines", "assets", "resources"):
        if mine in parts:
            return mine
    return "python stdlib / builtins" if filename.startswith(("~", "<")) or "python3" in filename else filename


def _print_profile(profiler) -> None:
    import pstats

    by_package: dict[str, float] = defaultdict(float)
    for (filename, _line, _fn), (_cc, _nc, tottime, _ct, _callers) in pstats.Stats(profiler).stats.items():
        by_package[_package(filename)] += tottime
    total = sum(by_package.values())
    print(f"CPU self-time by package over the drain ({total:.1f} s profiled):")
    for name, sec in sorted(by_package.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {name:<32} {sec:8.1f} s  {sec / total:6.1%}")


def _print(f: dict) -> None:
    lat, svc = f["latency_s"], f["service_time_s"]
    print()
    print(f"{f['completed']}/{f['requests']} requests done ({f['rejected']} rejected) on {', '.join(f['markets'])} "
          f"({f['bars_window'][0]}..{f['bars_window'][1]}) in {f['wall_s']:.1f} s: "
          f"{f['throughput_req_per_s']:.2f} requests/s")
    print(f"latency XADD -> backtest_done (queue wait included): p50 {lat['p50']:.1f} s, p90 {lat['p90']:.1f} s, "
          f"p99 {lat['p99']:.1f} s, max {lat['max']:.1f} s")
    qw = f["queue_wait_s"]
    print(f"  of which queue wait XADD -> sensor read:            p50 {qw['p50']:.1f} s, p90 {qw['p90']:.1f} s, "
          f"p99 {qw['p99']:.1f} s")
    print(f"service time run start -> backtest_done:              p50 {svc['p50']:.3f} s, p90 {svc['p90']:.3f} s, "
          f"p99 {svc['p99']:.3f} s")
    print(f"sensor: {f['sensor']['ticks']} ticks, {f['sensor']['mean_tick_s'] * 1000:.1f} ms each "
          f"({f['sensor']['share_of_wall']:.1%} of the wall time); through the daemon it reads at most 20 "
          f"requests per 10 s tick = {f['daemon_sensor_cap_req_per_s']:.1f} requests/s")
    total = sum(f["run_time_breakdown_s"].values())
    total_cpu = sum(f["run_cpu_breakdown_s"].values()) or float("nan")
    print(f"where the runs' {total:.1f} s wall ({total_cpu:.1f} s CPU) went:        wall            CPU")
    for k, v in f["run_time_breakdown_s"].items():
        c = f["run_cpu_breakdown_s"][k]
        print(f"  {k:<32} {v:8.1f} s {v / total:6.1%}  {c:8.1f} s {c / total_cpu:6.1%}")
    m = f["machine"]
    print(f"machine: {m['cores']} cores, load average {m['loadavg_before'][0]:.2f} before / "
          f"{m['loadavg_after'][0]:.2f} after; this process used {m['process_cpu_s']:.0f} s CPU "
          f"({m['process_cpu_share']:.2f} cores)")
    print(f"(set-up {f['setup_s']:.0f} s and warm-up {f['warmup_s']:.0f} s not counted)")


if __name__ == "__main__":
    raise SystemExit(main())
