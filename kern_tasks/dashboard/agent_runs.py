"""An agent's or a team's run as a page, so an attempt's "run" link opens in the browser
that holds the dashboard's cookie (the API's GET /agents/{id}/runs/{run_id} does not take
it): its status, the agent, started and took, owner, the input message, the output, the
tool calls (name, arguments, result preview), the error, with links to its session, its
trace and the schedule attempts that started it.

    GET /agents/{agent_id}/runs/{run_id}          the page (sessions:read)
    GET /teams/{team_id}/runs/{run_id}            the same for a team's run
    GET .../runs/{run_id}/state?mark=             what the page polls while the run is in
                                                  flight: {"changed": false}, or its parts again

A user's token sees its own runs only (another's is a 404, as in the API). The poll reads
the one run row; static/run_poll.js waits 1 s growing to 15 s between polls and stops once
the run ended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from kern_tasks.dashboard import links
from kern_tasks.dashboard.reads import records_of
from kern_tasks.dashboard.records import cut, input_of, preview
from kern_tasks.dashboard.render import page, render
from kern_tasks.dashboard.runs import MARK_MAX
from kern_tasks.dashboard.schedules import viewer_zone
from kern_tasks.os.params import known_id
from kern_tasks.runs.store import StoredRun

router = APIRouter()

TEXT_CHARS = 20_000  # the input and output in full, up to this (a page, not a download)
RESULT_CHARS = 600   # a tool's arguments and result, previewed
MOST_TOOL_CALLS = 100


@dataclass(frozen=True)
class ToolCallView:
    name: str
    arguments: str
    result: str
    failed: bool


@dataclass(frozen=True)
class RunView:
    """What the page shows of a stored run."""

    run: StoredRun
    kind: str  # agent | team
    input: str
    output: str
    error: str | None
    tool_calls: list[ToolCallView]
    model: str | None
    took_s: float | None  # the run's own measure, else its row's times
    ended: bool
    mark: str  # changes whenever the run row does

    @property
    def component_id(self) -> str:
        return self.run.component_id or ""


def tool_calls_of(data: dict[str, Any]) -> list[ToolCallView]:
    """agno's run_data.tools when it has them (ToolExecution dicts), else the calls and
    answers in the run's chat messages (the assistant's tool_calls, the tool messages)."""
    found: list[ToolCallView] = []
    tools = data.get("tools")
    if isinstance(tools, list) and tools:
        for tool in tools[:MOST_TOOL_CALLS]:
            if isinstance(tool, dict):
                found.append(ToolCallView(str(tool.get("tool_name") or "?"), cut(tool.get("tool_args"), RESULT_CHARS),
                                          cut(tool.get("result"), RESULT_CHARS), bool(tool.get("tool_call_error"))))
        return found
    messages = [m for m in data.get("messages") or [] if isinstance(m, dict)]
    answers = {m.get("tool_call_id"): m.get("content") for m in messages if m.get("role") == "tool"}
    for message in messages:
        for call in message.get("tool_calls") or [] if message.get("role") == "assistant" else []:
            function = call.get("function") or {} if isinstance(call, dict) else {}
            answer = answers.get(call.get("id")) if isinstance(call, dict) else None
            found.append(ToolCallView(str(function.get("name") or "?"), cut(function.get("arguments"), RESULT_CHARS),
                                      cut(answer, RESULT_CHARS), answer is None or _failed(answer)))
    return found[:MOST_TOOL_CALLS]


def _failed(answer: Any) -> bool:
    # The agent answers a failed call with a JSON object holding "error" (agent/agent.py).
    return isinstance(answer, str) and answer.startswith('{"error"')


def view_of(run: StoredRun) -> RunView:
    data = run.run_data
    ended = not run.is_active
    metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    took = metrics.get("duration") if isinstance(metrics.get("duration"), (int, float)) else None
    if took is None:
        until = run.updated_at if ended and run.updated_at else int(time.time())
        took = max(0, until - run.created_at)
    output = preview({"run_data": data}, TEXT_CHARS)
    error = cut(data.get("error"), TEXT_CHARS) or (output if run.status == "ERROR" else None)
    return RunView(run=run, kind=run.run_type, input=input_of({"run_data": data}, TEXT_CHARS),
                   output="" if output == error else output, error=error or None, tool_calls=tool_calls_of(data),
                   model=data.get("model"), took_s=took, ended=ended,
                   mark=f"{run.status}:{run.updated_at or run.created_at}")


def _ids(kind: str, component_id: str, run_id: str) -> tuple[str, str]:
    return known_id(component_id, kind), known_id(run_id, "run")


async def _page(request: Request, kind: str, component_id: str, run_id: str, tz: str | None) -> HTMLResponse:
    zone = viewer_zone(tz)
    component_id, run_id = _ids(kind, component_id, run_id)
    run, attempts = await records_of(request).component_run(kind, component_id, run_id)
    view = view_of(run)
    return page(request, "agent_run.html", "runs", title=f"{component_id} run", view=view, viewer_zone=zone,
                attempts=attempts,
                state_url=links.component_run(kind, component_id, run_id) + "/state")


async def _state(request: Request, kind: str, component_id: str, run_id: str, mark: str | None,
                 tz: str | None) -> JSONResponse:
    zone = viewer_zone(tz)
    component_id, run_id = _ids(kind, component_id, run_id)
    run, _ = await records_of(request).component_run(kind, component_id, run_id, with_attempts=False)
    view = view_of(run)
    if mark is not None and mark == view.mark:
        return JSONResponse({"changed": False}, headers={"cache-control": "no-store"})
    return JSONResponse({"changed": True, "mark": view.mark, "ended": view.ended,
                         "parts": {"agent-run-body": render("_agent_run.html", view=view, viewer_zone=zone)}},
                        headers={"cache-control": "no-store"})


@router.get("/agents/{agent_id}/runs/{run_id}", response_class=HTMLResponse)
async def agent_run_page(request: Request, agent_id: str, run_id: str,
                         tz: str | None = Query(None, max_length=64)) -> HTMLResponse:
    return await _page(request, "agent", agent_id, run_id, tz)


@router.get("/teams/{team_id}/runs/{run_id}", response_class=HTMLResponse)
async def team_run_page(request: Request, team_id: str, run_id: str,
                        tz: str | None = Query(None, max_length=64)) -> HTMLResponse:
    return await _page(request, "team", team_id, run_id, tz)


@router.get("/agents/{agent_id}/runs/{run_id}/state")
async def agent_run_state(request: Request, agent_id: str, run_id: str,
                          mark: str | None = Query(None, max_length=MARK_MAX),
                          tz: str | None = Query(None, max_length=64)) -> JSONResponse:
    return await _state(request, "agent", agent_id, run_id, mark, tz)


@router.get("/teams/{team_id}/runs/{run_id}/state")
async def team_run_state(request: Request, team_id: str, run_id: str,
                         mark: str | None = Query(None, max_length=MARK_MAX),
                         tz: str | None = Query(None, max_length=64)) -> JSONResponse:
    return await _state(request, "team", team_id, run_id, mark, tz)
