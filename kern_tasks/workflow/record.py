"""A workflow run kept where agno keeps it: its session (agno_sessions, with the session
state), the run (agno_runs, run_data the run's `to_dict()` with nested step_results), and a
trace (agno_traces) with one span per step attempt (agno_spans), nested like the step tree.

Each record is a small function of plain values on a RunStore, so whoever runs a step can
record it: the in-process runner around each attempt (through `Recorder`), and a runner that
runs each step as a task of its own from whichever worker runs the step:

    state = session_state_for_run(given, defaults, load_session(store, session_id), overwrite)
    run_started(store, run_id=..., session_id=..., workflow_id=..., ...)   # RUNNING, root span
    attempt_started(store, run_id, span_id, parent_span_id, name, step_type, attempt)
    attempt_finished(store, span_id, error=None, content=...)             # or error="..."

(`attempt_opened` / `attempt_closed` are the same two inside the caller's transaction: a
worker opens an attempt's span where it takes the attempt, closes it where it records it.)
    run_finished(store, run.to_dict(), state)          # run row, saved state, trace ended

Span ids are 16 hex digits chosen by the caller: the root's is `root_span_id(run_id)`; a step
attempt's may be random (in-process) or `kern_tasks.runs.traces.span_id_for(run_id, path,
attempt)`, so that a duplicate message for one attempt records one span. An attempt started
and never finished (its worker lost) stays an UNSET span; the run's end leaves it so.
agno's trace view (TraceDetail) labels the root's children by their position in the root's
`agno.workflow.step_types`, as if each top-level step had one span: after a retried
top-level step, its labels are off by the extra attempts (the spans themselves are right).

agno's rules for the session (`agno/workflow/workflow.py`: read_or_create_session,
_load_session_state, save_session): a new session starts from the Workflow's session_state,
a stored one from its saved state (the Workflow's is then not applied again); the run's
session_state is laid over it (unless `overwrite_db_session_state`); at the end the state is
saved without the run's own keys (current_run_id, ...), which agno removes from the run's
dict itself, so the caller's dict loses them too.
"""

from __future__ import annotations

import contextvars
import copy
import time
import uuid
from collections.abc import Callable
from typing import Any, Mapping

from sqlalchemy import Connection

from kern_tasks.runs.live import close_opened_span, open_span
from kern_tasks.runs.store import RunResult, RunStore, StoredRun
from kern_tasks.runs.traces import RunContext, span_id_for
from kern_tasks.workflow.types import StepOutput, input_as_string

RUN_KEYS_NOT_SAVED = (
    "current_session_id", "current_user_id", "current_run_id", "workflow_id", "run_id", "session_id", "workflow_name",
)
OUTPUT_VALUE_CHARS = 4000  # a span keeps the start of a step's content, for trace views


def root_span_id(run_id: str) -> str:
    """The span of the whole run, the parent of its top-level steps' spans."""
    return span_id_for(run_id, "run")


def merge_state(into: dict[str, Any], given: Mapping[str, Any]) -> None:
    """agno's `merge_dictionaries`: nested dicts merged key by key, `given` winning."""
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge_state(into[key], value)
        else:
            into[key] = value


def load_session(store: RunStore | None, session_id: str) -> dict[str, Any] | None:
    """The stored session's session_data; None without a store or for a new session."""
    return None if store is None else store.session_data(session_id)


