"""Values the store hands out: a schedule, one attempt of it, a page of either."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Generic, Iterator, Mapping, TypeVar

from kern_tasks.scheduler.kinds import Timetable
from kern_tasks.scheduler.spec import DEFAULTS

T = TypeVar("T")


def _from_row(cls: type[T], row: Mapping[str, Any]) -> T:
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{key: value for key, value in row.items() if key in names})


@dataclass(frozen=True)
class Schedule:
    """One row of agno_schedules. Times are epoch seconds; field meanings, bounds and
    defaults are kern_tasks.scheduler.spec's (agno's rows may hold values it refuses)."""

    id: str
    name: str
    cron_expr: str
    endpoint: str
    method: str
    timezone: str
    timeout_seconds: int
    max_retries: int
    retry_delay_seconds: int
    enabled: bool
    created_at: int
    description: str | None = None
    payload: dict[str, Any] | None = None
    next_run_at: int | None = None
    locked_by: str | None = None
    locked_at: int | None = None
    user_id: str | None = None
    managed_by: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    created_by_run_id: str | None = None
    created_by_session_id: str | None = None
    updated_by_run_id: str | None = None
    updated_by_session_id: str | None = None
    disabled_reason: str | None = None
    updated_at: int | None = None
    misfire_policy: str = DEFAULTS["misfire_policy"]
    catchup_window_seconds: int = DEFAULTS["catchup_window_seconds"]
    overlap_policy: str = DEFAULTS["overlap_policy"]
    jitter_seconds: int = DEFAULTS["jitter_seconds"]
    skipped_slots: int = 0
    # The kinds beside cron (kern_tasks.scheduler.kinds); cron_expr is "" when one is set.
    interval_seconds: int | None = None
    run_at: int | None = None
    start_at: int | None = None
    end_at: int | None = None
    max_runs: int | None = None
    expires_after_seconds: int | None = None
    queue: str | None = None
    priority: int | None = None
    alert_after_failures: int | None = None  # kern_tasks.alerts; None: alerts.incidents.DEFAULT_ALERT_AFTER_FAILURES

    @property
    def kind(self) -> str:
        """cron, interval, run_at, or on_demand (agno's cron "")."""
        return Timetable.of(self.to_dict()).kind

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Schedule":
        return _from_row(cls, row)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScheduleRun:
    """One attempt of one slot (a row of agno_schedule_runs)."""

    id: str
    schedule_id: str
    attempt: int
    status: str
    created_at: int
    triggered_at: int | None = None
    completed_at: int | None = None
    status_code: int | None = None
    run_id: str | None = None
    session_id: str | None = None
    error: str | None = None
    input: dict[str, Any] | None = None
    output: Any = None
    requirements: Any = None
    user_id: str | None = None
    scheduled_for: int | None = None
    manual: bool = False
    not_before: int | None = None
    enqueued_at: int | None = None
    lease_token: str | None = None
    backfill: bool = False

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "ScheduleRun":
        return _from_row(cls, row)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing, with the total the listing has."""

    data: list[T]
    page: int
    limit: int
    total_count: int

    @property
    def total_pages(self) -> int:
        return math.ceil(self.total_count / self.limit) if self.limit else 0

    def __iter__(self) -> Iterator[T]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)
