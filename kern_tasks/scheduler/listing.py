"""The schedules as a person browses them (the dashboard): filtered, ordered by next fire
or by name, one keyset page at a time, with each one's last attempt; and a schedule's
failures and open attempts.

    page = browse(conn, Browse(status="failing", name="digest"), owner=None, limit=50)
    page.rows, page.next_cursor            # the next page: browse(..., after=page.next_cursor)
    last_attempts(conn, [s.id for s in page.rows])

Only a page is read, however many schedules there are: the order is an index's
(db/tables.py, migration 0014: the next-fire key with the id, alone or after user_id;
name with id), the page starts where the last one ended (`(key, id) > cursor`), and one
row more than the page says whether another follows. No count. A page's last attempts
are one index probe per schedule (schedule_id, created_at).

Owner scope as everywhere (scheduler/rows.py): `owner` None is every owner's rows; the
`Browse.owner` filter narrows within it ("" is the unowned rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, case, exists, literal_column, select, tuple_

from kern_tasks.db.tables import NO_NEXT_FIRE, schedule_runs, schedules
from kern_tasks.errors import ValidationError
from kern_tasks.scheduler.models import Schedule, ScheduleRun
from kern_tasks.scheduler.rows import owned_by

STATUSES = ("enabled", "paused", "failing", "in_flight")
SORTS = ("next_fire", "name")
FAILED = ("failed", "timeout")
OPEN = ("queued", "running")
MAX_LIMIT = 200
NAME_MAX = 200

# The index's expression (db/tables.py NEXT_FIRE_SQL), as a query says it.
NEXT_FIRE_KEY = case(
    (and_(schedules.c.enabled, schedules.c.next_run_at.is_not(None)), schedules.c.next_run_at),
    else_=literal_column(str(NO_NEXT_FIRE)),
)


@dataclass(frozen=True)
class Browse:
    """What to list: `status` one of STATUSES (None: all), `owner` exact (""): unowned),
    `name` a case-insensitive part of the name, `sort` one of SORTS."""

    status: str | None = None
    owner: str | None = None
    name: str | None = None
    sort: str = "next_fire"

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValidationError("status", f"must be one of {', '.join(STATUSES)}, got {self.status!r}")
        if self.sort not in SORTS:
            raise ValidationError("sort", f"must be one of {', '.join(SORTS)}, got {self.sort!r}")
        if self.name is not None and len(self.name) > NAME_MAX:
            raise ValidationError("name", f"at most {NAME_MAX} characters")


@dataclass(frozen=True)
class Listing:
    """One page: its rows, and the cursors of the pages after and before it (None: none)."""

    rows: list[Schedule]
    next_cursor: str | None
    prev_cursor: str | None


def _key(sort: str) -> Any:
    return NEXT_FIRE_KEY if sort == "next_fire" else schedules.c.name


def cursor_of(schedule: Schedule, sort: str) -> str:
    """The opaque position just at `schedule`: `<key>~<id>`."""
    if sort == "name":
        return f"{schedule.name}~{schedule.id}"
    key = schedule.next_run_at if schedule.enabled and schedule.next_run_at is not None else NO_NEXT_FIRE
    return f"{key}~{schedule.id}"


def _parse_cursor(cursor: str, sort: str, field: str) -> tuple[Any, str]:
    key, sep, schedule_id = cursor.rpartition("~")
    if not sep or not schedule_id:
        raise ValidationError(field, "is not a cursor this listing gave out")
    if sort == "name":
        return key, schedule_id
    try:
        return int(key), schedule_id
    except ValueError:
        raise ValidationError(field, "is not a cursor this listing gave out") from None


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def newest(column: str, schedule_id: Any) -> Any:
    """`column` of a schedule's newest attempt (rows.list_runs' order), as a scalar subquery
    (on an alias of its own, so it never correlates with an enclosing attempts query)."""
    runs = schedule_runs.alias("newest_attempt")
    return (
        select(runs.c[column])
        .where(runs.c.schedule_id == schedule_id)
        .order_by(runs.c.created_at.desc(), runs.c.scheduled_for.desc(), runs.c.attempt.desc(), runs.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def conditions(given: Browse, owner: str | None) -> list[ColumnElement[bool]]:
    where = owned_by(owner)  # the caller's scope, as every read by id has it (rows.py)
    if given.owner is not None:
        where.append(schedules.c.user_id.is_(None) if given.owner == "" else schedules.c.user_id == given.owner)
    if given.name:
        where.append(schedules.c.name.ilike(_like(given.name), escape="\\"))
    if given.status == "enabled":
        where.append(schedules.c.enabled.is_(True))
    elif given.status == "paused":
        where.append(schedules.c.enabled.is_(False))
    elif given.status == "failing":
        # From the failed attempts' side too (the status index), so a rare status is found
        # without walking every schedule; the newest attempt decides.
        failed_ids = select(schedule_runs.c.schedule_id).where(schedule_runs.c.status.in_(FAILED))
        where += [schedules.c.id.in_(failed_ids), newest("status", schedules.c.id).in_(FAILED)]
    elif given.status == "in_flight":
        where.append(exists().where(schedule_runs.c.schedule_id == schedules.c.id,
                                    schedule_runs.c.status.in_(OPEN)))
    return where


def browse(
    conn: Connection, given: Browse, *, owner: str | None, limit: int = 50,
    after: str | None = None, before: str | None = None,
) -> Listing:
    """One page of `given`'s schedules in its order: the first, the one after cursor
    `after`, or the one before cursor `before`."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError("limit", f"must be between 1 and {MAX_LIMIT}, got {limit}")
    if after is not None and before is not None:
        raise ValidationError("before", "give after or before, not both")
    # Paused schedules all have the same next-fire key (none to come): their order is the id's
    # (the primary key's index), not a walk past every enabled row in the next-fire index.
    by_id_only = given.sort == "next_fire" and given.status == "paused"
    columns = [schedules.c.id] if by_id_only else [_key(given.sort), schedules.c.id]
    where = conditions(given, owner)
    backwards = before is not None
    if after is not None or before is not None:
        parsed = _parse_cursor(after or before or "", given.sort, "after" if after else "before")
        mark, position = tuple_(*columns), tuple_(*(parsed[1:] if by_id_only else parsed))
        where.append(mark < position if backwards else mark > position)
    order = [column.desc() for column in columns] if backwards else [column.asc() for column in columns]
    query = select(schedules).where(and_(True, *where)).order_by(*order).limit(limit + 1)
    found = [Schedule.from_row(row) for row in conn.execute(query).mappings()]
    more = len(found) > limit
    found = found[:limit]
    if backwards:
        found.reverse()
    first_cursor = cursor_of(found[0], given.sort) if found else None
    last_cursor = cursor_of(found[-1], given.sort) if found else None
    if backwards:
        return Listing(found, next_cursor=last_cursor, prev_cursor=first_cursor if more else None)
    return Listing(found, next_cursor=last_cursor if more else None,
                   prev_cursor=first_cursor if after is not None and found else None)


