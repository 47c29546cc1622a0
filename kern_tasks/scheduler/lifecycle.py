"""The one module that writes agno_schedule_runs and the schedules' lease: every statement
is a named function here, with the invariant it keeps written above it.

Names: an attempt id is our agno_schedule_runs.id (`attempt_id`); `run_id` is only agno's
run id, the column that points at agno_runs.

One attempt row's life (each arrow one conditional UPDATE or INSERT below):

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
- a slot's attempts are unique per (schedule_id, scheduled_for, manual, attempt), an
  index the database holds; a queued row is built by `queued_attempt` only;
- when a slot's last attempt ends, the schedule's lease is released if this slot still
  holds it (release_lease).

The lease is two columns of agno_schedules: `locked_by` (a token unique to one claim) and
`locked_at` (the database time of it). A claim may take a schedule when all of these hold:
  1. enabled, and next_run_at <= now (database clock);
  2. no lease, or a stale one: older than the schedule's whole retry budget
     (lease_budget: every timeout, every retry wait at the backoff cap, a margin),
     so a run that legitimately lasts an hour is never claimed twice;
  3. no other transaction holds the row (FOR UPDATE SKIP LOCKED on Postgres; on SQLite
     the claim is one UPDATE ... RETURNING inside BEGIN IMMEDIATE).
Rows are taken oldest next_run_at first, at most `batch` per claim, so a claim costs
O(due rows) through the (enabled, next_run_at) index, never O(all schedules).
"""

from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from sqlalchemy import JSON, Connection, RowMapping, bindparam, case, func, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB

from kern_tasks.db.clock import db_now, db_time, epoch_now
from kern_tasks.db.tables import schedule_runs, schedules, workers
from kern_tasks.dispatch import Dispatch, Route
from kern_tasks.errors import CronError
from kern_tasks.firing.backoff import DEFAULT_CAP_SECONDS, backoff_delay
from kern_tasks.firing.liveness import LOST_AFTER_S
from kern_tasks.scheduler.kinds import Timetable, remaining_runs
from kern_tasks.scheduler.slots import DEFAULT_GRACE_S, jitter_offset, plan_slots, skip_overlapped

log = logging.getLogger("kern_tasks.lifecycle")

LEASE_MARGIN_S = 60
LEASED_RECHECK_S = 0.5
# Retry waits up to this long ride on the broker (a countdown); longer ones wait in SQL
# (not_before) for the sweep, so no message outlives the broker's visibility timeout.
MAX_COUNTDOWN_S = 300
LOST_ATTEMPT_MARGIN_S = 30
RESUME_WINDOW_S = 300
# A lost worker is not the target's fault: this many lost attempts per slot do not count
# against max_retries (more would retry for ever a call that kills every worker it runs on).
FREE_LOST_RETRIES = 1

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
    its schedule's route."""

    seconds: float
    route: Route = Route()


class Outcome(Protocol):
    """What the lifecycle records of a finished call (firing.http.FireOutcome is one); a
    protocol, so the lifecycle does not depend on how calls are made."""

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


# --- queued rows ---------------------------------------------------------------------


def queued_attempt(
    *, schedule_id: str, attempt: int, scheduled_for: int, manual: bool, user_id: str | None, now: int,
    not_before: int | None = None, enqueued_at: int | None = None, lease_token: str | None = None,
    backfill: bool = False,
) -> dict[str, Any]:
    """The one way a queued attempt row is made: a slot's first attempt, a retry, a manual
    run, a backfilled slot. `enqueued_at` None means "no message yet" (the sweep publishes it)."""
    return {
        "id": str(uuid.uuid4()), "schedule_id": schedule_id, "attempt": attempt, "status": "queued",
        "scheduled_for": scheduled_for, "manual": manual, "not_before": not_before,
        "enqueued_at": enqueued_at, "lease_token": lease_token, "user_id": user_id, "created_at": now,
        "backfill": backfill,
    }  # fmt: skip


