"""Agent: a model, instructions and tools, run as a tool-calling loop.

    agent = Agent(model="openai:gpt-4o-mini", name="My Agent",
                  tools=[SchedulerTools(db=db, default_endpoint="/agents/my-agent/runs")])
    output = agent.run("post a daily digest of open PRs at 9am ET")

The loop: send the conversation and the tool schemas to the model; if it answers with
tool calls, run each one (in order), append its result as a "tool" message and ask
again; stop when the model answers without tool calls. A tool call with bad JSON,
unknown or ill-typed arguments, an unknown tool name, or a tool that raises becomes
a tool result `{"error": ...}` the model can act on. After `max_tool_rounds` rounds
of tool calls the run ends with status ERROR.

`run` never raises for model or tool failures: they end the run with status "ERROR"
and `error` set. An Agent keeps no per-run state, so one instance may serve many
concurrent runs (threads or `arun`).

Streaming: given `on_event`, a run reports agno's run events as it goes (events.py), the
model's text token by token (`Model.stream`). Cancelling: given `cancelled`, a run asks it
before every model call and every tool call and, once it answers true, stops there with
status "CANCELLED" (tool calls it did not run are answered "not run", so the messages stay
a conversation a model accepts).
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kern_tasks.agent.events import EventSink, RunEvents
from kern_tasks.agent.models import Model, ModelError, ModelResponse, ToolCall
from kern_tasks.agent.providers import get_model
from kern_tasks.agent.run import CANCELLED, COMPLETED, CURRENT_RUN, ERROR, RunContext, RunOutput, Span, Tracer
from kern_tasks.agent.tools import Function, ToolArgumentError, Toolkit, resolve_tools
from kern_tasks.settings import Settings

SPAN_TEXT_CHARS = 2000  # tool results and arguments kept in a span, at most


def slug(text: str) -> str:
    """"Daily PR Digest!" -> "daily-pr-digest"; "" when nothing is left."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class _RunFailed(Exception):
    """Ends the loop with status ERROR and this message; `error_type` for the RunError event."""

    def __init__(self, message: str, error_type: str = "RunError") -> None:
        super().__init__(message)
        self.error_type = error_type


class _RunCancelled(Exception):
    """Ends the loop with status CANCELLED."""


CANCEL_REASON = "the run was cancelled"


def _never() -> bool:
    return False


def _ignore(event: dict[str, Any]) -> None:
    pass


@dataclass
class _Run:
    """What one run's loop carries along."""

    tracer: Tracer
    root: Span
    metrics: dict[str, Any]
    events: RunEvents
    streaming: bool
    cancelled: Callable[[], bool]

    def check(self) -> None:
        if self.cancelled():
            raise _RunCancelled(CANCEL_REASON)


