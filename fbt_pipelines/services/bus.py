"""The Redis adapter: frame cache, event bus and backtest request queue.

Redis is optional for fbt. When it cannot be reached, :class:`Bus` logs one
warning (logger ``fbt.bus``) and the cache and event methods degrade to
no-ops (``cache_get`` -> ``None``, ``cache_put``/``publish`` -> ``False``).
The request-queue methods raise :class:`BusUnavailable` instead, so a sensor
can report the outage rather than silently see an empty queue.

Keys (``prefix`` defaults to ``fbt``):

- ``<prefix>:cache:<namespace>:<version>``  Arrow IPC stream bytes (never pickle)
- ``<prefix>:events``                       pub/sub channel, JSON messages
- ``<prefix>:events:stream``                capped stream of the same events
- ``<prefix>:requests``                     request stream, group ``<prefix>-sensor``

The request queue delivers at least once: an entry read by the consumer
group stays pending until :meth:`Bus.ack`, and the reader acknowledges it
only once it has been handled (the sensor: once the request's Dagster run
exists). :meth:`Bus.pending_requests` returns what a reader holds without an
ack (a reader that crashed finds its entries there again) and takes over the
entries of a dead reader after ``min_idle_ms``; :meth:`Bus.new_requests`
reads entries never delivered.

Untrusted bytes: a cache value that is not a readable Arrow IPC stream is a
cache miss (logged, key deleted); a request body over the size limit, not
JSON or not a JSON object is rejected (logged, a ``request_rejected`` event
published, then acked). Nothing read from Redis is unpickled or evaluated.
Passwords in ``url`` (``redis://:pw@host``) never appear in messages
(:func:`redact_url`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import redis

from fbt_pipelines.services import limits
from fbt_pipelines.errors import FbtError

log = logging.getLogger("fbt.bus")

T = TypeVar("T")
# URLs already reported down in this process: a pipeline builds a Bus per run,
# and the trader should see one warning per outage, not one per run.
_REPORTED_DOWN: set[str] = set()
DEFAULT_TTL_SECONDS = 7 * 24 * 3600
_CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


class BusUnavailable(FbtError):
    """Redis cannot be reached, so the backtest request queue cannot be used."""


def _entry_id(raw: Any) -> str:
    """A stream entry id as ``str`` (redis-py returns ``bytes``)."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _check_count(count: int) -> None:
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"count must be a positive whole number, got {count!r}")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and messages)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<malformed Redis URL>"


def describe_failure(url: str, exc: BaseException) -> str:
    """One line saying why Redis at ``url`` cannot be used (wrong password named as such)."""
    where = redact_url(url)
    if isinstance(exc, redis.AuthenticationError):
        return f"Redis at {where} refused the credentials ({exc}); check the password in REDIS_URL"
    return f"Redis at {where} is unreachable ({exc})"