def last_attempts(conn: Connection, schedule_ids: list[str]) -> dict[str, ScheduleRun]:
    """Each schedule's newest attempt, by schedule id (none for one that never ran)."""
    if not schedule_ids:
        return {}
    ids = select(newest("id", schedules.c.id)).where(schedules.c.id.in_(schedule_ids))
    rows = conn.execute(select(schedule_runs).where(schedule_runs.c.id.in_(ids))).mappings()
    return {row["schedule_id"]: ScheduleRun.from_row(row) for row in rows}


def failures(conn: Connection, schedule_id: str, limit: int = 20) -> list[ScheduleRun]:
    """The schedule's newest failed or timed-out attempts (retried ones included)."""
    query = (
        select(schedule_runs)
        .where(schedule_runs.c.schedule_id == schedule_id, schedule_runs.c.status.in_((*FAILED, "retrying")))
        .order_by(schedule_runs.c.created_at.desc(), schedule_runs.c.attempt.desc(), schedule_runs.c.id.desc())
        .limit(limit)
    )
    return [ScheduleRun.from_row(row) for row in conn.execute(query).mappings()]


def open_attempts(conn: Connection, schedule_id: str) -> int:
    """How many of the schedule's attempts are queued or running (the partial index's rows)."""
    query = select(schedule_runs.c.id).where(
        schedule_runs.c.schedule_id == schedule_id, schedule_runs.c.status.in_(OPEN)).limit(100)
    return len(conn.execute(query).all())


# An attempt is made before the run it starts, by at most its queue wait and backoff: the
# attempts of a run are looked for in the hour before it (the created_at index's range).
RUN_LOOKBACK_S = 3600


def attempts_of_run(conn: Connection, run_id: str, started_at: int, owner: str | None,
                    limit: int = 5) -> list[tuple[ScheduleRun, str]]:
    """The attempts (newest first) that started agno's run `run_id` at `started_at`, of
    `owner` when given, each with its schedule's name: one range of the created_at index,
    then the run_id filter, so a run's page names its schedule without a scan of the whole
    history."""
    query = select(schedule_runs, schedules.c.name.label("schedule_name")).join(
        schedules, schedules.c.id == schedule_runs.c.schedule_id).where(
        schedule_runs.c.created_at >= started_at - RUN_LOOKBACK_S, schedule_runs.c.created_at <= started_at + 60,
        schedule_runs.c.run_id == run_id)
    if owner is not None:
        query = query.where(schedule_runs.c.user_id == owner)
    query = query.order_by(schedule_runs.c.created_at.desc(), schedule_runs.c.id.desc()).limit(limit)
    return [(ScheduleRun.from_row(row), row["schedule_name"]) for row in conn.execute(query).mappings()]
