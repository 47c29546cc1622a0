"""What beat's sweep (about once a second) does to attempt rows:

- sweep_unpublished: every queued attempt whose time has come is in the broker at least
  once (those never published, and, when beat finds the broker's backlog short of
  maybe_lost_by_queue, those whose message may be lost); publishing twice is harmless, as an
  attempt leaves "queued" exactly once (attempts.start_attempt); backfilled slots wait
  their turn under overlap "forbid" (_backfill_may_start);
- expire_lost_attempts: an attempt is "running" only while a worker may still report on
  it; a lost one ends "failed" (retryable) through attempts.retry_or_end.

Retention (pruning old attempts and what their runs left) is scheduler/retention.py's.
"""

from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import Connection, func, or_, select, update

from kern_tasks.db.tables import schedule_runs, schedules, workers
from kern_tasks.dispatch import Dispatch
from kern_tasks.firing.liveness import LOST_AFTER_S
from kern_tasks.scheduler.attempts import retry_or_end
from kern_tasks.scheduler.claims import LOST_ATTEMPT_MARGIN_S, label_of, route_of

_s, _r = schedules, schedule_runs


# --- sweeps (beat, about once a second) ----------------------------------------------


# Invariant: every queued attempt whose time has come is in the broker at least once.
# Publishing twice is harmless: an attempt leaves "queued" exactly once (start_attempt).
def _unpublished(now: int) -> Any:
    """Queued attempts never handed to the broker whose time has come (a backfilled slot
    also waits its turn: _backfill_may_start)."""
    return (
        _r.c.enqueued_at.is_(None) & or_(_r.c.not_before.is_(None), _r.c.not_before <= now)
        & or_(_r.c.backfill.is_(False), _backfill_may_start())
    )


_ahead = schedule_runs.alias("ahead")


def _backfill_may_start() -> Any:
    """Backfilled slots follow the schedule's overlap policy: under "allow" all go at once;
    under "forbid" a slot is published once nothing of its schedule is in flight (an
    attempt running or handed to the broker) and no older backfilled slot is still open,
    so they run one after another, oldest first. Evaluated for backfill rows only."""
    allowed = select(_s.c.overlap_policy).where(_s.c.id == _r.c.schedule_id).scalar_subquery() == "allow"
    in_flight = (
        select(_ahead.c.id)
        .where(
            _ahead.c.schedule_id == _r.c.schedule_id, _ahead.c.id != _r.c.id,
            _ahead.c.status.in_(("queued", "running")),
            or_(_ahead.c.status == "running", _ahead.c.enqueued_at.is_not(None),
                _ahead.c.backfill.is_(True) & (_ahead.c.scheduled_for < _r.c.scheduled_for)),
        )
        .exists()
    )
    return or_(allowed, ~in_flight)


def _maybe_lost(now: int, republish_after_s: int) -> Any:
    """Queued attempts handed over long enough ago that their message may be gone."""
    lost_before = now - republish_after_s
    return (_r.c.enqueued_at <= lost_before) & or_(_r.c.not_before.is_(None), _r.c.not_before <= lost_before)


# Reads only (beat compares it with the broker's backlog before re-publishing).
def maybe_lost_by_queue(conn: Connection, *, now: int, republish_after_s: int) -> dict[str | None, int]:
    """How many queued attempts have waited in the broker longer than republish_after_s,
    by their schedule's queue (None: the default queue), in one read."""
    rows = conn.execute(
        select(_s.c.queue, func.count()).select_from(_r).join(_s, _s.c.id == _r.c.schedule_id)
        .where(_r.c.status == "queued", _maybe_lost(now, republish_after_s)).group_by(_s.c.queue)
    ).all()
    return {queue: int(count) for queue, count in rows}


