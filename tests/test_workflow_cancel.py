"""Cancelling a workflow run on real `celery worker` processes (issue 8, part 4): cooperative,
between steps (kern_tasks/workflow/cancel.py).

A run of a, slow, c is cancelled while `slow` runs (it waits for a release file): the run
is CANCELLED at once, `a` is kept with its output, `slow` is recorded cancelled; `slow`
finishing afterwards changes nothing and `c` never runs (the executors' call counts in a
file, from every process); a duplicate advance and beat's sweep leave the run alone. agno's
record says CANCELLED (agno_runs, the session's run, the interrupted attempt's span), and
the event stream ends with WorkflowCancelled. A finished run is not cancelled (agno's 409
wording), an unknown one is not found.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Iterator

import httpx
import pytest
from agno.client import AgentOSClient
from agno.utils.http import aclose_default_clients
from sqlalchemy import select

from kern_tasks.db.run_tables import spans
from kern_tasks.errors import Conflict, NotFound
from kern_tasks.runs.store import RunStore
from kern_tasks.runs.traces import span_id_for
from kern_tasks.workflow import progress, sweep
from kern_tasks.workflow.cancel import _cancelled_dict, cancel
from kern_tasks.workflow.events import run_events
from kern_tasks.workflow.submit import wait
from tests import stream_app
from tests.processes import wait_for
from tests.test_workflow_events import Cluster, collect
from tests.workflow_cluster import running

pytestmark = pytest.mark.slow

REDIS_DB = 5
SETTLED = "'taken for lost meanwhile'"  # what a step task says when its attempt was cancelled under it


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(request, Cluster(tmp_path_factory.mktemp("workflow-cancel"), REDIS_DB)) as made:
        yield made


def rows_by_path(cluster: Cluster, run_id: str) -> dict[str, list[Any]]:
    with cluster.db.connect() as conn:
        found: dict[str, list[Any]] = {}
        for row in progress.attempts(conn, run_id):
            found.setdefault(row["path"], []).append(dict(row))
        return found


def settled_count(cluster: Cluster) -> int:
    return sum(cluster.procs.log_text(name).count(SETTLED) for name in ("w1", "w2"))


def settled(cluster: Cluster, times: int) -> bool:
    return settled_count(cluster) >= times


def test_cancel_during_a_slow_step_keeps_what_finished_and_runs_nothing_after(cluster: Cluster) -> None:
    workflow = stream_app.WORKFLOWS["cancel"]
    run_id = cluster.submit("cancel")
    wait_for(lambda: stream_app.calls(cluster.calls, "slow") == 1, 30, what="the slow step running")

    result = cancel(cluster.db, workflow, run_id)
    assert result["status"] == "CANCELLED" and result["content"] == f"Run {run_id} was cancelled"
    assert [(s["step_name"], s["content"]) for s in result["step_results"]] == [("before", "before<None>")]
    ended = wait(cluster.db, run_id, timeout=10)
    assert ended.status.value == "CANCELLED"
    rows = rows_by_path(cluster, run_id)
    assert [(r["status"], r["final"], r["output"]["content"]) for r in rows["0"]] == [("succeeded", True, "before<None>")]
    assert [(r["status"], r["final"]) for r in rows["1"]] == [("cancelled", False)]
    assert "2" not in rows

    # The step finishes after the cancel: nothing changes, nothing more is queued.
    cluster.release.write_text("go")
    wait_for(lambda: settled(cluster, 1), 30, what="the cancelled step's task to end")
    assert stream_app.calls(cluster.calls, "slow", "end") == 1
    assert rows_by_path(cluster, run_id) == rows
    # Neither a duplicate advance nor beat's sweep runs it on.
    cluster.app.send_task("kern.workflow.advance", args=[run_id])
    again = cluster.submit("router", "a picture")  # the two workers have drained the advance by its end
    assert wait(cluster.db, again, timeout=30).status.value == "COMPLETED"
    with cluster.db.begin() as conn:
        swept = sweep.sweep(conn, now=time.time() + 3600, limit=1000, heartbeats=True)
    assert not [m for m in swept if run_id in m.args]
    assert rows_by_path(cluster, run_id) == rows
    assert stream_app.calls(cluster.calls, "after_slow") == 0 and stream_app.calls(cluster.calls, "before") == 1

    # agno's record: the run, its session, the interrupted attempt's span.
    store = RunStore(cluster.db)
    stored = store.get(run_id)
    assert stored is not None and stored.status == "CANCELLED"
    assert stored.to_api()["content"] == f"Run {run_id} was cancelled"
    assert [s["step_name"] for s in stored.run_data["step_results"]] == ["before"]
    with cluster.db.connect() as conn:
        span = conn.execute(select(spans).where(spans.c.span_id == span_id_for(run_id, "1", 1))).mappings().one()
    assert span["status_code"] == "ERROR" and "was cancelled" in str(span["status_message"])

    # Its event stream: what ran, then WorkflowCancelled.
    events = asyncio.run(asyncio.wait_for(collect(run_events(cluster.db, workflow, run_id)), 30))
    assert [(e["event"], e.get("step_name")) for e in events] == [
        ("WorkflowStarted", None), ("StepStarted", "before"), ("StepOutput", "before"), ("StepCompleted", "before"),
        ("StepStarted", "slow"), ("WorkflowCancelled", None)]
    assert events[-1]["reason"] == f"Run {run_id} was cancelled"


def test_a_cancelled_parallel_keeps_its_finished_branch(cluster: Cluster) -> None:
    cluster.release.unlink(missing_ok=True)
    before = settled_count(cluster)  # the module's cluster is shared: count from here, in any order
    workflow = stream_app.WORKFLOWS["cancel_parallel"]
    run_id = cluster.submit("cancel_parallel")
    wait_for(lambda: stream_app.calls(cluster.calls, "hold") == 1 and stream_app.calls(cluster.calls, "quick", "end")
             == 1, 30, what="one branch done, the other running")
    wait_for(lambda: "0/b0/0" in rows_by_path(cluster, run_id) and rows_by_path(cluster, run_id)["0/b0/0"][0]["final"],
             30, what="the quick branch recorded")
    result = cancel(cluster.db, workflow, run_id)
    assert result["status"] == "CANCELLED" and not result.get("step_results")  # the Parallel had not finished
    rows = rows_by_path(cluster, run_id)
    assert [r["status"] for r in rows["0/b0/0"]] == ["succeeded"]
    assert [r["status"] for r in rows["0/b1/0"]] == ["cancelled"]
    cluster.release.write_text("go")
    wait_for(lambda: settled(cluster, before + 1), 30, what="the cancelled branch's task to end")
    assert rows_by_path(cluster, run_id) == rows and stream_app.calls(cluster.calls, "after_fan") == 0


def test_a_finished_run_is_not_cancelled_and_an_unknown_one_is_not_found(cluster: Cluster) -> None:
    workflow = stream_app.WORKFLOWS["sequence"]
    run_id = cluster.submit("sequence")
    assert wait(cluster.db, run_id, timeout=30).status.value == "COMPLETED"
    with pytest.raises(Conflict, match="run is already completed"):
        cancel(cluster.db, workflow, run_id)
    assert RunStore(cluster.db).get(run_id).status == "COMPLETED"
    with pytest.raises(NotFound):
        cancel(cluster.db, workflow, "no-such-run")
    with pytest.raises(NotFound):  # another workflow's run
        cancel(cluster.db, stream_app.WORKFLOWS["loop"], run_id)


def test_cancel_over_http_answers_as_agno_and_ends_the_stream(cluster: Cluster) -> None:
    cluster.release.unlink(missing_ok=True)
    before = settled_count(cluster)
    http = httpx.Client(base_url=cluster.url, timeout=30, trust_env=False)
    workflow_id = stream_app.WORKFLOWS["cancel"].id
    slow_before = stream_app.calls(cluster.calls, "slow")

    async def stream_and_cancel() -> list[dict[str, Any]]:
        client = AgentOSClient(cluster.url, timeout=60)
        events: list[dict[str, Any]] = []
        try:
            async for event in client.run_workflow_stream(workflow_id, "go", session_id=f"s-{uuid.uuid4().hex[:8]}"):
                events.append(event.to_dict())
                if event.event == "StepStarted" and event.step_name == "slow":
                    # agno's client cancels as agno's UI does: POST .../cancel, {} back.
                    await client.cancel_workflow_run(workflow_id, event.run_id)
            return events
        finally:
            await aclose_default_clients()

    events = asyncio.run(asyncio.wait_for(stream_and_cancel(), 60))
    assert [(e["event"], e.get("step_name")) for e in events] == [
        ("WorkflowStarted", None), ("StepStarted", "before"), ("StepOutput", "before"), ("StepCompleted", "before"),
        ("StepStarted", "slow"), ("WorkflowCancelled", None)]
    run_id = events[0]["run_id"]
    assert stream_app.calls(cluster.calls, "slow") == slow_before + 1
    got = http.get(f"/workflows/{workflow_id}/runs/{run_id}")
    assert got.status_code == 200 and got.json()["status"] == "CANCELLED"

    again = http.post(f"/workflows/{workflow_id}/runs/{run_id}/cancel")
    assert (again.status_code, again.json()["detail"]) == (409, "run is already cancelled")
    assert http.post(f"/workflows/{workflow_id}/runs/no-such-run/cancel").status_code == 404
    assert http.post(f"/workflows/no-such-workflow/runs/{run_id}/cancel").status_code == 404
    other = stream_app.WORKFLOWS["loop"].id  # the run is not that workflow's
    assert http.post(f"/workflows/{other}/runs/{run_id}/cancel").status_code == 404

    done = http.post(f"/workflows/{stream_app.WORKFLOWS['router'].id}/runs",
                     data={"message": "a picture", "stream": "false"})
    assert done.status_code == 200 and done.json()["status"] == "COMPLETED"
    late = http.post(f"/workflows/{stream_app.WORKFLOWS['router'].id}/runs/{done.json()['run_id']}/cancel")
    assert (late.status_code, late.json()["detail"]) == (409, "run is already completed")

    cluster.release.write_text("go")
    wait_for(lambda: settled(cluster, before + 1), 30, what="the cancelled step's task to end")
    assert stream_app.calls(cluster.calls, "after_slow") == 0
    assert http.get(f"/workflows/{workflow_id}/runs/{run_id}").json()["status"] == "CANCELLED"
    http.close()


def test_a_cancel_whose_end_was_not_recorded_is_ended_as_cancelled_by_the_next_advance(cluster: Cluster) -> None:
    # The cancel's transaction committed and its process died before agno's record of the
    # end: the run is RUNNING with its CANCELLED dict and nothing open. The sweep's advance
    # (sent here by hand) ends it as cancelled; it never runs the rest.
    cluster.release.unlink(missing_ok=True)
    before = settled_count(cluster)
    workflow = stream_app.WORKFLOWS["cancel"]
    run_id = cluster.submit("cancel")
    wait_for(lambda: stream_app.calls(cluster.calls, "slow") == stream_app.calls(cluster.calls, "slow", "end") + 1,
             30, what="the slow step running")
    with cluster.db.begin() as conn:
        now = time.time()
        row = progress.lock_run(conn, run_id)
        found = progress.load_progress(conn, run_id)
        reason = f"Run {run_id} was cancelled"
        assert [i.path for i in progress.cancel_open_steps(conn, run_id, now=now, reason=reason)] == ["1"]
        progress.record_result(conn, run_id, _cancelled_dict(workflow, row, found, reason, now), now=now)
    with cluster.db.connect() as conn:
        assert progress.is_cancelling(progress.get_run(conn, run_id))
    with pytest.raises(Conflict, match="already cancelled"):  # a second cancel sees it as cancelled
        cancel(cluster.db, workflow, run_id)
    assert RunStore(cluster.db).get(run_id).status == "RUNNING"
    cluster.app.send_task("kern.workflow.advance", args=[run_id])
    assert wait(cluster.db, run_id, timeout=30).status.value == "CANCELLED"
    assert RunStore(cluster.db).get(run_id).status == "CANCELLED"
    cluster.release.write_text("go")
    wait_for(lambda: settled(cluster, before + 1), 30, what="the cancelled step's task to end")
    assert "2" not in rows_by_path(cluster, run_id)
