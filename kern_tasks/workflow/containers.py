"""Containers: Steps, Parallel, Loop, Condition, Router, with agno 3.1.10's parameters.

This module holds what each container decides and how it sums up its inner outputs,
as pure functions of outputs and inputs; running the inner steps is the runner's job
(runner.py in-process; a step-per-task runner can drive the same decisions). The rules,
as agno has them (`agno/workflow/{steps,parallel,loop,condition,router}.py`):

- Steps: runs in order, each step given the previous one's output; stops after a step
  with `stop=True`; an inner error ends it with a failed output ("Steps execution failed:
  ..."); content "Steps <name> completed with <n> results".
- Parallel: every branch gets the same input; a branch that raises becomes a failed
  output ("Step <name> failed: <error>"); the Parallel's content is a report of every
  branch (SUCCESS/FAILURE), it succeeds only if every branch did, and stops the run if
  any branch asked to.
- Loop: runs its steps up to `max_iterations` times, each iteration from the Loop's input
  (or the previous iteration's last output with `forward_iteration_output=True`); after each
  iteration the end condition is checked, then a `stop=True`; an inner error is not caught
  (the run ends in ERROR). Content "Loop <name> completed <k> iterations with <n> total steps".
- Condition: the evaluator (bool, callable, or CEL) picks `steps` or `else_steps`; none
  picked: "Condition <name> not met - skipped <n> steps"; an inner error is recorded as a
  failed output and ends the branch.
- Router: the selector (callable or CEL) names one or more choices; an unknown name is
  skipped with a warning, and no choice at all gives "Router <name> completed with 0
  results (no steps selected)"; an inner error is recorded and ends the route.

Every container's output carries its inner outputs in `steps`; success is "all inner
steps succeeded" and `stop` is "any inner step stopped" (for Loop, Steps, Condition, Router).
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Callable
from typing import Any

from kern_tasks.workflow.cel import (
    CONDITION_EVALUATOR,
    LOOP_END_CONDITION,
    ROUTER_SELECTOR,
    CelEvaluationError,
    CelExpression,
    as_bool,
    as_choice,
    loop_variables,
    step_input_variables,
)
from kern_tasks.workflow.step import Node, as_node, refuse_human_review
from kern_tasks.workflow.types import RunContext, StepInput, StepOutput, StepType

log = logging.getLogger(__name__)


def prepare(items: list[Any] | None) -> list[Node]:
    """A container's step list as Nodes (see step.as_node)."""
    return [as_node(item) for item in items or []]


def inner_failed(name: str | None, error: BaseException) -> StepOutput:
    """The output recorded for an inner step that raised (Parallel, Condition, Router)."""
    return StepOutput(step_name=name, content=f"Step {name} failed: {error}", success=False, error=str(error))


def _all_success(results: list[StepOutput]) -> bool:
    return all(r.success for r in results) if results else True


def _any_stop(results: list[StepOutput]) -> bool:
    return any(r.stop for r in results) if results else False


