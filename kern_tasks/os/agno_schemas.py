"""Response bodies of agno's read routes for what an OS holds (config, agents, workflows),
with agno 3.1's field names, so agno's own models parse them (agno/os/schema.py,
agno/os/routers/agents/schema.py, agno/os/routers/workflows/schema.py). agno is not a
dependency: these are our models of its shapes; the tests parse every body with agno's.

Sessions and runs are in session_schemas.py, traces in trace_schemas.py; both build bodies
from rows of kern_tasks.runs.queries the way agno builds them from its stored dicts. Times
are UTC datetimes (ISO 8601 on the wire), as agno's.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel


def utc(epoch_s: int | float | None) -> datetime | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, tz=UTC)


def stringify(value: Any) -> str:
    """agno's stringify_input_content: text as it is, a dict as indented JSON, a message
    list as its first user message."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return json.dumps(value, indent=2, default=str)
    if isinstance(value, list) and value and isinstance(value[0], dict) and value[0].get("role") == "user":
        return str(value[0].get("content", value))
    return str(value)


# --- components and config -------------------------------------------------------------


class ModelRef(BaseModel):
    id: str | None = None
    provider: str | None = None


class ModelInfo(BaseModel):
    name: str | None = None
    model: str | None = None
    provider: str | None = None


class AgentSummary(BaseModel):
    id: str | None = None
    name: str | None = None
    description: str | None = None
    db_id: str | None = None
    model: ModelRef | None = None
    metadata: dict[str, Any] | None = None
    sandboxed: bool = False


class AgentDetail(BaseModel):
    """agno's AgentResponse, with the sections our agents have (the others absent)."""

    id: str | None = None
    name: str | None = None
    db_id: str | None = None
    filesystem: bool = False
    description: str | None = None
    role: str | None = None
    is_factory: bool = False
    model: ModelInfo | None = None
    tools: dict[str, Any] | None = None
    sessions: dict[str, Any] | None = None
    system_message: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    is_component: bool = False
    sandboxed: bool = False


class WorkflowSummary(BaseModel):
    id: str | None = None
    name: str | None = None
    description: str | None = None
    db_id: str | None = None
    is_factory: bool = False
    is_component: bool = False
    sandboxed: bool = False


class WorkflowDetail(BaseModel):
    """agno's WorkflowResponse: `steps` as agno's Workflow.to_dict_for_steps lists them."""

    id: str | None = None
    name: str | None = None
    db_id: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    steps: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] | None = None
    workflow_agent: bool = False
    is_factory: bool = False
    is_component: bool = False
    sandboxed: bool = False


class DomainDatabase(BaseModel):
    db_id: str
    domain_config: dict[str, Any] | None = None
    tables: list[str] | None = None


class DomainConfig(BaseModel):
    """A feature this OS has (sessions, traces): the databases holding it."""

    display_name: str | None = None
    dbs: list[DomainDatabase] | None = None


class QueueCapabilities(BaseModel):
    durable: bool
    queue_per_session: bool


class ConfigBody(BaseModel):
    """agno's ConfigResponse. A feature this OS lacks (memory, knowledge, evals, metrics,
    learning, company, filesystem, chat) is null, as agno declares an unconfigured one;
    `os_version` is ours (agno's /info names it so; its ConfigResponse ignores it)."""

    os_id: str
    name: str | None = None
    description: str | None = None
    os_version: str
    available_models: list[ModelRef]
    os_database: str | None = None
    databases: list[str]
    chat: None = None
    manifest: None = None
    session: DomainConfig | None = None
    metrics: None = None
    memory: None = None
    learning: None = None
    company: None = None
    filesystem: None = None
    knowledge: None = None
    evals: None = None
    traces: DomainConfig | None = None
    queue: QueueCapabilities
    agents: list[AgentSummary]
    teams: list[AgentSummary]
    workflows: list[WorkflowSummary]
    interfaces: list[dict[str, Any]]
