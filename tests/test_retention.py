"""Retention (kern_tasks/scheduler/retention.py): old finished attempts go, with the agno
runs, sessions, traces and workflow progress they left; nothing open or still used goes.

1. The rule, on Postgres and SQLite (`ScheduleManager.prune_runs`, what `kern-tasks runs
   prune` calls): one row of every case the rule tells apart.
2. Beat pruning while it fires (Postgres, real `celery beat` and worker, KERN_RUN_RETENTION_DAYS
   set): 100k old attempts seeded with INSERT ... SELECT generate_series (20k of them with
   a session, an agno run, a trace and two spans), open attempts just as old, recent ones;
   an every-second schedule fires throughout. Old rows go, with what they created; open
   and recent rows stay; every slot of the live schedule fires. The numbers (rows pruned
   per second, the longest pruning slice of a tick, the longest gap between two fires of
   the live schedule) are printed (`-s`); bench/results/retention.txt keeps a run's.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import func, insert, select, text

from kern_tasks.db import Database, db_now, schedule_runs
from kern_tasks.db.run_tables import runs, sessions, spans, traces
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.scheduler.retention import count_prunable
from kern_tasks.workflow.progress import runs as workflow_runs, steps as workflow_steps
from tests.fire_stack import FireStack, fire_stack
from tests.processes import wait_for

REDIS_DB = 0
DAY = 86400


# --- 1. the rule ---------------------------------------------------------------------------


def _attempt(conn: Any, schedule_id: str, id: str, *, status: str, created: int, completed: int | None, slot: int,
             attempt: int = 1, run_id: str | None = None, session_id: str | None = None) -> None:  # fmt: skip
    conn.execute(insert(schedule_runs).values(
        id=id, schedule_id=schedule_id, attempt=attempt, status=status, created_at=created, completed_at=completed,
        scheduled_for=slot, run_id=run_id, session_id=session_id, not_before=created + 100 * DAY,
    ))  # fmt: skip


def _run(conn: Any, run_id: str, session_id: str, *, at: int, status: str = "COMPLETED", new_session: bool = True,
         session_updated: int | None = None) -> None:  # fmt: skip
    if new_session:
        conn.execute(insert(sessions).values(session_id=session_id, session_type="agent", created_at=at,
                                             updated_at=session_updated or at))  # fmt: skip
    conn.execute(insert(runs).values(run_id=run_id, session_id=session_id, run_type="agent", status=status,
                                     run_data={}, created_at=at))  # fmt: skip
    iso = "2026-01-01T00:00:00+00:00"
    conn.execute(insert(traces).values(trace_id=f"t-{run_id}", name="run", status="OK", start_time=iso,
                                       end_time=iso, duration_ms=1, run_id=run_id, session_id=session_id,
                                       created_at=iso))  # fmt: skip
    for n in range(2):
        conn.execute(insert(spans).values(span_id=f"s{n}-{run_id}", trace_id=f"t-{run_id}", name="step",
                                          span_kind="INTERNAL", status_code="OK", start_time=iso, end_time=iso,
                                          duration_ms=1, created_at=iso))  # fmt: skip


def _ids(db: Database, column: Any) -> set[str]:
    with db.connect() as conn:
        return set(conn.execute(select(column)).scalars())


def test_prune_keeps_what_is_open_or_used_and_takes_what_old_runs_left(db: Database) -> None:
    manager = ScheduleManager(db)
    sid = manager.create(name="history", cron="0 0 1 1 *", endpoint="/hook").id
    with db.begin() as conn:
        now = db_now(conn)
        old, recent = now - 40 * DAY, now - DAY
        # Gone: an old success with its session, run, trace and spans.
        _run(conn, "r-old", "s-old", at=old)
        _attempt(conn, sid, "a-old", status="success", created=old, completed=old + 5, slot=1, run_id="r-old",
                 session_id="s-old")  # fmt: skip
        # Gone: an old failure with no run at all.
        _attempt(conn, sid, "a-failed", status="failed", created=old, completed=old, slot=2)
        # Attempt 1 goes; its run stays: attempt 2 of the same slot (queued) resumes it.
        _run(conn, "r-resumed", "s-resumed", at=old)
        _attempt(conn, sid, "a-lost", status="retrying", created=old, completed=old + 30, slot=3, run_id="r-resumed",
                 session_id="s-resumed")  # fmt: skip
        _attempt(conn, sid, "a-retry", status="queued", created=old + 31, completed=None, slot=3, attempt=2,
                 run_id="r-resumed", session_id="s-resumed")  # fmt: skip
        # Stay: open attempts as old as the others (no completed_at).
        _attempt(conn, sid, "a-queued", status="queued", created=old, completed=None, slot=4)
        _attempt(conn, sid, "a-running", status="running", created=old, completed=None, slot=5)
        # Stays: a recent success and its run.
        _run(conn, "r-recent", "s-recent", at=recent)
        _attempt(conn, sid, "a-recent", status="success", created=recent, completed=recent, slot=6, run_id="r-recent",
                 session_id="s-recent")  # fmt: skip
        # Attempt goes, its agno run stays: the run is still RUNNING (a timed-out attempt).
        _run(conn, "r-going", "s-going", at=old, status="RUNNING")
        _attempt(conn, sid, "a-timeout", status="timeout", created=old, completed=old, slot=7, run_id="r-going",
                 session_id="s-going")  # fmt: skip
        # The old run goes; its session stays: a recent run of someone's conversation is in it.
        _run(conn, "r-shared-old", "s-shared", at=old, session_updated=recent)
        _run(conn, "r-shared-new", "s-shared", at=recent, new_session=False)
        _attempt(conn, sid, "a-shared", status="success", created=old, completed=old, slot=8, run_id="r-shared-old",
                 session_id="s-shared")  # fmt: skip
        # An old workflow run: its progress (run and step rows) goes with the agno run.
        _run(conn, "r-flow", "s-flow", at=old)
        conn.execute(insert(workflow_runs).values(run_id="r-flow", workflow_id="w", session_id="s-flow",
                                                  status="COMPLETED", request={}, created_at=old, updated_at=old))
        conn.execute(insert(workflow_steps).values(id="step-1", run_id="r-flow", path="0", attempt=1,
                                                   status="succeeded", final=True))  # fmt: skip
        _attempt(conn, sid, "a-flow", status="success", created=old, completed=old, slot=9, run_id="r-flow",
                 session_id="s-flow")  # fmt: skip

    with db.connect() as conn:
        assert count_prunable(conn, before=now - 30 * DAY) == 6
    assert manager.prune_runs(30 * DAY, batch=2) == 6
    assert manager.prune_runs(30 * DAY) == 0  # nothing left to take

    assert _ids(db, schedule_runs.c.id) == {"a-retry", "a-queued", "a-running", "a-recent"}
    assert _ids(db, runs.c.run_id) == {"r-resumed", "r-recent", "r-going", "r-shared-new"}
    assert _ids(db, sessions.c.session_id) == {"s-resumed", "s-recent", "s-going", "s-shared"}
    assert _ids(db, traces.c.trace_id) == {"t-r-resumed", "t-r-recent", "t-r-going", "t-r-shared-new"}
    assert _ids(db, spans.c.trace_id) == {"t-r-resumed", "t-r-recent", "t-r-going", "t-r-shared-new"}
    assert _ids(db, workflow_runs.c.run_id) == set() and _ids(db, workflow_steps.c.id) == set()


# --- 2. beat pruning 100k rows while it fires --------------------------------------------------

N_OLD = 100_000
N_WITH_RUNS = 20_000  # of the old attempts, those that started an agno run (session, run, trace, 2 spans)
N_OPEN = 200  # old queued and old running attempts each: they must survive
N_RECENT = 1_000
RETENTION_DAYS = 30
BUDGET_S = 0.25  # beat's default kern_retention_budget


def seed(db: Database, schema: str, schedule_id: str, now: int) -> None:
    """The history, in a handful of INSERT ... SELECT generate_series statements."""
    old = now - 40 * DAY
    iso = "'2026-01-01T00:00:00+00:00'"
    statements = [
        f"""INSERT INTO agno_sessions (session_id, session_type, created_at, updated_at)
            SELECT 'seed-s-' || i, 'agent', {old}, {old} FROM generate_series(1, {N_WITH_RUNS}) i""",
        f"""INSERT INTO agno_runs (run_id, session_id, run_type, status, run_data, created_at)
            SELECT 'seed-r-' || i, 'seed-s-' || i, 'agent', 'COMPLETED', '{{}}', {old}
            FROM generate_series(1, {N_WITH_RUNS}) i""",
        f"""INSERT INTO agno_traces (trace_id, name, status, start_time, end_time, duration_ms, run_id, session_id,
                                     created_at)
            SELECT 'seed-t-' || i, 'run', 'OK', {iso}, {iso}, 1, 'seed-r-' || i, 'seed-s-' || i, {iso}
            FROM generate_series(1, {N_WITH_RUNS}) i""",
        f"""INSERT INTO agno_spans (span_id, trace_id, name, span_kind, status_code, start_time, end_time,
                                    duration_ms, created_at)
            SELECT 'seed-sp-' || n || '-' || i, 'seed-t-' || i, 'step', 'INTERNAL', 'OK', {iso}, {iso}, 1, {iso}
            FROM generate_series(1, {N_WITH_RUNS}) i, generate_series(1, 2) n""",
        f"""INSERT INTO agno_schedule_runs (id, schedule_id, attempt, status, created_at, triggered_at, completed_at,
                                            scheduled_for, run_id, session_id)
            SELECT 'seed-a-' || i, '{schedule_id}', 1, CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'success' END,
                   {old} + i / 10, {old} + i / 10, {old} + i / 10 + 1, {old} + i,
                   CASE WHEN i <= {N_WITH_RUNS} THEN 'seed-r-' || i END,
                   CASE WHEN i <= {N_WITH_RUNS} THEN 'seed-s-' || i END
            FROM generate_series(1, {N_OLD}) i""",
        # Open and as old: queued ones wait for a not_before far ahead (so nothing fires
        # them), running ones were taken just now by no worker (the schedule's hour-long
        # timeout keeps the sweep from ending them).
        f"""INSERT INTO agno_schedule_runs (id, schedule_id, attempt, status, created_at, scheduled_for, not_before)
            SELECT 'open-q-' || i, '{schedule_id}', 1, 'queued', {old}, {old} - i, {now + 100 * DAY}
            FROM generate_series(1, {N_OPEN}) i""",
        f"""INSERT INTO agno_schedule_runs (id, schedule_id, attempt, status, created_at, triggered_at, scheduled_for)
            SELECT 'open-r-' || i, '{schedule_id}', 1, 'running', {old}, {now}, {old} - {N_OPEN} - i
            FROM generate_series(1, {N_OPEN}) i""",
        f"""INSERT INTO agno_schedule_runs (id, schedule_id, attempt, status, created_at, triggered_at, completed_at,
                                            scheduled_for)
            SELECT 'recent-' || i, '{schedule_id}', 1, 'success', {now - DAY}, {now - DAY}, {now - DAY}, {now - DAY} + i
            FROM generate_series(1, {N_RECENT}) i""",
    ]
    with db.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path TO "{schema}"'))  # raw SQL: no schema mapping
        for statement in statements:
            conn.execute(text(statement))
    with db.begin() as conn:
        conn.execute(text("ANALYZE"))


def count(db: Database, table: Any, where: Any = None) -> int:
    query = select(func.count()).select_from(table)
    with db.connect() as conn:
        return int(conn.execute(query if where is None else query.where(where)).scalar_one())


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[FireStack]:
    with fire_stack(tmp_path, REDIS_DB) as made:
        yield made


def test_beat_prunes_100k_old_runs_while_it_fires(stack: FireStack) -> None:
    db, procs = stack.db, stack.procs
    manager = ScheduleManager(db)
    history = manager.create(name="history", cron="0 0 1 1 *", endpoint="/history", timeout_seconds=3600).id
    with db.connect() as conn:
        now = db_now(conn)
    started = time.monotonic()
    seed(db, stack.schema, history, now)
    seed_s = time.monotonic() - started
    assert count(db, schedule_runs) == N_OLD + 2 * N_OPEN + N_RECENT

    procs.env["KERN_RUN_RETENTION_DAYS"] = str(RETENTION_DAYS)
    procs.worker(concurrency=4)
    procs.wait_for_log("worker", " ready.")
    live = manager.create(name="live", cron="* * * * * *", endpoint="/live", overlap_policy="allow").id
    beat = procs.beat(max_interval=1)
    procs.wait_for_log("beat", "retention pruned", timeout=60)
    prune_from = time.monotonic()
    wait_for(lambda: count(db, schedule_runs, schedule_runs.c.id.like("seed-a-%")) == 0, 180, 0.5,
             "beat to prune every old attempt")  # fmt: skip
    prune_s = time.monotonic() - prune_from
    live_rows = count(db, schedule_runs, schedule_runs.c.schedule_id == live)
    wait_for(lambda: count(db, schedule_runs, schedule_runs.c.schedule_id == live) >= live_rows + 2, 30, 0.2,
             "two more slots of the live schedule after the pruning ended")  # fmt: skip
    assert beat.poll() is None, "beat died"

    # What the old attempts created went with them; open and recent attempts stayed.
    assert count(db, sessions) == count(db, runs) == count(db, traces) == count(db, spans) == 0
    assert count(db, schedule_runs, schedule_runs.c.id.like("open-q-%")) == N_OPEN
    assert count(db, schedule_runs, schedule_runs.c.id.like("open-r-%")) == N_OPEN
    assert count(db, schedule_runs, schedule_runs.c.id.like("recent-%")) == N_RECENT
    with db.connect() as conn:
        open_statuses = set(conn.execute(
            select(schedule_runs.c.status).where(schedule_runs.c.schedule_id == history,
                                                 schedule_runs.c.id.like("open-%"))
        ).scalars())  # fmt: skip
    assert open_statuses == {"queued", "running"}, "an open attempt was touched"

    # The live schedule fired all along: one request per slot, no slot missing.
    with db.connect() as conn:
        fired = sorted(conn.execute(
            select(schedule_runs.c.scheduled_for).where(schedule_runs.c.schedule_id == live)
        ).scalars())  # fmt: skip
    assert fired and fired == list(range(fired[0], fired[-1] + 1)), f"slots missing: {fired}"
    arrivals = sorted(r.at for r in stack.target.requests("/live"))
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    slices = [float(s) for s in re.findall(r"retention pruned \d+ run\(s\) in ([\d.]+)s", procs.log_text("beat"))]
    pruned = sum(int(n) for n in re.findall(r"retention pruned (\d+) run", procs.log_text("beat")))
    assert pruned == N_OLD, f"beat logged {pruned} pruned"
    # Generous bound only (not a timing assertion): one slice is BUDGET_S plus one batch.
    assert max(slices) < 5, f"a pruning slice took {max(slices):.2f}s"

    report = (
        f"retention: {N_OLD} old attempts ({N_WITH_RUNS} with session, run, trace, 2 spans) seeded in {seed_s:.1f}s; "
        f"beat pruned them in {prune_s:.1f}s ({N_OLD / prune_s:.0f} attempts/s overall, {N_OLD / sum(slices):.0f}/s "
        f"while pruning; {len(slices)} slices of a {BUDGET_S}s budget, longest {max(slices):.3f}s); "
        f"live every-second schedule: {len(arrivals)} fires, "
        f"longest gap between two {max(gaps):.3f}s; {2 * N_OPEN} open and {N_RECENT} recent attempts kept"
    )
    print("\n" + report)
