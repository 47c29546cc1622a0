"""What this OS serves, in agno's shapes: GET /agents, /agents/{id}, /workflows,
/workflows/{id} (agno's AgentSummaryResponse, AgentResponse, WorkflowSummaryResponse,
WorkflowResponse).

Agents and workflows are the ones the run routes serve (`AgentOS(workflows=[...])`,
listed with their steps). An unknown id answers 404; `version` (agno's component versions, which this OS
does not keep) answers 404 for any version. A user token holding only per-resource scopes
(agents:<id>:read) lists the ones it may read, as agno filters it (os/auth.py `listable`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from kern_tasks.errors import NotFound
from kern_tasks.os.auth import listable
from kern_tasks.os.agno_schemas import AgentDetail, AgentSummary, WorkflowDetail, WorkflowSummary
from kern_tasks.os.describe import (
    agent_detail,
    agent_summary,
    database_id,
    workflow_detail,
    workflow_summary,
    workflows_by_id,
)
from kern_tasks.os.errors import error_responses
from kern_tasks.os.params import known_id

router = APIRouter(responses=error_responses(401, 403, 404, 422))


@router.get("/agents", response_model=list[AgentSummary], tags=["Agents"], summary="List agents")
async def list_agents(request: Request) -> Any:
    agent_os = request.app.state.agent_os
    db_id = database_id(agent_os.db)
    shown = listable(request, "agents")
    return [agent_summary(agent, db_id) for agent in agent_os.targets.agents.values()
            if shown is None or agent.id in shown]


@router.get("/agents/{agent_id}", response_model=AgentDetail, tags=["Agents"], summary="Get an agent")
async def get_agent(agent_id: str, request: Request) -> Any:
    agent_os = request.app.state.agent_os
    agent = agent_os.targets.get("agents", known_id(agent_id, "agent"))
    return agent_detail(agent, database_id(agent_os.db))


@router.get("/workflows", response_model=list[WorkflowSummary], tags=["Workflows"], summary="List workflows")
async def list_workflows(request: Request) -> Any:
    agent_os = request.app.state.agent_os
    db_id = database_id(agent_os.db)
    shown = listable(request, "workflows")
    return [workflow_summary(w, db_id) for w in workflows_by_id(agent_os.workflows).values()
            if shown is None or w.id in shown]


@router.get("/workflows/{workflow_id}", response_model=WorkflowDetail, tags=["Workflows"], summary="Get a workflow")
async def get_workflow(
    workflow_id: str, request: Request, version: int | None = Query(None, ge=0, le=2**31)
) -> Any:
    agent_os = request.app.state.agent_os
    workflow = workflows_by_id(agent_os.workflows).get(known_id(workflow_id, "workflow"))
    if workflow is None:
        raise NotFound(f"unknown workflow {workflow_id[:200]!r}")
    if version is not None:
        raise NotFound(f"workflow {workflow_id[:200]!r} has no version {version}: this OS keeps no versions")
    return workflow_detail(workflow, database_id(agent_os.db))
