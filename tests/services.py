"""Private Redis and Postgres instances a test may restart (or kill) at will.

The machine's shared services (127.0.0.1:5432 and :6379) serve every test running at
the same time, so outage tests never touch them: they start their own, on free ports,
and restart those.

    with PrivateRedis() as broker, PrivatePostgres() as pg:
        procs = Processes(tmp_path / "logs", env=kern_env(database_url=pg.url, base_url=...,
                                                          data_dir=tmp_path / "kern", broker_url=broker.url))
        ...
        broker.restart(down_for=3)   # SIGKILL, 3 s of nothing, start again: its data is gone
        pg.restart(down_for=5)       # pg_ctl stop -m fast, 5 s, pg_ctl start

Both wait until the service answers before returning from start()/restart(), and stop
and clean up on exit. `skip_unless_available()` skips the calling test (with the
reason) when a binary is missing.

Postgres refuses to run as root: when we are root, initdb/pg_ctl run as the `postgres`
user (runuser), in a folder under /tmp made for it (pytest's tmp_path is 0700 root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.processes import free_port, wait_for

POSTGRES_ROOT = Path("/usr/lib/postgresql")
READY_TIMEOUT_S = 30.0


class ServiceUnavailable(RuntimeError):
    """A binary this service needs is missing (the reason says which)."""


# --- Redis -------------------------------------------------------------------------------


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise ServiceUnavailable("redis-server is not on PATH")
    return path


class PrivateRedis:
    """redis-server on a free loopback port, nothing on disk: a restart loses every key."""

    def __init__(self, port: int | None = None) -> None:
        self.binary = redis_binary()
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = Path(tempfile.mkdtemp(prefix="kern-redis-"))
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> "PrivateRedis":
        if self.proc is not None and self.proc.poll() is None:
            return self
        log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self.dir)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        self.starts += 1
        wait_for(self.ping, READY_TIMEOUT_S, 0.05, f"redis on port {self.port}")
        return self

    def ping(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return False
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Kill it (SIGKILL by default: no goodbye to clients) and wait until it is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.kill(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def restart(self, down_for: float = 0.0, sig: int = signal.SIGKILL) -> None:
        """Stop, stay down `down_for` seconds, start again on the same port (empty)."""
        self.stop(sig)
        time.sleep(down_for)
        self.start()

    def close(self) -> None:
        self.stop(signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PrivateRedis":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- Postgres ----------------------------------------------------------------------------


def postgres_bindir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl (or
    `pg_config --bindir`)."""
    candidates: list[Path] = []
    if POSTGRES_ROOT.is_dir():
        versions = sorted(
            (p for p in POSTGRES_ROOT.iterdir() if p.name.split(".")[0].isdigit()),
            key=lambda p: tuple(int(x) for x in p.name.split(".") if x.isdigit()),
            reverse=True,
        )
        candidates += [v / "bin" for v in versions]
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            candidates.append(Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                                  check=True).stdout.strip()))  # fmt: skip
        except (OSError, subprocess.CalledProcessError):
            pass
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise ServiceUnavailable(f"no Postgres server binaries (initdb, pg_ctl) under {POSTGRES_ROOT} or pg_config")


def _run_as_prefix() -> tuple[list[str], pwd.struct_passwd | None]:
    """How to run Postgres binaries: as ourselves, or (as root) through runuser -u postgres."""
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceUnavailable("running as root and there is no `postgres` user to run Postgres as") from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ServiceUnavailable("running as root and runuser is missing")
    return [runuser, "-u", "postgres", "--"], user


class PrivatePostgres:
    """A throwaway Postgres cluster (trust auth, fsync off) on a free loopback port.

    `url` reaches the `postgres` database as the `postgres` superuser.
    """

    def __init__(self, port: int | None = None) -> None:
        self.bindir = postgres_bindir()
        self._prefix, user = _run_as_prefix()
        self.port = port or free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.base = Path(tempfile.mkdtemp(prefix="kern-pg-"))
        self.data = self.base / "data"
        self.logfile = self.base / "postgres.log"
        if user is not None:
            os.chown(self.base, user.pw_uid, user.pw_gid)
        os.chmod(self.base, 0o700)
        self._initialised = False

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run([*self._prefix, *args], capture_output=True, text=True, timeout=timeout, cwd=self.base)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
                               f"\n{self.log_tail()}")  # fmt: skip
        return result

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), *args)

    def start(self) -> "PrivatePostgres":
        if not self._initialised:
            self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                      "-E", "UTF8", "--no-sync")  # fmt: skip
            self._initialised = True
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        self._pg_ctl("-o", options, "-l", str(self.logfile), "-w", "-t", str(int(READY_TIMEOUT_S)), "start")
        wait_for(self.ready, READY_TIMEOUT_S, 0.05, f"postgres on port {self.port}")
        return self

    def ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                                 connect_timeout=1) as conn:  # fmt: skip
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop: "fast" ends every session at once; "immediate" is a crash."""
        if self._initialised and self.running():
            self._pg_ctl("-m", mode, "-w", "stop")

    def restart(self, down_for: float = 0.0, mode: str = "fast") -> None:
        """Stop, stay down `down_for` seconds, start again on the same port (data kept)."""
        self.stop(mode)
        time.sleep(down_for)
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "PrivatePostgres":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def skip_unless_available(*services: str) -> None:
    """pytest.skip (with the reason) unless the binaries of `services` ("redis",
    "postgres") are here."""
    import pytest

    checks = {"redis": redis_binary, "postgres": lambda: (postgres_bindir(), _run_as_prefix())}
    for name in services:
        try:
            checks[name]()
        except ServiceUnavailable as exc:
            pytest.skip(f"private {name} unavailable: {exc}")
