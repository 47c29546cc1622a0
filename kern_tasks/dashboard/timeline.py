"""A schedule's recent attempts as slots, for its timeline: the attempts of one slot (a
cron instant, a manual trigger, a backfilled slot) together, oldest slot first, each
attempt with its status and how long it took, each slot a bar whose height says its
duration against the longest one shown (log scale, so one slow run does not flatten the
rest). Pure: no SQL, no request."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kern_tasks.scheduler.models import ScheduleRun


MIN_PX, MAX_PX = 8, 34


@dataclass
class Slot:
    """One slot: when it was for, how it came (cron, manual, backfill), its attempts in order."""

    at: int
    origin: str
    attempts: list[ScheduleRun] = field(default_factory=list)
    height: int = MIN_PX  # its bar's height: its duration against the longest slot's (log scale)

    @property
    def status(self) -> str:
        return self.attempts[-1].status

    @property
    def duration(self) -> int | None:
        """Seconds from its first attempt's start to its last one's end (None: not ended)."""
        first, last = self.attempts[0], self.attempts[-1]
        if first.triggered_at is None or last.completed_at is None:
            return None
        return max(0, last.completed_at - first.triggered_at)


def slots_of(attempts: list[ScheduleRun]) -> list[Slot]:
    """`attempts` (any order) grouped into slots, oldest first."""
    slots: dict[tuple[int, bool, bool], Slot] = {}
    for run in attempts:
        at = run.scheduled_for if run.scheduled_for is not None else run.created_at
        key = (at, run.manual, run.backfill)
        if key not in slots:
            origin = "manual" if run.manual else "backfill" if run.backfill else "scheduled"
            slots[key] = Slot(at=at, origin=origin)
        slots[key].attempts.append(run)
    for slot in slots.values():
        slot.attempts.sort(key=lambda run: (run.attempt, run.created_at))
    longest = max([slot.duration or 0 for slot in slots.values()] + [0])
    for slot in slots.values():
        if longest and slot.duration is not None:
            slot.height = MIN_PX + round((MAX_PX - MIN_PX) * math.log1p(slot.duration) / math.log1p(longest))
    return sorted(slots.values(), key=lambda slot: (slot.at, slot.origin))
