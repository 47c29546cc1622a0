"""Handing work to the broker: the task names, `publish` and `publish_messages`.

Beat (new slots, sweeps), the fire task (a retry, an early redelivery) and the attempt rows'
modules (scheduler/claims.py, attempts.py, sweeps.py: what to publish after a commit) speak in `Dispatch` values; this module turns them
into `kern.fire(attempt_id)` and `kern.fire_batch(attempt_ids)` messages, each on its schedule's `Route` (queue, priority). The workflow tasks (kern.workflow.advance and
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
# Several due attempts of one route in one message (kern.fire_batch(attempt_ids)), fired
# concurrently by one task: beat claims in batches, so a tick's attempts travel together.
TASK_FIRE_BATCH = "kern.fire_batch"
# Attempts per kern.fire_batch message (Celery config kern_fire_batch overrides it).
DEFAULT_FIRE_BATCH = 16
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

    Attempts due now (no countdown) on one route go as kern.fire_batch messages of up to
    `kern_fire_batch` (DEFAULT_FIRE_BATCH) attempts; the others, and a lone one, as
    kern.fire(attempt_id), whose task id is the attempt id (a batch's: its first attempt's
    id and how many follow), so the broker's logs name the rows.

    Several messages at once go as one batch where the transport can (kombu >= 5.7 on
    Redis: one pipeline instead of a round trip and a client per message). If a batch
    fails part-way its delivery is uncertain, so every message of it is sent again one by
    one: a duplicate is harmless (an attempt leaves "queued" once)."""
    if not dispatches:
        return
    messages = _fire_messages(dispatches, int(app.conf.get("kern_fire_batch") or DEFAULT_FIRE_BATCH))

    def send(producer: Any, message: tuple[str, Any, str, float, Route]) -> None:
        task, argument, task_id, countdown, route = message
        app.send_task(
            task,
            args=[argument],
            task_id=task_id,
            countdown=countdown or None,
            producer=producer,
            retry=True,
            retry_policy=_RETRY_POLICY,
            **route.options(),
        )

    with app.producer_or_acquire() as producer:
        if len(messages) > 1 and hasattr(producer, "batch"):
            try:
                with producer.batch():
                    for message in messages:
                        send(producer, message)
                return
            except _BatchPublishError as exc:
                log.warning("publishing %d message(s) as a batch failed (%s); sending one by one", len(messages), exc)
        for message in messages:
            send(producer, message)


def _fire_messages(dispatches: Sequence[Dispatch], size: int) -> list[tuple[str, Any, str, float, Route]]:
    """(task, argument, task id, countdown, route) of each message for `dispatches`."""
    messages: list[tuple[str, Any, str, float, Route]] = []
    due_now: dict[Route, list[str]] = {}
    for dispatch in dispatches:
        if dispatch.countdown or size <= 1:
            messages.append((TASK_FIRE, dispatch.attempt_id, dispatch.attempt_id, dispatch.countdown, dispatch.route))
        else:
            due_now.setdefault(dispatch.route, []).append(dispatch.attempt_id)
    for route, ids in due_now.items():
        for start in range(0, len(ids), size):
            chunk = ids[start:start + size]
            if len(chunk) == 1:
                messages.append((TASK_FIRE, chunk[0], chunk[0], 0.0, route))
            else:
                messages.append((TASK_FIRE_BATCH, chunk, f"{chunk[0]}+{len(chunk) - 1}", 0.0, route))
    return messages


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
