"""Running a workflow on Celery workers from any process: `submit` records the run and hands
it to the workers; `result` and `wait` read how it ended.

    run_id = submit(celery_app, workflow, "AI agents in 2026", session_id="s1")
    run = wait(db, run_id, timeout=120)          # a WorkflowRunOutput, as workflow.run gives
    ended = await until_ended(db, run_id)        # its to_dict(), polled without blocking a loop

`start` is `submit` answering the run as recorded (its run_id and session_id, RUNNING).

The calling process runs nothing: it records the run as agno keeps it (agno_runs, RUNNING,
in its session: `Conflict` when the session is another workflow's or user's; record.py)
and writes its progress row (its input and its starting session_state, the stored
session's as `Workflow.run` starts it), then, after the commit, publishes
`kern.workflow.advance(run_id)`; workers (tasks.py) do the rest, and at the end the
session's state is saved and the trace ended, as in-process. The workers must know the
workflow by its id (the workflows their runtime serves: kern_tasks.runtime). Input, additional_data and media must be JSON values (or,
with an input_schema, a model or JSON of it): they cross processes through the database.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, Awaitable, Callable

from pydantic import BaseModel

from kern_tasks.db import Database, db_time
from kern_tasks.dispatch import DEFAULT_ROUTE, Route, publish_messages
from kern_tasks.errors import NotFound, ValidationError
from kern_tasks.runs.safe import has_unstorable_text
from kern_tasks.runs.store import RunStore
from kern_tasks.runtime import runtime_for
from kern_tasks.workflow import media, progress
from kern_tasks.workflow.record import load_session, run_started, workflow_data
from kern_tasks.workflow.sweep import advance_message
from kern_tasks.workflow.tasks import workflow_label
from kern_tasks.workflow.types import MEDIA_FIELDS, RunStatus, WorkflowRunOutput
from kern_tasks.workflow.workflow import Workflow, validate_input


def _json_value(field: str, value: Any) -> Any:
    """`value` as the JSON the workers read, or ValidationError(field): it must cross
    processes through the database (so no NUL or lone surrogate in its strings either)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise ValidationError(field, f"must be a JSON value to run on workers, got {type(value).__name__}") from None
    if has_unstorable_text(value):
        raise ValidationError(field, "must not hold NUL characters or lone surrogates")
    return value


# How often `until_ended` reads: soon at first (short runs), then at most every POLL_MAX_S.
POLL_FIRST_S = 0.02
POLL_MAX_S = 0.5


def submit(app: Any, workflow: Workflow, input: Any = None, **options: Any) -> str:
    """Record a new run of `workflow` and publish it to the workers of Celery app `app`;
    returns its run_id. `db` defaults to the app's database. Parameters as `Workflow.run`."""
    return start(app, workflow, input, **options).run_id


def start(
    app: Any, workflow: Workflow, input: Any = None, *, db: Database | None = None, run_id: str | None = None,
    session_id: str | None = None, user_id: str | None = None, session_state: dict[str, Any] | None = None,
    additional_data: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
    dependencies: dict[str, Any] | None = None, route: Route = DEFAULT_ROUTE, **media: list[Any] | None,
) -> WorkflowRunOutput:
    """`submit`, answering the run as recorded at its start (run_id, session_id, RUNNING).
    Input that does not fit the workflow's input_schema: ValidationError("input"), nothing
    written; a session of another workflow or user: Conflict. `route`: the queue and
    priority of every message of the run (a scheduled fire passes its schedule's)."""
    unknown = sorted(set(media) - set(MEDIA_FIELDS))
    if unknown:
        raise TypeError(f"submit() got unexpected keyword arguments: {', '.join(unknown)}")
    if workflow.input_schema is not None:
        try:
            input = validate_input(input, workflow.input_schema)
        except ValueError as exc:
            raise ValidationError("input", str(exc)) from None
    db = db if db is not None else runtime_for(app).db
    run_id = run_id or str(uuid.uuid4())
    session_id = session_id or workflow.session_id or str(uuid.uuid4())
    user_id = user_id or workflow.user_id
    store = RunStore(db)
    state = workflow.run_session_state(session_state, load_session(store, session_id), session_id, user_id, run_id)
    request = {
        "input": _json_value("input", input),
        "additional_data": _json_value("additional_data", additional_data),
        "metadata": {**(workflow.metadata or {}), **(metadata or {})},
        "dependencies": _json_value("dependencies", dependencies),
        **{name: _json_value(name, list(value)) for name, value in media.items() if value},
        **({"route": {"queue": route.queue, "priority": route.priority}} if route != DEFAULT_ROUTE else {}),
    }
    run = WorkflowRunOutput(run_id=run_id, input=input, session_id=session_id, user_id=user_id,
                            workflow_id=workflow.id, workflow_name=workflow.name, metadata=request["metadata"],
                            **{name: request[name] for name in MEDIA_FIELDS if name in request})
    run_started(store, run_id=run_id, session_id=session_id, user_id=user_id, workflow_id=workflow.id,
                workflow_name=workflow.name, run_data=run.to_dict(), description=workflow.description,
                session_workflow_data=workflow_data(workflow.id, workflow.name, workflow.steps), started_at=time.time())
    with db.begin() as conn:
        progress.create_run(conn, run_id=run_id, workflow_id=workflow.id, session_id=session_id, user_id=user_id,
                            request=request, session_state=_json_value("session_state", state), now=db_time(conn))
    publish_messages(app, [advance_message(run_id, route, workflow_label(workflow))])
    run.status = RunStatus.running
    return run


def ended(db: Database, run_id: str) -> dict[str, Any] | None:
    """The run's `to_dict()` as it ended (COMPLETED, ERROR or CANCELLED), its media inline
    (as an in-process run's), or None while it runs; NotFound for a run_id nobody submitted."""
    with db.connect() as conn:
        row = progress.get_run(conn, run_id)
    if row is None:
        raise NotFound(f"no workflow run {run_id!r}")
    return None if row["status"] == progress.RUNNING else media.inlined(db, run_id, dict(row["result"]))


def result(db: Database, run_id: str) -> WorkflowRunOutput | None:
    """`ended`, as a WorkflowRunOutput."""
    data = ended(db, run_id)
    return None if data is None else WorkflowRunOutput.from_dict(data)


async def until_ended(
    db: Database, run_id: str, *, gone: Callable[[], Awaitable[bool]] | None = None,
) -> dict[str, Any] | None:
    """`ended` once the run has ended, read on a thread (an event loop is never blocked)
    with a backoff from POLL_FIRST_S to POLL_MAX_S between reads; None as soon as `gone()`
    says nobody waits any more (a client that hung up: the run goes on regardless)."""
    delay = POLL_FIRST_S
    while True:
        data = await asyncio.to_thread(ended, db, run_id)
        if data is not None:
            return data
        if gone is not None and await gone():
            return None
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, POLL_MAX_S)


def wait(db: Database, run_id: str, *, timeout: float = 60.0, interval: float = 0.1) -> WorkflowRunOutput:
    """Poll `result` until the run ends; TimeoutError after `timeout` seconds (never longer)."""
    deadline = time.monotonic() + timeout
    while True:
        ended = result(db, run_id)
        if ended is not None:
            return ended
        if time.monotonic() > deadline:
            raise TimeoutError(f"workflow run {run_id} still running after {timeout}s")
        time.sleep(interval)
