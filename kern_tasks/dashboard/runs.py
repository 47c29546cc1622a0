"""The runs pages: recent attempts across all schedules (/runs: the caller's rows, failures
first on demand, paged), and a workflow run's page (/workflows/{workflow_id}/runs/{run_id}:
its step tree with each step's status, attempt, duration and output preview), with the
small JSON its script polls while the run is in flight (.../tree?mark=: unchanged, or the
tree again).

The poll is cheap: the page sends the mark of the tree it shows; one query
(progress_mark) answers `{"changed": false}` while nothing moved, and only a change
reads and renders the tree. static/run_poll.js waits between polls, 1 s growing to 15 s
while nothing changes, again 1 s after a change, and stops once the run ended.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from kern_tasks.dashboard import links
from kern_tasks.dashboard.reads import reads_of
from kern_tasks.dashboard.render import page, render
from kern_tasks.dashboard.schedules import viewer_zone
from kern_tasks.db.tables import SCHEDULE_STATUSES
from kern_tasks.os.params import known_id
from kern_tasks.scheduler.history import FAILURES, WINDOWS, RecentRun, check_window

router = APIRouter()

PAGE_SIZE = 50
MARK_MAX = 64


def run_links(run: RecentRun) -> dict[str, str]:
    """Where an attempt of the list leads: its schedule's page, and links.of_attempt's."""
    return {"schedule": links.schedule(run.schedule_id),
            **links.of_attempt(run.target_type, run.target_id, run.run_id, run.session_id)}


@router.get("/runs", response_class=HTMLResponse)
async def runs_page(
    request: Request,
    failures_first: bool = Query(False),
    status: str | None = Query(None, max_length=20),
    window: str = Query("24h", max_length=8),
    page_number: int = Query(1, alias="page", ge=1, le=10_000),
    limit: int = Query(PAGE_SIZE, ge=1, le=200),
    tz: str | None = Query(None, max_length=64),
) -> HTMLResponse:
    zone = viewer_zone(tz)
    check_window(window)
    found = await reads_of(request).recent_runs(status=status or None, failures_first=failures_first,
                                                window=window, page=page_number, limit=limit)
    filters = {"failures_first": "true" if failures_first else None, "status": status or None, "window": window,
               "limit": limit if limit != PAGE_SIZE else None, "tz": zone}
    return page(request, "runs.html", "runs", title="Runs", found=found, filters=filters, windows=list(WINDOWS),
                failures=FAILURES, viewer_zone=zone, statuses=SCHEDULE_STATUSES,
                links_of=run_links,
                next_url=links.runs(**filters, page=page_number + 1) if found.has_next else None,
                prev_url=links.runs(**filters, page=page_number - 1) if page_number > 1 else None,
                toggle_url=links.runs(**{**filters, "failures_first": None if failures_first else "true"}))


@router.get("/workflows/{workflow_id}/runs/{run_id}", response_class=HTMLResponse)
async def workflow_run_page(request: Request, workflow_id: str, run_id: str,
                            tz: str | None = Query(None, max_length=64)) -> HTMLResponse:
    zone = viewer_zone(tz)
    tree = await reads_of(request).workflow_run(known_id(workflow_id, "workflow"), known_id(run_id, "run"))
    return page(request, "workflow_run.html", "runs", title=f"{workflow_id} run", tree=tree, viewer_zone=zone,
                tree_url=links.workflow_run(workflow_id, run_id) + "/tree",
                session_url=links.session(tree.session_id) if tree.session_id else None,
                trace_url=links.traces_of_run(tree.run_id))


@router.get("/workflows/{workflow_id}/runs/{run_id}/tree")
async def workflow_run_tree(request: Request, workflow_id: str, run_id: str,
                            mark: str | None = Query(None, max_length=MARK_MAX),
                            tz: str | None = Query(None, max_length=64)) -> JSONResponse:
    """What the page's script polls: `{"changed": false}` while the mark is the same, else
    its parts' HTML (the tree, its status), its mark and whether the run ended."""
    zone = viewer_zone(tz)
    reads = reads_of(request)
    workflow_id, run_id = known_id(workflow_id, "workflow"), known_id(run_id, "run")
    if mark is not None and await reads.workflow_run_mark(workflow_id, run_id) == mark:
        return JSONResponse({"changed": False}, headers={"cache-control": "no-store"})
    tree = await reads.workflow_run(workflow_id, run_id)
    html = render("_step_tree.html", tree=tree, viewer_zone=zone)
    status = render("_run_status.html", tree=tree, viewer_zone=zone)
    return JSONResponse({"changed": True, "mark": tree.mark, "ended": tree.ended,
                         "parts": {"step-tree": html, "run-status": status}},  # element id: its HTML (run_poll.js)
                        headers={"cache-control": "no-store"})
