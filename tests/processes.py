"""Processes, ports and waiting: the one copy tests and benchmarks share.

- `wait_for(condition, timeout)`: poll until truthy, or fail naming what was awaited.
- `free_port()`, `listening_socket()`: loopback ports.
- `ServerThread`: an ASGI app served by uvicorn in a background thread, on a socket bound
  here (so its port is known before it starts); `start()` returns once it accepts.
- `Processes`: real processes (`celery -A ... worker|beat`, `python -m tests.targets`, ...),
  each in a session of its own and stopped by its process group id, output in
  `logs/<name>.log`; `kern_env()` is the environment a kern process gets its settings from.

    procs = Processes(tmp_path / "logs", env=kern_env(database_url=..., base_url=target.url, ...))
    procs.worker(concurrency=8)
    procs.wait_for_log("worker", " ready.")
    procs.beat(max_interval=1, conf={"kern_republish_after": 5})
    ...
    procs.stop_all()   # SIGTERM to every group, then SIGKILL what is left
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import uvicorn

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"

T = TypeVar("T")


# --- waiting -------------------------------------------------------------------------------


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.1, what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy (returned), or raise AssertionError
    naming `what` after `timeout` seconds. `condition` may raise to fail at once."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --- ports and in-thread servers -------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on (it was free a moment ago): for a service started later on
    it, or for connection-refused tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def listening_socket(host: str = LOOPBACK, port: int = 0, backlog: int = 128) -> socket.socket:
    """A bound, listening TCP socket (port 0 picks a free one).

    IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
    without it each answer (headers, then body) stalls ~40 ms on a delayed ACK."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)  # connections made before the loop runs wait in the backlog
    return sock


class ServerThread:
    """uvicorn serving `app` on a loopback socket of its own, in a daemon thread.

    `port` and `url` are known at construction. `start()` returns once uvicorn accepts
    connections (RuntimeError if it does not within 10 s); `stop()` asks it to exit and
    waits; `serve_forever()` serves in the calling thread instead (signals then stop it).
    `config` adds uvicorn.Config options to quiet, loopback-friendly defaults."""

    def __init__(self, app: Any, host: str = LOOPBACK, port: int = 0, *, backlog: int = 128,
                 name: str = "server", **config: Any) -> None:  # fmt: skip
        self.name = name
        self.sock = listening_socket(host, port, backlog)
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        options: dict[str, Any] = dict(
            log_config=None, log_level="warning", access_log=False, lifespan="off", http="h11", ws="none",
            loop="asyncio", timeout_graceful_shutdown=5, backlog=backlog,
        )  # fmt: skip
        self.server = uvicorn.Server(uvicorn.Config(app, **{**options, **config}))
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self) -> "ServerThread":
        self._thread = threading.Thread(target=self.serve_forever, name=f"{self.name}:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} on port {self.port} did not start")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 15) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        self.sock.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- the environment of kern processes -----------------------------------------------------------


