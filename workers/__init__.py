"""The worker process type: `celery -A workers worker` (the Procfile's `worker`). Its app
is kern_tasks' with the workers' settings (KERN_WORKER_POOL, KERN_WORKER_CONCURRENCY,
KERN_WORKER_QUEUES): kern_tasks.process_apps.worker_app. Nothing else lives here."""

from kern_tasks.process_apps import worker_app

app = worker_app()
