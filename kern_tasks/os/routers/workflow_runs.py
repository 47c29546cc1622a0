"""Workflow run endpoints in agno's protocol (agno/os/routers/workflows/router.py), run on
Celery workers, never in this process:

    POST /workflows/{id}/runs           form: message, stream=false, background, session_id,
                                        user_id, session_state, additional_data (JSON objects)
        background=false  200  the ended run: its WorkflowRunOutput.to_dict(), as agno answers
        background=true   202  {"run_id", "session_id", "status": "PENDING"}
        stream=true       200  text/event-stream: agno's workflow events of the run as it
                                   goes on the workers (workflow/events.py), WorkflowStarted
                                   ... WorkflowCompleted | WorkflowError | WorkflowCancelled
    GET  /workflows/{id}/runs/{run_id}  200  the run as agno keeps it: RUNNING (the run as
                                             recorded at its start) until it ends, then its
                                             to_dict() (`session_id` query: must match if given)
    POST /workflows/{id}/runs/{run_id}/cancel  200 {} (agno's answer): cancelled between
                                             steps (workflow/cancel.py); 404 no such run of
                                             this workflow; 409 a run that has ended

A POST records the run and publishes it (kern_tasks.workflow.submit.start) to the AgentOS's
Celery app; a wait polls the database (`until_ended`) without blocking the event loop.
Refusals are the core's: unknown workflow 404; input failing the input_schema, bad fields
422 naming them; a session of another workflow or user 409 (os/errors.py maps them).
A user's token (JWT) runs as its subject whatever the form's user_id (forms.py), and polls
and cancels only its own runs (another's answers 404), unless it holds agent_os:admin
(os/auth.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from kern_tasks.dispatch import Route
from kern_tasks.errors import NotFound, ValidationError
from kern_tasks.firing.http import PRIORITY_HEADER, QUEUE_HEADER
from kern_tasks.os import sse
from kern_tasks.os.auth import scoped_user
from kern_tasks.os.errors import error_responses
from kern_tasks.os.forms import ID_MAX, WORKFLOW_FORM_DOC, RunRequest, read_run_request
from kern_tasks.os.schemas import RunAccepted
from kern_tasks.os.params import known_id
from kern_tasks.scheduler.spec import MAX_PRIORITY, check
from kern_tasks.workflow import media, progress
from kern_tasks.workflow.cancel import cancel
from kern_tasks.workflow.events import run_events
from kern_tasks.workflow.submit import start, until_ended
from kern_tasks.workflow.types import WorkflowRunOutput
from kern_tasks.workflow.workflow import Workflow



class WorkflowRunBody(BaseModel):
    """agno's WorkflowRunOutput.to_dict(); more keys (step_results, metrics, ...) follow."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    session_id: str
    workflow_id: str | None = None
    workflow_name: str | None = None
    status: str
    input: Any = None
    content: Any = None
    content_type: str | None = None
    created_at: int | None = None


router = APIRouter(tags=["Workflows"], responses=error_responses(401, 403, 404, 409, 413, 415, 422, 429, 503))


def _route(request: Request) -> Route:
    """The route a scheduled fire asks its run's steps to take (X-Kern-Queue, X-Kern-Priority,
    sent by firing.http with the schedule's queue and priority), checked as the schedule's
    fields are; none: the app's default."""
    queue, priority = request.headers.get(QUEUE_HEADER), request.headers.get(PRIORITY_HEADER)
    if priority is not None and not priority.strip().isdigit():
        raise ValidationError(PRIORITY_HEADER, f"{priority[:20]!r} must be an integer between 0 and {MAX_PRIORITY}")
    try:
        return Route(queue=check("queue", queue), priority=check("priority", None if priority is None else int(priority)))
    except ValidationError as exc:
        raise ValidationError(QUEUE_HEADER if exc.field == "queue" else PRIORITY_HEADER, exc.message) from None


def _start(agent_os: Any, workflow: Workflow, run_request: RunRequest, route: Route) -> WorkflowRunOutput:
    try:
        return start(agent_os.celery_app, workflow, run_request.message, db=agent_os.db,
                     session_id=run_request.session_id, user_id=run_request.user_id,
                     session_state=run_request.session_state, additional_data=run_request.additional_data,
                     route=route)
    except ValidationError as exc:
        if exc.field == "input":  # the workflow's input is the form's message
            raise ValidationError("message", exc.message) from None
        raise


