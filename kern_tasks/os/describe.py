"""What an AgentOS holds, described in agno's shapes: its agents and workflows (summary and
detail, a workflow with its steps as agno's Workflow.to_dict_for_steps lists them), its
database's id, and its configuration (GET /config).

Descriptions read only the components' public attributes (id, name, description, model,
functions, instructions, steps): an object that lacks one is described without it. A
workflow is described when it is a kern_tasks.workflow.Workflow, or anything with `id` and
`name`; only the first of two with one id is listed (ids address them).
"""

from __future__ import annotations

import uuid
from typing import Any, Iterable

from kern_tasks import __version__
from kern_tasks.db import Database
from kern_tasks.os.agno_schemas import (
    AgentDetail,
    AgentSummary,
    ConfigBody,
    DomainConfig,
    DomainDatabase,
    ModelInfo,
    ModelRef,
    QueueCapabilities,
    WorkflowDetail,
    WorkflowSummary,
)
from kern_tasks.runs.store import HISTORY_RUNS
from kern_tasks.workflow import Workflow
from kern_tasks.workflow.step import Node, Step

SESSION_TABLE = "agno_sessions"
TRACE_TABLES = ["agno_traces", "agno_spans"]


def database_id(db: Database) -> str:
    """A stable id of the database (agno's rule: uuid5 of "<url>#<schema>"; the password is
    left out of what is hashed)."""
    url = db.url.render_as_string(hide_password=True)
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{url}#{db.schema or 'ai'}"))


def model_ref(component: Any) -> ModelRef | None:
    model = getattr(component, "model", None)
    if model is None or (getattr(model, "id", None) is None and getattr(model, "provider", None) is None):
        return None
    return ModelRef(id=getattr(model, "id", None), provider=getattr(model, "provider", None))


def agent_summary(agent: Any, db_id: str | None) -> AgentSummary:
    return AgentSummary(id=agent.id, name=getattr(agent, "name", None),
                        description=getattr(agent, "description", None), db_id=db_id, model=model_ref(agent))


def agent_detail(agent: Any, db_id: str | None) -> AgentDetail:
    """agno's AgentResponse sections our Agent has: model, tools, history, instructions."""
    model = getattr(agent, "model", None)
    info = None
    if model is not None:
        info = ModelInfo(name=type(model).__name__, model=getattr(model, "id", None),
                         provider=getattr(model, "provider", None))
    functions = getattr(agent, "functions", None) or {}
    tools = [{"name": f.name, "description": f.description, "parameters": f.parameters}
             for f in functions.values()] if isinstance(functions, dict) else []
    system = {key: value for key, value in (("instructions", getattr(agent, "instructions", None)),
                                             ("description", getattr(agent, "description", None))) if value}
    return AgentDetail(
        id=agent.id, name=getattr(agent, "name", None), db_id=db_id, description=getattr(agent, "description", None),
        model=info, tools={"tools": tools} if tools else None,
        # The runner gives every run its session's last HISTORY_RUNS completed runs.
        sessions={"session_table": SESSION_TABLE, "add_history_to_context": True, "num_history_runs": HISTORY_RUNS},
        system_message=system or None,
    )


