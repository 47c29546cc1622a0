"""What a backfill asks for and answers: the range read from the caller's values, and
the `Backfill` result. The slots themselves are `slots.slots_in_range` (beat's walk), the
rows `claims.queue_backfill`; `ScheduleManager.backfill` puts them together.

A range is half-open, [start, end): a 2-hour range of an every-10-minutes schedule that
starts on a slot holds 12 slots. It must end by now (the database's clock): slots from
now on are beat's to fire.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Union
from zoneinfo import ZoneInfo

from kern_tasks.errors import ValidationError
from kern_tasks.scheduler.models import ScheduleRun

# One backfill queues at most this many slots (a bigger range is refused, naming the bound).
MAX_BACKFILL_SLOTS = 1000

Instant = Union[datetime, str, int, float]


def instant(field_name: str, value: Any, timezone: str) -> int:
    """Epoch seconds of a datetime, ISO 8601 text or epoch number; a time without an offset
    is read in `timezone` (the schedule's)."""
    if isinstance(value, bool):
        raise ValidationError(field_name, "must be a date-time (ISO 8601) or epoch seconds, got a boolean")
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise ValidationError(
                field_name, f'{text!r} is not an ISO 8601 date-time such as "2026-03-08T09:00" or "2026-03-08T14:00Z"'
            ) from None
    if not isinstance(value, datetime):
        raise ValidationError(field_name, f"must be a date-time (ISO 8601) or epoch seconds, got {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(timezone))
    return int(value.timestamp())


def backfill_range(start: Any, end: Any, timezone: str, *, now: int) -> tuple[int, int]:
    """(start, end) in epoch seconds, checked: start before end, end not after `now`."""
    first, last = instant("start", start, timezone), instant("end", end, timezone)
    if last <= first:
        raise ValidationError("end", "must be after start")
    if last > now + 1:  # a second of slack: "now" as the caller read it may be a moment ahead
        raise ValidationError("end", "is in the future: slots from now on are beat's to fire; backfill past slots")
    return first, last


@dataclass(frozen=True)
class Backfill:
    """A backfill's answer: every slot in the range, and the runs it queued (the slots
    that had none); `existing` slots had a run already."""

    schedule_id: str
    start: int
    end: int
    slots: tuple[int, ...]
    added: list[ScheduleRun] = field(default_factory=list)

    @property
    def existing(self) -> int:
        return len(self.slots) - len(self.added)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schedule_id": self.schedule_id, "start": self.start, "end": self.end, "slots": len(self.slots),
            "added": len(self.added), "existing": self.existing,
            "runs": [asdict(run) for run in self.added],
        }