@router.post(
    "/workflows/{workflow_id}/runs",
    summary="Run a workflow",
    response_model=WorkflowRunBody,
    responses={202: {"model": RunAccepted, "description": "accepted (background=true)"}},
    openapi_extra={"requestBody": {"required": True, "content": WORKFLOW_FORM_DOC}},
)
async def create_workflow_run(workflow_id: str, request: Request) -> Any:
    agent_os = request.app.state.agent_os
    workflow = agent_os.targets.get("workflows", workflow_id)
    run_request = await read_run_request(request)
    route = _route(request)
    if run_request.stream:
        return await _stream(agent_os, workflow, run_request, route)
    run = await asyncio.to_thread(_start, agent_os, workflow, run_request, route)
    accepted = {"run_id": run.run_id, "session_id": run.session_id, "status": "PENDING"}
    if run_request.background:
        return JSONResponse(accepted, status_code=202)
    ended = await until_ended(agent_os.db, run.run_id, gone=request.is_disconnected)
    if ended is None:  # the client hung up; the run goes on on the workers
        return JSONResponse(accepted, status_code=202)
    return JSONResponse(ended)


async def _stream(agent_os: Any, workflow: Workflow, run_request: RunRequest, route: Route) -> Any:
    """stream=true: start the run as above, then answer its events as agno's SSE; a client
    that hangs up stops the reading, not the run."""
    run = await asyncio.to_thread(_start, agent_os, workflow, run_request, route)
    return sse.response(run_events(agent_os.db, workflow, run.run_id))


@router.post("/workflows/{workflow_id}/runs/{run_id}/cancel", summary="Cancel a workflow run")
async def cancel_workflow_run(
    workflow_id: str,
    run_id: str,
    request: Request,
    session_id: str | None = Query(None, max_length=ID_MAX),
) -> JSONResponse:
    agent_os = request.app.state.agent_os
    workflow = agent_os.targets.get("workflows", workflow_id)
    await asyncio.to_thread(cancel, agent_os.db, workflow, known_id(run_id, "run"), session_id=session_id,
                            user_id=scoped_user(request))
    return JSONResponse({}, status_code=200)


@router.get("/workflows/{workflow_id}/runs/{run_id}", summary="Get a workflow run", response_model=WorkflowRunBody)
async def get_workflow_run(
    workflow_id: str,
    run_id: str,
    request: Request,
    session_id: str | None = Query(None, max_length=ID_MAX),
) -> JSONResponse:
    agent_os = request.app.state.agent_os
    workflow = agent_os.targets.get("workflows", workflow_id)
    body = await asyncio.to_thread(_run_body, agent_os, workflow.id, known_id(run_id, "run"), session_id,
                                   scoped_user(request))
    if body is None:
        raise NotFound(f"workflow {workflow_id[:200]!r} has no run {run_id[:80]!r}")
    return JSONResponse(body)


def _run_body(
    agent_os: Any, workflow_id: str, run_id: str, session_id: str | None, owner: str | None
) -> dict[str, Any] | None:
    """The run's body: its to_dict() once ended on the workers (what a wait answers), else
    the run as agno keeps it (agno_runs: RUNNING while on the workers, or a run that
    agno or an in-process Workflow.run kept in this database). None: not this workflow's
    (or session's, or, for a user token, that user's) run."""
    with agent_os.db.connect() as conn:
        row = progress.get_run(conn, run_id)
    if row is not None:
        if (
            row["workflow_id"] != workflow_id
            or (session_id and row["session_id"] != session_id)
            or (owner is not None and row["user_id"] != owner)
        ):
            return None
        if row["status"] != progress.RUNNING and row["result"] is not None:
            return media.inlined(agent_os.db, run_id, dict(row["result"]))
    stored = agent_os.store.get(run_id)
    if (
        stored is None
        or stored.run_type != "workflow"
        or stored.component_id != workflow_id
        or (session_id and stored.session_id != session_id)
        or (owner is not None and stored.user_id != owner)
    ):
        return None
    return stored.to_api()
