"""A workflow run's step tree, for people to read (the dashboard's workflow run page): each
step with its status, attempt, duration and a preview of its output, nested as the
workflow nests them. Read only.

    tree = run_tree(db, run_id, workflow_id="wf", user_id=None, workflow=workflow)  # None: no such run
    tree.nodes        # top-level StepNodes, each with .children
    tree.mark         # changes whenever the run's progress does (a poll's cheap check)
    tree.ended        # the run is COMPLETED, ERROR or CANCELLED

Two sources, the richer first:
- the run's progress (workflow/progress.py: kern_workflow_runs, kern_workflow_steps), for
  runs on workers, in flight or ended: every attempt, its times and worker, the decisions
  of Loops, Conditions and Routers. Paths ("2/b1/0") become the tree (a Parallel's
  "b<i>" level is its branch i, not a node of its own); names and kinds come from the
  workflow's definition when it is given (the path walked through it, with the recorded
  decisions), else from the recorded outputs (step_name, step_type);
- agno's record (agno_runs.run_data, the run's to_dict()), for a run with no progress rows
  (run in process with a db, or by agno itself): the step_results tree as recorded, with
  what it holds (no attempts; durations from the metrics when they are there).

`user_id` scopes the read to that owner's run (None: any owner's); another's run is not
found, like a missing one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from kern_tasks.db import Database, db_time
from kern_tasks.db.run_tables import runs as agno_runs
from kern_tasks.workflow import progress
from kern_tasks.workflow.containers import Condition, Loop, Parallel, Router, Steps
from kern_tasks.workflow.step import Node
from kern_tasks.workflow.workflow import Workflow

PREVIEW_CHARS = 240
ENDED = (progress.COMPLETED, progress.ERROR, progress.CANCELLED)
# The status a node shows: an attempt's own (progress.py's), a container's from its
# children, "waiting" for a top-level node not reached yet (or "not run" once the run ended).
OPEN = ("queued", "running")


@dataclass
class StepNode:
    """One step or container of the run."""

    path: str
    name: str
    kind: str  # agno's step_type: Step, Steps, Parallel, Loop, Condition, Router
    status: str
    attempt: int | None = None  # the last attempt's number (steps on workers)
    started_at: float | None = None
    ended_at: float | None = None
    duration_s: float | None = None
    preview: str | None = None
    error: str | None = None
    note: str | None = None  # a container's decision: the branch, the route, the iterations
    children: list["StepNode"] = field(default_factory=list)


@dataclass
class RunTree:
    """A run, its status and its step tree; `source` says where the tree was read from."""

    run_id: str
    workflow_id: str
    session_id: str | None
    user_id: str | None
    status: str
    created_at: float | None
    updated_at: float | None
    source: str  # "progress" or "agno_runs"
    nodes: list[StepNode]
    mark: str
    content: str | None = None  # the run's result content (a preview), once it ended
    read_at: float | None = None  # the database's clock when it was read

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def elapsed_s(self) -> float | None:
        """How long it took (ended) or has been running (at `read_at`)."""
        until = self.updated_at if self.ended else self.read_at
        if self.created_at is None or until is None:
            return None
        return max(0.0, until - self.created_at)


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str | None:
    """A short one-line text of a step's content (JSON for data)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mark_of(found: tuple[Any, ...]) -> str:
    """progress.progress_mark's value as a short token (what a poll sends back)."""
    return hashlib.sha1(repr(found).encode()).hexdigest()[:16]


def run_mark(db: Database, run_id: str, *, workflow_id: str, user_id: str | None) -> str | None:
    """The run's progress mark (two primary-key reads); None when there is no such run on
    workers of `workflow_id` (of `user_id`, when given)."""
    with db.connect() as conn:
        row = progress.get_run(conn, run_id)
        if row is None or not _theirs(row, workflow_id, user_id):
            return None
        found = progress.progress_mark(conn, run_id)
    return mark_of(found) if found else None


def _theirs(row: Any, workflow_id: str, user_id: str | None) -> bool:
    """The progress row is a run of `workflow_id` (of `user_id`, when given): the scope of
    both reads, so a poll's mark and the page's tree never disagree on who may see it."""
    return bool(row["workflow_id"] == workflow_id and (user_id is None or row["user_id"] == user_id))


