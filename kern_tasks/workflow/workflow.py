"""Workflow: a named list of steps, run with agno 3.1.10's parameters and results.

    workflow = Workflow(name="content_pipeline", steps=[
        Step(name="research", agent=researcher),
        Loop(name="draft_review", steps=[...], end_condition='last_step_content.contains("APPROVED")'),
    ])
    result = workflow.run("AI agents in 2026")        # a WorkflowRunOutput; .to_dict() as agno's

The steps are prepared (agents and functions wrapped in Steps) and every CEL expression
compiled when the workflow is built, so a bad definition fails here, not in a run.
`id` defaults to agno's id for the name ("content_pipeline" -> "content-pipeline").

A run's session_state starts from `session_state` given here (or, with a `db`, from the
state the session saved last), updated by the one given to `run`, plus agno's workflow_id,
workflow_name, current_session_id, current_user_id and current_run_id; every step of the
run shares that one dict, which (as in agno) is the very dict given to `run`, if one was.

With `db` (a kern_tasks.db.Database), each run is kept as agno keeps it (see record.py):
the session in agno_sessions with its state saved at the end, the run in agno_runs, and a
trace with a span per step attempt, recorded as the steps run. Starting a run in a session
that belongs to another workflow or user raises `kern_tasks.errors.Conflict`.

`run` returns the run when it COMPLETED. When the run ends in ERROR, `run` raises the error
that ended it, as agno does; the run itself is then `get_last_run_output()`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from pydantic import BaseModel

from kern_tasks.db import Database
from kern_tasks.runs.store import RunStore
from kern_tasks.workflow.record import (
    Recorder, load_session, run_finished, run_started, session_state_for_run, workflow_data,
)
from kern_tasks.workflow.runner import Drive, execute_workflow
from kern_tasks.workflow.step import Node, as_node
from kern_tasks.workflow.types import RunContext, WorkflowRunOutput


# agno's Workflow parameters that change nothing in-process (logging, streaming defaults,
# storage options of a db that is not used yet); accepted so that agno code runs as written.
AGNO_OPTIONS_WITHOUT_EFFECT = frozenset({
    "agent", "debug_mode", "debug_level", "stream", "stream_events", "stream_executor_events", "store_events",
    "store_media", "media_storage", "events_to_skip", "add_dependencies_to_context",
    "add_session_state_to_context", "cache_session", "telemetry", "add_workflow_history_to_steps",
    "num_history_runs",
})


def validate_input(value: Any, schema: type[BaseModel]) -> BaseModel:
    """agno's input_schema rule: JSON text or a dict becomes the schema's model; a model of
    the schema is kept. ValueError otherwise."""
    if value is None:
        raise ValueError("Input is required when input_schema is provided")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"Failed to parse input. Is it a valid JSON string?: {exc}") from None
    if isinstance(value, schema):
        return value
    if isinstance(value, BaseModel):
        raise ValueError(f"Expected {schema.__name__} but got {type(value).__name__}")
    if not isinstance(value, dict):
        raise ValueError(f"Cannot validate {type(value)} against input_schema. "
                         f"Expected dict or {schema.__name__} instance.")
    try:
        return schema(**value)
    except Exception as exc:  # noqa: BLE001 - agno reports any validation failure so
        raise ValueError(f"Failed to parse dict into {schema.__name__}: {exc}") from None


def id_from_name(name: str | None) -> str | None:
    """agno's `generate_id_from_name`: lower case, spaces and underscores as dashes."""
    return name.lower().replace(" ", "-").replace("_", "-") if name else None


