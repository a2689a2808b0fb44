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

Untrusted bytes: a cache value that is not a readable Arrow IPC stream is a
cache miss (logged, key deleted); a request body over the size limit, not
JSON or not a JSON object is rejected (logged, acked, a ``request_rejected``
event published). Nothing read from Redis is unpickled or evaluated.
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

from fbt_pipelines import limits
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
        non-blocking XREADGROUP ``>``. Entries whose body is over
        ``FBT_MAX_REQUEST_BYTES``, not JSON or not a JSON object are logged,
        acked (so they cannot jam the queue) and announced as
        ``request_rejected`` events with the reason.
        """

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

        out: list[tuple[str, dict[str, Any]]] = []
        for raw_id, fields in self._hard(_do):
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
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

    def ack(self, entry_id: str) -> None:
        """Acknowledge a handled request and delete it from the stream."""

        def _do(r: redis.Redis) -> None:
            pipe = r.pipeline(transaction=True)
            pipe.xack(self.requests_stream, self.group, entry_id)
            pipe.xdel(self.requests_stream, entry_id)
            pipe.execute()

        self._hard(_do)

    def queue_depth(self) -> dict[str, int]:
        """``{"length": entries not yet acked, "pending": read but not acked}``."""

        def _do(r: redis.Redis) -> dict[str, int]:
            pipe = r.pipeline(transaction=False)
            pipe.xlen(self.requests_stream)
            pipe.xpending(self.requests_stream, self.group)
            length, pending = pipe.execute()
            return {"length": int(length), "pending": int(pending["pending"])}

        return self._hard(_do)
