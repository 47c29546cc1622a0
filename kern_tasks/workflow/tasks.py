"""Workflow runs on Celery workers: `kern.workflow.advance(run_id)` and `kern.workflow.step(run_id, path)`.

The database holds a run's progress (progress.py); a message carries ids only, and every
message is published after the commit of the progress it follows from:

- advance: under the run's lock, replay the run (replay.py) from its recorded outcomes;
  record the decisions taken on the way (a Loop's end, a Condition's branch, a Router's
  route), queue the steps that run next and publish one step message each (a sequence's
  next step: a chain; every branch of a Parallel at once: a chord's header), or, when
  nothing is left, end the run with its agno-shaped dict;
- step: in one transaction, read the run and its progress, rebuild the step's exact input
  by a replay targeted at it, take the queued attempt (queued -> running, on this worker,
  whose heartbeat row is registered there: firing.liveness) and open the attempt's span;
  run the executor (each retry a row of its own, in a transaction that also ends the failed
  attempt's span and opens the next one's), then in one transaction record the outcome, end
  its span, merge the step's session_state changes and advance, so
  the step that completes a Parallel's branches is the one that runs its body: no task
  ever waits for another, so nothing waits forever on a lost branch, an empty Parallel
  (agno's error, the run ends in ERROR) or a failed one (agno's failed branch output).

Beat's sweep (`sweep`, in sweep.py so beat imports no workflow definition) finds attempts whose worker died (no heartbeat for LOST_AFTER_S)
and queues them again, re-sends queued steps whose message may be lost, and re-advances
running runs with nothing open. A finished step has a final row and is never queued again.

Cost (bench/workflow_statements.py): a step of a sequence is two transactions and eight
statements on Postgres; the take's commit does not wait for its WAL flush (see
progress.read_run_and_progress), the outcome's does. A span's failure never fails a step:
its transaction is run again without the span (`_traced_transaction`).

Workers run the workflows registered to their runtime (kern_tasks.runtime: an AgentOS's
embedded worker, its own); else those KERN_APP names ("module:attribute" of an AgentOS,
whose `workflows` they serve, or of a Workflow).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, StatementError

from kern_tasks import metrics
from kern_tasks.app_ref import load_ref
from kern_tasks.db import db_time
from kern_tasks.dispatch import (
    Message, StepLabel, publish_messages,
)
from kern_tasks.firing import liveness
from kern_tasks.runs.store import RunStore
from kern_tasks.runs.traces import RunContext as TraceContext
from kern_tasks.runs.traces import span_id_for
from kern_tasks.runtime import runtime_for
from kern_tasks.workflow import media, progress
from kern_tasks.workflow.record import attempt_closed, attempt_opened, root_span_id, run_finished
from kern_tasks.workflow.progress import Outcome, Progress, Taken
from kern_tasks.workflow.replay import Pending, Reached, Replay
from kern_tasks.workflow.runner import execute_workflow
from kern_tasks.workflow.sweep import route_of, step_message
from kern_tasks.workflow.types import MEDIA_FIELDS, RunContext, WorkflowRunOutput
from kern_tasks.workflow.workflow import Workflow, validate_input

log = logging.getLogger("kern_tasks.workflow")

_cache_lock = threading.Lock()
_workflows: dict[str, dict[str, Workflow]] = {}


def workflows_from(ref: str | None) -> dict[str, Workflow]:
    """The workflows named by KERN_APP (`ref`), by id; imported once per process.
    LookupError when `ref` is unset or names neither an AgentOS nor a Workflow."""
    with _cache_lock:
        if ref not in _workflows:
            target = load_ref(ref)
            items = [target] if isinstance(target, Workflow) else list(getattr(target, "workflows", None) or [])
            if not items:
                raise LookupError(f"KERN_APP={ref!r} is neither a Workflow nor holds `workflows`")
            _workflows[ref] = {w.id: w for w in items if isinstance(w, Workflow)}
        return _workflows[ref]


def workflow_label(workflow: Workflow, step: str | None = None, path: str | None = None) -> StepLabel:
    """How a run's messages are shown (Flower): the workflow's name (else its id), the step's."""
    return StepLabel(workflow=workflow.name or workflow.id, step=step, path=path)


