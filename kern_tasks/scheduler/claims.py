"""The SQL that coordinates beat replicas: claim, materialise, wake, release, sweep.

Every statement that takes, keeps or gives back a schedule's lease is here, with the
invariant it keeps written above it. The lease is two columns of agno_schedules:
`locked_by` (a token unique to one claim) and `locked_at` (the database time of it).

A claim may take a schedule when all of these hold:
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
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import Connection, RowMapping, bindparam, case, func, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite

from kern_tasks.db.clock import db_now, epoch_now
from kern_tasks.db.tables import schedule_runs, schedules
from kern_tasks.errors import CronError
from kern_tasks.firing.backoff import DEFAULT_CAP_SECONDS
from kern_tasks.scheduler.slots import DEFAULT_GRACE_S, jitter_offset, plan_slots, skip_overlapped

log = logging.getLogger("kern_tasks.claims")

LEASE_MARGIN_S = 60
LEASED_RECHECK_S = 0.5

_s, _r = schedules, schedule_runs


@dataclass(frozen=True)
class Dispatch:
    """A run attempt to hand to the broker: `kern.fire(run_id)`, held `countdown` seconds."""

    run_id: str
    countdown: float = 0.0


def new_lease_token(replica: str) -> str:
    return f"{replica}/{uuid.uuid4().hex[:12]}"


def lease_budget(timeout_seconds: Any, max_retries: Any) -> Any:
    """How long a lease lasts: every attempt's timeout, every retry wait at the backoff cap,
    and a margin. At least `backoff.retry_budget_seconds` of the slot (a test checks it).
    Works on ints and on SQL columns alike, so the claim's SQL uses this very formula."""
    return timeout_seconds * (max_retries + 1) + max_retries * DEFAULT_CAP_SECONDS + LEASE_MARGIN_S


def _lease_is_stale(now: int) -> Any:
    budget = lease_budget(_s.c.timeout_seconds, _s.c.max_retries)
    return or_(_s.c.locked_at.is_(None), _s.c.locked_at <= now - budget)


def _insert_runs(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert run rows; a slot already materialised is left as it is (unique slot index)."""
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(_r).on_conflict_do_nothing(), list(rows))


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
        )
    )
    return list(claimed.mappings())


# Invariants, in the claim's transaction:
# - a slot is materialised at most once: unique (schedule_id, scheduled_for, manual, attempt),
#   and next_run_at moves past every slot materialised or skipped;
# - overlap "forbid" keeps the lease (released by the slot's last attempt); "allow", and a
#   claim that fires nothing, give it back at once.
def materialise(
    conn: Connection, claimed: Sequence[RowMapping], *, token: str, now: float, grace_s: int = DEFAULT_GRACE_S
) -> list[Dispatch]:
    """Insert the first attempt of each slot to fire, advance next_run_at, count skips."""
    now_s = int(now)
    runs: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    dispatches: list[Dispatch] = []
    for row in claimed:
        try:
            plan = plan_slots(
                cron_expr=row["cron_expr"], timezone=row["timezone"], next_run_at=row["next_run_at"], now=now_s,
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
        keep_lease = row["overlap_policy"] == "forbid" and bool(plan.fire)
        for slot in plan.fire:
            offset = jitter_offset(row["id"], slot, row["jitter_seconds"])
            run_id = str(uuid.uuid4())
            runs.append(
                {
                    "id": run_id, "schedule_id": row["id"], "attempt": 1, "status": "queued",
                    "scheduled_for": slot, "manual": False, "not_before": slot + offset if offset else None,
                    "enqueued_at": now_s, "lease_token": token if keep_lease else None,
                    "user_id": row["user_id"], "created_at": now_s,
                }
            )
            dispatches.append(Dispatch(run_id, countdown=max(0.0, slot + offset - now) if offset else 0.0))
        changes.append(
            {
                "b_id": row["id"], "b_next": plan.next_run_at, "b_skipped": plan.skipped,
                "b_locked_by": token if keep_lease else None, "b_locked_at": now_s if keep_lease else None,
            }
        )
    _insert_runs(conn, runs)
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
            func.min(
                case((_s.c.next_run_at > int(now), _s.c.next_run_at), else_=None)
            ),
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
            _s.c.misfire_policy == "all", _s.c.cron_expr == "",
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
        select(_s.c.cron_expr, _s.c.timezone, _s.c.next_run_at, _s.c.misfire_policy)
        .where(_s.c.id == schedule_id, _s.c.locked_by == token)
        .with_for_update()
    ).mappings().first()
    if row is None:
        return False
    next_run_at, skipped = row["next_run_at"], 0
    if row["misfire_policy"] != "all" and row["cron_expr"]:
        try:
            next_run_at, skipped = skip_overlapped(
                row["cron_expr"], row["timezone"], row["next_run_at"], now, row["misfire_policy"]
            )
        except CronError:
            pass  # beat disables such a row at its next claim
    if skipped:
        log.warning("schedule %s: %d slot(s) skipped while its previous run was in flight", schedule_id, skipped)
    conn.execute(
        update(_s)
        .where(_s.c.id == schedule_id, _s.c.locked_by == token)
        .values(
            locked_by=None, locked_at=None, next_run_at=next_run_at,
            skipped_slots=_s.c.skipped_slots + skipped,
        )
    )
    return True


# Invariant: every queued attempt whose time has come is in the broker at least once.
# Publishing twice is harmless: an attempt leaves "queued" exactly once (start_attempt).
def _unpublished(now: int) -> Any:
    """Queued attempts never handed to the broker whose time has come."""
    return _r.c.enqueued_at.is_(None) & or_(_r.c.not_before.is_(None), _r.c.not_before <= now)


def _maybe_lost(now: int, republish_after_s: int) -> Any:
    """Queued attempts handed over long enough ago that their message may be gone."""
    lost_before = now - republish_after_s
    return (_r.c.enqueued_at <= lost_before) & or_(_r.c.not_before.is_(None), _r.c.not_before <= lost_before)


def count_maybe_lost(conn: Connection, *, now: int, republish_after_s: int) -> int:
    """How many queued attempts have waited in the broker longer than republish_after_s."""
    return conn.execute(
        select(func.count()).select_from(_r).where(_r.c.status == "queued", _maybe_lost(now, republish_after_s))
    ).scalar_one()


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
    rows = conn.execute(
        update(_r).where(_r.c.id.in_(orphans.scalar_subquery())).values(enqueued_at=now).returning(_r.c.id)
    )
    return [Dispatch(run_id) for run_id in rows.scalars()]