def clean_environ() -> dict[str, str]:
    """This process's environment without any KERN_* setting, plus what a child needs to
    import the project from this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERN_")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return env


def kern_env(*, database_url: str, base_url: str, data_dir: Path, schema: str | None = None,
             broker_url: str | None = None, service_token: str = "test-service-token") -> dict[str, str]:  # fmt: skip
    """The KERN_* settings a kern process reads (kern_tasks.settings); None leaves one unset."""
    env = {
        "KERN_DATABASE_URL": database_url,
        "KERN_BASE_URL": base_url,
        "KERN_SERVICE_TOKEN": service_token,
        "KERN_DATA_DIR": str(data_dir),
    }
    if schema:
        env["KERN_DB_SCHEMA"] = schema
    if broker_url is not None:
        env["KERN_BROKER_URL"] = broker_url
    return env


# --- processes ---------------------------------------------------------------------------------


_CONF_TYPES = {int: "int", float: "float", str: "string"}


@dataclass
class Processes:
    """Start, watch and stop real processes that share an environment and a log folder.

    `env` (given) is laid over `clean_environ()`; after construction it is the whole
    environment every process starts with (a test may still edit it)."""

    logs: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = {**clean_environ(), **self.env}

    # --- starting ----------------------------------------------------------------------
    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen:  # fmt: skip
        """`argv` in a session of its own, output appended to logs/<name>.log; `env` is laid
        over this object's. It runs in the log folder unless `cwd` says otherwise (so
        nothing it writes lands in the checkout)."""
        with open(self.log_path(name), "ab") as out:
            proc = subprocess.Popen(
                argv, env={**self.env, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, cwd=cwd or self.logs,
                start_new_session=True,
            )  # fmt: skip
        self.procs.append((name, proc))
        return proc

    def celery(self, name: str, args: list[str], app: str = "kern_tasks",
               env: dict[str, str] | None = None) -> subprocess.Popen:  # fmt: skip
        return self.start(name, [PYTHON, "-m", "celery", "-A", app, *args], env)

    def worker(self, name: str = "worker", concurrency: int = 8, pool: str = "threads", *, app: str = "kern_tasks",
               level: str = "INFO", env: dict[str, str] | None = None) -> subprocess.Popen:  # fmt: skip
        """A Celery worker; it logs " ready." (at INFO) once it consumes."""
        return self.celery(
            name, ["worker", "-P", pool, "-c", str(concurrency), "-l", level, "-n", f"{name}@%h",
                   "--without-gossip", "--without-mingle", "--without-heartbeat"], app, env,
        )  # fmt: skip

    def beat(self, name: str = "beat", max_interval: float = 15, *, conf: dict[str, int | float | str] | None = None,
             env: dict[str, str] | None = None) -> subprocess.Popen:  # fmt: skip
        """A beat replica of kern_tasks (LeaseScheduler). `conf` is extra Celery config (e.g.
        {"kern_republish_after": 5}), passed on celery's command line as `key=(type)value`,
        so no environment variable is needed; `env` adds settings of its own (e.g. a
        KERN_BROKER_URL nothing listens on)."""
        extra = [f"{key}=({_CONF_TYPES[type(value)]}){value}" for key, value in (conf or {}).items()]
        return self.celery(name, ["beat", "-l", "INFO", "--max-interval", str(max_interval), *extra], env=env)

    # --- stopping ------------------------------------------------------------------------
    @staticmethod
    def signal_group(proc: subprocess.Popen, sig: int) -> None:
        """Send `sig` to the process's whole group (its children too), if it is still there."""
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
        """Send `sig` to the group (SIGKILL: no goodbye) and wait for the process to end."""
        self.signal_group(proc, sig)
        proc.wait(timeout=timeout)

    def stop(self, proc: subprocess.Popen, timeout: float = 15) -> None:
        """SIGTERM to its group; SIGKILL if it is still there after `timeout`."""
        if proc.poll() is None:
            self.signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc)

    def stop_all(self, timeout: float = 15) -> None:
        """SIGTERM to every group at once, then wait for each (SIGKILL after `timeout`)."""
        for _, proc in self.procs:
            if proc.poll() is None:
                self.signal_group(proc, signal.SIGTERM)
        for _, proc in self.procs:
            self.stop(proc, timeout)
        self.procs.clear()

    # --- watching ------------------------------------------------------------------------
    def check_alive(self) -> None:
        """RuntimeError (with its log's tail) if any process has exited."""
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def log_text(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def tail(self, name: str, lines: int = 40) -> str:
        return "\n".join(self.log_text(name).splitlines()[-lines:])

    def wait_for_log(self, name: str, text: str, timeout: float = 60) -> None:
        """Wait until logs/<name>.log contains `text`."""
        wait_for(lambda: text in self.log_text(name), timeout, 0.2, f"{text!r} in {name}.log")

    def dump_logs(self, tail: int = 60) -> str:
        """The tail of every log in the folder (also of processes another object started)."""
        return "\n".join(f"--- {path.name} ---\n{self.tail(path.stem, tail)}" for path in sorted(self.logs.glob("*.log")))
