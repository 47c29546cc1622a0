"""Parity with agno 3.1.10: the same definitions, built from agno's classes and from ours, run
in-process, give the same normalised results.

Compared: status, content, the to_dict() keys, and every step output, nested (name, type,
executor, content, success, error, stop), plus how many times each executor ran. agno runs
with an in-memory db (its run output of a failed run is read back from there) and telemetry
off; CEL needs agno's cel-python, a test dependency.
"""

from __future__ import annotations

import collections
import copy
import os
from types import SimpleNamespace
from typing import Any, Callable

import pytest

os.environ.setdefault("AGNO_TELEMETRY", "false")

import agno.workflow as agno_workflow  # noqa: E402
from agno.db.in_memory import InMemoryDb  # noqa: E402
from agno.workflow.cel import CEL_AVAILABLE  # noqa: E402

import kern_tasks.workflow as ours  # noqa: E402

NAMES = ("Workflow", "Step", "Steps", "Parallel", "Loop", "Router", "Condition", "StepOutput")
AGNO = SimpleNamespace(**{n: getattr(agno_workflow, n) for n in NAMES}, kind="agno")
OURS = SimpleNamespace(**{n: getattr(ours, n) for n in NAMES}, kind="ours")

pytestmark = pytest.mark.skipif(not CEL_AVAILABLE, reason="agno's CEL needs cel-python (test extra)")

Build = Callable[[SimpleNamespace, collections.Counter], list[Any]]


def tree(output: dict[str, Any]) -> dict[str, Any]:
    keys = ("step_name", "step_type", "executor_type", "executor_name", "content", "success", "error", "stop")
    node = {k: output.get(k) for k in keys}
    if output.get("steps"):
        node["steps"] = [tree(s) for s in output["steps"]]
    return node


def run(ns: SimpleNamespace, build: Build, input: Any, **kwargs: Any) -> dict[str, Any]:
    calls: collections.Counter = collections.Counter()
    extra = {"db": InMemoryDb(), "telemetry": False} if ns.kind == "agno" else {}
    workflow = ns.Workflow(name="parity", steps=build(ns, calls), **extra)
    raised = None
    try:
        result = workflow.run(input, session_id="s1", **kwargs)
    except Exception as exc:  # noqa: BLE001 - agno raises for a run in ERROR; so do we
        raised = f"{type(exc).__name__}: {exc}"
        result = workflow.get_last_run_output(session_id="s1")
    data = result.to_dict()
    return {
        "status": data["status"], "content": data.get("content"), "raised": raised,
        "keys": sorted(k for k in data if k != "events"),
        "steps": [tree(s) for s in data.get("step_results", [])], "calls": dict(calls),
    }


def assert_parity(build: Build, input: Any = "a topic", **kwargs: Any) -> dict[str, Any]:
    # Each side gets its own copy: agno writes the run's session_state into the dict given.
    theirs = run(AGNO, build, copy.deepcopy(input), **copy.deepcopy(kwargs))
    mine = run(OURS, build, copy.deepcopy(input), **copy.deepcopy(kwargs))
    assert mine == theirs
    return mine


# Executors, shared by both sides: each counts its calls and shows what it was given.

def echo(name: str, calls: collections.Counter) -> Callable[[Any], str]:
    def executor(step_input: Any) -> str:
        calls[name] += 1
        return f"{name}<{step_input.previous_step_content}|{step_input.get_input_as_string()}>"
    executor.__name__ = f"echo_{name}"
    return executor


def failing(name: str, calls: collections.Counter, times: int = 10**6) -> Callable[[Any], str]:
    def executor(step_input: Any) -> str:
        calls[name] += 1
        if calls[name] <= times:
            raise RuntimeError(f"{name} broke (call {calls[name]})")
        return f"{name} ok after {calls[name]} calls"
    executor.__name__ = f"failing_{name}"
    return executor


