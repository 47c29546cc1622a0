"""The URLs dashboard pages link to, one builder each, so pages agree on them."""

from __future__ import annotations

from urllib.parse import quote, urlencode

BASE = "/dashboard"


def _part(value: str) -> str:
    return quote(value, safe="")


def _with(path: str, **query: str | int | None) -> str:
    """`path` with the query values that are set (None and "" are left out)."""
    kept = {key: value for key, value in query.items() if value not in (None, "")}
    return f"{BASE}{path}" + (f"?{urlencode(kept)}" if kept else "")


def schedules(**query: str | int | None) -> str:
    return _with("/schedules", **query)


def bulk(action: str, **query: str | None) -> str:
    """The confirmation page of a bulk action on the schedules a filter matches."""
    return _with("/schedules/bulk", action=action, **query)


def runs(**query: str | int | None) -> str:
    """The runs page, with its filters (failures_first, status, window, page, limit, tz)."""
    return _with("/runs", **query)


def schedule(schedule_id: str) -> str:
    return f"{BASE}/schedules/{_part(schedule_id)}"


def workflow_run(workflow_id: str, run_id: str) -> str:
    """A workflow run's page (its step tree): the dashboard's, dash-runs' runs pages."""
    return f"{BASE}/workflows/{_part(workflow_id)}/runs/{_part(run_id)}"


def component_run(kind: str, component_id: str, run_id: str) -> str:
    """An agent's or a team's run page (agent_runs.py); `kind` is "agent" or "team"."""
    return f"{BASE}/{kind}s/{_part(component_id)}/runs/{_part(run_id)}"


def session(session_id: str) -> str:
    """A session with its runs (records.py's page)."""
    return f"{BASE}/sessions/{_part(session_id)}"


def traces_of_run(run_id: str) -> str:
    """The trace of one run, its spans as a tree (records.py's page)."""
    return f"{BASE}/traces?{urlencode({'run_id': run_id})}"


def of_attempt(target_type: str | None, target_id: str | None, run_id: str | None,
               session_id: str | None) -> dict[str, str]:
    """Where an attempt leads: the run it started (a workflow's, an agent's or a team's page),
    its session and its trace (only those it has)."""
    found: dict[str, str] = {}
    if run_id:
        target = run_of(target_type, target_id, run_id)
        if target:
            found["run"] = target
        found["trace"] = traces_of_run(run_id)
    if session_id:
        found["session"] = session(session_id)
    return found


def run_of(target_type: str | None, target_id: str | None, run_id: str) -> str | None:
    """The page of the run an attempt started (a workflow's, an agent's, a team's)."""
    if target_id is None:
        return None
    if target_type == "workflow":
        return workflow_run(target_id, run_id)
    if target_type in ("agent", "team"):
        return component_run(target_type, target_id, run_id)
    return None
