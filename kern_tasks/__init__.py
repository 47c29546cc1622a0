"""kern_tasks: recurring and multi-step agent jobs on Celery, with schedules in SQL.

The names users call, importable from here or from their own modules (docs/architecture.md, "Layout"):

    kern_tasks.Database          kern_tasks.db.Database
    kern_tasks.ScheduleManager   kern_tasks.scheduler.ScheduleManager
    kern_tasks.AgentOS           kern_tasks.os.AgentOS
    kern_tasks.Agent             kern_tasks.agent.Agent
    kern_tasks.SchedulerTools    kern_tasks.tools.scheduler.SchedulerTools
    kern_tasks.Settings          kern_tasks.settings.Settings

They load on first use, so `celery -A kern_tasks worker` does not import the web app.
"""

from __future__ import annotations

from kern_tasks.lazy_exports import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "Agent": "kern_tasks.agent",
    "AgentOS": "kern_tasks.os",
    "Database": "kern_tasks.db",
    "ScheduleManager": "kern_tasks.scheduler",
    "SchedulerTools": "kern_tasks.tools.scheduler",
    "Settings": "kern_tasks.settings",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

__getattr__ = lazy_exports(__name__, _EXPORTS)
