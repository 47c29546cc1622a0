"""agno's session routes over the runs this OS keeps (agno/os/routers/session/session.py):

    GET    /sessions                  type, component_id, user_id, session_name, page, limit,
                                      sort_by, sort_order (agno's defaults: 20 a page, newest first)
    GET    /sessions/{id}             the session in its type's detail shape (type, user_id)
    GET    /sessions/{id}/runs        its runs in order (type, user_id, created_after,
                                      created_before, status: repeatable, any case)
    GET    /sessions/{id}/runs/{run}  one of them (type, user_id)
    DELETE /sessions/{id}             204; the session and its runs (user_id scopes it)

`user_id` narrows every route to that owner's sessions (a session of another owner is not
found). A user's token is narrowed to that user whatever `user_id` says (os/auth.py's
`scoped_user`, agno's rule), unless it holds agent_os:admin. Unknown sessions answer 404,
including on DELETE (agno answers 204 there); a `type` the session is not answers 404 too;
bad filters answer 422.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal, Union

from fastapi import APIRouter, Query, Request, Response
from pydantic import StringConstraints

from kern_tasks.errors import NotFound
from kern_tasks.os.auth import scoped_user
from kern_tasks.os.session_schemas import (
    RunSchema,
    SessionDetail,
    SessionSummary,
    WorkflowRunSchema,
    run_schema,
    session_detail,
)
from kern_tasks.os.describe import SESSION_TABLE, database_id
from kern_tasks.os.errors import error_responses
from kern_tasks.os.params import PAGE_MAX, check_store, known_id, text_filter
from kern_tasks.os.schemas import PaginatedResponse
from kern_tasks.runs.queries import SESSION_SORT_FIELDS, RunQueries
from kern_tasks.runs.store import ACTIVE, TERMINAL
from kern_tasks.scheduler.manager import MAX_PAGE_LIMIT

SessionType = Literal["agent", "team", "workflow"]
SortField = Literal[SESSION_SORT_FIELDS]  # type: ignore[valid-type]
# agno's RunStatus values: ours, and REGENERATED (a run agno replaced by regenerating it).
RUN_STATUSES = (*ACTIVE, *TERMINAL, "REGENERATED")
# One of them in any case, as agno takes them (a pattern, so the document says it too).
STATUS_PATTERN = "^(" + "|".join("".join(f"[{c.upper()}{c.lower()}]" for c in s) for s in RUN_STATUSES) + ")$"
EPOCH_MAX = 2**53

router = APIRouter(tags=["Sessions"], responses=error_responses(401, 403, 404, 422, 503))


def _queries(request: Request, db_id: str | None, table: str | None) -> RunQueries:
    agent_os = request.app.state.agent_os
    check_store(database_id(agent_os.db), db_id, (SESSION_TABLE,), table)
    return RunQueries(agent_os.db)


def _found(session: dict[str, Any] | None, session_id: str, session_type: str | None) -> dict[str, Any]:
    if session is None or (session_type is not None and session["session_type"] != session_type):
        kind = f"{session_type} session" if session_type else "session"
        raise NotFound(f"no {kind} with id {session_id[:80]!r}")
    return session


@router.get("/sessions", response_model=PaginatedResponse[SessionSummary], summary="List sessions")
async def list_sessions(
    request: Request,
    session_type: SessionType | None = Query(None, alias="type"),
    component_id: str | None = text_filter("agent, team or workflow id"),
    user_id: str | None = text_filter("owner"),
    session_name: str | None = text_filter("part of the session's name (any case)"),
    limit: int = Query(20, ge=1, le=MAX_PAGE_LIMIT),
    page: int = Query(1, ge=1, le=PAGE_MAX),
    sort_by: SortField = Query("created_at"),
    sort_order: Literal["asc", "desc"] = Query("desc"),
    db_id: str | None = text_filter("this OS's database id"),
    table: str | None = text_filter("this OS's session table"),
) -> dict[str, Any]:
    queries, owner = _queries(request, db_id, table), scoped_user(request, user_id)
    found = await asyncio.to_thread(
        queries.sessions, session_type=session_type, component_id=component_id, user_id=owner,
        session_name=session_name, page=page, limit=limit, sort_by=sort_by, sort_order=sort_order,
    )
    return {
        "data": [SessionSummary.from_row(row) for row in found.data],
        "meta": {"page": found.page, "limit": found.limit, "total_pages": found.total_pages,
                 "total_count": found.total_count},
    }


@router.get("/sessions/{session_id}", response_model=SessionDetail, summary="Get a session")
async def get_session(
    session_id: str,
    request: Request,
    session_type: SessionType | None = Query(None, alias="type"),
    user_id: str | None = text_filter("owner"),
    db_id: str | None = text_filter("this OS's database id"),
    table: str | None = text_filter("this OS's session table"),
) -> Any:
    queries, owner = _queries(request, db_id, table), scoped_user(request, user_id)
    session = await asyncio.to_thread(queries.session, known_id(session_id, "session"), user_id=owner)
    return session_detail(_found(session, session_id, session_type))


@router.get("/sessions/{session_id}/runs", response_model=list[Union[WorkflowRunSchema, RunSchema]],
            summary="List a session's runs")
async def get_session_runs(
    session_id: str,
    request: Request,
    session_type: SessionType | None = Query(None, alias="type"),
    user_id: str | None = text_filter("owner"),
    created_after: int | None = Query(None, ge=0, le=EPOCH_MAX, description="epoch seconds, inclusive"),
    created_before: int | None = Query(None, ge=0, le=EPOCH_MAX, description="epoch seconds, inclusive"),
    status: list[Annotated[str, StringConstraints(pattern=STATUS_PATTERN)]] | None = Query(
        None, description=f"any of {', '.join(RUN_STATUSES)} (any case)"),
    db_id: str | None = text_filter("this OS's database id"),
    table: str | None = text_filter("this OS's session table"),
) -> Any:
    wanted = sorted({value.upper() for value in status or []})
    queries, owner = _queries(request, db_id, table), scoped_user(request, user_id)
    found = await asyncio.to_thread(
        queries.session_runs, known_id(session_id, "session"), user_id=owner, created_after=created_after,
        created_before=created_before, statuses=wanted or None,
    )
    session, run_rows = found if found is not None else (None, [])
    _found(session, session_id, session_type)
    return [run_schema(row) for row in run_rows]


@router.get("/sessions/{session_id}/runs/{run_id}", response_model=Union[WorkflowRunSchema, RunSchema],
            summary="Get a run of a session")
async def get_session_run(
    session_id: str,
    run_id: str,
    request: Request,
    session_type: SessionType | None = Query(None, alias="type"),
    user_id: str | None = text_filter("owner"),
    db_id: str | None = text_filter("this OS's database id"),
    table: str | None = text_filter("this OS's session table"),
) -> Any:
    queries, owner = _queries(request, db_id, table), scoped_user(request, user_id)
    found = await asyncio.to_thread(
        queries.session_runs, known_id(session_id, "session"), user_id=owner, run_id=known_id(run_id, "run"))
    session, run_rows = found if found is not None else (None, [])
    _found(session, session_id, session_type)
    if not run_rows:
        raise NotFound(f"session {session_id[:80]!r} has no run {run_id[:80]!r}")
    return run_schema(run_rows[0])


@router.delete("/sessions/{session_id}", status_code=204, response_class=Response, summary="Delete a session")
async def delete_session(
    session_id: str,
    request: Request,
    user_id: str | None = text_filter("owner"),
    db_id: str | None = text_filter("this OS's database id"),
    table: str | None = text_filter("this OS's session table"),
) -> Response:
    queries, owner = _queries(request, db_id, table), scoped_user(request, user_id)
    if not await asyncio.to_thread(queries.delete_session, known_id(session_id, "session"), user_id=owner):
        raise NotFound(f"no session with id {session_id[:80]!r}")
    return Response(status_code=204)