def workflows_by_id(workflows: Iterable[Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for workflow in workflows:
        workflow_id = getattr(workflow, "id", None)
        if isinstance(workflow_id, str) and workflow_id and workflow_id not in found:
            found[workflow_id] = workflow
    return found


def _db_id_of(workflow: Any, fallback: str | None) -> str | None:
    db = getattr(workflow, "db", None)
    return database_id(db) if isinstance(db, Database) else fallback


def workflow_summary(workflow: Any, db_id: str | None) -> WorkflowSummary:
    return WorkflowSummary(id=workflow.id, name=getattr(workflow, "name", None),
                           description=getattr(workflow, "description", None), db_id=_db_id_of(workflow, db_id))


def workflow_detail(workflow: Any, db_id: str | None) -> WorkflowDetail:
    steps = [step_dict(node, db_id) for node in getattr(workflow, "steps", None) or [] if isinstance(node, Node)]
    schema = getattr(workflow, "input_schema", None)
    return WorkflowDetail(
        id=workflow.id, name=getattr(workflow, "name", None), db_id=_db_id_of(workflow, db_id),
        description=getattr(workflow, "description", None), steps=steps if isinstance(workflow, Workflow) else None,
        input_schema=schema.model_json_schema() if hasattr(schema, "model_json_schema") else None,
        metadata=getattr(workflow, "metadata", None),
    )


def step_dict(node: Node, db_id: str | None) -> dict[str, Any]:
    """One step as agno lists it: name, description, type; an agent step's agent, a nested
    workflow's id and steps, a container's steps (a Condition's else_steps too). Nones left out."""
    described: dict[str, Any] = {"name": node.name or f"unnamed_{type(node).__name__.lower()}",
                                 "description": getattr(node, "description", None) or "User-defined callable step",
                                 "type": node.step_type}
    if isinstance(node, Step):
        if node.agent is not None and getattr(node.agent, "id", None):
            described["agent"] = agent_detail(node.agent, db_id).model_dump(exclude_none=True)
        if node.workflow is not None:
            described["type"] = "Workflow"
            described["workflow_id"] = getattr(node.workflow, "id", None)
            described["steps"] = [step_dict(inner, db_id) for inner in getattr(node.workflow, "steps", None) or []
                                  if isinstance(inner, Node)]
    else:
        described["steps"] = [step_dict(inner, db_id) for inner in getattr(node, "steps", None) or []]
        else_steps = getattr(node, "else_steps", None)
        if else_steps:
            described["else_steps"] = [step_dict(inner, db_id) for inner in else_steps]
    return {key: value for key, value in described.items() if value is not None}


def os_id(agent_os: Any) -> str:
    """This OS's id: GET /config's os_id and the audience users' JWTs must name. Its `id`,
    else KERN_OS_ID (settings.os_id), else its title."""
    settings = getattr(agent_os, "settings", None)
    return (getattr(agent_os, "id", None) or getattr(settings, "os_id", None) or getattr(agent_os, "title", None)
            or "kern_tasks")


def config(agent_os: Any) -> ConfigBody:
    """GET /config of `agent_os`: what it is and which of agno's features it has. It keeps
    sessions and traces (in its database); background runs execute in the process that
    accepted them (not durable, no per-session queue); memory, knowledge, evals, metrics,
    learning, company, filesystem, chat and interfaces it has not, and says so with null."""
    db_id = database_id(agent_os.db)
    agents = list(agent_os.targets.agents.values())
    models: dict[tuple[Any, Any], ModelRef] = {}
    for agent in agents:
        ref = model_ref(agent)
        if ref is not None and ref.id is not None and ref.provider is not None:
            models.setdefault((ref.id, ref.provider), ref)
    title = getattr(agent_os, "title", None)
    return ConfigBody(
        os_id=os_id(agent_os),
        name=getattr(agent_os, "name", None) or title,
        description=getattr(agent_os, "description", None),
        os_version=__version__,
        available_models=list(models.values()),
        os_database=db_id,
        databases=[db_id],
        session=DomainConfig(dbs=[DomainDatabase(db_id=db_id, domain_config={"display_name": db_id},
                                                 tables=[SESSION_TABLE])]),
        traces=DomainConfig(dbs=[DomainDatabase(db_id=db_id, domain_config={"display_name": db_id},
                                                tables=TRACE_TABLES)]),
        queue=QueueCapabilities(durable=False, queue_per_session=False),
        agents=[agent_summary(agent, db_id) for agent in agents],
        teams=[],
        workflows=[workflow_summary(w, db_id) for w in workflows_by_id(agent_os.workflows).values()],
        interfaces=[],
    )
