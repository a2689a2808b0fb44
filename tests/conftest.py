"""Shared fixtures.

``redis_url``: a Redis for the whole session. Uses ``REDIS_URL`` (default
``redis://127.0.0.1:6379/0``) when it answers, but on database 15 of that
server; otherwise starts a private ``redis-server`` for the session. If
neither works the session fails loudly: Redis-backed code must not be
silently skipped.

``bus``: a :class:`Bus` on a unique key prefix per test; that prefix's keys
are deleted afterwards (SCAN + DEL, never FLUSHDB).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import redis

from fbt_pipelines.config import DEFAULT_REDIS_URL
from fbt_pipelines.local_services import redis_reachable, start_local_redis
from fbt_pipelines.stores.bus import Bus

TEST_DB = 15


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "db"])
    return urlunsplit(parts._replace(path=f"/{db}", query=query))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    if redis_reachable(configured):
        yield _with_db(configured, TEST_DB)
        return
    data_dir = tmp_path_factory.mktemp("redis")
    try:
        url, proc = start_local_redis(data_dir)
    except Exception as exc:  # noqa: BLE001 - report any failure loudly
        pytest.fail(
            f"No Redis for the tests: {configured} does not answer and starting a "
            f"private redis-server failed: {exc}",
            pytrace=False,
        )
    try:
        yield url
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key under ``<prefix>:`` (SCAN + DEL); returns how many."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        return len(keys)
    finally:
        client.close()


@pytest.fixture
def bus(redis_url: str) -> Iterator[Bus]:
    prefix = f"fbttest-{uuid.uuid4().hex[:12]}"
    b = Bus(redis_url, prefix=prefix)
    try:
        yield b
    finally:
        b.close()
        delete_prefix(redis_url, prefix)


def use_private_home(mp: pytest.MonkeyPatch, home: Path, redis_url: str) -> Path:
    """Point fbt at ``home`` (FBT_HOME) and the test Redis, and drop the
    variables that would send it elsewhere (DAGSTER_HOME, MLflow, warehouse)."""
    mp.setenv("FBT_HOME", str(home))
    mp.setenv("REDIS_URL", redis_url)
    for var in ("DAGSTER_HOME", "MLFLOW_TRACKING_URI", "FBT_WAREHOUSE"):
        mp.delenv(var, raising=False)
    return home


@pytest.fixture
def fbt_home(tmp_path, monkeypatch, redis_url: str):
    """A private FBT_HOME (and REDIS_URL pointing at the test Redis) for one test."""
    home = tmp_path / "fbt_home"
    home.mkdir()
    return use_private_home(monkeypatch, home, redis_url)


@pytest.fixture(autouse=True)
def _no_leaked_dagster_instance_context() -> Iterator[None]:
    """Start every test with no current Dagster defs-state storage.

    ``with DagsterInstance...`` stores the instance's state storage in a
    ContextVar and restores the previous value on exit; fixtures of different
    scopes that enter instances are torn down out of nesting order, which can
    leave a disposed instance's storage there, and every later
    ``materialize`` then fails with "Attempted to resolve undefined
    DagsterInstance weakref" (seen in the full suite, never in one file).
    """
    from dagster._core.storage.defs_state import base as defs_state

    defs_state._current_storage.set(None)
    yield
