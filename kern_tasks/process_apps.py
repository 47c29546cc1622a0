"""The Celery app of each process type, configured from Settings: what the top-level
`workers` and `beat` packages expose (`celery -A workers worker`, `python -m beat` or `celery -A beat beat`,
the Procfile's and docker-compose.yml's commands). Both are `create_app()`'s app (the same
tasks, broker, routes and task events as `celery -A kern_tasks ...`) plus the settings of
their process type, so a plain command line runs the configured process:

- workers: pool KERN_WORKER_POOL (threads: a fire waits on HTTP), concurrency
  KERN_WORKER_CONCURRENCY (32), the queues KERN_WORKER_QUEUES names (default: the default
  queue; a schedule's `queue` routes its fires and its workflow steps there). Command-line
  options (-P, -c, -Q) still win, as Celery makes them.
- beat: kern_beat_batch KERN_BEAT_BATCH (schedules claimed per transaction, 500) and
  kern_sweep_interval KERN_BEAT_SWEEP_INTERVAL (seconds between sweeps and heartbeats, 1),
  read by kern_tasks.beat.LeaseScheduler.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from kern_tasks.app import create_app
from kern_tasks.settings import Settings


def worker_app(settings: Settings | None = None) -> Celery:
    """The app `celery -A workers worker` runs (settings None: `Settings.from_env()`)."""
    settings = settings if settings is not None else Settings.from_env()
    app = create_app(settings, main="workers")
    app.conf.update(worker_pool=settings.worker_pool, worker_concurrency=settings.worker_concurrency)
    if settings.worker_queues:
        # The queues Celery would make for `-Q a,b` (an exchange and routing key of the
        # queue's name): consumed here; publishing elsewhere still declares on demand.
        app.conf.task_queues = [Queue(name, Exchange(name), routing_key=name) for name in settings.worker_queues]
    return app


def beat_app(settings: Settings | None = None) -> Celery:
    """The app `python -m beat` and `celery -A beat beat` run (settings None: `Settings.from_env()`)."""
    settings = settings if settings is not None else Settings.from_env()
    app = create_app(settings, main="beat")
    app.conf.update(kern_beat_batch=settings.beat_batch, kern_sweep_interval=settings.beat_sweep_interval)
    return app
