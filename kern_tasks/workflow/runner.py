"""The in-process runner: drives a workflow's steps in this process, as agno 3.1.10 does.

What a step and a container decide lives in step.py and containers.py; this module only
drives them: the retry loop, sequences, Parallel branches on threads, Loop iterations,
and the workflow-level rules (`agno/workflow/workflow.py` `_execute`):

- Each top-level step gets the run's input, the outputs recorded so far by step name
  (`previous_step_outputs`, a later step of the same name replacing the earlier one in
  place) and the last one's content; a function step sees the deepest content of the
  previous step (a container's last inner step).
- A Step or Condition that raises is recorded as "Step skipped due to error: <error>"
  (success False) and the run goes on, so it ends COMPLETED. Any other container that
  raises (a Loop whose inner step failed, a Router whose selector raised, an empty
  Parallel) ends the run in ERROR with "Workflow execution failed: <error>".
- An output with `stop=True` (also a container's, when an inner step stopped) ends the run
  after it, COMPLETED.
- The run's content is the deepest content of the last output; "No steps executed" if none.

`execute_workflow` never raises for a step's failure: it returns the run output and the
error that ended it in ERROR, if one did; `Workflow.run` re-raises that error, as agno does.

The workflow-level rules are pure functions (`top_level_input`, `top_level_failure`,
`record_failure`, `finish`), like the Step's (`attempt`, `exhausted`) and the containers'
decisions, so a runner that runs each step as its own task applies the same rules to
outputs it reads back from storage; only `Drive` and `execute_workflow` are in-process.
With a recorder (the Workflow has a db), each Step attempt and each container run is a span
(record.py), nested as the nodes are.
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kern_tasks.workflow.containers import Condition, Loop, Parallel, Router, Steps, inner_failed
from kern_tasks.workflow.record import Recorder
from kern_tasks.workflow.step import Node, Step
from kern_tasks.workflow.types import (
    MEDIA_FIELDS,
    RunContext,
    RunStatus,
    StepInput,
    StepOutput,
    StepType,
    WorkflowRunOutput,
    chain_input,
    deepest_content,
)

log = logging.getLogger(__name__)


@dataclass
class Drive:
    """What every step of one run shares: its RunContext, whether coroutine executors may
    run (only under `arun`), the executor runs recorded so far, and the recorder of its
    spans (one per step attempt, one per container run) when the run is stored."""

    run_context: RunContext
    allow_async: bool = False
    executor_runs: list[dict[str, Any]] = field(default_factory=list)
    recorder: Recorder | None = None

    def execute(self, node: Node, step_input: StepInput) -> StepOutput:
        """Run `node` (a Step or a container) on `step_input`; raises what the node's rules let through."""
        if isinstance(node, Step):
            return self.step(node, step_input)
        if self.recorder is None:
            return self.container(node, step_input)
        return self.recorder.traced(node.name, node.step_type, 1, lambda: self.container(node, step_input))

    def container(self, node: Node, step_input: StepInput) -> StepOutput:
        if isinstance(node, Steps):
            return self.steps(node, step_input)
        if isinstance(node, Parallel):
            return self.parallel(node, step_input)
        if isinstance(node, Loop):
            return self.loop(node, step_input)
        if isinstance(node, Condition):
            return self.condition(node, step_input)
        if isinstance(node, Router):
            return self.router(node, step_input)
        raise ValueError(f"Invalid step type: {type(node).__name__}")

    def step(self, step: Step, step_input: StepInput) -> StepOutput:
        # agno sets this on the input it was given (shared with sibling branches); kept so.
        if step_input.previous_step_outputs:
            step_input.previous_step_content = step_input.get_last_step_content()
        return self.tries(step, step_input)

    def tries(self, step: Step, step_input: StepInput) -> StepOutput:
        """The retry loop: up to max_retries + 1 attempts, then the step's `exhausted` rule.
        A step-per-task runner (replay.py) reads the outcome from storage instead."""
        for attempt in range(step.max_retries + 1):
            try:
                return self.attempt(step, step_input, attempt + 1)
            except Exception as exc:  # noqa: BLE001 - any executor error is retried, then ruled on
                log.warning("Step %s failed (attempt %d): %s", step.name, attempt + 1, exc)
                if attempt == step.max_retries:
                    return step.exhausted(exc)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def attempt(self, step: Step, step_input: StepInput, number: int) -> StepOutput:
        """Attempt `number` (from 1) at `step`, recorded as a span of its own."""
        def call() -> StepOutput:
            return step.attempt(step_input, self.run_context, self.allow_async, self.executor_runs.append)

        return call() if self.recorder is None else self.recorder.traced(step.name, step.step_type, number, call)

    def sequence(self, nodes: list[Node], step_input: StepInput, catch: bool) -> tuple[list[StepOutput], bool, StepInput]:
        """Run `nodes` in order, each given the previous one's output. Returns (outputs, stopped,
        the input the next step would get). With `catch`, a node that raises is recorded as a
        failed output and ends the sequence; without, the error goes up."""
        results: list[StepOutput] = []
        scope: dict[Any, StepOutput] = {}
        current = step_input
        for node in nodes:
            try:
                output = self.execute(node, current)
            except Exception as exc:  # noqa: BLE001 - the container's rule decides
                if not catch:
                    raise
                log.warning("Step %s failed inside a container: %s", node.name, exc)
                results.append(inner_failed(node.name, exc))
                return results, False, current
            results.append(output)
            scope[node.name] = output
            if output.stop:
                return results, True, current
            current = chain_input(current, output, scope)
        return results, False, current

    def steps(self, steps: Steps, step_input: StepInput) -> StepOutput:
        if not steps.steps:
            return steps.empty()
        try:
            results, _, _ = self.sequence(steps.steps, step_input, catch=False)
        except Exception as exc:  # noqa: BLE001 - agno: a failed inner step fails the Steps
            log.warning("Steps %s failed: %s", steps.name, exc)
            return steps.failed(exc)
        return steps.combine(results)

    def parallel(self, parallel: Parallel, step_input: StepInput) -> StepOutput:
        if not parallel.steps:
            # agno fails here too (its thread pool refuses zero workers), ending the run in ERROR.
            raise ValueError(f"Parallel {parallel.name!r} has no steps")

        return parallel.combine(self.branches(parallel, step_input))

    def branch(self, parallel: Parallel, index: int, step_input: StepInput) -> StepOutput:
        """Branch `index` of `parallel`: its output, or a failed output if it raised."""
        try:
            return self.execute(parallel.steps[index], step_input)
        except Exception as exc:  # noqa: BLE001 - a failed branch is a failed output
            log.warning("Parallel branch %s failed: %s", parallel.branch_name(index), exc)
            return inner_failed(parallel.branch_name(index), exc)

    def branches(self, parallel: Parallel, step_input: StepInput) -> list[StepOutput]:
        """Every branch's output, in branch order; in-process, each branch on a thread."""
        with ThreadPoolExecutor(max_workers=len(parallel.steps)) as pool:
            futures = [pool.submit(contextvars.copy_context().run, self.branch, parallel, i, step_input)
                       for i in range(len(parallel.steps))]
            return [future.result() for future in futures]

    # The decisions of Loop, Condition and Router, each one call a replaying runner can record.
    def ends(self, loop: Loop, results: list[StepOutput], iteration: int) -> bool:
        return loop.should_end(results, iteration)

    def choose(self, condition: Condition, step_input: StepInput) -> tuple[str, list[Node]] | None:
        return condition.choose(step_input, self.run_context)

    def select(self, router: Router, step_input: StepInput) -> list[Node]:
        return router.select(step_input, self.run_context)

    def loop(self, loop: Loop, step_input: StepInput) -> StepOutput:
        all_results: list[StepOutput] = []
        iteration = 0
        iteration_input = step_input
        while iteration < loop.max_iterations:
            results, stopped, next_input = self.sequence(loop.steps, iteration_input, catch=False)
            all_results.extend(results)
            iteration += 1
            if self.ends(loop, results, iteration) or stopped:
                break
            if loop.forward_iteration_output:
                iteration_input = next_input
        return loop.combine(all_results, iteration)

    def condition(self, condition: Condition, step_input: StepInput) -> StepOutput:
        chosen = self.choose(condition, step_input)
        if chosen is None:
            return condition.not_met()
        branch, nodes = chosen
        results, _, _ = self.sequence(nodes, step_input, catch=True)
        return condition.combine(results, branch)

    def router(self, router: Router, step_input: StepInput) -> StepOutput:
        nodes = self.select(router, step_input)
        if not nodes:
            return router.none_selected()
        results, _, _ = self.sequence(nodes, step_input, catch=True)
        return router.combine(results)


