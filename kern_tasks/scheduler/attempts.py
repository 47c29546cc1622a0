"""One attempt's life: a queued attempt row is taken (start_attempt), records agno's run
(record_accepted), and ends (finish_attempt), with a retry while its budget lasts
(may_retry), or is skipped (skip_attempt). Each arrow below is one conditional UPDATE or
INSERT; the claims' (claim_due, materialise, queue_manual) are claims.py's, the sweeps'
(sweep_unpublished, expire_lost_attempts) sweeps.py's:

    claim_due + materialise ---> queued <--- queue_manual (trigger)
                                   |   <--- a retry (attempt + 1, same slot)
                     start_attempt |       (sweep_unpublished publishes those without a message)
                                   v
                                running --finish_attempt--> success | failed | timeout
                                   |                      | paused | cancelled
                                   |                      | retrying (+ a queued retry)
                                   +--expire_lost_attempts--> as finish_attempt, "failed"
                                   |   (its worker stopped beating, or its deadline passed)
    queued, schedule disabled --start_attempt--> cancelled (manual attempts still run)

- an attempt leaves "queued" once and "running" once, so duplicate messages and late
  results change nothing;
- when a slot's last attempt ends, the schedule's lease goes back (claims.release_lease);
  a retry keeps it.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from sqlalchemy import JSON, BigInteger, Connection, RowMapping, String, Text, bindparam, column, func, select, update
from sqlalchemy.dialects.postgresql import JSONB

from kern_tasks import metrics
from kern_tasks.db.clock import db_now, db_time, epoch_now
from kern_tasks.db.tables import schedule_runs, schedules
from kern_tasks.dispatch import Dispatch, FireLabel, Route
from kern_tasks.firing.backoff import backoff_delay
from kern_tasks.scheduler.claims import (
    FREE_LOST_RETRIES, NOTHING_DUE_MEANWHILE, expired_reason, insert_attempts, label_of, queued_attempt,
    release_lease, route_of,
)

# The attempt lifecycle's one logger (claims and attempts log to it, as before the split).
log = logging.getLogger("kern_tasks.lifecycle")

# Retry waits up to this long ride on the broker (a countdown); longer ones wait in SQL
# (not_before) for the sweep, so no message outlives the broker's visibility timeout.
MAX_COUNTDOWN_S = 300
RESUME_WINDOW_S = 300

_s, _r = schedules, schedule_runs


@dataclass(frozen=True)
class Attempt:
    """A running attempt (its agno_schedule_runs row), with its schedule's row."""

    run: RowMapping
    schedule: RowMapping
    # agno's run the previous attempt of this slot had started (202) when its worker was
    # lost: this attempt polls it instead of starting a second one.
    resume_run_id: str | None = None
    resume_session_id: str | None = None

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt and every redelivery of one slot."""
        kind = "manual" if self.run["manual"] else "slot"
        return f"kern:{self.run['schedule_id']}:{kind}:{self.run['scheduled_for']}"


@dataclass(frozen=True)
class NotYet:
    """The attempt's time has not come (an early redelivery): publish it again later, on
    its schedule's route, shown as before."""

    seconds: float
    route: Route = Route()
    label: FireLabel | None = None


class Outcome(Protocol):
    """What finish_attempt records of a finished call (firing.http.FireOutcome is one); a
    protocol, so an attempt's life does not depend on how calls are made."""

    @property
    def status(self) -> str: ...
    @property
    def retryable(self) -> bool: ...
    @property
    def error(self) -> str | None: ...
    @property
    def retry_after(self) -> float | None: ...
    @property
    def status_code(self) -> int | None: ...
    @property
    def run_id(self) -> str | None: ...  # agno's run id
    @property
    def session_id(self) -> str | None: ...
    @property
    def input(self) -> Any: ...
    @property
    def output(self) -> Any: ...
    @property
    def requirements(self) -> Any: ...




# --- start and finish (the fire path) ------------------------------------------------

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
    .values(status="running", triggered_at=epoch_now(), worker_id=bindparam("b_worker"))
    .returning(*_r.c)
)
_SCHEDULE = select(_s).where(_s.c.id == bindparam("b_id"))
# A batch's attempts and their schedules (an expanding IN: one statement per batch size).
_START_MANY = (
    update(_r)
    .where(
        _r.c.id.in_(bindparam("b_ids", expanding=True)),
        _r.c.status == "queued",
        (_r.c.not_before.is_(None)) | (_r.c.not_before <= epoch_now()),
    )
    .values(status="running", triggered_at=epoch_now(), worker_id=bindparam("b_worker"))
    .returning(*_r.c)
)
_SCHEDULES = select(_s).where(_s.c.id.in_(bindparam("b_ids", expanding=True)))
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
_RECORDED = ("status_code", "run_id", "session_id", "input", "output", "requirements")


