"""Queues and priorities: a schedule's `queue` and `priority` reach its fire's Celery message.

One stack for the module: Postgres (a schema of its own), Redis database 2, the AgentOS
of tests/workflow_schedule_app.py served by uvicorn (the fires' target), one beat and two
real worker processes (KERN_APP names that AgentOS, so they run its workflows' steps), one
consuming the app's default queue and one started with `-Q reports`. Which worker took an
attempt, or a workflow step, is read from its row (worker_id -> kern_workers.pid).

Priority: messages published to a queue no worker consumes stay in Redis, where kombu
keeps one list per priority step (`queue`, `queue\\x06\\x163`, ..., `\\x06\\x169`), so
the list a message sits in, and its `priority` property, show what the publish asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator

import pytest
import redis
from sqlalchemy import select

from kern_tasks.db import Database, schedule_runs
from kern_tasks.db.tables import workers
from kern_tasks.errors import ValidationError
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.workflow import progress
from tests.conftest import broker_url_for
from tests.fire_stack import fire_stack
from tests.processes import Processes, free_port, wait_for
from tests.test_workflow_schedule import APP, serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REDIS_DB = 2
EVERY_SECOND = "* * * * * *"
FAR_CRON = "0 0 1 1 *"
SEP = "\x06\x16"  # kombu's Redis priority separator


@dataclass
class Stack:
    db: Database
    manager: ScheduleManager
    cluster: Processes
    pids: dict[str, int]

    def runs(self, schedule_id: str) -> list[Any]:
        with self.db.connect() as conn:
            return list(conn.execute(
                select(schedule_runs.c.id, schedule_runs.c.status, schedule_runs.c.manual, workers.c.pid)
                .outerjoin(workers, workers.c.id == schedule_runs.c.worker_id)
                .where(schedule_runs.c.schedule_id == schedule_id)
            ).mappings())


def _worker(cluster: Processes, name: str, queues: str | None) -> int:
    args = ["worker", "-P", "threads", "-c", "4", "-l", "INFO", "-n", f"{name}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat"]
    if queues:
        args += ["-Q", queues]
    proc = cluster.celery(name, args)
    cluster.wait_for_log(name, " ready.", timeout=60)
    return proc.pid


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with fire_stack(tmp_path_factory.mktemp("queues"), REDIS_DB) as made:
        cluster = made.procs
        # The fires' target is the AgentOS (its workflows' runs), not the stack's TargetServer.
        port = free_port()
        cluster.env.update(KERN_BASE_URL=f"http://127.0.0.1:{port}", KERN_APP=f"{APP}:agent_os")
        serve(cluster, "app", port)
        pids = {"default": _worker(cluster, "default", None), "reports": _worker(cluster, "reports", "reports")}
        cluster.beat(max_interval=1)
        yield Stack(made.db, ScheduleManager(made.db), cluster, pids)


def test_a_queue_is_fired_only_by_the_worker_that_consumes_it(stack: Stack) -> None:
    reports = stack.manager.create(name="nightly-report", cron=EVERY_SECOND, endpoint="/health", method="GET",
                                   queue="reports")
    plain = stack.manager.create(name="plain", cron=EVERY_SECOND, endpoint="/health", method="GET")
    assert (reports.queue, plain.queue) == ("reports", None)

    def finished(schedule_id: str, count: int) -> list[Any] | None:
        done = [r for r in stack.runs(schedule_id) if r["status"] == "success"]
        return done if len(done) >= count else None

    wait_for(lambda: finished(reports.id, 4) and finished(plain.id, 4), 60, what="4 fires of each schedule")
    # A manual run goes through beat's sweep (the re-publish path): the same queue.
    manual = stack.manager.trigger_run(reports.id)
    wait_for(lambda: any(r["id"] == manual.id and r["status"] == "success" for r in stack.runs(reports.id)),
             30, what="the triggered run")
    stack.manager.disable(reports.id)
    stack.manager.disable(plain.id)
    wait_for(lambda: all(r["status"] not in ("queued", "running")
                         for r in stack.runs(reports.id) + stack.runs(plain.id)), 30, what="open attempts to end")
    fired_reports = stack.runs(reports.id)
    fired_plain = stack.runs(plain.id)
    print(f"reports: {len(fired_reports)} attempts, plain: {len(fired_plain)} attempts")
    assert {r["pid"] for r in fired_reports if r["status"] == "success"} == {stack.pids["reports"]}
    assert {r["pid"] for r in fired_plain if r["status"] == "success"} == {stack.pids["default"]}
    assert any(r["manual"] for r in fired_reports)


def test_a_scheduled_workflow_runs_its_steps_on_the_schedules_queue(stack: Stack) -> None:
    """The fire carries the route (X-Kern-Queue, X-Kern-Priority) to POST /workflows/.../runs;
    the run's advance and step messages take it, so only the `reports` worker runs steps."""
    s = stack.manager.create(name="report-pipeline", cron=FAR_CRON, endpoint="/workflows/fact-check/runs",
                             payload={"message": "Q3"}, queue="reports", priority=6, timeout_seconds=60)
    manual = stack.manager.trigger_run(s.id)

    def ended() -> Any:
        run = stack.manager.get_run(s.id, manual.id)
        return run if run.status not in ("queued", "running") else None

    run = wait_for(ended, 60, what="the workflow fire to end")
    assert run.run_id, run
    with stack.db.connect() as conn:
        row = progress.get_run(conn, run.run_id)
        attempts = list(progress.attempts(conn, run.run_id))
        pids = set(conn.execute(select(workers.c.pid).where(
            workers.c.id.in_({a["worker_id"] for a in attempts}))).scalars())
    assert row["request"]["route"] == {"queue": "reports", "priority": 6}
    assert len(attempts) >= 2  # gather, then the loop's checks
    assert pids == {stack.pids["reports"]}
    print(f"workflow run {run.run_id}: {len(attempts)} step attempt(s), all on the reports worker")


