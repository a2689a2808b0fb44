"""The request queue's bus methods when the reading process is SIGKILLed.

A reader process reads backtest requests with ``Bus.new_requests`` and
acknowledges only those it has handled; it is SIGKILLed while holding read,
unacknowledged entries. Restarted under the same consumer name, it finds them
at once with ``Bus.pending_requests`` (no idle wait: ``min_idle_ms`` is 60 s
here) with their bodies intact, then reads the rest: every request is handled
and acknowledged, none twice, the queue ends empty.

This tests the bus alone. That the backtest request sensor, built on these
methods, gives each request exactly one Dagster run through a killed
``dagster-daemon`` is tests/integration/test_request_daemon_crash.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

from fbt_pipelines.services.bus import Bus
from tests.conftest import delete_prefix

REPO = Path(__file__).resolve().parents[2]
N = 200

READER = r"""
import json, os, signal, sys
from fbt_pipelines.services.bus import Bus

url, prefix, log_path, crash_after = sys.argv[1:5]
bus = Bus(url, prefix)
handled = 0
with open(log_path, "a") as log:
    def handle(entries, source):
        global handled
        for entry_id, body in entries:
            log.write(json.dumps({"request_id": body["request_id"], "i": body["i"], "source": source}) + "\n")
            log.flush()
            handled += 1
            if handled == int(crash_after):
                os.kill(os.getpid(), signal.SIGKILL)  # handled, not acknowledged; the rest of the batch held
            bus.ack(entry_id)
    handle(bus.pending_requests("reader", min_idle_ms=60_000, count=100), "pending")
    while entries := bus.new_requests("reader", count=25):
        handle(entries, "new")
"""


def read(redis_url: str, prefix: str, log: Path, crash_after: int) -> int:
    proc = subprocess.run([sys.executable, "-c", READER, redis_url, prefix, str(log), str(crash_after)],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr[-2000:]
    return proc.returncode


def test_a_killed_reader_finds_its_unacknowledged_requests_at_once(redis_url, tmp_path):
    prefix = f"fbttest-{uuid.uuid4().hex[:12]}"
    bus = Bus(redis_url, prefix)
    log = tmp_path / "handled.jsonl"
    try:
        ids = [bus.submit_request({"market": "ES", "i": i}) for i in range(N)]
        # dies after handling its 60th request: the 3rd batch of 25 read, 9 of it acknowledged
        assert read(redis_url, prefix, log, crash_after=60) == -signal.SIGKILL
        assert bus.queue_depth() == {"length": N - 59, "pending": 16}
        # the same reader again: its 16 held entries first (not idle 60 s: taken back at once), then the rest
        assert read(redis_url, prefix, log, crash_after=-1) == 0
        assert bus.queue_depth() == {"length": 0, "pending": 0}

        handled = [json.loads(line) for line in log.read_text().splitlines()]
        first, second = handled[:60], handled[60:]
        assert [h["i"] for h in first] == list(range(60))
        assert [h["source"] for h in second[:16]] == ["pending"] * 16
        assert [h["i"] for h in second[:16]] == list(range(59, 75))  # the one handled unacked, and 15 unhandled
        assert [h["i"] for h in second[16:]] == list(range(75, N))
        assert all(h["request_id"] == ids[h["i"]] for h in handled)  # bodies intact
        counts = Counter(h["request_id"] for h in handled)
        assert set(counts) == set(ids)  # none lost
        assert [rid for rid, n in counts.items() if n > 1] == [ids[59]]  # only the unacknowledged one twice
    finally:
        bus.close()
        delete_prefix(redis_url, prefix)
