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
from kern_tasks.scheduler import describe
from kern_tasks.scheduler.models import Schedule, ScheduleRun
from kern_tasks.tools.hints import hint_for


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
    """What the model sees of a schedule."""
    try:
        when = f"{describe(schedule.cron_expr)} ({schedule.timezone})" if schedule.cron_expr else "on demand"
    except KernError:  # a row written by agno with a cron only croniter reads
        when = f"cron {schedule.cron_expr} ({schedule.timezone})"
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
    }


def run_json(run: ScheduleRun) -> dict[str, Any]:
    """What the model sees of one run (errors bounded)."""
    error = run.error if run.error is None or len(run.error) <= 500 else run.error[:500] + "..."
    return {
        "id": run.id, "attempt": run.attempt, "status": run.status, "status_code": run.status_code,
        "manual": run.manual, "scheduled_for": run.scheduled_for, "triggered_at": run.triggered_at,
        "completed_at": run.completed_at, "run_id": run.run_id, "session_id": run.session_id, "error": error,
    }
