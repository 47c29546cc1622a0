"""Beat's sweep against real Postgres and Redis (no worker): a backlog is not re-published,
messages lost with the broker are."""

from __future__ import annotations

import uuid

import redis
from sqlalchemy import select

from kern_tasks.app import create_app
from kern_tasks.beat import LeaseScheduler
from kern_tasks.db import Database, db_now
from kern_tasks.db.tables import schedule_runs
from kern_tasks.dispatch import Dispatch, publish
from kern_tasks.runtime import bind_runtime
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.settings import Settings

from .conftest import broker_url_for, flush_broker

REDIS_DB = 11


def enqueued_at(db: Database) -> list[int]:
    with db.connect() as conn:
        return sorted(conn.execute(select(schedule_runs.c.enqueued_at)).scalars())


def test_sweep_leaves_a_backlog_alone_and_republishes_lost_messages(pg_schema: str) -> None:
    from .conftest import POSTGRES_URL

    flush_broker(REDIS_DB)
    settings = Settings(database_url=POSTGRES_URL, db_schema=pg_schema, broker_url=broker_url_for(REDIS_DB))
    db = Database(settings=settings)
    db.upgrade()
    app = create_app(settings)
    bind_runtime(app, settings, db)
    schedule = ScheduleManager(db).create(name="s", cron="0 0 1 1 *", endpoint="/x")
    with db.begin() as conn:
        long_ago = db_now(conn) - 300
        ids = [str(uuid.uuid4()) for _ in range(5)]
        conn.execute(schedule_runs.insert(), [
            dict(id=i, schedule_id=schedule.id, attempt=1, status="queued", scheduled_for=long_ago + n,
                 enqueued_at=long_ago, created_at=long_ago) for n, i in enumerate(ids)
        ])  # fmt: skip
    publish(app, [Dispatch(i) for i in ids])  # a backlog: all five are in the queue, one kern.fire_batch
    queue = redis.Redis.from_url(broker_url_for(REDIS_DB))
    assert queue.llen("celery") == 1

    beat = LeaseScheduler(app, lazy=True)
    assert beat.broker_backlog() == 1  # a message, of up to beat.fire_batch attempts
    beat.sweep_if_due()
    assert enqueued_at(db) == [long_ago] * 5 and queue.llen("celery") == 1

    queue.delete("celery")  # what a Redis restart does to them
    beat._last_sweep = 0.0
    beat.sweep_if_due()
    assert all(t > long_ago for t in enqueued_at(db))
    assert queue.llen("celery") == 1
    flush_broker(REDIS_DB)


def test_a_round_disables_a_row_whose_cron_only_agno_understands(pg_schema: str) -> None:
    from sqlalchemy import update

    from kern_tasks.db.tables import schedules

    from .conftest import POSTGRES_URL

    settings = Settings(database_url=POSTGRES_URL, db_schema=pg_schema, broker_url=broker_url_for(REDIS_DB))
    db = Database(settings=settings)
    db.upgrade()
    app = create_app(settings)
    bind_runtime(app, settings, db)
    manager = ScheduleManager(db)
    good = manager.create(name="good", cron="* * * * *", endpoint="/x")
    odd = manager.create(name="odd", cron="* * * * *", endpoint="/x")
    with db.begin() as conn:  # as agno (croniter) would have written it: third Friday
        past = db_now(conn) - 5
        conn.execute(update(schedules).where(schedules.c.id == odd.id).values(cron_expr="0 9 * * 5#3"))
        conn.execute(update(schedules).values(next_run_at=past))
    LeaseScheduler(app, lazy=True).run_once()
    odd_after, good_after = manager.get(odd.id), manager.get(good.id)
    assert odd_after.enabled is False and "day-of-week" in (odd_after.disabled_reason or "")
    assert odd_after.locked_by is None and manager.runs(odd.id).total_count == 0
    assert good_after.enabled and manager.runs(good.id).total_count == 1  # the batch went on
    flush_broker(REDIS_DB)


def test_constructing_the_scheduler_does_no_io() -> None:
    """Celery builds a scheduler lazily just to print its banner: with nothing listening
    anywhere, constructing one (lazy or not) and reading its banner must not touch I/O."""
    import time as clock

    settings = Settings(database_url="postgresql://nobody@127.0.0.1:1/none",
                        broker_url="redis://127.0.0.1:1/0")
    app = create_app(settings)
    started = clock.monotonic()
    for lazy in (True, False):
        scheduler = LeaseScheduler(app, lazy=lazy)
        assert "lease scheduler" in scheduler.info and scheduler.schedule == {}
    assert clock.monotonic() - started < 1.0
    assert app._kern_runtime._db is None  # no database was made