def run_context(workflow: Workflow, row: Any) -> RunContext:
    """The run's RunContext, its session_state a fresh copy of the stored one."""
    request = row["request"]
    return RunContext(
        run_id=row["run_id"], session_id=row["session_id"], user_id=row["user_id"], workflow_id=workflow.id,
        workflow_name=workflow.name, session_state=copy.deepcopy(row["session_state"] or {}),
        dependencies={**(workflow.dependencies or {}), **(request.get("dependencies") or {})} or None,
        metadata=request.get("metadata"),
    )


def _input(workflow: Workflow, request: dict[str, Any]) -> Any:
    value = request.get("input")
    return validate_input(value, workflow.input_schema) if workflow.input_schema is not None else value


@dataclass
class Advanced:
    """What an advance found: the step messages to publish, or (`result`) the run's dict,
    recorded and waiting for `end` after the commit."""

    messages: list[Message] = field(default_factory=list)
    result: dict[str, Any] | None = None
    row: Any = None
    now: float = 0.0


def advance_in(conn: Connection, workflow: Workflow, row: Any, *, now: float, touched: bool = False) -> Advanced:
    """Under the run's lock: replay, record decisions, then queue what runs next, or record
    the run's dict when nothing is left (`end` ends the run after the commit). `touched`:
    the lock touched the run already (lock_and_touch_run)."""
    run_id = row["run_id"]
    if progress.is_cancelling(row):
        # Cancelled (cancel.py) and its end not recorded yet: end it so, never run on.
        return Advanced(result=row["result"], row=row, now=now)
    found = progress.load_progress(conn, run_id)
    replay = Replay(run_context(workflow, row), found.outcomes, found.decisions, record=True)
    request = row["request"]
    run = WorkflowRunOutput(
        run_id=run_id, input=_input(workflow, request), session_id=row["session_id"], user_id=row["user_id"],
        workflow_id=workflow.id, workflow_name=workflow.name, metadata=request.get("metadata"),
        created_at=int(row["created_at"]), **{name: list(request[name]) for name in MEDIA_FIELDS if request.get(name)},
    )
    try:
        run, _ = execute_workflow(workflow.steps, run, replay, request.get("additional_data"))
    except Pending:
        progress.record_decisions(conn, run_id, replay.new_decisions, now=now)
        queued = progress.queue_steps(conn, run_id, replay.pending, found, now=now)
        if not touched:
            progress.touch_run(conn, run_id, now=now)
        route = route_of(request)
        return Advanced(messages=[
            step_message(run_id, path, route, workflow_label(workflow, replay.step_names.get(path), path))
            for path in queued
        ])
    progress.record_decisions(conn, run_id, replay.new_decisions, now=now)
    if not workflow.store_executor_outputs:
        run.step_executor_runs = None
    if run.metrics is not None:
        run.metrics["duration"] = max(0.0, now - float(row["created_at"]))
    result = run.to_dict()
    progress.record_result(conn, run_id, result, now=now)
    return Advanced(result=result, row=row, now=now)


def after_commit(app: Any, advanced: Advanced) -> None:
    """Publish what an advance queued; or end the run: agno's record of it (agno_runs,
    the session's state, the trace), then our row. If agno's record fails, the run stays
    RUNNING with nothing open and the sweep advances it again."""
    publish_messages(app, advanced.messages)
    if advanced.result is not None:
        record_end(runtime_for(app).db, advanced.row, advanced.result, now=advanced.now)


def record_end(db: Any, row: Any, result: dict[str, Any], *, now: float) -> bool:
    """End a run whose dict `result` is recorded: agno's record of it, then our row (also
    cancel.py's). False when agno's record failed: the run stays RUNNING with nothing
    open, and the sweep advances it again."""
    try:
        run_finished(RunStore(db), media.inlined(db, row["run_id"], result), copy.deepcopy(row["session_state"] or {}),
                     started_at=float(row["created_at"]), ended_at=now)
    except DBAPIError as exc:
        log.warning("workflow run %s: its end not recorded yet (%s); the sweep retries", row["run_id"], exc)
        return False
    with db.begin() as conn:
        progress.finish_run(conn, row["run_id"], status=result["status"], result=result, now=db_time(conn))
    log.info("workflow run %s (%s) ended %s", row["run_id"], row["workflow_id"], result["status"])
    return True