def output(ns: SimpleNamespace, name: str, calls: collections.Counter, content: Callable[[int], str],
           stop: Callable[[int], bool] = lambda n: False) -> Callable[[Any], Any]:
    def executor(step_input: Any) -> Any:
        calls[name] += 1
        return ns.StepOutput(content=content(calls[name]), stop=stop(calls[name]))
    executor.__name__ = f"output_{name}"
    return executor


def step(ns: SimpleNamespace, name: str, executor: Callable[[Any], Any], **kwargs: Any) -> Any:
    return ns.Step(name=name, executor=executor, **kwargs)


# Sequences

def test_sequence_chains_content_and_names_function_steps() -> None:
    def build(ns, calls):
        def lookup(step_input):
            calls["lookup"] += 1
            return f"{step_input.get_step_content('first')} / {step_input.get_all_previous_content()}"
        return [step(ns, "first", echo("first", calls)), echo("bare", calls), lookup]

    result = assert_parity(build)
    assert result["status"] == "COMPLETED" and result["calls"] == {"first": 1, "bare": 1, "lookup": 1}


def test_sequence_with_structured_input_and_outputs() -> None:
    def build(ns, calls):
        return [output(ns, "dict", calls, lambda n: {"score": n}), echo("after", calls)]

    assert_parity(build, input={"topic": "x", "n": 2})


def test_an_empty_workflow() -> None:
    assert assert_parity(lambda ns, calls: [])["content"] == "No steps executed"


def test_repeated_step_names_none_results_and_parallel_in_parallel() -> None:
    """A later step of an existing name replaces it in place (dict order), so "the last
    output" a step sees is the one recorded last by position, as in agno."""
    def build(ns, calls):
        def nothing(step_input):
            calls["nothing"] += 1
        return [step(ns, "a", echo("a", calls)), step(ns, "b", echo("b", calls)), step(ns, "a", echo("a2", calls)),
                ns.Steps(name="inner", steps=[step(ns, "b", echo("b2", calls)), step(ns, "c", echo("c", calls))]),
                step(ns, "nothing", nothing),
                ns.Parallel(ns.Parallel(step(ns, "p1", echo("p1", calls)), name="pp"), step(ns, "p2", echo("p2", calls))),
                step(ns, "last", echo("last", calls))]

    assert_parity(build)


# Parallel

def test_parallel_with_a_failing_branch_and_what_the_next_step_sees() -> None:
    def build(ns, calls):
        def read(step_input):
            calls["read"] += 1
            return f"{step_input.previous_step_content} || {step_input.get_step_content('par')}"
        return [
            step(ns, "start", echo("start", calls)),
            ns.Parallel(step(ns, "a", echo("a", calls)), step(ns, "b", failing("b", calls), max_retries=1),
                        step(ns, "c", echo("c", calls)), name="par"),
            step(ns, "read", read),
        ]

    result = assert_parity(build)
    assert result["calls"]["b"] == 2 and result["steps"][1]["success"] is False


def test_parallel_of_one_branch_and_a_parallel_last() -> None:
    def build(ns, calls):
        return [ns.Parallel("solo", step(ns, "a", echo("a", calls))),
                ns.Parallel(step(ns, "x", echo("x", calls)), step(ns, "y", echo("y", calls)))]

    assert_parity(build)


def test_parallel_branch_asking_to_stop_ends_the_run() -> None:
    def build(ns, calls):
        return [ns.Parallel(step(ns, "a", echo("a", calls)),
                            step(ns, "halt", output(ns, "halt", calls, lambda n: "halt", lambda n: True)), name="p"),
                step(ns, "never", echo("never", calls))]

    assert "never" not in assert_parity(build)["calls"]


# Loop

@pytest.mark.parametrize("end_condition", [
    'last_step_content.contains("DONE")',
    "all_success && current_iteration >= 2",
    'step_outputs.check == "DONE 2" || current_iteration >= max_iterations',
    None,
])
def test_loop_with_cel_end_conditions(end_condition: str | None) -> None:
    def build(ns, calls):
        return [ns.Loop(name="lp", max_iterations=4, end_condition=end_condition, steps=[
            step(ns, "work", echo("work", calls)),
            step(ns, "check", output(ns, "check", calls, lambda n: f"DONE {n}" if n >= 2 else f"again {n}")),
        ]), step(ns, "after", echo("after", calls))]

    assert_parity(build)


