"""Flower shows schedules: the Procfile's own worker, beat and flower lines (read from the
file, run through a shell as a Procfile runner does: no -E anywhere) on Postgres and Redis,
and Flower's HTTP API finds each fire by its schedule's name, slot and attempt.

- a cron slot that fails once then succeeds: attempt 1 (beat's claim) and attempt 2 (the
  retry) are `kern.fire[daily_digest]`, kwargs {'schedule', 'slot' (ISO), 'attempt'};
- a manual trigger (published by beat's sweep) carries `manual: True`;
- Flower's search finds them by name, by `kwargs:schedule=...` and `kwargs:attempt=2`,
  and the task ids are the attempt ids in agno_schedule_runs;
- a workflow run on the same worker: `kern.workflow.advance[fact_check]` and one
  `kern.workflow.step[fact_check/<step name>]` per step, kwargs {'workflow', 'step', 'path'}.

Flower's API is opened without auth only here (FLOWER_UNAUTHENTICATED_API in the
subprocess's environment); production auth is docs/operating.md's "Flower".
"""

from __future__ import annotations

import ast
import json
import os
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from sqlalchemy import select

from kern_tasks.app import create_app
from kern_tasks.db import db_now, schedule_runs
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.settings import Settings
from kern_tasks.workflow import submit
from tests.conftest import POSTGRES_URL, one_shot_cron
from tests.fire_stack import FireStack, fire_stack
from tests.processes import PYTHON, free_port, wait_for
from tests.test_process_types import procfile
from tests.targets import Reply

