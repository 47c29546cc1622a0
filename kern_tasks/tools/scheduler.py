"""SchedulerTools: let an agent create and manage recurring schedules.

    agent = Agent(model="openai:gpt-5.4", tools=[SchedulerTools(
        db=db, default_endpoint="/agents/my-agent/runs", default_method="POST", default_timezone="UTC")])

Tools (names as agno's): create_schedule (idempotent by name), list_schedules,
get_schedule, update_schedule, delete_schedule, enable_schedule, disable_schedule,
trigger_schedule, get_schedule_runs. Each returns a JSON string. A mistake returns
`{"error": ..., "field": ..., "hint": ...}` saying how to fix it, never an exception:
the model reads it and tries again. Docstrings are written for the model.

A POST to a run endpoint (/agents|teams|workflows/{id}/runs) starts a run whose input
is the payload's `message`, so such a schedule must have a non-empty message.

Owners, as agno's: every tool acts for one owner, the toolkit's `user_id` when given, else
the user of the run calling it (its `run_context`). A schedule it creates belongs to that
owner and records the run and session that created it (created_by_run_id /
created_by_session_id; a change made by a run stamps updated_by_*); it lists, reads,
changes, triggers and deletes only that owner's schedules. Another owner's schedule is
"not found", with the hint to list one's own: the model never sees the row. Without an
owner (no user_id, no run user) the tools see every schedule, as agno's do.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime
from zoneinfo import ZoneInfo
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec

from kern_tasks.agent.run import RunContext
from kern_tasks.agent.tools import Toolkit
from kern_tasks.db import Database, db_now
from kern_tasks.errors import CronError, KernError, NotFound, ValidationError
from kern_tasks.scheduler import ScheduleManager, spec, validation
from kern_tasks.scheduler.endpoints import RUN_ENDPOINT, EndpointPolicy
from kern_tasks.scheduler.models import Schedule
from kern_tasks.scheduler.spec import DEFAULTS
from kern_tasks.tools.views import error_json, run_json, schedule_json

P = ParamSpec("P")


def _reports_errors(method: Callable[P, str]) -> Callable[P, str]:
    """Turn every deliberate kern_tasks error into the JSON error the model reads."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> str:
        try:
            return method(*args, **kwargs)
        except KernError as exc:
            return error_json(exc)

    return wrapper


