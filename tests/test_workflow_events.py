"""agno's workflow event stream of runs executing on real `celery worker` processes (issue 8,
part 5, stream=true), derived from their recorded progress (kern_tasks/workflow/events.py).

Each definition of tests/stream_app.py is run twice: by agno itself in-process,
`Workflow.run(stream=True, stream_events=True)` on the same definition built from agno's
classes, and by our workers, its events read by `run_events`. The sequences of
(event, step_name) must be equal, but for the order of the events inside a Parallel (its
branches run at the same time: agno's threads or our workers interleave them as they go).
Cases: a sequence, a Parallel with a failing branch, a Loop of 2 iterations, Conditions
(if, not met) and Steps, a Router, failing steps (retried, skip_on_failure), and a failure
inside a Loop (agno's StepError, then WorkflowError); each read by `run_events` in this
process and over POST /workflows/{id}/runs stream=true (a `kern-tasks serve` process),
parsed by agno's own AgentOSClient. On the embedded default (SQLite, the in-process
worker) a Loop streams the same, and a run cancelled mid-stream ends with WorkflowCancelled.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

os.environ.setdefault("AGNO_TELEMETRY", "false")

import agno.workflow as agno_workflow  # noqa: E402
from agno.client import AgentOSClient  # noqa: E402
from agno.utils.http import aclose_default_clients  # noqa: E402
from agno.db.in_memory import InMemoryDb  # noqa: E402

from kern_tasks.runs.store import RunStore  # noqa: E402
from kern_tasks.settings import Settings  # noqa: E402
from kern_tasks.workflow.events import run_events  # noqa: E402
from kern_tasks.workflow.submit import submit  # noqa: E402
from tests import stream_app  # noqa: E402
from tests.workflow_cluster import WorkflowCluster, running  # noqa: E402

pytestmark = pytest.mark.slow

REDIS_DB = 4
APP = "tests.stream_app:agent_os"
AGNO = SimpleNamespace(**{name: getattr(agno_workflow, name) for name in stream_app.NAMES})
STREAM_TIMEOUT_S = 60


class Cluster(WorkflowCluster):
    """Two workers and a web process serving tests/stream_app.py; `release` is the file its
    slow steps wait for."""

    def __init__(self, tmp: Path, redis_db: int) -> None:
        self.release = tmp / "release"
        super().__init__(tmp, redis_db, APP, env={stream_app.RELEASE_ENV: str(self.release)},
                         calls_env=stream_app.CALLS_ENV)

    def start(self) -> None:
        super().start()
        self.web()

    def submit(self, name: str, input: Any = "a topic") -> str:
        return submit(self.app, stream_app.WORKFLOWS[name], input, db=self.db,
                      session_id=f"s-{name}-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(request, Cluster(tmp_path_factory.mktemp("workflow-events"), REDIS_DB)) as made:
        yield made


def agno_events(name: str, input: Any) -> list[dict[str, Any]]:
    """agno's own stream for the definition `name`, in-process."""
    workflow = AGNO.Workflow(name=f"agno_{name}", steps=stream_app.build(AGNO)[name], db=InMemoryDb(),
                             telemetry=False)
    events = []
    try:
        for event in workflow.run(input, stream=True, stream_events=True, session_id="s1"):
            events.append(event.to_dict())
    except Exception:  # noqa: BLE001 - agno re-raises a run's error after its WorkflowError event
        pass
    return events


async def collect(events: Any) -> list[dict[str, Any]]:
    return [event async for event in events]


def our_events(cluster: Cluster, name: str, input: Any, via: str = "core") -> tuple[str, list[dict[str, Any]]]:
    """The events of a new run: read by `run_events` in this process ("core"), or over
    POST /workflows/{id}/runs stream=true, parsed by agno's own client ("sse")."""
    workflow = stream_app.WORKFLOWS[name]
    if via == "core":
        run_id = cluster.submit(name, input)
        stream = run_events(cluster.db, workflow, run_id)
        return run_id, asyncio.run(asyncio.wait_for(collect(stream), STREAM_TIMEOUT_S))

    async def over_sse() -> list[dict[str, Any]]:
        client = AgentOSClient(cluster.url, timeout=STREAM_TIMEOUT_S)
        try:
            stream = client.run_workflow_stream(workflow.id, input, session_id=f"s-{name}-{uuid.uuid4().hex[:8]}")
            return [event.to_dict() async for event in stream]
        finally:
            await aclose_default_clients()  # agno's shared client belongs to this loop

    events = asyncio.run(asyncio.wait_for(over_sse(), STREAM_TIMEOUT_S))
    return events[0]["run_id"], events


def pairs(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(event["event"], event.get("step_name")) for event in events]


def canonical(sequence: list[tuple[str, Any]]) -> list[Any]:
    """The sequence with each Parallel's inner events as a sorted block: the one freedom of
    order a Parallel has (its branches run side by side)."""
    out: list[Any] = []
    stack: list[list[Any]] = [out]
    for item in sequence:
        if item[0] == "ParallelExecutionStarted":
            stack[-1].append(item)
            stack.append([])
        elif item[0] == "ParallelExecutionCompleted":
            block = stack.pop()
            stack[-1].append(tuple(sorted(block, key=repr)))
            stack[-1].append(item)
        else:
            stack[-1].append(item)
    assert len(stack) == 1, f"a Parallel never completed in {sequence}"
    return out