def _traced(what: str, record: Callable[[], Any]) -> None:
    """A span is a view of the run, not its progress: a failure to record one is logged only."""
    try:
        record()
    except DBAPIError as exc:
        log.warning("workflow: %s not recorded (%s)", what, exc)


def _span(run_id: str, path: str, attempt: int) -> str:
    return span_id_for(run_id, path, attempt)


def served_workflows(app: Any) -> dict[str, Workflow]:
    """The workflows the workers of `app` run: their runtime's, else KERN_APP's."""
    runtime = runtime_for(app)
    if runtime.workflows is not None:
        return runtime.workflows
    return workflows_from(runtime.settings.app)


def _workflow_of(app: Any, row: Any) -> Workflow | None:
    try:
        return served_workflows(app).get(row["workflow_id"])
    except (LookupError, ImportError, AttributeError) as exc:
        log.error("workflow run %s: cannot find workflow %s (%s)", row["run_id"], row["workflow_id"], exc)
        return None


def _refuse(conn: Connection, row: Any, *, now: float) -> None:
    """A worker that does not know the run's workflow ends the run in ERROR (a deployment
    error: waiting would never end), saying why."""
    error = f"workflow {row['workflow_id']!r} is not among the workflows this worker serves (KERN_APP)"
    progress.finish_run(conn, row["run_id"], status=progress.ERROR, now=now, result={
        "run_id": row["run_id"], "session_id": row["session_id"], "workflow_id": row["workflow_id"],
        "status": progress.ERROR, "content": f"Workflow execution failed: {error}",
    })


def advance_task(self: Any, run_id: str) -> str:
    """Celery task body (kern.workflow.advance)."""
    db = runtime_for(self.app).db
    with db.begin() as conn:
        row = progress.lock_and_touch_run(conn, run_id)
        if row is None or row["status"] != progress.RUNNING:
            return "nothing to do"
        now = float(row["updated_at"])
        workflow = _workflow_of(self.app, row)
        if workflow is None:
            _refuse(conn, row, now=now)
            return "unknown workflow"
        advanced = advance_in(conn, workflow, row, now=now, touched=True)
    after_commit(self.app, advanced)
    return f"{len(advanced.messages)} step(s) published" if advanced.result is None else "ended"


class SpanNotRecorded(Exception):
    """Recording a span failed inside a transaction of the run's progress (aborting it)."""


def _span_write(write: Callable[[], Any]) -> Any:
    try:
        return write()
    except StatementError as exc:
        raise SpanNotRecorded(str(exc)) from exc


def _traced_transaction(db: Any, body: Callable[[Connection, bool], Any]) -> Any:
    """`body(conn, traced)` in one transaction, spans written in it (traced=True); when
    writing a span fails, the whole again without spans: a span is a view of the run, not
    its progress, so its failure is logged only."""
    try:
        with db.begin() as conn:
            return body(conn, True)
    except SpanNotRecorded as exc:
        log.warning("workflow: a span not recorded (%s)", exc)
    with db.begin() as conn:
        return body(conn, False)


def _trace_context(row: Any, *, now: float) -> TraceContext:
    """Whose run a span is of, from the run's progress row (the same ids as agno_runs')."""
    return TraceContext(run_id=row["run_id"], session_id=row["session_id"], user_id=row["user_id"],
                        component_type="workflow", component_id=row["workflow_id"], name=row["workflow_id"],
                        status=row["status"], started_at=now, ended_at=now)


@dataclass
class Started:
    """A step attempt this worker has taken, with what it needs to run it."""

    row: Any
    workflow: Workflow | None
    context: RunContext | None
    reached: Reached | None
    missing: str
    taken: Taken
    worker: str
    span: dict[str, Any] | None = None