class SchedulerTools(Toolkit):
    """Schedule tools over one database; defaults fill what the model leaves out.

    `db=None` means `Database()`: the database `Settings.from_env()` names.
    `user_id` fixes the owner of every operation (None: the calling run's user).
    `endpoint_policy` says which routes a schedule may call (kern_tasks.scheduler.endpoints);
    the manager applies it, so the tools refuse what the HTTP API refuses, in its words.
    An AgentOS hands its own policy to the SchedulerTools of its agents that have none."""

    tools = (
        "create_schedule", "list_schedules", "get_schedule", "update_schedule", "delete_schedule",
        "enable_schedule", "disable_schedule", "trigger_schedule", "get_schedule_runs",
    )

    def __init__(
        self,
        db: Database | None = None,
        default_endpoint: str | None = None,
        default_method: str = DEFAULTS["method"],
        default_timezone: str = DEFAULTS["timezone"],
        default_payload: dict[str, Any] | None = None,
        name: str = "scheduler",
        *,
        endpoint_policy: EndpointPolicy | None = None,
        user_id: str | None = None,
    ) -> None:
        super().__init__(name)
        self.manager = ScheduleManager(db, endpoint_policy=endpoint_policy)
        self.default_endpoint = default_endpoint
        self.default_method = default_method
        self.default_timezone = default_timezone
        self.default_payload = dict(default_payload or {})
        self.user_id = user_id

    @property
    def endpoint_policy(self) -> EndpointPolicy | None:
        return self.manager.endpoint_policy

    @endpoint_policy.setter
    def endpoint_policy(self, policy: EndpointPolicy | None) -> None:
        self.manager.endpoint_policy = policy

    # --- tools ------------------------------------------------------------------------

    @_reports_errors
    def create_schedule(
        self,
        name: str,
        cron: str | None = None,
        timezone: str | None = None,
        endpoint: str | None = None,
        method: str | None = None,
        message: str | None = None,
        payload: dict[str, Any] | None = None,
        description: str | None = None,
        interval_seconds: int | None = None,
        run_in_seconds: int | None = None,
        run_at: str | None = None,
        start_at: str | None = None,
        end_at: str | None = None,
        max_runs: int | None = None,
        expires_after_seconds: int | None = None,
        queue: str | None = None,
        priority: int | None = None,
        run_context: RunContext | None = None,
    ) -> str:
        """Create a schedule, or update the one that already has this name (safe to repeat; an existing
        disabled schedule stays disabled). Say when it runs with exactly one of cron, interval_seconds,
        run_in_seconds or run_at.

        Args:
            name: a short unique name, e.g. "daily-pr-digest" (letters, digits, - _ . : @ / and spaces).
            cron: for calendar times, 5 fields "minute hour day-of-month month day-of-week" in the schedule's
                time zone. Examples: "0 9 * * *" every day at 09:00; "0 9 * * 1-5" weekdays at 09:00;
                "30 8 1 * *" 08:30 on the 1st of each month; "0 17 * * fri" Fridays at 17:00.
            timezone: the user's IANA time zone, e.g. "America/New_York" (ET, Eastern time),
                "America/Chicago" (CT), "America/Los_Angeles" (PT), "Europe/London", "UTC"; cron, run_at,
                start_at and end_at are read in it. Never an abbreviation like ET or PST. Default: the
                configured default zone.
            endpoint: path to call, e.g. "/agents/my-agent/runs". Default: the configured endpoint.
            method: HTTP method (GET, POST, PUT, PATCH, DELETE). Default: the configured method.
            message: the instruction the scheduled run receives, e.g. "Post a digest of open PRs".
                Required when the schedule POSTs to a /runs endpoint.
            payload: extra JSON fields of the request body (the message goes in payload.message).
            description: what the schedule is for, for people reading the list.
            interval_seconds: "every N seconds/minutes/hours" by elapsed time, e.g. 90 for "every 90 seconds",
                900 for "every 15 minutes", 7200 for "every 2 hours".
            run_in_seconds: run once, this many seconds from now, e.g. 1200 for "remind me in 20 minutes".
            run_at: run once at this local date and time in the time zone, e.g. "2026-12-24T09:00".
            start_at: no run before this local date and time, e.g. "2027-01-04T00:00" for "from next Monday".
            end_at: no run after this local date and time, e.g. "2027-03-31T23:59" for "until quarter's end".
            max_runs: run at most this many times, e.g. 10 for "ten times" (not with run_at or run_in_seconds).
            expires_after_seconds: skip a run that cannot start within this many seconds of its time, e.g.
                300 for "skip it if it could not start within 5 minutes".
            queue: the worker queue its runs go to, e.g. "reports" (only when told to; default: the usual one).
            priority: 0-9, the message priority of its runs (only when told to; default: none).
        """
        # Every field is checked before the message rule, so the model hears of a bad cron first.
        name = validation.name(name)
        timezone = _zone(timezone or self.default_timezone)
        timing = self._timing(
            timezone, cron=cron, interval_seconds=interval_seconds, run_in_seconds=run_in_seconds, run_at=run_at,
            start_at=start_at, end_at=end_at, max_runs=max_runs,
        )
        spec.check_kind({"cron_expr": "", "interval_seconds": None, "run_at": None, **timing})
        endpoint = validation.endpoint(endpoint or self._default_endpoint())
        method = validation.method(method or self.default_method)
        # The endpoint policy before the message rule: no message fixes an unserved route.
        method, endpoint = self.manager.check_endpoint(method, endpoint)
        body = {**self.default_payload, **(validation.payload(payload) or {})}
        if message is not None:
            body["message"] = message
        _require_message(endpoint, method, body)
        owner = self._owner(run_context)
        try:
            before = self.manager.get_by_name(name, owner)
        except (NotFound, ValidationError):
            before = None
        cron_expr = timing.pop("cron_expr", None)
        schedule = self.manager.create(
            name=name, cron=cron_expr, endpoint=endpoint, method=method, description=description,
            payload=body or None, timezone=timezone, if_exists="update", user_id=owner,
            provenance=_provenance("created_by", run_context) or None,
            expires_after_seconds=expires_after_seconds, queue=queue, priority=priority, **timing,
        )
        status = "created" if before is None else ("unchanged" if schedule == before else "updated")
        if status == "updated":
            self._stamp_change(schedule.id, run_context)
        return json.dumps({"status": status, **schedule_json(schedule)})

    @_reports_errors
    def list_schedules(
        self, enabled: bool | None = None, limit: int = 20, page: int = 1, run_context: RunContext | None = None
    ) -> str:
        """List schedules, newest first, one page at a time.

        Args:
            enabled: true for only enabled schedules, false for only disabled ones; omit for all.
            limit: how many per page (1-1000).
            page: which page, from 1.
        """
        found = self.manager.list_page(enabled=enabled, limit=limit, page=page, user_id=self._owner(run_context))
        return json.dumps({
            "data": [schedule_json(s) for s in found.data],
            "meta": {"page": found.page, "limit": found.limit,
                     "total_pages": found.total_pages, "total_count": found.total_count},
        })

    @_reports_errors
    def get_schedule(self, schedule_id: str, run_context: RunContext | None = None) -> str:
        """Get one schedule with its next run time.

        Args:
            schedule_id: the schedule's id or its name.
        """
        return json.dumps(schedule_json(self._find(schedule_id, run_context)))

    @_reports_errors
    def update_schedule(
        self,
        schedule_id: str,
        name: str | None = None,
        cron: str | None = None,
        timezone: str | None = None,
        endpoint: str | None = None,
        method: str | None = None,
        message: str | None = None,
        payload: dict[str, Any] | None = None,
        description: str | None = None,
        interval_seconds: int | None = None,
        run_in_seconds: int | None = None,
        run_at: str | None = None,
        start_at: str | None = None,
        end_at: str | None = None,
        max_runs: int | None = None,
        expires_after_seconds: int | None = None,
        queue: str | None = None,
        priority: int | None = None,
        run_context: RunContext | None = None,
    ) -> str:
        """Change a schedule: pass only what should change. The next run time follows a new timing or zone.
        A new cron, interval_seconds, run_in_seconds or run_at replaces how it was timed.

        Args:
            schedule_id: the schedule's id or its name.
            name: a new name.
            cron: a new cron, 5 fields "minute hour day-of-month month day-of-week", e.g. "0 9 * * 1-5".
            timezone: a new IANA zone, e.g. "America/New_York" for ET, "Europe/Berlin", "UTC".
            endpoint: a new path, e.g. "/agents/my-agent/runs".
            method: a new HTTP method.
            message: a new instruction for the scheduled run (kept in payload.message).
            payload: a new request body (replaces the old one; message still applies).
            description: a new description.
            interval_seconds: run every N seconds instead, e.g. 90.
            run_in_seconds: run once, this many seconds from now, instead.
            run_at: run once at this local date and time instead, e.g. "2026-12-24T09:00".
            start_at: a new local date and time before which it does not run.
            end_at: a new local date and time after which it does not run.
            max_runs: a new limit of runs.
            expires_after_seconds: a new limit of how late a run may start.
            queue: a new worker queue for its runs, e.g. "reports".
            priority: a new message priority, 0-9.
        """
        current = self._find(schedule_id, run_context)
        if timezone is not None:
            timezone = _zone(timezone)
        timing = self._timing(
            timezone or current.timezone, cron=cron, interval_seconds=interval_seconds,
            run_in_seconds=run_in_seconds, run_at=run_at, start_at=start_at, end_at=end_at, max_runs=max_runs,
        )
        given = {"name": name, "timezone": timezone, "endpoint": endpoint, "method": method,
                 "description": description, "expires_after_seconds": expires_after_seconds,
                 "queue": queue, "priority": priority, **timing}
        changes: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
        if payload is not None or message is not None:
            body = dict(validation.payload(payload) or {}) if payload is not None else dict(current.payload or {})
            if message is not None:
                body["message"] = message
            changes["payload"] = body or None
        if not changes:
            raise ValidationError("schedule_id", "nothing to change: pass at least one field to update")
        _require_message(
            validation.endpoint(changes.get("endpoint", current.endpoint)),
            validation.method(changes.get("method", current.method)),
            changes.get("payload", current.payload) or {},
        )
        updated = _present(self.manager.update(current.id, self._owner(run_context), **changes), schedule_id)
        self._stamp_change(updated.id, run_context)
        return json.dumps({"status": "updated", **schedule_json(updated)})

    @_reports_errors
    def delete_schedule(self, schedule_id: str, run_context: RunContext | None = None) -> str:
        """Delete a schedule and its run history for good (to pause it instead, use disable_schedule).

        Args:
            schedule_id: the schedule's id or its name.
        """
        schedule = self._find(schedule_id, run_context)
        if not self.manager.delete(schedule.id, self._owner(run_context)):
            raise _gone(schedule_id)
        return json.dumps({"status": "deleted", "id": schedule.id, "name": schedule.name})

    @_reports_errors
    def enable_schedule(self, schedule_id: str, run_context: RunContext | None = None) -> str:
        """Enable a schedule so it runs on its cron again (its next run time is recomputed).

        Args:
            schedule_id: the schedule's id or its name.
        """
        owner = self._owner(run_context)
        schedule = _present(self.manager.enable(self._find(schedule_id, run_context).id, owner), schedule_id)
        return json.dumps({"status": "enabled", **schedule_json(schedule)})

    @_reports_errors
    def disable_schedule(
        self, schedule_id: str, reason: str | None = None, run_context: RunContext | None = None
    ) -> str:
        """Disable (pause) a schedule; enable_schedule turns it back on.

        Args:
            schedule_id: the schedule's id or its name.
            reason: why, shown to people later.
        """
        found = self._find(schedule_id, run_context)
        schedule = _present(self.manager.disable(found.id, self._owner(run_context), reason=reason), schedule_id)
        return json.dumps({"status": "disabled", **schedule_json(schedule)})

    @_reports_errors
    def trigger_schedule(self, schedule_id: str, run_context: RunContext | None = None) -> str:
        """Run a schedule once now, without changing its cron (the run is queued and starts within seconds).

        Args:
            schedule_id: the schedule's id or its name.
        """
        schedule = self._find(schedule_id, run_context)
        run = self.manager.trigger_run(schedule.id, user_id=self._owner(run_context))
        return json.dumps({"status": "triggered", "schedule_id": schedule.id, "name": schedule.name,
                           "run": run_json(run)})

    @_reports_errors
    def get_schedule_runs(self, schedule_id: str, limit: int = 10, run_context: RunContext | None = None) -> str:
        """Recent runs of a schedule, newest first: status (queued, running, success, failed, ...),
        HTTP status code, times and error.

        Args:
            schedule_id: the schedule's id or its name.
            limit: how many runs (1-1000).
        """
        schedule = self._find(schedule_id, run_context)
        runs = self.manager.runs(schedule.id, limit=limit, user_id=self._owner(run_context))
        return json.dumps({"schedule_id": schedule.id, "name": schedule.name,
                           "runs": [run_json(r) for r in runs], "total_count": runs.total_count})

    # --- helpers ----------------------------------------------------------------------

    def _timing(
        self, zone: str, *, cron: str | None, interval_seconds: int | None, run_in_seconds: int | None,
        run_at: str | None, start_at: str | None, end_at: str | None, max_runs: int | None,
    ) -> dict[str, Any]:
        """The tools' timing arguments as the manager's fields (only those given): local
        date-times read in the schedule's zone, run_in_seconds from the database's clock."""
        if run_in_seconds is not None and run_at is not None:
            raise ValidationError("run_in_seconds", "give run_in_seconds or run_at, not both")
        timing: dict[str, Any] = {"cron_expr": cron, "interval_seconds": interval_seconds, "max_runs": max_runs}
        if run_in_seconds is not None:
            delay = validation.bounded_int("run_in_seconds", run_in_seconds, 1, spec.MAX_INTERVAL_SECONDS)
            timing["run_at"] = self._db_now() + delay
        else:
            timing["run_at"] = _local_instant("run_at", run_at, zone)
        timing["start_at"] = _local_instant("start_at", start_at, zone)
        timing["end_at"] = _local_instant("end_at", end_at, zone)
        return validation.fields({key: value for key, value in timing.items() if value is not None})

    def _db_now(self) -> int:
        with self.manager.db.connect() as conn:
            return db_now(conn)

    def _default_endpoint(self) -> str:
        if not self.default_endpoint:
            raise ValidationError("endpoint", 'no endpoint given and no default configured: pass endpoint, '
                                              'a path such as "/agents/my-agent/runs"')
        return self.default_endpoint

    def _owner(self, run_context: RunContext | None) -> str | None:
        """Whose schedules these tools act on: the fixed user_id, else the run's user."""
        if self.user_id is not None:
            return self.user_id
        return run_context.user_id if run_context is not None else None

    def _find(self, schedule_id: str, run_context: RunContext | None) -> Schedule:
        """By id, else by name (models often remember names, not ids), among the owner's
        schedules only: another owner's is as missing as one that never was."""
        owner = self._owner(run_context)
        found = self.manager.get(schedule_id, owner)
        if found is not None:
            return found
        try:
            return self.manager.get_by_name(schedule_id, owner)
        except NotFound:
            raise _gone(schedule_id) from None

    def _stamp_change(self, schedule_id: str, run_context: RunContext | None) -> None:
        """Record which run changed the schedule (agno's updated_by_* columns)."""
        stamp = _provenance("updated_by", run_context)
        if stamp:
            self.manager.stamp_provenance(schedule_id, **stamp)


