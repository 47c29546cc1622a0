"""`kern.fire(attempt_id)` and `kern.fire_batch(attempt_ids)`: fire attempts of schedules
and record how they ended (a single attempt is a batch of one).

The task only fires: taking the attempt (queued -> running), the HTTP call, and
recording the outcome (with the retry it may bring) are each one step below; the rows
are scheduler.attempts', the messages dispatch's, the worker's heartbeat liveness's
(registered in the transaction that takes the attempt, so a worker that dies mid-call is
found within seconds). `attempt_id` is our
agno_schedule_runs.id; `run_id` is only agno's run id (FireOutcome.run_id).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

if TYPE_CHECKING:
    from kern_tasks.firing.http import FireOutcome, FireRequest

from kern_tasks import alerts, metrics
from kern_tasks.db import Database
from kern_tasks.dispatch import Dispatch, publish
from kern_tasks.firing import liveness
from kern_tasks.firing.batch import run_all
from kern_tasks.runtime import runtime_for
from kern_tasks.scheduler import attempts

log = logging.getLogger("kern_tasks.fire")
T = TypeVar("T")

# A database outage while recording must not lose the outcome: keep trying this long.
RECORD_RETRY_S = 120


def fire_task(self: Any, attempt_id: str) -> str:
    """Celery task body of kern.fire(attempt_id) (registered by kern_tasks.app.install):
    a batch of one."""
    return fire_attempts(self.app, [attempt_id]).get(attempt_id, "nothing to do")


def fire_batch_task(self: Any, attempt_ids: list[str]) -> dict[str, str]:
    """Celery task body of kern.fire_batch(attempt_ids): several due attempts of one beat
    tick (one route), taken in one transaction, fired concurrently, each with its own
    deadline, and recorded in groups as they end (firing/batch.py). A duplicate message
    fires nothing twice (an attempt leaves "queued" once); a worker killed mid-batch
    leaves the message unacknowledged and its running attempts to the lost-attempt sweep."""
    return fire_attempts(self.app, list(attempt_ids))


def fire_attempts(app: Any, attempt_ids: list[str]) -> dict[str, str]:
    """Take, fire and record `attempt_ids`; returns each attempt's outcome status (or
    "nothing to do" / "not yet")."""
    # httpx comes with the first fire: beat registers this task but never runs it.
    from kern_tasks.firing.http import fire

    runtime = runtime_for(app)
    db = runtime.db
    heart = liveness.heart_for(db)
    taken = _in_transaction(
        db,
        lambda conn, retrying: attempts.start_attempts(
            conn, attempt_ids, resume=retrying, worker_id=liveness.register(conn, heart)
        ),
        patient=True,
    )
    statuses = {attempt_id: "nothing to do" for attempt_id, attempt in taken.items() if attempt is None}
    later = [Dispatch(attempt_id, countdown=attempt.seconds, route=attempt.route, label=attempt.label)
             for attempt_id, attempt in taken.items() if isinstance(attempt, attempts.NotYet)]  # fmt: skip
    if later:
        publish(app, later)
        statuses.update((dispatch.attempt_id, "not yet") for dispatch in later)
    running = [(attempt_id, attempt) for attempt_id, attempt in taken.items() if isinstance(attempt, attempts.Attempt)]
    if not running:
        return statuses
    # The batch's calls record agno's run ids one at a time: a batch holds one connection.
    accepted_lock = threading.Lock()

    def call(attempt_id: str, attempt: attempts.Attempt) -> Callable[[], Fired]:
        def fire_one() -> Fired:
            request = _request(attempt_id, attempt)
            started = time.monotonic()
            due = attempt.run["not_before"] or attempt.run["scheduled_for"]
            lag = time.time() - due if due is not None else None  # this worker's clock against the slot's

            def accepted(run_id: str, session_id: str | None) -> None:
                with accepted_lock:
                    _record_accepted(db, attempt_id, run_id, session_id)

            outcome = fire(runtime.client, request, base_url=runtime.settings.base_url,
                           service_token=runtime.settings.service_token, on_accepted=accepted)  # fmt: skip
            return Fired(attempt_id, attempt, request, outcome, time.monotonic() - started, lag)

        return fire_one

    def record(group: list[tuple[int, Fired]]) -> None:
        fired = [item for _, item in group]
        follow_ups = _in_transaction(
            db, lambda conn, _retrying: attempts.finish_attempts(conn, [(f.attempt_id, f.outcome) for f in fired]),
            patient=True,
        )
        publish(app, follow_ups)
        for item in fired:
            metrics.fire_finished(item.outcome.status, item.lag, item.seconds)
            alerts.fire_failed(db, item.attempt.schedule, runtime.settings, item.outcome.status)  # failures only
            _log_fired(item)
            statuses[item.attempt_id] = item.outcome.status

    run_all([call(attempt_id, attempt) for attempt_id, attempt in running], record)
    return statuses


@dataclass(frozen=True)
class Fired:
    """One attempt's call, ended: what was asked, how it went, how long it took."""

    attempt_id: str
    attempt: attempts.Attempt
    request: FireRequest
    outcome: FireOutcome
    seconds: float
    lag: float | None  # seconds from the slot (or its not_before) to the call, on this worker's clock


def _request(attempt_id: str, attempt: attempts.Attempt) -> "FireRequest":
    from kern_tasks.firing.http import FireRequest

    return FireRequest(
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


def _log_fired(fired: Fired) -> None:
    request, outcome, schedule = fired.request, fired.outcome, fired.attempt.schedule
    log.info(
        "fired %s: %s %s -> %s%s in %.2fs (attempt %d, attempt id %s%s)",
        schedule["name"], request.method, request.endpoint, outcome.status,
        f" {outcome.status_code}" if outcome.status_code else "", fired.seconds,
        request.attempt, fired.attempt_id, f", agno run {outcome.run_id}" if outcome.run_id else "",
        # The same facts as fields, for handlers that show more than the line (the demo
        # prints a workflow run's steps under its fire).
        extra={"fire": {"schedule": schedule["name"], "endpoint": request.endpoint, "status": outcome.status,
                        "attempt_id": fired.attempt_id, "run_id": outcome.run_id, "session_id": outcome.session_id,
                        "schedule_id": request.schedule_id, "slot": fired.attempt.run["scheduled_for"],
                        "attempt": request.attempt}},
    )


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
