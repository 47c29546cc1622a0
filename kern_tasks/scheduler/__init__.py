"""Schedules: cron and time zones, the ScheduleManager, and the lifecycle of the run rows
(claims.py: leases and the slots beat makes; attempts.py: one attempt's life; sweeps.py:
beat's sweep and retention)."""

from kern_tasks.scheduler.cron import describe, next_run, next_runs
from kern_tasks.scheduler.kinds import Timetable, next_slots
from kern_tasks.scheduler.manager import ScheduleManager
from kern_tasks.scheduler.models import Page, Schedule, ScheduleRun

__all__ = [
    "Page", "Schedule", "ScheduleManager", "ScheduleRun", "Timetable", "describe", "next_run", "next_runs",
    "next_slots",
]
