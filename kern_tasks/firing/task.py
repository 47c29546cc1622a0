"""`kern.fire(run_id)`: fire one attempt of a schedule and record how it ended.

The task only fires: taking the attempt (queued -> running), the HTTP call, and
recording the outcome (with the retry it may bring) are each one step below.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, TypeVar

import kombu.exceptions
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from kern_tasks.db import Database
from kern_tasks.firing import records
from kern_tasks.firing.http import FireRequest, fire
from kern_tasks.runtime import runtime_for
from kern_tasks.scheduler.claims import Dispatch

log = logging.getLogger("kern_tasks.fire")
T = TypeVar("T")

# A database outage while recording must not lose the outcome: keep trying this long.
RECORD_RETRY_S = 120
# kombu >= 5.7 raises this when a publish batch failed part-way; older kombu has no batches.
_BatchPublishError: Any = getattr(kombu.exceptions, "BatchPublishError", ())


def fire_task(self: Any, run_id: str) -> str:
    """Celery task body (registered as kern.fire by kern_tasks.app.install)."""
    runtime = runtime_for(self.app)
    db = runtime.db
    attempt = _in_transaction(
        db, lambda conn, retrying: records.start_attempt(conn, run_id, resume=retrying), patient=True
    )
    if attempt is None:
        return "nothing to do"
    if isinstance(attempt, records.NotYet):
        publish(self.app, [Dispatch(run_id, countdown=attempt.seconds)])
        return "not yet"
    request = FireRequest(
        schedule_id=attempt.schedule["id"],
        attempt_id=run_id,
        attempt=attempt.run["attempt"],
        method=attempt.schedule["method"],
        endpoint=attempt.schedule["endpoint"],
        payload=attempt.schedule["payload"],
        timeout_seconds=attempt.schedule["timeout_seconds"],
        user_id=attempt.schedule["user_id"],
        idempotency_key=attempt.idempotency_key,
    )
    started = time.monotonic()
    outcome = fire(
        runtime.client, request, base_url=runtime.settings.base_url, service_token=runtime.settings.service_token
    )
    follow_up = _in_transaction(
        db, lambda conn, _retrying: records.finish_attempt(conn, run_id, outcome), patient=True
    )
    if follow_up is not None:
        publish(self.app, [follow_up])
    log.info(
        "fired %s: %s %s -> %s%s in %.2fs (attempt %d, run %s%s)",
        attempt.schedule["name"], request.method, request.endpoint, outcome.status,
        f" {outcome.status_code}" if outcome.status_code else "", time.monotonic() - started,
        request.attempt, run_id, f", agent run {outcome.run_id}" if outcome.run_id else "",
    )
    return outcome.status


def publish(app: Any, dispatches: list[Dispatch]) -> None:
    """Hand attempts to the broker, over one producer connection.

    Several at once go as one batch where the transport can (kombu >= 5.7 on Redis: one
    pipeline instead of a round trip and a client per message; 500 publish about 3x
    faster). If a batch fails part-way its delivery is uncertain, so every message of it
    is sent again one by one: a duplicate is harmless (an attempt leaves "queued" once)."""
    if not dispatches:
        return
    from kern_tasks.app import TASK_FIRE

    def send(producer: Any, dispatch: Dispatch) -> None:
        app.send_task(
            TASK_FIRE,
            args=[dispatch.run_id],
            task_id=dispatch.run_id,
            countdown=dispatch.countdown or None,
            producer=producer,
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2},
        )

    with app.producer_or_acquire() as producer:
        if len(dispatches) > 1 and hasattr(producer, "batch"):
            try:
                with producer.batch():
                    for dispatch in dispatches:
                        send(producer, dispatch)
                return
            except _BatchPublishError as exc:
                log.warning("publishing %d run(s) as a batch failed (%s); sending one by one", len(dispatches), exc)
        for dispatch in dispatches:
            send(producer, dispatch)


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
