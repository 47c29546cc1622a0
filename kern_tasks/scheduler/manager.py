"""ScheduleManager: create, read, change and delete schedules from code.

    manager = ScheduleManager(db=db)
    manager.create(name="daily_digest", cron="0 9 * * 1-5",
                   endpoint="/workflows/daily-digest/runs", if_exists="update")

Two APIs on one class (README.md, "Schedules from code", has the table):
- agno 3.1's, with its names, parameters, defaults and return conventions, so agno code
  runs unchanged: `create`, `list` and `list_all` (plain lists), `get` (None when
  missing), `update`, `enable`, `disable` (None when missing), `delete` (a bool),
  `get_runs` (a plain list), `stamp_provenance`, `trigger`, `close`, and their async
  twins. `user_id` scopes a call to one owner exactly as agno's does: a row of another
  owner is "missing"; None means any owner (in `create` it is the owner, None: unowned);
  `get_runs(user_id=)` keeps the attempts stamped with that owner.
- ours, under names agno does not use: `list_page` and `runs` (pages with the total),
  `get_or_raise`, `get_by_name`, `get_run` (raise `NotFound`), `trigger_run` (queues a
  run and returns it), `next_slots` (the coming slots of any kind), `backfill` (queues a
  range's missing slots), and our options of `create` (misfire_policy, overlap_policy,
  queue, priority, and the kinds: interval_seconds, run_at, ...).

Promises:
- every write validates first and writes nothing on error (`ValidationError`);
- with an endpoint policy (scheduler/endpoints.py), a schedule is refused a route the
  policy does not serve on create, on a change of endpoint or method, when it is
  enabled and when it is triggered, with the policy's `ValidationError`: every way in
  (Python, HTTP, SchedulerTools) gets the same check and the same message;
- a trigger needs an enabled schedule (`ScheduleDisabled`);
- `next_run_at` is stored on every write that can move it, computed from the
  database's clock, strictly after "now";
- names are unique per owner, enforced by the database; a taken name raises `Conflict`
  (a ValueError, as agno's); `create(if_exists=...)` is safe when several processes
  start at once: exactly one row, and with "update" or "skip" nobody raises;
- `if_exists="update"` with unchanged arguments writes nothing (not even updated_at);
  it keeps the stored enabled state, as agno does;
- every method has an async twin (`acreate`, `aget`, ...) that runs it on a thread.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime
from typing import Any, Awaitable, Callable, ParamSpec, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from kern_tasks.db import Database, db_now
from kern_tasks.db.tables import schedule_runs
from kern_tasks.errors import Conflict, NotFound, ScheduleDisabled, ValidationError
from kern_tasks.scheduler import claims, retention, rows
from kern_tasks.scheduler import spec, validation
from kern_tasks.scheduler.endpoints import EndpointPolicy
from kern_tasks.scheduler.kinds import Timetable, next_slots
from kern_tasks.scheduler.models import Page, Schedule, ScheduleRun
from kern_tasks.scheduler.spec import DEFAULTS
from kern_tasks.scheduler import slots
from kern_tasks.scheduler.kinds import Timetable
from kern_tasks.scheduler.backfill import MAX_BACKFILL_SLOTS, Backfill, Instant, backfill_range

P = ParamSpec("P")
R = TypeVar("R")

MAX_PAGE_LIMIT = 1000

# What `create(provenance=)` may carry (agno's list); `stamp_provenance` may also write
# the updated_by_* pair.
CREATE_PROVENANCE = frozenset(
    {"managed_by", "target_type", "target_id", "created_by_run_id", "created_by_session_id"}
)
STAMPABLE_PROVENANCE = CREATE_PROVENANCE | {"updated_by_run_id", "updated_by_session_id"}


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


# What a schedule's other kind fields hold (cron_expr is NOT NULL: agno's column).
_NO_KIND: dict[str, Any] = {"cron_expr": "", "interval_seconds": None, "run_at": None}


def _checked_timing(values: dict[str, Any]) -> dict[str, Any]:
    """The timing fields of a create checked (None: not given), the kinds not given empty."""
    checked = validation.fields({key: value for key, value in values.items() if value is not None})
    return {**{key: None for key in values}, **_NO_KIND, **checked}


def _check_times(conn: Connection, values: dict[str, Any], changed: Any) -> None:
    """The rules of check_kind that need the clock (the database's), for the fields given."""
    if {"run_at", "end_at"} & set(changed) and (values.get("run_at") is not None or values.get("end_at") is not None):
        spec.check_kind(values, now=db_now(conn), changed=changed)


def _provenance(given: dict[str, str] | None, allowed: frozenset[str]) -> dict[str, Any]:
    if given is None:
        return {}
    if not isinstance(given, dict) or not set(given) <= allowed:
        keys = sorted(given) if isinstance(given, dict) else given
        raise ValidationError("provenance", f"may only carry {', '.join(sorted(allowed))}; got {keys!r}")
    return validation.fields(given)


class ScheduleManager:
    """The schedules of one database. Thread-safe; cheap to construct.

    `db=None` means `Database()`: the database `Settings.from_env()` names (the embedded
    SQLite file when KERN_DATABASE_URL is unset). The first use migrates a database that
    lacks our tables, unless its auto-upgrade is off (then `NotMigrated`).

    `endpoint_policy` decides which routes a schedule may call (scheduler/endpoints.py);
    None accepts any path. AgentOS hands its manager the routes it serves.
    """

    def __init__(self, db: Database | None = None, *, endpoint_policy: EndpointPolicy | None = None) -> None:
        self._owns_db = db is None
        self.db = db if db is not None else Database()
        self.endpoint_policy = endpoint_policy

    def close(self) -> None:
        """Release what this manager holds: the engine of a Database it made itself
        (db=None). A Database passed in stays open; it is its owner's to dispose."""
        if self._owns_db:
            self.db.dispose()

    # --- create ---------------------------------------------------------------

    def create(
        self,
        name: str,
        cron: str | None = None,
        endpoint: str | None = None,
        method: str = DEFAULTS["method"],
        description: str | None = None,
        payload: dict[str, Any] | None = None,
        timezone: str = DEFAULTS["timezone"],
        timeout_seconds: int = DEFAULTS["timeout_seconds"],
        max_retries: int = DEFAULTS["max_retries"],
        retry_delay_seconds: int = DEFAULTS["retry_delay_seconds"],
        if_exists: str = "raise",
        user_id: str | None = None,
        provenance: dict[str, str] | None = None,
        enabled_on_create: bool = DEFAULTS["enabled"],
        *,
        misfire_policy: str = DEFAULTS["misfire_policy"],
        catchup_window_seconds: int = DEFAULTS["catchup_window_seconds"],
        overlap_policy: str = DEFAULTS["overlap_policy"],
        jitter_seconds: int = DEFAULTS["jitter_seconds"],
        interval_seconds: int | None = None,
        run_at: int | datetime | None = None,
        start_at: int | datetime | None = None,
        end_at: int | datetime | None = None,
        max_runs: int | None = None,
        expires_after_seconds: int | None = None,
        queue: str | None = DEFAULTS["queue"],
        priority: int | None = DEFAULTS["priority"],
        alert_after_failures: int | None = DEFAULTS["alert_after_failures"],
    ) -> Schedule:
        """Create a schedule (agno's parameters, in agno's order, then our options).

        When it runs: exactly one of `cron`, `interval_seconds` (every N seconds from
        start_at, else from now) or `run_at` (once; epoch seconds or an aware datetime),
        optionally within `start_at`/`end_at`, at most `max_runs` times; a slot not
        started within `expires_after_seconds` of its time is skipped (kinds.py). Errors
        name the field (spec.check_kind).

        `if_exists` says what to do when this owner already has a schedule by this name:
        "raise" raises `Conflict` (a ValueError), "skip" returns it unchanged, "update"
        writes what differs and keeps its stored enabled state. `user_id` owns the new
        schedule (None: unowned; names are unique per owner). `enabled_on_create` is the
        enabled state of a new row, written with the insert. `provenance` may carry
        managed_by, target_type, target_id, created_by_run_id, created_by_session_id.
        With an endpoint policy, the endpoint must be a route it serves."""
        mode = validation.if_exists(if_exists)
        timing = _checked_timing(
            {
                "cron_expr": cron, "interval_seconds": interval_seconds, "run_at": run_at, "start_at": start_at,
                "end_at": end_at, "max_runs": max_runs,
            }
        )
        given = validation.fields(
            {
                "name": name,
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
                "expires_after_seconds": expires_after_seconds,
                "queue": queue,
                "priority": priority,
                "alert_after_failures": alert_after_failures,
            }
        )
        given.update(timing)
        spec.check_kind(given)
        if not isinstance(enabled_on_create, bool):
            raise ValidationError("enabled_on_create", "must be true or false")
        owner = validation.fields(
            {"user_id": user_id, "enabled": enabled_on_create, **_provenance(provenance, CREATE_PROVENANCE)}
        )
        given["method"], given["endpoint"] = self.check_endpoint(given["method"], given["endpoint"])
        try:
            with self.db.begin() as conn:
                _check_times(conn, given, given.keys())
                return rows.insert_schedule(conn, {**given, **owner})
        except IntegrityError:
            # The name is taken (possibly by a process that won a race a moment ago).
            pass
        with self.db.begin() as conn:
            existing = rows.find_by_name(conn, given["name"], owner.get("user_id"), lock=True)
            if existing is None:  # deleted in between: one more try, as a plain create
                _check_times(conn, given, given.keys())
                return rows.insert_schedule(conn, {**given, **owner})
            if mode == "raise":
                raise Conflict(
                    f'a schedule named "{given["name"]}" already exists (id {existing.id}); '
                    'pass if_exists="update" to change it or "skip" to keep it'
                )
            if mode == "skip":
                return existing
            return self._apply_changes(conn, existing, given)

    # --- read -----------------------------------------------------------------

    def get(self, schedule_id: str, user_id: str | None = None) -> Schedule | None:
        """The schedule with this id, or None when there is none or it is not `user_id`'s."""
        with self.db.connect() as conn:
            return rows.find(conn, schedule_id, user_id)

    def get_or_raise(self, schedule_id: str, user_id: str | None = None) -> Schedule:
        """`get` that raises `NotFound` instead of answering None."""
        found = self.get(schedule_id, user_id)
        if found is None:
            raise rows.missing(schedule_id)
        return found

    def get_by_name(self, name: str, user_id: str | None = None) -> Schedule:
        """The schedule with this name for this owner (None: no owner); raises `NotFound`."""
        with self.db.connect() as conn:
            found = rows.find_by_name(conn, name, user_id)
        if found is None:
            raise NotFound(f'no schedule named "{name}"')
        return found

    def list(
        self, enabled: bool | None = None, limit: int = 100, page: int = 1, user_id: str | None = None
    ) -> list[Schedule]:
        """One page of schedules, newest first, as a plain list (`list_page` adds the total)."""
        limit, page = _paging(limit, page)
        with self.db.connect() as conn:
            return rows.list_schedules(conn, rows.schedule_filter(enabled, user_id), limit, page)

    def list_all(
        self, enabled: bool | None = None, user_id: str | None = None, *, raise_on_error: bool = True
    ) -> list[Schedule]:
        """Every schedule, newest first, read in one statement. A database error raises;
        with raise_on_error=False it answers [] instead, as agno's does."""
        try:
            with self.db.connect() as conn:
                return rows.list_schedules(conn, rows.schedule_filter(enabled, user_id), None, 1)
        except SQLAlchemyError:
            if raise_on_error:
                raise
            return []

    def list_page(
        self, enabled: bool | None = None, limit: int = 50, page: int = 1, user_id: str | None = None
    ) -> Page[Schedule]:
        """Schedules, newest first, one page at a time, with the total count."""
        limit, page = _paging(limit, page)
        where = rows.schedule_filter(enabled, user_id)
        with self.db.connect() as conn:
            total = rows.count(conn, where)
            data = rows.list_schedules(conn, where, limit, page)
        return Page(data=data, page=page, limit=limit, total_count=total)

    def get_runs(
        self, schedule_id: str, limit: int = 20, page: int = 1, user_id: str | None = None
    ) -> list[ScheduleRun]:
        """One page of the schedule's attempts, newest first, as a plain list: [] for an
        unknown schedule. With `user_id`, only the attempts stamped with that owner (agno's
        filter; an attempt carries its schedule's owner)."""
        limit, page = _paging(limit, page)
        with self.db.connect() as conn:
            return rows.list_runs(conn, rows.run_filter(schedule_id, user_id), limit, page)

    def runs(
        self, schedule_id: str, limit: int = 20, page: int = 1, user_id: str | None = None
    ) -> Page[ScheduleRun]:
        """The schedule's attempts, newest first, with the total count; raises `NotFound`
        for an unknown schedule (or one that is not `user_id`'s)."""
        limit, page = _paging(limit, page)
        where = rows.run_filter(schedule_id, None)
        with self.db.connect() as conn:
            rows.load(conn, schedule_id, user_id)
            total = rows.count(conn, where, schedule_runs)
            data = rows.list_runs(conn, where, limit, page)
        return Page(data=data, page=page, limit=limit, total_count=total)

    def get_run(self, schedule_id: str, attempt_id: str) -> ScheduleRun:
        """One attempt of this schedule, by our attempt id (agno_schedule_runs.id; agno's API
        calls it the run id); raises `NotFound`."""
        with self.db.connect() as conn:
            found = rows.find_run(conn, schedule_id, attempt_id)
        if found is None:
            raise NotFound(f"schedule {schedule_id} has no run {attempt_id}")
        return found

    def next_slots(
        self, schedule_id: str, count: int = 5, user_id: str | None = None, *, after: datetime | None = None
    ) -> list[datetime]:
        """The schedule's coming slots (any kind), aware, in its zone: up to `count`
        strictly after `after` (default: the database's now), fewer when its window ends,
        its one-off has passed or max_runs leaves fewer (the slots fired so far are
        counted). The timetable's answer, whether or not the schedule is enabled.
        Raises `NotFound`."""
        count = validation.bounded_int("count", count, 1, MAX_PAGE_LIMIT)
        with self.db.connect() as conn:
            schedule = rows.load(conn, schedule_id, user_id)
            fired = claims.count_fired(conn, schedule_id) if schedule.max_runs is not None else 0
            if after is None:
                after = datetime.fromtimestamp(db_now(conn), UTC)
        table = Timetable.of(schedule.to_dict())
        return next_slots(table, after, count, max_runs=schedule.max_runs, fired=fired)

    # --- change ---------------------------------------------------------------

    def update(self, schedule_id: str, user_id: str | None = None, **fields: Any) -> Schedule | None:
        """Change fields (re-validated; `cron=` is accepted for `cron_expr=`); None when the
        schedule is missing or not `user_id`'s (`user_id` selects the row, it never
        reassigns the owner). Recomputes next_run_at when its timing, time zone or enabled
        change. Giving a kind (cron, interval_seconds, run_at) switches the schedule to it;
        None clears start_at, end_at, max_runs or expires_after_seconds. A name this owner
        already uses raises `Conflict`."""
        if "cron" in fields:
            fields["cron_expr"] = fields.pop("cron")
        changes = validation.fields(fields)
        try:
            with self.db.begin() as conn:
                current = rows.find(conn, schedule_id, user_id, lock=True)
                if current is None:
                    return None
                return self._apply_changes(conn, current, changes)
        except IntegrityError as exc:
            raise Conflict(f'a schedule named "{changes.get("name")}" already exists for this owner') from exc

    def enable(self, schedule_id: str, user_id: str | None = None) -> Schedule | None:
        """Enable it, its next run computed from now; None when missing. With an endpoint
        policy, its endpoint must still be served (`ValidationError` otherwise)."""
        return self.update(schedule_id, user_id, enabled=True)

    def disable(
        self, schedule_id: str, user_id: str | None = None, *, reason: str | None = None
    ) -> Schedule | None:
        """Disable it (`reason` is kept as disabled_reason); None when missing."""
        fields: dict[str, Any] = {"enabled": False}
        if reason is not None:
            fields["disabled_reason"] = reason
        return self.update(schedule_id, user_id, **fields)

    def delete(self, schedule_id: str, user_id: str | None = None) -> bool:
        """Delete the schedule and its runs; False when it is missing or not `user_id`'s."""
        with self.db.begin() as conn:
            if rows.find(conn, schedule_id, user_id, lock=True) is None:
                return False
            return rows.delete_schedule(conn, schedule_id)

    def stamp_provenance(self, schedule_id: str, **provenance: Any) -> bool:
        """Write provenance columns (managed_by, target_type, target_id, created_by_*,
        updated_by_*), the trusted path agno keeps for control planes; True when the
        schedule exists. Any other column is a `ValidationError`."""
        values = _provenance(provenance, STAMPABLE_PROVENANCE)
        with self.db.begin() as conn:
            return rows.stamp(conn, schedule_id, values)

    def trigger(self, schedule_id: str) -> None:
        """agno's signature: queue one run now, answer nothing. (agno's own manager only
        logs that it cannot; this one can.) Raises as `trigger_run` does."""
        self.trigger_run(schedule_id)

    def trigger_run(self, schedule_id: str, *, user_id: str | None = None) -> ScheduleRun:
        """Queue one run now, without moving the cron, and return it. Beat publishes it on
        its next tick. Repeated calls within the same second return the same run. Raises
        `NotFound` (missing, or not `user_id`'s), `ScheduleDisabled`, and, with an endpoint
        policy, `ValidationError` when its endpoint is no longer served."""
        with self.db.begin() as conn:
            schedule = rows.load(conn, schedule_id, user_id)
            self._require_runnable(schedule)
            run = claims.queue_manual(conn, schedule_id, user_id=schedule.user_id, now=db_now(conn))
            return ScheduleRun.from_row(run)

    def backfill(
        self, schedule_id: str, start: Instant, end: Instant, *, user_id: str | None = None
    ) -> Backfill:
        """Queue every slot of the schedule in [start, end) that has no run yet, each marked
        `backfill`, under the schedule's overlap policy ("forbid": one after another,
        oldest first; "allow": all at once). Repeating a backfill adds nothing: a slot that
        beat fired, or an earlier backfill queued, is never queued again. `start` and `end`
        are datetimes, ISO 8601 text or epoch seconds; without an offset they are read in
        the schedule's time zone. Backfilled slots never expire (expires_after_seconds) and
        count towards max_runs. Raises `NotFound`, `ScheduleDisabled`, and
        `ValidationError` naming `start` or `end` (an empty or future range, more than
        MAX_BACKFILL_SLOTS slots, more than max_runs leaves)."""
        with self.db.begin() as conn:
            schedule = rows.load(conn, schedule_id, user_id, lock=True)  # one backfill of it at a time
            self._require_runnable(schedule)
            now = db_now(conn)
            first, last = backfill_range(start, end, schedule.timezone, now=now)
            table = Timetable.of(schedule.to_dict())
            if table.kind == "on_demand":
                raise ValidationError("schedule", "runs on demand only (no cron, interval or run_at): no slots to backfill")
            found = slots.slots_in_range(table, start=first, end=last, limit=MAX_BACKFILL_SLOTS)
            if found is None:
                raise ValidationError(
                    "end", f"the range holds more than {MAX_BACKFILL_SLOTS} slots of this schedule "
                    f"(MAX_BACKFILL_SLOTS); backfill it in parts of at most {MAX_BACKFILL_SLOTS} slots"
                )
            added = claims.queue_backfill(conn, schedule.id, found, user_id=schedule.user_id, now=now)
            # Backfilled slots count as fired slots (beat's max_runs count reads the same rows).
            if added and schedule.max_runs is not None and claims.count_fired(conn, schedule.id) > schedule.max_runs:
                raise ValidationError(  # raised inside the transaction: nothing is queued
                    "end", f"the range holds {len(added)} slot(s) with no run, more than max_runs "
                    f"({schedule.max_runs}) leaves; backfill a shorter range"
                )
        return Backfill(schedule_id=schedule.id, start=first, end=last, slots=found,
                        added=[ScheduleRun.from_row(row) for row in added])

    def find(self, name_or_id: str, user_id: str | None = None) -> Schedule:
        """The schedule with this id, else the one with this name (of `user_id`, None: the
        unowned ones); raises `NotFound` naming both. For people, who know names (the CLI)."""
        found = self.get(name_or_id, user_id)
        if found is not None:
            return found
        try:
            return self.get_by_name(name_or_id, user_id)
        except (NotFound, ValidationError):
            raise NotFound(f'no schedule with id or name "{name_or_id}"') from None

    def prune_runs(
        self, older_than_seconds: int, *, batch: int = retention.PRUNE_BATCH,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> int:
        """Delete attempts that ended more than `older_than_seconds` ago (never a queued or
        running one) and what their runs left behind (scheduler/retention.py's rule), `batch`
        per transaction; `on_batch(deleted, total)` after each.
        Returns how many went."""
        older_than_seconds = validation.bounded_int("older_than", older_than_seconds, 0, 100 * 365 * 86400)
        batch = validation.bounded_int("batch", batch, 1, 100_000)
        with self.db.connect() as conn:
            before = db_now(conn) - older_than_seconds
            total = retention.count_prunable(conn, before=before)
        deleted = 0
        while True:
            with self.db.begin() as conn:
                gone = retention.prune_finished(conn, before=before, limit=batch)
            deleted += gone
            if on_batch is not None:
                on_batch(deleted, max(total, deleted))
            if gone < batch:
                return deleted

    def _apply_changes(self, conn: Connection, current: Schedule, changes: dict[str, Any]) -> Schedule:
        """Write only what differs; nothing at all when nothing does. A change of endpoint
        or method, and enabling, must pass the endpoint policy (even when nothing differs).
        A change of timing is checked on the whole schedule it makes (spec.check_kind)."""
        timing = set(spec.TIMING_FIELDS) & changes.keys()
        if timing:
            kinds = [key for key in spec.KIND_FIELDS if changes.get(key) not in (None, "")]
            if len(kinds) > 1:
                spec.check_kind(changes)  # names the second kind given
            if kinds:  # the kind given replaces the schedule's kind
                changes = {**changes, **{key: _NO_KIND[key] for key in spec.KIND_FIELDS if key != kinds[0]}}
            merged = {**current.to_dict(), **changes}
            spec.check_kind(merged)
            _check_times(conn, merged, timing)
        if {"endpoint", "method"} & changes.keys() or changes.get("enabled") is True:
            method, endpoint = self.check_endpoint(
                changes.get("method", current.method), changes.get("endpoint", current.endpoint)
            )
            changes = {**changes, **{k: v for k, v in (("method", method), ("endpoint", endpoint)) if k in changes}}
        return rows.write_changes(conn, current, changes)

    # --- rules ----------------------------------------------------------------

    def check_endpoint(self, method: str, endpoint: str) -> tuple[str, str]:
        """(method, endpoint) normalised when a schedule may call that route (any route,
        without a policy); the policy's `ValidationError` otherwise. Every write that
        points a schedule at a route goes through here."""
        if self.endpoint_policy is None:
            return method, endpoint
        return self.endpoint_policy.check_endpoint(method, endpoint)

    def _require_runnable(self, schedule: Schedule) -> None:
        """A run needs an enabled schedule whose endpoint the policy still serves."""
        if not schedule.enabled:
            raise ScheduleDisabled(f"schedule {schedule.name!r} is disabled: enable it first")
        self.check_endpoint(schedule.method, schedule.endpoint)

    # --- async twins ------------------------------------------------------------

    # agno's
    acreate = _to_thread(create)
    alist = _to_thread(list)
    alist_all = _to_thread(list_all)
    aget = _to_thread(get)
    aupdate = _to_thread(update)
    adelete = _to_thread(delete)
    aenable = _to_thread(enable)
    adisable = _to_thread(disable)
    aget_runs = _to_thread(get_runs)
    # ours
    astamp_provenance = _to_thread(stamp_provenance)
    atrigger = _to_thread(trigger)
    atrigger_run = _to_thread(trigger_run)
    aget_or_raise = _to_thread(get_or_raise)
    aget_by_name = _to_thread(get_by_name)
    alist_page = _to_thread(list_page)
    aruns = _to_thread(runs)
    aget_run = _to_thread(get_run)
    anext_slots = _to_thread(next_slots)
    abackfill = _to_thread(backfill)
