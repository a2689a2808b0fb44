"""``fbt workers start|stop|status``: Celery workers of this code location.

The workers run on this machine. They are dagster-celery's own (``celery -A
dagster_celery.app worker``, the command ``dagster-celery worker start`` runs),
with their settings written as the module ``dagster_celery_config`` that the
app reads, exactly as ``dagster-celery worker start -y`` does; the settings come from
:func:`fbt_pipelines.location.executors.celery_executor_config`, the same the executor
sends with, so both sides agree on broker, acks and serialisation.

State under ``$FBT_HOME/workers``: ``config/dagster_celery_config.py``,
``celery.yaml`` (the same block, for ``dagster-celery worker start -y``),
``fbt-<i>.log`` and ``fbt-<i>.pid`` per worker. Each worker runs in its own
session, so ``stop`` signals its process group (the worker and its pool
children) by the PID in its file, and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from fbt_pipelines.cli.app import console, main
from fbt_pipelines.config import REPO_ROOT, paths

PRELOAD_MODULE = "fbt_pipelines.location.definitions"


def workers_dir() -> Path:
    return paths().home / "workers"


@dataclass(frozen=True)
class WorkerProcess:
    index: int
    name: str
    pid: int | None
    alive: bool
    log: str


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours counts as gone
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def _is_our_worker(pid: int, name: str) -> bool:
    """The PID still runs the worker we started (not a recycled PID)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _pid_alive(pid)
    return any(b"celery" in c for c in cmd) and name.encode() in cmd


def _worker_name(index: int) -> str:
    return f"fbt-{index}@{socket.gethostname()}"


def list_workers() -> list[WorkerProcess]:
    """Workers with a PID file under ``$FBT_HOME/workers``."""
    out = []
    for pid_file in sorted(workers_dir().glob("fbt-*.pid"), key=lambda p: int(p.stem.split("-")[1])):
        index = int(pid_file.stem.split("-")[1])
        info = json.loads(pid_file.read_text())
        pid = int(info["pid"])
        out.append(WorkerProcess(index, info["name"], pid, _pid_alive(pid) and _is_our_worker(pid, info["name"]),
                                 str(workers_dir() / f"fbt-{index}.log")))
    return out


def write_worker_config() -> Path:
    """Write ``dagster_celery_config.py`` (+ ``celery.yaml``) for this FBT_HOME.

    Returns the config folder.
    """
    import yaml

    from fbt_pipelines.location.executors import celery_executor_config

    cfg = celery_executor_config()
    folder = workers_dir() / "config"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"broker_url = {cfg['broker']!r}", f"result_backend = {cfg['backend']!r}"]
    lines += [f"{key} = {value!r}" for key, value in cfg["config_source"].items()]
    (folder / "dagster_celery_config.py").write_text(
        "# written by `fbt workers start` from fbt_pipelines.location.executors.celery_executor_config()\n"
        + "\n".join(lines) + "\n")
    (workers_dir() / "celery.yaml").write_text(yaml.safe_dump({"execution": {"config": cfg}}, sort_keys=False))
    return folder


def _worker_env() -> dict[str, str]:
    from fbt_pipelines.location.instance import ensure_dagster_home

    ensure_dagster_home()
    folder = write_worker_config()
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, FBT_HOME=str(paths().home))
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"  # dagster-celery shells out to `celery`
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def _worker_args(name: str, concurrency: int, loglevel: str, preload: bool) -> list[str]:
    args = [str(Path(sys.executable).parent / "celery"), "-A", "dagster_celery.app", "worker",
            "--prefetch-multiplier=1", f"--concurrency={concurrency}", "--loglevel", loglevel, "-n", name,
            "-Q", "dagster"]
    if preload:
        args += ["--include", PRELOAD_MODULE]  # import the code location once, before the pool forks
    return args


def run_foreground(concurrency: int, loglevel: str, preload: bool) -> None:
    """Replace this process with one worker (for containers and process supervisors)."""
    env = _worker_env()
    args = _worker_args(f"fbt-fg@{socket.gethostname()}", concurrency, loglevel, preload)
    os.chdir(REPO_ROOT)
    os.execve(args[0], args, env)


