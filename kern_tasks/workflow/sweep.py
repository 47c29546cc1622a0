"""Beat's sweep for workflow runs: queue again the step attempts whose worker died (no
heartbeat for LOST_AFTER_S), re-send queued steps whose message may be lost, and re-advance
running runs with nothing open (see tasks.py). A module of its own so that beat, which
holds no workflow definitions, imports only progress.py and dispatch: not tasks.py's
runner, replay and Workflow (pydantic and every definition module, ~12 MiB of beat's RSS).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection, select

from kern_tasks.dispatch import (
    DEFAULT_ROUTE, TASK_WORKFLOW_ADVANCE, TASK_WORKFLOW_STEP, Message, Route, StepLabel,
)
from kern_tasks.workflow import progress

log = logging.getLogger("kern_tasks.workflow")


def step_message(run_id: str, path: str, route: Route = DEFAULT_ROUTE, label: StepLabel | None = None) -> Message:
    return Message(TASK_WORKFLOW_STEP, (run_id, path), route, label)


def advance_message(run_id: str, route: Route = DEFAULT_ROUTE, label: StepLabel | None = None) -> Message:
    return Message(TASK_WORKFLOW_ADVANCE, (run_id,), route, label)


def route_of(request: dict[str, Any] | None) -> Route:
    """The route the run's messages take: the one submit stored in its request (a scheduled
    fire's queue and priority), else the app's default."""
    stored = (request or {}).get("route") or {}
    return Route(queue=stored.get("queue"), priority=stored.get("priority")) if stored else DEFAULT_ROUTE


def _routes(conn: Connection, run_ids: set[str]) -> dict[str, tuple[Route, str]]:
    """The routes and workflow ids of the runs the sweep publishes for (one read of their
    requests). Beat holds no workflow definitions: its re-sends are labelled by the
    workflow's id and the step's path."""
    if not run_ids:
        return {}
    found = conn.execute(select(progress.runs.c.run_id, progress.runs.c.request, progress.runs.c.workflow_id)
                         .where(progress.runs.c.run_id.in_(run_ids)))
    return {run_id: (route_of(request), workflow_id) for run_id, request, workflow_id in found}


def sweep(conn: Connection, *, now: float, limit: int, heartbeats: bool) -> list[Message]:
    """Beat's sweep for workflow runs (see the module docstring); `heartbeats` as the
    sweeper's liveness.Vigil says (after an outage, workers get time to beat again)."""
    lost = progress.expire_lost_steps(conn, now=now, limit=limit) if heartbeats else []
    again = progress.republish_queued(conn, now=now, limit=limit)
    stalled = progress.stalled_runs(conn, now=now, limit=limit)
    if lost:
        log.warning("workflow sweep: %d step attempt(s) lost with their worker, queued again", len(lost))
    routes = _routes(conn, {r for r, _ in lost + again} | set(stalled))

    def message(run_id: str, path: str | None) -> Message:
        route, workflow_id = routes.get(run_id, (DEFAULT_ROUTE, None))
        label = None if workflow_id is None else StepLabel(workflow=workflow_id, path=path)
        return step_message(run_id, path, route, label) if path is not None else advance_message(run_id, route, label)

    return [message(r, p) for r, p in lost + again] + [message(r, None) for r in stalled]
