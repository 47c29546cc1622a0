"""Step: one unit of work (a function, an agent or a nested workflow), and one attempt at it.

    Step(name="draft", agent=writer)
    Step(name="score", executor=score, max_retries=1, skip_on_failure=True)

agno 3.1.10's parameters and rules (`agno/workflow/step.py`):

- An executor is a function of a StepInput, optionally taking `run_context`; it returns a
  StepOutput, or anything else, which becomes `StepOutput(content=str(result))`. A
  generator function's items are joined (a StepOutput item ends it and is the output).
- An agent is given the deepest content of the previous step (a Parallel's branches one
  section each), or the run's input for a first step; its reply is the content, and a run
  that ended in ERROR is an unsuccessful output (not an exception).
- A step is tried `max_retries + 1` times. When the last attempt raises, a step with
  `skip_on_failure=True` gives `StepOutput(content="Step <name> failed but skipped",
  success=False)`; otherwise the error goes up to whoever runs the step (the workflow
  records and skips it; a container applies its own rule, see containers.py).

`Step.attempt` is exactly one try and `Step.exhausted` the rule after the last one, so the
in-process runner (runner.py) and a step-per-task runner share them; the retry loop
belongs to whoever drives the steps.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Callable
from typing import Any

from kern_tasks.workflow.types import RunContext, StepInput, StepOutput, StepType, input_as_string, message_content

EXECUTOR_KINDS = ("agent", "executor", "workflow")


def refuse_human_review(owner: str, human_review: Any) -> None:
    """agno's human_review (pause for a person, then continue) is the next step of issue 8,
    not this one: refused rather than silently ignored."""
    if human_review is not None:
        raise ValueError(f"{owner}: human_review is not supported yet (a run cannot pause); remove it")


class Node:
    """Anything a workflow's step list may hold once prepared: a Step or a container."""

    name: str | None = None
    step_type: str = StepType.STEP.value  # agno's StepType value, each container its own


