"""Load test of the request path through a real ``dagster-daemon``: Redis stream ->
``backtest_request_sensor`` (its real interval) -> batch runs -> one ``backtest_done`` per request.

What runs for real: Redis (XADD by ``Bus.submit_request``, the sensor's
consumer group, the events stream), ``dagster-daemon run`` on fbt's code
location (bus on a private key prefix) and fbt's local instance (SQLite,
``dagster.yaml``: queued run coordinator, 4 concurrent runs), a run worker
process per batch run (the in-process executor inside it), the fbt engine,
MLflow (SQLite store) and the DuckDB warehouse. Set-up (sample ES bars,
``fbt ingest``, ``fbt continuous``) and one warm-up request (code location
import, Numba's compiled-code cache) are not counted.

Measured, in one run:

- lone requests: ``--lone`` requests one at a time (each waits for its
  ``backtest_done``): latency XADD -> ``backtest_done``, p50 and max;
  goal p50 < 15 s;
- a burst: ``--n`` requests queued at once (XADD burst): throughput from the
  first XADD to the last ``backtest_done`` (goal >= 20 requests/s), every
  request done exactly once (no duplicate, none missing), batch runs used;
- machine: cores, load average before and after.

    .venv/bin/python bench/load.py              # 1,000 requests + 5 lone ones (~2 min)
    .venv/bin/python bench/load.py --n 200 --lone 3 --json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

GOAL_RATE = 20.0  # requests/s of a 1,000-request burst
GOAL_P50 = 15.0  # s, a lone request's latency

LOCATION = '''"""fbt's code location with the bus on the key prefix {prefix!r} (bench/load.py)."""
from dagster import Definitions, EnvVar

from fbt_pipelines.location.definitions import build_defs, local_resources
from resources import BusResource


def _with_private_bus(fbt: Definitions) -> Definitions:
    bus = BusResource(url=EnvVar("REDIS_URL"), prefix={prefix!r})
    return Definitions(assets=fbt.assets, jobs=fbt.jobs, schedules=fbt.schedules, sensors=fbt.sensors,
                       executor=fbt.executor, resources={{**local_resources(), "bus": bus}})


