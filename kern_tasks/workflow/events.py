"""agno's workflow event stream (WorkflowStarted, StepStarted, StepCompleted, ...,
WorkflowCompleted) of a run executing on workers, derived from its recorded progress.

    async for event in run_events(db, workflow, run_id):   # dicts, as agno's to_dict()
        ...                                                  # e.g. sse.response(...)

Nothing here runs a step: each read of the run's row and progress (progress.py) is walked
as replay.py walks it, with no decision taken (a node not reached yet ends the walk there),
and every node the walk passes yields agno's events for what is recorded about it, in the
order agno streams them for the same definition (`agno/workflow/*.py` execute_stream):

- a Step: StepStarted once an attempt of it was taken by a worker (once, however many
  retries), StepCompleted with its content once it has an outcome; a top-level Step also
  gives StepOutput before it. As agno: a step that raised gives no completion (the
  container's rule records it), a skipped one (skip_on_failure) only StepOutput, and a
  top-level output with stop=True no StepCompleted;
- a container's Started comes from where its first inner step started or from its
  decision (Condition: condition_result; Router: selected_steps), its Completed from where
  its last inner step ended (Loop: LoopIterationStarted/Completed around each iteration,
  from the recorded `?end<i>` decisions; should_continue as agno computes it);
- a top-level container that raised ends the run in ERROR: StepError, then WorkflowError;
- the run's end (its row): WorkflowCompleted (content, step_results), WorkflowError, or
  WorkflowCancelled (cancel.py).

Events already sent are not sent again (each has a key: its kind, its node's path, the
iteration), so every read adds only what happened since. A Parallel's branches give their
events in branch order within one read, so across reads they interleave as the branches
ran, as agno's threads do. Reads are off the event loop and never busy: a cheap mark of the
progress (`progress_mark`) first, the whole walk only when it moved; the wait between reads
doubles from `min_wait_s` to `max_wait_s` and starts again from the minimum after a change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from kern_tasks.db import Database
from kern_tasks.errors import NotFound
from kern_tasks.workflow import media, progress
from kern_tasks.workflow.containers import Condition, Loop, Parallel, Router, Steps
from kern_tasks.workflow.progress import Progress
from kern_tasks.workflow.replay import Pending, Replay
from kern_tasks.workflow.runner import execute_workflow
from kern_tasks.workflow.step import Node, Step
from kern_tasks.workflow.tasks import _input, run_context
from kern_tasks.workflow.types import MEDIA_FIELDS, StepInput, StepOutput, WorkflowRunOutput
from kern_tasks.workflow.workflow import Workflow

MIN_WAIT_S = 0.05
MAX_WAIT_S = 1.0
FAILED_PREFIX = "Workflow execution failed: "

Event = dict[str, Any]


def _touched(found: Progress) -> set[str]:
    """Every path at or around a step that started or a decision taken: where a container
    has begun."""
    paths: set[str] = set()
    for path in [*found.started, *(key.split("?", 1)[0] for key in found.decisions)]:
        parts = path.split("/")
        paths.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return paths


def _outputs(outputs: list[StepOutput] | None) -> list[dict[str, Any]]:
    return [output.to_dict() for output in outputs or []]


class EventWalk(Replay):
    """One walk of a run's recorded progress, collecting agno's events for it in order."""

    def __init__(self, workflow: Workflow, row: Any, found: Progress) -> None:
        super().__init__(run_context(workflow, row), found.outcomes, found.decisions, record=False)
        self.found = found
        self.touched = _touched(found)
        self.base = {"run_id": row["run_id"], "session_id": row["session_id"], "workflow_id": workflow.id,
                     "workflow_name": workflow.name}
        self.events: list[tuple[tuple[Any, ...], Event]] = []
        self._keys: set[tuple[Any, ...]] = set()
        self._frames: list[tuple[Node, Any]] = []  # the containers around the node walked, with their index
        self._iterations: dict[str, list[list[StepOutput]]] = {}

    # --- events --------------------------------------------------------------------------

    def emit(self, key: tuple[Any, ...], event: str, node: Node | None, index: Any, **fields: Any) -> None:
        if key in self._keys:
            return
        self._keys.add(key)
        body: Event = {"event": event, **self.base}
        if node is not None:
            body["step_name"] = node.name
            body["step_index"] = index
            step_id = getattr(node, "step_id", None)
            if step_id:
                body["step_id"] = step_id
            if self._frames and getattr(self._frames[-1][0], "step_id", None):
                body["parent_step_id"] = self._frames[-1][0].step_id
        body.update({k: v for k, v in fields.items() if v is not None})
        self.events.append((key, body))

    def index(self, path: str) -> Any:
        """agno's step_index: a top-level node's position; inside a container, (the
        top-level position, the position in the container); a Router's choices, the Router's."""
        parts = path.split("/")
        if not self._frames:
            return int(parts[0])
        parent, parent_index = self._frames[-1]
        if isinstance(parent, Router):
            return parent_index
        if len(self._frames) > 1:
            return self._frames[1][1]
        if isinstance(parent, Parallel):
            return (parent_index, int(parts[-2][1:]))
        position = int(parts[-1])
        return (parent_index, position % len(parent.steps) if isinstance(parent, Loop) and parent.steps else position)

    # --- the walk ------------------------------------------------------------------------

    def execute(self, node: Node, step_input: StepInput) -> StepOutput:
        if self._parent:
            return super().execute(node, step_input)
        path = str(self._count.get((), 0))
        try:
            return super().execute(node, step_input)
        except Exception as exc:
            # agno: a top-level container that raised ends the run (a Step or Condition is skipped).
            if not isinstance(node, (Step, Condition)):
                self.emit(("StepError", path), "StepError", None, None, step_name=node.name, step_index=int(path),
                          error=str(exc))
            raise

    def step(self, step: Step, step_input: StepInput) -> StepOutput:
        path = self.here
        index = self.index(path)
        top = not self._frames
        if path in self.found.started or path in self.outcomes:
            self.emit(("StepStarted", path), "StepStarted", step, index)
        output = super().step(step, step_input)
        skipped = output.step_name is None and step.skip_on_failure and not output.success
        if top:
            self.emit(("StepOutput", path), "StepOutput", step, index, step_output=output.to_dict())
            if skipped:
                self.events[-1][1].pop("step_name")  # agno names a skipped step's output after nothing
        if not skipped and not (top and output.stop):
            self.emit(("StepCompleted", path), "StepCompleted", step, index, content=output.content,
                      content_type="str" if isinstance(output.content, str) or output.content is None else "json",
                      step_response=output.to_dict(),
                      **{name: getattr(output, name, None) for name in ("images", "videos", "audio")})
        return output

    def _inside(self, node: Node, run: Any, *args: Any) -> StepOutput:
        path = self.here
        self._frames.append((node, self.index(path)))
        try:
            return run(*args)
        finally:
            self._frames.pop()

    def _container_index(self) -> Any:
        return self.index(self.here)

    def steps(self, steps: Steps, step_input: StepInput) -> StepOutput:
        path, index = self.here, self._container_index()
        fields = {"steps_count": len(steps.steps)}
        if path in self.touched:
            self.emit(("StepsExecutionStarted", path), "StepsExecutionStarted", steps, index, **fields)
        output = self._inside(steps, super().steps, steps, step_input)
        self.emit(("StepsExecutionStarted", path), "StepsExecutionStarted", steps, index, **fields)
        self.emit(("StepsExecutionCompleted", path), "StepsExecutionCompleted", steps, index, **fields,
                  executed_steps=len(output.steps or []), step_results=_outputs(output.steps))
        return output

    def parallel(self, parallel: Parallel, step_input: StepInput) -> StepOutput:
        path, index = self.here, self._container_index()
        fields = {"parallel_step_count": len(parallel.steps)}
        if path in self.touched:
            self.emit(("ParallelExecutionStarted", path), "ParallelExecutionStarted", parallel, index, **fields)
        output = self._inside(parallel, super().parallel, parallel, step_input)
        self.emit(("ParallelExecutionStarted", path), "ParallelExecutionStarted", parallel, index, **fields)
        self.emit(("ParallelExecutionCompleted", path), "ParallelExecutionCompleted", parallel, index, **fields,
                  step_results=_outputs(output.steps))
        return output

    def loop(self, loop: Loop, step_input: StepInput) -> StepOutput:
        path, index = self.here, self._container_index()
        self._iterations[path] = []
        if path in self.touched:
            self._loop_started(loop, path, index)
        output = self._inside(loop, super().loop, loop, step_input)
        self._loop_started(loop, path, index)
        iterations = self._iterations[path]
        self.emit(("LoopExecutionCompleted", path), "LoopExecutionCompleted", loop, index,
                  total_iterations=len(iterations), max_iterations=loop.max_iterations,
                  all_results=[_outputs(results) for results in iterations])
        return output

    def _loop_started(self, loop: Loop, path: str, index: Any) -> None:
        self.emit(("LoopExecutionStarted", path), "LoopExecutionStarted", loop, index,
                  max_iterations=loop.max_iterations)
        self.emit(("LoopIterationStarted", path, 1), "LoopIterationStarted", loop, index, iteration=1,
                  max_iterations=loop.max_iterations)

    def ends(self, loop: Loop, results: list[StepOutput], iteration: int) -> bool:
        ended = super().ends(loop, results, iteration)  # Pending until the advance decided it
        frame = self._frames.pop()  # the Loop's own events: emitted as from around it
        try:
            self._iteration_ended(loop, frame[1], results, iteration, ended)
        finally:
            self._frames.append(frame)
        return ended

    def _iteration_ended(self, loop: Loop, index: Any, results: list[StepOutput], iteration: int,
                         ended: bool) -> None:
        loop_node, path = loop, self.here
        stopped = bool(results) and bool(results[-1].stop)
        self._iterations[path].append(list(results))
        self.emit(("LoopIterationCompleted", path, iteration), "LoopIterationCompleted", loop_node, index,
                  iteration=iteration, max_iterations=loop.max_iterations, iteration_results=_outputs(results),
                  should_continue=not (ended or stopped))
        if not (ended or stopped) and iteration < loop.max_iterations:
            self.emit(("LoopIterationStarted", path, iteration + 1), "LoopIterationStarted", loop_node, index,
                      iteration=iteration + 1, max_iterations=loop.max_iterations)

    def condition(self, condition: Condition, step_input: StepInput) -> StepOutput:
        path, index = self.here, self._container_index()
        decided = path + "?choose"
        branch = self.decisions.get(decided)
        if decided in self.decisions:
            self.emit(("ConditionExecutionStarted", path), "ConditionExecutionStarted", condition, index,
                          condition_result=branch == "if")
        output = self._inside(condition, super().condition, condition, step_input)
        branch = self.decisions.get(decided)
        self.emit(("ConditionExecutionStarted", path), "ConditionExecutionStarted", condition, index,
                      condition_result=branch == "if")
        chosen = condition.steps if branch == "if" else (condition.else_steps or []) if branch == "else" else []
        self.emit(("ConditionExecutionCompleted", path), "ConditionExecutionCompleted", condition, index,
                      condition_result=branch == "if", executed_steps=len(chosen), branch=branch,
                      step_results=_outputs(output.steps))
        return output

    def router(self, router: Router, step_input: StepInput) -> StepOutput:
        path, index = self.here, self._container_index()
        decided = path + "?select"

        def selected() -> list[str]:
            return [str(router.steps[i].name) for i in self.decisions.get(decided) or []]

        if decided in self.decisions:
            self.emit(("RouterExecutionStarted", path), "RouterExecutionStarted", router, index,
                          selected_steps=selected())
        output = self._inside(router, super().router, router, step_input)
        self.emit(("RouterExecutionStarted", path), "RouterExecutionStarted", router, index,
                      selected_steps=selected())
        self.emit(("RouterExecutionCompleted", path), "RouterExecutionCompleted", router, index,
                      selected_steps=selected(), executed_steps=len(output.steps or []),
                      step_results=_outputs(output.steps))
        return output


def _ended(base: Event, row: Any) -> Event | None:
    """The run's last event, from its row: None while it runs."""
    status = row["status"]
    result = dict(row["result"] or {})
    content = result.get("content")
    if status == progress.COMPLETED:
        return {"event": "WorkflowCompleted", **base, "content": content,
                "content_type": "str" if content is None or isinstance(content, str) else "json",
                "step_results": result.get("step_results") or [], "metadata": result.get("metadata"),
                "metrics": result.get("metrics")}
    if status == progress.ERROR:
        error = str(content or "")
        return {"event": "WorkflowError", **base,
                "error": error[len(FAILED_PREFIX):] if error.startswith(FAILED_PREFIX) else error}
    if status == progress.CANCELLED:
        return {"event": "WorkflowCancelled", **base, "reason": content, "content": content}
    return None


