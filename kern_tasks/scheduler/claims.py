"""Claims: what beat makes. It leases due schedules (claim_due), writes the first attempt
of each slot to fire (materialise), tells beat how long it may sleep (seconds_until_due)
and gives a lease back (release_lease); manual runs and backfilled slots are queued here
too (queue_manual, queue_backfill). With attempts.py (one attempt's life) and sweeps.py
(beat's sweep, retention), the only modules that write agno_schedule_runs and the
schedules' lease: every statement is a named function, with the invariant it keeps
written above it.

Names: an attempt id is our agno_schedule_runs.id (`attempt_id`); `run_id` is only agno's
run id, the column that points at agno_runs.

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
import uuid
from typing import Any, Sequence

from sqlalchemy import (
    BigInteger, Connection, RowMapping, String, bindparam, case, column, func, or_, select, true, update,
)
from sqlalchemy.dialects import postgresql, sqlite

from kern_tasks import metrics
from kern_tasks.db.clock import db_now, epoch_now
from kern_tasks.db.tables import schedule_runs, schedules
from kern_tasks.dispatch import Dispatch, FireLabel, Route
from kern_tasks.errors import CronError
from kern_tasks.firing.backoff import DEFAULT_CAP_SECONDS
from kern_tasks.scheduler.kinds import Timetable, remaining_runs
from kern_tasks.scheduler.slots import DEFAULT_GRACE_S, jitter_offset, plan_slots, skip_overlapped

# The attempt lifecycle's one logger (claims and attempts log to it, as before the split).
log = logging.getLogger("kern_tasks.lifecycle")

LEASE_MARGIN_S = 60
# A due schedule whose previous run is still in flight (overlap "forbid") is looked at again
# this often: its run may end any moment, and its next slot should not wait long for beat.
LEASED_RECHECK_S = 0.1
LOST_ATTEMPT_MARGIN_S = 30
# A lost worker is not the target's fault: this many lost attempts per slot do not count
# against max_retries (more would retry for ever a call that kills every worker it runs on).
FREE_LOST_RETRIES = 1

_s, _r = schedules, schedule_runs


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


def label_of(schedule_name: str, run: Any) -> FireLabel:
    """How an attempt's message is shown (Flower): its schedule's name, and the slot,
    attempt and manual flag of its row (a row or mapping)."""
    return FireLabel(schedule=schedule_name, slot=run["scheduled_for"], attempt=run["attempt"], manual=run["manual"])


# INSERT ... ON CONFLICT DO NOTHING (a slot already materialised is left as it is), built
# once per dialect: retries insert on the fire path.
_INSERT = {
    "postgresql": postgresql.insert(_r).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(_r).on_conflict_do_nothing(),
}


def insert_attempts(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
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
    """Take up to `batch` due schedules for `token`; returns their rows, locked for this
    transaction (FOR UPDATE SKIP LOCKED on Postgres; BEGIN IMMEDIATE on SQLite). The lease
    itself is written by `materialise` in the same transaction, with next_run_at: each
    claimed row is updated once per tick, not twice (every update writes all of the
    row's indexes)."""
    return list(
        conn.execute(
            select(
                _s.c.id, _s.c.name, _s.c.cron_expr, _s.c.timezone, _s.c.next_run_at, _s.c.user_id,
                _s.c.misfire_policy, _s.c.overlap_policy, _s.c.catchup_window_seconds, _s.c.jitter_seconds,
                *_KIND_COLUMNS,
                _s.c.queue, _s.c.priority,
            )
            .where(
                _s.c.enabled == true(),
                _s.c.next_run_at <= now,
                or_(_s.c.locked_by.is_(None), _lease_is_stale(now)),
            )
            .order_by(_s.c.next_run_at)
            .limit(batch)
            .with_for_update(skip_locked=True)
        ).mappings()
    )  # fmt: skip


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


# materialise's advance of each claimed schedule: next_run_at, skips, the lease (kept or given back).
_ADVANCE = (
    update(_s)
    .where(_s.c.id == bindparam("b_id"))
    .values(
        next_run_at=bindparam("b_next"),
        skipped_slots=_s.c.skipped_slots + bindparam("b_skipped"),
        locked_by=bindparam("b_locked_by"),
        locked_at=bindparam("b_locked_at"),
    )
)


def _advance_many() -> Any:
    """Postgres: _ADVANCE for every claimed row in one statement (jsonb_to_recordset)."""
    given = func.jsonb_to_recordset(bindparam("b_rows", type_=postgresql.JSONB)).table_valued(
        column("id", String), column("next", BigInteger), column("skipped", BigInteger),
        column("locked_by", String), column("locked_at", BigInteger),
    ).render_derived(name="given", with_types=True)  # fmt: skip
    return (
        update(_s)
        .where(_s.c.id == given.c.id)
        .values(next_run_at=given.c.next, skipped_slots=_s.c.skipped_slots + given.c.skipped,
                locked_by=given.c.locked_by, locked_at=given.c.locked_at)  # fmt: skip
    )


_ADVANCE_MANY = _advance_many()


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
            dispatches.append(Dispatch(run["id"], countdown=countdown, route=route_of(row),
                                       label=label_of(row["name"], run)))
        changes.append(
            {
                "b_id": row["id"], "b_next": plan.next_run_at, "b_skipped": plan.skipped + len(expired),
                "b_locked_by": token if keep_lease else None, "b_locked_at": now_s if keep_lease else None,
            }
        )
    insert_attempts(conn, runs)
    insert_attempts(conn, skipped_runs)
    if changes:
        if conn.dialect.name == "postgresql":
            # One statement for the lot (the rows as one JSON array), ids in order so two
            # claims never wait on each other's rows crosswise.
            rows = [{key[2:]: value for key, value in change.items()} for change in changes]
            conn.execute(_ADVANCE_MANY, {"b_rows": sorted(rows, key=lambda row: row["id"])})
        else:
            conn.execute(_ADVANCE, changes)
        metrics.slots_skipped(sum(change["b_skipped"] for change in changes))
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
# A leased schedule whose lease may go back with one UPDATE: no slot fell due while its
# run was in flight (or the misfire policy keeps every slot, or it has no timetable).
NOTHING_DUE_MEANWHILE = or_(
    _s.c.next_run_at.is_(None), _s.c.next_run_at > epoch_now(),
    _s.c.misfire_policy == "all", (_s.c.cron_expr == "") & _s.c.interval_seconds.is_(None),
)  # fmt: skip
_RELEASE_IF_NOTHING_DUE = (
    update(_s)
    .where(_s.c.id == bindparam("b_id"), _s.c.locked_by == bindparam("b_token"), NOTHING_DUE_MEANWHILE)
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
        metrics.slots_skipped(skipped)
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
# publishes it, one at a time under overlap "forbid": sweeps._backfill_may_start).
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


def expired_reason(expires_after_seconds: int) -> str:
    return f"expired: its first attempt could not start within expires_after_seconds ({expires_after_seconds}) of its time"
