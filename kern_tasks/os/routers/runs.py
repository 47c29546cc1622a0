"""Agent run endpoints in agno's protocol (agno/os/routers/agents/router.py):

    POST /agents/{id}/runs              form: message, stream, background, session_id, user_id
        stream=true        200  text/event-stream: agno's run events (RunStarted, RunContent,
                                ToolCallStarted, ToolCallCompleted, ..., then RunCompleted,
                                RunError or RunCancelled), the last one after the run is stored
        stream=false       200  the finished run (agno's RunOutput shape)
        background=true    202  {"run_id", "session_id", "status": "PENDING"} (with stream=false;
                                with stream=true the events stream as above: a streamed run
                                never depends on its connection)
    GET  /agents/{id}/runs              ?session_id= (required), status=: the agent's runs in
                                        that session, as agno lists them (RunSchema)
    GET  /agents/{id}/runs/{run_id}     the run: PENDING | RUNNING | COMPLETED | ERROR | CANCELLED
                                        (`session_id` query optional; must match if given)
    POST /agents/{id}/runs/{run_id}/cancel   200 {} (agno's answer): a waiting run ends CANCELLED,
                                        a running one at its next model or tool boundary; a run
                                        already ended stays as it is. 404 for a run this agent
                                        does not have (agno records intent for unknown ids; our
                                        run ids are ours, so an unknown one never starts).

Owners (agno's rule, os/auth.py): a run started with a user's token runs as that user
(whatever the form's user_id says); with such a token (unless agent_os:admin) the listing,
the poll and the cancel reach only that user's runs: another's is not found.

Agents run in this process (os/runner.py's RunExecutor); a client that disconnects from a
stream does not cancel its run. Run state is read from the database, so any replica answers
a poll, a listing or a cancel. Workflow runs are workflow_runs.py's; the listings (GET
/agents, /workflows) are components.py's.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import StringConstraints

from kern_tasks.errors import NotFound
from kern_tasks.os import sse
from kern_tasks.os.auth import scoped_user
from kern_tasks.os.errors import error_responses
from kern_tasks.os.forms import FORM_FIELDS, ID_MAX, form_doc, read_run_request
from kern_tasks.os.params import known_id
from kern_tasks.os.routers.sessions import RUN_STATUSES, STATUS_PATTERN
from kern_tasks.os.run_stream import EventChannel
from kern_tasks.os.schemas import RunAccepted, RunBody
from kern_tasks.os.session_schemas import RunSchema, run_schema
from kern_tasks.runs.queries import RunQueries
from kern_tasks.runs.store import StoredRun

router = APIRouter(tags=["Agents"], responses=error_responses(401, 403, 404, 409, 413, 415, 422, 429, 503))

AGENT_FORM_DOC = form_doc({**FORM_FIELDS, "stream": {
    "type": "boolean", "default": True, "description": "server-sent events (agno's run events); false: the run as JSON",
}})
AGENT_EVENTS = ["RunStarted", "ModelRequestStarted", "RunContent", "ModelRequestCompleted", "ToolCallStarted",
                "ToolCallCompleted", "RunContentCompleted", "RunCompleted", "RunError", "RunCancelled"]
# One event of the stream (OpenAPI 3.1: `schema` of text/event-stream describes each event).
STREAM_DOC = {"text/event-stream": {"schema": {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": AGENT_EVENTS},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {
            "type": "object",
            "required": ["event", "created_at", "agent_id", "run_id", "session_id"],
            "properties": {"event": {"type": "string", "enum": AGENT_EVENTS}, "created_at": {"type": "integer"},
                           "agent_id": {"type": "string"}, "run_id": {"type": "string"},
                           "session_id": {"type": "string"}},
        }},
    },
}}}


@router.post(
    "/agents/{component_id}/runs",
    summary="Run an agent",
    response_model=RunBody,
    responses={
        200: {"description": "the finished run, or (stream=true) its events", "content": STREAM_DOC},
        202: {"model": RunAccepted, "description": "accepted (background=true, stream=false)"},
    },
    openapi_extra={"requestBody": {"required": True, "content": AGENT_FORM_DOC}},
)
async def create_run(component_id: str, request: Request) -> Response:
    agent_os = request.app.state.agent_os
    target = agent_os.targets.get("agents", component_id)
    run_request = await read_run_request(request)
    if run_request.stream:
        channel = EventChannel(asyncio.get_running_loop())
        await agent_os.runner.start("agent", target, run_request, events=channel)
        return sse.response(aiter(channel))
    stored, future = await agent_os.runner.start("agent", target, run_request)
    if run_request.background:
        accepted = {"run_id": stored.run_id, "session_id": stored.session_id, "status": "PENDING"}
        return JSONResponse(accepted, status_code=202)
    finished = await agent_os.runner.wait(future)
    if finished is None:  # cannot happen: the run row was written before it was queued
        raise NotFound(f"run {stored.run_id} vanished")
    return JSONResponse(finished.to_api())


@router.get("/agents/{component_id}/runs", summary="List an agent's runs in a session",
            response_model=list[RunSchema])
async def list_runs(
    component_id: str,
    request: Request,
    session_id: str = Query(..., max_length=ID_MAX, description="the session whose runs to list"),
    status: Annotated[str, StringConstraints(pattern=STATUS_PATTERN)] | None = Query(
        None, description=f"one of {', '.join(RUN_STATUSES)} (any case)"),
) -> Any:
    agent_os = request.app.state.agent_os
    target = agent_os.targets.get("agents", component_id)
    found = await asyncio.to_thread(
        RunQueries(agent_os.db).session_runs, known_id(session_id, "session"), user_id=scoped_user(request),
        statuses=[status.upper()] if status else None,
    )
    session, rows = found if found is not None else (None, [])
    if session is None or session.get("session_type") != "agent" or session.get("agent_id") != target.id:
        raise NotFound(f"agent {target.id[:200]!r} has no session {session_id[:80]!r}")
    return [run_schema(row) for row in rows if row.get("agent_id") == target.id]


async def _agent_run(request: Request, component_id: str, run_id: str, session_id: str | None) -> tuple[Any, StoredRun]:
    """The agent and its run `run_id` (in `session_id`, if given), or NotFound."""
    agent_os = request.app.state.agent_os
    target = agent_os.targets.get("agents", component_id)
    missing = NotFound(f"agent {component_id[:200]!r} has no run {run_id[:80]!r}")
    stored = await asyncio.to_thread(agent_os.store.get, known_id(run_id, "run"))
    owner = scoped_user(request)
    if (
        stored is None
        or stored.run_type != "agent"
        or stored.component_id != target.id
        or (session_id and stored.session_id != session_id)
        or (owner is not None and stored.user_id != owner)
    ):
        raise missing
    return target, stored


@router.get("/agents/{component_id}/runs/{run_id}", summary="Get an agent run", response_model=RunBody)
async def get_run(
    component_id: str,
    run_id: str,
    request: Request,
    session_id: str | None = Query(None, max_length=ID_MAX),
) -> JSONResponse:
    _, stored = await _agent_run(request, component_id, run_id, session_id)
    return JSONResponse(stored.to_api())


@router.post("/agents/{component_id}/runs/{run_id}/cancel", summary="Cancel an agent run",
             responses={200: {"description": "asked to stop (agno's empty answer)", "content": {
                 "application/json": {"schema": {"type": "object", "maxProperties": 0}}}}})
async def cancel_run(
    component_id: str,
    run_id: str,
    request: Request,
    session_id: str | None = Query(None, max_length=ID_MAX),
) -> JSONResponse:
    _, stored = await _agent_run(request, component_id, run_id, session_id)
    if stored.is_active:
        await asyncio.to_thread(request.app.state.agent_os.runner.cancel, stored.run_id)
    return JSONResponse({})
