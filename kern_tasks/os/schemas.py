"""Request and response bodies of the HTTP API, with agno's field names and shapes
(agno/os/routers/schedules/schema.py, agno/os/schema.py PaginatedResponse) plus our
schedule fields (misfire_policy, overlap_policy, jitter_seconds, catchup_window_seconds).

Request models type-check only (strict: "5" is not an integer); the bounds and formats
are checked once, by kern_tasks.scheduler.validation, so the API and ScheduleManager
agree on every rule.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from kern_tasks.scheduler.models import Page

T = TypeVar("T")


class ScheduleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr
    cron_expr: StrictStr = Field(description='5 or 6 fields ("*/5 * * * * *") or a macro (@daily)')
    endpoint: StrictStr = Field(description='a route of this AgentOS, e.g. "/agents/my-agent/runs"')
    method: StrictStr = "POST"
    description: StrictStr | None = None
    payload: dict[str, Any] | None = None
    timezone: StrictStr = "UTC"
    timeout_seconds: StrictInt = 3600
    max_retries: StrictInt = 0
    retry_delay_seconds: StrictInt = 60
    misfire_policy: StrictStr = Field("once", description="skip | once | all")
    overlap_policy: StrictStr = Field("forbid", description="forbid | allow")
    jitter_seconds: StrictInt = 0
    catchup_window_seconds: StrictInt = 3600


class ScheduleUpdate(BaseModel):
    """Only the fields sent are changed; description and payload may be set to null."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr | None = None
    cron_expr: StrictStr | None = None
    endpoint: StrictStr | None = None
    method: StrictStr | None = None
    description: StrictStr | None = None
    payload: dict[str, Any] | None = None
    timezone: StrictStr | None = None
    timeout_seconds: StrictInt | None = None
    max_retries: StrictInt | None = None
    retry_delay_seconds: StrictInt | None = None
    misfire_policy: StrictStr | None = None
    overlap_policy: StrictStr | None = None
    jitter_seconds: StrictInt | None = None
    catchup_window_seconds: StrictInt | None = None


NULLABLE_UPDATES = frozenset({"description", "payload"})


class ScheduleResponse(BaseModel):
    id: str
    user_id: str | None = None
    name: str
    description: str | None = None
    method: str
    endpoint: str
    payload: dict[str, Any] | None = None
    cron_expr: str | None = None
    timezone: str
    timeout_seconds: int
    max_retries: int
    retry_delay_seconds: int
    enabled: bool
    next_run_at: int | None = None
    managed_by: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    disabled_reason: str | None = None
    created_at: int | None = None
    updated_at: int | None = None
    misfire_policy: str = "once"
    overlap_policy: str = "forbid"
    jitter_seconds: int = 0
    catchup_window_seconds: int = 3600
    skipped_slots: int = 0


class ScheduleStateResponse(BaseModel):
    """What enable/disable answer (agno's trimmed shape)."""

    id: str
    name: str
    enabled: bool
    next_run_at: int | None = None
    updated_at: int | None = None


class ScheduleRunResponse(BaseModel):
    id: str
    schedule_id: str
    user_id: str | None = None
    attempt: int
    triggered_at: int | None = None
    completed_at: int | None = None
    status: str
    status_code: int | None = None
    run_id: str | None = None
    session_id: str | None = None
    error: str | None = None
    input: dict[str, Any] | None = None
    output: Any = None
    requirements: Any = None
    created_at: int | None = None
    scheduled_for: int | None = None
    manual: bool = False


class PaginationInfo(BaseModel):
    page: int
    limit: int
    total_pages: int
    total_count: int


class PaginatedResponse(BaseModel, Generic[T]):
    data: list[T]
    meta: PaginationInfo

    @classmethod
    def of(cls, page: Page[Any], item: type[BaseModel]) -> dict[str, Any]:
        return {
            "data": [item.model_validate(row.to_dict()).model_dump() for row in page.data],
            "meta": {
                "page": page.page,
                "limit": page.limit,
                "total_pages": page.total_pages,
                "total_count": page.total_count,
            },
        }


class RunAccepted(BaseModel):
    run_id: str
    session_id: str
    status: str = "PENDING"


class RunBody(BaseModel):
    """agno's run shape (RunOutput.to_dict()); more keys (messages, metrics, ...) may follow."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    session_id: str
    status: str
    content: Any = None
    content_type: str = "str"
    input: dict[str, Any] | None = None
    created_at: int | None = None
    error: str | None = None


class ComponentSummary(BaseModel):
    id: str
    name: str | None = None


class Health(BaseModel):
    status: str = "ok"
    instantiated_at: str


class ErrorBody(BaseModel):
    detail: str
    field: str | None = None
