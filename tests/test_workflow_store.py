"""A workflow with a db keeps its runs as agno does: the session (with its state) in
agno_sessions, the run in agno_runs, a trace with one span per step attempt; agno's own
adapter reads them back, and agno's own Workflow on a db saves the same session state.
Every test runs on Postgres and on SQLite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from kern_tasks.db import Database
from kern_tasks.db.run_tables import runs, sessions, spans, traces
from kern_tasks.errors import Conflict
from kern_tasks.runs.store import RunStore
from kern_tasks.workflow import Loop, Parallel, RunContext, RunStatus, Step, StepInput, StepOutput, Workflow
from kern_tasks.workflow.record import attempt_finished, attempt_started, root_span_id, run_finished, run_started

from .conftest import EMPTY_SETTINGS


def research(step_input: StepInput) -> str:
    return f"notes on {step_input.input}"


def count_visits(step_input: StepInput, run_context: RunContext) -> str:
    state = run_context.session_state
    state["visits"] = state.get("visits", 0) + 1
    state.setdefault("seen", []).append(step_input.input)
    return f"visit {state['visits']}"


def pipeline(db: Database, **options: Any) -> Workflow:
    return Workflow(name="Content Pipeline", db=db, steps=[
        Step(name="research", executor=research),
        Step(name="count", executor=count_visits),
        Parallel(Step(name="left", executor=lambda s: "L"), Step(name="right", executor=lambda s: "R"), name="fan"),
        Loop(name="polish", steps=[Step(name="edit", executor=lambda s: "edited")], max_iterations=2),
    ], **options)


def rows(db: Database, table: Any, *where: Any) -> list[dict[str, Any]]:
    with db.connect() as conn:
        return [dict(row) for row in conn.execute(select(table).where(*where)).mappings()]


def span_tree(db: Database, run_id: str) -> list[tuple[Any, ...]]:
    """(name, attempt, status, parent name) of the run's spans, in start order."""
    (trace,) = rows(db, traces, traces.c.run_id == run_id)
    stored = sorted(rows(db, spans, spans.c.trace_id == trace["trace_id"]), key=lambda s: s["start_time"])
    names = {s["span_id"]: s["name"] for s in stored}
    return [(s["name"], s["attributes"].get("agno.step.attempt"), s["status_code"], names.get(s["parent_span_id"]))
            for s in stored]


def without_nones(data: Any) -> Any:
    """A stored dict compared with a run's to_dict(): JSON values, None-valued keys left out
    (the store starts a run with keys such as user_id=None that to_dict() omits)."""
    return {k: v for k, v in json.loads(json.dumps(data)).items() if v is not None}


def test_a_run_is_kept_as_agno_keeps_it(db: Database) -> None:
    workflow = pipeline(db, description="research, fan out, polish")
    result = workflow.run("tides", session_id="s-1", user_id="ann")
    assert result.status == RunStatus.completed

    (session,) = rows(db, sessions)
    assert (session["session_id"], session["session_type"], session["workflow_id"], session["user_id"]) == (
        "s-1", "workflow", "content-pipeline", "ann")
    assert session["workflow_data"] == {"workflow_id": "content-pipeline", "name": "Content Pipeline", "steps": [
        {"name": "research", "description": None, "type": "Step"},
        {"name": "count", "description": None, "type": "Step"},
        {"name": "fan", "description": None, "type": "Parallel"},
        {"name": "polish", "description": None, "type": "Loop"},
    ]}
    assert session["session_data"] == {"session_state": {"visits": 1, "seen": ["tides"]}}

    (run,) = rows(db, runs)
    assert (run["run_id"], run["run_type"], run["workflow_id"], run["user_id"], run["status"], run["run_index"]) == (
        result.run_id, "workflow", "content-pipeline", "ann", "COMPLETED", 0)
    assert without_nones(run["run_data"]) == without_nones(result.to_dict())
    fan = run["run_data"]["step_results"][2]
    assert [s["step_name"] for s in fan["steps"]] == ["left", "right"]

    (trace,) = rows(db, traces)
    assert (trace["run_id"], trace["session_id"], trace["workflow_id"], trace["status"], trace["name"]) == (
        result.run_id, "s-1", "content-pipeline", "OK", "Content Pipeline.run")
    tree = span_tree(db, result.run_id)
    assert tree[0] == ("Content Pipeline.run", None, "OK", None)
    assert sorted(tree[1:]) == sorted([
        ("research", 1, "OK", "Content Pipeline.run"),
        ("count", 1, "OK", "Content Pipeline.run"),
        ("fan", 1, "OK", "Content Pipeline.run"),
        ("left", 1, "OK", "fan"),
        ("right", 1, "OK", "fan"),
        ("polish", 1, "OK", "Content Pipeline.run"),
        ("edit", 1, "OK", "polish"),
        ("edit", 1, "OK", "polish"),
    ])
    (root,) = rows(db, spans, spans.c.parent_span_id.is_(None))
    assert root["span_id"] == root_span_id(result.run_id)
    assert root["attributes"]["agno.workflow.step_types"] == ["Step", "Step", "Parallel", "Loop"]
    assert root["attributes"]["agno.workflow.description"] == "research, fan out, polish"
    (research_span,) = rows(db, spans, spans.c.name == "research")
    assert research_span["attributes"]["output.value"] == "notes on tides"
    assert research_span["attributes"]["agno.step.type"] == "Step"
    assert research_span["start_time"] >= root["start_time"] and research_span["end_time"] <= root["end_time"]


