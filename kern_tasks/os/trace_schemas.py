"""Bodies of agno's trace routes (agno/os/routers/traces/schemas.py: TraceSummary,
TraceNode, TraceDetail), built from rows of kern_tasks.runs.queries as agno builds them from
its Trace and Span objects: the span tree by parent, children by start time, a node's type
from its OpenInference kind, the root node timed by the trace and carrying token totals,
workflow steps typed by the root's `agno.workflow.step_types`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from kern_tasks.os.agno_schemas import utc
from kern_tasks.runs.traces import parse_iso


def duration(ms: int | None) -> str:
    """agno's format_duration_ms: "150ms", "1.50s"."""
    if ms is None or ms < 1000:
        return f"{ms or 0}ms"
    return f"{ms / 1000:.2f}s"


def _time(value: str) -> datetime:
    moment = utc(parse_iso(value))
    assert moment is not None
    return moment


def _attributes(span: dict[str, Any]) -> dict[str, Any]:
    return dict(span.get("attributes") or {})


def span_type(attributes: dict[str, Any]) -> str:
    """agno's _derive_span_type: WORKFLOW for CHAIN, TEAM or AGENT for AGENT, else the kind."""
    kind = attributes.get("openinference.span.kind", "UNKNOWN")
    if kind == "CHAIN":
        return "WORKFLOW"
    if kind == "AGENT":
        return "TEAM" if attributes.get("agno.team.id") or attributes.get("team.id") else "AGENT"
    return str(kind)


# The attributes agno's trace view shows per span kind: (attribute, metadata key).
KIND_METADATA = {
    "AGENT": (("agno.run.id", "run_id"),),
    "LLM": (("llm.model_name", "model"), ("llm.token_count.prompt", "input_tokens"),
            ("llm.token_count.completion", "output_tokens")),
    "TOOL": (("tool.name", "tool_name"), ("tool.parameters", "parameters")),
    "CHAIN": (("agno.workflow.description", "description"), ("agno.workflow.steps_count", "steps_count"),
              ("agno.workflow.steps", "steps"), ("agno.workflow.step_types", "step_types")),
}


class TraceNode(BaseModel):
    id: str
    name: str
    type: str
    duration: str
    start_time: datetime
    end_time: datetime
    status: str
    input: str | None = None
    output: str | None = None
    error: str | None = None
    spans: list[TraceNode] | None = None
    step_type: str | None = None
    metadata: dict[str, Any] | None = None
    extra_data: dict[str, Any] | None = None

    @classmethod
    def from_span(cls, span: dict[str, Any], children: list[TraceNode] | None = None) -> TraceNode:
        attributes = _attributes(span)
        kind = attributes.get("openinference.span.kind", "UNKNOWN")
        metadata = {key: attributes[name] for name, key in KIND_METADATA.get(kind, ()) if attributes.get(name)}
        for name, key in (("session.id", "session_id"), ("user.id", "user_id")):
            if attributes.get(name):
                metadata[key] = attributes[name]
        failed = span["status_code"] == "ERROR"
        return cls(
            id=span["span_id"], name=span["name"], type=span_type(attributes), duration=duration(span["duration_ms"]),
            start_time=_time(span["start_time"]), end_time=_time(span["end_time"]), status=span["status_code"],
            input=_text(attributes.get("input.value")),
            output=None if failed else _text(attributes.get("output.value")),
            error=(span.get("status_message") or _text(attributes.get("exception.message"))) if failed else None,
            spans=children or None, metadata=metadata or None,
        )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


IDENTITY = ("run_id", "session_id", "user_id", "agent_id", "team_id", "workflow_id")


