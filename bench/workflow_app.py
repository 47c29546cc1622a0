"""The workflows of benchmark 5 (bench/workflow.py), found by workers through
`KERN_APP=bench.workflow_app:WORKFLOWS`: a sequence of SEQUENCE_STEPS no-op executor Steps
and a Parallel of PARALLEL_BRANCHES no-op Steps. A no-op returns a constant: what is
measured is what kern does around a step (records, replay, messages), not the step.
"""

from __future__ import annotations

from types import SimpleNamespace

from kern_tasks.workflow import Parallel, Step, StepInput, StepOutput, Workflow

SEQUENCE_STEPS = 20
PARALLEL_BRANCHES = 50


def noop(step_input: StepInput) -> StepOutput:
    return StepOutput(content="ok")


sequence = Workflow(id="bench-sequence", name="bench_sequence",
                    steps=[Step(name=f"s{i}", executor=noop) for i in range(SEQUENCE_STEPS)])
parallel = Workflow(id="bench-parallel", name="bench_parallel", steps=[
    Parallel(*[Step(name=f"b{i}", executor=noop) for i in range(PARALLEL_BRANCHES)], name="fan_out"),
])

# What KERN_APP names: anything with `workflows` (kern_tasks.workflow.tasks.workflows_from).
WORKFLOWS = SimpleNamespace(workflows=[sequence, parallel])
