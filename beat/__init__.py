"""The beat process type: `python -m beat` (the Procfile's `beat`, beat/__main__.py) or
`celery -A beat beat`, the same beat with the celery command line's ~16 MiB of plugins (run
two or more replicas, the row lease keeps them apart). Its app is kern_tasks' with beat's settings
(KERN_BEAT_BATCH, KERN_BEAT_SWEEP_INTERVAL): kern_tasks.process_apps.beat_app. Nothing else
lives here."""

from kern_tasks.process_apps import beat_app

app = beat_app()
