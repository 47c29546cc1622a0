"""The statements ScheduleManager composes on agno_schedules (and the reads of a
schedule's attempts): find by id or name, list, insert, and write a change with the
columns it moves. No rules here beyond what a row implies; the manager decides what may
be written.

Owner scope, as agno's adapters scope it: by id, `user_id=None` is any owner and a row
of another owner is not found; by name, `user_id=None` is the unowned bucket (names are
unique per owner).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, delete, func, insert, select, update

from kern_tasks.db import db_now
from kern_tasks.db.tables import schedule_runs, schedules
from kern_tasks.errors import NotFound
from kern_tasks.scheduler import spec, validation
from kern_tasks.scheduler.kinds import Timetable
from kern_tasks.scheduler.endpoints import target_of
from kern_tasks.scheduler.models import Schedule, ScheduleRun

# Fields whose change moves the next fire time.
TIMING_FIELDS = frozenset({"timezone", "enabled", *spec.TIMING_FIELDS})


def compute_next_run_at(values: Mapping[str, Any], now: int) -> int | None:
    """The first slot strictly after `now` of a schedule's timing `values` (kinds.Timetable),
    a one-off's slot up to RUN_AT_PAST_GRACE_S old included; None when no slot is left
    and for agno's on-demand schedules (cron "")."""
    table = Timetable.of(values)
    if table.run_at is not None:
        return table.next_after(now - spec.RUN_AT_PAST_GRACE_S - 1)
    return table.next_after(now)


def missing(schedule_id: str) -> NotFound:
    return NotFound(f"no schedule with id {schedule_id}")


def owned_by(user_id: str | None) -> list[ColumnElement[bool]]:
    """agno's owner scope by id: None is any owner."""
    return [] if user_id is None else [schedules.c.user_id == user_id]


def schedule_filter(enabled: bool | None, user_id: str | None) -> ColumnElement[bool]:
    conditions = owned_by(user_id)
    if enabled is not None:
        conditions.append(schedules.c.enabled.is_(validation.enabled(enabled)))
    return and_(True, *conditions)


def run_filter(schedule_id: str, user_id: str | None) -> ColumnElement[bool]:
    """A schedule's attempts; with `user_id`, those stamped with that owner (agno's filter)."""
    owner = [] if user_id is None else [schedule_runs.c.user_id == user_id]
    return and_(schedule_runs.c.schedule_id == schedule_id, *owner)


def find(conn: Connection, schedule_id: str, user_id: str | None = None, lock: bool = False) -> Schedule | None:
    query = select(schedules).where(schedules.c.id == schedule_id, *owned_by(user_id))
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    return Schedule.from_row(row) if row is not None else None


def load(conn: Connection, schedule_id: str, user_id: str | None = None, lock: bool = False) -> Schedule:
    """`find`, raising `NotFound`."""
    found = find(conn, schedule_id, user_id, lock)
    if found is None:
        raise missing(schedule_id)
    return found


def find_by_name(conn: Connection, name: str, user_id: str | None, lock: bool = False) -> Schedule | None:
    owner = schedules.c.user_id.is_(None) if user_id is None else schedules.c.user_id == user_id
    query = select(schedules).where(schedules.c.name == name, owner)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    return Schedule.from_row(row) if row is not None else None


def count(conn: Connection, where: ColumnElement[bool], table: Any = schedules) -> int:
    return int(conn.execute(select(func.count()).select_from(table).where(where)).scalar_one())


def list_schedules(conn: Connection, where: ColumnElement[bool], limit: int | None, page: int) -> list[Schedule]:
    """Newest first (created_at, then id, as agno orders them); every row when limit is None."""
    query = select(schedules).where(where).order_by(schedules.c.created_at.desc(), schedules.c.id.desc())
    if limit is not None:
        query = query.limit(limit).offset((page - 1) * limit)
    return [Schedule.from_row(row) for row in conn.execute(query).mappings()]


def list_runs(conn: Connection, where: ColumnElement[bool], limit: int, page: int) -> list[ScheduleRun]:
    """Newest first (slots made at once, as by a backfill, newest slot first); a slot's
    retries after its first attempt."""
    query = (
        select(schedule_runs)
        .where(where)
        .order_by(schedule_runs.c.created_at.desc(), schedule_runs.c.scheduled_for.desc(),
                  schedule_runs.c.attempt.desc(), schedule_runs.c.id.desc())
        .limit(limit)
        .offset((page - 1) * limit)
    )
    return [ScheduleRun.from_row(row) for row in conn.execute(query).mappings()]


def insert_schedule(conn: Connection, values: dict[str, Any]) -> Schedule:
    """A new row of checked `values`, with its id, target, next_run_at and times."""
    now = db_now(conn)
    target_type, target_id = target_of(values["endpoint"])
    row = {
        "id": str(uuid.uuid4()),
        "target_type": target_type,
        "target_id": target_id,
        **values,
        "next_run_at": compute_next_run_at({**values, "created_at": now}, now),
        "created_at": now,
        "updated_at": now,
    }
    conn.execute(insert(schedules).values(**row))
    return load(conn, row["id"])


def write_changes(conn: Connection, current: Schedule, changes: dict[str, Any]) -> Schedule:
    """Write only what differs from `current`, with the columns that follows from it
    (next_run_at, disabled_reason, target); nothing at all when nothing differs."""
    diff = {key: value for key, value in changes.items() if getattr(current, key) != value}
    if not diff:
        return current
    merged = {**current.to_dict(), **diff}
    now = db_now(conn)
    timing = TIMING_FIELDS & diff.keys()
    # Disabling alone needs no new slot; it must work even on a row whose cron only
    # agno's croniter understands (such as "0 9 * * 5#3").
    if timing and (timing != {"enabled"} or diff["enabled"]):
        diff["next_run_at"] = compute_next_run_at(merged, now)
    if diff.get("enabled") is True:
        diff["disabled_reason"] = None
    if "endpoint" in diff and current.managed_by in (None, "company"):
        diff["target_type"], diff["target_id"] = target_of(diff["endpoint"])
    diff["updated_at"] = now
    conn.execute(update(schedules).where(schedules.c.id == current.id).values(**diff))
    return load(conn, current.id)


def delete_schedule(conn: Connection, schedule_id: str) -> bool:
    """Delete the schedule and its attempts; True when there was one."""
    # Attempts go explicitly too, for databases whose FK lacks the cascade.
    conn.execute(delete(schedule_runs).where(schedule_runs.c.schedule_id == schedule_id))
    return bool(conn.execute(delete(schedules).where(schedules.c.id == schedule_id)).rowcount)


def stamp(conn: Connection, schedule_id: str, values: dict[str, Any]) -> bool:
    """Write checked provenance `values` (and updated_at); True when the schedule exists."""
    stamped = conn.execute(
        update(schedules).where(schedules.c.id == schedule_id).values(**values, updated_at=db_now(conn))
    ).rowcount
    return bool(stamped)


def find_run(conn: Connection, schedule_id: str, attempt_id: str) -> ScheduleRun | None:
    """One attempt (our agno_schedule_runs.id) of this schedule, or None."""
    row = conn.execute(
        select(schedule_runs).where(schedule_runs.c.id == attempt_id, schedule_runs.c.schedule_id == schedule_id)
    ).mappings().first()
    return ScheduleRun.from_row(row) if row is not None else None
