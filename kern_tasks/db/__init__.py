"""The agno_* tables, the engine that reaches them, and their migrations."""

from kern_tasks.db.clock import db_now, db_time
from kern_tasks.db.engine import Database
from kern_tasks.db.tables import metadata, schedule_runs, schedules

__all__ = ["Database", "db_now", "db_time", "metadata", "schedule_runs", "schedules"]
