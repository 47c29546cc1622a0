"""What every benchmark shares: the services, schemas, processes and measurements.

Services (override with environment variables):
  BENCH_POSTGRES_URL  postgresql+psycopg://postgres@127.0.0.1:5432/kern_bench  (a schema per benchmark, dropped
                      after; the database is made if missing, and only the benchmarks use it, so its
                      pg_stat_database counters, commits and connections opened, are theirs alone)
  BENCH_REDIS_URL     redis://127.0.0.1:6379/12                          (flushed by every benchmark)

Processes are real ones (`celery -A ... worker|beat`, `python -m tests.targets`), started
and stopped by tests/processes.py (the tests' own helpers); logs go to a temporary folder
that is kept (and printed) when something fails.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Sequence

import redis
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from kern_tasks.db import Database
from kern_tasks.settings import Settings
from tests.processes import Processes, kern_env
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/kern_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
SERVICE_TOKEN = "bench-service-token"
# A cron whose next slot is far away: a row fires once at its stored next_run_at, then rests.
YEARLY = "0 0 1 1 *"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the machine ---------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    ensure_database()
    engine = create_engine(POSTGRES_URL)
    with engine.connect() as conn:
        pg = conn.execute(text("SHOW server_version")).scalar()
    engine.dispose()
    import celery
    import kombu

    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "postgres": pg,
        "redis": redis.Redis.from_url(REDIS_URL).info("server")["redis_version"],
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "date": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "loadavg_at_start": loadavg(),
    }


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB, from /proc/<pid>/status."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, kb = line.split()[:2]
                values[key.rstrip(":")] = int(kb) / 1024
    return round(values["VmRSS"], 1), round(values["VmHWM"], 1)


_TICK = os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system, all threads) of the live processes in a process group."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ...; utime/stime at 11/12
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def busy_cpu_s() -> float:
    """CPU seconds the whole machine spent busy (everyone's processes) since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / _TICK  # minus idle and iowait


PG_APP = "kern-bench"  # application_name of the benchmark's kern processes' Postgres sessions
PG_APP_HANDWRITTEN = "kern-bench-hand"  # ... and of the hand-written baseline's
# The server's own database: the benchmarks' observations (pg_stat_*) connect there, so
# they never count in the benchmark database's counters.
MONITOR_URL = make_url(POSTGRES_URL).set(database="postgres")


def ensure_database() -> None:
    """Create the benchmark database if it is missing."""
    name = make_url(POSTGRES_URL).database
    engine = create_engine(MONITOR_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": name}).first():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def with_application_name(url: str, name: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


# A backend flushes its statistics at most once a second while busy and within 10 s once
# idle (Postgres 15: PGSTAT_IDLE_INTERVAL), so counters are read this long after the work.
STATS_SETTLE_S = 11.0


def database_counters() -> dict[str, int]:
    """The benchmark database's pg_stat_database counters: commits, sessions opened, rows written."""
    engine = create_engine(MONITOR_URL, poolclass=NullPool)
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT xact_commit, sessions, tup_inserted, tup_updated, tup_deleted "
                 "FROM pg_stat_database WHERE datname = :d"), {"d": make_url(POSTGRES_URL).database},
        ).one()  # fmt: skip
    engine.dispose()
    return {"commits": row[0], "sessions": row[1], "rows_written": row[2] + row[3] + row[4]}


class DbCounter:
    """Commits, connections opened and rows written in the benchmark database between
    start() and stop(); stop() waits STATS_SETTLE_S first (the counters lag). Everything in
    the window counts, background work included (beat's sweep ~1 commit a second)."""

    def start(self, settle: bool = False) -> "DbCounter":
        if settle:
            time.sleep(STATS_SETTLE_S)
        self._before = database_counters()
        self._since = time.time()
        return self

    def stop(self, per: int) -> dict[str, Any]:
        time.sleep(STATS_SETTLE_S)
        after = database_counters()
        counted: dict[str, Any] = {f"{key}_per_job": round((after[key] - self._before[key]) / per, 3) for key in after}
        counted["new_sessions_alive"] = new_sessions(self._since)
        return counted


def new_sessions(since: float) -> dict[str, int]:
    """Sessions of the benchmark database opened since `since` and still open, by
    application_name and backend type: who opened the connections counted."""
    engine = create_engine(MONITOR_URL, poolclass=NullPool)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT coalesce(application_name, '') || '/' || backend_type, count(*) FROM pg_stat_activity "
                 "WHERE datname = :d AND backend_start >= to_timestamp(:t) GROUP BY 1"),
            {"d": make_url(POSTGRES_URL).database, "t": since},
        ).all()  # fmt: skip
    engine.dispose()
    return {name: int(count) for name, count in rows}


def postgres_backends_cpu_s(application_name: str = PG_APP) -> dict[int, float]:
    """CPU seconds of each Postgres backend serving sessions with this application_name."""
    engine = create_engine(MONITOR_URL, poolclass=NullPool)
    with engine.connect() as conn:
        pids = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :app"), {"app": application_name}
        ).scalars().all()
    engine.dispose()
    cpu = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu[pid] = (int(fields[11]) + int(fields[12])) / _TICK
        except OSError:
            pass
    return cpu