def test_session_state_is_merged_and_saved_across_runs(db: Database) -> None:
    workflow = pipeline(db, session_state={"visits": 10, "plan": {"tier": "free", "seats": 1}})
    given = {"plan": {"tier": "pro"}}
    workflow.run("first", session_id="s-2", session_state=given)
    # As with agno on a db: the run's keys are not saved, and gone from the caller's dict.
    assert given == {"visits": 11, "plan": {"tier": "pro", "seats": 1}, "seen": ["first"]}
    workflow.run("second", session_id="s-2")
    # Another Workflow object (another process) continues the session from the database; the
    # definition's state applies to new sessions only.
    again = pipeline(db, session_state={"visits": 100})
    again.run("third", session_id="s-2", session_state={"extra": True})
    (session,) = rows(db, sessions)
    assert session["session_data"]["session_state"] == {
        "visits": 13, "plan": {"tier": "pro", "seats": 1}, "seen": ["first", "second", "third"], "extra": True}
    assert [r["run_index"] for r in sorted(rows(db, runs), key=lambda r: r["run_index"])] == [0, 1, 2]
    # A new session starts from the definition's state again.
    again.run("fresh", session_id="s-3")
    (fresh,) = rows(db, sessions, sessions.c.session_id == "s-3")
    assert fresh["session_data"]["session_state"] == {"visits": 101, "seen": ["fresh"]}
    # overwrite_db_session_state: the stored state is not applied.
    pipeline(db, overwrite_db_session_state=True).run("over", session_id="s-2")
    (session,) = rows(db, sessions, sessions.c.session_id == "s-2")
    assert session["session_data"]["session_state"] == {"visits": 1, "seen": ["over"]}


def test_retries_give_one_span_per_attempt_and_a_failing_attempt_carries_its_error(db: Database) -> None:
    calls: list[int] = []

    def flaky(step_input: StepInput) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError(f"flaky failure {len(calls)}")
        return "third time lucky"

    def broken(step_input: StepInput) -> str:
        raise ValueError("always broken")

    workflow = Workflow(name="retrying", db=db, steps=[
        Step(name="flaky", executor=flaky, max_retries=3),
        Step(name="broken", executor=broken, max_retries=1),
        Step(name="skipped", executor=broken, max_retries=0, skip_on_failure=True),
    ])
    result = workflow.run("go")
    assert result.status == RunStatus.completed  # agno: a step that kept failing is skipped
    tree = span_tree(db, result.run_id)
    assert tree[1:] == [
        ("flaky", 1, "ERROR", "retrying.run"),
        ("flaky", 2, "ERROR", "retrying.run"),
        ("flaky", 3, "OK", "retrying.run"),
        ("broken", 1, "ERROR", "retrying.run"),
        ("broken", 2, "ERROR", "retrying.run"),
        ("skipped", 1, "ERROR", "retrying.run"),
    ]
    errors = [s["status_message"] for s in sorted(rows(db, spans, spans.c.status_code == "ERROR"),
                                                 key=lambda s: s["start_time"])]
    assert errors == ["flaky failure 1", "flaky failure 2", "always broken", "always broken", "always broken"]
    (broken_span, _) = rows(db, spans, spans.c.name == "broken")
    assert broken_span["attributes"]["exception.message"] == "always broken"
    (trace,) = rows(db, traces)
    assert trace["status"] == "ERROR"  # as agno sums a trace up: ERROR when any span is
    (run,) = rows(db, runs)
    assert run["status"] == "COMPLETED"
    assert run["run_data"]["step_results"][1]["content"] == "Step skipped due to error: always broken"


