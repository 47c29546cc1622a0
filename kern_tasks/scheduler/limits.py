"""The sweeps that end what the kinds' limits end (beat runs them about once a second):

- skip_expired_attempts: a slot's first attempt still queued expires_after_seconds after
  its time (no worker took it: they are stopped, or behind) ends "skipped";
- finish_exhausted: a schedule with no slot left (past end_at, max_runs fired, a one-off
  planned) is disabled with the reason (kinds.finished_reason) once its last attempt has
  ended, and stays, so its history can be read.

Both read only the rows they end, through partial indexes (open attempts; schedules
with no slot left: db/tables.py FINISHING), so a sweep costs O(rows it ends), never
O(all schedules). The when is kinds.py's; the statements on attempts, attempts.py's.
"""

from __future__ import annotations

from sqlalchemy import Connection, and_, exists, func, select, text, update

from kern_tasks.db.tables import FINISHING, schedule_runs, schedules
from kern_tasks.scheduler import attempts, claims
from kern_tasks.scheduler.kinds import finished_reason

_s, _r = schedules, schedule_runs


# Invariant: a first attempt is skipped only while still queued (locked here, so a worker
# taking it at the same moment either wins or finds it skipped: start_attempt is conditional).
def skip_expired_attempts(conn: Connection, *, now: int, limit: int) -> int:
    """End first attempts queued past their slot's time + expires_after_seconds as
    "skipped"; returns how many."""
    slot_time = func.coalesce(_r.c.not_before, _r.c.scheduled_for)
    expired = conn.execute(
        select(_r.c.id, _r.c.schedule_id, _r.c.scheduled_for, _r.c.lease_token, _s.c.expires_after_seconds)
        .join(_s, _s.c.id == _r.c.schedule_id)
        .where(
            # A backfilled slot is late on purpose (ScheduleManager.backfill): it never expires.
            _r.c.status == "queued", _r.c.attempt == 1, _r.c.manual.is_(False), _r.c.backfill.is_(False),
            _s.c.expires_after_seconds.is_not(None), slot_time + _s.c.expires_after_seconds < now,
        )
        .limit(limit)
        .with_for_update(of=_r, skip_locked=True)
    ).mappings().all()
    for row in expired:
        attempts.skip_attempt(conn, row, now=now, error=claims.expired_reason(row["expires_after_seconds"]))
    return len(expired)


# Invariant: a schedule is disabled here only when no slot is left (next_run_at NULL, set by
# the claim that planned its last slot) and none of its slots has an open attempt, so a
# one-off reads "completed" only after its slot's last attempt; manual runs are not waited for.
def finish_exhausted(conn: Connection, *, now: int, limit: int) -> list[tuple[str, str]]:
    """Disable the schedules that have nothing left to fire; returns (id, reason) of each."""
    open_slot = exists().where(
        _r.c.schedule_id == _s.c.id, _r.c.status.in_(("queued", "running")), _r.c.manual.is_(False)
    )
    done = conn.execute(
        select(_s.c.id, _s.c.run_at, _s.c.end_at, _s.c.max_runs)
        .where(and_(text(FINISHING)), _s.c.locked_by.is_(None), ~open_slot)
        .limit(limit)
        .with_for_update(of=_s, skip_locked=True)
    ).mappings().all()
    finished = []
    for row in done:
        reason = finished_reason(row, claims.count_fired(conn, row["id"]) if row["max_runs"] else 0)
        conn.execute(
            update(_s).where(_s.c.id == row["id"]).values(enabled=False, disabled_reason=reason, updated_at=now)
        )
        attempts.log.info("schedule %s disabled: %s", row["id"], reason)
        finished.append((row["id"], reason))
    return finished
