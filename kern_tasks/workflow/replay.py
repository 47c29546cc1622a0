"""Replay: the in-process runner's own rules (runner.Drive), driven from a run's recorded
progress instead of by calling executors, so a run on Celery workers gives exactly the
results of the same run in one process.

A replay walks the workflow from its first step, as `execute_workflow` does:

- a Step with an outcome in the progress gives that outcome (its output, or it raises its
  recorded error, so every container applies its rule to it as in-process);
- a Step without one is pending: its path is noted and the replay of that branch stops
  (`Pending`, a BaseException, so no container's `except Exception` takes it for a failure);
  a Parallel replays every branch before it stops, so all its branches are found at once
  and run side by side on the workers;
- a Loop's end, a Condition's branch and a Router's route are decided once, the first time
  a replay reaches them, and recorded (`new_decisions`); later replays read them back, so a
  decision never changes under a run (a callable selector need not be deterministic).

Two uses (tasks.py): `advance` replays with `record=True` to find what runs next (or the
finished run); a step task replays with `target=path` to rebuild that step's exact input,
`Reached` being raised there (with `record=False`, a sibling branch's undecided container is
just pending).

A node's path is its position under the node around it ("2/b1/0"): see progress.py.
"""

from __future__ import annotations

from typing import Any, Callable

from kern_tasks.workflow.containers import Condition, Loop, Parallel, Router
from kern_tasks.workflow.progress import Outcome
from kern_tasks.workflow.runner import Drive
from kern_tasks.workflow.step import Node, Step
from kern_tasks.workflow.types import RunContext, StepInput, StepOutput


class Pending(BaseException):
    """The replay reached a step (or decision) that has not happened yet."""


class Reached(BaseException):
    """A targeted replay reached its step: the step and the exact input it is given."""

    def __init__(self, step: Step, step_input: StepInput) -> None:
        super().__init__(step.name)
        self.step = step
        self.step_input = step_input


class StepFailed(Exception):
    """A step whose recorded outcome is that it raised; str() is the recorded error."""


class Replay(Drive):
    """A Drive over recorded outcomes and decisions (see the module docstring)."""

    def __init__(self, run_context: RunContext, outcomes: dict[str, Outcome], decisions: dict[str, Any], *,
                 record: bool, target: str | None = None) -> None:
        super().__init__(run_context, allow_async=True)
        self.outcomes = outcomes
        self.decisions = dict(decisions)
        self.record = record
        self.target = target
        self.new_decisions: dict[str, Any] = {}
        self.pending: set[str] = set()
        self.step_names: dict[str, str] = {}  # pending path -> its step's name (the message's label)
        self._parent: tuple[str, ...] = ()
        self._count: dict[tuple[str, ...], int] = {}

    @property
    def here(self) -> str:
        return "/".join(self._parent)

    def execute(self, node: Node, step_input: StepInput) -> StepOutput:
        index = self._count.get(self._parent, 0)
        self._count[self._parent] = index + 1
        saved = self._parent
        self._parent = (*saved, str(index))
        try:
            return super().execute(node, step_input)
        finally:
            self._parent = saved

    def tries(self, step: Step, step_input: StepInput) -> StepOutput:
        path = self.here
        outcome = self.outcomes.get(path)
        if outcome is None:
            if path == self.target:
                raise Reached(step, step_input)
            self.pending.add(path)
            if step.name:
                self.step_names[path] = step.name
            raise Pending(path)
        if outcome.executor_runs:
            self.executor_runs.extend(outcome.executor_runs)
        if outcome.output is None:
            raise StepFailed(outcome.error or "")
        return StepOutput.from_dict(outcome.output)

    def branches(self, parallel: Parallel, step_input: StepInput) -> list[StepOutput]:
        outputs: list[StepOutput] = []
        waiting = False
        saved = self._parent
        for index in range(len(parallel.steps)):
            self._parent = (*saved, f"b{index}")
            try:
                outputs.append(self.branch(parallel, index, step_input))
            except Pending:
                waiting = True
            finally:
                self._parent = saved
        if waiting:
            raise Pending(self.here)
        return outputs

    def ends(self, loop: Loop, results: list[StepOutput], iteration: int) -> bool:
        return bool(self._decide(f"?end{iteration}", lambda: Drive.ends(self, loop, results, iteration)))

    def choose(self, condition: Condition, step_input: StepInput) -> tuple[str, list[Node]] | None:
        def branch() -> str | None:
            chosen = Drive.choose(self, condition, step_input)
            return None if chosen is None else chosen[0]

        name = self._decide("?choose", branch)
        if name is None:
            return None
        return (name, condition.steps if name == "if" else list(condition.else_steps or []))

    def select(self, router: Router, step_input: StepInput) -> list[Node]:
        def route() -> list[int]:
            chosen = Drive.select(self, router, step_input)
            missing = [node.name for node in chosen if not any(node is choice for choice in router.steps)]
            if missing:
                raise ValueError(f"Router {router.name!r}: the selector returned steps that are not among its "
                                 f"choices ({missing}); on workers a route must be one of the choices")
            return [next(i for i, choice in enumerate(router.steps) if choice is node) for node in chosen]

        return [router.steps[i] for i in self._decide("?select", route)]

    def _decide(self, suffix: str, decide: Callable[[], Any]) -> Any:
        key = self.here + suffix
        if key in self.decisions:
            return self.decisions[key]
        if not self.record:
            self.pending.add(key)
            raise Pending(key)
        value = decide()
        self.decisions[key] = self.new_decisions[key] = value
        return value
