"""Bodies of agno's session routes (agno/os/schema.py: SessionSchema, the three
*SessionDetailSchema, RunSchema, WorkflowRunSchema), built from rows of
kern_tasks.runs.queries as agno's `from_dict` / `from_session` build them from its stored
dicts: the session's name, state, metrics and chat history, each run's input and content.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Union

from pydantic import BaseModel

from kern_tasks.os.agno_schemas import stringify, utc


# --- sessions ------------------------------------------------------------------------


def session_name(session: dict[str, Any], first_run: dict[str, Any] | None) -> str:
    """agno's get_session_name: the stored name, else what the first run was asked."""
    stored = (session.get("session_data") or {}).get("session_name")
    if stored is not None:
        return str(stored)
    if session.get("session_type") == "workflow":
        if first_run is None:
            return ""
        given = first_run.get("input")
        if isinstance(given, (str, dict)):
            return given if isinstance(given, str) else json.dumps(given)
        name = (session.get("workflow_data") or {}).get("name")
        return f"New {name} Session" if name else ""
    if first_run is None:
        return ""
    for message in first_run.get("messages") or []:
        if isinstance(message, dict) and message.get("role") == "user" and message.get("content"):
            return stringify(message["content"])
    given = (first_run.get("input") or {}).get("input_content") if isinstance(first_run.get("input"), dict) else None
    return stringify(given) if given is not None else ""


def _metrics(session: dict[str, Any]) -> dict[str, Any] | None:
    return (session.get("session_data") or {}).get("session_metrics")


def _state(session: dict[str, Any]) -> dict[str, Any] | None:
    return (session.get("session_data") or {}).get("session_state")


class SessionSummary(BaseModel):
    """agno's SessionSchema (one entry of GET /sessions)."""

    session_id: str
    session_name: str
    session_state: dict[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    session_type: str | None = None
    user_id: str | None = None
    agent_id: str | None = None
    team_id: str | None = None
    workflow_id: str | None = None
    session_summary: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    total_tokens: int | None = None
    metadata: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, session: dict[str, Any]) -> SessionSummary:
        metrics = _metrics(session)
        created = utc(session.get("created_at"))
        return cls(
            session_id=session["session_id"],
            session_name=session_name(session, session.get("first_run")),
            session_state=_state(session),
            created_at=created,
            updated_at=utc(session.get("updated_at")) or created,
            session_type=session.get("session_type"),
            user_id=session.get("user_id"),
            agent_id=session.get("agent_id"),
            team_id=session.get("team_id"),
            workflow_id=session.get("workflow_id"),
            session_summary=session.get("summary"),
            metrics=metrics,
            total_tokens=metrics.get("total_tokens") if isinstance(metrics, dict) else None,
            metadata=session.get("metadata"),
        )


