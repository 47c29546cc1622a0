"""Worker heartbeats (kern_tasks.firing.liveness) and the lost-attempt rule
(scheduler/attempts.py, claims.py, sweeps.py), on real Postgres and SQLite.

The multi-process half (a worker SIGKILLed mid-call, a slow call on a live worker, a
resumed agno run) is tests/test_worker_loss.py.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import delete, select, text, update

from kern_tasks.db import Database, db_now
from kern_tasks.db.tables import schedule_runs, workers
from kern_tasks.dispatch import Dispatch
from kern_tasks.firing import liveness
from kern_tasks.firing.http import FireOutcome, FireRequest, fire, make_client
from kern_tasks.scheduler import ScheduleManager, attempts, claims, sweeps
from tests.conftest import EMPTY_SETTINGS
from tests.processes import wait_for
from tests.targets import AgnoRun, TargetServer

_r = schedule_runs


def running_attempt(
    db: Database, *, worker: str | None = "w-1", max_retries: int = 0, endpoint: str = "/x"
) -> tuple[str, str]:
    """A schedule with the defaults (timeout_seconds 3600) and one attempt taken by
    `worker` (registered in the same transaction); returns (schedule id, attempt id)."""
    schedule = ScheduleManager(db).create(
        name=f"s-{uuid.uuid4().hex[:6]}", cron="0 0 1 1 *", endpoint=endpoint, max_retries=max_retries
    )
    attempt_id = str(uuid.uuid4())
    with db.begin() as conn:
        now = db_now(conn)
        conn.execute(_r.insert().values(
            id=attempt_id, schedule_id=schedule.id, attempt=1, status="queued", scheduled_for=now, created_at=now,
        ))  # fmt: skip
    with db.begin() as conn:
        if worker is not None:
            liveness.beat_once(conn, worker)
        taken = attempts.start_attempt(conn, attempt_id, worker_id=worker)
    assert isinstance(taken, attempts.Attempt)
    return schedule.id, attempt_id


def rows(db: Database, schedule_id: str) -> list[Any]:
    with db.connect() as conn:
        return list(conn.execute(select(_r).where(_r.c.schedule_id == schedule_id).order_by(_r.c.attempt)).mappings())


def sweep(db: Database, *, later_s: int, heartbeats: bool = True) -> list[Dispatch]:
    """The beat sweep's lost-attempt step, `later_s` seconds from the database's now."""
    with db.begin() as conn:
        return sweeps.expire_lost_attempts(conn, now=db_now(conn) + later_s, limit=100, heartbeats=heartbeats)


def take(db: Database, attempt_id: str, worker: str) -> Any:
    """A worker takes a queued retry (its not_before, set on a clock the sweep moved on, cleared)."""
    with db.begin() as conn:
        conn.execute(update(_r).where(_r.c.id == attempt_id).values(not_before=None))
        liveness.beat_once(conn, worker)
        return attempts.start_attempt(conn, attempt_id, worker_id=worker)


def beat_at(db: Database, worker: str, *, later_s: int) -> None:
    """What a worker that is alive `later_s` seconds from now has written by then."""
    with db.begin() as conn:
        conn.execute(update(workers).where(workers.c.id == worker).values(heartbeat_at=db_now(conn) + later_s))


# --- the heart ------------------------------------------------------------------------------


def test_the_heart_registers_and_keeps_beating_on_its_own_thread(db: Database) -> None:
    heart = liveness.Heart(db, f"test:{uuid.uuid4().hex[:6]}", interval_s=0.2)
    heart.start()
    try:
        heart.start()  # idempotent
        first = wait_for(lambda: heartbeat_of(db, heart.worker_id), 10, 0.1, "the first beat")
        wait_for(lambda: (heartbeat_of(db, heart.worker_id) or 0) > first, 10, 0.2, "a later beat")
        assert heart.alive and heart.fresh()
        with db.connect() as conn:
            row = conn.execute(select(workers).where(workers.c.id == heart.worker_id)).mappings().one()
        assert row["pid"] > 0 and row["hostname"] and row["started_at"] <= row["heartbeat_at"]
    finally:
        heart.stop()
    assert not heart.alive


def heartbeat_of(db: Database, worker: str) -> int | None:
    with db.connect() as conn:
        return conn.execute(select(workers.c.heartbeat_at).where(workers.c.id == worker)).scalar()


def test_a_database_error_does_not_stop_the_heart(db: Database) -> None:
    """The table vanishes (as in an outage, every beat fails); the thread lives on and beats
    again once the database answers."""
    heart = liveness.Heart(db, f"test:{uuid.uuid4().hex[:6]}", interval_s=0.2)
    prefix = f'"{db.schema}".' if db.schema else ""
    with db.begin() as conn:
        conn.execute(text(f"ALTER TABLE {prefix}kern_workers RENAME TO kern_workers_away"))
    heart.start()
    try:
        wait_for(lambda: heart.failing, 10, 0.05, "a failed beat")
        time.sleep(3 * liveness.RETRY_S)
        assert heart.alive and heart.failing
        with db.begin() as conn:
            conn.execute(text(f"ALTER TABLE {prefix}kern_workers_away RENAME TO kern_workers"))
        wait_for(lambda: heartbeat_of(db, heart.worker_id), 10, 0.1, "a beat after the database came back")
        assert heart.alive and not heart.failing
    finally:
        heart.stop()


def _child_heart(url: str, schema: str | None, queue: Any) -> None:
    """In a forked child: its first heart, on a Database of its own (as runtime_for makes)."""
    heart = liveness.heart_for(Database(url, schema=schema, settings=EMPTY_SETTINGS))
    queue.put((liveness.worker_id(), heart.worker_id, heart.beat(), os.getpid()))
    heart.stop()


def test_a_forked_process_is_a_worker_of_its_own(db: Database) -> None:
    """(Forked while no heart thread of ours runs, as Celery's prefork parent, which takes
    no attempts, forks its children: forking a process mid-transaction is never safe.)"""
    parent = liveness.worker_id()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_heart, args=(db.url.render_as_string(hide_password=False), db.schema, queue))
    child.start()
    child_id, child_heart, beat_ok, pid = queue.get(timeout=30)
    child.join(30)
    assert child_id == child_heart != parent and beat_ok
    with db.connect() as conn:
        assert conn.execute(select(workers.c.pid).where(workers.c.id == child_id)).scalar() == pid
    heart = liveness.heart_for(db)
    try:
        assert liveness.heart_for(db) is heart and heart.worker_id == parent
    finally:
        heart.stop()


def test_register_upserts_only_when_the_heart_is_not_fresh(db: Database) -> None:
    heart = liveness.Heart(db, f"test:{uuid.uuid4().hex[:6]}")  # not started: never fresh
    with db.begin() as conn:
        assert liveness.register(conn, heart) == heart.worker_id
    assert heartbeat_of(db, heart.worker_id) is not None
    assert heart.beat() and heart.fresh()
    with db.begin() as conn:
        conn.execute(delete(workers).where(workers.c.id == heart.worker_id))
        liveness.register(conn, heart)  # fresh: the thread keeps the row, no write here
    assert heartbeat_of(db, heart.worker_id) is None


def test_the_vigil_trusts_heartbeats_only_after_watching_long_enough() -> None:
    clock = [100.0]
    vigil = liveness.Vigil(lambda: clock[0], after_s=30)
    assert not vigil.trusts_heartbeats()
    vigil.reached()
    clock[0] += 29
    vigil.reached()
    assert not vigil.trusts_heartbeats()
    clock[0] += 1
    assert vigil.trusts_heartbeats()
    vigil.failed()
    vigil.reached()
    assert not vigil.trusts_heartbeats()


def test_long_dead_workers_are_forgotten(db: Database) -> None:
    with db.begin() as conn:
        liveness.beat_once(conn, "old")
        liveness.beat_once(conn, "young")
        now = db_now(conn)
        conn.execute(update(workers).where(workers.c.id == "old").values(heartbeat_at=now - 2 * liveness.FORGET_AFTER_S))
        assert liveness.forget_dead_workers(conn, now=now) == 1
        assert set(conn.execute(select(workers.c.id)).scalars()) == {"young"}


# --- the lost rule ----------------------------------------------------------------------------


def test_an_attempt_whose_worker_went_silent_is_lost_and_retried_at_once(db: Database) -> None:
    """Default timeout (3600 s) and max_retries 0: found lost LOST_AFTER_S after the last
    beat, not after the timeout, and retried at once without spending max_retries."""
    schedule_id, attempt_id = running_attempt(db)
    assert sweep(db, later_s=liveness.LOST_AFTER_S - 2) == []  # not yet: silent for less than that
    (retry,) = sweep(db, later_s=liveness.LOST_AFTER_S + 1)
    assert retry.countdown == 0
    lost, second = rows(db, schedule_id)
    assert (lost["status"], lost["lost"], lost["worker_id"]) == ("retrying", True, "w-1")
    assert "worker was lost" in lost["error"] and "heartbeat" in lost["error"]
    assert (second["id"], second["attempt"], second["status"], second["lost"]) == (retry.attempt_id, 2, "queued", False)
    assert second["scheduled_for"] == lost["scheduled_for"]


def test_a_slow_call_on_a_live_worker_is_never_lost(db: Database) -> None:
    schedule_id, _ = running_attempt(db)
    beat_at(db, "w-1", later_s=10 * liveness.LOST_AFTER_S)  # it kept beating all along
    assert sweep(db, later_s=10 * liveness.LOST_AFTER_S + 1) == []
    assert [r["status"] for r in rows(db, schedule_id)] == ["running"]


def test_an_attempt_whose_worker_row_is_gone_is_lost(db: Database) -> None:
    schedule_id, _ = running_attempt(db)
    with db.begin() as conn:
        conn.execute(delete(workers).where(workers.c.id == "w-1"))
    assert len(sweep(db, later_s=liveness.LOST_AFTER_S + 1)) == 1
    assert [r["status"] for r in rows(db, schedule_id)] == ["retrying", "queued"]


def test_heartbeats_count_only_when_the_sweeper_trusts_them(db: Database) -> None:
    schedule_id, _ = running_attempt(db)
    assert sweep(db, later_s=liveness.LOST_AFTER_S + 1, heartbeats=False) == []
    assert [r["status"] for r in rows(db, schedule_id)] == ["running"]


def test_attempts_without_a_worker_id_are_lost_only_past_their_deadline(db: Database) -> None:
    """Rows from before the upgrade: the timeout + margin backstop still ends them."""
    schedule_id, _ = running_attempt(db, worker=None)
    assert sweep(db, later_s=liveness.LOST_AFTER_S + 60) == []
    (retry,) = sweep(db, later_s=3600 + claims.LOST_ATTEMPT_MARGIN_S + 1)
    lost, _ = rows(db, schedule_id)
    assert lost["status"] == "retrying" and "timeout_seconds (3600)" in lost["error"]


def test_only_the_first_lost_attempt_of_a_slot_is_free(db: Database) -> None:
    """A call that kills every worker it runs on is not retried for ever: the second loss
    counts against max_retries like any failure."""
    schedule_id, _ = running_attempt(db, max_retries=0)
    (retry,) = sweep(db, later_s=liveness.LOST_AFTER_S + 1)
    assert isinstance(take(db, retry.attempt_id, "w-2"), attempts.Attempt)
    assert sweep(db, later_s=liveness.LOST_AFTER_S + 1) == []
    assert [(r["status"], r["lost"]) for r in rows(db, schedule_id)] == [("retrying", True), ("failed", True)]


@pytest.mark.parametrize(
    ("attempt", "max_retries", "lost_before", "lost", "expected"),
    [
        (1, 0, 0, False, False),  # max_retries 0: one attempt of the target's own
        (1, 0, 0, True, True),  # ... but a lost worker is on us, once
        (2, 0, 1, True, False),
        (2, 0, 1, False, False),
        (1, 1, 0, False, True),
        (2, 1, 0, True, True),
        (3, 1, 1, False, False),
        (3, 1, 2, False, False),  # only one loss is ever free
        (2, 2, 0, False, True),
    ],
)
def test_the_retry_budget_table(attempt: int, max_retries: int, lost_before: int, lost: bool, expected: bool) -> None:
    assert attempts.may_retry(attempt, max_retries, lost_before=lost_before, lost=lost) is expected


def test_a_lost_attempt_keeps_its_agno_run_and_the_retry_resumes_it(db: Database) -> None:
    schedule_id, attempt_id = running_attempt(db, endpoint="/agents/a1/runs")
    with db.begin() as conn:
        attempts.record_accepted(conn, attempt_id, run_id="agno-run-1", session_id="sess-1")
    (retry,) = sweep(db, later_s=liveness.LOST_AFTER_S + 1)
    lost, _ = rows(db, schedule_id)
    assert (lost["run_id"], lost["session_id"]) == ("agno-run-1", "sess-1")
    resumed = take(db, retry.attempt_id, "w-2")
    assert isinstance(resumed, attempts.Attempt)
    assert (resumed.resume_run_id, resumed.resume_session_id) == ("agno-run-1", "sess-1")


def test_a_retry_after_an_ordinary_failure_starts_a_new_run(db: Database) -> None:
    schedule_id, attempt_id = running_attempt(db, endpoint="/agents/a1/runs", max_retries=1)
    outcome = FireOutcome("timeout", retryable=True, error="slow", run_id="agno-run-1", session_id="sess-1")
    with db.begin() as conn:
        retry = attempts.finish_attempt(conn, attempt_id, outcome, now=db_now(conn) + 3600)
    assert retry is not None
    started = take(db, retry.attempt_id, "w-1")
    assert isinstance(started, attempts.Attempt) and started.resume_run_id is None


def test_fire_resumes_a_run_without_posting_again() -> None:
    """The HTTP half: the first attempt's 202 is reported through on_accepted; a request
    naming that run polls it and never POSTs a second run."""
    with TargetServer() as target, make_client() as client:
        target.script("/agents/a1/runs", AgnoRun(polls=["RUNNING"] * 3 + ["COMPLETED"], content="resumed"))
        accepted: list[tuple[str, str | None]] = []
        request = FireRequest(
            schedule_id="s", attempt_id="a1", attempt=1, method="POST", endpoint="/agents/a1/runs", payload=None,
            timeout_seconds=1, user_id=None, idempotency_key="kern:s:slot:1",
        )  # fmt: skip
        fast = {"poll_initial_s": 0.4, "poll_max_s": 0.4}
        first = fire(client, request, base_url=target.url, service_token=None, on_accepted=lambda *ids: accepted.append(ids), **fast)
        assert first.status == "timeout" and len(accepted) == 1  # cut off while the run is RUNNING
        run_id, session_id = accepted[0]
        again = FireRequest(**{**request.__dict__, "attempt": 2, "timeout_seconds": 30,
                               "resume_run_id": run_id, "resume_session_id": session_id})  # fmt: skip
        second = fire(client, again, base_url=target.url, service_token=None, on_accepted=lambda *ids: accepted.append(ids), **fast)
        assert (second.status, second.run_id, second.output["content"]) == ("success", run_id, "resumed")
        assert accepted == [(run_id, session_id)] * 2
        posts = [r for r in target.requests() if r.method == "POST"]
        assert len(posts) == 1
        polls = target.requests(f"/agents/a1/runs/{run_id}")
        assert polls and {r.headers["idempotency-key"] for r in polls} == {"kern:s:slot:1"}


def test_the_lost_sweep_reads_only_open_attempts_on_postgres(db: Database) -> None:
    """O(running attempts): with seq scans priced out, the plan reaches agno_schedule_runs
    through the partial index of open attempts (and workers by their primary key)."""
    if db.dialect != "postgresql":
        pytest.skip("EXPLAIN output is Postgres's")
    running_attempt(db)
    with db.begin() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        conn.execute(text(f'SET LOCAL search_path TO "{db.schema}"'))  # the literal SQL names no schema
        statement = sweeps.lost_attempts_query(now=db_now(conn), limit=100, margin_s=30, heartbeats=True)
        compiled = statement.compile(conn, compile_kwargs={"literal_binds": True})
        plan = "\n".join(conn.execute(text(f"EXPLAIN {compiled}")).scalars())
    assert "ix_kern_schedule_runs_open" in plan, plan
    assert "Seq Scan on agno_schedule_runs" not in plan, plan