def _finish_many() -> Any:
    """Postgres: end a batch's running attempts with their final outcomes (one JSON
    array, jsonb_to_recordset: any batch size, one statement built once) and give back the
    leases of those whose schedule has no slot due meanwhile; returns each ended attempt
    with `released`. A JSON null is SQL NULL, as _FINISH binds None."""
    given = func.jsonb_to_recordset(bindparam("b_rows", type_=JSONB)).table_valued(
        column("id", String), column("status", String), column("error", Text), column("status_code", BigInteger),
        column("run_id", String), column("session_id", String), column("input", JSONB), column("output", JSONB),
        column("requirements", JSONB),
    ).render_derived(name="given", with_types=True)  # fmt: skip
    ended = (
        update(_r)
        .where(_r.c.id == given.c.id, _r.c.status == "running")
        .values(completed_at=epoch_now(), **{name: given.c[name] for name in ("status", "error", *_RECORDED)})
        .returning(_r.c.id, _r.c.schedule_id, _r.c.lease_token)
        .cte("ended")
    )
    released = (
        update(_s)
        .where(_s.c.id == ended.c.schedule_id, _s.c.locked_by == ended.c.lease_token, NOTHING_DUE_MEANWHILE)
        .values(locked_by=None, locked_at=None)
        .returning(_s.c.id)
        .cte("released")
    )
    return select(
        ended.c.id, ended.c.schedule_id, ended.c.lease_token, released.c.id.is_not(None).label("released")
    ).select_from(ended.outerjoin(released, released.c.id == ended.c.schedule_id))


_FINISH_MANY = _finish_many()


# Invariant: queued -> running once (a conditional UPDATE), not before not_before.
def start_attempt(
    conn: Connection, attempt_id: str, *, resume: bool = False, worker_id: str | None = None
) -> Attempt | NotYet | None:
    """queued -> running, on the database's clock, stamped with the worker that takes it
    (whose heartbeat row the caller upserts in this transaction: firing.liveness). None
    when there is nothing to do (already taken, finished, deleted); attempts of a schedule
    disabled meanwhile end "cancelled" (manual ones run). A retry whose previous attempt
    was lost after agno accepted its run carries that run (Attempt.resume_run_id).

    `resume`: the caller's previous try may have committed this very transition before
    its connection died (the commit's answer was lost), so an attempt that became
    "running" within the last RESUME_WINDOW_S is taken as its own rather than left to expire.
    """
    row = conn.execute(_START, {"b_id": attempt_id, "b_worker": worker_id}).mappings().first()
    if row is None:
        current = conn.execute(
            select(_r.c.status, _r.c.not_before, _r.c.triggered_at, epoch_now().label("now"), _s.c.queue,
                   _s.c.priority, _s.c.name, _r.c.scheduled_for, _r.c.attempt, _r.c.manual)
            .join(_s, _s.c.id == _r.c.schedule_id).where(_r.c.id == attempt_id)
        ).mappings().first()
        if current is None:
            return None
        status, not_before, triggered_at, now = (current[k] for k in ("status", "not_before", "triggered_at", "now"))
        if status == "queued" and not_before is not None:
            return NotYet(max(0.0, not_before - db_time(conn)), route_of(current), label_of(current["name"], current))
        if not (resume and status == "running" and (triggered_at or 0) >= now - RESUME_WINDOW_S):
            return None
        row = conn.execute(select(_r).where(_r.c.id == attempt_id)).mappings().one()
    return _taken(conn, row, conn.execute(_SCHEDULE, {"b_id": row["schedule_id"]}).mappings().first())


# Invariant: as start_attempt's, for each of the attempts (one message of a batch).
def start_attempts(
    conn: Connection, attempt_ids: Sequence[str], *, resume: bool = False, worker_id: str | None = None
) -> dict[str, Attempt | NotYet | None]:
    """start_attempt for several attempts, in the caller's one transaction: the common
    case (queued, due) takes them all with one UPDATE and reads their schedules with one
    SELECT; the others take start_attempt's own path (an early redelivery, a duplicate, a
    retry after a lost commit answer)."""
    ids = list(dict.fromkeys(attempt_ids))
    if resume or len(ids) == 1:
        return {attempt_id: start_attempt(conn, attempt_id, resume=resume, worker_id=worker_id) for attempt_id in ids}
    # Sorted, so two transactions taking overlapping batches lock their rows in one order.
    rows = {row["id"]: row for row in conn.execute(_START_MANY, {"b_ids": sorted(ids), "b_worker": worker_id}).mappings()}
    owners = sorted({row["schedule_id"] for row in rows.values()})
    found = {s["id"]: s for s in conn.execute(_SCHEDULES, {"b_ids": owners}).mappings()} if owners else {}
    return {
        attempt_id: (
            _taken(conn, rows[attempt_id], found.get(rows[attempt_id]["schedule_id"])) if attempt_id in rows
            else start_attempt(conn, attempt_id, worker_id=worker_id)
        )
        for attempt_id in ids
    }


