"""What a model sees of schedules, runs and errors: plain JSON-able dicts.

Times are epoch seconds; a schedule also shows its next run in its own zone (ISO 8601)
and a sentence describing its cron, so a model can check it did what was asked.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from kern_tasks.errors import KernError
from kern_tasks.scheduler import kinds
from kern_tasks.scheduler.kinds import Timetable
from kern_tasks.scheduler.models import Schedule, ScheduleRun
from kern_tasks.tools.hints import hint_for

# Our timing fields, shown only when set (a cron schedule reads as before).
TIMING = ("interval_seconds", "run_at", "start_at", "end_at", "max_runs", "expires_after_seconds")


def error_json(exc: KernError) -> str:
    """{"error", "field"?, "hint"?} of a deliberate kern_tasks error."""
    field = getattr(exc, "field", None)
    body: dict[str, Any] = {"error": str(exc)}
    if field:
        body["field"] = field
    hint = hint_for(exc)
    if hint:
        body["hint"] = hint
    return json.dumps(body)


def _local_iso(epoch: int | None, zone: str) -> str | None:
    if epoch is None:
        return None
    try:
        return datetime.fromtimestamp(epoch, ZoneInfo(zone)).isoformat()
    except (ValueError, OSError):  # a row another writer stored with a zone this machine lacks
        return None


def schedule_json(schedule: Schedule) -> dict[str, Any]:
    """What the model sees of a schedule: its timing in words and its next runs in its zone."""
    table = Timetable.of(schedule.to_dict())
    try:
        when = f"{kinds.describe(table)} ({schedule.timezone})" if table.kind != "on_demand" else "on demand"
    except KernError:  # a row written by agno with a cron only croniter reads
        when = f"cron {schedule.cron_expr} ({schedule.timezone})"
    timing = {key: getattr(schedule, key) for key in TIMING if getattr(schedule, key) is not None}
    return {
        "id": schedule.id,
        "name": schedule.name,
        "description": schedule.description,
        "cron_expr": schedule.cron_expr,
        "timezone": schedule.timezone,
        "schedule": when,
        "endpoint": schedule.endpoint,
        "method": schedule.method,
        "payload": schedule.payload,
        "enabled": schedule.enabled,
        "disabled_reason": schedule.disabled_reason,
        "next_run_at": schedule.next_run_at,
        "next_run_at_local": _local_iso(schedule.next_run_at, schedule.timezone),
        **timing,
        **{f"{key}_local": _local_iso(timing[key], schedule.timezone) for key in ("run_at", "start_at", "end_at")
           if key in timing},
        "queue": schedule.queue,
        "priority": schedule.priority,
    }


def run_json(run: ScheduleRun) -> dict[str, Any]:
    """What the model sees of one run (errors bounded)."""
    error = run.error if run.error is None or len(run.error) <= 500 else run.error[:500] + "..."
    return {
        "id": run.id, "attempt": run.attempt, "status": run.status, "status_code": run.status_code,
        "manual": run.manual, "scheduled_for": run.scheduled_for, "triggered_at": run.triggered_at,
        "completed_at": run.completed_at, "run_id": run.run_id, "session_id": run.session_id, "error": error,
    }