def events_of(workflow: Workflow, row: Any, found: Progress) -> list[tuple[tuple[Any, ...], Event]]:
    """The events (with their keys) of what `row` and `found` record, in agno's order; the
    last one is the run's end once it ended."""
    walk = EventWalk(workflow, row, found)
    events: list[tuple[tuple[Any, ...], Event]] = [(("WorkflowStarted",), {"event": "WorkflowStarted", **walk.base})]
    request = row["request"]
    run = WorkflowRunOutput(run_id=row["run_id"], input=_input(workflow, request), session_id=row["session_id"],
                            user_id=row["user_id"], workflow_id=workflow.id, workflow_name=workflow.name,
                            **{name: list(request[name]) for name in MEDIA_FIELDS if request.get(name)})
    try:
        execute_workflow(workflow.steps, run, walk, request.get("additional_data"))
    except Pending:
        pass  # the walk reached what has not happened yet
    events.extend(walk.events)
    last = _ended(walk.base, row)
    if last is not None:
        events.append(((last["event"],), last))
    stamp = int(time.time())
    for _, event in events:
        event.setdefault("created_at", stamp)
    return events


def _read(db: Database, run_id: str, seen_mark: tuple[Any, ...] | None) -> tuple[tuple[Any, ...], Any, Progress | None]:
    """The run's progress mark, and its row and progress when the mark moved (read in that
    order, so a row that ended comes with all its progress)."""
    with db.connect() as conn:
        mark = progress.progress_mark(conn, run_id)
        if not mark:
            raise NotFound(f"no workflow run {run_id!r}")
        if mark == seen_mark:
            return mark, None, None
        row = progress.get_run(conn, run_id)
        return mark, row, progress.load_progress(conn, run_id)


async def run_events(db: Database, workflow: Workflow, run_id: str, *, min_wait_s: float = MIN_WAIT_S,
                     max_wait_s: float = MAX_WAIT_S) -> AsyncIterator[Event]:
    """agno's events of run `run_id` of `workflow` as it runs on the workers (see the module
    docstring), ending with WorkflowCompleted, WorkflowError or WorkflowCancelled. NotFound
    when there is no such run."""
    sent: set[tuple[Any, ...]] = set()
    mark: tuple[Any, ...] | None = None
    wait = min_wait_s
    while True:
        mark_now, row, found = await asyncio.to_thread(_read, db, run_id, mark)
        changed = mark_now != mark
        mark = mark_now
        if row is not None and found is not None:
            for key, event in events_of(workflow, row, found):
                if key in sent:
                    continue
                sent.add(key)
                # Media above the inline bound are stored by reference: the client gets the content.
                yield await asyncio.to_thread(media.inlined, db, run_id, event)
            if row["status"] != progress.RUNNING:
                return
        wait = min_wait_s if changed else min(wait * 2, max_wait_s)
        await asyncio.sleep(wait)