def _taken(conn: Connection, row: RowMapping, schedule: RowMapping | None) -> Attempt | None:
    """An attempt just taken (running): what runs, or None when it must not (its schedule
    was disabled or deleted meanwhile, or its first attempt expired)."""
    if schedule is None:
        return None
    if not schedule["enabled"] and not row["manual"]:
        _end(conn, row, status="cancelled", now=db_now(conn), error="the schedule was disabled before this run started")
        return None
    expires = schedule["expires_after_seconds"]
    if expires is not None and row["attempt"] == 1 and not row["manual"] and not row["backfill"] and (
        row["triggered_at"] > (row["not_before"] or row["scheduled_for"]) + expires
    ):
        skip_attempt(conn, row, now=row["triggered_at"], error=expired_reason(expires))
        return None
    if row["attempt"] > 1:  # rare: only retries look back
        previous = conn.execute(
            select(_r.c.run_id, _r.c.session_id).where(
                *_same_slot(row), _r.c.attempt == row["attempt"] - 1, _r.c.lost.is_(True), _r.c.run_id.is_not(None)
            )
        ).first()
        if previous is not None:
            return Attempt(run=row, schedule=schedule, resume_run_id=previous[0], resume_session_id=previous[1])
    return Attempt(run=row, schedule=schedule)


def _same_slot(row: RowMapping) -> tuple[Any, ...]:
    return (
        _r.c.schedule_id == row["schedule_id"], _r.c.scheduled_for == row["scheduled_for"],
        _r.c.manual == row["manual"],
    )


# Invariant: agno's run id is on the attempt row from the 202 on, so a retry after a lost
# worker finds the run to resume; only a running attempt is written (a late call changes
# nothing on an attempt that has ended).
def record_accepted(conn: Connection, attempt_id: str, *, run_id: str, session_id: str | None) -> bool:
    """Record the agno run a running attempt started; False when it is no longer running."""
    return bool(
        conn.execute(
            update(_r).where(_r.c.id == attempt_id, _r.c.status == "running")
            .values(run_id=run_id, session_id=session_id)
        ).rowcount
    )


# Invariant: running -> an outcome once (a conditional UPDATE); a late result after the
# lost-attempt sweep ended the attempt changes nothing.
def finish_attempt(
    conn: Connection, attempt_id: str, outcome: Outcome, *, now: float | None = None,
    rng: random.Random | None = None,
) -> Dispatch | None:
    """running -> its outcome. Returns the next attempt to publish when one follows now
    (its wait fits a countdown); a longer wait is left to the sweep. `now` defaults to the
    database's clock, read only when a retry needs it."""
    recorded = {name: getattr(outcome, name) for name in _RECORDED}
    if not outcome.retryable:
        # Final at any attempt number (the common case, success): one UPDATE takes the row
        # lock and ends it, without first reading the run and its retry settings.
        binds = {f"b_{name}": value for name, value in recorded.items()}
        ended = conn.execute(
            _FINISH, {"b_id": attempt_id, "b_status": outcome.status, "b_error": outcome.error, **binds}
        ).first()
        if ended is not None and ended.lease_token:
            release_lease(conn, schedule_id=ended.schedule_id, token=ended.lease_token)
        return None  # None also when it had finished already (the lost-attempt sweep got there first)
    return retry_or_end(
        conn, attempt_id, status=outcome.status, error=outcome.error, retry_after=outcome.retry_after,
        recorded=recorded, now=now, rng=rng,
    )


# Invariant: as finish_attempt's, for each (one transaction for a batch's outcomes).
def finish_attempts(conn: Connection, finished: Sequence[tuple[str, Outcome]]) -> list[Dispatch]:
    """finish_attempt for several attempts; returns the retries to publish now. On
    Postgres the final outcomes (success, and every failure that is not retried) take one
    statement for the lot: the runs ended, their leases given back where no slot fell due
    meanwhile (the others take release_lease's own path); retryable ones take
    finish_attempt's (the retry decision reads the schedule)."""
    final = [(attempt_id, outcome) for attempt_id, outcome in finished if not outcome.retryable]
    follow_ups: list[Dispatch] = []
    if len(final) > 1 and conn.dialect.name == "postgresql":
        rows = [{"id": attempt_id, "status": outcome.status, "error": outcome.error,
                 **{name: getattr(outcome, name) for name in _RECORDED}} for attempt_id, outcome in final]  # fmt: skip
        for ended in conn.execute(_FINISH_MANY, {"b_rows": rows}):
            if ended.lease_token and not ended.released:
                release_lease(conn, schedule_id=ended.schedule_id, token=ended.lease_token)
    else:
        for attempt_id, outcome in final:
            finish_attempt(conn, attempt_id, outcome)
    for attempt_id, outcome in finished:
        if outcome.retryable and (follow_up := finish_attempt(conn, attempt_id, outcome)) is not None:
            follow_ups.append(follow_up)
    return follow_ups


