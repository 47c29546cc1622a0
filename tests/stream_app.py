"""The workflows of tests/test_workflow_events.py and tests/test_workflow_cancel.py, built
from our classes (served to `celery worker` processes: KERN_APP=tests.stream_app:agent_os)
and, by the same `build`, from agno's (run in-process for the reference event stream).
No tests here.

Every executor appends "start|end <step> <pid>" to the file named by STREAM_TEST_CALLS (when
set), so a test counts the calls made in every process. `held` waits, once started, until
the file named by STREAM_TEST_RELEASE exists (at most HOLD_S): the step a test cancels.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from kern_tasks.os import AgentOS
import kern_tasks.workflow as ours

CALLS_ENV = "STREAM_TEST_CALLS"
RELEASE_ENV = "STREAM_TEST_RELEASE"
HOLD_S = 60.0
NAMES = ("Workflow", "Step", "Steps", "Parallel", "Loop", "Router", "Condition", "StepOutput")


def note(event: str, name: str) -> None:
    value = os.environ.get(CALLS_ENV)
    if value:
        with open(value, "a") as out:  # one short append per line: whole lines from every process
            out.write(f"{event} {name} {os.getpid()}\n")


def calls(path: Path, name: str, event: str = "start") -> int:
    """How many times executor `name` started (or ended), in every process."""
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.split()[:2] == [event, name])


def executor(name: str, body: Callable[[Any], Any] | None = None) -> Callable[[Any], Any]:
    def run(step_input: Any) -> Any:
        note("start", name)
        try:
            return body(step_input) if body is not None else f"{name}<{step_input.previous_step_content}>"
        finally:
            note("end", name)
    run.__name__ = name
    return run


def failing(name: str) -> Callable[[Any], Any]:
    def body(step_input: Any) -> Any:
        raise RuntimeError(f"{name} broke")
    return executor(name, body)


def held(name: str) -> Callable[[Any], Any]:
    def body(step_input: Any) -> Any:
        release = os.environ.get(RELEASE_ENV)
        deadline = time.monotonic() + HOLD_S
        while release and not Path(release).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return f"{name} done"
    return executor(name, body)


def pick_video(step_input: Any) -> str:
    return "video" if "video" in str(step_input.input) else "image"


def is_urgent(step_input: Any) -> bool:
    return "urgent" in str(step_input.input)


def build(ns: SimpleNamespace) -> dict[str, list[Any]]:
    """Each test workflow's steps, from the classes in `ns` (ours or agno's)."""
    S = ns.Step
    return {
        "sequence": [S(name="a", executor=executor("a")), S(name="b", executor=executor("b")),
                     S(name="c", executor=executor("c"))],
        "parallel": [S(name="start", executor=executor("start")),
                     ns.Parallel(S(name="left", executor=executor("left")),
                                 S(name="right", executor=executor("right")),
                                 S(name="broken", executor=failing("broken"), max_retries=0), name="fan"),
                     S(name="after", executor=executor("after"))],
        "loop": [S(name="research", executor=executor("research")),
                 ns.Loop(name="draft_review", steps=[S(name="draft", executor=executor("draft")),
                                                     S(name="review", executor=executor("review"))],
                         max_iterations=2),
                 S(name="publish", executor=executor("publish"))],
        "condition": [ns.Condition(name="urgent", evaluator=is_urgent, steps=[S(name="fix", executor=executor("fix")),
                                                                          S(name="ship", executor=executor("ship"))],
                                   else_steps=[S(name="later", executor=executor("later"))]),
                      ns.Condition(name="never", evaluator=False, steps=[S(name="no", executor=executor("no"))]),
                      ns.Steps(name="wrap", steps=[S(name="inner", executor=executor("inner"))])],
        "router": [ns.Router(name="route", selector=pick_video,
                             choices=[S(name="image", executor=executor("image")),
                                      S(name="video", executor=executor("video"))]),
                   S(name="after", executor=executor("after"))],
        "failing": [S(name="first", executor=failing("first"), max_retries=1),
                    S(name="skipped", executor=failing("skipped"), max_retries=0, skip_on_failure=True),
                    S(name="then", executor=executor("then"))],
        "failing_loop": [S(name="first", executor=executor("first")),
                         ns.Loop(name="retrying", steps=[S(name="flaky", executor=failing("flaky"), max_retries=0)],
                                 max_iterations=2),
                         S(name="never", executor=executor("never"))],
        "cancel": [S(name="before", executor=executor("before")), S(name="slow", executor=held("slow")),
                   S(name="after_slow", executor=executor("after_slow"))],
        "cancel_parallel": [ns.Parallel(S(name="quick", executor=executor("quick")),
                                        S(name="hold", executor=held("hold")), name="fan"),
                            S(name="after_fan", executor=executor("after_fan"))],
    }


OURS = SimpleNamespace(**{name: getattr(ours, name) for name in NAMES})
WORKFLOWS = {name: ours.Workflow(id=f"stream_{name}", name=f"stream_{name}", steps=steps)
             for name, steps in build(OURS).items()}

agent_os = AgentOS(workflows=list(WORKFLOWS.values()))
