"""kern_tasks.workflow in-process: the seed's pipeline, CEL at definition, values that cross a boundary.

Parity with agno's own classes is in test_workflow_parity.py; here is what is ours alone.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from kern_tasks.agent import Agent, ScriptedModel
from kern_tasks.errors import ValidationError
from kern_tasks.workflow import (
    CelError,
    Condition,
    Loop,
    Parallel,
    Router,
    RunContext,
    RunStatus,
    Step,
    StepInput,
    StepOutput,
    Workflow,
)


def seed_pipeline(editor: Agent) -> Workflow:
    """The seed's example, as written (with kern_tasks for kern)."""
    researcher = Agent(model="offline", name="researcher")
    outliner = Agent(model="offline", name="outliner")
    writer = Agent(model="offline", name="writer")
    return Workflow(name="content_pipeline", steps=[
        Step(name="research", agent=researcher),
        Step(name="outline", agent=outliner),
        Loop(name="draft_review", steps=[Step(name="draft", agent=writer), Step(name="review", agent=editor)],
             end_condition='last_step_content.contains("APPROVED")', max_iterations=3),
    ])


def test_seed_pipeline_ends_when_the_editor_approves_on_iteration_two() -> None:
    editor_model = ScriptedModel(["Too vague; tighten the intro.", "APPROVED: ready to publish."])
    workflow = seed_pipeline(Agent(model=editor_model, name="editor"))
    result = workflow.run("AI agents in production")
    assert result.status == RunStatus.completed
    assert workflow.id == "content-pipeline"
    loop = result.step_results[-1]
    assert [s.step_name for s in result.step_results] == ["research", "outline", "draft_review"]
    assert [s.step_name for s in loop.steps] == ["draft", "review", "draft", "review"]
    assert loop.content == "Loop draft_review completed 2 iterations with 4 total steps"
    assert result.content == "APPROVED: ready to publish."
    # The editor reviewed the writer's draft each time, and the writer saw the outline.
    assert len(editor_model.calls) == 2
    assert 'I received "Offline model' in editor_model.calls[0][0][-1]["content"]
    assert all(s.executor_type == "agent" and s.success for s in loop.steps)
    # As in agno, the agents' own runs are kept on the workflow run, linked to it.
    runs = result.to_dict()["step_executor_runs"]
    assert [r["agent_id"] for r in runs] == ["researcher", "outliner", "writer", "editor", "writer", "editor"]
    assert {r["parent_run_id"] for r in runs} == {result.run_id}
    json.dumps(result.to_dict())


def test_seed_pipeline_stops_after_max_iterations_when_never_approved() -> None:
    editor_model = ScriptedModel(["Not yet."] * 3)
    result = seed_pipeline(Agent(model=editor_model, name="editor")).run("AI agents in production")
    loop = result.step_results[-1]
    assert result.status == RunStatus.completed
    assert loop.content == "Loop draft_review completed 3 iterations with 6 total steps"
    assert len(editor_model.calls) == 3
    assert result.content == "Not yet."


def define(kind: str, expression: str) -> Any:
    """A primitive of `kind` given `expression` where it takes one."""
    step = Step(name="a", executor=lambda si: "a")
    if kind == "Loop":
        return Loop(name="l", steps=[step], end_condition=expression)
    if kind == "Condition":
        return Condition(name="c", steps=[step], evaluator=expression)
    return Router(name="r", choices=[step], selector=expression)


@pytest.mark.parametrize("kind, expression, field, position, allowed", [
    ("Loop", 'input.contains("x")', "Loop 'l'.end_condition", "line 1, column 1",
     "current_iteration, max_iterations, all_success"),
    ("Loop", 'last_step_content.contains("A"', "Loop 'l'.end_condition", "line 1, column 31",
     "last_step_content, step_outputs"),
    ("Loop", 'current_iteration == "2"', "Loop 'l'.end_condition", "line 1, column 19", "current_iteration"),
    ("Condition", "current_iteration > 1", "Condition 'c'.evaluator", "line 1, column 1",
     "input, previous_step_content, previous_step_outputs"),
    ("Condition", "input.contains('a') &&", "Condition 'c'.evaluator", "line 1, column 23",
     "additional_data, session_state"),
    ("Router", "step_choice[0]", "Router 'r'.selector", "line 1, column 1", "session_state, step_choices"),
    ("Router", "nope(input)", "Router 'r'.selector", "line 1, column 5", "step_choices"),
])
def test_a_cel_expression_that_cannot_be_used_fails_when_defined(kind: str, expression: str, field: str,
                                                                 position: str, allowed: str) -> None:
    with pytest.raises(CelError) as caught:
        define(kind, expression)
    error = caught.value
    assert isinstance(error, ValidationError) and isinstance(error, ValueError)
    assert error.field == field
    assert f"CEL expression {expression!r}" in str(error)
    assert position in str(error)
    assert allowed in str(error)


def test_a_cel_expression_failing_at_run_time_counts_as_agno_counts_it() -> None:
    """A missing map key: false for a Condition (agno's rule), nothing selected for a Router."""
    workflow = Workflow(name="w", steps=[
        Condition(name="c", evaluator="additional_data.missing == 1", steps=[lambda si: "if"],
                  else_steps=[Step(name="else", executor=lambda si: "else")]),
        Router(name="r", selector="additional_data.route", choices=[Step(name="a", executor=lambda si: "a")]),
    ])
    result = workflow.run("x", additional_data={})
    assert result.step_results[0].content == "Condition c completed with 1 results (else branch)"
    assert result.step_results[1].content == "Router r completed with 0 results (no steps selected)"


