"""The schedules' actions, each through the core rules the API uses (ScheduleManager:
trigger_run, disable with a reason, enable), for one schedule or a filtered set:

    POST /schedules/{id}/trigger            run it now (an enabled schedule's)
    POST /schedules/{id}/pause   reason     disable it, keeping the reason
    POST /schedules/{id}/resume             enable it (next fire from now)
    GET  /schedules/bulk?action=pause&...   the confirmation: what the filter matches
    POST /schedules/bulk         action, the filter, reason, expected

Each POST carries the CSRF token (csrf.py) and answers 303 back to the page with the
result named in `done` (a word, never text to show: the page words it from the stored
schedule, so a link cannot put words on it); a refusal by the core (ScheduleDisabled, the endpoint policy, a
missing schedule) is the core's message on an HTML page with the API's status, never a
500. The pages ask for a confirmation before posting (a dialog; the bulk one a page of
its own that says how many schedules it will change). A bulk action changes at most
MAX_BULK schedules; it reports each one it could not change with the core's reason.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from kern_tasks.dashboard import links
from kern_tasks.dashboard.csrf import checked_form
from kern_tasks.dashboard.reads import reads_of
from kern_tasks.dashboard.render import page
from kern_tasks.dashboard.schedules import OWNER_MAX, browse_of, checked_id
from kern_tasks.errors import KernError, NotFound, ValidationError
from kern_tasks.os.auth import scoped_user
from kern_tasks.os.errors import answer_of
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.scheduler.listing import NAME_MAX

router = APIRouter()

MAX_BULK = 500
ACTIONS = ("pause", "resume")


def _manager(request: Request) -> ScheduleManager:
    return request.app.state.agent_os.manager


def _reason(given: str | None) -> str | None:
    """The reason as given (the core checks it, as the API's disabled_reason)."""
    return (given or "").strip() or None


def _back(schedule_id: str, done: str, run_id: str | None = None) -> RedirectResponse:
    extra = f"&run={quote(run_id)}" if run_id else ""
    return RedirectResponse(f"{links.schedule(schedule_id)}?done={done}{extra}", status_code=303)


@router.post("/schedules/{schedule_id}/trigger")
async def trigger(request: Request, schedule_id: str) -> RedirectResponse:
    await checked_form(request)
    run = await _manager(request).atrigger_run(checked_id(schedule_id), user_id=scoped_user(request))
    return _back(schedule_id, "triggered", run.id)


@router.post("/schedules/{schedule_id}/pause")
async def pause(request: Request, schedule_id: str) -> RedirectResponse:
    fields = await checked_form(request)
    reason = _reason(fields.get("reason"))
    found = await _manager(request).adisable(checked_id(schedule_id), scoped_user(request), reason=reason)
    if found is None:
        raise_missing(schedule_id)
    return _back(schedule_id, "paused")


@router.post("/schedules/{schedule_id}/resume")
async def resume(request: Request, schedule_id: str) -> RedirectResponse:
    await checked_form(request)
    found = await _manager(request).aenable(checked_id(schedule_id), scoped_user(request))
    if found is None:
        raise_missing(schedule_id)
    return _back(schedule_id, "resumed")


def raise_missing(schedule_id: str) -> None:
    raise NotFound(f"no schedule with id {schedule_id}")


def _action(given: str | None) -> str:
    if given not in ACTIONS:
        raise ValidationError("action", f"must be one of {', '.join(ACTIONS)}, got {given!r}")
    return given


@router.get("/schedules/bulk", response_class=HTMLResponse)
async def bulk_confirm(
    request: Request,
    action: str = Query(..., max_length=20),
    status: str | None = Query(None, max_length=20),
    owner: str | None = Query(None, max_length=OWNER_MAX),
    name: str | None = Query(None, max_length=NAME_MAX),
) -> HTMLResponse:
    chosen = _action(action)
    given = browse_of(status, owner, name, "name")
    matching = await reads_of(request).matching(given, MAX_BULK + 1)
    return page(request, "bulk.html", "schedules", title=f"Bulk {chosen}", action=chosen, matching=matching[:MAX_BULK],
                more=len(matching) > MAX_BULK, most=MAX_BULK, filters={"status": status, "owner": owner, "name": name})


@router.post("/schedules/bulk", response_class=HTMLResponse)
async def bulk(request: Request) -> HTMLResponse:
    fields = await checked_form(request)
    chosen = _action(fields.get("action"))
    reason = _reason(fields.get("reason"))
    given = browse_of(fields.get("status") or None, fields.get("owner") or None, fields.get("name") or None, "name")
    matching = await reads_of(request).matching(given, MAX_BULK)
    manager, owner = _manager(request), scoped_user(request)
    changed, refused = [], []
    for schedule in matching:
        try:
            if chosen == "pause":
                done = await manager.adisable(schedule.id, owner, reason=reason)
            else:
                done = await manager.aenable(schedule.id, owner)
        except KernError as exc:
            refused.append((schedule, answer_of(exc)[1]))
            continue
        if done is None:  # deleted since it was listed
            refused.append((schedule, "gone"))
        else:
            changed.append(schedule)
    return page(request, "bulk_done.html", "schedules", title=f"Bulk {chosen}: done", action=chosen,
                changed=changed, refused=refused, reason=reason)
