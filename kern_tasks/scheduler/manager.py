"""ScheduleManager: create, read, change and delete schedules from code.

    manager = ScheduleManager(db=db)
    manager.create(name="daily_digest", cron="0 9 * * 1-5",
                   endpoint="/workflows/daily-digest/runs", if_exists="update")

Promises:
- every write validates first and writes nothing on error (`ValidationError`);
- `next_run_at` is stored on every write that can move it, computed from the
  database's clock, strictly after "now";
- names are unique per owner, enforced by the database; `create(if_exists=...)` is
  safe when several processes start at once: exactly one row, and with "update" or
  "skip" nobody raises;
- `if_exists="update"` with unchanged arguments writes nothing (not even updated_at);
  it keeps the stored enabled state, as agno does;
- every method has an async twin (`acreate`, `aget`, ...) that runs it on a thread.
"""

from __future__ import annotations

import asyncio
import functools
import re
import uuid
from typing import Any, Awaitable, Callable, ParamSpec, TypeVar

from sqlalchemy import Connection, and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from kern_tasks.db import Database, db_now
from kern_tasks.db.tables import schedule_runs, schedules
from kern_tasks.errors import Conflict, NotFound
from kern_tasks.scheduler import cron as cron_engine
from kern_tasks.scheduler import lifecycle
from kern_tasks.scheduler import validation
from kern_tasks.scheduler.models import Page, Schedule, ScheduleRun

P = ParamSpec("P")
R = TypeVar("R")

# agno's run endpoints: /agents|teams|workflows/{id}/runs
RUN_ENDPOINT = re.compile(r"^/(agents|teams|workflows)/([^/]+)/runs/?$")
MAX_PAGE_LIMIT = 1000

# Fields whose change moves the next fire time.
TIMING_FIELDS = frozenset({"cron_expr", "timezone", "enabled"})


def compute_next_run_at(cron_expr: str, timezone: str, now: int) -> int | None:
    """The first slot strictly after `now`; None for agno's on-demand schedules (cron "")."""
    if not cron_expr:
        return None
    return cron_engine.next_run_epoch(cron_expr, timezone, now)


def target_of(endpoint: str) -> tuple[str | None, str | None]:
    """("agent", "my-agent") for "/agents/my-agent/runs", as agno stamps them."""
    match = RUN_ENDPOINT.match(endpoint)
    if not match:
        return None, None
    return match.group(1).rstrip("s"), match.group(2)