WORKFLOWS_APP = "tests.workflow_schedule_app:agent_os"
REDIS_DB = 4  # shared by number with another module: modules of one process run one after another
BIN = str(Path(PYTHON).parent)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def start_procfile_line(stack: FireStack, name: str, env: dict[str, str] | None = None) -> Any:
    """One Procfile process as a Procfile runner starts it: `sh -c "exec <line>"`, with the
    checkout's Python first on PATH (its `celery`, `kern-tasks`)."""
    line = procfile()[name]
    path = f"{BIN}{os.pathsep}{stack.procs.env.get('PATH', os.defpath)}"
    return stack.procs.start(name, ["/bin/sh", "-c", f"exec {line}"], env={"PATH": path, **(env or {})})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FireStack, str]]:
    with fire_stack(tmp_path_factory.mktemp("flower"), REDIS_DB) as made:
        port = free_port()
        start_procfile_line(made, "flower", {"FLOWER_PORT": str(port), "FLOWER_UNAUTHENTICATED_API": "true"})
        flower = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ok(f"{flower}/healthcheck"), 60, 0.3, "flower answering")
        start_procfile_line(made, "worker", {"KERN_WORKER_CONCURRENCY": "4", "KERN_APP": WORKFLOWS_APP})
        made.procs.wait_for_log("worker", " ready.", timeout=60)
        start_procfile_line(made, "beat")
        yield made, flower


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def flower_tasks(flower: str, **params: str) -> dict[str, dict[str, Any]]:
    reply = httpx.get(f"{flower}/api/tasks", params=params, timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.json()


def wait_for_or_none(condition: Any, timeout: float) -> Any:
    try:
        return wait_for(condition, timeout, 0.5)
    except AssertionError:
        return None


def finished(found: dict[str, dict[str, Any]], count: int) -> dict[str, dict[str, Any]] | None:
    done = {k: t for k, t in found.items() if t["state"] in ("SUCCESS", "FAILURE")}
    return done if len(done) >= count else None


def test_flower_finds_each_fire_by_schedule_name_slot_and_attempt(stack: tuple[FireStack, str]) -> None:
    made, flower = stack
    manager = ScheduleManager(made.db)
    # A manual run first: published by beat's sweep; once Flower shows it, Flower's event
    # receiver is surely connected for the cron fire below.
    weekly = manager.create(name="weekly_report", cron="0 9 * * 1", endpoint="/weekly")

    def manual_run_shown() -> dict[str, dict[str, Any]] | None:
        manager.trigger(weekly.id)  # again if Flower's receiver missed the last one (one per second at most)
        return wait_for_or_none(lambda: finished(flower_tasks(flower, search="weekly_report"), 1), 10)

    manual = wait_for(manual_run_shown, 60, 0, "a manual run in Flower")
    manual_task = next(iter(manual.values()))
    assert manual_task["name"] == "kern.fire[weekly_report]"
    assert ast.literal_eval(manual_task["kwargs"])["manual"] is True

    made.target.script("/digest", [Reply(500), Reply(200, json={"ok": True})])
    with made.db.connect() as conn:
        slot = db_now(conn) + 3
    digest = manager.create(name="daily_digest", cron=one_shot_cron(slot), endpoint="/digest",
                            max_retries=1, retry_delay_seconds=1)
    found = wait_for(lambda: finished(flower_tasks(flower, search="daily_digest"), 2), 90, 0.5,
                     "both attempts of daily_digest in Flower")
    print("Flower /api/tasks?search=daily_digest ->", json.dumps(found, indent=2, sort_keys=True))

    with made.db.connect() as conn:
        rows = conn.execute(select(schedule_runs.c.id, schedule_runs.c.attempt, schedule_runs.c.status)
                            .where(schedule_runs.c.schedule_id == digest.id)
                            .order_by(schedule_runs.c.attempt)).all()
    assert [(r.attempt, r.status) for r in rows] == [(1, "retrying"), (2, "success")]
    assert set(found) == {r.id for r in rows}  # Flower's task ids are our attempt ids
    iso_slot = datetime.fromtimestamp(slot, UTC).isoformat()
    for row in rows:
        task = found[row.id]
        assert task["name"] == "kern.fire[daily_digest]"
        assert ast.literal_eval(task["kwargs"]) == {"schedule": "daily_digest", "slot": iso_slot,
                                                    "attempt": row.attempt}
        assert ast.literal_eval(task["args"]) == [row.id]
        assert task["state"] == "SUCCESS" and task["worker"].startswith("celery@")
        assert task["sent"] is not None  # beat's sent event (task_send_sent_event)

    by_kwargs = flower_tasks(flower, search="kwargs:schedule=daily_digest kwargs:attempt=2")
    assert list(by_kwargs) == [rows[1].id]
    by_name = flower_tasks(flower, taskname="kern.fire[daily_digest]")
    assert set(by_name) == {r.id for r in rows}
    assert flower_tasks(flower, search="kwargs:schedule=no_such_schedule") == {}


def test_flower_names_workflow_steps_by_workflow_and_step(stack: tuple[FireStack, str]) -> None:
    made, flower = stack
    from tests.workflow_schedule_app import fact_check

    settings = Settings(database_url=POSTGRES_URL, db_schema=made.schema, broker_url=made.procs.env["KERN_BROKER_URL"])
    app = create_app(settings)
    try:
        run = submit.start(app, fact_check(), "the moon is cheese", db=made.db)
        assert submit.wait(made.db, run.run_id, timeout=60).status.value == "ERROR"  # agno's rule for its Loop
    finally:
        app.close()

    def steps() -> dict[str, dict[str, Any]] | None:
        found = finished(flower_tasks(flower, search="kwargs:workflow=fact_check"), 3)
        return found if found and any(t["name"].startswith("kern.workflow.advance") for t in found.values()) else None

    try:
        found = wait_for(steps, 60, 0.5, "the run's messages in Flower")
    except AssertionError:
        print(json.dumps(flower_tasks(flower, search="fact_check"), indent=1))
        raise
    names = {t["name"] for t in found.values()}
    assert {"kern.workflow.advance[fact_check]", "kern.workflow.step[fact_check/gather]",
            "kern.workflow.step[fact_check/check]"} <= names, names
    gather = next(t for t in found.values() if t["name"] == "kern.workflow.step[fact_check/gather]")
    assert ast.literal_eval(gather["kwargs"]) == {"workflow": "fact_check", "step": "gather", "path": "0"}
    assert ast.literal_eval(gather["args"])[0] == run.run_id


def test_a_batch_message_shows_every_fire_it_carries(stack: tuple[FireStack, str]) -> None:
    made, flower = stack
    manager = ScheduleManager(made.db)
    with made.db.connect() as conn:
        slot = db_now(conn) + 3
    # Two schedules due at one slot: beat claims them in one tick, one kern.fire_batch message.
    for name in ("batch_a", "batch_b"):
        manager.create(name=name, cron=one_shot_cron(slot), endpoint="/batch")
    found = wait_for(lambda: finished(flower_tasks(flower, search="batch_a"), 1), 60, 0.5, "the batch in Flower")
    (task,) = found.values()
    assert task["name"] in ("kern.fire_batch[batch_a,batch_b]", "kern.fire_batch[batch_b,batch_a]")
    shown = ast.literal_eval(task["kwargs"])
    iso_slot = datetime.fromtimestamp(slot, UTC).isoformat()
    assert sorted(shown["fires"], key=lambda f: f["schedule"]) == [
        {"schedule": "batch_a", "slot": iso_slot, "attempt": 1}, {"schedule": "batch_b", "slot": iso_slot, "attempt": 1}]
    assert list(flower_tasks(flower, search="batch_b")) == list(found)


def test_install_turns_events_on_and_names_sent_events_by_the_shadow(tmp_path: Path) -> None:
    """Your own Celery app, after `install`: task events on, and a shadowed message's
    "task-sent" event carries the shadow (Celery's own AMQP would send the task's name)."""
    from celery import Celery

    from kern_tasks.app import install
    from kern_tasks.dispatch import LabelledAMQP

    app = Celery("yours", broker="memory://")
    install(app, Settings(data_dir=tmp_path))
    assert app.conf.worker_send_task_events is True and app.conf.task_send_sent_event is True
    assert isinstance(app.amqp, LabelledAMQP)
    message = app.amqp.as_task_v2("an-id", "kern.fire", ["an-id"], {}, shadow="kern.fire[daily_digest]",
                                  create_sent_event=True)
    assert message.sent_event["name"] == "kern.fire[daily_digest]"
    assert message.headers["task"] == "kern.fire"  # the worker still runs kern.fire
    app.close()
