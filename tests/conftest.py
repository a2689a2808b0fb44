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

from fbt_pipelines.config import DEFAULT_REDIS_URL, pin_process_settings
from fbt_pipelines.services.local import redis_reachable, start_local_redis
from fbt_pipelines.services.bus import Bus

pin_process_settings()  # as the CLI and the code location do: Numba's cache under FBT_HOME

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


# -- CI: the suite cannot shrink silently -----------------------------------------------------------
# Under CI (FBT_CI=1, exported by .ci/run) a skipped or xfailed test fails the run unless an entry of
# .ci/allowed-skips matches its test id (fnmatch pattern) and its reason (substring). Every skip
# reason is printed either way (addopts -ra).
CI_ENV = "FBT_CI"
ALLOWED_SKIPS_FILE = Path(__file__).resolve().parents[1] / ".ci" / "allowed-skips"
_UNALLOWED_SKIPS = pytest.StashKey[list]()


def allowed_skips(path: Path = ALLOWED_SKIPS_FILE) -> list[tuple[str, str]]:
    """(test id pattern, reason substring) pairs: lines ``PATTERN | REASON``; ``#`` starts a comment."""
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        pattern, sep, reason = (part.strip() for part in line.partition("|"))
        if not (sep and pattern and reason):
            raise ValueError(f"{path}:{number}: expected 'TEST-ID-PATTERN | REASON SUBSTRING', got {line!r}")
        entries.append((pattern, reason))
    return entries


def unallowed_skips(reports, entries: list[tuple[str, str]]) -> list[str]:
    """'<test id>: <reason>' of each skipped/xfailed report that no entry allows."""
    from fnmatch import fnmatchcase

    out = []
    for report in reports:
        longrepr = report.longrepr
        reason = str(longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else
                     getattr(report, "wasxfail", "") or longrepr)
        if not any(fnmatchcase(report.nodeid, pattern) and text in reason for pattern, text in entries):
            out.append(f"{report.nodeid}: {reason}")
    return out


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get(CI_ENV) != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    stats = reporter.stats if reporter is not None else {}
    reports = [r for kind in ("skipped", "xfailed") for r in stats.get(kind, []) if hasattr(r, "nodeid")]
    bad = session.config.stash[_UNALLOWED_SKIPS] = unallowed_skips(reports, allowed_skips())  # printed below
    if bad and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    bad = config.stash.get(_UNALLOWED_SKIPS, [])
    if bad:
        terminalreporter.section(f"{CI_ENV}=1: skipped tests not in .ci/allowed-skips (the run fails)", red=True)
        for line in bad:
            terminalreporter.write_line(line, red=True)