def _takes(function: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


class Steps(Node):
    """A named sequence of steps."""

    step_type = StepType.STEPS.value

    def __init__(self, name: str | None = None, description: str | None = None, steps: list[Any] | None = None,
                 human_review: Any = None) -> None:
        refuse_human_review(f"Steps {name!r}", human_review)
        self.name = name
        self.description = description
        self.steps = prepare(steps)

    def empty(self) -> StepOutput:
        return StepOutput(step_name=self.name or "Steps", content="No steps to execute")

    def failed(self, error: BaseException) -> StepOutput:
        return StepOutput(step_name=self.name or "Steps", content=f"Steps execution failed: {error}",
                          success=False, error=str(error))

    def combine(self, results: list[StepOutput]) -> StepOutput:
        return StepOutput(
            step_name=self.name, step_id=str(uuid.uuid4()), step_type=StepType.STEPS.value,
            content=f"Steps {self.name} completed with {len(results)} results",
            success=_all_success(results), stop=_any_stop(results), steps=results,
        )


class Parallel(Node):
    """Steps run at the same time: Parallel(a, b), Parallel(a, b, name="x"), Parallel("x", a, b)."""

    step_type = StepType.PARALLEL.value

    def __init__(self, *args: Any, name: str | None = None, description: str | None = None,
                 human_review: Any = None) -> None:
        refuse_human_review(f"Parallel {name!r}", human_review)
        steps = list(args)
        if steps and isinstance(steps[0], str):
            name = name if name is not None else steps[0]
            steps = steps[1:]
        self.name = name
        self.description = description
        self.steps = prepare(steps)

    def branch_name(self, index: int) -> str | None:
        return getattr(self.steps[index], "name", f"step_{index}")

    def combine(self, outputs: list[StepOutput]) -> StepOutput:
        """The Parallel's output from its branches' outputs, in branch order."""
        name = self.name or "Parallel"
        content = _parallel_report(outputs)
        metrics = None
        if len(outputs) == 1:
            # agno builds the one-branch case apart: no executor_type, the branch's own media.
            only = outputs[0]
            return StepOutput(
                step_name=name, step_id=str(uuid.uuid4()), step_type=StepType.PARALLEL.value, content=content,
                executor_name=name, images=only.images, videos=only.videos, audio=only.audio, files=only.files,
                metrics=metrics, success=only.success, error=only.error, stop=only.stop, steps=outputs,
            )
        media = {kind: [m for o in outputs for m in (getattr(o, kind) or [])] or None
                 for kind in ("images", "videos", "audio", "files")}
        return StepOutput(
            step_name=name, step_id=str(uuid.uuid4()), step_type=StepType.PARALLEL.value, executor_type="parallel",
            executor_name=name, content=content, **media, success=not any(o.success is False for o in outputs),
            stop=any(o.stop for o in outputs), metrics=metrics, steps=outputs,
        )


def _parallel_report(outputs: list[StepOutput]) -> str:
    text = "## Parallel Execution Results\n\n"
    for i, output in enumerate(outputs):
        icon = "❌ FAILURE:" if output.success is False else "✅ SUCCESS:"
        text += f"### {icon} {output.step_name or f'Step {i + 1}'}\n"
        content = output.content
        text += f"{content}\n\n" if content is not None and str(content).strip() else "*(No content)*\n\n"
    return text.strip()


class Loop(Node):
    """Steps repeated until `end_condition` holds, at most `max_iterations` times.

    `end_condition` is a callable of the iteration's outputs (list[StepOutput]) -> bool, or a
    CEL string over current_iteration, max_iterations, all_success, last_step_content and
    step_outputs (compiled here: CelError if it cannot be used)."""

    step_type = StepType.LOOP.value

    def __init__(
        self,
        steps: list[Any],
        name: str | None = None,
        description: str | None = None,
        max_iterations: int = 3,
        end_condition: Callable[[list[StepOutput]], bool] | str | None = None,
        forward_iteration_output: bool = False,
        human_review: Any = None,
    ) -> None:
        refuse_human_review(f"Loop {name!r}", human_review)
        self.name = name
        self.description = description
        self.steps = prepare(steps)
        self.max_iterations = max_iterations
        self.end_condition = end_condition
        self.forward_iteration_output = forward_iteration_output
        self._cel = (CelExpression(end_condition, LOOP_END_CONDITION, f"Loop {name!r}.end_condition")
                     if isinstance(end_condition, str) else None)

    def should_end(self, iteration_results: list[StepOutput], iteration: int) -> bool:
        """Whether the loop ends after iteration number `iteration` (1-based) gave `iteration_results`.
        An end condition that fails counts as false, as in agno."""
        if self._cel is not None:
            try:
                return as_bool(self._cel.evaluate(loop_variables(iteration_results, iteration, self.max_iterations)))
            except CelEvaluationError as exc:
                log.warning("Loop %r: %s; treated as false", self.name, exc)
                return False
        if callable(self.end_condition):
            try:
                return self.end_condition(iteration_results)
            except Exception as exc:  # noqa: BLE001 - agno: a failing end condition is false
                log.warning("Loop %r: end condition failed (%s); treated as false", self.name, exc)
                return False
        return False

    def combine(self, results: list[StepOutput], iterations: int) -> StepOutput:
        return StepOutput(
            step_name=self.name, step_id=str(uuid.uuid4()), step_type=StepType.LOOP.value,
            content=f"Loop {self.name} completed {iterations} iterations with {len(results)} total steps",
            success=_all_success(results), stop=_any_stop(results), steps=results,
        )


class Condition(Node):
    """`steps` when `evaluator` holds, else `else_steps` (if any).

    `evaluator` is a bool, a callable of the StepInput (optionally `run_context`) -> bool, or
    a CEL string over input, previous_step_content, previous_step_outputs, additional_data
    and session_state (compiled here: CelError if it cannot be used)."""

    step_type = StepType.CONDITION.value

    def __init__(
        self,
        steps: list[Any],
        evaluator: Callable[..., bool] | bool | str = True,
        else_steps: list[Any] | None = None,
        name: str | None = None,
        description: str | None = None,
        human_review: Any = None,
    ) -> None:
        refuse_human_review(f"Condition {name!r}", human_review)
        self.steps = prepare(steps)
        self.evaluator = evaluator
        self.else_steps = prepare(else_steps) if else_steps else else_steps
        self.name = name
        self.description = description
        self._cel = (CelExpression(evaluator, CONDITION_EVALUATOR, f"Condition {name!r}.evaluator")
                     if isinstance(evaluator, str) else None)

    def evaluate(self, step_input: StepInput, run_context: RunContext) -> bool:
        """The evaluator's answer; a CEL expression that fails, or a callable's non-bool, is false.
        A callable that raises raises."""
        if isinstance(self.evaluator, bool):
            return self.evaluator
        if self._cel is not None:
            try:
                return as_bool(self._cel.evaluate(step_input_variables(step_input, run_context.session_state)))
            except CelEvaluationError as exc:
                log.warning("Condition %r: %s; treated as false", self.name, exc)
                return False
        kwargs = {"run_context": run_context} if _takes(self.evaluator, "run_context") else {}
        result = self.evaluator(step_input, **kwargs)
        if not isinstance(result, bool):
            log.warning("Condition %r: evaluator returned %s, not a bool; treated as false", self.name, type(result))
            return False
        return result

    def choose(self, step_input: StepInput, run_context: RunContext) -> tuple[str, list[Node]] | None:
        """("if", steps) or ("else", else_steps), or None when there is nothing to run."""
        if self.evaluate(step_input, run_context):
            return "if", self.steps
        if self.else_steps:
            return "else", self.else_steps
        return None

    def not_met(self) -> StepOutput:
        return StepOutput(step_name=self.name, step_id=str(uuid.uuid4()), step_type=StepType.CONDITION.value,
                          content=f"Condition {self.name} not met - skipped {len(self.steps)} steps")

    def combine(self, results: list[StepOutput], branch: str) -> StepOutput:
        return StepOutput(
            step_name=self.name, step_id=str(uuid.uuid4()), step_type=StepType.CONDITION.value,
            content=f"Condition {self.name} completed with {len(results)} results ({branch} branch)",
            success=_all_success(results), stop=_any_stop(results), steps=results,
        )


class Router(Node):
    """Runs the choices its `selector` names.

    `selector` is a callable of the StepInput (optionally `run_context`, `step_choices`: the
    prepared choices) returning a name, a step, or a list of them; or a CEL string over the
    Condition's variables plus step_choices (the choices' names), returning a name. A list
    among `choices` becomes a Steps named "steps_group_<i>"."""

    step_type = StepType.ROUTER.value

    def __init__(
        self,
        choices: list[Any],
        selector: Callable[..., Any] | str | None = None,
        name: str | None = None,
        description: str | None = None,
        human_review: Any = None,
    ) -> None:
        refuse_human_review(f"Router {name!r}", human_review)
        self.choices = choices
        self.selector = selector
        self.name = name
        self.description = description
        self.steps: list[Node] = [
            Steps(name=f"steps_group_{i}", steps=choice) if isinstance(choice, list) else as_node(choice)
            for i, choice in enumerate(choices)
        ]
        self._by_name = {step.name: step for step in self.steps if getattr(step, "name", None)}
        self._cel = (CelExpression(selector, ROUTER_SELECTOR, f"Router {name!r}.selector")
                     if isinstance(selector, str) else None)

    def select(self, step_input: StepInput, run_context: RunContext) -> list[Node]:
        """The choices to run, in the selector's order. A callable that raises raises."""
        if self._cel is not None:
            variables = step_input_variables(step_input, run_context.session_state)
            variables["step_choices"] = list(self._by_name)
            try:
                return self._resolve(as_choice(self._cel.evaluate(variables)))
            except CelEvaluationError as exc:
                log.warning("Router %r: %s; no step selected", self.name, exc)
                return []
        if callable(self.selector):
            kwargs: dict[str, Any] = {}
            if _takes(self.selector, "run_context"):
                kwargs["run_context"] = run_context
            if _takes(self.selector, "step_choices"):
                kwargs["step_choices"] = self.steps
            return self._resolve(self.selector(step_input, **kwargs))
        return []

    def _resolve(self, result: Any) -> list[Node]:
        if result is None:
            return []
        if isinstance(result, str):
            if result in self._by_name:
                return [self._by_name[result]]
            log.warning("Router %r: selector returned unknown step name %r; available: %s",
                        self.name, result, list(self._by_name))
            return []
        if isinstance(result, Node):
            return [result]
        if isinstance(result, list):
            return [node for item in result for node in self._resolve(item)]
        log.warning("Router %r: selector returned %s, not a step name", self.name, type(result))
        return []

    def none_selected(self) -> StepOutput:
        return StepOutput(step_name=self.name, step_id=str(uuid.uuid4()), step_type=StepType.ROUTER.value,
                          content=f"Router {self.name} completed with 0 results (no steps selected)")

    def combine(self, results: list[StepOutput]) -> StepOutput:
        return StepOutput(
            step_name=self.name, step_id=str(uuid.uuid4()), step_type=StepType.ROUTER.value,
            content=f"Router {self.name} completed with {len(results)} results",
            success=_all_success(results), stop=_any_stop(results), steps=results,
        )
