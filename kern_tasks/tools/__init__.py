"""Toolkits agents can use: `kern_tasks.tools.scheduler.SchedulerTools`."""