def _take(app: Any, heart: Any, conn: Connection, traced: bool, run_id: str, path: str) -> Started | None:
    """One transaction: read the run and its progress (the database's clock with the run),
    rebuild the step's input by a replay targeted at it, take the attempt and open its span.
    Its commit does not wait for the WAL flush (a take, not an outcome: see
    progress.read_run_and_progress)."""
    row, now, found = progress.read_run_and_progress(conn, run_id, without_waiting=True)
    if row is None or now is None or row["status"] != progress.RUNNING or path in found.outcomes:
        return None
    workflow = _workflow_of(app, row)
    context = run_context(workflow, row) if workflow is not None else None
    reached: Reached | None = None
    missing = f"no step at {path} in workflow {row['workflow_id']!r} on this worker"
    if workflow is not None and context is not None:
        try:
            reached = _reach(workflow, row, context, found, path)
        except Exception as exc:  # noqa: BLE001 - e.g. the stored input no longer fits input_schema
            missing = f"the step's input could not be rebuilt: {type(exc).__name__}: {exc}"
    max_tries = reached.step.max_retries + 1 if reached is not None else 1
    me = liveness.register(conn, heart)
    taken = progress.take_step(conn, run_id, path, worker_id=me, max_tries=max_tries, now=now)
    if taken is None:
        return None  # a duplicate message, or another worker has it
    started = Started(row, workflow, context, reached, missing, taken, me)
    if reached is not None and traced:
        step, clock = reached.step, now
        started.span = _span_write(lambda: _open_attempt(conn, row, path, step, taken, now=clock))
    return started


def _open_attempt(conn: Connection, row: Any, path: str, step: Any, taken: Taken, *, now: float) -> dict[str, Any]:
    # Every attempt's span hangs from the run's root (containers have no span on workers).
    run_id = row["run_id"]
    return attempt_opened(conn, _trace_context(row, now=now), _span(run_id, path, taken.attempt),
                          root_span_id(run_id), step.name, step.step_type, taken.attempt, started_at=time.time(),
                          now=now)


def step_task(self: Any, run_id: str, path: str) -> str:
    """Celery task body (kern.workflow.step)."""
    db = runtime_for(self.app).db
    heart = liveness.heart_for(db)
    began = time.monotonic()
    started = _traced_transaction(db, lambda conn, traced: _take(self.app, heart, conn, traced, run_id, path))
    if started is None:
        return "nothing to do"
    workflow, context, reached, taken = started.workflow, started.context, started.reached, started.taken
    missing = started.missing
    if reached is not None:
        try:
            media.resolve_input(db, run_id, reached.step_input)  # media by reference: content again
        except Exception as exc:  # noqa: BLE001 - e.g. a media row gone
            missing, reached = f"the step's input could not be rebuilt: {type(exc).__name__}: {exc}", None
    changed: dict[str, Any] = {}
    removed: set[str] = set()
    if reached is None or context is None:
        outcome = Outcome(None, missing)  # the run goes on by agno's rule for a step that raised
    else:
        before = copy.deepcopy(context.session_state or {})
        result = _attempts(db, started, context, path)
        if result is None:
            return "taken for lost meanwhile"
        outcome, taken = result
        after = context.session_state or {}
        changed = {k: v for k, v in after.items() if k not in before or before[k] != v}
        removed = set(before) - set(after)
    try:
        advanced = _finish(db, workflow, run_id, taken, outcome, changed, removed, started.span)
    except (StatementError, TypeError, ValueError) as exc:
        if isinstance(exc, DBAPIError):
            raise
        # The output or the state changes are no JSON: the step fails, saying why, rather
        # than leave its attempt running for ever.
        log.warning("Step %s: its outcome cannot be stored (%s)", path, exc)
        outcome = Outcome(None, f"the step's output or session_state could not be stored: {exc}")
        advanced = _finish(db, workflow, run_id, taken, outcome, {}, set(), started.span)
    if advanced is None:
        return "taken for lost meanwhile"
    after_commit(self.app, advanced)
    metrics.workflow_step_finished("success" if _span_end(outcome)[0] is None else "failed", time.monotonic() - began)
    return "succeeded" if outcome.output is not None else "failed"


