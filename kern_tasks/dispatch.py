"""Handing work to the broker: the task names, `publish` and `publish_messages`.

Beat (new slots, sweeps), the fire task (a retry, an early redelivery) and the attempt rows'
modules (scheduler/claims.py, attempts.py, sweeps.py: what to publish after a commit) speak in `Dispatch` values; this module turns them
into `kern.fire(attempt_id)` and `kern.fire_batch(attempt_ids)` messages, each on its schedule's `Route` (queue, priority). The workflow tasks (kern.workflow.advance and
kern.workflow.step) and their sweep speak in `Message` values (`publish_messages`). It
imports neither the Celery app nor the database, so every one of those may import it.

Labels (what Flower, `celery inspect` and the broker's tools show): a message still
carries ids only (`kern.fire(attempt_id)`), but its `shadow` name and its `kwargsrepr`
header say what it is, from a small typed value made where the message is:
- `FireLabel` (schedule name, slot, attempt, manual): shadow `kern.fire[daily_digest]`,
  kwargs shown as `{'schedule': 'daily_digest', 'slot': '2026-03-08T09:00:00+00:00',
  'attempt': 1}` (Flower's search: `daily_digest`, `kwargs:schedule=daily_digest`,
  `kwargs:attempt=2`); a kern.fire_batch message shows all its fires' labels:
  `kern.fire_batch[daily_digest,weekly_report]`, kwargs `{'fires': [each fire's]}` (and
  `'schedule'` when they share one);
- `StepLabel` (workflow name, step name, path): shadow `kern.workflow.step[digest/fetch]`
  and `kern.workflow.advance[digest]`, kwargs `{'workflow': 'digest', 'step': 'fetch',
  'path': '0'}`.
A message with no label (None) is sent as its plain task name. Celery names its
"task-sent" event by the task's real name even when the message has a shadow, and a sent
event that reaches Flower after the worker's "task-received" would rename the task back to
`kern.fire`; `LabelledAMQP` (our apps' amqp class) names the sent event as the worker does.

Names: `attempt_id` is our agno_schedule_runs.id; `run_id` means only agno's run id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Sequence

import kombu.exceptions
from celery.app.amqp import AMQP

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
# Celery's message priority range (kombu clamps to it on Redis; RabbitMQ's x-max-priority):
# here, not in scheduler/spec.py (pydantic), because beat's app declares it on AMQP queues.
MAX_PRIORITY = 9

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
class FireLabel:
    """What a fire is, for people: its schedule's `schedule` name, the `slot` it fires
    (epoch seconds; a manual run's slot is its trigger time), its `attempt` number, and
    whether it is a `manual` run. Shown, never read back: the worker reads the row."""

    schedule: str
    slot: int | None
    attempt: int
    manual: bool = False

    def shadow(self, task: str = TASK_FIRE) -> str:
        return f"{task}[{self.schedule}]"

    def shown(self) -> dict[str, Any]:
        slot = None if self.slot is None else datetime.fromtimestamp(self.slot, UTC).isoformat()
        shown: dict[str, Any] = {"schedule": self.schedule, "slot": slot, "attempt": self.attempt}
        if self.manual:
            shown["manual"] = True
        return shown


@dataclass(frozen=True)
class StepLabel:
    """What a workflow message is: its `workflow` (name, else id), the `step` name and the
    step's `path` in the run (both None for an advance; `step` None when the sender knows
    only the path: the sweep's re-sends)."""

    workflow: str
    step: str | None = None
    path: str | None = None

    def shadow(self, task: str) -> str:
        what = self.step if self.step is not None else self.path
        return f"{task}[{self.workflow}]" if what is None else f"{task}[{self.workflow}/{what}]"

    def shown(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"workflow": self.workflow}
        if self.step is not None:
            shown["step"] = self.step
        if self.path is not None:
            shown["path"] = self.path
        return shown


class LabelledAMQP(AMQP):
    """Celery's AMQP, with a shadowed message's "task-sent" event named by its shadow."""

    def as_task_v2(self, *args: Any, **kwargs: Any) -> Any:
        message = super().as_task_v2(*args, **kwargs)
        shadow = message.headers.get("shadow")
        if shadow and message.sent_event is not None:
            message.sent_event["name"] = shadow
        return message


AMQP_CLASS = f"{__name__}:LabelledAMQP"


def _label_options(task: str, label: FireLabel | StepLabel | None) -> dict[str, Any]:
    """send_task's `shadow` and `kwargsrepr` for a label (a repr Flower parses back into
    pairs for its `kwargs:key=value` search)."""
    if label is None:
        return {}
    return {"shadow": label.shadow(task), "kwargsrepr": repr(label.shown())}


def _batch_label_options(labels: Sequence[FireLabel | None]) -> dict[str, Any]:
    """A kern.fire_batch message's shadow and kwargsrepr: every fire's label, in order."""
    known = [label for label in labels if label is not None]
    if not known:
        return {}
    names = list(dict.fromkeys(label.schedule for label in known))
    shown: dict[str, Any] = {"schedule": names[0]} if len(names) == 1 else {}
    shown["fires"] = [label.shown() for label in known]
    return {"shadow": f"{TASK_FIRE_BATCH}[{','.join(names)}]", "kwargsrepr": repr(shown)}


@dataclass(frozen=True)
class Dispatch:
    """An attempt to hand to the broker: `kern.fire(attempt_id)`, held `countdown` seconds,
    on its schedule's route, shown as its `label` says (several travel in one
    kern.fire_batch message, which shows all their labels)."""

    attempt_id: str
    countdown: float = 0.0
    route: Route = DEFAULT_ROUTE
    label: FireLabel | None = None


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

    def send(producer: Any, message: _FireMessage) -> None:
        task, argument, task_id, countdown, route, shown = message
        app.send_task(
            task,
            args=[argument],
            task_id=task_id,
            countdown=countdown or None,
            producer=producer,
            retry=True,
            retry_policy=_RETRY_POLICY,
            **route.options(),
            **shown,
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


# (task, argument, task id, countdown, route, the label's send options)
_FireMessage = tuple[str, Any, str, float, Route, dict[str, Any]]


def _fire_messages(dispatches: Sequence[Dispatch], size: int) -> list[_FireMessage]:
    """(task, argument, task id, countdown, route, label options) of each message for `dispatches`."""
    messages: list[_FireMessage] = []
    due_now: dict[Route, list[Dispatch]] = {}
    for dispatch in dispatches:
        if dispatch.countdown or size <= 1:
            messages.append((TASK_FIRE, dispatch.attempt_id, dispatch.attempt_id, dispatch.countdown, dispatch.route,
                             _label_options(TASK_FIRE, dispatch.label)))
        else:
            due_now.setdefault(dispatch.route, []).append(dispatch)
    for route, due in due_now.items():
        for start in range(0, len(due), size):
            chunk = due[start:start + size]
            if len(chunk) == 1:
                messages.append((TASK_FIRE, chunk[0].attempt_id, chunk[0].attempt_id, 0.0, route,
                                 _label_options(TASK_FIRE, chunk[0].label)))
            else:
                ids = [d.attempt_id for d in chunk]
                messages.append((TASK_FIRE_BATCH, ids, f"{ids[0]}+{len(ids) - 1}", 0.0, route,
                                 _batch_label_options([d.label for d in chunk])))
    return messages


@dataclass(frozen=True)
class Message:
    """Any other task message: `task(*args)` (the workflow tasks' progress is in SQL, so
    a message carries ids only)."""

    task: str
    args: tuple[str, ...]
    route: Route = DEFAULT_ROUTE
    label: StepLabel | None = None


def publish_messages(app: Any, messages: Sequence[Message]) -> None:
    """Send `messages` over one producer connection, with the broker retry policy of `publish`."""
    if not messages:
        return
    with app.producer_or_acquire() as producer:
        for message in messages:
            app.send_task(message.task, args=list(message.args), producer=producer, retry=True,
                          retry_policy=_RETRY_POLICY, **message.route.options(),
                          **_label_options(message.task, message.label))
