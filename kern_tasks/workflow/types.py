"""The values a workflow passes around: StepInput, StepOutput, RunContext, WorkflowRunOutput.

Field names, defaults and `to_dict()` keys are agno 3.1.10's (`agno.workflow.types`,
`agno.run.workflow.WorkflowRunOutput`), so a run's dict reads the same as agno's. Every
value here is plain data: `to_dict()` gives JSON-able dicts and `from_dict()` rebuilds
the value, which is what lets a step's input and output cross a process boundary (a
Celery message, a database row) unchanged.

Media (`images`, `videos`, `audio`, `files`) are carried as lists of JSON-able dicts;
objects with a `to_dict()` or `model_dump()` are turned into dicts on output.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from pydantic import BaseModel


class StepType(str, Enum):
    """agno's step types; StepOutput.step_type holds the plain value ("Parallel", ...)."""

    STEP = "Step"
    STEPS = "Steps"
    LOOP = "Loop"
    PARALLEL = "Parallel"
    CONDITION = "Condition"
    ROUTER = "Router"
    WORKFLOW = "Workflow"


class RunStatus(str, Enum):
    """agno's run statuses, with agno's values."""

    pending = "PENDING"
    running = "RUNNING"
    completed = "COMPLETED"
    paused = "PAUSED"
    cancelled = "CANCELLED"
    error = "ERROR"


MEDIA_FIELDS = ("images", "videos", "audio", "files")


def _media_dicts(items: list[Any] | None) -> list[Any] | None:
    if items is None:
        return None
    return [_plain_media(item) for item in items]


def _plain_media(item: Any) -> Any:
    if hasattr(item, "to_dict"):
        return item.to_dict()
    if isinstance(item, BaseModel):
        return item.model_dump(mode="json", exclude_none=True)
    return item


def content_as_data(content: Any) -> Any:
    """agno's rule for a content in a dict: models dumped, dicts and lists kept, else str."""
    if content is None:
        return None
    if isinstance(content, BaseModel):
        return content.model_dump(exclude_none=True, mode="json")
    if isinstance(content, (dict, list)):
        return content
    return str(content)


def input_as_string(value: Any) -> str | None:
    """agno's `get_input_as_string`: str as is, models and containers as indented JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json(indent=2, exclude_none=True)
    if isinstance(value, (dict, list)):
        return json.dumps(value, indent=2, default=str, ensure_ascii=False)
    return str(value)


@dataclass
class StepOutput:
    """What a step (or container) produced. `steps` holds a container's inner outputs."""

    step_name: str | None = None
    step_id: str | None = None
    step_type: str | None = None
    executor_type: str | None = None
    executor_name: str | None = None
    content: Any = None
    step_run_id: str | None = None
    images: list[Any] | None = None
    videos: list[Any] | None = None
    audio: list[Any] | None = None
    files: list[Any] | None = None
    metrics: dict[str, Any] | None = None
    success: bool = True
    error: str | None = None
    stop: bool = False
    is_paused: bool = False
    steps: list[StepOutput] | None = None

    def to_dict(self) -> dict[str, Any]:
        """agno's StepOutput.to_dict(): every field, `steps` only when non-empty."""
        result: dict[str, Any] = {
            "content": content_as_data(self.content),
            "step_name": self.step_name,
            "step_id": self.step_id,
            "step_type": self.step_type,
            "executor_type": self.executor_type,
            "executor_name": self.executor_name,
            "step_run_id": self.step_run_id,
            **{name: _media_dicts(getattr(self, name)) or None for name in MEDIA_FIELDS},
            "metrics": self.metrics,
            "success": self.success,
            "error": self.error,
            "stop": self.stop,
            "is_paused": self.is_paused,
        }
        if self.steps:
            result["steps"] = [step.to_dict() for step in self.steps]
        return result

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepOutput:
        steps = data.get("steps")
        return cls(
            step_name=data.get("step_name"),
            step_id=data.get("step_id"),
            step_type=data.get("step_type"),
            executor_type=data.get("executor_type"),
            executor_name=data.get("executor_name"),
            content=data.get("content"),
            step_run_id=data.get("step_run_id"),
            **{name: data.get(name) for name in MEDIA_FIELDS},
            metrics=data.get("metrics"),
            success=data.get("success", True),
            error=data.get("error"),
            stop=data.get("stop", False),
            is_paused=data.get("is_paused", False),
            steps=[cls.from_dict(step) for step in steps] if steps else None,
        )


