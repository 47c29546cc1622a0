"""The schedules pages: the listing (/schedules: filter by status, owner and name, sort
by next fire or name, keyset-paged) and a schedule's page (/schedules/{id}: its next
fires with DST changes marked, a timeline of recent slots, failures, links to the runs),
with the small JSON its script polls while a run is in flight (/schedules/{id}/live).

Times show in the schedule's zone and in the viewer's: the `tz` query value, else UTC
on the server, rewritten by the page's script into the browser's zone (Intl).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from kern_tasks.dashboard import links
from kern_tasks.dashboard.reads import reads_of
from kern_tasks.dashboard.render import page, render
from kern_tasks.dashboard.timeline import slots_of
from kern_tasks.errors import ValidationError
from kern_tasks.os.params import ID_MAX, known_id
from kern_tasks.scheduler import cron as cron_engine
from kern_tasks.scheduler.kinds import Timetable, describe
from kern_tasks.scheduler.listing import NAME_MAX, SORTS, STATUSES, Browse
from kern_tasks.scheduler.models import Schedule

router = APIRouter()

PAGE_SIZE = 50
CURSOR_MAX = 600
OWNER_MAX = 255


def viewer_zone(tz: str | None) -> str | None:
    """The viewer's zone asked for (`tz`), checked; None: none asked (UTC, then the browser's)."""
    if tz is None or tz == "":
        return None
    try:
        cron_engine.validate_timezone(tz)
    except ValidationError as exc:
        raise ValidationError("tz", exc.message) from None
    return tz


def expression(schedule: Schedule) -> str:
    """What the schedule's kind says, as stored: the cron, the interval, the instant."""
    table = Timetable.of(schedule.to_dict())
    if table.kind == "cron":
        return schedule.cron_expr
    if table.kind == "interval":
        return f"every {schedule.interval_seconds} s"
    if table.kind == "run_at":
        return f"run at {schedule.run_at}"
    return "on demand"


def described(schedule: Schedule) -> str:
    try:
        return describe(Timetable.of(schedule.to_dict()))
    except ValidationError:  # a row agno wrote with a cron only croniter reads
        return "(not understood by kern_tasks)"


def next_fire(schedule: Schedule) -> int | None:
    return schedule.next_run_at if schedule.enabled else None


def checked_id(schedule_id: str) -> str:
    """A schedule id the store could hold (os/params.py's rule for the API's paths); else 404."""
    return known_id(schedule_id, "schedule")


def browse_of(status: str | None, owner: str | None, name: str | None, sort: str) -> Browse:
    if owner is not None and len(owner) > OWNER_MAX:
        raise ValidationError("owner", f"at most {OWNER_MAX} characters")
    return Browse(status=status or None, owner=owner if owner not in (None, "*") else None,
                  name=name or None, sort=sort)


def done_message(done: str | None, schedule: Schedule, run_id: str | None) -> str | None:
    """The result line of an action, worded from the stored schedule (never from the URL)."""
    if done == "triggered":
        return f"Triggered: run {run_id} is queued" if run_id else "Triggered: a run is queued"
    if done == "paused":  # the page's paused banner says it, with the reason
        return None if schedule.disabled_reason else "Paused"
    if done == "resumed":
        return "Resumed"
    return None


@router.get("/schedules", response_class=HTMLResponse)
async def schedules_page(
    request: Request,
    status: str | None = Query(None, max_length=20),
    owner: str | None = Query(None, max_length=OWNER_MAX),
    name: str | None = Query(None, max_length=NAME_MAX),
    sort: str = Query("next_fire", max_length=20),
    after: str | None = Query(None, max_length=CURSOR_MAX),
    before: str | None = Query(None, max_length=CURSOR_MAX),
    limit: int = Query(PAGE_SIZE, ge=1, le=200),
    tz: str | None = Query(None, max_length=64),
) -> HTMLResponse:
    zone = viewer_zone(tz)
    given = browse_of(status, owner, name, sort)
    found, last = await reads_of(request).schedules(given, limit=limit, after=after, before=before)
    filters = {"status": given.status, "owner": owner, "name": given.name, "sort": sort,
               "tz": zone, "limit": limit if limit != PAGE_SIZE else None}
    rows = [{"schedule": s, "expression": expression(s), "description": described(s), "next_fire": next_fire(s),
             "last": last.get(s.id)} for s in found.rows]
    return page(request, "schedules.html", "schedules", title="Schedules", rows=rows, filters=filters,
                statuses=STATUSES, sorts=SORTS, viewer_zone=zone,
                next_url=links.schedules(**filters, after=found.next_cursor) if found.next_cursor else None,
                prev_url=links.schedules(**filters, before=found.prev_cursor) if found.prev_cursor else None,
                first_url=links.schedules(**filters) if (after or before) else None)


@router.get("/schedules/{schedule_id}", response_class=HTMLResponse)
async def schedule_page(
    request: Request, schedule_id: str, tz: str | None = Query(None, max_length=64),
    done: str | None = Query(None, max_length=20), run: str | None = Query(None, max_length=ID_MAX),
) -> HTMLResponse:
    zone = viewer_zone(tz)
    detail = await reads_of(request).schedule(checked_id(schedule_id))
    schedule = detail.schedule
    return page(request, "schedule.html", "schedules", title=schedule.name, s=schedule, detail=detail,
                expression=expression(schedule), description=described(schedule), next_fire=next_fire(schedule),
                slots=slots_of(detail.attempts), viewer_zone=zone,
                done=done_message(done, schedule, run if run and re.fullmatch(r"[\w-]+", run) else None),
                run_link=lambda run: _run_links(schedule, run))


@router.get("/schedules/{schedule_id}/live")
async def schedule_live(request: Request, schedule_id: str, tz: str | None = Query(None, max_length=64)) -> JSONResponse:
    """The parts of a schedule's page that change while a run is in flight, rendered, and
    whether one still is (the script polls while it is, backing off, and stops after)."""
    zone = viewer_zone(tz)
    live = await reads_of(request).live(checked_id(schedule_id))
    schedule = live.schedule
    context: dict[str, Any] = {"s": schedule, "attempts": live.attempts, "slots": slots_of(live.attempts),
                               "viewer_zone": zone, "run_link": lambda run: _run_links(schedule, run),
                               "links": links, "next_fire": next_fire(schedule), "in_flight": live.in_flight}
    answer = JSONResponse({
        "in_flight": live.in_flight,
        "status": render("_status.html", **context),
        "timeline": render("_timeline.html", **context),
        "attempts": render("_attempts.html", **context),
    })
    answer.headers["cache-control"] = "no-store"
    return answer


def _run_links(schedule: Schedule, run: Any) -> dict[str, str]:
    return links.of_attempt(schedule.target_type, schedule.target_id, run.run_id, run.session_id)
