"""A private ``redis-server`` a test may kill, restart, protect with a password or put behind TLS.

The shared test Redis (``redis_url`` fixture) must never be killed; these
servers run on their own port with their data dir under the test's tmp dir,
and the test stops them by PID (``stop()`` in a ``finally``).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


from fbt_pipelines.services.local import _free_port, redis_reachable


@dataclass
class PrivateRedis:
    """``redis-server`` on 127.0.0.1:``port`` with ``extra`` arguments (e.g. ``--appendonly yes``)."""

    data_dir: Path
    extra: list[str] = field(default_factory=list)
    password: str | None = None
    tls: dict[str, Path] | None = None  # {"cert":, "key":, "ca":} -> TLS only, no plain port
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        query = f"?ssl_ca_certs={self.tls['ca']}" if self.tls else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0{query}"

    def command(self) -> list[str]:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is not on PATH"
        cmd = [exe, "--bind", "127.0.0.1", "--dir", str(self.data_dir), "--daemonize", "no",
               "--logfile", str(self.data_dir / "redis.log"), "--save", ""]
        if self.tls:
            cmd += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls["cert"]),
                    "--tls-key-file", str(self.tls["key"]), "--tls-ca-cert-file", str(self.tls["ca"]),
                    "--tls-auth-clients", "no"]
        else:
            cmd += ["--port", str(self.port)]
        if self.password:
            cmd += ["--requirepass", self.password]
        return cmd + self.extra

    def start(self, timeout_s: float = 10.0) -> "PrivateRedis":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.proc is not None and self.proc.stderr:  # a restart: the old process is gone
            self.proc.stderr.close()
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.data_dir / "redis.log")
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}): "
                                   f"{log.read_text()[-2000:] if log.exists() else ''}")
            if self.answers():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout_s} s")

    def answers(self) -> bool:
        return redis_reachable(self.url, timeout=0.3)

    def kill(self) -> None:
        """SIGKILL: no shutdown save, no goodbye to clients (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