def route_of(schedule: Any) -> Route:
    """The route of a schedule's messages (a row or mapping with queue and priority)."""
    return Route(queue=schedule["queue"], priority=schedule["priority"])


# INSERT ... ON CONFLICT DO NOTHING (a slot already materialised is left as it is), built
# once per dialect: retries insert on the fire path.
_INSERT = {
    "postgresql": postgresql.insert(_r).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(_r).on_conflict_do_nothing(),
}


def _insert_attempts(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(_INSERT[conn.dialect.name], list(rows))


# --- the lease -----------------------------------------------------------------------


def new_lease_token(replica: str) -> str:
    return f"{replica}/{uuid.uuid4().hex[:12]}"


def lease_budget(timeout_seconds: Any, max_retries: Any) -> Any:
    """How long a lease lasts: every attempt's timeout, every retry wait at the backoff cap,
    the free retries after lost workers (each lost attempt ran up to its timeout plus the
    lost-attempt margin; its retry is published at once), and a margin. At least
    `backoff.retry_budget_seconds` of the slot (a test checks it). Works on ints and on SQL
    columns alike, so the claim's SQL uses this very formula."""
    attempts = max_retries + 1 + FREE_LOST_RETRIES
    return (
        timeout_seconds * attempts + FREE_LOST_RETRIES * LOST_ATTEMPT_MARGIN_S
        + max_retries * DEFAULT_CAP_SECONDS + LEASE_MARGIN_S
    )


def _lease_is_stale(now: int) -> Any:
    budget = lease_budget(_s.c.timeout_seconds, _s.c.max_retries)
    return or_(_s.c.locked_at.is_(None), _s.c.locked_at <= now - budget)


# Invariant: a schedule is leased by at most one claim at a time (rules 1-3 above).
def claim_due(conn: Connection, *, token: str, now: int, batch: int) -> list[RowMapping]:
    """Lease up to `batch` due schedules for `token`; returns the leased rows."""
    due = (
        select(_s.c.id)
        .where(
            _s.c.enabled == true(),
            _s.c.next_run_at <= now,
            or_(_s.c.locked_by.is_(None), _lease_is_stale(now)),
        )
        .order_by(_s.c.next_run_at)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    claimed = conn.execute(
        update(_s)
        .where(_s.c.id.in_(due.scalar_subquery()))
        .values(locked_by=token, locked_at=now)
        .returning(
            _s.c.id, _s.c.cron_expr, _s.c.timezone, _s.c.next_run_at, _s.c.user_id,
            _s.c.misfire_policy, _s.c.overlap_policy, _s.c.catchup_window_seconds, _s.c.jitter_seconds,
            *_KIND_COLUMNS,
            _s.c.queue, _s.c.priority,
        )
    )
    return list(claimed.mappings())


# A schedule's timing beyond cron (kinds.Timetable reads these).
_KIND_COLUMNS = (
    _s.c.created_at, _s.c.interval_seconds, _s.c.run_at, _s.c.start_at, _s.c.end_at, _s.c.max_runs,
    _s.c.expires_after_seconds,
)


# Reads only; exact under any number of replicas: the claim that calls it holds the
# schedule's lease, and every slot that ever fired is a unique row (attempt 1, not manual).
def count_fired(conn: Connection, schedule_id: str) -> int:
    """How many of the schedule's slots have fired (skipped ones have not)."""
    return conn.execute(
        select(func.count()).select_from(_r).where(
            _r.c.schedule_id == schedule_id, _r.c.manual.is_(False), _r.c.attempt == 1, _r.c.status != "skipped"
        )
    ).scalar_one()


# Invariants, in the claim's transaction:
# - a slot is materialised at most once: unique (schedule_id, scheduled_for, manual, attempt),
#   and next_run_at moves past every slot materialised or skipped (None: no slot is left);
# - max_runs: the slots fired so far are counted under the lease, so at most max_runs ever fire;
# - a slot already expires_after_seconds late is written "skipped", never published;
# - overlap "forbid" keeps the lease (released by the slot's last attempt); "allow", and a
#   claim that fires nothing, give it back at once.
def materialise(
    conn: Connection, claimed: Sequence[RowMapping], *, token: str, now: float, grace_s: int = DEFAULT_GRACE_S
) -> list[Dispatch]:
    """Insert the first attempt of each slot to fire, advance next_run_at, count skips."""
    now_s = int(now)
    runs: list[dict[str, Any]] = []
    skipped_runs: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    dispatches: list[Dispatch] = []
    for row in claimed:
        remaining = remaining_runs(row["max_runs"], count_fired(conn, row["id"]) if row["max_runs"] else 0)
        try:
            plan = plan_slots(
                timetable=Timetable.of(row), next_run_at=row["next_run_at"], now=now_s, remaining=remaining,
                misfire_policy=row["misfire_policy"], overlap_policy=row["overlap_policy"],
                catchup_window_seconds=row["catchup_window_seconds"], grace_s=grace_s,
            )
        except CronError as exc:
            # A row written elsewhere (agno, SQL) that cannot be read: disable it, visibly.
            log.error("schedule %s disabled: %s", row["id"], exc)
            conn.execute(
                update(_s).where(_s.c.id == row["id"])
                .values(enabled=False, disabled_reason=str(exc), locked_by=None, locked_at=None, updated_at=now_s)
            )
            continue
        if plan.skipped:
            log.warning(
                "schedule %s: %s%d missed slot(s) skipped (misfire policy %s)",
                row["id"], "" if plan.skipped_exact else "at least ", plan.skipped, row["misfire_policy"],
            )
        expires = row["expires_after_seconds"]
        offsets = {slot: jitter_offset(row["id"], slot, row["jitter_seconds"]) for slot in plan.fire}
        expired = {slot for slot in plan.fire if expires is not None and now_s > slot + offsets[slot] + expires}
        keep_lease = row["overlap_policy"] == "forbid" and len(plan.fire) > len(expired)
        for slot in plan.fire:
            offset = offsets[slot]
            run = queued_attempt(
                schedule_id=row["id"], attempt=1, scheduled_for=slot, manual=False, user_id=row["user_id"],
                now=now_s, not_before=slot + offset if offset else None, enqueued_at=now_s,
                lease_token=token if keep_lease and slot not in expired else None,
            )
            if slot in expired:
                log.warning("schedule %s: slot %s skipped: %s", row["id"], slot, expired_reason(expires))
                skipped_runs.append({**run, "status": "skipped", "completed_at": now_s, "error": expired_reason(expires)})
                continue
            runs.append(run)
            countdown = max(0.0, slot + offset - now) if offset else 0.0
            dispatches.append(Dispatch(run["id"], countdown=countdown, route=route_of(row)))
        changes.append(
            {
                "b_id": row["id"], "b_next": plan.next_run_at, "b_skipped": plan.skipped + len(expired),
                "b_locked_by": token if keep_lease else None, "b_locked_at": now_s if keep_lease else None,
            }
        )
    _insert_attempts(conn, runs)
    _insert_attempts(conn, skipped_runs)
    if changes:
        conn.execute(
            update(_s)
            .where(_s.c.id == bindparam("b_id"))
            .values(
                next_run_at=bindparam("b_next"),
                skipped_slots=_s.c.skipped_slots + bindparam("b_skipped"),
                locked_by=bindparam("b_locked_by"),
                locked_at=bindparam("b_locked_at"),
            ),
            changes,
        )
    return dispatches


# Reads only; promise: beat never sleeps past the moment some schedule becomes claimable.
def seconds_until_due(conn: Connection, *, now: float) -> float | None:
    """How long beat may sleep before some schedule can be claimed; None if never.

    Unleased rows wake beat at their next_run_at. Leased rows (a run in flight) wake it
    at their next_run_at too, since the run may end first; a leased row that is
    already due is re-checked every LEASED_RECHECK_S until its lease is released.
    Both read small partial indexes, not the table.
    """
    free = conn.execute(
        select(func.min(_s.c.next_run_at)).where(_s.c.enabled == true(), _s.c.locked_by.is_(None))
    ).scalar()
    leased = conn.execute(
        select(
            func.min(case((_s.c.next_run_at > int(now), _s.c.next_run_at), else_=None)),
            func.count(case((_s.c.next_run_at <= int(now), 1), else_=None)),
        ).where(_s.c.enabled == true(), _s.c.locked_by.is_not(None))
    ).one()
    waits = [t - now for t in (free, leased[0]) if t is not None]
    if leased[1]:
        waits.append(LEASED_RECHECK_S)
    return max(0.0, min(waits)) if waits else None


# release_lease's common case, built once (it runs at the end of every fire).
_RELEASE_IF_NOTHING_DUE = (
    update(_s)
    .where(
        _s.c.id == bindparam("b_id"),
        _s.c.locked_by == bindparam("b_token"),
        or_(
            _s.c.next_run_at.is_(None), _s.c.next_run_at > epoch_now(),
            _s.c.misfire_policy == "all", (_s.c.cron_expr == "") & _s.c.interval_seconds.is_(None),
        ),  # fmt: skip
    )
    .values(locked_by=None, locked_at=None)
    .returning(_s.c.id)
)


# Invariant: only the claim that took a lease gives it back (locked_by = its token), so a
# run finishing after its lease went stale and was re-claimed cannot free the new holder.
def release_lease(conn: Connection, *, schedule_id: str, token: str, now: int | None = None) -> bool:
    """Give the lease back; slots that fell due meanwhile follow the misfire policy
    (slots.skip_overlapped)."""
    # Usually no slot fell due while the run was in flight: then one UPDATE gives it back.
    if conn.execute(_RELEASE_IF_NOTHING_DUE, {"b_id": schedule_id, "b_token": token}).first():
        return True
    now = db_now(conn) if now is None else now
    row = conn.execute(
        select(_s.c.cron_expr, _s.c.timezone, _s.c.next_run_at, _s.c.misfire_policy, *_KIND_COLUMNS)
        .where(_s.c.id == schedule_id, _s.c.locked_by == token)
        .with_for_update()
    ).mappings().first()
    if row is None:
        return False
    next_run_at, skipped = row["next_run_at"], 0
    if row["misfire_policy"] != "all" and (row["cron_expr"] or row["interval_seconds"]):
        try:
            next_run_at, skipped = skip_overlapped(
                row["cron_expr"], row["timezone"], row["next_run_at"], now, row["misfire_policy"],
                timetable=Timetable.of(row),
            )
        except CronError:
            pass  # beat disables such a row at its next claim
    if skipped:
        log.warning("schedule %s: %d slot(s) skipped while its previous run was in flight", schedule_id, skipped)
    conn.execute(
        update(_s)
        .where(_s.c.id == schedule_id, _s.c.locked_by == token)
        .values(locked_by=None, locked_at=None, next_run_at=next_run_at, skipped_slots=_s.c.skipped_slots + skipped)
    )
    return True


# --- manual runs ---------------------------------------------------------------------


# Invariant: one manual attempt per schedule and second (the unique slot index), so
# repeated triggers within a second make one run; it holds no lease and has no message
# yet (beat's sweep publishes it). The schedule's existence is the caller's to check.
def queue_manual(conn: Connection, schedule_id: str, *, user_id: str | None, now: int) -> RowMapping:
    """Queue a manual run of `schedule_id` at `now`; returns its row, or the row of the
    manual run already queued in that second."""
    run = queued_attempt(schedule_id=schedule_id, attempt=1, scheduled_for=now, manual=True, user_id=user_id, now=now)
    inserted = conn.execute(_INSERT[conn.dialect.name].values(run).returning(*_r.c)).mappings().first()
    if inserted is not None:
        return inserted
    return conn.execute(
        select(_r).where(
            _r.c.schedule_id == schedule_id, _r.c.scheduled_for == now, _r.c.manual.is_(True), _r.c.attempt == 1
        )
    ).mappings().one()


# --- backfill -----------------------------------------------------------------------


# Invariant: a backfilled slot is the slot row beat would have made (manual false, attempt
# 1), so the unique slot index makes it exist at most once, whoever made it first: a slot
# beat fired, or an earlier backfill, adds nothing. It has no message yet (the sweep
# publishes it, one at a time under overlap "forbid": _backfill_may_start).
def queue_backfill(
    conn: Connection, schedule_id: str, slots: Sequence[int], *, user_id: str | None, now: int
) -> list[RowMapping]:
    """Queue the first attempt of each slot not materialised yet, marked backfill;
    returns the rows added (the slots that existed already are left as they are)."""
    rows = [
        queued_attempt(schedule_id=schedule_id, attempt=1, scheduled_for=slot, manual=False, user_id=user_id,
                       now=now, backfill=True)
        for slot in slots
    ]
    if not rows:
        return []
    added = conn.execute(_INSERT[conn.dialect.name].returning(*_r.c), rows).mappings().all()
    return sorted(added, key=lambda row: row["scheduled_for"])


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
            select(_r.c.status, _r.c.not_before, _r.c.triggered_at, epoch_now(), _s.c.queue, _s.c.priority)
            .join(_s, _s.c.id == _r.c.schedule_id).where(_r.c.id == attempt_id)
        ).first()
        if current is None:
            return None
        status, not_before, triggered_at, now, queue, priority = current
        if status == "queued" and not_before is not None:
            return NotYet(max(0.0, not_before - db_time(conn)), Route(queue=queue, priority=priority))
        if not (resume and status == "running" and (triggered_at or 0) >= now - RESUME_WINDOW_S):
            return None
        row = conn.execute(select(_r).where(_r.c.id == attempt_id)).mappings().one()
    schedule = conn.execute(_SCHEDULE, {"b_id": row["schedule_id"]}).mappings().first()
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
    return _retry_or_end(
        conn, attempt_id, status=outcome.status, error=outcome.error, retry_after=outcome.retry_after,
        recorded=recorded, now=now, rng=rng,
    )


def may_retry(attempt: int, max_retries: int, *, lost_before: int, lost: bool) -> bool:
    """Whether a slot's attempt number `attempt`, ended retryable, gets another: a slot
    makes 1 + max_retries attempts of its own, and its first FREE_LOST_RETRIES attempts
    lost with their worker (`lost_before` earlier ones, plus this one if `lost`) are not
    counted."""
    free = min(lost_before + int(lost), FREE_LOST_RETRIES)
    return attempt - free <= max_retries


# Invariant: a retry is a new queued row (attempt + 1, same slot and lease token), made
# only while may_retry holds; the slot keeps its lease until its last attempt ends.
def _retry_or_end(
    conn: Connection, attempt_id: str, *, status: str, error: str | None, retry_after: float | None,
    recorded: dict[str, Any], now: float | None, rng: random.Random | None, lost: bool = False,
) -> Dispatch | None:
    """End a running attempt whose failure may be retried: "retrying" plus the next
    attempt while the budget lasts, else `status`. A `lost` attempt (its worker died) is
    marked so, and its retry is published at once: the wait is for the target's sake."""
    row = conn.execute(
        select(_r, _s.c.max_retries, _s.c.retry_delay_seconds, _s.c.queue, _s.c.priority)
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
    _insert_attempts(conn, [retry])
    return Dispatch(retry["id"], countdown=delay, route=route_of(row)) if rides_broker else None


def expired_reason(expires_after_seconds: int) -> str:
    return f"expired: its first attempt could not start within expires_after_seconds ({expires_after_seconds}) of its time"


# Invariant: a slot's first attempt that is skipped never runs (queued or just taken ->
# "skipped", one conditional UPDATE), it is counted in skipped_slots, and its lease goes back.
def skip_attempt(conn: Connection, row: RowMapping, *, now: int, error: str) -> None:
    """End a slot's open first attempt as "skipped" (expires_after_seconds passed)."""
    log.warning("schedule %s: slot %s skipped: %s", row["schedule_id"], row["scheduled_for"], error)
    _end(conn, row, status="skipped", now=now, error=error, triggered_at=None, worker_id=None)
    conn.execute(update(_s).where(_s.c.id == row["schedule_id"]).values(skipped_slots=_s.c.skipped_slots + 1))


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
def count_maybe_lost(conn: Connection, *, now: int, republish_after_s: int) -> int:
    """How many queued attempts have waited in the broker longer than republish_after_s."""
    return conn.execute(
        select(func.count()).select_from(_r).where(_r.c.status == "queued", _maybe_lost(now, republish_after_s))
    ).scalar_one()


# Reads only: the queues beat measures before re-publishing (None: the default queue).
def queues_of_maybe_lost(conn: Connection, *, now: int, republish_after_s: int) -> set[str | None]:
    """The queues of the attempts `count_maybe_lost` counts."""
    return set(conn.execute(
        select(_s.c.queue).distinct().select_from(_r).join(_s, _s.c.id == _r.c.schedule_id)
        .where(_r.c.status == "queued", _maybe_lost(now, republish_after_s))
    ).scalars())


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
        .returning(_r.c.id, _r.c.schedule_id)
    ).all()
    return [Dispatch(attempt_id, route=route) for attempt_id, route in _with_routes(conn, marked)]


def _with_routes(conn: Connection, attempts: Sequence[Any]) -> list[tuple[str, Route]]:
    """(attempt id, its schedule's route) for (attempt id, schedule id) pairs: a re-publish
    goes to the queue the first message went to."""
    ids = {schedule_id for _, schedule_id in attempts}
    routes = {
        row.id: route_of(row._mapping)
        for row in conn.execute(select(_s.c.id, _s.c.queue, _s.c.priority).where(_s.c.id.in_(ids)))
    } if ids else {}
    return [(attempt_id, routes.get(schedule_id, Route())) for attempt_id, schedule_id in attempts]


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
# one ends "failed" (retryable) through _retry_or_end, keeping the agno run it started.
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
        dispatch = _retry_or_end(
            conn, attempt_id, status="failed", error=error, retry_after=None, recorded={}, now=now, rng=None,
            lost=True,
        )
        if dispatch is not None:
            dispatches.append(dispatch)
    return dispatches


# --- retention -------------------------------------------------------------------------


def _prunable(before: int) -> Any:
    """Attempts that ended before `before`: never a queued or running one."""
    return _r.c.status.not_in(("queued", "running")) & (func.coalesce(_r.c.completed_at, _r.c.created_at) < before)


# Reads only (for a progress bar).
def count_prunable(conn: Connection, *, before: int) -> int:
    return int(conn.execute(select(func.count()).select_from(_r).where(_prunable(before))).scalar_one())


# Invariant: an open attempt (queued, running) is never removed; one batch is one short
# statement, so no lock is held for long and beat's sweep runs between batches. A pruned
# slot no longer counts as fired (a later backfill of its range would run it again).
def prune_finished(conn: Connection, *, before: int, limit: int) -> int:
    """Delete up to `limit` attempts that ended before `before`; returns how many."""
    batch = select(_r.c.id).where(_prunable(before)).limit(limit)
    if conn.dialect.name == "postgresql":
        batch = batch.with_for_update(skip_locked=True)
    return int(conn.execute(_r.delete().where(_r.c.id.in_(batch.scalar_subquery()))).rowcount)
