"""Request and response bodies of the HTTP API, with agno's field names and shapes
(agno/os/routers/schedules/schema.py, agno/os/schema.py PaginatedResponse) plus our
schedule fields (misfire_policy, overlap_policy, jitter_seconds, catchup_window_seconds, and the
kinds: interval_seconds, run_at, start_at, end_at, max_runs, expires_after_seconds).

The schedule request bodies derive from kern_tasks.scheduler.spec: the same checks run
here as in ScheduleManager, and the OpenAPI document states their bounds (maxLength,
pattern, minimum/maximum, enums). Responses describe stored rows, which agno may have
written too, so they state types only.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, create_model
from pydantic.fields import FieldInfo

from kern_tasks.scheduler.models import Page
from kern_tasks.scheduler.spec import KIND_FIELDS, ScheduleFields

T = TypeVar("T")


def _exactly_one_kind(schema: dict[str, Any]) -> None:
    """The document states spec.check_kind's first rule: exactly one kind per schedule."""
    schema["oneOf"] = [{"required": [field]} for field in KIND_FIELDS]


def _at_most_one_kind(schema: dict[str, Any]) -> None:
    """A change gives at most one kind (it replaces the schedule's)."""
    pairs = [[a, b] for i, a in enumerate(KIND_FIELDS) for b in KIND_FIELDS[i + 1:]]
    schema["not"] = {"anyOf": [{"required": pair} for pair in pairs]}


class ScheduleCreate(ScheduleFields):
    """A new schedule: the spec's fields and defaults (unknown keys are refused); exactly one
    of cron_expr, interval_seconds or run_at."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_exactly_one_kind)


def _leave_out_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # an update has no defaults: a key not sent is not changed


def _optional(info: FieldInfo) -> tuple[Any, FieldInfo]:
    """The field, not required: absent means unchanged; null only where the spec allows it."""
    return info.annotation, FieldInfo.merge_field_infos(info, default=None, json_schema_extra=_leave_out_default)


# Only the fields sent are changed; description and payload may be set to null.
ScheduleUpdate = create_model(  # type: ignore[call-overload]
    "ScheduleUpdate",
    __config__=ConfigDict(extra="forbid", json_schema_extra=_at_most_one_kind),
    __doc__="Only the fields sent are changed; description, payload, start_at, end_at, max_runs and "
    "expires_after_seconds may be set to null. A kind sent (cron_expr, interval_seconds or run_at) replaces "
    "the schedule's.",
    **{key: _optional(info) for key, info in ScheduleFields.model_fields.items()},
)


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
    misfire_policy: str
    overlap_policy: str
    jitter_seconds: int
    catchup_window_seconds: int
    skipped_slots: int
    interval_seconds: int | None = None
    run_at: int | None = None
    start_at: int | None = None
    end_at: int | None = None
    max_runs: int | None = None
    expires_after_seconds: int | None = None
    queue: str | None = None
    priority: int | None = None
    alert_after_failures: int | None = None


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
    backfill: bool = False


class BackfillRequest(BaseModel):
    """A range of past slots to run: [start, end), ISO 8601 date-times (without an offset:
    in the schedule's time zone) or epoch seconds."""

    model_config = ConfigDict(extra="forbid", strict=True)  # no bool or float taken for an int

    start: str | int
    end: str | int


class BackfillResponse(BaseModel):
    """What a backfill queued: `slots` in the range, `added` runs (the slots that had none),
    `existing` slots that had a run already; `runs` the added ones."""

    schedule_id: str
    start: int
    end: int
    slots: int
    added: int
    existing: int
    runs: list[ScheduleRunResponse]


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


class Check(BaseModel):
    """One dependency of the web process: "ok", "down" (`error` names the exception's
    type), or "embedded" (the broker is the SQL transport of the embedded default)."""

    status: str
    error: str | None = None


class BeatCheck(BaseModel):
    """Beat's heartbeat (kern_beats): "ok" while some replica ticked within `max_age_s`,
    "stale" when none did, "none" with no replica row, "unknown" with the database down."""

    status: str
    heartbeat_age_s: int | None = None
    max_age_s: float
    replicas: int = 0


class Health(BaseModel):
    """agno's fields (status, instantiated_at), then ours. `status` is agno's "ok" while the
    database answers, "unavailable" (HTTP 503) when it does not; the broker's and beat's
    state are their own fields."""

    status: str = "ok"
    instantiated_at: str
    database: Check | None = None
    broker: Check | None = None
    beat: BeatCheck | None = None


class ErrorItem(BaseModel):
    """One problem of a request that failed validation."""

    loc: list[str]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error answer: `detail` says what is wrong; `field` names the input at fault, and a
    request that failed validation lists each problem in `errors`."""

    detail: str
    field: str | None = None
    errors: list[ErrorItem] | None = None