class Bus:
    """Redis-backed cache, events and request queue under one key prefix.

    The connection is opened lazily on first use. After a failed probe the
    Bus stays "unavailable" for ``retry_interval`` seconds before probing
    again; the warning is logged once per outage and process, not once per
    call or per Bus.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "fbt",
        *,
        socket_timeout: float = 2.0,
        retry_interval: float = 30.0,
        events_maxlen: int = 10_000,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.events_channel = f"{prefix}:events"
        self.events_stream = f"{prefix}:events:stream"
        self.requests_stream = f"{prefix}:requests"
        self.group = f"{prefix}-sensor"
        self.events_maxlen = events_maxlen
        self._socket_timeout = socket_timeout
        self._retry_interval = retry_interval
        self._client: redis.Redis | None = None
        self._up: bool | None = None  # None: not probed yet
        self._last_probe = 0.0
        self._group_ready = False
        self._last_error = f"Redis at {redact_url(url)} is unreachable"

    # -- connection -------------------------------------------------------
    @property
    def available(self) -> bool:
        """True if Redis answers (probed lazily, re-probed after ``retry_interval``)."""
        if self._up:
            return True
        if self._up is False and time.monotonic() - self._last_probe < self._retry_interval:
            return False
        self._last_probe = time.monotonic()
        if self._client is None:
            self._client = redis.Redis.from_url(
                self.url,
                socket_connect_timeout=self._socket_timeout,
                socket_timeout=self._socket_timeout,
            )
        try:
            self._client.ping()
        except _CONNECTION_ERRORS as exc:
            self._mark_down(exc)
            return False
        self._up = True
        _REPORTED_DOWN.discard(self.url)
        return True

    def _mark_down(self, exc: BaseException) -> None:
        self._up, self._group_ready = False, False
        self._last_probe = time.monotonic()
        self._last_error = describe_failure(self.url, exc)
        if self.url not in _REPORTED_DOWN:
            _REPORTED_DOWN.add(self.url)
            log.warning("%s; cache and events skipped", self._last_error)

    def _soft(self, default: T, fn: Callable[[redis.Redis], T]) -> T:
        """Run ``fn(client)``; on a connection failure return ``default``."""
        if not self.available:
            return default
        try:
            return fn(self._client)  # type: ignore[arg-type]
        except _CONNECTION_ERRORS as exc:
            self._mark_down(exc)
            return default

    def _hard(self, fn: Callable[[redis.Redis], T]) -> T:
        """Run ``fn(client)``; on a connection failure raise :class:`BusUnavailable`."""
        if not self.available:
            raise BusUnavailable(f"{self._last_error}; request queue unavailable")
        try:
            if not self._group_ready:
                self._ensure_group(self._client)  # type: ignore[arg-type]
            try:
                return fn(self._client)  # type: ignore[arg-type]
            except redis.ResponseError as exc:  # stream or group deleted under us
                if "NOGROUP" not in str(exc):
                    raise
                self._ensure_group(self._client)  # type: ignore[arg-type]
                return fn(self._client)  # type: ignore[arg-type]
        except _CONNECTION_ERRORS as exc:
            self._mark_down(exc)
            raise BusUnavailable(f"{describe_failure(self.url, exc)}; request queue unavailable") from exc

    def ping(self) -> bool:
        """True if Redis answers PING now (probes even within the retry interval); never raises."""
        if self._up is False:
            self._up = None
        return self._soft(False, lambda r: bool(r.ping()))

    def close(self) -> None:
        """Close the connection pool; the Bus reconnects lazily if used again."""
        if self._client is not None:
            self._client.close()
        self._client, self._up, self._group_ready = None, None, False

    # -- cache --------------------------------------------------------------
    def cache_key(self, namespace: str, version: str) -> str:
        return f"{self.prefix}:cache:{namespace}:{version}"

    def cache_put(
        self,
        namespace: str,
        version: str,
        frame: pd.DataFrame,
        ttl_seconds: int | None = DEFAULT_TTL_SECONDS,
    ) -> bool:
        """Store ``frame`` as Arrow IPC stream bytes; ``ttl_seconds=None`` never expires."""
        table = pa.Table.from_pandas(frame, preserve_index=False)
        sink = pa.BufferOutputStream()
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        payload = sink.getvalue().to_pybytes()
        key = self.cache_key(namespace, version)
        return self._soft(False, lambda r: bool(r.set(key, payload, ex=ttl_seconds)))

    def cache_get(self, namespace: str, version: str) -> pd.DataFrame | None:
        """The cached frame, or ``None`` if absent, expired or Redis is unreachable."""
        key = self.cache_key(namespace, version)
        raw = self._soft(None, lambda r: r.get(key))
        if raw is None:
            return None
        try:
            # Arrow IPC only: a value that is not a valid stream (garbage, a
            # pickle, a truncated write) is a miss, never an error of the run.
            return ipc.open_stream(pa.py_buffer(raw)).read_all().to_pandas()
        except Exception as exc:  # noqa: BLE001 - any undecodable value is a miss
            log.warning("cache entry %s is not a readable Arrow IPC stream (%s: %s); treated as a miss and deleted",
                        key, type(exc).__name__, str(exc)[:200])
            self._soft(0, lambda r: r.delete(key))
            return None

    # -- events -------------------------------------------------------------
    def publish(self, event_type: str, payload: dict[str, Any]) -> bool:
        """Publish ``{**payload, type, time}`` as JSON to the channel and the capped stream."""
        event = {**payload, "type": event_type, "time": dt.datetime.now(dt.UTC).isoformat()}
        body = json.dumps(event, default=str)

        def _do(r: redis.Redis) -> bool:
            pipe = r.pipeline(transaction=False)
            pipe.publish(self.events_channel, body)
            pipe.xadd(self.events_stream, {"body": body}, maxlen=self.events_maxlen, approximate=True)
            pipe.execute()
            return True

        return self._soft(False, _do)

    def recent_events(self, n: int = 20) -> list[dict[str, Any]]:
        """The ``n`` most recent events from the stream, oldest first ([] if unreachable)."""
        entries = self._soft([], lambda r: r.xrevrange(self.events_stream, count=n))
        return [json.loads(fields[b"body"]) for _, fields in reversed(entries)]

    def events_cursor(self) -> str:
        """Id of the newest event now (``"0-0"`` if none): wait for events after it."""
        last = self._hard(lambda r: r.xrevrange(self.events_stream, count=1))
        return last[0][0].decode() if last else "0-0"

    def wait_for_event(self, request_id: str, after: str, timeout_s: float,
                       types: tuple[str, ...] = ("backtest_done", "request_rejected")) -> dict[str, Any] | None:
        """The first event of ``types`` for ``request_id`` after stream id
        ``after`` (blocking reads), or None when ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        cursor = after
        while (left := deadline - time.monotonic()) > 0:
            reply = self._hard(lambda r: r.xread({self.events_stream: cursor}, count=100,
                                                 block=max(1, int(min(left, 1.0) * 1000))))
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    cursor = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    event = json.loads(fields[b"body"])
                    if event.get("type") in types and event.get("request_id") == request_id:
                        return event
        return None

    # -- backtest request queue ----------------------------------------------
    def _ensure_group(self, r: redis.Redis) -> None:
        try:
            r.xgroup_create(self.requests_stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def submit_request(self, request: dict[str, Any]) -> str:
        """Queue a backtest request; returns its ``request_id`` (uuid4 hex if missing)."""
        request = dict(request)
        request.setdefault("request_id", uuid.uuid4().hex)
        body = json.dumps(request, default=str)
        limits.check_request_body(body)  # refuse here what the reader would reject
        self._hard(lambda r: r.xadd(self.requests_stream, {"body": body}))
        return str(request["request_id"])

    def read_requests(
        self, consumer: str, count: int = 10, claim_idle_ms: int = 60_000
    ) -> list[tuple[str, dict[str, Any]]]:
        """Up to ``count`` ``(entry_id, request)``: stale pending ones reclaimed first, then new.

        Entries pending (read but not acked) for at least ``claim_idle_ms`` by
        any consumer are taken over via XAUTOCLAIM; the rest are read with a
        non-blocking XREADGROUP ``>``. Every returned entry stays pending
        until :meth:`ack`. Entries whose body is over
        ``FBT_MAX_REQUEST_BYTES``, not JSON or not a JSON object are logged,
        announced as ``request_rejected`` events with the reason and acked
        (so they cannot jam the queue).
        """
        _check_count(count)

        def _do(r: redis.Redis) -> list[tuple[bytes, dict | None]]:
            # Redis 7: [next_id, claimed_entries, deleted_ids]; 6.2: no third element.
            claimed = r.xautoclaim(
                self.requests_stream, self.group, consumer, claim_idle_ms, start_id="0-0", count=count
            )[1]
            entries = [(eid, f) for eid, f in claimed if f is not None]
            if len(entries) < count:
                for _, new in r.xreadgroup(
                    self.group, consumer, {self.requests_stream: ">"}, count=count - len(entries)
                ) or []:
                    entries.extend(new)
            return entries

        return self._accept_entries(self._hard(_do))

    def pending_requests(
        self, consumer: str, min_idle_ms: int = 60_000, count: int = 100
    ) -> list[tuple[str, dict[str, Any]]]:
        """Up to ``count`` ``(entry_id, request)`` delivered to ``consumer`` and not yet acked, oldest first.

        First the group's entries held by any consumer and idle (not
        delivered or claimed) for at least ``min_idle_ms`` milliseconds are
        taken over by ``consumer`` (XAUTOCLAIM): a reader under another name
        that died leaves its entries there. Then ``consumer``'s own pending entries are read back
        (XREADGROUP from id ``0``, whatever their idle time: a reader that
        restarts under the same name sees at once what it held when it
        crashed). Nothing is acknowledged here except entries whose body was
        deleted from the stream (nothing left to handle) and rejected bodies
        (as in :meth:`read_requests`).
        """
        _check_count(count)
        if min_idle_ms < 0:
            raise ValueError(f"min_idle_ms must be >= 0, got {min_idle_ms}")

        def _do(r: redis.Redis) -> tuple[list[tuple[bytes, dict | None]], list[str]]:
            start, dropped = "0-0", []
            for _ in range(1000):  # each call scans at most 10 x count PEL entries
                # Redis 7: [next_id, claimed_entries, deleted_ids]; 6.2: no third element. (redis-py
                # drops next_id when JUSTID is asked, so the bodies come too; XREADGROUP returns them below.)
                reply = r.xautoclaim(self.requests_stream, self.group, consumer, min_idle_ms,
                                     start_id=start, count=count)
                dropped += [_entry_id(eid) for eid in (reply[2] if len(reply) > 2 else [])]
                start = _entry_id(reply[0])
                if start == "0-0":
                    break
            own = r.xreadgroup(self.group, consumer, {self.requests_stream: "0"}, count=count) or []
            return [entry for _, entries in own for entry in entries], dropped

        entries, dropped = self._hard(_do)  # `dropped`: XAUTOCLAIM already removed them from the group
        # Redis 7's XAUTOCLAIM drops deleted entries from the whole scanned PEL whatever their idle
        # time (they come back in `dropped`); Redis 6.2 does not, and XREADGROUP returns them bodiless.
        gone = [_entry_id(eid) for eid, fields in entries if not fields]
        if gone:
            self.ack(*gone)
        if gone or dropped:  # trimmed or deleted from the stream while pending
            log.warning("%d pending request(s) on %s had no body left (deleted from the stream) and were "
                        "dropped from the group: %s", len(gone) + len(dropped), self.requests_stream,
                        ", ".join(dropped + gone))
        return self._accept_entries([(eid, fields) for eid, fields in entries if fields])

    def new_requests(self, consumer: str, count: int = 20) -> list[tuple[str, dict[str, Any]]]:
        """Up to ``count`` ``(entry_id, request)`` never delivered to the group before (XREADGROUP ``>``).

        Non-blocking. The entries become pending for ``consumer`` and stay so
        until :meth:`ack`; rejected bodies are announced and acked as in
        :meth:`read_requests`. ``count`` 0 reads nothing.
        """
        if count == 0:
            return []
        _check_count(count)

        def _do(r: redis.Redis) -> list[tuple[bytes, dict | None]]:
            reply = r.xreadgroup(self.group, consumer, {self.requests_stream: ">"}, count=count) or []
            return [entry for _, entries in reply for entry in entries]

        return self._accept_entries(self._hard(_do))

    def _accept_entries(self, entries: list[tuple[Any, Any]]) -> list[tuple[str, dict[str, Any]]]:
        """Parse raw stream entries; reject (announce, then ack) the ones with a bad body."""
        out: list[tuple[str, dict[str, Any]]] = []
        for raw_id, fields in entries:
            entry_id = _entry_id(raw_id)
            body = fields.get(b"body") if isinstance(fields, dict) else None
            try:
                if body is None:
                    raise limits.LimitExceeded("entry has no body field")
                out.append((entry_id, limits.check_request_body(body)))
            except limits.LimitExceeded as exc:
                log.error("rejected request %s on %s: %s", entry_id, self.requests_stream, exc)
                self.publish("request_rejected", {"request_id": limits.request_id_of(body) if body else None,
                                                  "entry_id": entry_id, "reason": str(exc)})
                self.ack(entry_id)
        return out

    def ack(self, entry_id: str, *more: str) -> None:
        """Acknowledge handled requests (one XACK) and delete them from the stream."""
        ids = (entry_id, *more)

        def _do(r: redis.Redis) -> None:
            pipe = r.pipeline(transaction=True)
            pipe.xack(self.requests_stream, self.group, *ids)
            pipe.xdel(self.requests_stream, *ids)
            pipe.execute()

        self._hard(_do)

    # -- request batches ----------------------------------------------------
    @property
    def _batch_of_hash(self) -> str:
        return f"{self.prefix}:requests:batch_of"  # request id -> batch key (kept: later duplicates are refused)

    def _batch_key(self, batch_key: str) -> str:
        return f"{self.prefix}:requests:batch:{batch_key}"

    def record_batch(self, batch_key: str, entries: list[tuple[str, dict[str, Any]]]) -> None:
        """Remember batch ``batch_key``: its ``(entry_id, request)`` entries and each request id's batch.

        Written (one MULTI) before the batch's run request is emitted, so a
        sensor that dies in between emits the SAME batch again (same run key,
        same requests) on its next tick: :meth:`batch_entries`.
        """
        record = json.dumps([[eid, body] for eid, body in entries], default=str)

        def _do(r: redis.Redis) -> None:
            pipe = r.pipeline(transaction=True)
            pipe.set(self._batch_key(batch_key), record)
            pipe.hset(self._batch_of_hash, mapping={str(body["request_id"]): batch_key for _, body in entries})
            pipe.execute()

        self._hard(_do)

    def batches_of(self, request_ids: list[str]) -> dict[str, str]:
        """``{request id: batch key}`` for those of ``request_ids`` already put in a batch."""
        ids = list(dict.fromkeys(request_ids))
        if not ids:
            return {}
        keys = self._hard(lambda r: r.hmget(self._batch_of_hash, ids))
        return {rid: k.decode() for rid, k in zip(ids, keys) if k is not None}

    def batch_entries(self, batch_key: str) -> list[tuple[str, dict[str, Any]]] | None:
        """The ``(entry_id, request)`` entries recorded for ``batch_key`` (None once forgotten)."""
        raw = self._hard(lambda r: r.get(self._batch_key(batch_key)))
        return None if raw is None else [(str(eid), body) for eid, body in json.loads(raw)]

    def forget_batch(self, batch_key: str) -> None:
        """Drop a launched batch's entry record (its request ids stay known, so duplicates are refused)."""
        self._hard(lambda r: r.delete(self._batch_key(batch_key)))

    def queue_depth(self) -> dict[str, int]:
        """``{"length": entries not yet acked, "pending": read but not acked}``."""

        def _do(r: redis.Redis) -> dict[str, int]:
            pipe = r.pipeline(transaction=False)
            pipe.xlen(self.requests_stream)
            pipe.xpending(self.requests_stream, self.group)
            length, pending = pipe.execute()
            return {"length": int(length), "pending": int(pending["pending"])}

        return self._hard(_do)
