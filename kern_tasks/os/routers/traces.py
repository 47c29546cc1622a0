"""agno's trace routes over the traces this OS keeps (agno/os/routers/traces/traces.py):

    GET /traces              run_id, session_id, user_id, agent_id, team_id, workflow_id,
                             status (OK | ERROR | UNSET), start_time, end_time (ISO 8601; a
                             time without a zone is UTC), page, limit: newest first
    GET /traces/{trace_id}   the trace and its span tree; span_id: that span alone (a
                             TraceNode); run_id: only if it is that run's trace

A user's token sees only that user's traces, whatever `user_id` says (os/auth.py's
`scoped_user`, agno's rule), unless it holds agent_os:admin; another's trace is not found.
`start_time` keeps traces that start at or after it, `end_time` those that end at or before
it. An unknown trace or span answers 404; an unreadable time 422 (pydantic's datetime
parsing, so the document says date-time).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Literal, Union

from fastapi import APIRouter, Query, Request

from kern_tasks.errors import NotFound
from kern_tasks.os.auth import scoped_user
from kern_tasks.os.describe import database_id
from kern_tasks.os.errors import error_responses
from kern_tasks.os.params import PAGE_MAX, IsoTime, check_store, known_id, text_filter
from kern_tasks.os.schemas import PaginatedResponse
from kern_tasks.os.trace_schemas import TraceDetail, TraceNode, TraceSummary
from kern_tasks.runs.queries import RunQueries
from kern_tasks.runs.traces import iso
from kern_tasks.scheduler.manager import MAX_PAGE_LIMIT

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST_INSTANT = (datetime(1, 1, 1, tzinfo=UTC) - EPOCH).total_seconds()
LAST_INSTANT = (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) - EPOCH).total_seconds()  # floats lose the µs

router = APIRouter(tags=["Traces"], responses=error_responses(401, 403, 404, 422, 503))


def _queries(request: Request, db_id: str | None) -> RunQueries:
    agent_os = request.app.state.agent_os
    check_store(database_id(agent_os.db), db_id, (), None)
    return RunQueries(agent_os.db)


def stored_time(moment: datetime | None) -> str | None:
    """A time as the traces store theirs (ISO 8601 in UTC, microseconds), for comparing; a
    time without a zone is UTC. Beyond what the store can write (year 1 to 9999 in UTC, which
    an offset can cross) it is the first or last instant there is."""
    if moment is None:
        return None
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    seconds = (aware - EPOCH).total_seconds()  # no overflow, unlike .timestamp() at the edges
    return iso(min(max(seconds, FIRST_INSTANT), LAST_INSTANT))


@router.get("/traces", response_model=PaginatedResponse[TraceSummary], summary="List traces")
async def list_traces(
    request: Request,
    run_id: str | None = text_filter("the run's id"),
    session_id: str | None = text_filter("the session's id"),
    user_id: str | None = text_filter("owner"),
    agent_id: str | None = text_filter("agent id"),
    team_id: str | None = text_filter("team id"),
    workflow_id: str | None = text_filter("workflow id"),
    status: Literal["OK", "ERROR", "UNSET"] | None = Query(None),
    start_time: IsoTime | None = Query(None, description="ISO 8601; traces that start at or after it"),
    end_time: IsoTime | None = Query(None, description="ISO 8601; traces that end at or before it"),
    page: int = Query(1, ge=1, le=PAGE_MAX),
    limit: int = Query(20, ge=1, le=MAX_PAGE_LIMIT),
    db_id: str | None = text_filter("this OS's database id"),
) -> dict[str, Any]:
    bounds = {"start_time": stored_time(start_time), "end_time": stored_time(end_time)}
    queries = _queries(request, db_id)
    found = await asyncio.to_thread(
        queries.traces, run_id=run_id, session_id=session_id, user_id=scoped_user(request, user_id), agent_id=agent_id,
        team_id=team_id, workflow_id=workflow_id, status=status, page=page, limit=limit, **bounds,
    )
    return {
        "data": [TraceSummary.from_row(row) for row in found.data],
        "meta": {"page": found.page, "limit": found.limit, "total_pages": found.total_pages,
                 "total_count": found.total_count},
    }


@router.get("/traces/{trace_id}", response_model=Union[TraceDetail, TraceNode], summary="Get a trace or one span")
async def get_trace(
    trace_id: str,
    request: Request,
    span_id: str | None = text_filter("one span of the trace"),
    run_id: str | None = text_filter("the run the trace must belong to"),
    db_id: str | None = text_filter("this OS's database id"),
) -> Any:
    queries = _queries(request, db_id)
    found = await asyncio.to_thread(queries.trace, known_id(trace_id, "trace"), run_id=run_id)
    owner = scoped_user(request)
    if found is not None and owner is not None and found[0].get("user_id") != owner:
        found = None  # another user's trace is as missing as one that never was
    if found is None:
        raise NotFound(f"no trace with id {trace_id[:80]!r}" + (f" for run {run_id[:80]!r}" if run_id else ""))
    trace, span_rows = found
    if span_id is None:
        return TraceDetail.from_rows(trace, span_rows)
    span = next((s for s in span_rows if s["span_id"] == span_id), None)
    if span is None:
        raise NotFound(f"trace {trace_id[:80]!r} has no span {span_id[:80]!r}")
    return TraceNode.from_span(span)