def top_level_input(run: WorkflowRunOutput, previous: dict[Any, StepOutput],
                    additional_data: dict[str, Any] | None, media: dict[str, list[Any]]) -> StepInput:
    """The input of the next top-level step: the run's input, the outputs so far by name
    (the same dict, as agno passes it), the last one's content, the media so far."""
    return StepInput(
        input=run.input,
        previous_step_content=list(previous.values())[-1].content if previous else None,
        previous_step_outputs=previous,
        additional_data=additional_data,
        **media,
    )


def top_level_failure(node: Node, error: BaseException) -> StepOutput | None:
    """agno's rule for a top-level step that raised: a Step or Condition is recorded as
    skipped and the run goes on (the output is returned); any other container ends the run
    in ERROR (None)."""
    if not isinstance(node, (Step, Condition)):
        return None
    return StepOutput(step_name=node.name, step_id=getattr(node, "step_id", None) or str(uuid.uuid4()),
                      step_type=StepType.STEP.value, content=f"Step skipped due to error: {error}",
                      success=False, error=str(error))


def record_failure(collected: list[StepOutput], node: Node, error: BaseException) -> None:
    """agno's record of the step that ended the run in ERROR, appended unless the last
    output already is that step's."""
    step_id = getattr(node, "step_id", None)
    if not collected or collected[-1].step_id != step_id:
        collected.append(StepOutput(step_name=node.name, step_id=step_id, success=False,
                                    error=str(error), content=str(error)))


