"""The AgentOS tests/test_workflow_schedule.py serves, configured by its environment (KERN_*)
as a deployment's is. No tests here.

- `app` (uvicorn) / `agent_os` (KERN_APP of the Celery workers): the demo's content
  pipeline (kern_tasks.demo) and `fact_check`, a workflow whose run ends in ERROR (a step
  failing inside a Loop: agno's rule).
  `held`: its first step waits (up to 30 s) for the file WORKFLOW_SCHEDULE_GATE names, so
  a test can cancel the run while that step runs.
- `embedded_app`: the same workflows with scheduler=True, for the embedded default (no
  KERN_BROKER_URL: beat and a Celery worker run in the web process).

Each AgentOS gets workflow objects of its own.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from kern_tasks.demo import content_pipeline
from kern_tasks.os import AgentOS
from kern_tasks.workflow import Loop, Step, StepInput, Workflow

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

FACT_CHECK_ERROR = "the fact checker is down"
GATE_ENV = "WORKFLOW_SCHEDULE_GATE"


def gather(step_input: StepInput) -> str:
    return f"claims in {step_input.get_input_as_string()}"


def check(step_input: StepInput) -> str:
    raise RuntimeError(FACT_CHECK_ERROR)


def fact_check() -> Workflow:
    return Workflow(name="fact_check", steps=[
        Step(name="gather", executor=gather),
        Loop(name="verify", steps=[Step(name="check", executor=check, max_retries=0)], max_iterations=2),
    ])


def wait_for_gate(step_input: StepInput) -> str:
    gate = Path(os.environ[GATE_ENV])
    deadline = time.monotonic() + 30
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return "released"


def held() -> Workflow:
    return Workflow(name="held", steps=[Step(name="wait", executor=wait_for_gate, max_retries=0),
                                        Step(name="after", executor=lambda step_input: "after")])


def workflows() -> list[Workflow]:
    return [content_pipeline(), fact_check(), held()]


agent_os = AgentOS(workflows=workflows())
app = agent_os.get_app()

embedded_os = AgentOS(workflows=workflows(), scheduler=True, scheduler_poll_interval=1)
embedded_app = embedded_os.get_app()