def _to_thread(method: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(method)
    async def twin(*args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(method, *args, **kwargs)

    twin.__doc__ = f"Async twin of `{method.__name__}` (runs it on a worker thread)."
    return twin


def _paging(limit: int, page: int) -> tuple[int, int]:
    limit = validation.bounded_int("limit", limit, 1, MAX_PAGE_LIMIT)
    page = validation.bounded_int("page", page, 1, 10**9)
    return limit, page


class ScheduleManager:
    """The schedules of one database. Thread-safe; cheap to construct."""

    def __init__(self, db: Database | None = None) -> None:
        self.db = db if db is not None else Database()

    # --- create ---------------------------------------------------------------

    def create(
        self,
        name: str,
        cron: str,
        endpoint: str,
        method: str = "POST",
        description: str | None = None,
        payload: dict[str, Any] | None = None,
        timezone: str = "UTC",
        timeout_seconds: int = 3600,
        max_retries: int = 0,
        retry_delay_seconds: int = 60,
        if_exists: str = "raise",
        *,
        enabled: bool = True,
        user_id: str | None = None,
        misfire_policy: str = "once",
        catchup_window_seconds: int = 3600,
        overlap_policy: str = "forbid",
        jitter_seconds: int = 0,
        provenance: dict[str, str] | None = None,
    ) -> Schedule:
        """Create a schedule, or per `if_exists` ("raise" | "update" | "skip") handle one
        that already has this name for this owner. Raises `Conflict` with "raise"."""
        mode = validation.if_exists(if_exists)
        given = validation.fields(
            {
                "name": name,
                "cron_expr": cron,
                "endpoint": endpoint,
                "method": method,
                "description": description,
                "payload": payload,
                "timezone": timezone,
                "timeout_seconds": timeout_seconds,
                "max_retries": max_retries,
                "retry_delay_seconds": retry_delay_seconds,
                "misfire_policy": misfire_policy,
                "catchup_window_seconds": catchup_window_seconds,
                "overlap_policy": overlap_policy,
                "jitter_seconds": jitter_seconds,
            }
        )
        owner = validation.fields({"user_id": user_id, "enabled": enabled, **(provenance or {})})
        try:
            with self.db.begin() as conn:
                return self._insert(conn, {**given, **owner})
        except IntegrityError:
            # The name is taken (possibly by a process that won a race a moment ago).
            pass
        with self.db.begin() as conn:
            existing = self._find_by_name(conn, given["name"], owner.get("user_id"), lock=True)
            if existing is None:  # deleted in between: one more try, as a plain create
                return self._insert(conn, {**given, **owner})
            if mode == "raise":
                raise Conflict(
                    f'a schedule named "{given["name"]}" already exists (id {existing.id}); '
                    'pass if_exists="update" to change it or "skip" to keep it'
                )
            if mode == "skip":
                return existing
            return self._apply_changes(conn, existing, given)

    def _insert(self, conn: Connection, values: dict[str, Any]) -> Schedule:
        now = db_now(conn)
        target_type, target_id = target_of(values["endpoint"])
        row = {
            "id": str(uuid.uuid4()),
            "target_type": target_type,
            "target_id": target_id,
            **values,
            "next_run_at": compute_next_run_at(values["cron_expr"], values["timezone"], now),
            "created_at": now,
            "updated_at": now,
        }
        conn.execute(insert(schedules).values(**row))
        return self._load(conn, row["id"])

    # --- read -----------------------------------------------------------------

    def get(self, schedule_id: str) -> Schedule:
        """The schedule with this id; raises `NotFound`."""
        with self.db.connect() as conn:
            return self._load(conn, schedule_id)

    def get_by_name(self, name: str, user_id: str | None = None) -> Schedule:
        """The schedule with this name for this owner (None: no owner); raises `NotFound`."""
        with self.db.connect() as conn:
            found = self._find_by_name(conn, name, user_id)
        if found is None:
            raise NotFound(f'no schedule named "{name}"')
        return found

    def list(
        self,
        enabled: bool | None = None,
        limit: int = 50,
        page: int = 1,
        user_id: str | None = None,
    ) -> Page[Schedule]:
        """Schedules, newest first, one page at a time, with the total count."""
        limit, page = _paging(limit, page)
        conditions = []
        if enabled is not None:
            conditions.append(schedules.c.enabled.is_(validation.enabled(enabled)))
        if user_id is not None:
            conditions.append(schedules.c.user_id == user_id)
        where = and_(True, *conditions)
        with self.db.connect() as conn:
            total = conn.execute(select(func.count()).select_from(schedules).where(where)).scalar_one()
            rows = conn.execute(
                select(schedules)
                .where(where)
                .order_by(schedules.c.created_at.desc(), schedules.c.id.desc())
                .limit(limit)
                .offset((page - 1) * limit)
            ).mappings()
            data = [Schedule.from_row(row) for row in rows]
        return Page(data=data, page=page, limit=limit, total_count=total)

    def runs(self, schedule_id: str, limit: int = 20, page: int = 1) -> Page[ScheduleRun]:
        """The schedule's attempts, newest first; raises `NotFound` for an unknown schedule."""
        limit, page = _paging(limit, page)
        where = schedule_runs.c.schedule_id == schedule_id
        with self.db.connect() as conn:
            self._load(conn, schedule_id)
            total = conn.execute(select(func.count()).select_from(schedule_runs).where(where)).scalar_one()
            rows = conn.execute(
                select(schedule_runs)
                .where(where)
                .order_by(
                    schedule_runs.c.created_at.desc(),
                    schedule_runs.c.attempt.desc(),
                    schedule_runs.c.id.desc(),
                )
                .limit(limit)
                .offset((page - 1) * limit)
            ).mappings()
            data = [ScheduleRun.from_row(row) for row in rows]
        return Page(data=data, page=page, limit=limit, total_count=total)

    def get_run(self, schedule_id: str, run_id: str) -> ScheduleRun:
        """One attempt of this schedule; raises `NotFound`."""
        with self.db.connect() as conn:
            row = conn.execute(
                select(schedule_runs).where(
                    schedule_runs.c.id == run_id, schedule_runs.c.schedule_id == schedule_id
                )
            ).mappings().first()
        if row is None:
            raise NotFound(f"schedule {schedule_id} has no run {run_id}")
        return ScheduleRun.from_row(row)

    # --- change ---------------------------------------------------------------

    def update(self, schedule_id: str, **fields: Any) -> Schedule:
        """Change fields (re-validated). `cron=` is accepted for `cron_expr=`.
        Recomputes next_run_at when cron, time zone or enabled change."""
        if "cron" in fields:
            fields["cron_expr"] = fields.pop("cron")
        changes = validation.fields(fields)
        try:
            with self.db.begin() as conn:
                current = self._load(conn, schedule_id, lock=True)
                return self._apply_changes(conn, current, changes)
        except IntegrityError as exc:
            raise Conflict(f'a schedule named "{changes.get("name")}" already exists for this owner') from exc

    def enable(self, schedule_id: str) -> Schedule:
        return self.update(schedule_id, enabled=True)

    def disable(self, schedule_id: str, reason: str | None = None) -> Schedule:
        fields: dict[str, Any] = {"enabled": False}
        if reason is not None:
            fields["disabled_reason"] = reason
        return self.update(schedule_id, **fields)

    def delete(self, schedule_id: str) -> None:
        """Delete the schedule and its runs; raises `NotFound`."""
        with self.db.begin() as conn:
            # Runs go explicitly too, for databases whose FK lacks the cascade.
            conn.execute(delete(schedule_runs).where(schedule_runs.c.schedule_id == schedule_id))
            deleted = conn.execute(delete(schedules).where(schedules.c.id == schedule_id)).rowcount
        if not deleted:
            raise NotFound(f"no schedule with id {schedule_id}")

    def trigger(self, schedule_id: str) -> ScheduleRun:
        """Ask for one run now, without moving the cron. Beat publishes it on its next
        tick. Repeated calls within the same second return the same run."""
        with self.db.begin() as conn:
            schedule = self._load(conn, schedule_id)
            run = lifecycle.queue_manual(conn, schedule_id, user_id=schedule.user_id, now=db_now(conn))
            return ScheduleRun.from_row(run)

    def _apply_changes(self, conn: Connection, current: Schedule, changes: dict[str, Any]) -> Schedule:
        """Write only what differs; nothing at all when nothing does."""
        diff = {key: value for key, value in changes.items() if getattr(current, key) != value}
        if not diff:
            return current
        merged = {**current.to_dict(), **diff}
        now = db_now(conn)
        timing = TIMING_FIELDS & diff.keys()
        # Disabling alone needs no new slot; it must work even on a row whose cron only
        # agno's croniter understands (such as "0 9 * * 5#3").
        if timing and (timing != {"enabled"} or diff["enabled"]):
            diff["next_run_at"] = compute_next_run_at(merged["cron_expr"], merged["timezone"], now)
        if diff.get("enabled") is True:
            diff["disabled_reason"] = None
        if "endpoint" in diff and current.managed_by in (None, "company"):
            diff["target_type"], diff["target_id"] = target_of(diff["endpoint"])
        diff["updated_at"] = now
        conn.execute(update(schedules).where(schedules.c.id == current.id).values(**diff))
        return self._load(conn, current.id)

    # --- rows -----------------------------------------------------------------

    def _load(self, conn: Connection, schedule_id: str, lock: bool = False) -> Schedule:
        query = select(schedules).where(schedules.c.id == schedule_id)
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).mappings().first()
        if row is None:
            raise NotFound(f"no schedule with id {schedule_id}")
        return Schedule.from_row(row)

    def _find_by_name(
        self, conn: Connection, name: str, user_id: str | None, lock: bool = False
    ) -> Schedule | None:
        owner = schedules.c.user_id.is_(None) if user_id is None else schedules.c.user_id == user_id
        query = select(schedules).where(schedules.c.name == name, owner)
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).mappings().first()
        return Schedule.from_row(row) if row is not None else None

    # --- async twins ------------------------------------------------------------

    get_runs = runs  # agno's name

    acreate = _to_thread(create)
    aget = _to_thread(get)
    aget_by_name = _to_thread(get_by_name)
    alist = _to_thread(list)
    aruns = _to_thread(runs)
    aget_runs = aruns
    aget_run = _to_thread(get_run)
    aupdate = _to_thread(update)
    aenable = _to_thread(enable)
    adisable = _to_thread(disable)
    adelete = _to_thread(delete)
    atrigger = _to_thread(trigger)
