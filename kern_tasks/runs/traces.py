"""A run's spans as agno_traces / agno_spans rows (pure: no clock, no database).

Spans come from the agent or workflow engine (`span_id, trace_id, parent_span_id, name,
kind, start_time, end_time, status, attributes`, times in epoch seconds); agno stores
times as ISO 8601 strings, the OpenTelemetry span kind in `span_kind`, and the
OpenInference kind (AGENT, LLM, TOOL, CHAIN) in the attribute its trace views read.
A run that reported no spans gets one root span covering the run, so every run has a trace.

Spans may also be recorded as they happen (a workflow's step attempts, possibly in several
processes): a span is stored when it starts, UNSET and ending when it starts
(`open_span_row`), and ended once (`ended_span_values`); its run's trace has the id
`trace_id_for(run_id)`, so every process names the same trace, and is summarised again from
its stored spans when the run ends (`trace_row`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Iterable, Mapping

from kern_tasks.runs.safe import json_safe, text

# Our span kinds -> (OpenTelemetry span kind, OpenInference span kind).
KINDS = {
    "agent": ("INTERNAL", "AGENT"),
    "team": ("INTERNAL", "AGENT"),
    "workflow": ("INTERNAL", "CHAIN"),
    "step": ("INTERNAL", "CHAIN"),
    "model": ("CLIENT", "LLM"),
    "tool": ("INTERNAL", "TOOL"),
}
SPAN_STATUSES = ("OK", "ERROR", "UNSET")
# Names the traces and spans derived from run ids (any fixed UUID would do; this one is ours).
_ID_NAMESPACE = uuid.UUID("6f1c2d4e-8a3b-4c5d-9e7f-0a1b2c3d4e5f")


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


def trace_id_for(run_id: str) -> str:
    """The trace of a run whose spans are recorded as they happen (32 hex digits, as
    OpenTelemetry's): derived from the run id, so every process recording a span of the run
    names the same trace without being told."""
    return uuid.uuid5(_ID_NAMESPACE, run_id).hex


def span_id_for(run_id: str, *place: object) -> str:
    """A span id (16 hex digits) derived from a run and a place in it, e.g. a step's path and
    attempt: the same step attempt recorded twice (a duplicate message) is the same span."""
    return uuid.uuid5(_ID_NAMESPACE, "/".join([run_id, *(str(part) for part in place)])).hex[:16]


def parse_iso(value: str) -> float:
    """Epoch seconds of a stored ISO 8601 time (the inverse of `iso`)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def trace_rows(
    spans: Iterable[Any], ctx: RunContext, *, created_at: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(trace rows, span rows) for one run: one trace row per trace_id among the spans."""
    given = list(spans or [])
    span_rows = [_span_row(span, ctx, created_at) for span in (given or [root_span(ctx)])]
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for row in span_rows:
        by_trace.setdefault(row["trace_id"], []).append(row)
    traces = [
        _summary(trace_id, members, min(m["_start"] for m in members), max(m["_end"] for m in members), ctx,
                 created_at)
        for trace_id, members in by_trace.items()
    ]
    for row in span_rows:
        del row["_start"], row["_end"]
    return traces, span_rows


def trace_row(trace_id: str, span_rows: list[Mapping[str, Any]], ctx: RunContext, *, created_at: str) -> dict[str, Any]:
    """The trace row summing up stored span rows (times as stored, ISO 8601), as `trace_rows`
    sums up a run's spans: named after the root, from the first start to the last end, ERROR
    if a span or the run is. A span still UNSET (an attempt that never ended) is no error."""
    start = min(parse_iso(m["start_time"]) for m in span_rows)
    end = max(parse_iso(m["end_time"]) for m in span_rows)
    return _summary(trace_id, span_rows, start, end, ctx, created_at)


def _summary(trace_id: str, members: list[Mapping[str, Any]], start: float, end: float, ctx: RunContext,
             created_at: str) -> dict[str, Any]:
    roots = [m for m in members if m["parent_span_id"] is None] or members
    errored = any(m["status_code"] == "ERROR" for m in members) or ctx.status == "ERROR"
    return {
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


def open_span_row(span: Any, ctx: RunContext, *, created_at: str) -> dict[str, Any]:
    """The row of a span that has started and not ended: UNSET, ending when it starts."""
    start = _seconds(_get(span, "start_time"), ctx.started_at)
    row = _span_row({**_as_dict(span), "start_time": start, "end_time": start, "status": "UNSET"}, ctx, created_at)
    del row["_start"], row["_end"]
    return row


def ended_span_values(
    row: Mapping[str, Any], *, ended_at: float, status: str, error: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The column values that end the stored span `row` at `ended_at` with `status` (OK or
    ERROR); `error` becomes the status message and `exception.message`, as `_span_row` has it."""
    start = parse_iso(row["start_time"])
    end = max(start, _seconds(ended_at, start))
    merged = {**dict(row["attributes"] or {}), **dict(json_safe(dict(attributes or {})) or {})}
    status = status.upper() if status.upper() in SPAN_STATUSES else "UNSET"
    message = text(error) if error is not None and status == "ERROR" else None
    if message is not None:
        merged["exception.message"] = message
    return {
        "status_code": status,
        "status_message": message,
        "end_time": iso(end),
        "duration_ms": int(round((end - start) * 1000)),
        "attributes": merged,
    }


def _as_dict(span: Any) -> dict[str, Any]:
    if isinstance(span, Mapping):
        return dict(span)
    names = ("span_id", "trace_id", "parent_span_id", "name", "kind", "start_time", "end_time", "status", "attributes")
    return {name: getattr(span, name, None) for name in names}


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
        "status_code": status if status in SPAN_STATUSES else "UNSET",
        "status_message": str(message) if message is not None else None,
        "start_time": iso(start),
        "end_time": iso(end),
        "duration_ms": int(round((end - start) * 1000)),
        "attributes": attributes,
        "created_at": created_at,
        "_start": start,
        "_end": end,
    }
