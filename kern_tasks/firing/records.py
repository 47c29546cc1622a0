"""The life of one attempt row in agno_schedule_runs, as the fire task and sweeps see it.

    queued --start_attempt--> running --finish_attempt--> success | failed | timeout
                                                        | paused | cancelled
                                                        | retrying (+ a new queued attempt)
           running for longer than its deadline --expire_lost_attempts--> as above

Invariants:
- an attempt leaves "queued" once and "running" once (each transition is a conditional
  UPDATE), so duplicate messages and late results change nothing;
- a retry is a new row (attempt + 1, same slot), unique per slot and attempt;
- when a slot's last attempt ends, the schedule's lease is released if this slot still
  holds it (claims.release_lease).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Connection, RowMapping, and_, bindparam, select, update
from sqlalchemy.dialects.postgresql import JSONB

from kern_tasks.db.clock import db_now, db_time, epoch_now
from kern_tasks.db.tables import schedule_runs, schedules
from kern_tasks.firing.backoff import backoff_delay
from kern_tasks.scheduler.claims import Dispatch, _insert_runs, release_lease

if TYPE_CHECKING:
    from kern_tasks.firing.http import FireOutcome

# Retry waits up to this long ride on the broker (a countdown); longer ones wait in SQL
# (not_before) for the sweep, so no message outlives the broker's visibility timeout.
MAX_COUNTDOWN_S = 300
LOST_ATTEMPT_MARGIN_S = 30
RESUME_WINDOW_S = 300

_s, _r = schedules, schedule_runs

# The fire path's statements, built once: building and hashing a statement costs a worker
# more CPU (~0.2 ms each) than executing it. None binds as SQL NULL in the JSON columns, as
# a literal None does in .values().
_JSON_OR_NULL = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
_START = (
    update(_r)
    .where(
        _r.c.id == bindparam("b_id"),
        _r.c.status == "queued",
        (_r.c.not_before.is_(None)) | (_r.c.not_before <= epoch_now()),
    )
    .values(status="running", triggered_at=epoch_now())
    .returning(*_r.c)
)
_SCHEDULE = select(_s).where(_s.c.id == bindparam("b_id"))
_FINISH = (
    update(_r)
    .where(_r.c.id == bindparam("b_id"), _r.c.status == "running")
    .values(
        status=bindparam("b_status"), completed_at=epoch_now(), error=bindparam("b_error"),
        status_code=bindparam("b_status_code"), run_id=bindparam("b_run_id"), session_id=bindparam("b_session_id"),
        input=bindparam("b_input", type_=_JSON_OR_NULL), output=bindparam("b_output", type_=_JSON_OR_NULL),
        requirements=bindparam("b_requirements", type_=_JSON_OR_NULL),
    )
    .returning(_r.c.schedule_id, _r.c.lease_token)
)


@dataclass(frozen=True)
class Attempt:
    """A running attempt, with what firing it needs."""

    run: RowMapping
    schedule: RowMapping

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt and every redelivery of one slot."""
        kind = "manual" if self.run["manual"] else "slot"
        return f"kern:{self.run['schedule_id']}:{kind}:{self.run['scheduled_for']}"


@dataclass(frozen=True)
class NotYet:
    """The attempt's time has not come (an early redelivery): publish it again later."""

    seconds: float


def start_attempt(conn: Connection, run_id: str, *, resume: bool = False) -> Attempt | NotYet | None:
    """queued -> running, on the database's clock. None when there is nothing to do
    (already taken, finished, deleted); attempts of a schedule disabled meanwhile end
    "cancelled" (manual ones run).

    `resume`: the caller's previous try may have committed this very transition before
    its connection died (the commit's answer was lost), so a run that became "running"
    within the last RESUME_WINDOW_S is taken as its own rather than left to expire.
    """
    row = conn.execute(_START, {"b_id": run_id}).mappings().first()
    if row is None:
        current = conn.execute(
            select(_r.c.status, _r.c.not_before, _r.c.triggered_at, epoch_now()).where(_r.c.id == run_id)
        ).first()
        if current is None:
            return None
        status, not_before, triggered_at, now = current
        if status == "queued" and not_before is not None:
            return NotYet(max(0.0, not_before - db_time(conn)))
        if not (resume and status == "running" and (triggered_at or 0) >= now - RESUME_WINDOW_S):
            return None
        row = conn.execute(select(_r).where(_r.c.id == run_id)).mappings().one()
    schedule = conn.execute(_SCHEDULE, {"b_id": row["schedule_id"]}).mappings().first()
    if schedule is None:
        return None
    if not schedule["enabled"] and not row["manual"]:
        _end(conn, row, status="cancelled", now=db_now(conn), error="the schedule was disabled before this run started")
        return None
    return Attempt(run=row, schedule=schedule)