def test_loop_with_a_callable_end_condition_and_one_that_raises() -> None:
    def build(ns, calls):
        def enough(outputs):
            return any("DONE" in str(o.content) for o in outputs)

        def broken(outputs):
            raise KeyError("nope")
        return [
            ns.Loop(name="ok", end_condition=enough, steps=[
                step(ns, "check", output(ns, "check", calls, lambda n: "DONE" if n == 2 else "no"))]),
            ns.Loop(name="broken", max_iterations=2, end_condition=broken, steps=[step(ns, "w", echo("w", calls))]),
        ]

    assert_parity(build)


@pytest.mark.parametrize("forward", [False, True])
def test_loop_forward_iteration_output(forward: bool) -> None:
    def build(ns, calls):
        return [step(ns, "seed", echo("seed", calls)),
                ns.Loop(name="grow", max_iterations=3, forward_iteration_output=forward,
                        steps=[step(ns, "grow1", echo("grow1", calls)), step(ns, "grow2", echo("grow2", calls))])]

    assert_parity(build)


def test_stop_inside_a_loop_ends_the_loop_and_the_run() -> None:
    def build(ns, calls):
        return [ns.Loop(name="lp", max_iterations=5, steps=[
            step(ns, "halt", output(ns, "halt", calls, lambda n: f"h{n}", lambda n: n == 2)),
            step(ns, "rest", echo("rest", calls)),
        ]), step(ns, "never", echo("never", calls))]

    result = assert_parity(build)
    assert result["calls"] == {"halt": 2, "rest": 1}


def test_a_failure_inside_a_loop_ends_the_run_in_error() -> None:
    def build(ns, calls):
        return [step(ns, "first", echo("first", calls)),
                ns.Loop(name="lp", steps=[step(ns, "ok", echo("ok", calls)),
                                          step(ns, "bad", failing("bad", calls), max_retries=1)]),
                step(ns, "never", echo("never", calls))]

    result = assert_parity(build)
    assert result["status"] == "ERROR" and result["raised"].startswith("RuntimeError")


# Router

@pytest.mark.parametrize("selector, text", [
    ('input.contains("video") ? "video" : "image"', "a video please"),
    ('input.contains("video") ? "video" : "image"', "a picture"),
    ('"nowhere"', "x"),
    ("step_choices[1]", "x"),
    ('additional_data.route', "x"),
    ('session_state.workflow_name == "parity" ? "video" : "image"', "x"),
])
def test_router_with_cel_selectors(selector: str, text: str) -> None:
    def build(ns, calls):
        return [step(ns, "start", echo("start", calls)),
                ns.Router(name="route", selector=selector, choices=[
                    step(ns, "image", echo("image", calls)), step(ns, "video", echo("video", calls))]),
                step(ns, "after", echo("after", calls))]

    assert_parity(build, input=text, additional_data={"route": "image"})


def test_router_with_callable_and_multi_choice_selectors() -> None:
    def build(ns, calls):
        def by_name(step_input):
            return "b"

        def many(step_input, step_choices):
            return [step_choices[1], "a", "unknown"]

        def both_groups(step_input):
            return ["steps_group_2", "a"]
        choices = [step(ns, "a", echo("a", calls)), step(ns, "b", echo("b", calls)),
                   [step(ns, "g1", echo("g1", calls)), step(ns, "g2", echo("g2", calls))]]
        return [ns.Router(name="one", selector=by_name, choices=choices),
                ns.Router(name="many", selector=many, choices=choices),
                ns.Router(name="groups", selector=both_groups, choices=choices)]

    assert_parity(build)


def test_router_inner_failure_and_a_selector_that_raises() -> None:
    def build(ns, calls):
        def raises(step_input):
            raise LookupError("no route")
        return [ns.Router(name="r", selector=lambda si: ["bad", "fine"], choices=[
                    step(ns, "bad", failing("bad", calls), max_retries=0), step(ns, "fine", echo("fine", calls))]),
                ns.Router(name="broken", selector=raises, choices=[step(ns, "x", echo("x", calls))]),
                step(ns, "never", echo("never", calls))]

    assert assert_parity(build)["status"] == "ERROR"


