"""Find or start the local services fbt leans on (today: Redis).

Plain Python (no Dagster): the CLI, the code location and the tests share it.

- :func:`redis_reachable` answers "does something at this URL reply to PING?".
- :func:`start_local_redis` starts a throw-away ``redis-server`` owned by the
  caller (foreground child process, nothing written to disk) and returns it.
- :func:`ensure_redis` is the forgiving front door used at start-up: it reuses
  a Redis that answers, starts a detached one for a local URL, and otherwise
  reports ``"unavailable"`` so callers can run without cache and events.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis

log = logging.getLogger("fbt.local_services")

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
START_TIMEOUT_S = 10.0


def redis_reachable(url: str, timeout: float = 0.5) -> bool:
    """True if a Redis server at ``url`` answers PING within ``timeout`` seconds."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _redis_server() -> str | None:
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log_tail(logfile: Path, lines: int = 20) -> str:
    try:
        return "\n".join(logfile.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log written)"


def start_local_redis(data_dir: Path, port: int | None = None) -> tuple[str, subprocess.Popen | None]:
    """Start ``redis-server`` on 127.0.0.1 as a child process; return ``(url, process)``.

    The server keeps nothing on disk (``--save "" --appendonly no``); its
    working directory and ``redis.log`` live in ``data_dir``. ``port=None``
    picks a free port. The caller owns the process and must stop it
    (``process.terminate()``).

    Raises:
        RuntimeError: ``redis-server`` is not on PATH, exits early, or does
            not answer PING within 10 s (the message carries the log tail).
    """
    exe = _redis_server()
    if exe is None:
        raise RuntimeError(
            "redis-server not found on PATH: install Redis (e.g. apt-get install redis-server) "
            "or point REDIS_URL at a running server"
        )
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    logfile = data_dir / "redis.log"
    url = f"redis://127.0.0.1:{port}/0"
    cmd = [
        exe, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir),
        "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", str(logfile),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(
                f"redis-server exited with code {proc.returncode} while starting on port {port}.\n"
                f"stderr: {stderr.strip()}\nlog tail ({logfile}):\n{_log_tail(logfile)}"
            )
        if redis_reachable(url, timeout=0.2):
            return url, proc
        time.sleep(0.05)
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
    raise RuntimeError(
        f"redis-server on port {port} did not answer PING within {START_TIMEOUT_S:.0f} s.\n"
        f"log tail ({logfile}):\n{_log_tail(logfile)}"
    )


def ensure_redis(url: str, data_dir: Path) -> tuple[str, str]:
    """Make sure a Redis answers at ``url`` if that can be arranged; never raises.

    Returns ``(url, status)`` with status
    ``"found"`` (already answering), ``"started"`` (a detached ``redis-server``
    was launched for a local URL, pidfile and log in ``data_dir``) or
    ``"unavailable"`` (remote and silent, no ``redis-server``, or it failed to
    start; callers then run without cache and events).
    """
    if redis_reachable(url):
        return url, "found"
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or 6379
    except ValueError:
        log.warning("Redis URL %r is malformed; running without Redis", url)
        return url, "unavailable"
    exe = _redis_server()
    if host not in LOCAL_HOSTS or exe is None:
        return url, "unavailable"
    try:
        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            exe, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir),
            "--save", "", "--appendonly", "no", "--daemonize", "yes",
            "--pidfile", str(data_dir / "redis.pid"), "--logfile", str(data_dir / "redis.log"),
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=START_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not start redis-server for %s: %s", url, exc)
        return url, "unavailable"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if redis_reachable(url, timeout=0.2):
            return url, "started"
        time.sleep(0.05)
    log.warning(
        "redis-server started for %s but did not answer PING; log tail:\n%s",
        url, _log_tail(data_dir / "redis.log"),
    )
    return url, "unavailable"