def session_state_for_run(
    given: dict[str, Any] | None, defaults: Mapping[str, Any] | None, stored: Mapping[str, Any] | None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """The run's session_state (agno's rule, see the module docstring): `given` (the very dict,
    if one was given) laid over the stored session's state, or over `defaults` for a new
    session (`stored` None)."""
    state = given if given is not None else {}
    base = (stored or {}).get("session_state") if stored is not None else copy.deepcopy(dict(defaults or {}))
    if isinstance(base, dict) and base and not overwrite:
        merged = dict(base)
        merge_state(merged, state)
        state.clear()
        state.update(merged)
    return state


def saved_state(state: dict[str, Any]) -> dict[str, Any]:
    """Remove the run's own keys from `state` (in place, as agno does) and return it."""
    for key in RUN_KEYS_NOT_SAVED:
        state.pop(key, None)
    return state


def workflow_data(workflow_id: str, name: str | None, steps: list[Any]) -> dict[str, Any]:
    """agno's `_get_workflow_data`: the session's workflow_data (id, name, top-level steps)."""
    return {
        "workflow_id": workflow_id,
        "name": name,
        "steps": [
            {"name": step.name, "description": getattr(step, "description", None), "type": step.step_type}
            for step in steps
        ],
    }


def run_started(
    store: RunStore, *, run_id: str, session_id: str, user_id: str | None, workflow_id: str,
    workflow_name: str | None, run_data: Mapping[str, Any], session_workflow_data: Mapping[str, Any],
    description: str | None = None, started_at: float | None = None,
) -> StoredRun:
    """Record a new run of workflow `workflow_id`, RUNNING, with its root span open. `run_data`
    is the run's `to_dict()` at the start. Raises `Conflict` when the session is another's."""
    stored = store.start(
        run_type="workflow", component_id=workflow_id, component_name=workflow_name,
        message=input_as_string(run_data.get("input")) or "", session_id=session_id, user_id=user_id,
        run_id=run_id, run_data=run_data, component_data=session_workflow_data,
    )
    store.mark_running(run_id)
    steps = list(session_workflow_data.get("steps") or [])
    attributes: dict[str, Any] = {
        "agno.workflow.steps_count": len(steps),
        "agno.workflow.steps": [step["name"] for step in steps],
        "agno.workflow.step_types": [step["type"] for step in steps],
        "input.value": input_as_string(run_data.get("input")),
    }
    if description:
        attributes["agno.workflow.description"] = description
    store.start_span(run_id, {
        "span_id": root_span_id(run_id), "parent_span_id": None, "name": f"{workflow_name or workflow_id}.run",
        "kind": "workflow", "attributes": attributes,
    }, started_at=started_at)
    return stored


def attempt_span(span_id: str, parent_span_id: str | None, name: str | None, step_type: str,
                 attempt: int) -> dict[str, Any]:
    """The span of attempt `attempt` (from 1) of step `name`, as `attempt_started` stores it."""
    return {
        "span_id": span_id, "parent_span_id": parent_span_id, "name": name or step_type, "kind": "step",
        "attributes": {"agno.step.name": name, "agno.step.type": step_type, "agno.step.attempt": attempt},
    }


def attempt_started(
    store: RunStore, run_id: str, span_id: str, parent_span_id: str | None, name: str | None, step_type: str,
    attempt: int, *, started_at: float | None = None,
) -> None:
    """Record that attempt `attempt` (from 1) of step `name` began; `parent_span_id` is the
    span of the container around it, or the root span for a top-level step."""
    store.start_span(run_id, attempt_span(span_id, parent_span_id, name, step_type, attempt), started_at=started_at)


def attempt_opened(
    conn: Connection, run: RunContext, span_id: str, parent_span_id: str | None, name: str | None, step_type: str,
    attempt: int, *, started_at: float, now: float,
) -> dict[str, Any]:
    """`attempt_started` in the caller's transaction (a worker's, the one that takes the
    attempt), `run` saying whose run it is; returns the span's row for `attempt_closed`."""
    span = {**attempt_span(span_id, parent_span_id, name, step_type, attempt), "start_time": started_at}
    return open_span(conn, run, span, now=now)


def _ended(error: str | None, content: Any) -> dict[str, Any]:
    attributes = {} if content is None else {"output.value": str(content)[:OUTPUT_VALUE_CHARS]}
    return {"status": "ERROR" if error is not None else "OK", "error": error, "attributes": attributes}


def attempt_finished(
    store: RunStore, span_id: str, *, error: str | None = None, content: Any = None,
    ended_at: float | None = None,
) -> bool:
    """Record that an attempt ended: ERROR with `error` (it raised, or its output failed),
    else OK with the start of `content`. False when it had ended already."""
    return store.end_span(span_id, ended_at=ended_at, **_ended(error, content))


def attempt_closed(conn: Connection, span: Mapping[str, Any], *, error: str | None = None, content: Any = None,
                   ended_at: float) -> bool:
    """`attempt_finished` in the caller's transaction, of the span `attempt_opened` answered
    (one UPDATE, no read). False when it had ended already."""
    return close_opened_span(conn, span, ended_at=ended_at, **_ended(error, content))


def run_finished(
    store: RunStore, run: Mapping[str, Any], session_state: dict[str, Any] | None, *,
    started_at: float | None = None, ended_at: float | None = None,
) -> StoredRun | None:
    """Record how the run ended: `run` is its `to_dict()` (status, content, step_results...);
    the session's state is saved (without the run's own keys); the trace is ended."""
    status = str(run.get("status") or "ERROR")
    error = run.get("content") if status == "ERROR" else None
    session_data = None if session_state is None else {"session_state": saved_state(session_state)}
    return store.finish(
        str(run["run_id"]),
        RunResult(status=status, content=run.get("content"), error=None if error is None else str(error),
                  metrics=run.get("metrics"), started_at=started_at, ended_at=ended_at,
                  extra={k: v for k, v in run.items() if k not in ("status", "content", "metrics")}),
        component_name=run.get("workflow_name"),
        session_data=session_data,
    )


class Recorder:
    """Records the spans of one run driven in this process. The parent of a span is the span
    of the node around it, kept in a context variable (each Parallel branch has its own)."""

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self._parent: contextvars.ContextVar[str] = contextvars.ContextVar(
            f"span-{run_id}", default=root_span_id(run_id))

    def traced(self, name: str | None, step_type: str, attempt: int, call: Callable[[], StepOutput]) -> StepOutput:
        """Run `call` as attempt `attempt` of step `name`, recorded as a span around it;
        what `call` returns or raises goes to the caller unchanged."""
        span_id = uuid.uuid4().hex[:16]
        attempt_started(self.store, self.run_id, span_id, self._parent.get(), name, step_type, attempt,
                        started_at=time.time())
        token = self._parent.set(span_id)
        try:
            output = call()
        except Exception as exc:
            attempt_finished(self.store, span_id, error=str(exc) or type(exc).__name__, ended_at=time.time())
            raise
        finally:
            self._parent.reset(token)
        error = None if output.success else (output.error or str(output.content))
        attempt_finished(self.store, span_id, error=error, content=output.content, ended_at=time.time())
        return output