def finish_attempt(
    conn: Connection, run_id: str, outcome: "FireOutcome", *, now: float | None = None,
    rng: random.Random | None = None,
) -> Dispatch | None:
    """running -> its outcome. Returns the next attempt to publish when one follows now
    (its wait fits a countdown); a longer wait is left to the sweep. `now` defaults to the
    database's clock, read only when a retry needs it."""
    if not outcome.retryable:
        # Final at any attempt number (the common case, success): one UPDATE takes the row
        # lock and ends it, without first reading the run and its retry settings.
        ended = conn.execute(
            _FINISH,
            {
                "b_id": run_id, "b_status": outcome.status, "b_error": outcome.error,
                "b_status_code": outcome.status_code, "b_run_id": outcome.run_id, "b_session_id": outcome.session_id,
                "b_input": outcome.input, "b_output": outcome.output, "b_requirements": outcome.requirements,
            },
        ).first()
        if ended is not None and ended.lease_token:
            release_lease(conn, schedule_id=ended.schedule_id, token=ended.lease_token)
        return None  # None also when it had finished already (the lost-attempt sweep got there first)
    row = conn.execute(
        select(_r, _s.c.max_retries, _s.c.retry_delay_seconds)
        .join(_s, _s.c.id == _r.c.schedule_id)
        .where(_r.c.id == run_id, _r.c.status == "running")
        .with_for_update(of=_r)
    ).mappings().first()
    if row is None:
        return None  # finished already (the lost-attempt sweep got there first)
    now = db_time(conn) if now is None else now
    retry = outcome.retryable and row["attempt"] <= row["max_retries"]
    fields = {
        "status_code": outcome.status_code,
        "run_id": outcome.run_id,
        "session_id": outcome.session_id,
        "input": outcome.input,
        "output": outcome.output,
        "requirements": outcome.requirements,
    }
    if not retry:
        _end(conn, row, status=outcome.status, now=int(now), error=outcome.error, **fields)
        return None
    _end(conn, row, status="retrying", now=int(now), error=outcome.error, release=False, **fields)
    delay = backoff_delay(row["retry_delay_seconds"], row["attempt"], retry_after=outcome.retry_after, rng=rng)
    return _queue_retry(conn, row, now=now, delay=delay)


def _queue_retry(conn: Connection, row: RowMapping, *, now: float, delay: float) -> Dispatch | None:
    run_id = str(uuid.uuid4())
    rides_broker = delay <= MAX_COUNTDOWN_S
    _insert_runs(
        conn,
        [
            {
                "id": run_id, "schedule_id": row["schedule_id"], "attempt": row["attempt"] + 1,
                "status": "queued", "scheduled_for": row["scheduled_for"], "manual": row["manual"],
                "not_before": int(now + delay), "enqueued_at": int(now) if rides_broker else None,
                "lease_token": row["lease_token"], "user_id": row["user_id"], "created_at": int(now),
            }
        ],
    )
    return Dispatch(run_id, countdown=delay) if rides_broker else None


def _end(
    conn: Connection, row: RowMapping, *, status: str, now: int, error: str | None,
    release: bool = True, **fields: Any,
) -> None:
    conn.execute(
        update(_r)
        .where(_r.c.id == row["id"], _r.c.status.in_(("queued", "running")))
        .values(status=status, completed_at=now, error=error, **fields)
    )
    if release and row["lease_token"]:
        release_lease(conn, schedule_id=row["schedule_id"], token=row["lease_token"], now=now)


def expire_lost_attempts(
    conn: Connection, *, now: float, limit: int, margin_s: int = LOST_ATTEMPT_MARGIN_S
) -> list[Dispatch]:
    """Attempts "running" past their deadline (timeout_seconds + a margin) lost their
    worker (killed mid-call): end them failed, retryable, and return what to publish."""
    from kern_tasks.firing.http import FireOutcome

    lost = conn.execute(
        select(_r.c.id, _s.c.timeout_seconds)
        .join(_s, _s.c.id == _r.c.schedule_id)
        .where(
            _r.c.status == "running",
            and_(_r.c.triggered_at <= int(now) - _s.c.timeout_seconds - margin_s),
        )
        .limit(limit)
        .with_for_update(of=_r, skip_locked=True)
    ).all()
    dispatches = []
    for run_id, timeout_seconds in lost:
        outcome = FireOutcome(
            status="failed", retryable=True, status_code=None,
            error=f"no result within timeout_seconds ({timeout_seconds}) + {margin_s}s: the worker was lost",
            output=None, run_id=None, session_id=None, input=None, requirements=None, retry_after=None,
        )
        dispatch = finish_attempt(conn, run_id, outcome, now=now)
        if dispatch is not None:
            dispatches.append(dispatch)
    return dispatches
