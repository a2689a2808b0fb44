"""Integration tests of the Redis adapter (`Bus`) and local Redis helpers.

They run against a real Redis (see the ``redis_url`` fixture in conftest):
db 15 of ``REDIS_URL`` if it answers, else a private ``redis-server``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time

import pandas as pd
import pyarrow.ipc as ipc
import pytest
import redis

from fbt_pipelines.services import local as local_services
from fbt_pipelines.services.local import ensure_redis, redis_reachable, start_local_redis
from fbt_pipelines.services.bus import DEFAULT_TTL_SECONDS, Bus, BusUnavailable

UNREACHABLE = "redis://127.0.0.1:1/0"


@pytest.fixture
def raw(redis_url: str):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ts": pd.to_datetime(
                ["2024-03-01 14:30", "2024-03-04 14:30", "2024-03-05 14:30"], utc=True
            ),
            "close": [5123.25, 5130.5, float("nan")],
            "volume": pd.array([1200, 0, 987654321012], dtype="int64"),
            "contract": ["ESH24", "ESH24", "ESM24"],
        }
    )


# -- cache -------------------------------------------------------------------
def test_cache_round_trip_preserves_dtypes_and_values(bus: Bus, raw: redis.Redis) -> None:
    frame = _frame()
    assert bus.cache_put("continuous", "v1", frame) is True

    got = bus.cache_get("continuous", "v1")
    assert got is not None
    pd.testing.assert_frame_equal(got, frame)
    assert str(got["ts"].dt.tz) == "UTC"
    assert got["volume"].dtype == "int64" and got["close"].dtype == "float64"

    raw_bytes = raw.get(f"{bus.prefix}:cache:continuous:v1")
    assert raw_bytes and not raw_bytes.startswith(b"\x80")  # not a pickle
    table = ipc.open_stream(raw_bytes).read_all()
    assert table.column_names == list(frame.columns)
    assert table.num_rows == 3


def test_cache_ttl_and_miss(bus: Bus, raw: redis.Redis) -> None:
    assert bus.cache_get("continuous", "missing") is None
    bus.cache_put("features", "a", _frame())
    assert 0 < raw.ttl(f"{bus.prefix}:cache:features:a") <= DEFAULT_TTL_SECONDS
    bus.cache_put("features", "b", _frame(), ttl_seconds=None)
    assert raw.ttl(f"{bus.prefix}:cache:features:b") == -1  # no expiry


# -- events ------------------------------------------------------------------
def test_publish_reaches_subscriber_and_stream(bus: Bus, raw: redis.Redis) -> None:
    pubsub = raw.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"{bus.prefix}:events")
    deadline = time.monotonic() + 5
    while not pubsub.subscribed and time.monotonic() < deadline:
        pubsub.get_message(timeout=0.1)  # consume the subscribe confirmation
    assert pubsub.subscribed

    assert bus.publish("backtest.finished", {"root": "ES", "sharpe": 1.25}) is True

    message = None
    deadline = time.monotonic() + 5
    while message is None and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
    pubsub.close()
    assert message is not None, "subscriber received nothing"
    event = json.loads(message["data"])
    assert event["type"] == "backtest.finished"
    assert event["root"] == "ES" and event["sharpe"] == 1.25
    assert pd.Timestamp(event["time"]).tz is not None  # UTC ISO time
    assert abs(pd.Timestamp(event["time"]) - pd.Timestamp.now(tz="UTC")) < pd.Timedelta("1min")

    assert raw.xlen(f"{bus.prefix}:events:stream") == 1
    bus.publish("backtest.started", {"root": "CL"})
    events = bus.recent_events(10)
    assert [e["type"] for e in events] == ["backtest.finished", "backtest.started"]
    assert bus.recent_events(1)[0]["root"] == "CL"


def test_event_stream_is_capped(bus: Bus, redis_url: str, raw: redis.Redis) -> None:
    small = Bus(redis_url, prefix=bus.prefix, events_maxlen=10)  # keys cleaned by `bus`
    for i in range(600):
        small.publish("tick", {"i": i})
    small.close()
    assert raw.xlen(bus.events_stream) < 600  # approximate trimming (~) keeps whole nodes
    assert bus.recent_events(1)[0]["i"] == 599


# -- request queue -------------------------------------------------------------
def test_request_queue_read_ack_and_reclaim(bus: Bus) -> None:
    ids = [
        bus.submit_request({"root": "ES", "strategy": "trend"}),
        bus.submit_request({"root": "CL", "strategy": "carry"}),
        bus.submit_request({"root": "GC", "strategy": "trend", "request_id": "mine"}),
    ]
    assert ids[2] == "mine"
    assert all(len(i) == 32 for i in ids[:2]) and ids[0] != ids[1]
    assert bus.queue_depth() == {"length": 3, "pending": 0}

    got = bus.read_requests("sensor-a")
    assert [req["request_id"] for _, req in got] == ids
    assert got[0][1] == {"root": "ES", "strategy": "trend", "request_id": ids[0]}
    assert bus.queue_depth() == {"length": 3, "pending": 3}
    assert bus.read_requests("sensor-a") == []  # nothing new, nothing idle long enough

    bus.ack(got[0][0])
    bus.ack(got[1][0])
    assert bus.queue_depth() == {"length": 1, "pending": 1}

    # The unacked entry is not stolen before it has been idle claim_idle_ms ...
    assert bus.read_requests("sensor-b", claim_idle_ms=60_000) == []
    time.sleep(0.05)
    # ... and is reclaimed by another consumer once it has.
    reclaimed = bus.read_requests("sensor-b", claim_idle_ms=20)
    assert reclaimed == [got[2]]
    assert bus.queue_depth() == {"length": 1, "pending": 1}

    bus.ack(reclaimed[0][0])
    assert bus.queue_depth() == {"length": 0, "pending": 0}
    assert bus.read_requests("sensor-b", claim_idle_ms=0) == []


def test_requests_submitted_before_any_reader_are_delivered(redis_url: str, bus: Bus) -> None:
    producer = Bus(redis_url, prefix=bus.prefix)  # e.g. the CLI, a separate process
    rid = producer.submit_request({"root": "ZN"})
    producer.close()
    assert [req["request_id"] for _, req in bus.read_requests("sensor-a", count=5)] == [rid]


def test_read_requests_respects_count(bus: Bus) -> None:
    for i in range(5):
        bus.submit_request({"i": i})
    first = bus.read_requests("c", count=2)
    second = bus.read_requests("c", count=10)
    assert [r["i"] for _, r in first] == [0, 1]
    assert [r["i"] for _, r in second] == [2, 3, 4]


def test_new_requests_stay_pending_until_acked_and_come_back_to_their_reader(bus: Bus) -> None:
    ids = [bus.submit_request({"i": i}) for i in range(3)]
    first = bus.new_requests("sensor-a", count=2)
    rest = bus.new_requests("sensor-a", count=5)
    assert [r["request_id"] for _, r in first + rest] == ids
    assert first[0][1] == {"i": 0, "request_id": ids[0]}
    assert bus.new_requests("sensor-a", count=5) == []  # each entry is new once
    assert bus.new_requests("sensor-a", count=0) == []
    assert bus.queue_depth() == {"length": 3, "pending": 3}  # read, none acknowledged

    # the reader gets back everything it holds at once, however recently read (a restart under the same name)
    assert bus.pending_requests("sensor-a", min_idle_ms=60_000) == first + rest
    # another reader takes none of it before it has been idle min_idle_ms ...
    assert bus.pending_requests("sensor-b", min_idle_ms=60_000) == []
    bus.ack(first[0][0], first[1][0])  # several in one call
    assert bus.queue_depth() == {"length": 1, "pending": 1}
    time.sleep(0.05)
    # ... and takes it over once it has; the first reader no longer holds it
    assert bus.pending_requests("sensor-b", min_idle_ms=20) == rest
    assert bus.pending_requests("sensor-a", min_idle_ms=60_000) == []
    assert bus.queue_depth() == {"length": 1, "pending": 1}  # taking over is not acknowledging
    bus.ack(rest[0][0])
    assert bus.queue_depth() == {"length": 0, "pending": 0}
    assert bus.pending_requests("sensor-b", min_idle_ms=0) == []


def test_pending_requests_takes_over_the_whole_backlog_and_returns_the_oldest(bus: Bus, raw: redis.Redis) -> None:
    ids = [bus.submit_request({"i": i}) for i in range(250)]
    held = bus.new_requests("dead-reader", count=250)
    assert len(held) == 250
    got = bus.pending_requests("sensor", min_idle_ms=0, count=100)
    assert [r["request_id"] for _, r in got] == ids[:100]  # oldest first, count respected
    # all 250 taken over (XAUTOCLAIM is followed past its first page), not just the 100 returned
    owners = raw.xpending(bus.requests_stream, bus.group)["consumers"]
    assert owners == [{"name": b"sensor", "pending": 250}]
    bus.ack(*[entry_id for entry_id, _ in got])
    assert [r["request_id"] for _, r in bus.pending_requests("sensor", min_idle_ms=0, count=200)] == ids[100:]


# Redis 7 drops a deleted entry in XAUTOCLAIM whatever min_idle_ms (measured: with 600 s, an entry
# read a moment before); the bodiless read-back branch of pending_requests is for Redis 6.2.
@pytest.mark.parametrize("min_idle_ms", [60_000, 0])
def test_pending_entry_deleted_from_the_stream_is_dropped(bus: Bus, raw: redis.Redis,
                                                          caplog: pytest.LogCaptureFixture, min_idle_ms: int) -> None:
    kept = bus.submit_request({"i": 0})
    bus.submit_request({"i": 1})
    entries = bus.new_requests("sensor", count=5)
    raw.xdel(bus.requests_stream, entries[1][0])  # e.g. trimmed by an operator while pending
    with caplog.at_level(logging.WARNING, logger="fbt.bus"):
        assert [r["request_id"] for _, r in bus.pending_requests("sensor", min_idle_ms=min_idle_ms)] == [kept]
    assert entries[1][0] in caplog.text and "no body left" in caplog.text
    assert bus.queue_depth() == {"length": 1, "pending": 1}  # the deleted one left the group


def test_new_requests_rejects_a_bad_body_and_acknowledges_it(bus: Bus, raw: redis.Redis) -> None:
    bus.queue_depth()  # creates the group
    raw.xadd(bus.requests_stream, {"body": b"not json"})
    good = bus.submit_request({"market": "ES"})
    assert [r["request_id"] for _, r in bus.new_requests("sensor", count=5)] == [good]
    assert bus.queue_depth() == {"length": 1, "pending": 1}  # the bad one acknowledged and deleted
    (event,) = [e for e in bus.recent_events(5) if e["type"] == "request_rejected"]
    assert "not valid JSON" in event["reason"]


@pytest.mark.parametrize("call", [lambda b: b.pending_requests("s", count=0),
                                  lambda b: b.pending_requests("s", min_idle_ms=-1),
                                  lambda b: b.new_requests("s", count=-1),
                                  lambda b: b.read_requests("s", count=2.5)])
def test_queue_reads_refuse_a_bad_count_or_idle_time(bus: Bus, call) -> None:
    with pytest.raises(ValueError, match="count must be|min_idle_ms must be"):
        call(bus)


# -- Redis unreachable -------------------------------------------------------
def test_unreachable_redis_degrades_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fbt.bus")
    bus = Bus(UNREACHABLE, prefix="fbttest-down")

    assert bus.available is False
    assert bus.cache_get("continuous", "v1") is None
    assert bus.cache_put("continuous", "v1", _frame()) is False
    assert bus.publish("backtest.finished", {"root": "ES"}) is False
    assert bus.publish("backtest.finished", {"root": "CL"}) is False
    assert bus.recent_events(5) == []
    assert bus.ping() is False
    with pytest.raises(BusUnavailable, match="unreachable"):
        bus.read_requests("sensor-a")
    with pytest.raises(BusUnavailable):
        bus.submit_request({"root": "ES"})
    with pytest.raises(BusUnavailable):
        bus.queue_depth()
    with pytest.raises(BusUnavailable):
        bus.ack("0-1")
    with pytest.raises(BusUnavailable):
        bus.pending_requests("sensor-a")
    with pytest.raises(BusUnavailable):
        bus.new_requests("sensor-a")
    bus.close()

    warnings = [r for r in caplog.records if r.name == "fbt.bus" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert UNREACHABLE in message and "unreachable" in message
    assert "cache and events skipped" in message


# -- local services ------------------------------------------------------------
def test_start_local_redis_and_ensure_found(tmp_path) -> None:
    url, proc = start_local_redis(tmp_path / "redis")
    try:
        assert redis_reachable(url)
        assert ensure_redis(url, tmp_path / "other") == (url, "found")
        bus = Bus(url, prefix="fbttest-local")
        assert bus.ping() and bus.cache_put("x", "1", _frame())
        pd.testing.assert_frame_equal(bus.cache_get("x", "1"), _frame())
        bus.close()
        assert (tmp_path / "redis" / "redis.log").exists()
        assert not list((tmp_path / "redis").glob("*.rdb"))  # nothing persisted
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert not redis_reachable(url)


def test_ensure_redis_starts_detached_server_for_local_url(tmp_path) -> None:
    port = local_services._free_port()
    url = f"redis://127.0.0.1:{port}/0"
    assert ensure_redis(url, tmp_path) == (url, "started")
    pidfile = tmp_path / "redis.pid"
    try:
        assert redis_reachable(url)
        assert pidfile.exists()
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
    deadline = time.monotonic() + 10
    while redis_reachable(url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not redis_reachable(url)


def test_ensure_redis_unavailable_cases(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = "redis://192.0.2.1:6379/0"  # TEST-NET-1: never local, never answers
    assert ensure_redis(remote, tmp_path) == (remote, "unavailable")
    monkeypatch.setattr(local_services.shutil, "which", lambda name: None)
    assert ensure_redis(UNREACHABLE, tmp_path) == (UNREACHABLE, "unavailable")
    with pytest.raises(RuntimeError, match="redis-server not found"):
        start_local_redis(tmp_path)
