"""The schedules API, in agno's shapes: /schedules list/create, /schedules/{id}
get/patch/delete, /enable, /disable, /trigger, /runs.

Every store operation is ScheduleManager's (its async twins); this module adds only what
HTTP needs: a schedule's endpoint must be a route this AgentOS serves, a trigger needs
an enabled schedule, and no text with NUL or lone surrogates reaches the database.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response

from kern_tasks.errors import Conflict, NotFound, ValidationError
from kern_tasks.os.schemas import (
    NULLABLE_UPDATES,
    ErrorBody,
    PaginatedResponse,
    ScheduleCreate,
    ScheduleResponse,
    ScheduleRunResponse,
    ScheduleStateResponse,
    ScheduleUpdate,
)
from kern_tasks.runs.safe import has_unstorable_text
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.scheduler.manager import MAX_PAGE_LIMIT

ID_MAX = 255
PAGE_MAX = 10**9
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 422)
}

router = APIRouter(tags=["Schedules"], responses=ERRORS)


def _manager(request: Request) -> ScheduleManager:
    return request.app.state.agent_os.manager


def _checked_id(value: str, what: str = "schedule") -> str:
    """An id that can exist; any other answers 404 without asking the database."""
    if len(value) > ID_MAX or has_unstorable_text(value):
        raise NotFound(f"no {what} with id {value[:80]!r}")
    return value


def _check_text(values: dict[str, Any]) -> None:
    for key, value in values.items():
        if has_unstorable_text(value):
            raise ValidationError(key, "must not contain NUL characters or unpaired surrogates")


def _schedule(schedule: Any) -> dict[str, Any]:
    return ScheduleResponse.model_validate(schedule.to_dict()).model_dump()


@router.get("/schedules", response_model=PaginatedResponse[ScheduleResponse])
async def list_schedules(
    request: Request,
    enabled: bool | None = Query(None),
    limit: int = Query(100, ge=1, le=MAX_PAGE_LIMIT),
    page: int = Query(1, ge=1, le=PAGE_MAX),
) -> dict[str, Any]:
    found = await _manager(request).alist(enabled=enabled, limit=limit, page=page)
    return PaginatedResponse.of(found, ScheduleResponse)


@router.post("/schedules", response_model=ScheduleResponse, status_code=201)
async def create_schedule(body: ScheduleCreate, request: Request) -> dict[str, Any]:
    values = body.model_dump()
    _check_text(values)
    method, endpoint = request.app.state.agent_os.targets.check_endpoint(body.method, body.endpoint)
    try:
        created = await _manager(request).acreate(
            name=values.pop("name"),
            cron=values.pop("cron_expr"),
            **{**values, "method": method, "endpoint": endpoint},
        )
    except Conflict as exc:
        raise Conflict(f"a schedule named {body.name!r} already exists") from exc
    return _schedule(created)


@router.get("/schedules/{schedule_id}", response_model=ScheduleResponse)
async def get_schedule(schedule_id: str, request: Request) -> dict[str, Any]:
    return _schedule(await _manager(request).aget(_checked_id(schedule_id)))


@router.patch("/schedules/{schedule_id}", response_model=ScheduleResponse)
async def update_schedule(schedule_id: str, body: ScheduleUpdate, request: Request) -> dict[str, Any]:
    updates = body.model_dump(exclude_unset=True)
    for key, value in updates.items():
        if value is None and key not in NULLABLE_UPDATES:
            raise ValidationError(key, "cannot be set to null")
    _check_text(updates)
    manager = _manager(request)
    current = await manager.aget(_checked_id(schedule_id))
    if not updates:
        return _schedule(current)
    if "endpoint" in updates or "method" in updates:
        method, endpoint = request.app.state.agent_os.targets.check_endpoint(
            updates.get("method", current.method), updates.get("endpoint", current.endpoint)
        )
        updates.update({k: v for k, v in (("method", method), ("endpoint", endpoint)) if k in updates})
    return _schedule(await manager.aupdate(current.id, **updates))


@router.delete("/schedules/{schedule_id}", status_code=204, response_class=Response)
async def delete_schedule(schedule_id: str, request: Request) -> Response:
    await _manager(request).adelete(_checked_id(schedule_id))
    return Response(status_code=204)


@router.post("/schedules/{schedule_id}/enable", response_model=ScheduleStateResponse)
async def enable_schedule(schedule_id: str, request: Request) -> dict[str, Any]:
    manager = _manager(request)
    current = await manager.aget(_checked_id(schedule_id))
    # Re-arming puts the endpoint back on the beat: it must still be a route we serve.
    request.app.state.agent_os.targets.check_endpoint(current.method, current.endpoint)
    return ScheduleStateResponse.model_validate((await manager.aenable(current.id)).to_dict()).model_dump()


@router.post("/schedules/{schedule_id}/disable", response_model=ScheduleStateResponse)
async def disable_schedule(schedule_id: str, request: Request) -> dict[str, Any]:
    disabled = await _manager(request).adisable(_checked_id(schedule_id))
    return ScheduleStateResponse.model_validate(disabled.to_dict()).model_dump()


@router.post("/schedules/{schedule_id}/trigger", response_model=ScheduleRunResponse, status_code=202)
async def trigger_schedule(schedule_id: str, request: Request) -> dict[str, Any]:
    """Queue one run now (beat publishes it on its next tick); the cron does not move."""
    manager = _manager(request)
    current = await manager.aget(_checked_id(schedule_id))
    if not current.enabled:
        raise Conflict(f"schedule {current.name!r} is disabled: enable it first")
    request.app.state.agent_os.targets.check_endpoint(current.method, current.endpoint)
    run = await manager.atrigger(current.id)
    return ScheduleRunResponse.model_validate(run.to_dict()).model_dump()


@router.get("/schedules/{schedule_id}/runs", response_model=PaginatedResponse[ScheduleRunResponse])
async def list_schedule_runs(
    schedule_id: str,
    request: Request,
    limit: int = Query(100, ge=1, le=MAX_PAGE_LIMIT),
    page: int = Query(1, ge=1, le=PAGE_MAX),
) -> dict[str, Any]:
    found = await _manager(request).aruns(_checked_id(schedule_id), limit=limit, page=page)
    return PaginatedResponse.of(found, ScheduleRunResponse)


@router.get("/schedules/{schedule_id}/runs/{run_id}", response_model=ScheduleRunResponse)
async def get_schedule_run(schedule_id: str, run_id: str, request: Request) -> dict[str, Any]:
    run = await _manager(request).aget_run(_checked_id(schedule_id), _checked_id(run_id, "run"))
    return ScheduleRunResponse.model_validate(run.to_dict()).model_dump()
