"""A run's events in agno's shapes (agno.run.agent's event classes, as dicts).

    events = RunEvents(sink, run_id=..., session_id=..., agent_id="demo", agent_name="Demo")
    events.started(model="gpt-4o-mini", model_provider="openai")

An Agent run given an `on_event` sink reports, in order:

    RunStarted                     model, model_provider
    ModelRequestStarted            per model call: model, model_provider
    RunContent                     per text delta: content (the delta), content_type "str"
    ModelRequestCompleted          per model call: input/output/total tokens
    ToolCallStarted                per tool call: tool (agno's ToolExecution: tool_call_id,
                                   tool_name, tool_args)
    ToolCallCompleted              per tool call: tool (+ result, tool_call_error, metrics),
                                   content (the result)
    RunContentCompleted            once the last model reply is in
    then one of
    RunCompleted                   content (the whole answer), metrics
    RunError                       content (the error), error_type
    RunCancelled                   reason, content

Every event has agno's common fields: event, created_at, agent_id, agent_name, run_id,
session_id. `TERMINAL_EVENTS` are the three a run ends with. agno's client parses these
with `run_output_event_from_dict`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

EventSink = Callable[[dict[str, Any]], None]
TERMINAL_EVENTS = frozenset({"RunCompleted", "RunError", "RunCancelled"})


class RunEvents:
    """Builds one run's events and hands each to `sink` (which must not raise)."""

    def __init__(self, sink: EventSink, *, run_id: str, session_id: str, agent_id: str, agent_name: str | None) -> None:
        self.sink = sink
        self.common = {"agent_id": agent_id, "agent_name": agent_name or "", "run_id": run_id, "session_id": session_id}

    def emit(self, event: str, **fields: Any) -> None:
        self.sink({"event": event, "created_at": int(time.time()), **self.common, **fields})

    def started(self, *, model: str, model_provider: str) -> None:
        self.emit("RunStarted", model=model, model_provider=model_provider)

    def model_request_started(self, *, model: str, model_provider: str) -> None:
        self.emit("ModelRequestStarted", model=model, model_provider=model_provider)

    def model_request_completed(self, *, model: str, model_provider: str, usage: dict[str, int]) -> None:
        self.emit("ModelRequestCompleted", model=model, model_provider=model_provider,
                  input_tokens=usage.get("input_tokens"), output_tokens=usage.get("output_tokens"),
                  total_tokens=usage.get("total_tokens"))

    def content(self, delta: str) -> None:
        self.emit("RunContent", content=delta, content_type="str")

    def tool_started(self, *, call_id: str, name: str, arguments: Any, started_at: float) -> None:
        self.emit("ToolCallStarted", tool=_tool(call_id, name, arguments, started_at))

    def tool_completed(
        self, *, call_id: str, name: str, arguments: Any, result: str, failed: bool, started_at: float,
        ended_at: float,
    ) -> None:
        tool = _tool(call_id, name, arguments, started_at)
        tool.update(result=result, tool_call_error=failed,
                    metrics={"start_time": started_at, "end_time": ended_at, "duration": ended_at - started_at})
        self.emit("ToolCallCompleted", tool=tool, content=result)

    def content_completed(self) -> None:
        self.emit("RunContentCompleted")

    def completed(self, *, content: str | None, metrics: dict[str, Any]) -> None:
        self.emit("RunCompleted", content=content, content_type="str", metrics=dict(metrics))

    def error(self, message: str, *, error_type: str | None = None) -> None:
        self.emit("RunError", content=message, error_type=error_type)

    def cancelled(self, reason: str) -> None:
        self.emit("RunCancelled", reason=reason, content=reason)


def _tool(call_id: str, name: str, arguments: Any, started_at: float) -> dict[str, Any]:
    # agno's tool_args is a dict; arguments that are not a JSON object are kept as given.
    args = arguments if isinstance(arguments, dict) or arguments is None else {"arguments": arguments}
    return {"tool_call_id": call_id, "tool_name": name, "tool_args": args, "created_at": int(started_at)}