def chat_history(run_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The user and assistant messages of the session's own runs: each run's question and
    answer. (Our runs' stored messages repeat earlier turns as context without agno's
    `from_history` tag, so the turns are read from input and content instead.)"""
    history: list[dict[str, Any]] = []
    for row in run_rows:
        data = row.get("run_data") or {}
        if data.get("parent_run_id"):
            continue
        question = (data.get("input") or {}).get("input_content") if isinstance(data.get("input"), dict) else None
        if question is not None:
            history.append({"role": "user", "content": stringify(question)})
        if data.get("content") is not None:
            history.append({"role": "assistant", "content": content_of(data.get("content"))})
    return history


def _first(session: dict[str, Any]) -> dict[str, Any] | None:
    rows = session.get("runs") or []
    return dict(rows[0].get("run_data") or {}) if rows else None


class _SessionDetail(BaseModel):
    session_id: str
    session_name: str
    user_id: str | None = None
    session_summary: dict[str, Any] | None = None
    session_state: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    total_tokens: int | None = None
    metadata: dict[str, Any] | None = None
    chat_history: list[dict[str, Any]] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @staticmethod
    def common(session: dict[str, Any]) -> dict[str, Any]:
        metrics = _metrics(session)
        created = utc(session.get("created_at"))
        return {
            "session_id": session["session_id"],
            "session_name": session_name(session, _first(session)),
            "user_id": session.get("user_id"),
            "session_summary": session.get("summary"),
            "session_state": _state(session),
            "metrics": metrics,
            "total_tokens": metrics.get("total_tokens") if isinstance(metrics, dict) else None,
            "metadata": session.get("metadata"),
            "chat_history": chat_history(session.get("runs") or []),
            "created_at": created,
            "updated_at": utc(session.get("updated_at")) or created,
        }


class AgentSessionDetail(_SessionDetail):
    agent_session_id: str
    agent_id: str | None = None
    agent_data: dict[str, Any] | None = None


class TeamSessionDetail(_SessionDetail):
    team_id: str | None = None
    team_data: dict[str, Any] | None = None


class WorkflowSessionDetail(BaseModel):
    session_id: str
    session_name: str
    user_id: str | None = None
    workflow_id: str | None = None
    workflow_name: str | None = None
    session_data: dict[str, Any] | None = None
    session_state: dict[str, Any] | None = None
    workflow_data: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


SessionDetail = Union[AgentSessionDetail, TeamSessionDetail, WorkflowSessionDetail]


def session_detail(session: dict[str, Any]) -> SessionDetail:
    """GET /sessions/{id}: the detail shape of the session's type (agno's *SessionDetailSchema)."""
    kind = session.get("session_type") or "agent"
    if kind == "workflow":
        created = utc(session.get("created_at"))
        workflow_data = session.get("workflow_data")
        return WorkflowSessionDetail(
            session_id=session["session_id"],
            session_name=session_name(session, _first(session)),
            user_id=session.get("user_id"),
            workflow_id=session.get("workflow_id"),
            workflow_name=workflow_data.get("name") if isinstance(workflow_data, dict) else None,
            session_data=session.get("session_data"),
            session_state=_state(session),
            workflow_data=workflow_data,
            metadata=session.get("metadata"),
            created_at=created,
            updated_at=utc(session.get("updated_at")) or created,
        )
    if kind == "team":
        return TeamSessionDetail(**_SessionDetail.common(session), team_id=session.get("team_id"),
                                 team_data=session.get("team_data"))
    return AgentSessionDetail(**_SessionDetail.common(session), agent_session_id=session["session_id"],
                              agent_id=session.get("agent_id"), agent_data=session.get("agent_data"))


# --- runs ----------------------------------------------------------------------------


def content_of(value: Any) -> str | dict[str, Any] | None:
    """A run's content as agno's run schemas take it (text or an object); other JSON as text."""
    if value is None or isinstance(value, (str, dict)):
        return value
    return json.dumps(value, default=str)


def _input_of(data: dict[str, Any], workflow: bool) -> str:
    """agno's get_run_input."""
    given = data.get("input")
    if workflow and given is not None:
        return stringify(given)
    if not workflow and isinstance(given, dict) and given.get("input_content") is not None:
        return stringify(given["input_content"])
    for message in reversed(data.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


class RunSchema(BaseModel):
    """An agent's run in a session's run list (agno's RunSchema)."""

    run_id: str
    parent_run_id: str | None = None
    agent_id: str | None = None
    user_id: str | None = None
    status: str | None = None
    run_input: str | None = None
    content: str | dict[str, Any] | None = None
    run_response_format: str | None = None
    metrics: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    events: list[dict[str, Any]] | None = None
    session_state: dict[str, Any] | None = None
    created_at: datetime | None = None


class WorkflowRunSchema(BaseModel):
    """A workflow's run in a session's run list (agno's WorkflowRunSchema)."""

    run_id: str
    run_input: str | None = None
    events: list[dict[str, Any]] | None = None
    workflow_id: str | None = None
    user_id: str | None = None
    content: str | dict[str, Any] | None = None
    content_type: str | None = None
    status: str | None = None
    step_results: list[dict[str, Any]] | None = None
    step_executor_runs: list[dict[str, Any]] | None = None
    metrics: dict[str, Any] | None = None
    created_at: datetime | None = None


def _dicts(value: Any) -> list[dict[str, Any]] | None:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) and value else None


def run_schema(row: dict[str, Any]) -> RunSchema | WorkflowRunSchema:
    """One agno_runs row as agno lists it; the row's status column is authoritative."""
    data = dict(row.get("run_data") or {})
    status = row.get("status") or data.get("status")
    created = utc(row.get("created_at") if row.get("created_at") is not None else data.get("created_at"))
    if row.get("workflow_id") is not None or data.get("workflow_id") is not None:
        return WorkflowRunSchema(
            run_id=row["run_id"], run_input=_input_of(data, True), events=_dicts(data.get("events")),
            workflow_id=row.get("workflow_id") or data.get("workflow_id"), user_id=row.get("user_id"),
            content=content_of(data.get("content")), content_type=data.get("content_type"), status=status,
            step_results=_dicts(data.get("step_results")), step_executor_runs=_dicts(data.get("step_executor_runs")),
            metrics=data.get("metrics") if isinstance(data.get("metrics"), dict) else None, created_at=created,
        )
    return RunSchema(
        run_id=row["run_id"], parent_run_id=row.get("parent_run_id"), agent_id=row.get("agent_id"),
        user_id=row.get("user_id"), status=status, run_input=_input_of(data, False),
        content=content_of(data.get("content")),
        run_response_format="text" if data.get("content_type", "str") == "str" else "json",
        metrics=data.get("metrics") if isinstance(data.get("metrics"), dict) else None,
        messages=_dicts(data.get("messages")), tools=_dicts(data.get("tools")), events=_dicts(data.get("events")),
        session_state=data.get("session_state") if isinstance(data.get("session_state"), dict) else None,
        created_at=created,
    )
