"""Retention: attempts that ended long ago go, and with them what their runs left behind.

One rule, used by `kern-tasks runs prune --older-than` (ScheduleManager.prune_runs) and by
beat while it fires (`Pruner`, when KERN_RUN_RETENTION_DAYS is set):

- an attempt (agno_schedule_runs) goes when it ended before the cut-off: never a queued or
  running one, whatever its age (`_prunable`);
- with it go the agno run it started (agno_runs), that run's trace (agno_traces and its
  agno_spans) and its workflow progress (kern_workflow_runs; steps and media follow by
  ON DELETE CASCADE), unless another attempt of the same slot still points at the run (a
  retry resuming it after a lost worker) or the run itself is still going (PENDING or
  RUNNING; a workflow run RUNNING on the workers);
- the attempt's session (agno_sessions) goes once no run is left in it and nothing touched
  it since the cut-off (a session a schedule's payload shares with a live conversation
  stays), with the traces kept under it;
- one batch is one short transaction of a few statements, each bounded by the batch
  (`PRUNE_BATCH` attempts, read through indexes: the attempt's created_at, the slot's
  unique index, run_id / session_id / trace_id), rows locked with SKIP LOCKED, so beat's
  claims and sweeps, a worker recording an outcome and a second pruner never wait on it.

A pruned slot no longer counts as fired (a later backfill of its range would run it again).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from sqlalchemy import Connection, delete, func, select, tuple_

from kern_tasks.db import Database, db_now
from kern_tasks.db.run_tables import runs, sessions, spans, traces
from kern_tasks.db.tables import schedule_runs
from kern_tasks.workflow.progress import runs as workflow_runs

_r = schedule_runs
PRUNE_BATCH = 500
OPEN = ("queued", "running")
ACTIVE_RUNS = ("PENDING", "RUNNING")  # agno's RunStatus of a run still going (runs/store.py ACTIVE)
DAY_S = 86400


def _prunable(before: int) -> Any:
    """Attempts that ended before `before`: never a queued or running one. (created_at <=
    completed_at, so `created_at < before` narrows nothing; it lets the database read the
    created_at index instead of every row.)"""
    return (
        _r.c.status.not_in(OPEN) & (_r.c.created_at < before)
        & (func.coalesce(_r.c.completed_at, _r.c.created_at) < before)
    )


# Reads only (for a progress bar).
def count_prunable(conn: Connection, *, before: int) -> int:
    return int(conn.execute(select(func.count()).select_from(_r).where(_prunable(before))).scalar_one())


# Invariant: an open attempt (queued, running) is never removed, nor a run still going or
# still pointed at; one batch is one short transaction.
def prune_finished(conn: Connection, *, before: int, limit: int) -> int:
    """Delete up to `limit` attempts that ended before `before`, and what their runs left
    behind (module docstring); returns how many attempts went."""
    batch = select(_r.c.id).where(_prunable(before)).limit(limit)
    if conn.dialect.name == "postgresql":
        batch = batch.with_for_update(skip_locked=True)
    gone = conn.execute(
        delete(_r).where(_r.c.id.in_(batch.scalar_subquery()))
        .returning(_r.c.schedule_id, _r.c.scheduled_for, _r.c.manual, _r.c.run_id, _r.c.session_id)
    ).all()
    if gone:
        _prune_left_behind(conn, gone, before=before)
    return len(gone)


def _prune_left_behind(conn: Connection, gone: Sequence[Any], *, before: int) -> None:
    run_ids = {row.run_id for row in gone if row.run_id}
    if run_ids:
        run_ids -= _runs_kept(conn, gone, run_ids)
    if run_ids:
        _delete_traces(conn, traces.c.run_id.in_(run_ids))
        conn.execute(delete(workflow_runs).where(workflow_runs.c.run_id.in_(run_ids)))
        conn.execute(delete(runs).where(runs.c.run_id.in_(run_ids)))
    session_ids = {row.session_id for row in gone if row.session_id}
    if session_ids:
        idle = (
            select(sessions.c.session_id)
            .where(
                sessions.c.session_id.in_(session_ids),
                func.coalesce(sessions.c.updated_at, sessions.c.created_at) < before,
                ~select(runs.c.run_id).where(runs.c.session_id == sessions.c.session_id).exists(),
            )
        )
        if conn.dialect.name == "postgresql":
            idle = idle.with_for_update(skip_locked=True)
        empty = set(conn.execute(idle).scalars())
        if empty:
            _delete_traces(conn, traces.c.session_id.in_(empty))
            conn.execute(delete(sessions).where(sessions.c.session_id.in_(empty)))


def _runs_kept(conn: Connection, gone: Sequence[Any], run_ids: set[str]) -> set[str]:
    """Of `run_ids`, those another attempt of the same slot still names (read through the
    slot's unique index) and those still going."""
    slots = {(row.schedule_id, row.scheduled_for, row.manual) for row in gone if row.scheduled_for is not None}
    kept: set[str] = set()
    if slots:
        kept |= set(conn.execute(
            select(_r.c.run_id).where(
                tuple_(_r.c.schedule_id, _r.c.scheduled_for, _r.c.manual).in_(slots), _r.c.run_id.in_(run_ids)
            )
        ).scalars())
    kept |= set(conn.execute(
        select(runs.c.run_id).where(runs.c.run_id.in_(run_ids), runs.c.status.in_(ACTIVE_RUNS))
    ).scalars())
    kept |= set(conn.execute(
        select(workflow_runs.c.run_id).where(workflow_runs.c.run_id.in_(run_ids), workflow_runs.c.status == "RUNNING")
    ).scalars())
    return kept


def _delete_traces(conn: Connection, which: Any) -> None:
    """Traces matching `which`, their spans first (agno_spans' key has no cascade)."""
    trace_ids = select(traces.c.trace_id).where(which)
    conn.execute(delete(spans).where(spans.c.trace_id.in_(trace_ids.scalar_subquery())))
    conn.execute(delete(traces).where(which))


class Pruner:
    """Beat's retention (KERN_RUN_RETENTION_DAYS): a few batches per call, within
    `budget_s`, so a tick never stalls on a long history; once a batch comes back short
    the history is caught up and the next look is `idle_s` later. Every replica may run
    one: SKIP LOCKED keeps their batches apart."""

    def __init__(self, retention_days: float | None, *, batch: int = PRUNE_BATCH, budget_s: float = 0.25,
                 idle_s: float = 60.0) -> None:  # fmt: skip
        self.retention_s = None if retention_days is None else int(retention_days * DAY_S)
        self.batch = batch
        self.budget_s = budget_s
        self.idle_s = idle_s
        self._next = 0.0

    def run(self, db: Database) -> tuple[int, float]:
        """Prune what is due now: (attempts deleted, seconds spent)."""
        started = time.monotonic()
        if self.retention_s is None or started < self._next:
            return 0, 0.0
        deleted = 0
        while True:
            with db.begin() as conn:
                gone = prune_finished(conn, before=db_now(conn) - self.retention_s, limit=self.batch)
            deleted += gone
            if gone < self.batch:
                self._next = time.monotonic() + self.idle_s
                break
            if time.monotonic() - started >= self.budget_s:
                break
        return deleted, time.monotonic() - started