def run_tree(db: Database, run_id: str, *, workflow_id: str, user_id: str | None,
             workflow: Workflow | None = None) -> RunTree | None:
    """The run's tree (see the module docstring); None when there is no such run of
    `workflow_id` (of `user_id`, when given)."""
    with db.connect() as conn:
        mark = progress.progress_mark(conn, run_id)
        row = progress.get_run(conn, run_id)
        if row is not None and _theirs(row, workflow_id, user_id):
            found = progress.load_progress(conn, run_id)
            rows = progress.attempts(conn, run_id)
            now = db_time(conn)
            return _from_progress(row, found.decisions, rows, workflow, mark_of(mark), now)
        if row is not None:
            return None  # another workflow's or owner's run: not found, as a missing one
        query = select(agno_runs).where(agno_runs.c.run_id == run_id, agno_runs.c.workflow_id == workflow_id)
        if user_id is not None:
            query = query.where(agno_runs.c.user_id == user_id)
        recorded = conn.execute(query).mappings().first()
    return None if recorded is None else _from_record(dict(recorded))


# --- from the progress -----------------------------------------------------------------------


def _parent(path: str) -> str | None:
    parts = path.split("/")[:-1]
    if parts and parts[-1].startswith("b"):
        parts = parts[:-1]  # a Parallel's branch level belongs to the Parallel
    return "/".join(parts) or None


def _definition(workflow: Workflow | None, path: str, decisions: dict[str, Any]) -> tuple[Node | None, str | None]:
    """The node of the definition at `path` and a note on where it sits (a Loop's
    iteration), following the recorded decisions; (None, None) when the path does not
    lead anywhere in it (a definition changed since the run)."""
    if workflow is None:
        return None, None
    parts = path.split("/")
    nodes: list[Any] = list(workflow.steps)
    node: Any = None
    note = None
    done = ""
    index = 0
    try:
        while index < len(parts):
            part = parts[index]
            if part.startswith("b"):  # Parallel branch i: its node is the next part ("0")
                node = node.steps[int(part[1:])]
                index += 2
            else:
                position = int(part)
                if node is None:
                    node = nodes[position]
                elif isinstance(node, Loop):
                    note = f"iteration {position // len(node.steps) + 1}"
                    node = node.steps[position % len(node.steps)]
                elif isinstance(node, Condition):
                    branch = decisions.get(done + "?choose")
                    node = (node.steps if branch == "if" else node.else_steps or [])[position]
                elif isinstance(node, Router):
                    node = node.steps[list(decisions.get(done + "?select") or [])[position]]
                elif isinstance(node, Steps):
                    node = node.steps[position]
                else:
                    return None, None
                index += 1
            done = "/".join(parts[:index])
    except (IndexError, TypeError, ValueError, AttributeError):
        return None, None
    return node, note


def _kind(node: Any) -> str:
    return str(getattr(node, "step_type", None) or type(node).__name__)


def _decision_note(node: Any, path: str, decisions: dict[str, Any]) -> str | None:
    if isinstance(node, Condition) and path + "?choose" in decisions:
        return f"branch: {decisions[path + '?choose'] or 'none'}"
    if isinstance(node, Router) and path + "?select" in decisions:
        names = [str(node.steps[i].name) for i in decisions[path + "?select"] or [] if i < len(node.steps)]
        return "route: " + (", ".join(names) or "none")
    if isinstance(node, Loop):
        ends = sorted(k for k in decisions if k.startswith(path + "?end"))
        return f"{len(ends)} iteration{'s' if len(ends) != 1 else ''} decided" if ends else None
    if isinstance(node, Parallel):
        return f"{len(node.steps)} branches"
    return None


