"""Missed runs made loud: overdue slots, failure streaks, no beat (docs/operating.md, "Alerts").

    alerts.fire_failed(db, schedule_row, settings)   # the fire task, after a failed attempt

conditions.py reads what is wrong, incidents.py keeps one open incident per key in SQL,
webhook.py announces (log warning, KERN_ALERT_WEBHOOK POST off the caller's thread),
watch.py decides who looks when (beat's sweep, a web thread, the fire task).
"""

from __future__ import annotations

from typing import Any, Mapping

from kern_tasks.alerts import watch
from kern_tasks.alerts.conditions import FAILED
from kern_tasks.alerts.webhook import notifier_for
from kern_tasks.db import Database
from kern_tasks.settings import Settings


def fire_failed(db: Database, schedule: Mapping[str, Any], settings: Settings, status: str) -> None:
    """An attempt of `schedule` ended `status`: a failure may complete a streak."""
    if status in FAILED:
        watch.fire_failed(db, schedule, notifier_for(settings.alert_webhook))