defs = _with_private_bus(build_defs())
'''


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="requests of the burst (default 1000)")
    ap.add_argument("--lone", type=int, default=5, help="lone requests, one at a time (default 5)")
    ap.add_argument("--start", default="2022-01-03", help="first day of the sample ES bars")
    ap.add_argument("--end", default="2024-12-31", help="last day of the sample ES bars")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the burst (default 900)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    return ap.parse_args()


def _cli(env: dict[str, str], *args: str) -> None:
    proc = subprocess.run(list(args), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"{args} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


def _event_time(event: dict) -> float:
    return dt.datetime.fromisoformat(event["time"]).timestamp()


def _wait_events(bus, cursor: str, ids: set[str], deadline: float) -> tuple[dict[str, list[dict]], str]:
    """Every done/rejected event of ``ids`` after ``cursor`` until all have one or ``deadline`` passes."""
    import redis  # noqa: F401  (the bus's client)

    seen: dict[str, list[dict]] = {}
    client = bus._client if bus.available else None  # noqa: SLF001 - raw XREAD on the bus's events stream
    if client is None:
        raise SystemExit("Redis went away during the bench")
    while time.monotonic() < deadline and len(seen) < len(ids):
        reply = client.xread({bus.events_stream: cursor}, count=1000, block=1000)
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                cursor = entry_id.decode()
                event = json.loads(fields[b"body"])
                if event.get("request_id") in ids and event.get("type") in ("backtest_done", "request_rejected"):
                    seen.setdefault(event["request_id"], []).append(event)
    return seen, cursor


def main() -> int:
    args = _args()
    tmp = tempfile.TemporaryDirectory(prefix="fbt-load-")
    home = Path(tmp.name)
    prefix = f"fbtload-{uuid.uuid4().hex[:12]}"
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    env = {**os.environ, "FBT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "REDIS_URL": redis_url,
           "FBT_EXECUTOR": "in_process", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
           "MLFLOW_LOGGING_LEVEL": "WARNING", "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    for var in ("MLFLOW_TRACKING_URI", "FBT_WAREHOUSE", "FBT_DAGSTER_INSTANCE"):
        env.pop(var, None)
    os.environ.update({k: env[k] for k in ("FBT_HOME", "DAGSTER_HOME", "REDIS_URL")})
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))

    from fbt_pipelines.location.instance import ensure_dagster_home
    from fbt_pipelines.services.bus import Bus

    bus = Bus(redis_url, prefix)
    if not bus.ping():
        print(f"Redis at {redis_url} does not answer: the load test needs it", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    fbt = str(BIN / "fbt")
    log(f"set-up: sample ES bars {args.start} .. {args.end}, ingest, continuous series (FBT_HOME {home})")
    _cli(env, fbt, "sample-data", "--markets", "ES", "--start", args.start, "--end", args.end)
    _cli(env, fbt, "ingest", str(home / "landing" / "ES"))
    _cli(env, fbt, "continuous", "ES")
    ensure_dagster_home()
    location = home / "load_location.py"
    location.write_text(LOCATION.format(prefix=prefix))
    _cli(env, str(BIN / "dagster"), "sensor", "start", "backtest_request_sensor", "-f", str(location),
         "-d", str(REPO))
    setup_s = time.monotonic() - t0
    load_before = os.getloadavg()
    daemon_log = home / "daemon.log"
    with daemon_log.open("w") as out:
        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-f", str(location), "-d", str(REPO)],
                                  cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    figures: dict = {}
    try:
        request = {"market": "ES", "strategy": "sma_crossover"}
        log("warm-up: one request (daemon start, code location import, compiled-code cache)")
        t_w = time.monotonic()
        cursor = bus.events_cursor()
        rid = bus.submit_request({**request, "params": {"fast": 10}})
        seen, cursor = _wait_events(bus, cursor, {rid}, time.monotonic() + 600)
        if rid not in seen:
            raise SystemExit("warm-up request not done within 600 s:\n" + daemon_log.read_text()[-4000:])
        warmup_s = time.monotonic() - t_w

        lone: list[float] = []
        for i in range(args.lone):
            t_sub = time.time()
            rid = bus.submit_request({**request, "params": {"fast": 11 + i}})
            seen, cursor = _wait_events(bus, cursor, {rid}, time.monotonic() + 300)
            if rid not in seen:
                raise SystemExit(f"lone request {i} not done within 300 s")
            lone.append(_event_time(seen[rid][0]) - t_sub)
            log(f"  lone request {i + 1}/{args.lone}: {lone[-1]:.1f} s")

        log(f"burst: {args.n} requests queued at once")
        t_first = time.time()
        ids = [bus.submit_request({**request, "params": {"fast": 5 + i % 95, "slow": 100 + i // 95}})
               for i in range(args.n)]
        t_queued = time.time()
        seen, cursor = _wait_events(bus, cursor, set(ids), time.monotonic() + args.timeout)
        done = [e for events in seen.values() for e in events if e["type"] == "backtest_done"]
        rejected = [e for events in seen.values() for e in events if e["type"] == "request_rejected"]
        counts = Counter(e["request_id"] for e in done)
        last = max((_event_time(e) for e in done), default=float("nan"))
        rate = len(counts) / (last - t_first) if done else 0.0
        batches = Counter(e.get("batch") for e in done)
        import numpy as np

        figures = {
            "requests": args.n, "completed": len(counts), "rejected": len(rejected),
            "duplicates": sum(n - 1 for n in counts.values()), "missing": args.n - len(counts) - len(rejected),
            "burst_s": round(last - t_first, 2), "xadd_s": round(t_queued - t_first, 3),
            "requests_per_s": round(rate, 1), "goal_requests_per_s": GOAL_RATE,
            "batch_runs": len(batches), "largest_batch": max(batches.values(), default=0),
            "lone_latency_s": {"p50": round(float(np.median(lone)), 2) if lone else None,
                               "max": round(max(lone), 2) if lone else None, "n": len(lone)},
            "goal_lone_p50_s": GOAL_P50, "setup_s": round(setup_s, 1), "warmup_s": round(warmup_s, 1),
            "machine": {"cores": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                        "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        }
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
        bus.close()
        from tests.conftest import delete_prefix

        delete_prefix(redis_url, prefix)
        tmp.cleanup()
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        f = figures
        print()
        print(f"burst: {f['completed']}/{f['requests']} requests done once ({f['duplicates']} duplicates, "
              f"{f['missing']} missing, {f['rejected']} rejected) in {f['batch_runs']} batch runs "
              f"(largest {f['largest_batch']})")
        print(f"  first XADD -> last backtest_done {f['burst_s']:.1f} s: {f['requests_per_s']:.1f} requests/s "
              f"= {f['requests_per_s'] / GOAL_RATE:.2f}x the goal ({GOAL_RATE:.0f}/s)")
        lat = f["lone_latency_s"]
        if lat["p50"] is not None:
            print(f"lone request latency XADD -> backtest_done: p50 {lat['p50']:.1f} s, max {lat['max']:.1f} s "
                  f"(n={lat['n']}) = {lat['p50'] / GOAL_P50:.2f}x the goal's {GOAL_P50:.0f} s (below 1 meets it)")
        m = f["machine"]
        print(f"machine: {m['cores']} cores, load average {m['loadavg_before'][0]:.2f} before / "
              f"{m['loadavg_after'][0]:.2f} after; set-up {f['setup_s']:.0f} s and warm-up {f['warmup_s']:.0f} s "
              "not counted")
    return 0 if figures.get("missing", 1) == 0 and figures.get("duplicates", 1) == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