class Workflow:
    """A workflow definition. Steps may be Steps, containers, agents or functions of a StepInput."""

    def __init__(
        self,
        *,
        id: str | None = None,
        name: str | None = None,
        description: str | None = None,
        db: Any = None,
        steps: list[Any] | None = None,
        session_id: str | None = None,
        session_state: dict[str, Any] | None = None,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        dependencies: dict[str, Any] | None = None,
        input_schema: type[BaseModel] | None = None,
        store_executor_outputs: bool = True,
        overwrite_db_session_state: bool = False,
        **agno_options: Any,
    ) -> None:
        unknown = sorted(set(agno_options) - AGNO_OPTIONS_WITHOUT_EFFECT)
        if unknown:
            raise TypeError(f"Workflow() got unexpected keyword arguments: {', '.join(unknown)}")
        if agno_options.get("agent") is not None:
            raise ValueError("Workflow(agent=...) (agno's WorkflowAgent) is not supported; give steps=")
        if db is not None and not isinstance(db, Database):
            raise TypeError(f"Workflow(db=...) takes a kern_tasks.db.Database, got {type(db).__name__}")
        self.id = id or id_from_name(name) or str(uuid.uuid4())
        self.name = name
        self.description = description
        self.db = db
        self.steps: list[Node] = [as_node(item, f"step_{i + 1}") for i, item in enumerate(steps or [])]
        self.session_id = session_id
        self.session_state = session_state
        self.user_id = user_id
        self.metadata = metadata
        self.dependencies = dependencies
        self.input_schema = input_schema
        self.store_executor_outputs = store_executor_outputs
        self.overwrite_db_session_state = overwrite_db_session_state
        self._store = RunStore(db) if db is not None else None
        self._last_run: WorkflowRunOutput | None = None

    def __repr__(self) -> str:
        return f"Workflow(id={self.id!r}, steps={[step.name for step in self.steps]})"

    def run(
        self,
        input: Any = None,
        additional_data: dict[str, Any] | None = None,
        user_id: str | None = None,
        run_id: str | None = None,
        session_id: str | None = None,
        session_state: dict[str, Any] | None = None,
        audio: list[Any] | None = None,
        images: list[Any] | None = None,
        videos: list[Any] | None = None,
        files: list[Any] | None = None,
        metadata: dict[str, Any] | None = None,
        dependencies: dict[str, Any] | None = None,
        stream: bool | None = None,
        background: bool | None = False,
    ) -> WorkflowRunOutput:
        """Run every step in this process and return the run (see the module docstring)."""
        return self._run(locals(), allow_async=False)

    async def arun(
        self,
        input: Any = None,
        additional_data: dict[str, Any] | None = None,
        user_id: str | None = None,
        run_id: str | None = None,
        session_id: str | None = None,
        session_state: dict[str, Any] | None = None,
        audio: list[Any] | None = None,
        images: list[Any] | None = None,
        videos: list[Any] | None = None,
        files: list[Any] | None = None,
        metadata: dict[str, Any] | None = None,
        dependencies: dict[str, Any] | None = None,
        stream: bool | None = None,
        background: bool | None = False,
    ) -> WorkflowRunOutput:
        """`run` on a worker thread; there, coroutine-function executors are run too (each on
        an event loop of its own, since the steps are driven synchronously)."""
        arguments = dict(locals())
        return await asyncio.to_thread(self._run, arguments, True)

    def get_last_run_output(self, session_id: str | None = None) -> WorkflowRunOutput | None:
        """The last run of this Workflow object in this process (of `session_id`, if given)."""
        run = self._last_run
        if run is None or (session_id is not None and run.session_id != session_id):
            return None
        return run

    def _run(self, arguments: dict[str, Any], allow_async: bool) -> WorkflowRunOutput:
        if arguments.pop("stream", None) or arguments.pop("background", None):
            raise ValueError("stream=True and background=True are not supported in-process yet; run it plainly")
        if self.input_schema is not None:
            arguments["input"] = validate_input(arguments["input"], self.input_schema)
        run_id = arguments["run_id"] or str(uuid.uuid4())
        session_id = arguments["session_id"] or self.session_id or str(uuid.uuid4())
        # agno keeps a generated session id on the instance, so later runs share it.
        self.session_id = session_id
        user_id = arguments["user_id"] or self.user_id
        metadata = {**(self.metadata or {}), **(arguments["metadata"] or {})}
        stored_session = load_session(self._store, session_id)
        run_context = RunContext(
            run_id=run_id, session_id=session_id, user_id=user_id, workflow_id=self.id, workflow_name=self.name,
            session_state=self.run_session_state(arguments["session_state"], stored_session, session_id, user_id,
                                              run_id),
            dependencies={**(self.dependencies or {}), **(arguments["dependencies"] or {})} or None,
            metadata=metadata,
        )
        run = WorkflowRunOutput(
            run_id=run_id, input=arguments["input"], session_id=session_id, user_id=user_id,
            workflow_id=self.id, workflow_name=self.name, metadata=metadata,
            **{name: list(arguments[name]) for name in ("images", "videos", "audio", "files") if arguments[name]},
        )
        drive = Drive(run_context, allow_async)
        started = time.time()
        if self._store is not None:
            run_started(self._store, run_id=run_id, session_id=session_id, user_id=user_id, workflow_id=self.id,
                        workflow_name=self.name, run_data=run.to_dict(), description=self.description,
                        session_workflow_data=workflow_data(self.id, self.name, self.steps), started_at=started)
            drive.recorder = Recorder(self._store, run_id)
        run, error = execute_workflow(self.steps, run, drive, arguments["additional_data"])
        if not self.store_executor_outputs:
            run.step_executor_runs = None
        self._last_run = run
        if self._store is not None:
            run_finished(self._store, run.to_dict(), run_context.session_state, started_at=started,
                         ended_at=time.time())
        if error is not None:
            raise error
        return run

    def run_session_state(self, given: dict[str, Any] | None, stored_session: dict[str, Any] | None,
                          session_id: str, user_id: str | None, run_id: str) -> dict[str, Any]:
        """A run's session_state, with agno's run keys (also what a run on workers starts from)."""
        # agno's order: the stored (or, for a new session, the definition's) state under the
        # run's; and like agno, the dict the caller gave is the run's state itself, so the
        # caller sees what the steps left in it.
        state = session_state_for_run(given, self.session_state, stored_session, self.overwrite_db_session_state)
        state["workflow_id"] = self.id
        if self.name:
            state["workflow_name"] = self.name
        if user_id:
            state["current_user_id"] = user_id
        state["current_session_id"] = session_id
        state["current_run_id"] = run_id
        return state