def sweep_unpublished(
    conn: Connection, *, now: int, republish_after_s: int, limit: int, include_maybe_lost: bool = True
) -> list[Dispatch]:
    """Queued attempts never handed to the broker (a crash between commit and publish, a
    manual trigger, a long retry wait), and, with `include_maybe_lost`, those handed over
    long ago whose message may be lost (a broker restart): mark them enqueued now and
    return them for publishing."""
    wanted = _unpublished(now)
    if include_maybe_lost:
        wanted = or_(wanted, _maybe_lost(now, republish_after_s))
    orphans = (
        select(_r.c.id)
        .where(_r.c.status == "queued", wanted)
        # No ORDER BY: it would walk the whole run history by created_at; the partial
        # index on open attempts finds these directly.
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    marked = conn.execute(
        update(_r).where(_r.c.id.in_(orphans.scalar_subquery())).values(enqueued_at=now)
        .returning(_r.c.id, _r.c.schedule_id, _r.c.scheduled_for, _r.c.attempt, _r.c.manual)
    ).mappings().all()
    return _dispatches(conn, marked)


def _dispatches(conn: Connection, attempts: Sequence[Any]) -> list[Dispatch]:
    """The messages of attempt rows (id, schedule_id, scheduled_for, attempt, manual), each
    on its schedule's route and labelled with its name (one read of their schedules): a
    re-publish goes to the queue the first message went to, named as it was."""
    ids = {row["schedule_id"] for row in attempts}
    found = {
        row.id: row._mapping
        for row in conn.execute(select(_s.c.id, _s.c.name, _s.c.queue, _s.c.priority).where(_s.c.id.in_(ids)))
    } if ids else {}
    # Every schedule is found: the rows were just updated under their lock, and a
    # schedule's delete cascades through them.
    return [Dispatch(row["id"], route=route_of(found[row["schedule_id"]]),
                     label=label_of(found[row["schedule_id"]]["name"], row)) for row in attempts]


def lost_attempts_query(*, now: float, limit: int, margin_s: int, heartbeats: bool) -> Any:
    """Running attempts taken for lost, read through the partial index of open attempts
    (O(running attempts)) and kern_workers by its key:
      1. taken by a worker (worker_id) that has not beaten for LOST_AFTER_S, or whose row
         is gone, and running for LOST_AFTER_S: the worker died mid-call, found in seconds
         whatever the timeout. Only when the sweeper `heartbeats` (liveness.Vigil): after
         an outage that silenced everyone the workers get time to beat again;
      2. the backstop, for every attempt (those from before worker_id too): past its
         deadline, timeout_seconds + margin_s, as no live worker's call can be."""
    now_s = int(now)
    rule = _r.c.triggered_at <= now_s - _s.c.timeout_seconds - margin_s
    if heartbeats:
        silent = or_(workers.c.heartbeat_at.is_(None), workers.c.heartbeat_at <= now_s - LOST_AFTER_S)
        rule = or_(rule, _r.c.worker_id.is_not(None) & (_r.c.triggered_at <= now_s - LOST_AFTER_S) & silent)
    return (
        select(_r.c.id, _r.c.worker_id, _s.c.timeout_seconds, workers.c.heartbeat_at)
        .join(_s, _s.c.id == _r.c.schedule_id)
        .outerjoin(workers, workers.c.id == _r.c.worker_id)
        .where(_r.c.status == "running", rule)
        .limit(limit)
        .with_for_update(of=_r, skip_locked=True)
    )


# Invariant: an attempt is "running" only while a worker may still report on it; a lost
# one ends "failed" (retryable) through retry_or_end, keeping the agno run it started.
def expire_lost_attempts(
    conn: Connection, *, now: float, limit: int, margin_s: int = LOST_ATTEMPT_MARGIN_S, heartbeats: bool = True
) -> list[Dispatch]:
    """End lost attempts (lost_attempts_query) failed, retryable; return the retries to publish."""
    lost = conn.execute(lost_attempts_query(now=now, limit=limit, margin_s=margin_s, heartbeats=heartbeats)).all()
    dispatches = []
    for attempt_id, worker_id, timeout_seconds, heartbeat_at in lost:
        if worker_id is not None and heartbeats and (heartbeat_at is None or heartbeat_at <= int(now) - LOST_AFTER_S):
            silence = "its row is gone" if heartbeat_at is None else f"silent for {int(now) - heartbeat_at}s"
            error = f"no heartbeat from worker {worker_id} ({silence}): the worker was lost"
        else:
            error = f"no result within timeout_seconds ({timeout_seconds}) + {margin_s}s: the worker was lost"
        dispatch = retry_or_end(
            conn, attempt_id, status="failed", error=error, retry_after=None, recorded={}, now=now, rng=None,
            lost=True,
        )
        if dispatch is not None:
            dispatches.append(dispatch)
    return dispatches
