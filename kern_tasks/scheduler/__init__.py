"""Schedules: cron and time zones, the ScheduleManager, and the lifecycle of the run rows
(claims.py: leases and the slots beat makes; attempts.py: one attempt's life; sweeps.py:
beat's sweep and retention).

The names below load on first use, so beat (which needs claims, attempts and sweeps)
imports neither the manager nor pydantic's validation models.
"""

from __future__ import annotations

from kern_tasks.lazy_exports import lazy_exports

_EXPORTS = {
    "Page": "kern_tasks.scheduler.models",
    "Schedule": "kern_tasks.scheduler.models",
    "ScheduleManager": "kern_tasks.scheduler.manager",
    "ScheduleRun": "kern_tasks.scheduler.models",
    "Timetable": "kern_tasks.scheduler.kinds",
    "describe": "kern_tasks.scheduler.cron",
    "next_run": "kern_tasks.scheduler.cron",
    "next_runs": "kern_tasks.scheduler.cron",
    "next_slots": "kern_tasks.scheduler.kinds",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
