"""The attempt rows' transitions (scheduler/attempts.py, claims.py, sweeps.py) on real Postgres and SQLite."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import select, update

from kern_tasks.db import Database, db_now
from kern_tasks.db.tables import schedule_runs, schedules
from kern_tasks.firing.http import FireOutcome
from kern_tasks.scheduler import ScheduleManager, attempts, claims, sweeps


def queued_run(db: Database, *, max_retries: int = 0, lease: bool = False, not_before_in: int | None = None):
    manager = ScheduleManager(db)
    schedule = manager.create(name=f"s-{uuid.uuid4().hex[:6]}", cron="0 0 1 1 *", endpoint="/x",
                              max_retries=max_retries, retry_delay_seconds=1)
    with db.begin() as conn:
        now = db_now(conn)
        token = "replica/abc" if lease else None
        if lease:
            conn.execute(update(schedules).where(schedules.c.id == schedule.id).values(locked_by=token, locked_at=now))
        row = claims.queued_attempt(
            schedule_id=schedule.id, attempt=1, scheduled_for=now, manual=False, user_id=None, now=now,
            not_before=now + not_before_in if not_before_in else None, lease_token=token,
        )  # fmt: skip
        conn.execute(schedule_runs.insert().values(row))
    return manager, schedule, row["id"]


def run_row(db: Database, attempt_id: str):
    with db.connect() as conn:
        return conn.execute(select(schedule_runs).where(schedule_runs.c.id == attempt_id)).mappings().one()


def test_an_attempt_starts_once_unless_resuming_its_own_lost_commit(db: Database) -> None:
    _, _, attempt_id = queued_run(db)
    with db.begin() as conn:
        first = attempts.start_attempt(conn, attempt_id)
    assert isinstance(first, attempts.Attempt) and first.run["status"] == "running"
    with db.begin() as conn:
        assert attempts.start_attempt(conn, attempt_id) is None  # a duplicate message does nothing
    with db.begin() as conn:  # the same task retrying after its commit's answer was lost
        resumed = attempts.start_attempt(conn, attempt_id, resume=True)
    assert isinstance(resumed, attempts.Attempt) and resumed.run["id"] == attempt_id
    with db.begin() as conn:  # ... but not a run that has been running for long
        conn.execute(update(schedule_runs).where(schedule_runs.c.id == attempt_id)
                     .values(triggered_at=schedule_runs.c.triggered_at - 10 * attempts.RESUME_WINDOW_S))
    with db.begin() as conn:
        assert attempts.start_attempt(conn, attempt_id, resume=True) is None


def test_an_early_delivery_waits_and_a_disabled_schedule_cancels(db: Database) -> None:
    _, _, early = queued_run(db, not_before_in=30)
    with db.begin() as conn:
        waiting = attempts.start_attempt(conn, early)
    assert isinstance(waiting, attempts.NotYet) and 25 <= waiting.seconds <= 31
    manager, schedule, attempt_id = queued_run(db)
    manager.disable(schedule.id)
    with db.begin() as conn:
        assert attempts.start_attempt(conn, attempt_id) is None
    assert run_row(db, attempt_id)["status"] == "cancelled"


def test_finishing_retries_then_releases_the_lease(db: Database) -> None:
    manager, schedule, attempt_id = queued_run(db, max_retries=1, lease=True)
    failed = FireOutcome("failed", retryable=True, status_code=503, error="HTTP 503")
    with db.begin() as conn:
        attempts.start_attempt(conn, attempt_id)
    with db.begin() as conn:
        retry = attempts.finish_attempt(conn, attempt_id, failed)
    assert retry is not None and 0 <= retry.countdown <= 1
    assert run_row(db, attempt_id)["status"] == "retrying"
    assert manager.get(schedule.id).locked_by == "replica/abc"  # held through the retry
    second = run_row(db, retry.attempt_id)
    assert (second["attempt"], second["status"], second["scheduled_for"]) == (2, "queued", run_row(db, attempt_id)["scheduled_for"])
    time.sleep(retry.countdown + 1)  # not_before is whole seconds on the database clock
    with db.begin() as conn:
        assert isinstance(attempts.start_attempt(conn, retry.attempt_id), attempts.Attempt)
    with db.begin() as conn:
        assert attempts.finish_attempt(conn, retry.attempt_id, failed) is None  # the budget is spent
    assert run_row(db, retry.attempt_id)["status"] == "failed"
    assert manager.get(schedule.id).locked_by is None  # the slot's last attempt gave it back


def test_a_manual_run_is_one_queued_attempt_per_second_for_the_sweep_to_publish(db: Database) -> None:
    manager = ScheduleManager(db)
    schedule = manager.create(name="manual", cron="0 0 1 1 *", endpoint="/x", user_id="alice")
    with db.begin() as conn:
        now = db_now(conn)
        first = claims.queue_manual(conn, schedule.id, user_id="alice", now=now)
        again = claims.queue_manual(conn, schedule.id, user_id="alice", now=now)  # a double click
        later = claims.queue_manual(conn, schedule.id, user_id="alice", now=now + 1)
    assert again["id"] == first["id"] != later["id"]
    assert (first["status"], first["manual"], first["attempt"], first["scheduled_for"]) == ("queued", True, 1, now)
    assert (first["user_id"], first["lease_token"], first["enqueued_at"]) == ("alice", None, None)
    with db.begin() as conn:  # no message yet: beat's sweep hands both to the broker, once
        swept = sweeps.sweep_unpublished(conn, now=now + 1, republish_after_s=30, limit=10)
        assert sweeps.sweep_unpublished(conn, now=now + 1, republish_after_s=30, limit=10) == []
    assert sorted(d.attempt_id for d in swept) == sorted([first["id"], later["id"]])