def _provenance(prefix: str, run_context: RunContext | None) -> dict[str, str]:
    """{prefix_run_id, prefix_session_id} of the calling run ({} outside a run)."""
    if run_context is None:
        return {}
    return {f"{prefix}_run_id": run_context.run_id, f"{prefix}_session_id": run_context.session_id}


def _gone(schedule_id: str) -> NotFound:
    return NotFound(f'no schedule with id or name "{schedule_id}"')


def _present(schedule: Schedule | None, schedule_id: str) -> Schedule:
    """The schedule a change answered with; None means it was deleted meanwhile."""
    if schedule is None:
        raise _gone(schedule_id)
    return schedule


# Valid tz database names that are fixed offsets, but which people mean as local time
# with daylight saving ("9am EST" in July means New York time).
_FIXED_ABBREVIATIONS = {"EST": ("America/New_York", "Etc/GMT+5"), "MST": ("America/Denver", "Etc/GMT+7")}


def _zone(value: str) -> str:
    zone = validation.timezone(value)
    if zone.upper() in _FIXED_ABBREVIATIONS:
        meant, fixed = _FIXED_ABBREVIATIONS[zone.upper()]
        raise CronError(
            "timezone",
            f'"{zone}" is a fixed offset with no daylight saving time; use "{meant}" for local time there '
            f'(or "{fixed}" if a fixed offset all year is really meant)',
        )
    return zone