# Condition

@pytest.mark.parametrize("evaluator", [
    'input.contains("urgent")',
    'additional_data.priority > 5',
    'previous_step_outputs.start.contains("start")',
    'session_state.workflow_id == "parity" && previous_step_content != ""',
    True,
    False,
])
@pytest.mark.parametrize("with_else", [True, False])
def test_condition_with_and_without_else(evaluator: Any, with_else: bool) -> None:
    def build(ns, calls):
        else_steps = [step(ns, "no", echo("no", calls)), step(ns, "no2", echo("no2", calls))] if with_else else None
        return [step(ns, "start", echo("start", calls)),
                ns.Condition(name="cond", evaluator=evaluator, steps=[step(ns, "yes", echo("yes", calls))],
                             else_steps=else_steps),
                step(ns, "after", echo("after", calls))]

    assert_parity(build, input="urgent: fix", additional_data={"priority": 3})


def test_condition_with_callables_inner_failure_and_an_evaluator_that_raises() -> None:
    def build(ns, calls):
        def yes(step_input, run_context):
            return run_context.session_state["workflow_name"] == "parity"

        def not_bool(step_input):
            return "yes"

        def raises(step_input):
            raise ValueError("cannot decide")
        return [ns.Condition(name="c1", evaluator=yes, steps=[
                    step(ns, "bad", failing("bad", calls), max_retries=0), step(ns, "unreached", echo("u", calls))]),
                ns.Condition(name="c2", evaluator=not_bool, steps=[step(ns, "x", echo("x", calls))],
                             else_steps=[step(ns, "y", echo("y", calls))]),
                ns.Condition(name="c3", evaluator=raises, steps=[step(ns, "z", echo("z", calls))]),
                step(ns, "after", echo("after", calls))]

    assert assert_parity(build)["status"] == "COMPLETED"


# Retries, skip_on_failure, stop, Steps

def test_retries_then_recorded_and_skipped_with_the_run_completed() -> None:
    def build(ns, calls):
        return [step(ns, "flaky", failing("flaky", calls, times=2)),
                step(ns, "hopeless", failing("hopeless", calls)),
                step(ns, "once", failing("once", calls), max_retries=0),
                step(ns, "after", echo("after", calls))]

    result = assert_parity(build)
    assert result["status"] == "COMPLETED"
    assert result["calls"] == {"flaky": 3, "hopeless": 4, "once": 1, "after": 1}


def test_skip_on_failure() -> None:
    def build(ns, calls):
        return [step(ns, "skippy", failing("skippy", calls), max_retries=1, skip_on_failure=True),
                step(ns, "after", echo("after", calls)),
                ns.Loop(name="lp", max_iterations=2, steps=[
                    step(ns, "inner", failing("inner", calls), max_retries=0, skip_on_failure=True)])]

    assert assert_parity(build)["calls"]["skippy"] == 2


def test_stop_at_the_top_level() -> None:
    def build(ns, calls):
        return [step(ns, "halt", output(ns, "halt", calls, lambda n: "enough", lambda n: True)),
                step(ns, "never", echo("never", calls))]

    assert assert_parity(build)["calls"] == {"halt": 1}


def test_steps_container_chaining_stop_and_failure() -> None:
    def build(ns, calls):
        return [ns.Steps(name="ok", steps=[step(ns, "s1", echo("s1", calls)), step(ns, "s2", echo("s2", calls))]),
                ns.Steps(name="broken", steps=[step(ns, "s3", failing("s3", calls), max_retries=0),
                                               step(ns, "s4", echo("s4", calls))]),
                ns.Steps(name="empty", steps=[]),
                ns.Steps(name="halts", steps=[step(ns, "h", output(ns, "h", calls, lambda n: "h", lambda n: True)),
                                              step(ns, "s5", echo("s5", calls))]),
                step(ns, "never", echo("never", calls))]

    assert assert_parity(build)["calls"] == {"s1": 1, "s2": 1, "s3": 1, "h": 1}


