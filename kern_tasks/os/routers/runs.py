"""Agent run endpoints in agno's protocol:

    POST /agents/{id}/runs              form: message, stream=false, background, session_id, user_id
        background=false  200  the finished run (agno's RunOutput shape)
        background=true   202  {"run_id", "session_id", "status": "PENDING"}
    GET  /agents/{id}/runs/{run_id}     200  the run: PENDING | RUNNING | COMPLETED | ERROR | ...
                                             (`session_id` query optional; must match if given)

Agents run in this process (os/runner.py's RunExecutor); run state is read from the
database, so any replica answers a poll. Workflow runs are workflow_runs.py's; the
listings (GET /agents, /workflows) are components.py's.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from kern_tasks.errors import NotFound, ValidationError
from kern_tasks.os.errors import error_responses
from kern_tasks.os.forms import FORM_DOC, ID_MAX, read_run_request
from kern_tasks.os.schemas import RunAccepted, RunBody
from kern_tasks.runs.safe import has_unstorable_text

router = APIRouter(tags=["Agents"], responses=error_responses(401, 403, 404, 409, 413, 415, 422, 429, 503))


@router.post(
    "/agents/{component_id}/runs",
    summary="Run an agent",
    response_model=RunBody,
    responses={202: {"model": RunAccepted, "description": "accepted (background=true)"}},
    openapi_extra={"requestBody": {"required": True, "content": FORM_DOC}},
)
async def create_run(component_id: str, request: Request) -> JSONResponse:
    agent_os = request.app.state.agent_os
    target = agent_os.targets.get("agents", component_id)
    run_request = await read_run_request(request)
    if run_request.stream:
        raise ValidationError("stream", "streaming is not supported: send stream=false")
    stored, future = await agent_os.runner.start("agent", target, run_request)
    if run_request.background:
        accepted = {"run_id": stored.run_id, "session_id": stored.session_id, "status": "PENDING"}
        return JSONResponse(accepted, status_code=202)
    finished = await agent_os.runner.wait(future)
    if finished is None:  # cannot happen: the run row was written before it was queued
        raise NotFound(f"run {stored.run_id} vanished")
    return JSONResponse(finished.to_api())


@router.get("/agents/{component_id}/runs/{run_id}", summary="Get an agent run", response_model=RunBody)
async def get_run(
    component_id: str,
    run_id: str,
    request: Request,
    session_id: str | None = Query(None, max_length=ID_MAX),
) -> JSONResponse:
    agent_os = request.app.state.agent_os
    target = agent_os.targets.get("agents", component_id)
    missing = NotFound(f"agent {component_id[:200]!r} has no run {run_id[:80]!r}")
    if len(run_id) > ID_MAX or has_unstorable_text(run_id):
        raise missing
    stored = await asyncio.to_thread(agent_os.store.get, run_id)
    if (
        stored is None
        or stored.run_type != "agent"
        or stored.component_id != target.id
        or (session_id and stored.session_id != session_id)
    ):
        raise missing
    return JSONResponse(stored.to_api())