def _local_instant(field: str, text: str | None, zone: str) -> int | None:
    """Epoch seconds of a date and time the model wrote; without an offset it is local time in `zone`."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(str(text).strip())
    except ValueError:
        raise ValidationError(
            field, f'{str(text)[:60]!r} is not a date and time; write it as "2026-12-24T09:00" (local time in {zone})'
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return int(moment.timestamp())


def _require_message(endpoint: str, method: str, payload: dict[str, Any]) -> None:
    if method == "POST" and RUN_ENDPOINT.match(endpoint):
        message = payload.get("message")
        if not isinstance(message, str) or not message.strip():
            raise ValidationError(
                "message",
                f"a POST to a /runs endpoint ({endpoint}) needs a message in its payload: the text the "
                'scheduled run receives. Pass message="..." (e.g. "Post a digest of open PRs")',
            )


def share_endpoint_policy(agents: Iterable[Any], policy: EndpointPolicy) -> None:
    """Hand `policy` to every SchedulerTools among these agents' tools that has none of its
    own (AgentOS does this with its routes). An agent's tools are its `functions`, each
    bound to the toolkit it came from; a policy given explicitly is kept."""
    for agent in agents:
        functions = getattr(agent, "functions", None)
        if not isinstance(functions, dict):
            continue
        for function in functions.values():
            toolkit = getattr(getattr(function, "entrypoint", None), "__self__", None)
            if isinstance(toolkit, SchedulerTools) and toolkit.endpoint_policy is None:
                toolkit.endpoint_policy = policy