def test_nested_containers() -> None:
    def build(ns, calls):
        return [ns.Loop(name="outer", max_iterations=2, end_condition="current_iteration >= 2", steps=[
                    ns.Parallel(
                        ns.Condition(name="gate", evaluator='input.contains("go")',
                                     steps=[step(ns, "g", echo("g", calls))]),
                        ns.Router(name="pick", selector='"r1"', choices=[step(ns, "r1", echo("r1", calls))]),
                        step(ns, "plain", echo("plain", calls)), name="fan"),
                    ns.Steps(name="tail", steps=[step(ns, "t", echo("t", calls))]),
                ]),
                step(ns, "last", echo("last", calls))]

    assert_parity(build, input="go now")


# run_context, session_state, generators, nested workflows, arun

def test_run_context_session_state_seen_by_later_steps_and_cel() -> None:
    def build(ns, calls):
        def mark(step_input, run_context):
            calls["mark"] += 1
            run_context.session_state["seen"] = run_context.session_state.get("seen", 0) + 1
            return f"{run_context.workflow_name}:{run_context.session_state['seen']}"
        return [step(ns, "mark", mark), step(ns, "again", mark),
                ns.Condition(name="gate", evaluator="session_state.seen == 2", steps=[step(ns, "y", echo("y", calls))])]

    assert_parity(build, session_state={"seen": 0})


def test_generator_executor_joins_its_items() -> None:
    def build(ns, calls):
        def chunks(step_input):
            calls["chunks"] += 1
            yield "one "
            yield 2
        return [step(ns, "chunks", chunks), step(ns, "after", echo("after", calls))]

    assert_parity(build)


def test_nested_workflow_step() -> None:
    def build(ns, calls):
        extra = {"telemetry": False} if ns.kind == "agno" else {}
        inner = ns.Workflow(name="inner", steps=[step(ns, "i1", echo("i1", calls)), step(ns, "i2", echo("i2", calls))],
                            **extra)
        return [step(ns, "start", echo("start", calls)), ns.Step(name="sub", workflow=inner),
                step(ns, "after", echo("after", calls))]

    assert_parity(build)


def test_arun_with_async_and_sync_executors() -> None:
    import asyncio

    def build(ns, calls):
        async def slow(step_input):
            calls["slow"] += 1
            await asyncio.sleep(0)
            return f"slow<{step_input.previous_step_content}>"
        return [step(ns, "sync", echo("sync", calls)), step(ns, "slow", slow), step(ns, "after", echo("after", calls))]

    def arun(ns: SimpleNamespace) -> dict[str, Any]:
        calls: collections.Counter = collections.Counter()
        extra = {"db": InMemoryDb(), "telemetry": False} if ns.kind == "agno" else {}
        result = asyncio.run(ns.Workflow(name="parity", steps=build(ns, calls), **extra).arun("x", session_id="s1"))
        data = result.to_dict()
        return {"status": data["status"], "content": data["content"],
                "steps": [tree(s) for s in data["step_results"]], "calls": dict(calls)}

    assert arun(OURS) == arun(AGNO)


# CEL itself: our engine (cel-expr-python) against agno's (cel-python), value by value

from agno.workflow import cel as agno_cel  # noqa: E402
from agno.workflow.types import StepInput as AgnoStepInput, StepOutput as AgnoStepOutput  # noqa: E402

from kern_tasks.workflow import cel as our_cel  # noqa: E402
from kern_tasks.workflow.types import StepInput as OurStepInput, StepOutput as OurStepOutput  # noqa: E402