def test_values_round_trip_through_json() -> None:
    def first(step_input: StepInput) -> StepOutput:
        return StepOutput(content={"n": 1}, images=[{"url": "http://127.0.0.1/x.png"}])

    result = Workflow(name="w", steps=[
        Step(name="first", executor=first),
        Parallel(Step(name="a", executor=lambda si: "A"), Step(name="b", executor=lambda si: "B"), name="p"),
    ]).run({"topic": "x"})
    data = json.loads(json.dumps(result.to_dict()))
    assert data["status"] == "COMPLETED" and data["input"] == {"topic": "x"}
    again = type(result).from_dict(data)
    assert again.to_dict() == data
    step_input = StepInput(input="x", previous_step_outputs={o.step_name: o for o in result.step_results})
    assert StepInput.from_dict(json.loads(json.dumps(step_input.to_dict()))).to_dict() == step_input.to_dict()
    assert step_input.get_step_content("p") == {"a": "A", "b": "B"}
    assert step_input.get_step_content("first") == {"n": 1}


def test_run_context_and_session_state_are_shared_by_the_steps_of_a_run() -> None:
    seen: list[RunContext] = []

    def count(step_input: StepInput, run_context: RunContext) -> str:
        seen.append(run_context)
        state = run_context.session_state
        state["n"] = state.get("n", 0) + 1
        return str(state["n"])

    workflow = Workflow(name="Counter Flow", session_state={"n": 10}, steps=[count, Step(name="again", executor=count)])
    given = {"extra": True}
    result = workflow.run("x", user_id="u1", session_state=given)
    assert result.content == "12"
    assert given["n"] == 12  # as in agno, the dict given is the run's state
    assert seen[0].session_state is seen[1].session_state
    assert seen[0].session_state["workflow_id"] == "counter-flow"
    assert seen[0].session_state["current_user_id"] == "u1"
    assert seen[0].session_state["extra"] is True
    assert workflow.session_state == {"n": 10}  # the definition's state is copied, not changed


def test_arun_runs_coroutine_executors_and_run_refuses_them() -> None:
    async def slow(step_input: StepInput) -> str:
        await asyncio.sleep(0)
        return f"async {step_input.input}"

    workflow = Workflow(name="w", steps=[Step(name="slow", executor=slow, max_retries=0)])
    assert asyncio.run(workflow.arun("hi")).content == "async hi"
    result = workflow.run("hi")
    assert result.step_results[0].success is False
    assert "Cannot use async function with synchronous execution" in result.step_results[0].error


def test_a_run_in_error_raises_and_is_kept_as_the_last_run() -> None:
    def boom(step_input: StepInput) -> str:
        raise RuntimeError("kaput")

    workflow = Workflow(name="w", steps=[Loop(name="l", steps=[Step(name="b", executor=boom, max_retries=0)])])
    with pytest.raises(RuntimeError, match="kaput"):
        workflow.run("x", session_id="s1")
    last = workflow.get_last_run_output(session_id="s1")
    assert last is not None and last.status == RunStatus.error
    assert last.content == "Workflow execution failed: kaput"
    assert workflow.get_last_run_output(session_id="other") is None


def test_a_step_needs_exactly_one_executor_and_a_known_step_type() -> None:
    with pytest.raises(ValueError, match="must have one executor"):
        Step(name="s")
    with pytest.raises(ValueError, match="only have one executor"):
        Step(name="s", executor=lambda si: 1, agent=Agent(name="a"))
    with pytest.raises(ValueError, match="Invalid step type: int"):
        Workflow(name="w", steps=[42])


def test_agno_options_are_accepted_input_schema_is_applied_and_human_review_refused() -> None:
    from pydantic import BaseModel

    class Topic(BaseModel):
        title: str

    workflow = Workflow(name="w", telemetry=False, debug_mode=True, input_schema=Topic,
                        steps=[Step(name="t", executor=lambda si: si.input.title, add_workflow_history=False)])
    assert workflow.run('{"title": "agents"}').content == "agents"
    assert workflow.run({"title": "celery"}).content == "celery"
    with pytest.raises(ValueError, match="Failed to parse dict into Topic"):
        workflow.run({"name": "x"})
    with pytest.raises(TypeError, match="unexpected keyword arguments: colour"):
        Workflow(name="w", colour="blue")
    with pytest.raises(ValueError, match="human_review is not supported yet"):
        Loop(name="l", steps=[], human_review=object())
    with pytest.raises(ValueError, match="not supported in-process yet"):
        workflow.run({"title": "x"}, stream=True)


def test_an_empty_parallel_ends_the_run_in_error_as_in_agno() -> None:
    """agno's thread pool refuses zero workers; ours says why, with the same outcome."""
    workflow = Workflow(name="w", steps=[Step(name="a", executor=lambda si: "a"), Parallel(name="none")])
    with pytest.raises(ValueError, match="Parallel 'none' has no steps"):
        workflow.run("x")
    last = workflow.get_last_run_output()
    assert last is not None and last.status == RunStatus.error
    assert [s.step_name for s in last.step_results] == ["a", "none"]
