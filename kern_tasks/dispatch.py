"""Handing work to the broker: the task names, `publish` and `publish_messages`.

Beat (new slots, sweeps), the fire task (a retry, an early redelivery) and the attempt rows'
modules (scheduler/claims.py, attempts.py, sweeps.py: what to publish after a commit) speak in `Dispatch` values; this module turns them
into `kern.fire(attempt_id)` messages, each on its schedule's `Route` (queue, priority). The workflow tasks (kern.workflow.advance and
kern.workflow.step) and their sweep speak in `Message` values (`publish_messages`). It
imports neither the Celery app nor the database, so every one of those may import it.

Names: `attempt_id` is our agno_schedule_runs.id; `run_id` means only agno's run id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import kombu.exceptions

log = logging.getLogger("kern_tasks.dispatch")

TASK_FIRE = "kern.fire"
# A workflow run on Celery (kern_tasks.workflow.tasks): decide what runs next, run one step.
TASK_WORKFLOW_ADVANCE = "kern.workflow.advance"
TASK_WORKFLOW_STEP = "kern.workflow.step"

# kombu >= 5.7 raises this when a publish batch failed part-way; older kombu has no batches.
_BatchPublishError: Any = getattr(kombu.exceptions, "BatchPublishError", ())
_RETRY_POLICY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2}


@dataclass(frozen=True)
class Route:
    """Where a message goes: its schedule's `queue` (None: the app's default queue) and
    message `priority` (None: the broker's default). A fire and the workflow steps it
    starts share one route."""

    queue: str | None = None
    priority: int | None = None

    def options(self) -> dict[str, Any]:
        """send_task's routing options; nothing for the defaults, so the app's routing applies."""
        given = {"queue": self.queue, "priority": self.priority}
        return {key: value for key, value in given.items() if value is not None}


DEFAULT_ROUTE = Route()


@dataclass(frozen=True)
class Dispatch:
    """An attempt to hand to the broker: `kern.fire(attempt_id)`, held `countdown` seconds,
    on its schedule's route."""

    attempt_id: str
    countdown: float = 0.0
    route: Route = DEFAULT_ROUTE


def publish(app: Any, dispatches: Sequence[Dispatch]) -> None:
    """Hand attempts to the broker, over one producer connection.

    Several at once go as one batch where the transport can (kombu >= 5.7 on Redis: one
    pipeline instead of a round trip and a client per message; 500 publish about 3x
    faster). If a batch fails part-way its delivery is uncertain, so every message of it
    is sent again one by one: a duplicate is harmless (an attempt leaves "queued" once).
    The message's task id is the attempt id, so the broker's logs name the row."""
    if not dispatches:
        return

    def send(producer: Any, dispatch: Dispatch) -> None:
        app.send_task(
            TASK_FIRE,
            args=[dispatch.attempt_id],
            task_id=dispatch.attempt_id,
            countdown=dispatch.countdown or None,
            producer=producer,
            retry=True,
            retry_policy=_RETRY_POLICY,
            **dispatch.route.options(),
        )

    with app.producer_or_acquire() as producer:
        if len(dispatches) > 1 and hasattr(producer, "batch"):
            try:
                with producer.batch():
                    for dispatch in dispatches:
                        send(producer, dispatch)
                return
            except _BatchPublishError as exc:
                log.warning("publishing %d attempt(s) as a batch failed (%s); sending one by one", len(dispatches), exc)
        for dispatch in dispatches:
            send(producer, dispatch)


@dataclass(frozen=True)
class Message:
    """Any other task message: `task(*args)` (the workflow tasks' progress is in SQL, so
    a message carries ids only)."""

    task: str
    args: tuple[str, ...]
    route: Route = DEFAULT_ROUTE


def publish_messages(app: Any, messages: Sequence[Message]) -> None:
    """Send `messages` over one producer connection, with the broker retry policy of `publish`."""
    if not messages:
        return
    with app.producer_or_acquire() as producer:
        for message in messages:
            app.send_task(message.task, args=list(message.args), producer=producer, retry=True,
                          retry_policy=_RETRY_POLICY, **message.route.options())