def each_step_starts_before_it_completes(events: list[dict[str, Any]]) -> bool:
    open_steps: dict[Any, int] = {}
    for event in events:
        key = (event.get("step_name"), str(event.get("step_index")))
        if event["event"] == "StepStarted":
            open_steps[key] = open_steps.get(key, 0) + 1
        elif event["event"] == "StepCompleted":
            if open_steps.get(key, 0) < 1:
                return False
            open_steps[key] -= 1
    return True


CASES = [("sequence", "a topic"), ("parallel", "a topic"), ("loop", "AI agents"), ("condition", "urgent: fix"),
         ("condition", "later"), ("router", "a video please"), ("failing", "x"), ("failing_loop", "x")]


@pytest.mark.parametrize("via", ["core", "sse"])
@pytest.mark.parametrize("name, input", CASES, ids=[f"{n}-{i.split()[0]}" for n, i in CASES])
def test_the_event_stream_on_workers_is_agnos(cluster: Cluster, name: str, input: str, via: str) -> None:
    expected = agno_events(name, input)
    run_id, ours = our_events(cluster, name, input, via)
    assert canonical(pairs(ours)) == canonical(pairs(expected))
    assert each_step_starts_before_it_completes(ours)
    workflow = stream_app.WORKFLOWS[name]
    assert all(event["run_id"] == run_id and event["workflow_id"] == workflow.id
               and event["workflow_name"] == workflow.name and event["session_id"].startswith(f"s-{name}-")
               for event in ours)
    # What the events carry: the same contents, iterations and decisions as agno's. (Not the
    # contents after a Condition: agno's streaming run hands the next step other content
    # than its run without streaming, which ours equals; see test_workflow_parity.)
    checked = () if name == "condition" else ("content",)

    def facts(events: list[dict[str, Any]]) -> list[Any]:
        keys = (*checked, "iteration", "should_continue", "total_iterations", "max_iterations", "condition_result",
                "branch", "executed_steps", "selected_steps", "parallel_step_count", "steps_count", "error")
        return sorted((repr(e["event"]), repr(e.get("step_name")), repr({k: e.get(k) for k in keys}))
                      for e in events if e["event"] not in ("WorkflowCompleted", "StepOutput"))
    assert facts(ours) == facts(expected)
    last, theirs = ours[-1], expected[-1]
    assert last["event"] == theirs["event"]
    if last["event"] == "WorkflowCompleted":
        if checked:  # agno's streaming run also leaves a Condition not met out of its step_results
            assert last["content"] == theirs["content"]
            assert [s["step_name"] for s in last["step_results"]] == [s["step_name"] for s in theirs["step_results"]]


def test_a_loop_streams_its_iterations_in_order(cluster: Cluster) -> None:
    _, events = our_events(cluster, "loop", "AI agents")
    loop = [(e["event"], e.get("iteration"), e.get("should_continue")) for e in events
            if e["event"].startswith("LoopIteration")]
    assert loop == [("LoopIterationStarted", 1, None), ("LoopIterationCompleted", 1, True),
                    ("LoopIterationStarted", 2, None), ("LoopIterationCompleted", 2, True)]
    done = next(e for e in events if e["event"] == "LoopExecutionCompleted")
    assert done["total_iterations"] == 2 and [len(i) for i in done["all_results"]] == [2, 2]
    assert [e["step_index"] for e in events if e["event"] == "StepStarted"] == [0, [1, 0], [1, 1], [1, 0], [1, 1], 2] \
        or [e["step_index"] for e in events if e["event"] == "StepStarted"] == [0, (1, 0), (1, 1), (1, 0), (1, 1), 2]


def test_the_embedded_default_streams_agnos_events_and_cancels(tmp_path: Path) -> None:
    # SQLite and the in-process worker (AgentOS(scheduler=True), no broker, no KERN_APP).
    from kern_tasks.os import AgentOS
    from kern_tasks.workflow import Workflow
    from tests.processes import ServerThread

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'kern.db'}", data_dir=tmp_path / "data")
    assert settings.broker_url is None and settings.app is None
    made = {name: Workflow(id=name, name=name, steps=steps) for name, steps in stream_app.build(stream_app.OURS).items()
            if name in ("loop", "cancel")}
    os.environ[stream_app.RELEASE_ENV] = str(tmp_path / "release")
    embedded = AgentOS(workflows=list(made.values()), settings=settings, scheduler=True, scheduler_poll_interval=1)
    try:
        with ServerThread(embedded.get_app(), lifespan="on") as server:  # the embedded worker starts with it
            async def stream(workflow_id: str, input: str, cancel_at: str | None = None) -> list[dict[str, Any]]:
                client = AgentOSClient(server.url, timeout=STREAM_TIMEOUT_S)
                events = []
                try:
                    async for event in client.run_workflow_stream(workflow_id, input):
                        events.append(event.to_dict())
                        if cancel_at is not None and event.event == "StepStarted" and event.step_name == cancel_at:
                            await client.cancel_workflow_run(workflow_id, event.run_id)
                    return events
                finally:
                    await aclose_default_clients()

            ours = asyncio.run(asyncio.wait_for(stream("loop", "AI agents"), STREAM_TIMEOUT_S))
            assert pairs(ours) == pairs(agno_events("loop", "AI agents"))
            cancelled = asyncio.run(asyncio.wait_for(stream("cancel", "go", cancel_at="slow"), STREAM_TIMEOUT_S))
            assert pairs(cancelled)[-2:] == [("StepStarted", "slow"), ("WorkflowCancelled", None)]
            (tmp_path / "release").write_text("go")
            assert RunStore(embedded.db).get(cancelled[0]["run_id"]).status == "CANCELLED"
    finally:
        del os.environ[stream_app.RELEASE_ENV]
