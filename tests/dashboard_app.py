"""The AgentOS the dashboard's workflow tests serve (tests/test_dashboard_workflows.py),
configured by its environment (KERN_*) as a deployment's is. No tests here.

- `report`: a step, a Parallel of two, a step that holds until a file named as the run's
  input exists in the folder DASHBOARD_GATES names (up to 60 s: a test watches the run in
  flight, then releases it), then a Condition whose branch publishes;
- `broken`: a step that raises on each of its two attempts (max_retries=1), so its failure
  is recorded with its error;
- `routed`: a Loop of two steps run twice, then a Router that picks its second choice.

`agent_os` is what KERN_APP names, for the web process and the Celery workers alike.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from kern_tasks.os import AgentOS
from kern_tasks.workflow import Condition, Loop, Parallel, Router, Step, StepInput, Workflow

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

GATES_ENV = "DASHBOARD_GATES"
BROKEN_ERROR = "the upstream report service answered 503"


def collect(step_input: StepInput) -> str:
    return f"collected figures for {step_input.get_input_as_string()}"


def left(step_input: StepInput) -> dict[str, object]:
    return {"region": "left", "rows": 12}


def right(step_input: StepInput) -> str:
    return "right half: 30 rows"


def hold(step_input: StepInput) -> str:
    gate = Path(os.environ[GATES_ENV]) / step_input.get_input_as_string()
    deadline = time.monotonic() + 60
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return "held until released"


def publish(step_input: StepInput) -> str:
    return "published the report"


def boom(step_input: StepInput) -> str:
    raise RuntimeError(BROKEN_ERROR)


def draft(step_input: StepInput) -> str:
    return f"draft of {step_input.get_input_as_string()}"


def review(step_input: StepInput) -> str:
    return "reviewed"


def pick_quick(step_input: StepInput) -> str:
    return "quick"


def workflows() -> list[Workflow]:
    return [
        Workflow(id="report", name="report", steps=[
            Step(name="collect", executor=collect),
            Parallel(Step(name="left", executor=left), Step(name="right", executor=right), name="fan_out"),
            Step(name="hold", executor=hold, max_retries=0),
            Condition(name="publish_if_ready", evaluator=True, steps=[Step(name="publish", executor=publish)]),
        ]),
        Workflow(id="broken", name="broken", steps=[Step(name="boom", executor=boom, max_retries=1)]),
        Workflow(id="routed", name="routed", steps=[
            Loop(name="refine", steps=[Step(name="draft", executor=draft), Step(name="review", executor=review)],
                 max_iterations=2),
            Router(name="route", selector=pick_quick, choices=[
                Step(name="thorough", executor=lambda step_input: "thorough answer"),
                Step(name="quick", executor=lambda step_input: "quick answer"),
            ]),
        ]),
    ]


agent_os = AgentOS(workflows=workflows())
app = agent_os.get_app()