ITERATIONS = [
    [("draft", "text v1", True), ("review", "needs work", True)],
    [("draft", "text v2", True), ("review", "APPROVED", True)],
    [("draft", "", False), ("review", "APPROVED with notes", True)],
    [],
]
LOOP_EXPRESSIONS = [
    'last_step_content.contains("APPROVED")',
    'last_step_content.startsWith("APP") || last_step_content.endsWith("work")',
    "all_success && current_iteration >= 2",
    "current_iteration >= max_iterations",
    'step_outputs.review == "APPROVED"',
    '"review" in step_outputs && size(step_outputs.draft) > 6',
    "step_outputs.exists(k, step_outputs[k].contains(\"v2\"))",
    'last_step_content.matches("^APP.*notes$")',
    "size(step_outputs) == 0",
    "step_outputs.missing == \"x\"",
]


def outcome(evaluate: Callable[[], Any]) -> Any:
    try:
        return evaluate()
    except Exception:  # noqa: BLE001 - a failed evaluation is an outcome to compare
        return "failed"


@pytest.mark.parametrize("expression", LOOP_EXPRESSIONS)
def test_loop_cel_values_equal_agnos(expression: str) -> None:
    expr = our_cel.CelExpression(expression, our_cel.LOOP_END_CONDITION, "test")
    for iteration, rows in enumerate(ITERATIONS, start=1):
        theirs_outputs = [AgnoStepOutput(step_name=n, content=c, success=s) for n, c, s in rows]
        ours_outputs = [OurStepOutput(step_name=n, content=c, success=s) for n, c, s in rows]
        theirs = outcome(lambda: agno_cel.evaluate_cel_loop_end_condition(expression, theirs_outputs, iteration, 3))
        mine = outcome(lambda: our_cel.as_bool(expr.evaluate(our_cel.loop_variables(ours_outputs, iteration, 3))))
        assert mine == theirs, (expression, iteration)


INPUTS = [
    ("urgent: the video is broken", {"priority": 7, "route": "video", "tags": ["a", "b"]},
     {"retries": 1, "user": {"tier": "gold"}}, {"classify": "billing question"}),
    ({"topic": "images", "n": 2}, {"priority": 1}, {}, {}),
    (None, None, None, {"classify": ""}),
]
STEP_INPUT_EXPRESSIONS = [
    ('input.contains("urgent")', False),
    ("additional_data.priority > 5", False),
    ('"b" in additional_data.tags', False),
    ("session_state.retries < 3 && session_state.user.tier == \"gold\"", False),
    ('previous_step_outputs.classify.contains("billing")', False),
    ('previous_step_content == ""', False),
    ('input.contains("video") ? "video" : "image"', True),
    ("additional_data.route", True),
    ('step_choices.exists(c, input.contains(c)) ? step_choices.filter(c, input.contains(c))[0] : "image"', True),
    ('has(additional_data.route) ? additional_data.route : step_choices[0]', True),
]


@pytest.mark.parametrize("expression, is_router", STEP_INPUT_EXPRESSIONS)
def test_condition_and_router_cel_values_equal_agnos(expression: str, is_router: bool) -> None:
    scope = our_cel.ROUTER_SELECTOR if is_router else our_cel.CONDITION_EVALUATOR
    expr = our_cel.CelExpression(expression, scope, "test")
    choices = ["image", "video"]
    for text, data, state, previous in INPUTS:
        theirs_input = AgnoStepInput(input=text, additional_data=data, previous_step_content=previous.get("classify"),
                                     previous_step_outputs={k: AgnoStepOutput(step_name=k, content=v)
                                                            for k, v in previous.items()})
        ours_input = OurStepInput(input=text, additional_data=data, previous_step_content=previous.get("classify"),
                                  previous_step_outputs={k: OurStepOutput(step_name=k, content=v)
                                                         for k, v in previous.items()})
        variables = our_cel.step_input_variables(ours_input, state)
        if is_router:
            theirs = outcome(lambda: agno_cel.evaluate_cel_router_selector(expression, theirs_input, state, choices))
            mine = outcome(lambda: our_cel.as_choice(expr.evaluate({**variables, "step_choices": choices})))
        else:
            theirs = outcome(lambda: agno_cel.evaluate_cel_condition_evaluator(expression, theirs_input, state))
            mine = outcome(lambda: our_cel.as_bool(expr.evaluate(variables)))
        assert mine == theirs, (expression, text)