def deepest_content(output: StepOutput) -> Any:
    """The content of the last leaf under `output` (a container's last inner step, recursively)."""
    while output.steps:
        output = output.steps[-1]
    return output.content


def message_content(output: StepOutput) -> Any:
    """What an agent step after `output` receives (agno's `_get_deepest_content_from_step_output`):
    like `deepest_content`, except that a Parallel gives all its branches, one section each."""
    if not output.steps:
        return output.content
    if output.step_type == StepType.PARALLEL.value:
        parts = []
        for i, inner in enumerate(output.steps):
            content = message_content(inner)
            if content is not None and str(content).strip():
                parts.append(f"=== {inner.step_name or f'Step {i + 1}'} ===\n{content}")
        return "\n\n".join(parts) if parts else output.content
    return message_content(output.steps[-1])


@dataclass
class StepInput:
    """What a step receives: the run's input, what earlier steps produced, extra data."""

    input: Any = None
    previous_step_content: Any = None
    previous_step_outputs: dict[str, StepOutput] | None = None
    additional_data: dict[str, Any] | None = None
    images: list[Any] | None = None
    videos: list[Any] | None = None
    audio: list[Any] | None = None
    files: list[Any] | None = None

    def get_input_as_string(self) -> str | None:
        return input_as_string(self.input)

    def get_step_output(self, step_name: str) -> StepOutput | None:
        """The output of the earlier step named `step_name`, searched inside containers too."""
        if not self.previous_step_outputs:
            return None
        direct = self.previous_step_outputs.get(step_name)
        if direct:
            return direct
        for output in self.previous_step_outputs.values():
            found = _find_nested(output, step_name)
            if found:
                return found
        return None

    def get_step_content(self, step_name: str) -> Any:
        """agno's rule: a Parallel gives {branch name: content}; another container its deepest
        content; a step its content; None when there is no such step."""
        output = self.get_step_output(step_name)
        if not output:
            return None
        if output.step_type == StepType.PARALLEL.value and output.steps:
            by_name: dict[str, str] = {}
            for sub in output.steps:
                if not (sub.step_name and sub.content is not None and str(sub.content).strip()):
                    continue
                if sub.steps:
                    for nested in sub.steps:
                        if nested.step_name and nested.content is not None and str(nested.content).strip():
                            by_name[nested.step_name] = str(nested.content)
                else:
                    by_name[sub.step_name] = str(sub.content)
            return by_name if by_name else str(output.content)
        if output.steps:
            return deepest_content(output.steps[-1])
        return output.content

    def get_all_previous_content(self) -> str:
        if not self.previous_step_outputs:
            return ""
        return "\n\n".join(
            f"=== {name} ===\n{output.content}"
            for name, output in self.previous_step_outputs.items()
            if output.content is not None and str(output.content).strip()
        )

    def get_last_step_content(self) -> Any:
        """The deepest content of the most recently recorded earlier step."""
        if not self.previous_step_outputs:
            return None
        return deepest_content(list(self.previous_step_outputs.values())[-1])

    def to_dict(self) -> dict[str, Any]:
        previous = self.previous_step_content
        if isinstance(previous, BaseModel):
            previous = previous.model_dump_json(indent=2, exclude_none=True)
        elif isinstance(previous, dict):
            previous = json.dumps(previous, indent=2, default=str, ensure_ascii=False)
        elif previous:
            previous = str(previous)
        else:
            previous = None
        return {
            "input": content_as_data(self.input),
            "previous_step_outputs": {k: v.to_dict() for k, v in (self.previous_step_outputs or {}).items()},
            "previous_step_content": previous,
            "additional_data": self.additional_data,
            **{name: _media_dicts(getattr(self, name)) or None for name in MEDIA_FIELDS},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepInput:
        outputs = data.get("previous_step_outputs")
        return cls(
            input=data.get("input"),
            previous_step_content=data.get("previous_step_content"),
            previous_step_outputs={k: StepOutput.from_dict(v) for k, v in outputs.items()} if outputs else None,
            additional_data=data.get("additional_data"),
            **{name: data.get(name) for name in MEDIA_FIELDS},
        )


def _find_nested(output: StepOutput, step_name: str) -> StepOutput | None:
    for nested in output.steps or []:
        if nested.step_name == step_name:
            return nested
        found = _find_nested(nested, step_name)
        if found:
            return found
    return None


def chain_input(current: StepInput, output: StepOutput, scope_outputs: dict[str, StepOutput]) -> StepInput:
    """The input of the next step inside a container (agno's `_update_step_input_from_outputs`):
    the previous content is `output`'s, the earlier outputs are the enclosing ones updated by
    this container's so far, and `output`'s media join the current media."""
    outputs: dict[str, StepOutput] = {}
    outputs.update(current.previous_step_outputs or {})
    outputs.update(scope_outputs)
    media = {name: (getattr(current, name) or []) + (getattr(output, name) or []) for name in MEDIA_FIELDS}
    return StepInput(
        input=current.input,
        previous_step_content=output.content,
        previous_step_outputs=outputs,
        additional_data=current.additional_data,
        **media,
    )


@dataclass
class RunContext:
    """What an executor that takes a `run_context` parameter is given (agno's RunContext).
    `session_state` is the run's one shared dict: changes made by a step are seen by the next."""

    run_id: str
    session_id: str
    user_id: str | None = None
    workflow_id: str | None = None
    workflow_name: str | None = None
    session_state: dict[str, Any] | None = None
    dependencies: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


@dataclass
class WorkflowRunOutput:
    """The result of `Workflow.run`, shaped like agno's (same fields, same `to_dict()` keys)."""

    input: Any = None
    content: Any = None
    content_type: str = "str"
    workflow_id: str | None = None
    workflow_name: str | None = None
    run_id: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    parent_run_id: str | None = None
    workflow_step_id: str | None = None
    images: list[Any] | None = None
    videos: list[Any] | None = None
    audio: list[Any] | None = None
    files: list[Any] | None = None
    step_results: list[StepOutput] = field(default_factory=list)
    # The runs of agent and nested-workflow executors, as dicts, each with parent_run_id.
    step_executor_runs: list[dict[str, Any]] | None = None
    metrics: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    created_at: int = field(default_factory=lambda: int(time.time()))
    status: RunStatus = RunStatus.pending

    @property
    def is_paused(self) -> bool:
        return self.status == RunStatus.paused

    @property
    def is_cancelled(self) -> bool:
        return self.status == RunStatus.cancelled

    def to_dict(self) -> dict[str, Any]:
        """agno's WorkflowRunOutput.to_dict(): fields that are not None, status as its value,
        step results nested, media as dicts."""
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or f.name in ("step_results", "step_executor_runs", *MEDIA_FIELDS):
                continue
            data[f.name] = value
        data["status"] = self.status.value if isinstance(self.status, RunStatus) else self.status
        for name in MEDIA_FIELDS:
            if getattr(self, name) is not None:
                data[name] = _media_dicts(getattr(self, name))
        if self.step_results:
            data["step_results"] = [step.to_dict() for step in self.step_results]
        if self.step_executor_runs:
            data["step_executor_runs"] = list(self.step_executor_runs)
        if self.input is not None:
            data["input"] = self.input.model_dump(exclude_none=True) if isinstance(self.input, BaseModel) else self.input
        if isinstance(self.content, BaseModel):
            data["content"] = self.content.model_dump(exclude_none=True, mode="json")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkflowRunOutput:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["step_results"] = [StepOutput.from_dict(s) for s in data.get("step_results") or []]
        values["status"] = RunStatus(data.get("status", RunStatus.pending.value))
        return cls(**values)