def _span_end(outcome: Outcome) -> tuple[str | None, Any]:
    """The error and content an attempt's span ends with."""
    if outcome.output is None:
        return outcome.error, None
    output = outcome.output
    error = None if output.get("success", True) else output.get("error") or str(output.get("content"))
    return error, output.get("content")


def _finish(db: Any, workflow: Workflow | None, run_id: str, taken: Taken, outcome: Outcome,
            changed: dict[str, Any], removed: set[str], span: dict[str, Any] | None) -> Advanced | None:
    """One transaction: the step's outcome, its span's end, its session_state changes, and
    the advance that follows. None when the attempt was no longer running (taken for lost
    meanwhile)."""
    error, content = _span_end(outcome)
    ended_at = time.time()

    def body(conn: Connection, traced: bool) -> Advanced | None:
        locked = progress.lock_and_touch_run(conn, run_id)
        if locked is None:
            return None
        now = float(locked["updated_at"])
        if not progress.finish_step(conn, taken, media.offloaded(conn, run_id, outcome, now=now), now=now):
            return None
        if span is not None and traced:
            _span_write(lambda: attempt_closed(conn, span, error=error, content=content, ended_at=ended_at))
        if locked["status"] != progress.RUNNING or workflow is None:
            return Advanced()
        state = progress.merge_state(conn, run_id, locked["session_state"], changed, removed, now=now)
        return advance_in(conn, workflow, {**locked, "session_state": state}, now=now, touched=True)

    return _traced_transaction(db, body)


def _reach(workflow: Workflow, row: Any, context: RunContext, found: Progress, path: str) -> Reached | None:
    replay = Replay(context, found.outcomes, found.decisions, record=False, target=path)
    request = row["request"]
    run = WorkflowRunOutput(run_id=row["run_id"], input=_input(workflow, request), session_id=row["session_id"],
                            **{name: list(request[name]) for name in MEDIA_FIELDS if request.get(name)})
    try:
        execute_workflow(workflow.steps, run, replay, request.get("additional_data"))
    except Reached as reached:
        return reached
    except Pending:
        pass
    return None


def _attempts(db: Any, started: Started, context: RunContext, path: str) -> tuple[Outcome, Taken] | None:
    """Run the step's attempts (the first already taken); the outcome and the attempt that
    ended with it, or None when an attempt was taken for lost meanwhile. A retry is one
    transaction: the failed attempt recorded and its span ended, the next one taken and its
    span opened (`started.span` is the open attempt's)."""
    assert started.reached is not None
    step, step_input, taken = started.reached.step, started.reached.step_input, started.taken
    executor_runs: list[dict[str, Any]] = []
    while True:
        try:
            output = step.attempt(step_input, context, True, executor_runs.append)
            return Outcome(output.to_dict(), None, executor_runs or None), taken
        except Exception as exc:  # noqa: BLE001 - any executor error is retried, then ruled on
            log.warning("Step %s failed (attempt %d): %s", step.name, taken.attempt, exc)
            if taken.tries_left > 1:
                failed, error = taken, str(exc)
                retried = _traced_transaction(db, lambda conn, traced: _retry(conn, traced, started, failed, path,
                                                                              error))
                if retried is None:
                    return None
                metrics.workflow_step_retried()
                taken = retried
                continue
            try:
                return Outcome(step.exhausted(exc).to_dict(), None, executor_runs or None), taken
            except Exception as final:  # noqa: BLE001 - the step raised: the containers' rules apply
                return Outcome(None, str(final), executor_runs or None), taken


def _retry(conn: Connection, traced: bool, started: Started, taken: Taken, path: str, error: str) -> Taken | None:
    """The failed attempt recorded and its span ended; the next one running, its span open."""
    now = db_time(conn)
    retried = progress.retry_step(conn, started.row["run_id"], path, taken, error=error, worker_id=started.worker,
                                  now=now)
    if retried is None:
        return None
    span, opened = started.span, None
    if traced and started.reached is not None:
        step = started.reached.step
        if span is not None:
            _span_write(lambda: attempt_closed(conn, span, error=error, ended_at=time.time()))
        opened = _span_write(lambda: _open_attempt(conn, started.row, path, step, retried, now=now))
    started.span = opened  # only once the transaction's statements went through
    return retried