def test_priority_reaches_the_message(stack: Stack) -> None:
    broker = redis.Redis.from_url(broker_url_for(REDIS_DB))
    urgent = stack.manager.create(name="urgent", cron=FAR_CRON, endpoint="/urgent", queue="idle", priority=9)
    low = stack.manager.create(name="low", cron=FAR_CRON, endpoint="/low", queue="idle", priority=0)
    changed = stack.manager.update(low.id, priority=4)
    assert changed is not None and changed.priority == 4
    urgent_run, low_run = stack.manager.trigger_run(urgent.id).id, stack.manager.trigger_run(low.id).id
    runs = {urgent_run, low_run}

    def queued() -> dict[str, tuple[str, int]]:
        found = {}
        for key in broker.scan_iter("idle*"):
            if broker.type(key) != b"list":
                continue
            for raw in broker.lrange(key, 0, -1):
                message = json.loads(raw)
                found[message["headers"]["id"]] = (key.decode(), message["properties"]["priority"])
        return found if set(runs) <= set(found) else {}

    found = wait_for(queued, 30, what="both messages in the idle queue")
    assert found[urgent_run] == (f"idle{SEP}9", 9)
    assert found[low_run] == (f"idle{SEP}3", 4)  # kombu's step for 4 is 3 (steps 0, 3, 6, 9)
    assert {stack.manager.get_run(urgent.id, urgent_run).status,
            stack.manager.get_run(low.id, low_run).status} == {"queued"}  # nobody consumes "idle"


def test_bad_queue_and_priority_are_refused_naming_the_field(stack: Stack) -> None:
    with pytest.raises(ValidationError) as bad_queue:
        stack.manager.create(name="bad", cron=FAR_CRON, endpoint="/x", queue="no spaces")
    assert bad_queue.value.field == "queue"
    with pytest.raises(ValidationError) as bad_priority:
        stack.manager.create(name="bad", cron=FAR_CRON, endpoint="/x", priority=10)
    assert bad_priority.value.field == "priority"
    assert not [s for s in stack.manager.list_all() if s.name == "bad"]


def test_scheduler_tools_set_queue_and_priority(db: Database) -> None:
    """A model's SchedulerTools take queue and priority; a bad one comes back naming the field."""
    from kern_tasks.tools.scheduler import SchedulerTools

    tools = SchedulerTools(db=db, default_endpoint="/agents/a/runs")
    made = json.loads(tools.create_schedule(name="nightly", cron="0 2 * * *", message="report", queue="reports",
                                            priority=2))
    assert (made["queue"], made["priority"]) == ("reports", 2), made
    changed = json.loads(tools.update_schedule(made["id"], priority=7))
    assert changed["priority"] == 7, changed
    bad = json.loads(tools.create_schedule(name="bad", cron="0 2 * * *", message="x", queue="has space"))
    assert bad["field"] == "queue" and "error" in bad
    assert ScheduleManager(db).get_by_name("nightly").queue == "reports"