def may_retry(attempt: int, max_retries: int, *, lost_before: int, lost: bool) -> bool:
    """Whether a slot's attempt number `attempt`, ended retryable, gets another: a slot
    makes 1 + max_retries attempts of its own, and its first FREE_LOST_RETRIES attempts
    lost with their worker (`lost_before` earlier ones, plus this one if `lost`) are not
    counted."""
    free = min(lost_before + int(lost), FREE_LOST_RETRIES)
    return attempt - free <= max_retries


# Invariant: a retry is a new queued row (attempt + 1, same slot and lease token), made
# only while may_retry holds; the slot keeps its lease until its last attempt ends.
def retry_or_end(
    conn: Connection, attempt_id: str, *, status: str, error: str | None, retry_after: float | None,
    recorded: dict[str, Any], now: float | None, rng: random.Random | None, lost: bool = False,
) -> Dispatch | None:
    """End a running attempt whose failure may be retried: "retrying" plus the next
    attempt while the budget lasts, else `status`. A `lost` attempt (its worker died) is
    marked so, and its retry is published at once: the wait is for the target's sake."""
    row = conn.execute(
        select(_r, _s.c.max_retries, _s.c.retry_delay_seconds, _s.c.queue, _s.c.priority, _s.c.name)
        .join(_s, _s.c.id == _r.c.schedule_id)
        .where(_r.c.id == attempt_id, _r.c.status == "running")
        .with_for_update(of=_r)
    ).mappings().first()
    if row is None:
        return None  # finished already (the lost-attempt sweep, or the worker, got there first)
    now = db_time(conn) if now is None else now
    if lost:
        recorded = {**recorded, "lost": True}
    lost_before = 0
    if lost or row["attempt"] > row["max_retries"]:  # only then can earlier losses matter
        lost_before = conn.execute(
            select(func.count()).select_from(_r)
            .where(*_same_slot(row), _r.c.lost.is_(True), _r.c.attempt < row["attempt"])
        ).scalar_one()  # fmt: skip
    if not may_retry(row["attempt"], row["max_retries"], lost_before=lost_before, lost=lost):
        _end(conn, row, status=status, now=int(now), error=error, **recorded)
        return None
    _end(conn, row, status="retrying", now=int(now), error=error, release=False, **recorded)
    delay = 0.0 if lost else backoff_delay(row["retry_delay_seconds"], row["attempt"], retry_after=retry_after, rng=rng)
    rides_broker = delay <= MAX_COUNTDOWN_S
    retry = queued_attempt(
        schedule_id=row["schedule_id"], attempt=row["attempt"] + 1, scheduled_for=row["scheduled_for"],
        manual=row["manual"], user_id=row["user_id"], now=int(now), not_before=int(now + delay),
        enqueued_at=int(now) if rides_broker else None, lease_token=row["lease_token"], backfill=row["backfill"],
    )
    insert_attempts(conn, [retry])
    metrics.fire_retried()
    if not rides_broker:
        return None
    return Dispatch(retry["id"], countdown=delay, route=route_of(row), label=label_of(row["name"], retry))



# Invariant: a slot's first attempt that is skipped never runs (queued or just taken ->
# "skipped", one conditional UPDATE), it is counted in skipped_slots, and its lease goes back.
def skip_attempt(conn: Connection, row: RowMapping, *, now: int, error: str) -> None:
    """End a slot's open first attempt as "skipped" (expires_after_seconds passed)."""
    log.warning("schedule %s: slot %s skipped: %s", row["schedule_id"], row["scheduled_for"], error)
    _end(conn, row, status="skipped", now=now, error=error, triggered_at=None, worker_id=None)
    conn.execute(update(_s).where(_s.c.id == row["schedule_id"]).values(skipped_slots=_s.c.skipped_slots + 1))
    metrics.slots_skipped(1)


def _end(
    conn: Connection, row: RowMapping, *, status: str, now: int, error: str | None,
    release: bool = True, **recorded: Any,
) -> None:
    """An open attempt (queued or running) -> `status`; the slot's lease goes back unless
    a retry follows (`release=False`)."""
    conn.execute(
        update(_r)
        .where(_r.c.id == row["id"], _r.c.status.in_(("queued", "running")))
        .values(status=status, completed_at=now, error=error, **recorded)
    )
    if release and row["lease_token"]:
        release_lease(conn, schedule_id=row["schedule_id"], token=row["lease_token"], now=now)