def _from_progress(row: Any, decisions: dict[str, Any], rows: list[Any], workflow: Workflow | None, mark: str,
                   now: float) -> RunTree:
    last: dict[str, Any] = {}
    for attempt in rows:  # in path, attempt order: the last one wins
        last[attempt["path"]] = attempt
    nodes: dict[str, StepNode] = {}

    def node_at(path: str) -> StepNode:
        if path in nodes:
            return nodes[path]
        defined, where = _definition(workflow, path, decisions)
        attempt = last.get(path)
        output = (attempt["output"] if attempt is not None else None) or {}
        name = getattr(defined, "name", None) or output.get("step_name") or f"step {path}"
        kind = _kind(defined) if defined is not None else output.get("step_type") or ("Step" if attempt else "Container")
        made = StepNode(path=path, name=str(name), kind=kind, status="running", note=where)
        if attempt is not None:
            made.status = attempt["status"]
            made.attempt = int(attempt["attempt"])
            made.started_at, made.ended_at = attempt["started_at"], attempt["ended_at"]
            if made.started_at is not None:
                made.duration_s = max(0.0, (made.ended_at or now) - made.started_at)
            made.preview = preview(output.get("content")) if attempt["output"] else None
            made.error = attempt["error"] or output.get("error")
        else:
            made.note = _decision_note(defined, path, decisions) or where
        nodes[path] = made
        parent = _parent(path)
        if parent is not None:
            node_at(parent).children.append(made)
        return made

    for path in last:
        node_at(path)
    for key in decisions:  # a container decided with nothing run under it yet
        node_at(key.split("?", 1)[0])
    roots = [node for path, node in nodes.items() if _parent(path) is None]
    if workflow is not None:
        reached = {node.path for node in roots}
        for position, defined in enumerate(workflow.steps):
            if str(position) not in reached:
                roots.append(StepNode(path=str(position), name=str(defined.name), kind=_kind(defined),
                                      status="not run" if row["status"] in ENDED else "waiting"))
    for node in nodes.values():
        node.children.sort(key=lambda child: _order(child.path))
        if node.attempt is None:
            _summarise(node)
    roots.sort(key=lambda node: _order(node.path))
    result = row["result"] or {}
    return RunTree(run_id=row["run_id"], workflow_id=row["workflow_id"], session_id=row["session_id"],
                   user_id=row["user_id"], status=row["status"], created_at=row["created_at"],
                   updated_at=row["updated_at"], source="progress", nodes=roots, mark=mark,
                   content=preview(result.get("content")) if row["status"] in ENDED else None, read_at=now)


def _order(path: str) -> list[tuple[int, int]]:
    return [(0, int(part)) if part.isdigit() else (1, int(part[1:]) if part[1:].isdigit() else 0)
            for part in path.split("/")]


def _summarise(node: StepNode) -> None:
    """A container's status and times from its children (deepest first: they are summed
    in order of the paths, and a child container is summarised when it is reached)."""
    for child in node.children:
        if child.attempt is None and child.children:
            _summarise(child)
    statuses = [child.status for child in node.children]
    if not statuses:
        node.status = "running"
    elif any(status in OPEN for status in statuses):
        node.status = "running"
    elif any(status in ("failed", "lost") for status in statuses):
        node.status = "failed"
    elif all(status == "cancelled" for status in statuses):
        node.status = "cancelled"
    else:
        node.status = "succeeded"
    starts = [child.started_at for child in node.children if child.started_at is not None]
    ends = [child.ended_at for child in node.children if child.ended_at is not None]
    node.started_at = min(starts) if starts else None
    node.ended_at = max(ends) if ends and node.status != "running" else None
    if node.started_at is not None and node.ended_at is not None:
        node.duration_s = max(0.0, node.ended_at - node.started_at)


# --- from agno's record ------------------------------------------------------------------------


def _recorded(output: dict[str, Any], path: str) -> StepNode:
    metrics = output.get("metrics") or {}
    duration = metrics.get("duration") if isinstance(metrics, dict) else None
    node = StepNode(path=path, name=str(output.get("step_name") or f"step {path}"),
                    kind=str(output.get("step_type") or "Step"),
                    status="succeeded" if output.get("success", True) else "failed",
                    duration_s=float(duration) if isinstance(duration, (int, float)) else None,
                    preview=preview(output.get("content")), error=output.get("error"))
    node.children = [_recorded(inner, f"{path}/{i}") for i, inner in enumerate(output.get("steps") or [])]
    return node


def _from_record(row: dict[str, Any]) -> RunTree:
    data = row["run_data"] or {}
    nodes = [_recorded(output, str(i)) for i, output in enumerate(data.get("step_results") or [])]
    status = str(row["status"] or data.get("status") or "")
    return RunTree(run_id=row["run_id"], workflow_id=row["workflow_id"], session_id=row["session_id"],
                   user_id=row["user_id"], status=status, created_at=row["created_at"],
                   updated_at=row.get("updated_at"), source="agno_runs", nodes=nodes,
                   mark=mark_of((status, row.get("updated_at"))), content=preview(data.get("content")))