def test_a_run_that_ends_in_error_is_stored_in_error(db: Database) -> None:
    def fails(step_input: StepInput) -> str:
        raise RuntimeError("no ink")

    workflow = Workflow(name="failing", db=db, steps=[
        Step(name="ok", executor=lambda s: "fine"),
        Loop(name="drafts", steps=[Step(name="draft", executor=fails, max_retries=0)], max_iterations=2),
        Step(name="never", executor=lambda s: "not reached"),
    ])
    with pytest.raises(RuntimeError, match="no ink"):
        workflow.run("go", session_id="s-err")
    (run,) = rows(db, runs)
    assert run["status"] == "ERROR"
    assert run["run_data"]["content"] == "Workflow execution failed: no ink"
    assert run["run_data"]["error"] == "Workflow execution failed: no ink"
    tree = span_tree(db, run["run_id"])
    assert tree == [
        ("failing.run", None, "ERROR", None),
        ("ok", 1, "OK", "failing.run"),
        ("drafts", 1, "ERROR", "failing.run"),
        ("draft", 1, "ERROR", "drafts"),
    ]
    (root,) = rows(db, spans, spans.c.parent_span_id.is_(None))
    assert root["status_message"] == "Workflow execution failed: no ink"


def test_a_session_of_another_workflow_or_user_is_refused(db: Database) -> None:
    pipeline(db).run("mine", session_id="taken", user_id="ann")
    with pytest.raises(Conflict):
        Workflow(name="other", db=db, steps=[Step(name="a", executor=research)]).run("x", session_id="taken",
                                                                                     user_id="ann")
    with pytest.raises(Conflict):
        pipeline(db).run("x", session_id="taken", user_id="bob")
    assert len(rows(db, runs)) == 1


def test_db_must_be_ours() -> None:
    with pytest.raises(TypeError, match="kern_tasks.db.Database"):
        Workflow(name="w", db=object(), steps=[Step(name="a", executor=research)])


def test_agno_reads_the_session_its_runs_and_the_trace(db: Database, agno_on_ours: Any) -> None:
    from agno.db.base import SessionType
    from agno.os.routers.traces.schemas import TraceDetail
    from agno.run.workflow import WorkflowRunOutput as AgnoRunOutput
    from agno.session.workflow import WorkflowSession

    workflow = pipeline(db)
    first = workflow.run("tides", session_id="s-agno", user_id="ann")
    second = workflow.run("moons", session_id="s-agno", user_id="ann")

    session = agno_on_ours.get_session("s-agno", SessionType.WORKFLOW, user_id="ann")
    assert isinstance(session, WorkflowSession)
    assert (session.workflow_id, session.user_id, session.workflow_data["name"]) == (
        "content-pipeline", "ann", "Content Pipeline")
    assert session.session_data["session_state"] == {"visits": 2, "seen": ["tides", "moons"]}
    assert [r.run_id for r in session.runs] == [first.run_id, second.run_id]
    run = session.runs[1]
    assert isinstance(run, AgnoRunOutput)
    assert (run.status, run.content, run.input, run.workflow_id) == ("COMPLETED", "edited", "moons",
                                                                          "content-pipeline")
    assert [s.step_name for s in run.step_results] == ["research", "count", "fan", "polish"]
    assert [s.content for s in run.step_results[2].steps] == ["L", "R"]
    assert [s.step_type for s in run.step_results] == ["Step", "Step", "Parallel", "Loop"]
    assert agno_on_ours.get_run(first.run_id).step_results[0].content == "notes on tides"

    trace = agno_on_ours.get_trace(run_id=second.run_id)
    assert (trace.workflow_id, trace.session_id, trace.status, trace.total_spans, trace.error_count) == (
        "content-pipeline", "s-agno", "OK", 9, 0)
    read = agno_on_ours.get_spans(trace_id=trace.trace_id)
    detail = TraceDetail.from_trace_and_spans(trace, read)
    (root,) = detail.tree
    assert root.name == "Content Pipeline.run" and root.type == "WORKFLOW"
    assert [(n.name, n.step_type) for n in root.spans] == [
        ("research", "Step"), ("count", "Step"), ("fan", "Parallel"), ("polish", "Loop")]
    assert sorted(n.name for n in root.spans[2].spans) == ["left", "right"]
    assert [n.output for n in root.spans[3].spans] == ["edited", "edited"]


