"""The Celery app `celery -A kern_tasks worker` and `celery -A kern_tasks beat` load."""

from kern_tasks.app import create_app

app = create_app()
