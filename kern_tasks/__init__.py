"""kern_tasks: recurring and multi-step agent jobs on Celery, with schedules in SQL."""

__version__ = "0.1.0"