def start_workers(n: int, concurrency: int = 1, loglevel: str = "INFO", preload: bool = True,
                  wait: float = 120.0) -> list[WorkerProcess]:
    """Start ``n`` more workers (indices after the live ones).

    Waits until each answers a broker ping.
    """
    env = _worker_env()
    live = {w.index for w in list_workers() if w.alive}
    started = []
    index = 0
    while len(started) < n:
        index += 1
        if index in live:
            continue
        name = _worker_name(index)
        log = workers_dir() / f"fbt-{index}.log"
        args = _worker_args(name, concurrency, loglevel, preload)
        with open(log, "ab") as fh:
            proc = subprocess.Popen(args, env=env, cwd=str(REPO_ROOT), stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        (workers_dir() / f"fbt-{index}.pid").write_text(json.dumps({"pid": proc.pid, "name": name}))
        started.append(WorkerProcess(index, name, proc.pid, True, str(log)))
    if wait:
        wait_until_ready([w.name for w in started], wait, started)
    return started


def _celery_app():
    from dagster_celery.config import dict_wrapper
    from dagster_celery.make_app import make_app

    from fbt_pipelines.location.executors import celery_executor_config

    cfg = celery_executor_config()
    return make_app({"broker": cfg["broker"], "backend": cfg["backend"], "include": [],
                     "config_source": dict_wrapper(dict(cfg["config_source"]))})


def ping(timeout: float = 1.0) -> list[str]:
    """Names of the workers answering on the broker (any machine)."""
    app = _celery_app()
    try:
        replies = app.control.ping(timeout=timeout) or []
    finally:
        app.close()
    return sorted(name for reply in replies for name in reply)


def wait_until_ready(names: list[str], timeout: float, started: list[WorkerProcess] | None = None) -> None:
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        pending -= set(ping(1.0))
        for w in started or []:
            if w.name in pending and w.pid and not _pid_alive(w.pid):
                raise click.ClickException(f"worker {w.name} exited during start; see {w.log}")
        if pending and time.monotonic() > deadline:
            raise click.ClickException(f"workers {sorted(pending)} not ready after {timeout:.0f} s; see "
                                       f"{workers_dir()}/fbt-*.log")


def stop_workers(timeout: float = 30.0) -> list[WorkerProcess]:
    """Stop every worker with a PID file: SIGTERM, then SIGKILL after ``timeout`` s.

    Warm shutdown (SIGTERM: finish the current step) of every worker with a
    PID file, then SIGKILL of its process group after ``timeout`` s; PID files
    removed.
    """
    workers = list_workers()
    for w in workers:
        if w.alive and w.pid:
            try:
                os.killpg(w.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for w in workers:
        if not (w.alive and w.pid):
            continue
        while _pid_alive(w.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            os.killpg(w.pid, signal.SIGKILL)  # the pool children too, if any outlived the worker
        except ProcessLookupError:
            pass
    for w in workers:
        (workers_dir() / f"fbt-{w.index}.pid").unlink(missing_ok=True)
    return workers


def queue_depth() -> int | None:
    """Tasks waiting in the broker's ``dagster`` queue (all priority lists).

    None if Redis is down.
    """
    import redis

    from fbt_pipelines.location.executors import celery_broker_url

    try:
        client = redis.Redis.from_url(celery_broker_url(), socket_timeout=2)
        try:
            return int(sum(client.llen(k) for k in client.scan_iter(match="dagster*", count=100)
                           if client.type(k) == b"list"))
        finally:
            client.close()
    except redis.RedisError:
        return None


@main.group()
def workers() -> None:
    """Celery workers that run steps of this code location (executor `celery`).

    \b
    Examples:
      fbt workers start -n 2        # two workers on this machine, logs in $FBT_HOME/workers
      fbt workers status [--json]
      fbt workers stop
      FBT_EXECUTOR=celery dagster job execute -m fbt_pipelines.location.definitions -j sweep_fanout

    A second machine joins with the same repo checkout, the same REDIS_URL, FBT_HOME on the
    shared storage and DAGSTER_HOME pointing at the same instance: `fbt workers start -n 4`.
    """


@workers.command("start")
@click.option("-n", "count", type=click.IntRange(1, 64), default=2, show_default=True, help="Workers to start.")
@click.option("--concurrency", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Steps each worker runs at once (its pool processes).")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--no-preload", is_flag=True, help="Do not import the code location before forking the pool.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for readiness.")
@click.option("--foreground", is_flag=True,
              help="Become one worker in this process (containers, systemd); no PID file, stop with SIGTERM.")
def start_command(count: int, concurrency: int, loglevel: str, no_preload: bool, timeout: float,
                  foreground: bool) -> None:
    """Start COUNT workers and wait until each answers on the broker."""
    from fbt_pipelines.location.executors import ExecutorConfigError, celery_broker_url

    try:
        broker = celery_broker_url()
    except ExecutorConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if foreground:
        run_foreground(concurrency, loglevel, not no_preload)
    if queue_depth() is None:
        raise click.ClickException(f"the Celery broker (Redis at {broker.split('@')[-1]}) does not answer")
    t0 = time.perf_counter()
    started = start_workers(count, concurrency, loglevel, not no_preload, timeout)
    for w in started:
        console.print(f"[green]started[/green] {w.name} pid {w.pid} log {w.log}")
    console.print(f"{len(started)} worker(s) ready in {time.perf_counter() - t0:.1f} s on broker "
                  f"{broker.split('@')[-1]}; stop with `fbt workers stop`")


@workers.command("stop")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds a worker may finish its current step before it is killed.")
def stop_command(timeout: float) -> None:
    """Stop this machine's workers (by the PIDs in $FBT_HOME/workers)."""
    stopped = stop_workers(timeout)
    if not stopped:
        console.print("no workers started from this FBT_HOME")
    for w in stopped:
        console.print(f"stopped {w.name} (pid {w.pid})" if w.alive else f"{w.name}: was not running")


@workers.command("status")
@click.option("--json", "as_json", is_flag=True)
def status_command(as_json: bool) -> None:
    """This machine's workers, the workers answering on the broker, and the queue depth."""
    local = list_workers()
    depth = queue_depth()
    answering = ping(1.0) if depth is not None else []
    if as_json:
        click.echo(json.dumps({"local": [asdict(w) for w in local], "answering": answering, "queue_depth": depth}))
    else:
        for w in local:
            console.print(f"{w.name}: pid {w.pid} {'[green]running[/green]' if w.alive else '[red]gone[/red]'}"
                          f"  log {w.log}")
        console.print(f"answering on the broker: {', '.join(answering) or 'none'}; "
                      f"queue depth: {'Redis down' if depth is None else depth}")
    if depth is None:
        sys.exit(1)
