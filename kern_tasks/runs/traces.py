"""A run's spans as agno_traces / agno_spans rows (pure: no clock, no database).

Spans come from the agent or workflow engine (`span_id, trace_id, parent_span_id, name,
kind, start_time, end_time, status, attributes`, times in epoch seconds); agno stores
times as ISO 8601 strings, the OpenTelemetry span kind in `span_kind`, and the
OpenInference kind (AGENT, LLM, TOOL, CHAIN) in the attribute its trace views read.
A run that reported no spans gets one root span covering the run, so every run has a trace.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Iterable, Mapping

from kern_tasks.runs.safe import json_safe

# Our span kinds -> (OpenTelemetry span kind, OpenInference span kind).
KINDS = {
    "agent": ("INTERNAL", "AGENT"),
    "team": ("INTERNAL", "AGENT"),
    "workflow": ("INTERNAL", "CHAIN"),
    "step": ("INTERNAL", "CHAIN"),
    "model": ("CLIENT", "LLM"),
    "tool": ("INTERNAL", "TOOL"),
}


@dataclass(frozen=True)
class RunContext:
    """Who ran: copied onto every trace row and the root spans' attributes."""

    run_id: str
    session_id: str
    user_id: str | None
    component_type: str  # agent | team | workflow
    component_id: str
    name: str
    status: str  # the run's final status (COMPLETED, ERROR, ...)
    started_at: float
    ended_at: float
    error: str | None = None


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat(timespec="microseconds")


def _get(span: Any, name: str, default: Any = None) -> Any:
    if isinstance(span, Mapping):
        return span.get(name, default)
    return getattr(span, name, default)


def _seconds(value: Any, fallback: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # NaN
        return fallback
    return float(value)


def root_span(ctx: RunContext) -> dict[str, Any]:
    """The one span of a run that reported none."""
    return {
        "span_id": uuid.uuid4().hex[:16],
        "trace_id": uuid.uuid4().hex,
        "parent_span_id": None,
        "name": f"{ctx.name}.run",
        "kind": ctx.component_type,
        "start_time": ctx.started_at,
        "end_time": ctx.ended_at,
        "status": "ERROR" if ctx.status == "ERROR" else "OK",
        "attributes": {"exception.message": ctx.error} if ctx.error else {},
    }


def trace_rows(
    spans: Iterable[Any], ctx: RunContext, *, created_at: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(trace rows, span rows) for one run: one trace row per trace_id among the spans."""
    given = list(spans or [])
    span_rows = [_span_row(span, ctx, created_at) for span in (given or [root_span(ctx)])]
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for row in span_rows:
        by_trace.setdefault(row["trace_id"], []).append(row)
    traces = []
    for trace_id, members in by_trace.items():
        roots = [m for m in members if m["parent_span_id"] is None] or members
        start = min(m["_start"] for m in members)
        end = max(m["_end"] for m in members)
        errored = any(m["status_code"] == "ERROR" for m in members) or ctx.status == "ERROR"
        traces.append(
            {
                "trace_id": trace_id,
                "name": roots[0]["name"],
                "status": "ERROR" if errored else "OK",
                "start_time": iso(start),
                "end_time": iso(end),
                "duration_ms": int(round((end - start) * 1000)),
                "run_id": ctx.run_id,
                "session_id": ctx.session_id,
                "user_id": ctx.user_id,
                "agent_id": ctx.component_id if ctx.component_type == "agent" else None,
                "team_id": ctx.component_id if ctx.component_type == "team" else None,
                "workflow_id": ctx.component_id if ctx.component_type == "workflow" else None,
                "created_at": created_at,
            }
        )
    for row in span_rows:
        del row["_start"], row["_end"]
    return traces, span_rows


def _span_row(span: Any, ctx: RunContext, created_at: str) -> dict[str, Any]:
    start = _seconds(_get(span, "start_time"), ctx.started_at)
    end = max(start, _seconds(_get(span, "end_time"), ctx.ended_at))
    kind = str(_get(span, "kind") or "agent").lower()
    otel_kind, openinference_kind = KINDS.get(kind, ("INTERNAL", kind.upper()))
    status = str(_get(span, "status") or "OK").upper()
    attributes = dict(json_safe(_get(span, "attributes") or {}) or {})
    attributes.setdefault("openinference.span.kind", openinference_kind)
    parent = _get(span, "parent_span_id")
    if parent is None:
        # agno's trace views read the run's identity from the root span.
        attributes.setdefault("agno.run.id", ctx.run_id)
        attributes.setdefault(f"agno.{ctx.component_type}.id", ctx.component_id)
        attributes.setdefault("session.id", ctx.session_id)
        if ctx.user_id is not None:
            attributes.setdefault("user.id", ctx.user_id)
    message = attributes.get("exception.message") if status == "ERROR" else None
    return {
        "span_id": str(_get(span, "span_id") or uuid.uuid4().hex[:16]),
        "trace_id": str(_get(span, "trace_id") or ctx.run_id),
        "parent_span_id": str(parent) if parent is not None else None,
        "name": str(_get(span, "name") or kind),
        "span_kind": otel_kind,
        "status_code": status if status in ("OK", "ERROR") else "UNSET",
        "status_message": str(message) if message is not None else None,
        "start_time": iso(start),
        "end_time": iso(end),
        "duration_ms": int(round((end - start) * 1000)),
        "attributes": attributes,
        "created_at": created_at,
        "_start": start,
        "_end": end,
    }