def test_agnos_workflow_on_a_db_saves_the_same_session_state(tmp_path: Path) -> None:
    """The same workflow, on agno's classes with agno's SqliteDb and on ours with our
    Database: the caller's dict and the saved state agree after each of three runs."""
    from agno.db.base import SessionType
    from agno.db.sqlite import SqliteDb
    from agno.workflow import Step as AgnoStep
    from agno.workflow import Workflow as AgnoWorkflow

    def step(step_input: Any, run_context: Any) -> str:
        state = run_context.session_state
        state["n"] = state.get("n", 0) + 1
        state.setdefault("inputs", []).append(step_input.input)
        return str(state["n"])

    agno_db = SqliteDb(db_url=f"sqlite:///{tmp_path / 'agno.db'}")
    ours_db = Database(f"sqlite:///{tmp_path / 'ours.db'}", settings=EMPTY_SETTINGS)
    ours_db.upgrade()
    agno_flow = AgnoWorkflow(name="w", db=agno_db, session_state={"n": 5, "cfg": {"a": 1, "b": 2}},
                             steps=[AgnoStep(name="s", executor=step)])
    ours_flow = Workflow(name="w", db=ours_db, session_state={"n": 5, "cfg": {"a": 1, "b": 2}},
                         steps=[Step(name="s", executor=step)])
    for given in ({"cfg": {"b": 3}}, None, {"extra": "x"}):
        seen = []
        for flow in (agno_flow, ours_flow):
            state = json.loads(json.dumps(given)) if given is not None else None
            result = flow.run("in", session_id="one", session_state=state)
            seen.append((result.content, state))
        assert seen[0] == seen[1]
        agno_saved = agno_db.get_session("one", SessionType.WORKFLOW).session_data["session_state"]
        assert RunStore(ours_db).session_data("one")["session_state"] == agno_saved
    assert agno_saved == {"n": 8, "cfg": {"a": 1, "b": 3}, "inputs": ["in", "in", "in"], "extra": "x"}
    agno_db.db_engine.dispose()
    ours_db.dispose()


def test_the_record_calls_take_plain_values_and_end_an_attempt_once(db: Database) -> None:
    """What a step-per-task runner calls from its workers: started/finished per attempt with
    plain values; a duplicate finish changes nothing; an attempt never finished stays UNSET."""
    store = RunStore(db)
    run = {"run_id": "r-1", "session_id": "s-t", "workflow_id": "wf", "workflow_name": "wf", "input": "hi",
           "status": "PENDING", "created_at": 1_700_000_000}
    data = {"workflow_id": "wf", "name": "wf", "steps": [{"name": "a", "description": None, "type": "Step"}]}
    run_started(store, run_id="r-1", session_id="s-t", user_id=None, workflow_id="wf", workflow_name="wf",
                run_data=run, session_workflow_data=data, started_at=100.0)
    attempt_started(store, "r-1", "a1", root_span_id("r-1"), "a", "Step", 1, started_at=101.0)
    assert attempt_finished(store, "a1", error="lost connection", ended_at=102.5)
    assert not attempt_finished(store, "a1", content="late", ended_at=103.0)  # a duplicate message
    attempt_started(store, "r-1", "a2", root_span_id("r-1"), "a", "Step", 2, started_at=103.0)
    attempt_started(store, "r-1", "a2", root_span_id("r-1"), "a", "Step", 2, started_at=103.0)  # duplicate
    assert (rows(db, runs)[0]["status"]) == "RUNNING"
    output = StepOutput(step_name="a", step_type="Step", content="done")
    finished = {**run, "status": "COMPLETED", "content": "done", "step_results": [output.to_dict()]}
    run_finished(store, finished, {"k": 1, "current_run_id": "r-1"}, started_at=100.0, ended_at=110.0)
    by_id = {s["span_id"]: s for s in rows(db, spans)}
    assert set(by_id) == {root_span_id("r-1"), "a1", "a2"}
    assert (by_id["a1"]["status_code"], by_id["a1"]["status_message"], by_id["a1"]["duration_ms"]) == (
        "ERROR", "lost connection", 1500)
    assert by_id["a2"]["status_code"] == "UNSET"  # its worker was lost: no end recorded
    assert (by_id[root_span_id("r-1")]["status_code"], by_id[root_span_id("r-1")]["duration_ms"]) == ("OK", 10000)
    (trace,) = rows(db, traces)
    assert (trace["status"], trace["duration_ms"], trace["workflow_id"]) == ("ERROR", 10000, "wf")
    (stored,) = rows(db, runs)
    assert (stored["status"], stored["run_data"]["step_results"][0]["content"]) == ("COMPLETED", "done")
    assert rows(db, sessions)[0]["session_data"] == {"session_state": {"k": 1}}
