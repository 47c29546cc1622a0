"""The schedules API, in agno's shapes: /schedules list/create, /schedules/{id}
get/patch/delete, /enable, /disable, /trigger, /runs, and ours: /backfill.

Every store operation and every rule is ScheduleManager's (its async twins): the manager
holds this AgentOS's endpoint policy, so "an endpoint must be a route this OS serves" and
"a trigger needs an enabled schedule" are checked there, for every way in. This module
adds only what HTTP needs: ids that cannot exist answer 404 without a query, and a
missing schedule answers 404 (the agno-style methods answer None). The bodies are the
spec's (os/schemas.py), so each field's rules, null included, are checked as the
manager checks them.

Owners (os/auth.py): a user's token reaches only that user's schedules (the manager's
`user_id` scoping: another owner's schedule is a 404, as a missing one), and what it
creates is that user's; the security key reaches every schedule and creates unowned ones.
A user may point a schedule only at what their token may run (`check_may_schedule`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response

from kern_tasks.errors import Conflict, NotFound
from kern_tasks.os.auth import check_may_schedule, creating_user, scoped_user
from kern_tasks.os.errors import error_responses
from kern_tasks.os.schemas import (
    BackfillRequest,
    BackfillResponse,
    PaginatedResponse,
    ScheduleCreate,
    ScheduleResponse,
    ScheduleRunResponse,
    ScheduleStateResponse,
    ScheduleUpdate,
)
from kern_tasks.runs.safe import has_unstorable_text
from kern_tasks.scheduler import Schedule, ScheduleManager
from kern_tasks.scheduler.manager import MAX_PAGE_LIMIT

ID_MAX = 255
PAGE_MAX = 10**9
ERRORS = error_responses(401, 403, 404, 409, 413, 422, 503)

router = APIRouter(tags=["Schedules"], responses=ERRORS)


def _manager(request: Request) -> ScheduleManager:
    return request.app.state.agent_os.manager


def _checked_id(value: str, what: str = "schedule") -> str:
    """An id that can exist; any other answers 404 without asking the database."""
    if len(value) > ID_MAX or has_unstorable_text(value):
        raise NotFound(f"no {what} with id {value[:80]!r}")
    return value


def _found(schedule: Schedule | None, schedule_id: str) -> Schedule:
    if schedule is None:
        raise NotFound(f"no schedule with id {schedule_id}")
    return schedule


def _schedule(schedule: Any) -> dict[str, Any]:
    return ScheduleResponse.model_validate(schedule.to_dict()).model_dump()


@router.get("/schedules", response_model=PaginatedResponse[ScheduleResponse])
async def list_schedules(
    request: Request,
    enabled: bool | None = Query(None),
    limit: int = Query(100, ge=1, le=MAX_PAGE_LIMIT),
    page: int = Query(1, ge=1, le=PAGE_MAX),
) -> dict[str, Any]:
    found = await _manager(request).alist_page(enabled=enabled, limit=limit, page=page, user_id=scoped_user(request))
    return PaginatedResponse.of(found, ScheduleResponse)


@router.post("/schedules", response_model=ScheduleResponse, status_code=201)
async def create_schedule(body: ScheduleCreate, request: Request) -> dict[str, Any]:
    values = body.model_dump()
    check_may_schedule(request, values["method"], values["endpoint"])
    try:
        created = await _manager(request).acreate(
            name=values.pop("name"), cron=values.pop("cron_expr"), user_id=creating_user(request), **values
        )
    except Conflict as exc:  # the manager's message speaks of if_exists, which HTTP has not
        raise Conflict(f"a schedule named {body.name!r} already exists") from exc
    return _schedule(created)


@router.get("/schedules/{schedule_id}", response_model=ScheduleResponse)
async def get_schedule(schedule_id: str, request: Request) -> dict[str, Any]:
    return _schedule(_found(await _manager(request).aget(_checked_id(schedule_id), scoped_user(request)), schedule_id))


@router.patch("/schedules/{schedule_id}", response_model=ScheduleResponse)
async def update_schedule(schedule_id: str, body: ScheduleUpdate, request: Request) -> dict[str, Any]:
    # ScheduleUpdate admits null only where the spec does; the manager refuses unstorable text.
    updates = body.model_dump(exclude_unset=True)
    manager, owner = _manager(request), scoped_user(request)
    if {"method", "endpoint"} & updates.keys():
        current = _found(await manager.aget(_checked_id(schedule_id), owner), schedule_id)
        method, endpoint = updates.get("method") or current.method, updates.get("endpoint") or current.endpoint
        check_may_schedule(request, method, endpoint)
    updated = await manager.aupdate(_checked_id(schedule_id), owner, **updates)
    return _schedule(_found(updated, schedule_id))


@router.delete("/schedules/{schedule_id}", status_code=204, response_class=Response)
async def delete_schedule(schedule_id: str, request: Request) -> Response:
    if not await _manager(request).adelete(_checked_id(schedule_id), scoped_user(request)):
        raise NotFound(f"no schedule with id {schedule_id}")
    return Response(status_code=204)


@router.post("/schedules/{schedule_id}/enable", response_model=ScheduleStateResponse)
async def enable_schedule(schedule_id: str, request: Request) -> dict[str, Any]:
    enabled = _found(await _manager(request).aenable(_checked_id(schedule_id), scoped_user(request)), schedule_id)
    return ScheduleStateResponse.model_validate(enabled.to_dict()).model_dump()


@router.post("/schedules/{schedule_id}/disable", response_model=ScheduleStateResponse)
async def disable_schedule(schedule_id: str, request: Request) -> dict[str, Any]:
    disabled = _found(await _manager(request).adisable(_checked_id(schedule_id), scoped_user(request)), schedule_id)
    return ScheduleStateResponse.model_validate(disabled.to_dict()).model_dump()


@router.post("/schedules/{schedule_id}/trigger", response_model=ScheduleRunResponse, status_code=202)
async def trigger_schedule(schedule_id: str, request: Request) -> dict[str, Any]:
    """Queue one run now (beat publishes it on its next tick); the cron does not move."""
    run = await _manager(request).atrigger_run(_checked_id(schedule_id), user_id=scoped_user(request))
    return ScheduleRunResponse.model_validate(run.to_dict()).model_dump()


@router.post("/schedules/{schedule_id}/backfill", response_model=BackfillResponse, status_code=202)
async def backfill_schedule(schedule_id: str, body: BackfillRequest, request: Request) -> dict[str, Any]:
    """Queue every slot in [start, end) that has no run yet, marked backfill, under the
    schedule's overlap policy (beat publishes them); the same backfill again adds none."""
    done = await _manager(request).abackfill(_checked_id(schedule_id), body.start, body.end,
                                             user_id=scoped_user(request))
    return BackfillResponse.model_validate(done.to_dict()).model_dump()


@router.get("/schedules/{schedule_id}/runs", response_model=PaginatedResponse[ScheduleRunResponse])
async def list_schedule_runs(
    schedule_id: str,
    request: Request,
    limit: int = Query(100, ge=1, le=MAX_PAGE_LIMIT),
    page: int = Query(1, ge=1, le=PAGE_MAX),
) -> dict[str, Any]:
    owner = scoped_user(request)
    found = await _manager(request).aruns(_checked_id(schedule_id), limit=limit, page=page, user_id=owner)
    return PaginatedResponse.of(found, ScheduleRunResponse)


@router.get("/schedules/{schedule_id}/runs/{run_id}", response_model=ScheduleRunResponse)
async def get_schedule_run(schedule_id: str, run_id: str, request: Request) -> dict[str, Any]:
    manager = _manager(request)
    owner = scoped_user(request)
    if owner is not None:  # another owner's schedule has no runs to show (get_run takes no owner)
        await manager.aget_or_raise(_checked_id(schedule_id), owner)
    run = await manager.aget_run(_checked_id(schedule_id), _checked_id(run_id, "run"))
    return ScheduleRunResponse.model_validate(run.to_dict()).model_dump()
