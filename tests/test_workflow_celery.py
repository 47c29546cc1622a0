"""Workflow runs on real `celery worker` processes, durable across a SIGKILLed worker (issue 8,
parts 3 and 4).

Real Postgres (a schema per module or test), real Redis (databases 14 and 15), real worker
and beat processes (tests/processes.py) loading tests/test_workflow_app.py through KERN_APP:

- a sequence, a Parallel with failing branches, a Loop with a CEL end condition, a Router,
  a Condition and an empty Parallel (agno's ERROR, not a wait) give the same run (status,
  content, step tree) on the workers as in-process, every step attempt a row (a retried
  branch two);
- a Parallel's two branches run at the same time on two worker processes (their rows'
  start/end stamps overlap, each stamped by another worker);
- a duplicate message for a finished step does nothing; a step whose session_state cannot
  cross workers fails (agno's rule for a raising step) instead of leaving the run waiting;
- the run is kept as agno keeps it (agno_runs, the session's state, a span per attempt);
- a worker SIGKILLed in a Loop's second iteration, and in a Parallel branch: beat's sweep
  finds the step lost (its worker stopped beating) and runs it again on another worker;
  the executors' call counts show that only that step ran twice, and the run ends as an
  uninterrupted one did.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import select

from kern_tasks.db.run_tables import sessions, spans, traces
from kern_tasks.firing.liveness import LOST_AFTER_S
from kern_tasks.runs.store import RunStore
from kern_tasks.workflow import Workflow
from kern_tasks.workflow.submit import submit, wait
from tests import test_workflow_app as defs
from tests.processes import wait_for
from tests.workflow_cluster import WorkflowCluster, running

pytestmark = pytest.mark.slow

REDIS_DB = 14
# The SIGKILL test's own: the module's workers (other schema) must not take its messages.
CRASH_REDIS_DB = 15
APP = "tests.test_workflow_app:agent_os"
RETRY_BOUND_S = 60  # the promise: a lost step runs again within 60 s


class Cluster(WorkflowCluster):
    """The module's workers serving tests/test_workflow_app.py; `run` submits and waits."""

    def __init__(self, tmp: Path, redis_db: int = REDIS_DB) -> None:
        super().__init__(tmp, redis_db, APP, calls_env=defs.CALLS_ENV)

    def run(self, workflow: Workflow, input: Any, timeout: float = 30, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("session_id", f"s-{uuid.uuid4().hex[:8]}")  # a session is one workflow's
        run_id = submit(self.app, workflow, input, db=self.db, **kwargs)
        return wait(self.db, run_id, timeout=timeout).to_dict()


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(request, Cluster(tmp_path_factory.mktemp("workflow-celery"))) as made:
        yield made


def tree(output: dict[str, Any]) -> dict[str, Any]:
    keys = ("step_name", "step_type", "executor_type", "executor_name", "content", "success", "error", "stop")
    node = {k: output.get(k) for k in keys}
    if output.get("steps"):
        node["steps"] = [tree(s) for s in output["steps"]]
    return node


def normalised(run: dict[str, Any]) -> dict[str, Any]:
    return {"status": run["status"], "content": run.get("content"), "keys": sorted(run),
            "steps": [tree(s) for s in run.get("step_results", [])]}


def in_process(workflow: Workflow, input: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        result = workflow.run(input, session_id="s1", **kwargs)
    except Exception:  # noqa: BLE001 - a run in ERROR raises; it is kept as the last run
        result = workflow.get_last_run_output(session_id="s1")
    return result.to_dict()


@pytest.mark.parametrize("workflow, input", [
    (defs.sequence, "a topic"),
    (defs.parallel_failing, "a topic"),
    (defs.loop_cel, "AI agents"),
    (defs.router, "a video please"),
    (defs.router, "a picture"),
    (defs.condition, "urgent: fix"),
    (defs.condition, "later"),
    (defs.empty_parallel, "x"),
], ids=["sequence", "parallel-failing", "loop-cel", "router-video", "router-image", "condition-if",
        "condition-else", "empty-parallel"])
def test_a_run_on_workers_equals_the_run_in_process(cluster: Cluster, workflow: Workflow, input: str) -> None:
    expected = normalised(in_process(workflow, input))
    ran = cluster.run(workflow, input, session_id=f"s-{workflow.id}-{input}")
    assert normalised(ran) == expected
    assert ran["run_id"] and ran["session_id"] == f"s-{workflow.id}-{input}" and ran["workflow_id"] == workflow.id
    rows = cluster.attempts(ran["run_id"])
    assert all(row["status"] in ("succeeded", "failed") for row in rows)
    assert all(row["worker_id"] for row in rows)
    if workflow is defs.parallel_failing:
        # The branch with max_retries=1: two attempt rows, the first failed and not final.
        broken = [(row["attempt"], row["status"], row["final"]) for row in rows if row["path"] == "1/b1/0"]
        assert broken == [(1, "failed", False), (2, "failed", True)]


def test_parallel_branches_run_at_once_on_two_workers(cluster: Cluster) -> None:
    ran = cluster.run(defs.overlap, "go")
    assert normalised(ran) == normalised(in_process(defs.overlap, "go"))
    left, right = sorted(cluster.attempts(ran["run_id"]), key=lambda row: row["path"])
    assert (left["path"], right["path"]) == ("0/b0/0", "0/b1/0")
    assert left["worker_id"] != right["worker_id"]
    # Each started before the other ended: they overlapped (stamps on the database's clock).
    assert left["started_at"] < right["ended_at"] and right["started_at"] < left["ended_at"]


def test_a_duplicate_message_for_a_finished_step_does_nothing(cluster: Cluster) -> None:
    ran = cluster.run(defs.sequence, "once")
    before = defs.calls("b", cluster.calls)
    rows = cluster.attempts(ran["run_id"])
    cluster.app.send_task("kern.workflow.step", args=[ran["run_id"], "1"])
    cluster.app.send_task("kern.workflow.advance", args=[ran["run_id"]])
    again = cluster.run(defs.sequence, "after the duplicates")  # the workers have drained the duplicates
    assert again["status"] == "COMPLETED"
    assert defs.calls("b", cluster.calls) == before + 1  # only the new run's
    assert cluster.attempts(ran["run_id"]) == rows


@pytest.mark.parametrize("workflow, hung, hung_on, path, expected_calls", [
    # In a plain step of the sequence.
    (defs.crash_step, "outline", 1, "1", {"research": 1, "outline": 1, "publish": 1}),
    # In a Loop's second iteration (its fourth node: draft, review, draft, review).
    (defs.crash, "review", 2, "1/3", {"research": 1, "draft": 2, "review": 2, "publish": 1}),
    # In a Parallel branch: the other branch is not run again, the Parallel's body runs once.
    (defs.crash_parallel, "right", 1, "1/b1/0", {"research": 1, "left": 1, "right": 1, "publish": 1}),
], ids=["sequence-step", "loop-second-iteration", "parallel-branch"])
def test_a_worker_sigkilled_mid_step_only_that_step_runs_again(
    tmp_path: Path, workflow: Workflow, hung: str, hung_on: int, path: str, expected_calls: dict[str, int]
) -> None:
    made = Cluster(tmp_path, CRASH_REDIS_DB)
    failed = True
    try:
        os.environ[defs.CALLS_ENV] = str(tmp_path / "in-process.txt")
        (tmp_path / "in-process.hung").write_text("not here")  # the reference run does not hang
        try:
            expected = normalised(in_process(workflow, "AI agents"))
            assert {name: defs.calls(name) for name in expected_calls} == expected_calls
        finally:
            del os.environ[defs.CALLS_ENV]
        first = made.worker("w1")
        made.procs.beat("beat", max_interval=1)
        made.procs.wait_for_log("beat", "beat: Starting...")
        run_id = submit(made.app, workflow, "AI agents", db=made.db, session_id="s1")
        wait_for(lambda: defs.calls(hung, made.calls) == hung_on, 30, what=f"call {hung_on} of {hung} (it hangs)")
        made.procs.kill(first)  # SIGKILL, mid-step
        assert first.returncode == -signal.SIGKILL
        made.worker("w2")
        ended = wait(made.db, run_id, timeout=RETRY_BOUND_S + LOST_AFTER_S)
        assert normalised(ended.to_dict()) == expected
        # Only the interrupted step ran twice (its calls + the re-run), the others as uninterrupted.
        ran = {name: defs.calls(name, made.calls) for name in expected_calls}
        assert ran == {**expected_calls, hung: expected_calls[hung] + 1}
        rows = made.attempts(run_id)
        by_path: dict[str, list[str]] = {}
        for row in rows:
            by_path.setdefault(row["path"], []).append(row["status"])
        assert by_path.pop(path) == ["lost", "succeeded"]
        assert all(statuses == ["succeeded"] for statuses in by_path.values()), by_path
        assert ended.run_id == run_id
        failed = False
    finally:
        made.close(failed)


def test_a_step_whose_state_cannot_cross_workers_fails_and_the_run_goes_on(cluster: Cluster) -> None:
    ran = cluster.run(defs.unstorable_state, "x")
    assert ran["status"] == "COMPLETED"  # not a run left waiting on an attempt that never ends
    keep, after = ran["step_results"]
    assert (keep["success"], after["success"]) == (False, True)
    assert keep["content"].startswith("Step skipped due to error: the step's output or session_state could not be stored")


def test_a_run_on_workers_is_kept_as_agno_keeps_it(cluster: Cluster) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    ran = cluster.run(defs.parallel_failing, "a topic", session_id=session, session_state={"n": 1})
    stored = RunStore(cluster.db).get(ran["run_id"])
    assert stored is not None and (stored.run_type, stored.status) == ("workflow", "COMPLETED")
    assert [tree(s) for s in stored.run_data["step_results"]] == [tree(s) for s in ran["step_results"]]
    with cluster.db.connect() as conn:
        session_data = conn.execute(select(sessions.c.session_data).where(sessions.c.session_id == session)).scalar()
        (trace_id,) = conn.execute(select(traces.c.trace_id).where(traces.c.run_id == ran["run_id"])).scalars()
        found = conn.execute(select(spans).where(spans.c.trace_id == trace_id)).mappings().all()
    # The state saved without the run's own keys, as agno saves it.
    assert session_data["session_state"] == {"n": 1}
    # One span per step attempt under the run's root: the retried branch has two, both ERROR.
    root = [s for s in found if s["parent_span_id"] is None]
    attempts = sorted((s["name"], s["attributes"]["agno.step.attempt"], s["status_code"]) for s in found
                      if s["parent_span_id"] is not None)
    assert len(root) == 1 and all(s["parent_span_id"] == root[0]["span_id"] for s in found if s not in root)
    assert attempts == [("after", 1, "OK"), ("broken", 1, "ERROR"), ("broken", 2, "ERROR"), ("left", 1, "OK"),
                        ("skipped", 1, "ERROR"), ("start", 1, "OK")]
    again = cluster.run(defs.parallel_failing, "again", session_id=session)
    assert again["status"] == "COMPLETED" and RunStore(cluster.db).get(again["run_id"]).status == "COMPLETED"
