"""Cancelling a workflow run on the workers: cooperative, between steps, as agno's cancel
(`Workflow.cancel_run`, `POST /workflows/{id}/runs/{run_id}/cancel`) ends a run.

    cancel(db, workflow, run_id)        # the run's dict, status CANCELLED

Under the run's lock (progress.py), in one transaction: every open attempt of the run
(queued, or running on a worker) becomes "cancelled", and the run's dict is recorded with
agno's status CANCELLED and content "Run <run_id> was cancelled" (RunCancelledException's
message), its step_results those of the steps that had finished. A step already running is
not interrupted: its worker finishes it, and its end changes nothing (its attempt is no
longer running), so nothing after it is queued. Then agno's record of the end (agno_runs,
the session's state, the trace, the interrupted attempts' spans) and our row's status, as a
run's end is recorded (tasks.record_end); if agno's record fails meanwhile, the sweep's
advance ends the run as cancelled (progress.is_cancelling), never runs it on.

A run that has ended (or is ending) is not cancelled: `Conflict` with agno's wording for
a run in that state; a run nobody submitted, or another workflow's: `NotFound`.
"""

from __future__ import annotations

import time
from typing import Any

from kern_tasks.db import Database, db_time
from kern_tasks.errors import Conflict, NotFound
from kern_tasks.runs.store import RunStore
from kern_tasks.runs.traces import span_id_for
from kern_tasks.workflow import progress
from kern_tasks.workflow.progress import Progress
from kern_tasks.workflow.record import attempt_finished
from kern_tasks.workflow.replay import Pending, Replay
from kern_tasks.workflow.runner import execute_workflow, top_level_failure
from kern_tasks.workflow.step import Node
from kern_tasks.workflow.tasks import _input, _traced, record_end, run_context
from kern_tasks.workflow.types import RunStatus, StepInput, StepOutput, WorkflowRunOutput
from kern_tasks.workflow.workflow import Workflow

# agno's words for a run that cannot be acted on (its continue route's 409s).
ALREADY = {
    progress.COMPLETED: "run is already completed",
    progress.ERROR: "run has errored",
    progress.CANCELLED: "run is already cancelled",
}


class _Finished(Replay):
    """A walk of the recorded progress that keeps the outputs of the top-level nodes that
    had finished (a skipped Step as agno records it), up to the first that had not."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outputs: list[StepOutput] = []

    def execute(self, node: Node, step_input: StepInput) -> StepOutput:
        if self._parent:
            return super().execute(node, step_input)
        try:
            output = super().execute(node, step_input)
        except Exception as exc:  # noqa: BLE001 - the workflow's rule for a failed top-level node
            recorded = top_level_failure(node, exc)
            if recorded is not None:
                self.outputs.append(recorded)
            raise
        self.outputs.append(output)
        return output


def finished_outputs(workflow: Workflow, row: Any, found: Progress) -> list[StepOutput]:
    """The top-level outputs the run had when it was cancelled."""
    walk = _Finished(run_context(workflow, row), found.outcomes, found.decisions, record=False)
    request = row["request"]
    run = WorkflowRunOutput(run_id=row["run_id"], input=_input(workflow, request), session_id=row["session_id"])
    try:
        execute_workflow(workflow.steps, run, walk, request.get("additional_data"))
    except Pending:
        pass
    return walk.outputs


def _cancelled_dict(workflow: Workflow, row: Any, found: Progress, reason: str, now: float) -> dict[str, Any]:
    request = row["request"]
    run = WorkflowRunOutput(
        run_id=row["run_id"], input=_input(workflow, request), session_id=row["session_id"], user_id=row["user_id"],
        workflow_id=workflow.id, workflow_name=workflow.name, metadata=request.get("metadata"),
        created_at=int(row["created_at"]), content=reason, status=RunStatus.cancelled,
        step_results=finished_outputs(workflow, row, found),
    )
    run.metrics = {"steps": {}, "duration": max(0.0, now - float(row["created_at"]))}
    return run.to_dict()


def cancel(db: Database, workflow: Workflow, run_id: str, *, session_id: str | None = None,
           user_id: str | None = None) -> dict[str, Any]:
    """Cancel run `run_id` of `workflow` (see the module docstring); returns its dict.
    `session_id` and `user_id`, when given, must be the run's (another user's run is as
    missing as one nobody submitted)."""
    missing = NotFound(f"workflow {workflow.id!r} has no run {run_id[:80]!r}")
    reason = f"Run {run_id} was cancelled"
    with db.begin() as conn:
        now = db_time(conn)
        row = progress.lock_run(conn, run_id)
        if (
            row is None
            or row["workflow_id"] != workflow.id
            or (session_id and row["session_id"] != session_id)
            or (user_id is not None and row["user_id"] != user_id)
        ):
            raise missing
        if row["status"] != progress.RUNNING or row["result"] is not None:
            status = row["status"] if row["status"] != progress.RUNNING else row["result"].get("status")
            raise Conflict(ALREADY.get(status, f"run is {str(status).lower()}"))
        found = progress.load_progress(conn, run_id)
        interrupted = progress.cancel_open_steps(conn, run_id, now=now, reason=reason)
        result = _cancelled_dict(workflow, row, found, reason, now)
        progress.record_result(conn, run_id, result, now=now)
    store = RunStore(db)
    for attempt in interrupted:
        if attempt.was_running:  # a queued attempt has no span yet
            span = span_id_for(run_id, attempt.path, attempt.attempt)
            _traced("a span's end", lambda: attempt_finished(store, span, error=reason, ended_at=time.time()))
    record_end(db, row, result, now=now)
    return result