class Step(Node):
    """One executor with a retry policy. Exactly one of agent=, executor=, workflow=."""

    def __init__(
        self,
        name: str | None = None,
        agent: Any = None,
        executor: Callable[..., Any] | None = None,
        workflow: Any = None,
        step_id: str | None = None,
        description: str | None = None,
        max_retries: int = 3,
        skip_on_failure: bool = False,
        strict_input_validation: bool = False,
        add_workflow_history: bool | None = None,
        num_history_runs: int = 3,
        human_review: Any = None,
        team: Any = None,
    ) -> None:
        refuse_human_review(f"Step {name!r}", human_review)
        if team is not None:
            raise ValueError(f"Step {name!r}: team= is not supported; give agent=, executor= or workflow=")
        given = [kind for kind, value in zip(EXECUTOR_KINDS, (agent, executor, workflow)) if value is not None]
        if not given:
            raise ValueError(f"Step '{name}' must have one executor: agent=, executor=, or workflow=")
        if len(given) > 1:
            raise ValueError(f"Step '{name}' can only have one executor type. Provided: {', '.join(given)}. "
                             "Please use only one of: agent=, executor=, or workflow=")
        if max_retries < 0:
            raise ValueError(f"Step '{name}': max_retries must be 0 or more, got {max_retries}")
        if name is None and executor is not None:
            name = getattr(executor, "__name__", None)
        self.name = name
        self.agent = agent
        self.executor = executor
        self.workflow = workflow
        self.step_id = step_id or str(uuid.uuid4())
        self.description = description
        self.max_retries = max_retries
        self.skip_on_failure = skip_on_failure
        # Accepted for agno's signature: input validation only warns there, and history
        # needs the stored sessions that in-process runs do not keep yet.
        self.strict_input_validation = strict_input_validation
        self.add_workflow_history = add_workflow_history
        self.num_history_runs = num_history_runs
        self.executor_type = "agent" if agent is not None else "workflow" if workflow is not None else "function"
        self._takes_run_context = executor is not None and _has_parameter(executor, "run_context")

    def __repr__(self) -> str:
        return f"Step(name={self.name!r}, {self.executor_type}={self.executor_name!r})"

    @property
    def executor_name(self) -> str:
        """agno's: the agent's or workflow's name, else the function's __name__."""
        active = self.agent if self.agent is not None else self.workflow if self.workflow is not None else None
        if active is not None:
            return getattr(active, "name", None) or "unnamed_executor"
        return getattr(self.executor, "__name__", "anonymous_function")

    def attempt(self, step_input: StepInput, run_context: RunContext, allow_async: bool = False,
                record_run: Callable[[dict[str, Any]], None] | None = None) -> StepOutput:
        """One try: run the executor on `step_input` and name its output. Raises what the
        executor raises. `allow_async` lets a coroutine function run (on a loop of its own);
        `record_run` is given an agent's or nested workflow's run, as a dict (agno keeps them
        in the workflow run's step_executor_runs)."""
        if self.agent is not None:
            return self._run_agent(step_input, run_context, record_run)
        if self.workflow is not None:
            return self._run_workflow(step_input, run_context, record_run)
        return self.named(self._call_function(step_input, run_context, allow_async))

    def exhausted(self, error: BaseException) -> StepOutput:
        """The output once the last attempt raised `error`: skipped if `skip_on_failure`,
        else `error` is raised again for the caller's rule."""
        if self.skip_on_failure:
            return StepOutput(content=f"Step {self.name} failed but skipped", success=False, error=str(error))
        raise error

    def named(self, output: StepOutput) -> StepOutput:
        """Stamp `output` as this step's (name, id, type unless set, executor)."""
        output.step_name = self.name or "unnamed_step"
        output.step_id = self.step_id
        if output.step_type is None:
            output.step_type = StepType.STEP.value
        output.executor_type = self.executor_type
        output.executor_name = self.executor_name
        return output

    def _call_function(self, step_input: StepInput, run_context: RunContext, allow_async: bool) -> StepOutput:
        function = self.executor
        assert function is not None
        kwargs = {"run_context": run_context} if self._takes_run_context else {}
        if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
            if not allow_async or inspect.isasyncgenfunction(function):
                raise ValueError("Cannot use async function with synchronous execution")
            result = asyncio.run(function(step_input, **kwargs))
        elif inspect.isgeneratorfunction(function):
            return _join_generator(function(step_input, **kwargs))
        else:
            result = function(step_input, **kwargs)
        return result if isinstance(result, StepOutput) else StepOutput(content=str(result))

    def _message(self, step_input: StepInput) -> Any:
        if step_input.previous_step_outputs:
            content = message_content(list(step_input.previous_step_outputs.values())[-1])
            if content:
                return content
        return step_input.input

    def _record(self, run: Any, run_context: RunContext, record_run: Callable[[dict[str, Any]], None] | None) -> None:
        if record_run is not None and hasattr(run, "to_dict"):
            record_run({**run.to_dict(), "parent_run_id": run_context.run_id, "workflow_step_id": self.step_id})

    def _run_agent(self, step_input: StepInput, run_context: RunContext,
                   record_run: Callable[[dict[str, Any]], None] | None) -> StepOutput:
        message = input_as_string(self._message(step_input)) or ""
        run = self.agent.run(message, session_id=run_context.session_id, user_id=run_context.user_id)
        self._record(run, run_context, record_run)
        status = getattr(run, "status", None)
        failed = str(getattr(status, "value", status)).upper() in ("ERROR", "CANCELLED")
        metrics = getattr(run, "metrics", None)
        return self.named(StepOutput(
            content=run.content,
            step_run_id=getattr(run, "run_id", None),
            metrics=dict(metrics) if isinstance(metrics, dict) else None,
            success=not failed,
            # agno reports the reply as the error; our Agent leaves content empty and says why.
            error=(getattr(run, "error", None) or run.content) if failed else None,
        ))

    def _run_workflow(self, step_input: StepInput, run_context: RunContext,
                      record_run: Callable[[dict[str, Any]], None] | None) -> StepOutput:
        nested = self.workflow.run(
            input=self._message(step_input), session_id=run_context.session_id, user_id=run_context.user_id,
            session_state=run_context.session_state,
        )
        self._record(nested, run_context, record_run)
        return StepOutput(
            step_name=self.name, step_id=self.step_id, step_type=StepType.WORKFLOW.value, executor_type="workflow",
            executor_name=self.executor_name, content=nested.content, step_run_id=nested.run_id,
            success=getattr(nested.status, "value", nested.status) != "ERROR",
            steps=list(nested.step_results) or None,
        )


def _join_generator(items: Any) -> StepOutput:
    content = ""
    for item in items:
        if isinstance(item, StepOutput):
            return item
        content += str(item)
    return StepOutput(content=content)


def _has_parameter(function: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _is_workflow(item: Any) -> bool:
    return hasattr(item, "steps") and callable(getattr(item, "run", None)) and not isinstance(item, Node)


def as_node(item: Any, default_name: str | None = None) -> Node:
    """A step-list entry as a Node: Steps and containers as they are; an agent, a nested
    workflow or a named function wrapped in a Step (named after it, else `default_name`).
    ValueError for anything else."""
    if isinstance(item, Node):
        return item
    if _is_workflow(item):
        return Step(name=getattr(item, "name", None) or default_name, workflow=item,
                    description=getattr(item, "description", None))
    if callable(getattr(item, "run", None)):
        return Step(name=getattr(item, "name", None) or default_name, agent=item,
                    description=getattr(item, "description", None))
    if callable(item) and hasattr(item, "__name__"):
        return Step(name=item.__name__, executor=item, description="User-defined callable step")
    raise ValueError(f"Invalid step type: {type(item).__name__}")
