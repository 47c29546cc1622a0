"""Run endpoints in agno's protocol, one router per kind of component:

    POST /agents/{id}/runs              form: message, stream=false, background, session_id, user_id
        background=false  200  the finished run (agno's RunOutput shape)
        background=true   202  {"run_id", "session_id", "status": "PENDING"}
    GET  /agents/{id}/runs/{run_id}     200  the run: PENDING | RUNNING | COMPLETED | ERROR | ...
                                             (`session_id` query optional; must match if given)

and the same under /workflows, served from `Targets.workflows` (empty until workflows
run: every id answers 404 "unknown workflow"). Run state is read from the database, so
any replica answers a poll. The listings (GET /agents, /workflows) are components.py's.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from kern_tasks.errors import NotFound, ValidationError
from kern_tasks.os.forms import read_run_request
from kern_tasks.os.errors import error_responses
from kern_tasks.os.schemas import RunAccepted, RunBody
from kern_tasks.os.targets import KINDS
from kern_tasks.runs.safe import has_unstorable_text

ID_MAX = 255
# What forms.py accepts of an id: empty (none), or up to ID_MAX characters, not all blank, no NUL.
ID_FIELD = {"type": "string", "maxLength": ID_MAX, "pattern": r"^([^\x00]*[^\s\x00-\x1f\x85][^\x00]*)?$"}
FORM_DOC = {
    "application/x-www-form-urlencoded": {
        "schema": {
            "type": "object",
            "required": ["message"],
            "properties": {
                "message": {"type": "string", "minLength": 1},
                "stream": {"type": "boolean", "enum": [False], "default": False, "description": "must be false"},
                "background": {"type": "boolean", "default": False},
                "session_id": ID_FIELD,
                "user_id": ID_FIELD,
            },
        }
    }
}


def run_router(kind: str) -> APIRouter:
    """The run routes of `kind` ("agents" or "workflows")."""
    singular = KINDS[kind]
    router = APIRouter(tags=[kind.capitalize()], responses=error_responses(401, 403, 404, 409, 413, 415, 422, 429, 503))

    @router.post(
        f"/{kind}/{{component_id}}/runs",
        summary=f"Run a {singular}",
        response_model=RunBody,
        responses={202: {"model": RunAccepted, "description": "accepted (background=true)"}},
        openapi_extra={"requestBody": {"required": True, "content": FORM_DOC}},
    )
    async def create_run(component_id: str, request: Request) -> JSONResponse:
        agent_os = request.app.state.agent_os
        target = agent_os.targets.get(kind, component_id)
        run_request = await read_run_request(request)
        if run_request.stream:
            raise ValidationError("stream", "streaming is not supported: send stream=false")
        stored, future = await agent_os.runner.start(singular, target, run_request)
        if run_request.background:
            accepted = {"run_id": stored.run_id, "session_id": stored.session_id, "status": "PENDING"}
            return JSONResponse(accepted, status_code=202)
        finished = await agent_os.runner.wait(future)
        if finished is None:  # cannot happen: the run row was written before it was queued
            raise NotFound(f"run {stored.run_id} vanished")
        return JSONResponse(finished.to_api())

    @router.get(f"/{kind}/{{component_id}}/runs/{{run_id}}", summary=f"Get a {singular} run", response_model=RunBody)
    async def get_run(
        component_id: str,
        run_id: str,
        request: Request,
        session_id: str | None = Query(None, max_length=ID_MAX),
    ) -> JSONResponse:
        agent_os = request.app.state.agent_os
        target = agent_os.targets.get(kind, component_id)
        missing = NotFound(f"{singular} {component_id[:200]!r} has no run {run_id[:80]!r}")
        if len(run_id) > ID_MAX or has_unstorable_text(run_id):
            raise missing
        stored = await asyncio.to_thread(agent_os.store.get, run_id)
        if (
            stored is None
            or stored.run_type != singular
            or stored.component_id != target.id
            or (session_id and stored.session_id != session_id)
        ):
            raise missing
        return JSONResponse(stored.to_api())

    return router
