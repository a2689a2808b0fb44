"""200 backtest requests, the consumer SIGKILLed between launching a run and
acknowledging its request: every request is launched exactly once.

The consumer is the sensor's logic (``read_requests`` with the consumer
group, ``request_to_run``, ack after the run request) in a subprocess; a
"launch" is recorded under the run key (= request id) with INSERT OR IGNORE,
which is what Dagster's sensor daemon guarantees for run keys. Delivery is
at least once (a killed consumer's pending entry is reclaimed by the next);
the run key makes the effect exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import duckdb
import pytest

from fbt_pipelines.stores.bus import Bus
from tests.conftest import delete_prefix

REPO = Path(__file__).resolve().parents[2]
N = 200

CONSUMER = r"""
import os, signal, sys, duckdb
from fbt_pipelines.automation import request_to_run
from fbt_pipelines.stores.bus import Bus

url, prefix, name, db, crash_after, idle_ms = sys.argv[1:7]
bus = Bus(url, prefix)
conn = duckdb.connect(db)
conn.execute("CREATE TABLE IF NOT EXISTS launches (run_key VARCHAR PRIMARY KEY, consumer VARCHAR)")
conn.execute("CREATE TABLE IF NOT EXISTS deliveries (run_key VARCHAR, consumer VARCHAR)")
launched = 0
while True:
    entries = bus.read_requests(name, count=25, claim_idle_ms=int(idle_ms))
    if not entries:
        break
    for entry_id, body in entries:
        run = request_to_run(body, {"ES", "CL"})
        conn.execute("INSERT INTO deliveries VALUES (?, ?)", [run.run_key, name])
        conn.execute("INSERT OR IGNORE INTO launches VALUES (?, ?)", [run.run_key, name])
        conn.execute("CHECKPOINT")
        launched += 1
        if launched == int(crash_after):
            os.kill(os.getpid(), signal.SIGKILL)  # launched, not yet acknowledged
        bus.ack(entry_id)
"""


def consume(redis_url: str, prefix: str, name: str, db: Path, crash_after: int, idle_ms: int) -> int:
    proc = subprocess.run([sys.executable, "-c", CONSUMER, redis_url, prefix, name, str(db), str(crash_after),
                           str(idle_ms)], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    return proc.returncode


@pytest.mark.slow
def test_every_request_runs_exactly_once_when_the_consumer_is_killed(redis_url, tmp_path):
    prefix = f"fbttest-{uuid.uuid4().hex[:12]}"
    bus = Bus(redis_url, prefix)
    db = tmp_path / "launches.duckdb"
    try:
        ids = [bus.submit_request({"market": "ES" if i % 2 else "CL", "strategy": "sma_crossover",
                                   "params": {"fast": 5 + i % 30}}) for i in range(N)]
        # first consumer dies by SIGKILL right after launching its 73rd run, before the ack
        assert consume(redis_url, prefix, "sensor-a", db, crash_after=73, idle_ms=60_000) == -signal.SIGKILL
        depth = bus.queue_depth()
        assert depth["pending"] >= 1  # read (and launched) but never acknowledged
        # the next consumer reclaims what the dead one held, then reads the rest
        assert consume(redis_url, prefix, "sensor-b", db, crash_after=-1, idle_ms=0) == 0
        assert bus.queue_depth() == {"length": 0, "pending": 0}
        with duckdb.connect(str(db), read_only=True) as conn:
            launches = conn.execute("SELECT run_key, consumer FROM launches").fetchall()
            deliveries = conn.execute("SELECT run_key, count(*) FROM deliveries GROUP BY 1 HAVING count(*) > 1").fetchall()
        assert sorted(k for k, _ in launches) == sorted(ids)  # all 200, each once
        assert {c for _, c in launches} == {"sensor-a", "sensor-b"}
        assert len(deliveries) >= 1  # at least one request was delivered twice ...
        redelivered = {k for k, _ in deliveries}
        assert all(dict(launches)[k] == "sensor-a" for k in redelivered)  # ... and launched only the first time
    finally:
        delete_prefix(redis_url, prefix)