def workflow_metrics(outputs: list[StepOutput], duration: float) -> dict[str, Any]:
    """agno's WorkflowMetrics dict: agent steps' metrics by step name, and the run's duration."""
    by_step: dict[str, Any] = {}

    def visit(output: StepOutput) -> None:
        for inner in output.steps or []:
            visit(inner)
        if output.step_name and output.metrics and output.executor_type in ("agent", "team"):
            by_step[output.step_name] = {"step_name": output.step_name, "executor_type": output.executor_type,
                                         "executor_name": output.executor_name, "metrics": output.metrics}

    for output in outputs:
        visit(output)
    return {"steps": by_step, "duration": duration}


def finish(run: WorkflowRunOutput, collected: list[StepOutput], error: BaseException | None,
           media: dict[str, list[Any]], duration: float) -> WorkflowRunOutput:
    """Close `run`: ERROR with "Workflow execution failed: ..." if `error`, else COMPLETED
    with the deepest content of the last output ("No steps executed" if none) and the media."""
    run.step_results = collected
    run.metrics = workflow_metrics(collected, duration)
    if error is not None:
        run.status = RunStatus.error
        run.content = f"Workflow execution failed: {error}"
        return run
    run.content = deepest_content(collected[-1]) if collected else "No steps executed"
    for name in MEDIA_FIELDS:
        setattr(run, name, media[name])
    run.status = RunStatus.completed
    return run


def execute_workflow(
    steps: list[Node],
    run: WorkflowRunOutput,
    drive: Drive,
    additional_data: dict[str, Any] | None = None,
) -> tuple[WorkflowRunOutput, BaseException | None]:
    """Run `steps` as a workflow into `run` (status, content, step_results, media, metrics).
    Returns `run` and the error that ended it in ERROR (None when it COMPLETED)."""
    started = time.perf_counter()
    run.status = RunStatus.running
    collected: list[StepOutput] = []
    previous: dict[Any, StepOutput] = {}
    shared = {name: list(getattr(run, name) or []) for name in MEDIA_FIELDS}
    produced = {name: list(getattr(run, name) or []) for name in MEDIA_FIELDS}
    error: BaseException | None = None
    for node in steps:
        try:
            output = drive.execute(node, top_level_input(run, previous, additional_data, shared))
        except Exception as exc:  # noqa: BLE001 - the workflow's rule decides
            recorded = top_level_failure(node, exc)
            if recorded is None:
                log.error("Workflow %s failed at %s: %s", run.workflow_name, node.name, exc)
                record_failure(collected, node, exc)
                error = exc
                break
            log.warning("Step %s failed and is skipped: %s", node.name, exc)
            output = recorded
        previous[node.name] = output
        collected.append(output)
        for name in MEDIA_FIELDS:
            shared[name].extend(getattr(output, name) or [])
            produced[name].extend(getattr(output, name) or [])
        if output.stop:
            log.info("Early termination requested by step %s", node.name)
            break
    run.step_executor_runs = drive.executor_runs or None
    return finish(run, collected, error, produced, time.perf_counter() - started), error
