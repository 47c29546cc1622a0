"""The beat process type: `celery -A beat beat` (the Procfile's `beat`; run two or more
replicas, the row lease keeps them apart). Its app is kern_tasks' with beat's settings
(KERN_BEAT_BATCH, KERN_BEAT_SWEEP_INTERVAL): kern_tasks.process_apps.beat_app. Nothing else
lives here."""

from kern_tasks.process_apps import beat_app

app = beat_app()