class _TraceFields(BaseModel):
    trace_id: str
    name: str
    status: str
    duration: str
    start_time: datetime
    end_time: datetime
    total_spans: int
    error_count: int
    input: str | None = None
    run_id: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    agent_id: str | None = None
    team_id: str | None = None
    workflow_id: str | None = None
    created_at: datetime

    @staticmethod
    def common(trace: dict[str, Any], trace_input: Any) -> dict[str, Any]:
        return {
            "trace_id": trace["trace_id"], "name": trace["name"], "status": trace["status"],
            "duration": duration(trace["duration_ms"]), "start_time": _time(trace["start_time"]),
            "end_time": _time(trace["end_time"]), "total_spans": int(trace.get("total_spans") or 0),
            "error_count": int(trace.get("error_count") or 0), "input": _text(trace_input),
            **{key: trace.get(key) for key in IDENTITY},
            "created_at": _time(trace["created_at"]),
        }


class TraceSummary(_TraceFields):
    """One entry of GET /traces."""

    @classmethod
    def from_row(cls, trace: dict[str, Any]) -> TraceSummary:
        return cls(**cls.common(trace, (trace.get("root_attributes") or {}).get("input.value")))


class TraceDetail(_TraceFields):
    """GET /traces/{id}: the trace and its span tree (roots first, by start time)."""

    output: str | None = None
    error: str | None = None
    tree: list[TraceNode]

    @classmethod
    def from_rows(cls, trace: dict[str, Any], spans: list[dict[str, Any]]) -> TraceDetail:
        root = next((s for s in spans if not s["parent_span_id"]), None)
        attributes = _attributes(root) if root else {}
        output = error = None
        if root is not None:
            if trace["status"] == "ERROR" or root["status_code"] == "ERROR":
                error = root.get("status_message") or _text(attributes.get("exception.message"))
            else:
                output = _text(attributes.get("output.value"))
                if attributes.get("openinference.span.kind") == "CHAIN" and not output:
                    steps = sorted((s for s in spans if s["parent_span_id"] == root["span_id"]),
                                   key=lambda s: s["end_time"], reverse=True)
                    output = _text(_attributes(steps[0]).get("output.value")) if steps else None
        return cls(**cls.common(trace, attributes.get("input.value")), output=output, error=error,
                   tree=span_tree(trace, spans))


def span_tree(trace: dict[str, Any], spans: list[dict[str, Any]]) -> list[TraceNode]:
    """agno's _build_span_tree over span rows."""
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        children.setdefault(span["parent_span_id"] or None, []).append(span)
    for members in children.values():
        members.sort(key=lambda s: s["start_time"])
    roots = children.get(None, [])
    step_types: list[str] = []
    for root in roots:
        found = _attributes(root).get("agno.workflow.step_types")
        if _attributes(root).get("openinference.span.kind") == "CHAIN" and found:
            step_types = list(found)
            break
    tokens = {"total_input_tokens": 0, "total_output_tokens": 0}
    for span in spans:
        attributes = _attributes(span)
        if attributes.get("openinference.span.kind") == "LLM":
            tokens["total_input_tokens"] += int(attributes.get("llm.token_count.prompt") or 0)
            tokens["total_output_tokens"] += int(attributes.get("llm.token_count.completion") or 0)

    def node(span: dict[str, Any], step_index: int | None = None) -> TraceNode:
        below = [node(child, i if span["parent_span_id"] is None and step_types else None)
                 for i, child in enumerate(children.get(span["span_id"], []))]
        made = TraceNode.from_span(span, below)
        if step_index is not None and step_index < len(step_types):
            made.step_type = step_types[step_index]
        return made

    tree = []
    for root in roots:
        made = node(root)
        attributes = _attributes(root)
        metadata = {key: value for key, value in tokens.items() if value > 0}
        if attributes.get("openinference.span.kind") == "CHAIN":
            metadata.update({key: attributes[name] for name, key in KIND_METADATA["CHAIN"] if attributes.get(name)})
        # The root is timed by the trace, and its input/output/error are the trace's.
        tree.append(made.model_copy(update={
            "duration": duration(trace["duration_ms"]), "start_time": _time(trace["start_time"]),
            "end_time": _time(trace["end_time"]), "input": None, "output": None, "error": None,
            "metadata": metadata or None,
        }))
    return tree
