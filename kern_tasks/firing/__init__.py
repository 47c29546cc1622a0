"""Firing a schedule: one attempt as an HTTP call (`http`), and the waits between attempts
(`backoff`). Neither touches the database or Celery: the task records what they return.
"""

from kern_tasks.firing.backoff import backoff_bound, backoff_delay, parse_retry_after, retry_budget_seconds
from kern_tasks.firing.http import FireOutcome, FireRequest, fire, make_client, run_form

__all__ = [
    "FireOutcome",
    "FireRequest",
    "backoff_bound",
    "backoff_delay",
    "fire",
    "make_client",
    "parse_retry_after",
    "retry_budget_seconds",
    "run_form",
]
