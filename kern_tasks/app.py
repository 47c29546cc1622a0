"""kern_tasks on Celery: our own app, or our tasks and beat scheduler on yours.

    # our app (what `celery -A kern_tasks worker|beat` loads)
    from kern_tasks.app import create_app
    app = create_app()

    # your app
    from kern_tasks.app import install
    install(your_app)                       # registers kern.fire, kern.workflow.*
    your_app.conf.beat_scheduler = "kern_tasks.beat:LeaseScheduler"

Task events are on in both (`worker_send_task_events`, `task_send_sent_event`), so a
plain `celery worker` and `celery beat` feed Flower with no `-E`; each fire shows in it
by schedule name, slot and attempt (kern_tasks.dispatch: labels). To turn them off on
your app, set both to False after `install`.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from kern_tasks import logs
from kern_tasks.broker import SQL_TRANSPORT, TRANSPORT as REDIS_TRANSPORT
from kern_tasks.dispatch import (
    AMQP_CLASS, MAX_PRIORITY, TASK_FIRE, TASK_FIRE_BATCH, TASK_WORKFLOW_ADVANCE, TASK_WORKFLOW_STEP,
)
from kern_tasks.firing.task import fire_batch_task, fire_task
from kern_tasks.metrics import startup as metrics_startup
from kern_tasks.runtime import bind_runtime
from kern_tasks.settings import Settings

# Redis re-delivers an unacknowledged message after this long; no wait we put in the
# broker (countdowns) comes near it.
VISIBILITY_TIMEOUT_S = 3600


def broker_url(settings: Settings) -> str:
    """KERN_BROKER_URL, or the embedded default: a SQL transport in the data folder."""
    if settings.broker_url:
        return settings.broker_url
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqla+sqlite:///{(settings.data_dir / 'broker.db').resolve()}"


def transport_options(url: str) -> dict[str, object]:
    """Redis needs a visibility timeout longer than any countdown we set; the embedded SQL
    transport hands its options to create_engine, so it gets none."""
    if url.startswith(("redis://", "rediss://", "redis+socket://")):
        return {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    return {}


AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")


def queue_max_priority(url: str) -> int | None:
    """RabbitMQ serves message priorities only on queues declared with x-max-priority, so on
    AMQP every queue Celery declares gets one as high as a schedule's priority may go (a
    queue declared before without it must be deleted once: RabbitMQ refuses to redeclare
    a queue with other arguments). Redis (kombu's priority steps) and SQL need none."""
    return MAX_PRIORITY if url.startswith(AMQP_SCHEMES) else None


def transport_class(url: str) -> str | None:
    """Redis and the embedded SQL transport go through kern_tasks.broker (kombu's, with a
    fix that keeps a worker alive when Redis restarts under in-flight tasks, and a shorter
    poll of the SQL message table); others use kombu's own."""
    if url.startswith(("redis://", "rediss://")):
        return REDIS_TRANSPORT
    if url.startswith("sqla+"):
        return SQL_TRANSPORT
    return None


def advance_task(self: Any, run_id: str) -> str:
    """kern.workflow.advance (kern_tasks.workflow.tasks.advance_task), imported at the first
    call: workflow/tasks.py brings the runner, pydantic and every definition module, which
    beat (it registers the task, never runs it) does not need (tests/test_beat_imports.py)."""
    from kern_tasks.workflow.tasks import advance_task as body

    return body(self, run_id)


def step_task(self: Any, run_id: str, path: str) -> str:
    """kern.workflow.step (kern_tasks.workflow.tasks.step_task), imported at the first call
    (as advance_task)."""
    from kern_tasks.workflow.tasks import step_task as body

    return body(self, run_id, path)


def create_app(settings: Settings | None = None, *, main: str = "kern_tasks") -> Celery:
    """Our Celery app, configured from `settings` (None: `Settings.from_env()`)."""
    settings = settings if settings is not None else Settings.from_env()
    # fixups=[]: Celery's only built-in fixup is Django's, for apps defined in a Django
    # project; ours never is, and importing it loads the whole worker (celery.worker) into
    # every process, beat included.
    app = Celery(
        main, broker=broker_url(settings), backend=settings.result_backend, amqp=AMQP_CLASS, fixups=[]
    )
    app.conf.update(
        beat_scheduler="kern_tasks.beat:LeaseScheduler",
        beat_max_loop_interval=15,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options(app.conf.broker_url),
        broker_transport=transport_class(app.conf.broker_url),
        task_queue_max_priority=queue_max_priority(app.conf.broker_url),
        # On AMQP, Celery 5.7 restores a reduced prefetch count after a reconnect with a
        # basic.qos from whichever thread acknowledges a task: under the threads pool that
        # is a pool thread sharing the consumer's socket, and the worker stops consuming
        # for good after a RabbitMQ restart (tests/test_outages.py). No reduction, no restore.
        worker_enable_prefetch_count_reduction=not app.conf.broker_url.startswith(AMQP_SCHEMES),
        worker_prefetch_multiplier=4,
        enable_utc=True,
    )
    install(app, settings)
    return app


def install(app: Celery, settings: Settings | None = None) -> None:
    """Register kern_tasks' tasks on `app` and bind it its settings (None:
    `Settings.from_env()`); `celery beat`/`celery worker` of `app` then check the database
    at start (kern_tasks.runtime). Turns task events on (see the module)."""
    settings = settings if settings is not None else Settings.from_env()
    bind_runtime(app, settings)
    logs.use(settings, app)  # KERN_LOG_FORMAT=json: Celery's log handlers write JSON lines
    # Flower sees only what workers (received, started, succeeded...) and senders (sent)
    # report; Celery's default is silence unless every worker is started with -E.
    app.conf.worker_send_task_events = True
    app.conf.task_send_sent_event = True
    if "amqp" not in vars(app) and app.amqp_cls == Celery.amqp_cls:  # not built yet, and Celery's own
        app.amqp_cls = AMQP_CLASS  # sent events named as the worker names the task (kern_tasks.dispatch)
    metrics_startup.connect()  # KERN_METRICS_PORT, served from beat's and the worker's main process
    for name, fire_body in ((TASK_FIRE, fire_task), (TASK_FIRE_BATCH, fire_batch_task)):
        app.task(
            name=name,
            bind=True,
            shared=False,  # only on this app: another app in the process has its own settings
            acks_late=True,  # a worker killed mid-call leaves the message for another
            ignore_result=True,
            max_retries=0,  # retries are attempt rows in SQL, not Celery retries
        )(fire_body)
    # Workflow runs (kern_tasks.workflow.tasks): progress in SQL, so the same options.
    for name, body in ((TASK_WORKFLOW_ADVANCE, advance_task), (TASK_WORKFLOW_STEP, step_task)):
        app.task(name=name, bind=True, shared=False, acks_late=True, ignore_result=True, max_retries=0)(body)
