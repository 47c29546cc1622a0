"""What one agent run produces: `RunOutput` and its trace of `Span`s.

A run's trace has one root span "agent.run" (kind "agent"); under it one "model.call"
span (kind "model") per model call and one "tool.<name>" span (kind "tool") per tool
call, in the order they started. `trace_id` is the run id. Times are epoch seconds.
Everything in a RunOutput is JSON-able (`to_dict()`).

`RunContext` is who and what a run is (agno's name): a tool that declares a `run_context`
parameter receives the current run's (tools.py injects it; the model never sees it).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

COMPLETED = "COMPLETED"
ERROR = "ERROR"
CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class RunContext:
    """The run a tool call belongs to: its ids and its user (None: a run without a user)."""

    run_id: str
    session_id: str
    agent_id: str
    user_id: str | None = None


# The run executing on this thread (or task): set by Agent.run for the length of the run,
# read by tools.py to inject `run_context`. A context variable, so concurrent runs of one
# Agent (threads, arun) each see their own.
CURRENT_RUN: ContextVar[RunContext | None] = ContextVar("kern_tasks_current_run", default=None)


@dataclass
class Span:
    """One timed step of a run."""

    span_id: str
    trace_id: str
    parent_span_id: str | None
    name: str
    kind: str  # "agent" | "model" | "tool"
    start_time: float
    end_time: float
    status: str  # "OK" | "ERROR"
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.end_time - self.start_time

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RunOutput:
    """The outcome of `Agent.run`. `status` is "COMPLETED", "ERROR" or "CANCELLED" (then
    `error` says why)."""

    run_id: str
    session_id: str
    agent_id: str
    user_id: str | None
    status: str
    content: str | None
    input: str
    messages: list[dict[str, Any]]
    spans: list[Span]
    started_at: float
    ended_at: float
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Tracer:
    """Collects the spans of one run (one thread; no locking needed)."""

    def __init__(self, trace_id: str) -> None:
        self.trace_id = trace_id
        self.spans: list[Span] = []

    def start(self, name: str, kind: str, parent: Span | None, attributes: dict[str, Any] | None = None) -> Span:
        now = time.time()
        span = Span(
            span_id=str(uuid.uuid4()),
            trace_id=self.trace_id,
            parent_span_id=parent.span_id if parent is not None else None,
            name=name,
            kind=kind,
            start_time=now,
            end_time=now,
            status="OK",
            attributes=dict(attributes or {}),
        )
        self.spans.append(span)
        return span

    @staticmethod
    def end(span: Span, status: str = "OK", **attributes: Any) -> None:
        span.end_time = time.time()
        span.status = status
        span.attributes.update(attributes)