class Agent:
    """An agent. `id` is the given id, else a slug of `name`, else "agent"."""

    def __init__(
        self,
        model: str | Model = "offline",
        *,
        name: str | None = None,
        id: str | None = None,
        instructions: str | None = None,
        tools: Sequence[Toolkit | Callable[..., Any]] = (),
        description: str | None = None,
        max_tool_rounds: int = 8,
        settings: Settings | None = None,
    ) -> None:
        if max_tool_rounds < 0:
            raise ValueError(f"max_tool_rounds must be 0 or more, got {max_tool_rounds}")
        self.model: Model = get_model(model, settings=settings)
        self.name = name
        self.id = id or (slug(name) if name else "") or "agent"
        self.instructions = instructions
        self.description = description
        self.max_tool_rounds = max_tool_rounds
        self.functions: dict[str, Function] = resolve_tools(list(tools))

    def __repr__(self) -> str:
        return f"Agent(id={self.id!r}, model={self.model.name!r}, tools={list(self.functions)})"

    def tool_schemas(self) -> list[dict[str, Any]]:
        """The chat-completions `tools` entries sent with every model call."""
        return [function.to_openai() for function in self.functions.values()]

    async def arun(
        self,
        message: str,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        run_id: str | None = None,
        history: list[dict[str, Any]] | None = None,
        on_event: EventSink | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> RunOutput:
        """`run` on a worker thread (the model and tools are blocking)."""
        return await asyncio.to_thread(
            self.run, message, session_id=session_id, user_id=user_id, run_id=run_id, history=history,
            on_event=on_event, cancelled=cancelled,
        )

    def run(
        self,
        message: str,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        run_id: str | None = None,
        history: list[dict[str, Any]] | None = None,
        on_event: EventSink | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> RunOutput:
        """Run the loop on `message` after `history` (earlier chat-completions messages of
        the session; system messages in it are dropped, the agent's instructions lead).
        `on_event` receives the run's events (it must not raise); `cancelled` is asked at
        every model and tool boundary (see the module's docstring)."""
        run_id = run_id or str(uuid.uuid4())
        session_id = session_id or str(uuid.uuid4())
        started = time.time()
        tracer = Tracer(run_id)
        root = tracer.start("agent.run", "agent", None, {
            "agent_id": self.id, "model": self.model.name, "session_id": session_id, "user_id": user_id,
        })
        messages: list[dict[str, Any]] = []
        if self.instructions:
            messages.append({"role": "system", "content": self.instructions})
        messages += [copy.deepcopy(m) for m in history or [] if m.get("role") != "system"]
        messages.append({"role": "user", "content": message})
        metrics: dict[str, Any] = {"model_calls": 0, "tool_calls": 0, "tool_errors": 0}
        events = RunEvents(on_event or _ignore, run_id=run_id, session_id=session_id, agent_id=self.id,
                           agent_name=self.name)
        run = _Run(tracer, root, metrics, events, on_event is not None, cancelled or _never)
        events.started(model=self.model.id, model_provider=self.model.provider)
        content: str | None = None
        error: str | None = None
        error_type = "RunError"
        status = COMPLETED
        # Tools taking `run_context` (SchedulerTools: the run's user owns what it creates) read it.
        current = CURRENT_RUN.set(RunContext(run_id=run_id, session_id=session_id, agent_id=self.id, user_id=user_id))
        try:
            content = self._loop(messages, run)
        except _RunCancelled as exc:
            status, error = CANCELLED, str(exc)
        except _RunFailed as exc:
            status, error, error_type = ERROR, str(exc), exc.error_type
        except Exception as exc:  # noqa: BLE001 - the contract: a run reports, never raises
            status, error, error_type = ERROR, f"internal error: {type(exc).__name__}: {exc}", type(exc).__name__
        finally:
            CURRENT_RUN.reset(current)
        Tracer.end(root, "ERROR" if status == ERROR else "OK", **({"error": error} if error else {}))
        metrics["duration"] = root.end_time - started
        if status == COMPLETED:
            events.completed(content=content, metrics=metrics)
        elif status == CANCELLED:
            events.cancelled(error or CANCEL_REASON)
        else:
            events.error(error or "the run failed", error_type=error_type)
        return RunOutput(
            run_id=run_id, session_id=session_id, agent_id=self.id, user_id=user_id, status=status,
            content=content, input=message, messages=messages, spans=tracer.spans,
            started_at=started, ended_at=root.end_time, error=error, metrics=metrics,
        )

    def _loop(self, messages: list[dict[str, Any]], run: _Run) -> str | None:
        tools = self.tool_schemas()
        rounds = 0
        while True:
            run.check()
            response = self._call_model(messages, tools, run)
            messages.append(response.to_message())
            if not response.tool_calls:
                run.events.content_completed()
                return response.content
            if rounds >= self.max_tool_rounds:
                # Answer the calls anyway so `messages` stays a valid conversation to resume.
                for call in response.tool_calls:
                    messages.append(_tool_message(call.id, {"error": "not run: the run hit max_tool_rounds"}))
                raise _RunFailed(
                    f"the model still asked for tools after {rounds} rounds of tool calls "
                    f"(max_tool_rounds={self.max_tool_rounds}); raise max_tool_rounds or simplify the task"
                )
            rounds += 1
            for index, call in enumerate(response.tool_calls):
                if run.cancelled():
                    for skipped in response.tool_calls[index:]:
                        messages.append(_tool_message(skipped.id, {"error": f"not run: {CANCEL_REASON}"}))
                    raise _RunCancelled(CANCEL_REASON)
                messages.append(self._call_tool(call, run))

    def _call_model(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], run: _Run) -> ModelResponse:
        tracer, root, metrics = run.tracer, run.root, run.metrics
        span = tracer.start("model.call", "model", root, {
            "model": self.model.id, "provider": self.model.provider, "input_messages": len(messages),
        })
        metrics["model_calls"] += 1
        run.events.model_request_started(model=self.model.id, model_provider=self.model.provider)
        try:
            if run.streaming:
                response = self.model.stream(messages, tools, run.events.content)
            else:
                response = self.model.invoke(messages, tools)
        except Exception as exc:  # noqa: BLE001 - any model failure ends the run, reported
            reason = str(exc) if isinstance(exc, ModelError) else f"{type(exc).__name__}: {exc}"
            Tracer.end(span, "ERROR", error=reason)
            raise _RunFailed(f"model call failed: {reason}", "ModelError") from None
        for key, value in response.usage.items():
            metrics[key] = metrics.get(key, 0) + value
        Tracer.end(span, "OK", usage=dict(response.usage), finish_reason=response.finish_reason,
                   tool_calls=[call.name for call in response.tool_calls])
        run.events.model_request_completed(model=self.model.id, model_provider=self.model.provider,
                                           usage=response.usage)
        return response

    def _call_tool(self, call: ToolCall, run: _Run) -> dict[str, Any]:
        span = run.tracer.start(f"tool.{call.name}", "tool", run.root, {"tool": call.name, "tool_call_id": call.id})
        run.metrics["tool_calls"] += 1
        arguments = _parsed_or_text(call.arguments)
        run.events.tool_started(call_id=call.id, name=call.name, arguments=arguments, started_at=span.start_time)
        result, failed = self._execute(call, span)
        # A tool may also report a failure itself, as a JSON object with "error".
        failed = failed or _is_error_result(result)
        if failed:
            run.metrics["tool_errors"] += 1
        Tracer.end(span, "ERROR" if failed else "OK", result=_bounded(result))
        run.events.tool_completed(call_id=call.id, name=call.name, arguments=arguments, result=result,
                                  failed=failed, started_at=span.start_time, ended_at=span.end_time)
        return _tool_message(call.id, result)

    def _execute(self, call: ToolCall, span: Span) -> tuple[str, bool]:
        """(result text, failed) of one call; failures are results the model can read."""
        function = self.functions.get(call.name)
        if function is None:
            known = ", ".join(self.functions) or "none"
            return json.dumps({"error": f"unknown tool {call.name!r}; available tools: {known}"}), True
        try:
            arguments = json.loads(call.arguments) if call.arguments.strip() else {}
        except ValueError as exc:
            span.attributes["arguments"] = _bounded(call.arguments)
            return json.dumps({"error": f"arguments are not valid JSON ({exc}); send a JSON object"}), True
        span.attributes["arguments"] = arguments if len(call.arguments) <= SPAN_TEXT_CHARS else _bounded(call.arguments)
        try:
            return function.execute(arguments), False
        except ToolArgumentError as exc:
            return json.dumps({"error": f"{call.name}: {exc}"}), True
        except Exception as exc:  # noqa: BLE001 - a failing tool is news for the model, not a crash
            return json.dumps({"error": f"{call.name} failed: {type(exc).__name__}: {exc}"}), True


def _parsed_or_text(arguments: str) -> Any:
    """The arguments as the model meant them: a JSON value, else the text it sent."""
    if not arguments.strip():
        return {}
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def _is_error_result(result: str) -> bool:
    if not result.startswith("{"):
        return False
    try:
        parsed = json.loads(result)
    except ValueError:
        return False
    return isinstance(parsed, dict) and "error" in parsed


def _tool_message(call_id: str, result: str | dict[str, Any]) -> dict[str, Any]:
    content = result if isinstance(result, str) else json.dumps(result)
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def _bounded(text: str) -> str:
    return text if len(text) <= SPAN_TEXT_CHARS else text[:SPAN_TEXT_CHARS] + f"... ({len(text)} chars)"
