"""What a schedule's run left, as agno keeps it: its session (with the session's runs)
and its trace (the span tree), so the links from an attempt lead to a page, not to an
API URL a browser cannot call with its cookie.

    GET /sessions/{session_id}      the session and its runs (sessions:read)
    GET /traces?run_id=...          the trace of one run, its spans as a tree (traces:read)

A user's token sees its own sessions and traces only (another's is a 404), as in the API.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from kern_tasks.dashboard import links
from kern_tasks.dashboard.reads import records_of
from kern_tasks.dashboard.render import page
from kern_tasks.dashboard.schedules import viewer_zone
from kern_tasks.os.params import ID_MAX, known_id

router = APIRouter()

PREVIEW_CHARS = 600


def cut(value: Any, most: int = PREVIEW_CHARS) -> str:
    """`value` as text (JSON for what is not a string), cut to `most` characters."""
    text = value if isinstance(value, str) else "" if value is None else (
        json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value))
    return text if len(text) <= most else text[:most] + "…"


def preview(run: dict[str, Any], most: int = PREVIEW_CHARS) -> str:
    """A run's output as text, cut short (agno keeps it in run_data.content)."""
    return cut((run.get("run_data") or {}).get("content"), most)


def input_of(run: dict[str, Any], most: int = PREVIEW_CHARS) -> str:
    given = (run.get("run_data") or {}).get("input")
    if isinstance(given, dict):
        given = given.get("input_content", given)
    return cut(given, most)


@router.get("/sessions/{session_id}", response_class=HTMLResponse)
async def session_page(request: Request, session_id: str, tz: str | None = Query(None, max_length=64)) -> HTMLResponse:
    zone = viewer_zone(tz)
    session = await records_of(request).session(known_id(session_id, "session"))
    component = session.get("agent_id") or session.get("team_id") or session.get("workflow_id")
    return page(request, "session.html", None, title=f"Session {session_id}", session=session, component=component,
                runs=session.get("runs", []), preview=preview, input_of=input_of, viewer_zone=zone,
                run_link=lambda run: links.run_of(run.get("run_type") or session.get("session_type"), component,
                                                  run["run_id"]))


@router.get("/traces", response_class=HTMLResponse)
async def trace_page(request: Request, run_id: str = Query(..., min_length=1, max_length=ID_MAX)) -> HTMLResponse:
    trace, spans = await records_of(request).trace_of_run(known_id(run_id, "run"))
    longest = max([row.span.get("duration_ms") or 0 for row in spans] + [1])
    return page(request, "trace.html", None, title=f"Trace of run {run_id}", trace=trace, spans=spans,
                longest=longest)
