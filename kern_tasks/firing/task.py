"""`kern.fire(attempt_id)`: fire one attempt of a schedule and record how it ended.

The task only fires: taking the attempt (queued -> running), the HTTP call, and
recording the outcome (with the retry it may bring) are each one step below; the rows
are scheduler.attempts', the messages dispatch's, the worker's heartbeat liveness's
(registered in the transaction that takes the attempt, so a worker that dies mid-call is
found within seconds). `attempt_id` is our
agno_schedule_runs.id; `run_id` is only agno's run id (FireOutcome.run_id).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from kern_tasks import metrics
from kern_tasks.db import Database
from kern_tasks.dispatch import Dispatch, publish
from kern_tasks.firing import liveness
from kern_tasks.firing.http import FireRequest, fire
from kern_tasks.runtime import runtime_for
from kern_tasks.scheduler import attempts

log = logging.getLogger("kern_tasks.fire")
T = TypeVar("T")

# A database outage while recording must not lose the outcome: keep trying this long.
RECORD_RETRY_S = 120


def fire_task(self: Any, attempt_id: str) -> str:
    """Celery task body (registered as kern.fire by kern_tasks.app.install)."""
    runtime = runtime_for(self.app)
    db = runtime.db
    heart = liveness.heart_for(db)
    attempt = _in_transaction(
        db,
        lambda conn, retrying: attempts.start_attempt(
            conn, attempt_id, resume=retrying, worker_id=liveness.register(conn, heart)
        ),
        patient=True,
    )
    if attempt is None:
        return "nothing to do"
    if isinstance(attempt, attempts.NotYet):
        publish(self.app, [Dispatch(attempt_id, countdown=attempt.seconds, route=attempt.route)])
        return "not yet"
    request = FireRequest(
        schedule_id=attempt.schedule["id"],
        attempt_id=attempt_id,
        attempt=attempt.run["attempt"],
        method=attempt.schedule["method"],
        endpoint=attempt.schedule["endpoint"],
        payload=attempt.schedule["payload"],
        timeout_seconds=attempt.schedule["timeout_seconds"],
        user_id=attempt.schedule["user_id"],
        idempotency_key=attempt.idempotency_key,
        resume_run_id=attempt.resume_run_id,
        resume_session_id=attempt.resume_session_id,
        queue=attempt.schedule["queue"],
        priority=attempt.schedule["priority"],
    )
    started = time.monotonic()
    due = attempt.run["not_before"] or attempt.run["scheduled_for"]
    lag = time.time() - due if due is not None else None  # this worker's clock against the slot's
    outcome = fire(
        runtime.client, request, base_url=runtime.settings.base_url, service_token=runtime.settings.service_token,
        on_accepted=lambda run_id, session_id: _record_accepted(db, attempt_id, run_id, session_id),
    )
    follow_up = _in_transaction(
        db, lambda conn, _retrying: attempts.finish_attempt(conn, attempt_id, outcome), patient=True
    )
    if follow_up is not None:
        publish(self.app, [follow_up])
    metrics.fire_finished(outcome.status, lag, time.monotonic() - started)
    log.info(
        "fired %s: %s %s -> %s%s in %.2fs (attempt %d, attempt id %s%s)",
        attempt.schedule["name"], request.method, request.endpoint, outcome.status,
        f" {outcome.status_code}" if outcome.status_code else "", time.monotonic() - started,
        request.attempt, attempt_id, f", agno run {outcome.run_id}" if outcome.run_id else "",
        # The same facts as fields, for handlers that show more than the line (the demo
        # prints a workflow run's steps under its fire).
        extra={"fire": {"schedule": attempt.schedule["name"], "endpoint": request.endpoint, "status": outcome.status,
                        "attempt_id": attempt_id, "run_id": outcome.run_id, "session_id": outcome.session_id,
                        "schedule_id": request.schedule_id, "slot": attempt.run["scheduled_for"],
                        "attempt": request.attempt}},
    )
    return outcome.status


def _record_accepted(db: Database, attempt_id: str, run_id: str, session_id: str | None) -> None:
    """Put agno's run id on the attempt as soon as the run is accepted, so a retry after a
    lost worker resumes it. Best effort: the outcome records it again at the end."""
    try:
        _in_transaction(
            db, lambda conn, _retrying: attempts.record_accepted(conn, attempt_id, run_id=run_id, session_id=session_id)
        )
    except DBAPIError as exc:
        log.warning("attempt %s: agno run %s not recorded yet (%s)", attempt_id, run_id, type(exc.orig).__name__)


def _in_transaction(db: Database, work: Callable[[Any, bool], T], *, patient: bool = False) -> T:
    """Run `work(conn, retrying)` in a transaction; when `patient`, ride out a database
    outage. `retrying` is True after a failed try, whose commit may have happened."""
    deadline = time.monotonic() + (RECORD_RETRY_S if patient else 0)
    delay = 0.25
    retrying = False
    while True:
        try:
            with db.begin() as conn:
                return work(conn, retrying)
        except DBAPIError as exc:
            if not (exc.connection_invalidated or _is_transient(exc)) or time.monotonic() > deadline:
                raise
            log.warning("database unavailable (%s: %s); retrying in %.1fs", type(exc.orig).__name__, exc.orig, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            retrying = True


def _is_transient(exc: DBAPIError) -> bool:
    return isinstance(exc, (OperationalError, InterfaceError))
