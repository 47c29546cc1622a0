"""Real processes for multi-process tests: Celery workers and beat replicas.

Each process runs `celery -A kern_tasks ...` with KERN_* settings pointing at the
test's database, a Redis database of its own and a loopback HTTP target; logs go to
files under the test's tmp_path (printed when a test fails).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import redis

from .conftest import REDIS_URL

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parent.parent


def broker_url_for(redis_db: int) -> str:
    """A Redis database of its own per test module (they may run side by side)."""
    return REDIS_URL.rsplit("/", 1)[0] + f"/{redis_db}"


def flush_broker(redis_db: int) -> None:
    redis.Redis.from_url(broker_url_for(redis_db)).flushdb()


def wait_for(condition: Callable[[], object], timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll `condition` until it is truthy (returns it) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Cluster:
    """Start and stop kern_tasks processes sharing one set of settings."""

    env: dict[str, str]
    logs: Path
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    @classmethod
    def create(cls, tmp_path: Path, *, database_url: str, schema: str | None, base_url: str,
               service_token: str = "test-service-token", broker_url: str | None = None,
               data_dir: Path | None = None) -> "Cluster":
        env = {k: v for k, v in os.environ.items() if not k.startswith("KERN_")}
        env.update(
            KERN_DATABASE_URL=database_url,
            KERN_BASE_URL=base_url,
            KERN_SERVICE_TOKEN=service_token,
            KERN_DATA_DIR=str(data_dir or tmp_path / "kern"),
            PYTHONPATH=str(ROOT),
            PYTHONUNBUFFERED="1",
        )
        if schema:
            env["KERN_DB_SCHEMA"] = schema
        if broker_url is not None:
            env["KERN_BROKER_URL"] = broker_url
        logs = tmp_path / "logs"
        logs.mkdir(exist_ok=True)
        return cls(env=env, logs=logs)

    def _start(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [PYTHON, "-m", "celery", "-A", "kern_tasks", *args],
            env={**self.env, **(extra_env or {})}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            start_new_session=True,
        )
        self.procs.append((name, proc))
        return proc

    def worker(self, name: str = "worker", concurrency: int = 8, pool: str = "threads") -> subprocess.Popen:
        return self._start(name, ["worker", "-P", pool, "-c", str(concurrency), "-l", "INFO",
                                  "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat"])

    def beat(self, name: str = "beat", max_interval: float = 15) -> subprocess.Popen:
        return self._start(name, ["beat", "-l", "INFO", "--max-interval", str(max_interval)])

    def beat_with_conf(self, name: str = "beat", max_interval: float = 15,
                       conf: dict[str, int | float | str] | None = None,
                       extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        """A beat replica with extra Celery config (e.g. {"kern_republish_after": 5}), passed
        on celery's command line as `key=(type)value` (no environment variable needed),
        and optionally settings of its own (e.g. a KERN_BROKER_URL nothing listens on)."""
        types = {int: "int", float: "float", str: "string"}
        extra = [f"{key}=({types[type(value)]}){value}" for key, value in (conf or {}).items()]
        return self._start(name, ["beat", "-l", "INFO", "--max-interval", str(max_interval), *extra], extra_env)

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for _, proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill(proc)

    def dump_logs(self, tail: int = 60) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {path.name} ---\n" + "\n".join(lines))
        return "\n".join(parts)
