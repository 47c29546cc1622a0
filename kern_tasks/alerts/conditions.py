"""What is wrong, read from SQL: the conditions the alerts watch and the gauges report.
Reads only, each one indexed query (plans read with EXPLAIN ANALYZE on Postgres at 100k
schedules and 500k attempts, each under 1 ms):

- overdue schedules: enabled, claimable (no lease: a run in flight under overlap "forbid"
  is not beat's failure), and their next slot older than the misfire grace. Beat claims a
  due row within a tick, so a row found here means no beat is claiming (all dead, stuck,
  or the row locked by a stuck transaction): the dead-man signal. Read through
  (enabled, next_run_at) (agno's idx_agno_schedules_enabled_next_run_at, locked_by a
  filter): O(schedules due longer than the grace), which a working beat keeps near 0;
- open attempts by status (queued, running): an index-only scan of the status index
  (agno's idx_agno_schedule_runs_status; the partial ix_kern_schedule_runs_open serves too):
  O(open attempts);
- a schedule's failure streak: the final outcomes of its latest slots, newest first, a
  backward scan of the unique slot index (schedule_id, scheduled_for, ...), read only
  after a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import Connection, bindparam, func, select, true

from kern_tasks.db.tables import schedule_runs, schedules
from kern_tasks.scheduler.slots import DEFAULT_GRACE_S

_s, _r = schedules, schedule_runs

OPEN_STATUSES = ("queued", "running")
# A slot's final outcome that counts as a failure in a streak; success (and paused,
# cancelled) ends one; retrying, skipped and open attempts are no outcome of a slot.
FAILED = ("failed", "timeout")
NOT_OUTCOMES = ("queued", "running", "retrying", "skipped")


def _overdue(now: int, grace_s: int) -> object:
    return (_s.c.enabled == true()) & _s.c.locked_by.is_(None) & (_s.c.next_run_at < now - grace_s)


def count_overdue(conn: Connection, *, now: int, grace_s: int = DEFAULT_GRACE_S) -> int:
    return int(conn.execute(select(func.count()).select_from(_s).where(_overdue(now, grace_s))).scalar_one())


@dataclass(frozen=True)
class Overdue:
    schedule_id: str
    name: str
    slot: int  # the next_run_at that was missed


def overdue_schedules(conn: Connection, *, now: int, grace_s: int = DEFAULT_GRACE_S, limit: int = 100) -> list[Overdue]:
    rows = conn.execute(
        select(_s.c.id, _s.c.name, _s.c.next_run_at).where(_overdue(now, grace_s)).order_by(_s.c.next_run_at)
        .limit(limit)
    ).all()
    return [Overdue(row.id, row.name, int(row.next_run_at)) for row in rows]


def still_overdue(conn: Connection, schedule_ids: Sequence[str], *, now: int, grace_s: int = DEFAULT_GRACE_S) -> set[str]:
    """Which of these schedules are overdue now (by primary key)."""
    if not schedule_ids:
        return set()
    return set(conn.execute(select(_s.c.id).where(_s.c.id.in_(list(schedule_ids)), _overdue(now, grace_s))).scalars())


def open_runs_by_status(conn: Connection) -> dict[str, int]:
    counts = dict.fromkeys(OPEN_STATUSES, 0)
    for status, count in conn.execute(
        select(_r.c.status, func.count()).where(_r.c.status.in_(OPEN_STATUSES)).group_by(_r.c.status)
    ).all():
        counts[status] = int(count)
    return counts


@dataclass(frozen=True)
class Outcome:
    status: str
    slot: int | None
    error: str | None


_LATEST = (
    select(_r.c.status, _r.c.scheduled_for, _r.c.error)
    .where(_r.c.schedule_id == bindparam("b_id"), _r.c.status.not_in(NOT_OUTCOMES))
    .order_by(_r.c.scheduled_for.desc(), _r.c.attempt.desc())
    .limit(bindparam("b_limit"))
)


def latest_outcomes(conn: Connection, schedule_id: str, count: int) -> list[Outcome]:
    """The final outcomes of the schedule's latest `count` slots, newest first."""
    rows = conn.execute(_LATEST, {"b_id": schedule_id, "b_limit": count}).all()
    return [Outcome(row.status, row.scheduled_for, row.error) for row in rows]


def failing_streak(conn: Connection, schedule_id: str, threshold: int) -> list[Outcome] | None:
    """The latest `threshold` outcomes when every one failed (newest first), else None."""
    latest = latest_outcomes(conn, schedule_id, threshold)
    if len(latest) < threshold or any(o.status not in FAILED for o in latest):
        return None
    return latest
