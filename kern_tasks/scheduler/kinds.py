"""When a schedule's slots fall, for every kind: cron, interval, one-off, within a window.

A pure module (no SQL, no clock): a `Timetable` is built from a schedule's columns and
answers "the first slot strictly after t" (`next_after`), which the slot planner
(slots.plan_slots), next_run_at on every write (rows.py) and the preview (`next_slots`)
all use, so the three agree by construction.

The kinds (exactly one per schedule; spec.check_kind holds that rule):
- cron (`cron_expr`): cron.py's fire times in the schedule's zone (its DST rules);
- interval (`interval_seconds` = N): anchor + k*N for k >= 0, the anchor being `start_at`,
  else the schedule's `created_at`. Slots are a function of the anchor alone, never of
  when a run ended or when beat last woke, so they never drift; they are elapsed time,
  so a DST change neither adds nor removes one;
- one-off (`run_at`): that one instant.
Any kind: no slot before `start_at` or after `end_at` (both inclusive bounds).

`max_runs` is a count of slots that fired (the unique slot rows hold it, claims.count_fired
reads it); `remaining_runs` and the preview take that count as an argument.

When no slot is left (`next_after` answers None), the schedule is finished once its last
attempt has ended: `finished_reason` words the disabled_reason it is given.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kern_tasks.scheduler import cron as cron_engine

COMPLETED = "completed"  # a one-off's disabled_reason once its slot's last attempt ended


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Timetable:
    """The slots of one schedule. `cron_expr` "" with no interval and no run_at is agno's
    on-demand schedule: it has no slots."""

    cron_expr: str = ""
    timezone: str = "UTC"
    interval_seconds: int | None = None
    run_at: int | None = None
    start_at: int | None = None
    end_at: int | None = None
    created_at: int = 0

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> "Timetable":
        """From a schedule row, a Schedule's dict or a row of a claim (missing keys: none)."""
        return cls(
            cron_expr=row.get("cron_expr") or "", timezone=row.get("timezone") or "UTC",
            interval_seconds=row.get("interval_seconds"), run_at=row.get("run_at"),
            start_at=row.get("start_at"), end_at=row.get("end_at"), created_at=row.get("created_at") or 0,
        )  # fmt: skip

    @property
    def kind(self) -> str:
        if self.run_at is not None:
            return "run_at"
        if self.interval_seconds is not None:
            return "interval"
        return "cron" if self.cron_expr else "on_demand"

    @property
    def anchor(self) -> int:
        """The interval's first slot: start_at, else when the schedule was made."""
        return self.start_at if self.start_at is not None else self.created_at

    def next_after(self, after: int) -> int | None:
        """The first slot strictly after `after` (epoch s) within the window; None when none is left.
        Raises CronError for a cron only agno's croniter reads."""
        after = int(after)
        if self.start_at is not None:
            after = max(after, self.start_at - 1)  # the first slot may be start_at itself
        slot = self._unbounded_after(after)
        if slot is None or (self.end_at is not None and slot > self.end_at):
            return None
        return slot

    def _unbounded_after(self, after: int) -> int | None:
        if self.run_at is not None:
            return self.run_at if self.run_at > after else None
        if self.interval_seconds is not None:
            step, anchor = self.interval_seconds, self.anchor
            if after < anchor:
                return anchor
            return anchor + ((after - anchor) // step + 1) * step
        if not self.cron_expr:
            return None
        return cron_engine.next_run_epoch(self.cron_expr, self.timezone, after)

    def slots_from(self, first: int) -> Iterator[int]:
        """`first` (a slot), then every following slot, until none is left."""
        slot: int | None = first
        while slot is not None:
            yield slot
            slot = self.next_after(slot)

    def last_before(self, before: int, not_before: int) -> int | None:
        """The newest slot in [not_before, before), or None; without walking from the
        anchor (an interval is arithmetic; other kinds walk from `not_before`)."""
        if self.interval_seconds is not None and self.run_at is None:
            k = (before - 1 - self.anchor) // self.interval_seconds
            slot = self.anchor + k * self.interval_seconds
            low = max(not_before, self.start_at if self.start_at is not None else not_before)
            return slot if low <= slot < before and (self.end_at is None or slot <= self.end_at) else None
        newest = None
        probe = self.next_after(not_before - 1)
        while probe is not None and probe < before:
            newest, probe = probe, self.next_after(probe)
        return newest


def remaining_runs(max_runs: int | None, fired: int) -> int | None:
    """How many more slots may fire (None: no limit)."""
    return None if max_runs is None else max(0, max_runs - fired)


def next_slots(
    timetable: Timetable, after: datetime, count: int = 5, *, max_runs: int | None = None, fired: int = 0
) -> list[datetime]:
    """Up to `count` coming slots strictly after `after`, aware, in the schedule's zone:
    the preview of any kind (cron.next_runs is the cron-only one). Fewer when the window
    ends, a one-off has passed, or max_runs leaves fewer (`fired` slots already fired)."""
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError("after must be a timezone-aware datetime, got a naive one")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    left = remaining_runs(max_runs, fired)
    if left is not None:
        count = min(count, left)
    zone = cron_engine.validate_timezone(timetable.timezone)
    out: list[datetime] = []
    slot = timetable.next_after(int(after.timestamp() // 1))
    while slot is not None and len(out) < count:
        out.append(datetime.fromtimestamp(slot, zone))
        slot = timetable.next_after(slot)
    return out


def utc_offset(delta: timedelta | None) -> str:
    """`-05:00`, `+05:30`: an offset as fire-time previews print it."""
    minutes = int((delta or timedelta()).total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def dst_marked(times: list[datetime], after: datetime) -> list[dict[str, Any]]:
    """Fire times (aware, in their schedule's zone) as previews show them: each with its
    ISO text, UTC, epoch, offset and abbreviation, and, when its UTC offset differs from
    the one before it (the first is compared with `after` read in the same zone), the
    change (`"-05:00 -> -04:00"`). The one rule the CLI's `cron --next` and the
    dashboard's next fires mark DST changes by."""
    previous = utc_offset(after.astimezone(times[0].tzinfo).utcoffset()) if times else ""
    marked = []
    for when in times:
        offset = utc_offset(when.utcoffset())
        marked.append({
            "at": when.isoformat(), "utc": when.astimezone(UTC).isoformat(), "epoch": int(when.timestamp()),
            "offset": offset, "abbreviation": when.tzname(),
            "dst_change": f"{previous} -> {offset}" if offset != previous else None,
        })
        previous = offset
    return marked


def finished_reason(row: Mapping[str, Any], fired: int) -> str:
    """The disabled_reason of a schedule none of whose slots is left: a one-off is
    "completed"; else the limit or the window's end that stopped it."""
    if row.get("run_at") is not None:
        return COMPLETED
    max_runs = row.get("max_runs")
    if max_runs is not None and fired >= max_runs:
        return f"max_runs reached: {fired} of {max_runs} runs fired"
    if row.get("end_at") is not None:
        return f"end_at passed: no slot after {iso(row['end_at'])}"
    return "no slot left"


def describe(timetable: Timetable) -> str:
    """A phrase for people and models: what the kind and window say."""
    if timetable.run_at is not None:
        what = f"once at {iso(timetable.run_at)}"
    elif timetable.interval_seconds is not None:
        what = f"every {_duration(timetable.interval_seconds)} from {iso(timetable.anchor)}"
    elif timetable.cron_expr:
        what = cron_engine.describe(timetable.cron_expr)
    else:
        return "on demand"
    if timetable.start_at is not None and timetable.interval_seconds is None:
        what += f", from {iso(timetable.start_at)}"
    if timetable.end_at is not None:
        what += f", until {iso(timetable.end_at)}"
    return what


def _duration(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
