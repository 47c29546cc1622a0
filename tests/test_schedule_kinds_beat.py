"""Schedule kinds fired by real processes: three `celery -A kern_tasks beat` replicas and a
worker (tests/processes.py) on real Postgres and Redis (database 10), calling a real HTTP
target on loopback. One cluster for the module; each test has schedules and a path of its own.

1. an interval of 2 s inside a 30 s window fires its exact 16 slots, each at start + 2k
   (no drift), once each, then disables itself past end_at;
2. a one-off fires exactly once across three replicas while the replica holding its lease
   is SIGKILLed mid-run, then reads disabled "completed";
3. max_runs=5 under three replicas fires exactly 5 slots (overlap allow and forbid);
4. expires_after_seconds with the worker stopped: slots are recorded "skipped" with the
   reason and counted, and none of them reaches the target once a worker is back.

Runtime: about 80 s. When one fails, the processes' logs are printed.
"""

from __future__ import annotations

import signal
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import RowMapping, select

from kern_tasks.db import Database, db_time, schedule_runs
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.scheduler.kinds import COMPLETED, iso
from tests.conftest import (
    EMPTY_SETTINGS, POSTGRES_URL, broker_url_for, drop_schema, flush_broker, fresh_schema_name,
)  # fmt: skip
from tests.processes import Processes, kern_env, wait_for
from tests.targets import Reply, TargetServer

pytestmark = pytest.mark.slow

REDIS_DB = 10
SLOW_S = 2.0


@dataclass
class Cluster:
    db: Database
    manager: ScheduleManager
    target: TargetServer
    procs: Processes
    beats: dict[str, Any] = field(default_factory=dict)
    worker: Any = None

    def now(self) -> int:
        with self.db.connect() as conn:
            return int(db_time(conn))

    def runs(self, schedule_id: str) -> list[RowMapping]:
        with self.db.connect() as conn:
            return list(conn.execute(
                select(schedule_runs).where(schedule_runs.c.schedule_id == schedule_id)
                .order_by(schedule_runs.c.scheduled_for, schedule_runs.c.attempt)
            ).mappings())  # fmt: skip

    def finished(self, schedule_id: str, timeout: float) -> Any:
        """Wait until the schedule has disabled itself; returns it."""
        return wait_for(lambda: (s := self.manager.get(schedule_id)) and not s.enabled and s, timeout, 0.25,
                        f"schedule {schedule_id} to disable itself")  # fmt: skip

    def keys(self, path: str) -> Counter[str]:
        return Counter(r.headers.get("idempotency-key") for r in self.target.requests(path))


def slot_key(run: RowMapping) -> str:
    return f"kern:{run['schedule_id']}:slot:{run['scheduled_for']}"


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    schema = fresh_schema_name()
    db = Database(POSTGRES_URL, schema=schema, settings=EMPTY_SETTINGS)
    db.upgrade()
    flush_broker(REDIS_DB)
    tmp: Path = tmp_path_factory.mktemp("kinds")
    failed_before = request.session.testsfailed
    with TargetServer() as target:
        target.script("/slow", Reply(delay=SLOW_S))
        env = kern_env(database_url=POSTGRES_URL, schema=schema, base_url=target.url, data_dir=tmp / "kern",
                       broker_url=broker_url_for(REDIS_DB))  # fmt: skip
        procs = Processes(tmp / "logs", env=env)
        found = Cluster(db, ScheduleManager(db), target, procs)
        found.worker = procs.worker("worker", concurrency=8)
        found.beats = {f"beat{i}": procs.beat(f"beat{i}", max_interval=1) for i in range(3)}
        procs.wait_for_log("worker", "ready.")
        for name in found.beats:
            procs.wait_for_log(name, "beat: Starting...")
        try:
            yield found
        finally:
            procs.stop_all()
            if request.session.testsfailed > failed_before:
                print(procs.dump_logs(tail=120))
    db.dispose()
    drop_schema(schema)


def test_an_interval_of_2s_fires_its_exact_slots_without_drift_and_end_at_stops_it(cluster: Cluster) -> None:
    start = cluster.now() + 4
    made = cluster.manager.create(name="every-2s", interval_seconds=2, start_at=start, end_at=start + 30,
                                  endpoint="/every-2s", timeout_seconds=10)  # fmt: skip
    assert made.next_run_at == start
    done = cluster.finished(made.id, 60)
    assert done.disabled_reason == f"end_at passed: no slot after {iso(start + 30)}"
    wait_for(lambda: all(r["status"] == "success" for r in cluster.runs(made.id)), 15, 0.25, "the last run to end")
    runs = cluster.runs(made.id)
    assert [r["scheduled_for"] for r in runs] == [start + 2 * k for k in range(16)]  # on the anchor, every one
    assert all((r["attempt"], r["status"]) == (1, "success") for r in runs)
    keys = cluster.keys("/every-2s")
    assert keys == Counter({slot_key(r): 1 for r in runs}), "the target saw a slot twice, or one that is not a row"
    wait_for(lambda: cluster.now() > start + 32, 10, 0.25, "a slot past the end")
    assert len(cluster.runs(made.id)) == 16  # nothing after the end
    print(f"\ninterval 2 s over 30 s: {len(runs)} slots fired, each once, at start + 2k")


