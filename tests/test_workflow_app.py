"""The workflows tests/test_workflow_celery.py runs, in-process and on `celery worker`
processes (KERN_APP=tests.test_workflow_app:agent_os). No tests here.

Every executor appends one line when it starts and one when it ends to the file named by
WORKFLOW_TEST_CALLS (when set): "start|end <step> <pid> <epoch>", so a test counts the
calls made in every process. `hang_once` hangs (600 s) on its n-th call in all processes,
once: the call a test SIGKILLs a worker in.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from kern_tasks.os import AgentOS
from kern_tasks.workflow import Condition, Loop, Parallel, Router, Step, StepInput, Workflow

CALLS_ENV = "WORKFLOW_TEST_CALLS"


def calls_file() -> Path | None:
    value = os.environ.get(CALLS_ENV)
    return Path(value) if value else None


def note(event: str, name: str) -> None:
    path = calls_file()
    if path is not None:
        with open(path, "a") as out:  # one short append per line: whole lines from every process
            out.write(f"{event} {name} {os.getpid()} {time.time():.6f}\n")


def calls(name: str, path: Path | None = None) -> int:
    """How many times step executor `name` started, in every process."""
    path = path or calls_file()
    if path is None or not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.split()[:2] == ["start", name])


def executor(name: str, body: Callable[[StepInput], Any]) -> Callable[[StepInput], Any]:
    def run(step_input: StepInput) -> Any:
        note("start", name)
        try:
            return body(step_input)
        finally:
            note("end", name)
    run.__name__ = name
    return run


def echoed(name: str) -> Callable[[StepInput], str]:
    return lambda s: f"{name}<{s.previous_step_content}|{s.get_input_as_string()}>"


def echo(name: str) -> Callable[[StepInput], Any]:
    return executor(name, echoed(name))


def failing(name: str) -> Callable[[StepInput], Any]:
    def body(step_input: StepInput) -> Any:
        raise RuntimeError(f"{name} broke")
    return executor(name, body)


def slow(name: str, seconds: float) -> Callable[[StepInput], Any]:
    def body(step_input: StepInput) -> Any:
        time.sleep(seconds)
        return f"{name} done"
    return executor(name, body)


def hang_once(name: str, on_call: int, then: Callable[[StepInput], Any]) -> Callable[[StepInput], Any]:
    """An executor that hangs on its `on_call`-th call, once, then does as `then` (a plain body)."""
    def body(step_input: StepInput) -> Any:
        path = calls_file()
        marker = path.with_suffix(".hung") if path is not None else None
        if marker is not None and calls(name) == on_call and not marker.exists():
            marker.write_text("hung")
            time.sleep(600)  # the test SIGKILLs the worker here
        return then(step_input)
    return executor(name, body)


def review(step_input: StepInput) -> str:
    """Approves a draft revised twice (deterministic: the loop forwards its output)."""
    text = str(step_input.get_step_content("draft"))
    return f"APPROVED {text}" if text.count("draft") >= 2 else f"revise: {text}"


def draft_review_loop(review_step: Callable[[StepInput], Any]) -> Loop:
    return Loop(name="draft_review", steps=[Step(name="draft", executor=echo("draft")),
                                            Step(name="review", executor=review_step)],
                end_condition='last_step_content.contains("APPROVED")', max_iterations=3,
                forward_iteration_output=True)


sequence = Workflow(name="wf_sequence", steps=[
    Step(name="a", executor=echo("a")), Step(name="b", executor=echo("b")), Step(name="c", executor=echo("c")),
])
parallel_failing = Workflow(name="wf_parallel_failing", steps=[
    Step(name="start", executor=echo("start")),
    Parallel(Step(name="left", executor=echo("left")), Step(name="broken", executor=failing("broken"), max_retries=1),
             Step(name="skipped", executor=failing("skipped"), max_retries=0, skip_on_failure=True), name="fan"),
    Step(name="after", executor=echo("after")),
])
loop_cel = Workflow(name="wf_loop_cel", steps=[
    Step(name="research", executor=echo("research")), draft_review_loop(executor("review", review)),
    Step(name="publish", executor=echo("publish")),
])
router = Workflow(name="wf_router", steps=[
    Step(name="start", executor=echo("start")),
    Router(name="route", selector='input.contains("video") ? "video" : "image"',
           choices=[Step(name="image", executor=echo("image")), Step(name="video", executor=echo("video"))]),
    Step(name="after", executor=echo("after")),
])
condition = Workflow(name="wf_condition", steps=[
    Step(name="start", executor=echo("start")),
    Condition(name="cond", evaluator='input.contains("urgent")', steps=[Step(name="yes", executor=echo("yes"))],
              else_steps=[Step(name="no", executor=echo("no"))]),
    Step(name="after", executor=echo("after")),
])
overlap = Workflow(name="wf_overlap", steps=[
    Parallel(Step(name="l", executor=slow("l", 2.0)), Step(name="r", executor=slow("r", 2.0)), name="both"),
])
crash = Workflow(name="wf_crash", steps=[
    Step(name="research", executor=echo("research")),
    draft_review_loop(hang_once("review", 2, review)),  # hangs in the loop's second iteration
    Step(name="publish", executor=echo("publish")),
])
crash_step = Workflow(name="wf_crash_step", steps=[
    Step(name="research", executor=echo("research")),
    Step(name="outline", executor=hang_once("outline", 1, echoed("outline"))),  # a plain step hangs at once
    Step(name="publish", executor=echo("publish")),
])
crash_parallel = Workflow(name="wf_crash_parallel", steps=[
    Step(name="research", executor=echo("research")),
    Parallel(Step(name="left", executor=slow("left", 0.5)),
             Step(name="right", executor=hang_once("right", 1, echoed("right"))), name="fan"),  # hangs at once
    Step(name="publish", executor=echo("publish")),
])
def unstorable(step_input: StepInput, run_context: Any) -> str:
    run_context.session_state["handle"] = object()  # no JSON: cannot cross to the next worker
    return "kept a handle"


unstorable_state = Workflow(name="wf_unstorable", steps=[
    Step(name="keep", executor=unstorable, max_retries=0), Step(name="after", executor=echo("after")),
])
empty_parallel = Workflow(name="wf_empty_parallel", steps=[  # agno: the run ends in ERROR
    Step(name="start", executor=echo("start")), Parallel(name="none"), Step(name="after", executor=echo("after")),
])
WORKFLOWS = [sequence, parallel_failing, loop_cel, router, condition, overlap, crash, crash_step, crash_parallel, empty_parallel,
             unstorable_state]

agent_os = AgentOS(workflows=WORKFLOWS)
