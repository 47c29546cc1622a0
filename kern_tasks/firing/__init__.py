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

from __future__ import annotations

from kern_tasks.lazy_exports import lazy_exports

# Loaded on first use: beat imports this package (liveness, backoff) but never makes a call,
# so it does not import httpx.
_EXPORTS = {
    "FireOutcome": "kern_tasks.firing.http",
    "FireRequest": "kern_tasks.firing.http",
    "backoff_bound": "kern_tasks.firing.backoff",
    "backoff_delay": "kern_tasks.firing.backoff",
    "fire": "kern_tasks.firing.http",
    "make_client": "kern_tasks.firing.http",
    "parse_retry_after": "kern_tasks.firing.backoff",
    "retry_budget_seconds": "kern_tasks.firing.backoff",
    "run_form": "kern_tasks.firing.http",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