def test_a_one_off_fires_once_across_three_replicas_and_a_beat_sigkill(cluster: Cluster) -> None:
    made = cluster.manager.create(name="one-off", run_at=cluster.now() + 3, endpoint="/slow", timeout_seconds=20)

    def running() -> RowMapping | None:
        rows = cluster.runs(made.id)
        return rows[0] if rows and rows[0]["status"] == "running" else None

    attempt = wait_for(running, 30, 0.1, "the one-off to start")
    holder = cluster.manager.get(made.id).locked_by  # forbid: the lease is held while its run is in flight
    assert holder, "the slot holds no lease"
    victim = next(name for name, proc in cluster.beats.items()
                  if holder.startswith(f"{socket.gethostname()}:{proc.pid}/"))  # fmt: skip
    cluster.procs.kill(cluster.beats[victim])  # SIGKILL, mid-run
    assert cluster.beats[victim].returncode == -signal.SIGKILL
    cluster.beats[f"{victim}-again"] = cluster.procs.beat(f"{victim}-again", max_interval=1)  # for the tests after
    del cluster.beats[victim]
    done = cluster.finished(made.id, 30)
    assert done.disabled_reason == COMPLETED and done.next_run_at is None
    runs = cluster.runs(made.id)
    assert [(r["id"], r["attempt"], r["status"]) for r in runs] == [(attempt["id"], 1, "success")]
    assert cluster.keys("/slow") == Counter({slot_key(runs[0]): 1})
    print(f"\none-off across 3 replicas, its lease holder SIGKILLed mid-run: fired {len(runs)} time(s), then "
          f"disabled {done.disabled_reason!r}")  # fmt: skip


def test_max_runs_5_under_three_replicas_fires_exactly_5(cluster: Cluster) -> None:
    made = {
        policy: cluster.manager.create(name=f"five-{policy}", interval_seconds=1, max_runs=5, overlap_policy=policy,
                                       endpoint=f"/five-{policy}", timeout_seconds=10).id
        for policy in ("allow", "forbid")
    }  # fmt: skip
    counts = {}
    for policy, sid in made.items():
        done = cluster.finished(sid, 40)
        assert done.disabled_reason == "max_runs reached: 5 of 5 runs fired", done.disabled_reason
        runs = cluster.runs(sid)
        assert len(runs) == 5 and all((r["attempt"], r["status"]) == (1, "success") for r in runs), runs
        assert cluster.keys(f"/five-{policy}") == Counter({slot_key(r): 1 for r in runs})
        counts[policy] = len(runs)
    print(f"\nmax_runs=5 under 3 replicas: slots fired {counts}")


def test_expired_slots_are_skipped_while_the_worker_is_stopped(cluster: Cluster) -> None:
    cluster.procs.stop(cluster.worker)
    made = cluster.manager.create(name="expiring", interval_seconds=1, expires_after_seconds=2, overlap_policy="allow",
                                  endpoint="/expiring", timeout_seconds=10)  # fmt: skip

    def skipped() -> list[RowMapping]:
        return [r for r in cluster.runs(made.id) if r["status"] == "skipped"]

    wait_for(lambda: len(skipped()) >= 5, 30, 0.25, "five skipped slots")
    restarted_at = cluster.now()
    cluster.worker = cluster.procs.worker("worker-again", concurrency=8)
    wait_for(lambda: any(r["status"] == "success" for r in cluster.runs(made.id)), 30, 0.25, "a fire once a worker is back")
    cluster.manager.update(made.id, enabled=False)
    wait_for(lambda: not [r for r in cluster.runs(made.id) if r["status"] in ("queued", "running")], 20, 0.25,
             "every attempt to end")  # fmt: skip
    runs = cluster.runs(made.id)
    dropped = [r for r in runs if r["status"] == "skipped"]
    assert len(dropped) >= 5
    assert all("expires_after_seconds (2)" in r["error"] and r["triggered_at"] is None for r in dropped)
    assert cluster.manager.get(made.id).skipped_slots >= len(dropped)
    fired = {slot_key(r) for r in runs if r["status"] == "success"}
    assert set(cluster.keys("/expiring")) == fired, "a skipped slot reached the target"
    assert all(r["scheduled_for"] >= restarted_at - 2 for r in runs if r["status"] == "success")
    assert {r["status"] for r in runs} <= {"skipped", "success", "cancelled"}
    print(f"\nexpires_after_seconds=2, worker stopped: {len(dropped)} slots skipped and counted "
          f"({cluster.manager.get(made.id).skipped_slots} in skipped_slots), {len(fired)} fired after its return")
