"""Workflows: agno 3.1.10's Workflow, Step, Steps, Parallel, Loop, Router and Condition.

    from kern_tasks.workflow import Workflow, Step, Parallel, Loop, Router, Condition

Modules, one idea each: `types` (StepInput, StepOutput, RunContext, WorkflowRunOutput),
`cel` (CEL expressions, compiled and checked when a workflow is defined), `step` (Step
and one attempt at it), `containers` (what Steps, Parallel, Loop, Condition and Router
decide), `runner` (driving a run in this process), `record` (keeping a run, its session
and a span per step attempt where agno keeps them), `workflow` (Workflow, run/arun).

On Celery workers: `submit` (record a run and hand it to the workers; `wait` for its end),
`tasks` (kern.workflow.advance / kern.workflow.step, and beat's sweep), `replay` (the
runner's rules driven from recorded outcomes), `progress` (the SQL of a run's progress,
migration 0005), `media` (step media beyond a size bound stored by reference, migration 0006).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kern_tasks.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from kern_tasks.workflow.cel import CelError
    from kern_tasks.workflow.containers import Condition, Loop, Parallel, Router, Steps
    from kern_tasks.workflow.step import Step
    from kern_tasks.workflow.types import RunContext, RunStatus, StepInput, StepOutput, StepType, WorkflowRunOutput
    from kern_tasks.workflow.workflow import Workflow

# The names above are loaded on first use (PEP 562), not with the package: beat imports
# kern_tasks.workflow.sweep and progress, and importing the package must not bring every
# definition module and pydantic with them (~12 MiB of beat's RSS; tests/test_beat_imports.py).
_EXPORTS = {
    "CelError": "kern_tasks.workflow.cel",
    **dict.fromkeys(["Condition", "Loop", "Parallel", "Router", "Steps"], "kern_tasks.workflow.containers"),
    "Step": "kern_tasks.workflow.step",
    **dict.fromkeys(["RunContext", "RunStatus", "StepInput", "StepOutput", "StepType", "WorkflowRunOutput"],
                    "kern_tasks.workflow.types"),
    "Workflow": "kern_tasks.workflow.workflow",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "CelError",
    "Condition",
    "Loop",
    "Parallel",
    "Router",
    "RunContext",
    "RunStatus",
    "Step",
    "StepInput",
    "StepOutput",
    "StepType",
    "Steps",
    "Workflow",
    "WorkflowRunOutput",
]