class CpuMeter:
    """CPU seconds spent by some process groups (and this process, and the Postgres backends
    of kern's sessions) between start() and stop()."""

    def __init__(self, groups: dict[str, int], include_self: bool = False, postgres: bool = False,
                 application_name: str = PG_APP) -> None:  # fmt: skip
        self.groups, self.include_self, self.postgres = groups, include_self, postgres
        self.application_name = application_name

    def start(self) -> "CpuMeter":
        self._pg = postgres_backends_cpu_s(self.application_name) if self.postgres else {}
        self._before = {name: group_cpu_s(pid) for name, pid in self.groups.items()}
        self._self = time.process_time()
        self._busy = busy_cpu_s()
        self._wall = time.monotonic()
        return self

    def stop(self, per: int = 1) -> dict[str, float]:
        """CPU milliseconds per unit of work (`per` units), by process; plus the machine's."""
        wall = time.monotonic() - self._wall
        used = {name: group_cpu_s(pid) - self._before[name] for name, pid in self.groups.items()}
        if self.include_self:
            used["publisher"] = time.process_time() - self._self
        if self.postgres:
            now = postgres_backends_cpu_s(self.application_name)
            used["postgres"] = sum(t - self._pg.get(pid, 0.0) for pid, t in now.items())
        result = {f"{name}_cpu_ms": round(seconds * 1000 / per, 2) for name, seconds in used.items()}
        result["ours_cpu_ms"] = round(sum(used.values()) * 1000 / per, 2)
        # The whole machine's busy CPU in the window: others' work shows up here, not in ours.
        result["machine_busy_cpus"] = round((busy_cpu_s() - self._busy) / wall, 2) if wall > 0 else None
        return result


# --- numbers --------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank on sorted values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def sleep_until(epoch: float) -> None:
    while (left := epoch - time.time()) > 0:
        time.sleep(min(left, 0.5))


# --- Postgres and Redis ----------------------------------------------------------------------


@dataclass
class Schema:
    """A migrated kern_tasks schema of its own; `drop()` removes it."""

    name: str
    db: Database

    @property
    def q(self) -> str:
        return f'"{self.name}"'

    def execute(self, sql: str, **params: Any) -> Any:
        with self.db.begin() as conn:
            return conn.execute(text(sql), params)

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.db.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def now(self) -> float:
        return float(self.scalar("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8"))

    def insert_schedules(
        self, n: int, *, due_at: int, n_due: int | None = None, future_at: int | None = None,
        cron: str = YEARLY, endpoint: str = "/hook", prefix: str = "b", timeout_seconds: int = 30,
    ) -> None:
        """Bulk-insert n schedules in one statement: the first n_due (default all) have
        next_run_at = due_at, the rest are spread over the day after future_at."""
        n_due = n if n_due is None else n_due
        future_at = due_at + 86_400 if future_at is None else future_at
        self.execute(
            f"""
            INSERT INTO {self.q}.agno_schedules
                (id, name, method, endpoint, cron_expr, timezone, timeout_seconds, max_retries,
                 retry_delay_seconds, enabled, next_run_at, created_at, updated_at)
            SELECT md5(:prefix || i::text)::uuid::text, :prefix || '-' || i::text, 'POST', :endpoint, :cron, 'UTC',
                   :timeout, 0, 60, true,
                   CASE WHEN i <= :n_due THEN :due_at ELSE :future_at + (i % 86400) END,
                   :created, :created
            FROM generate_series(1, :n) AS i
            """,
            prefix=prefix, endpoint=endpoint, cron=cron, timeout=timeout_seconds, n_due=n_due, due_at=due_at,
            future_at=future_at, n=n, created=int(self.now()),
        )  # fmt: skip

    def count_runs(self, status: str | None = None, scheduled_for: int | None = None) -> int:
        where = ["true"]
        if status is not None:
            where.append("status = :status")
        if scheduled_for is not None:
            where.append("scheduled_for = :slot")
        return int(
            self.scalar(
                f"SELECT count(*) FROM {self.q}.agno_schedule_runs WHERE {' AND '.join(where)}",
                status=status, slot=scheduled_for,
            )
        )


@contextmanager
def fresh_schema(prefix: str = "bench") -> Iterator[Schema]:
    ensure_database()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    db = Database(POSTGRES_URL, schema=name, settings=Settings(), pool_size=2)
    db.upgrade()
    try:
        yield Schema(name, db)
    finally:
        db.dispose()
        drop_schema(name)


def drop_schema(name: str) -> None:
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    engine.dispose()


def flush_redis() -> None:
    redis.Redis.from_url(REDIS_URL).flushdb()


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


# --- processes (tests/processes.py's, in a temporary folder) ----------------------------------


@contextmanager
def processes(keep_logs: bool = False) -> Iterator[Processes]:
    """A Processes logging to a temporary folder, every process stopped on exit; the folder
    is removed unless the block failed or `keep_logs`."""
    logs = Path(tempfile.mkdtemp(prefix="kern-bench-"))
    procs = Processes(logs)
    ok = False
    try:
        yield procs
        ok = True
    finally:
        procs.stop_all()
        if ok and not keep_logs:
            shutil.rmtree(logs, ignore_errors=True)
        else:
            log(f"logs kept in {logs}")


def bench_kern_env(schema: Schema, base_url: str, procs: Processes) -> dict[str, str]:
    """The settings of the benchmark's kern processes: `schema`, the bench Redis, and a
    Postgres application_name that postgres_backends_cpu_s() finds them by."""
    return kern_env(
        database_url=with_application_name(POSTGRES_URL, PG_APP),
        schema=schema.name, broker_url=REDIS_URL, base_url=base_url, service_token=SERVICE_TOKEN,
        data_dir=procs.logs / "kern",
    )  # fmt: skip


_CELERY_TS = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): (\w+)/[^\]]*\] (.*)$")


def celery_log_lines(path: Path, contains: str) -> list[tuple[float, str]]:
    """(epoch, message) of celery log lines whose message contains `contains`."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        m = _CELERY_TS.match(line)
        if m and contains in m.group(3):
            found.append((datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(), m.group(3)))
    return found


def dump_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
