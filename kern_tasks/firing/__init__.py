"""Firing a schedule.

    http.py      one attempt as an HTTP call, and how it ended (FireOutcome)
    response.py  reading answers within the deadline; what is recorded, bounded and scrubbed
    backoff.py   the waits between attempts
    task.py      kern.fire / kern.fire_batch: takes the attempts, fires them, records them
                 (the rows are scheduler/attempts.py's, the messages dispatch.py's)
    batch.py     a batch's calls at once, each on a thread, outcomes handed on as they end
    liveness.py  worker heartbeats (kern_workers), so a worker that dies mid-call is found
                 in seconds (by fires and workflow steps alike)

http, response and backoff touch neither the database nor Celery.
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
