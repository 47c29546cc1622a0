"""Which slots a claimed schedule fires now: the misfire and overlap policies, max_runs.

A pure function of the schedule's settings, its stored `next_run_at` (the first slot
not yet materialised) and "now"; beat calls it inside the claim transaction. The slots
of every kind (cron, interval, one-off, within start_at/end_at) are kinds.Timetable's.

Rules, for the due slots S0 < S1 < ... <= now:
- a slot at most `grace_s` old is on time and always fires (beat may wake a little
  late, or a short outage may delay it: that is not a misfire);
- older slots were missed (beat was down, or a lease holder died):
    skip  none of them fire;
    once  the newest missed slot fires, unless an on-time slot fires anyway (default);
    all   every missed slot within `catchup_window_seconds` fires;
  every missed slot that does not fire is counted in `skipped`;
- overlap `forbid` materialises one slot per claim (the next claim comes after its
  last attempt releases the lease); `allow` materialises all of them, up to `max_slots`;
  slots that fell due while a `forbid` run was in flight follow the misfire policy too
  (`skip_overlapped`, applied when the lease is released);
- `next_run_at` becomes the first slot not materialised (a pending due slot is kept for
  the next claim, so it is neither lost nor fired twice), None when the timetable has
  no slot left (past end_at, a one-off's slot planned) or max_runs' last slot is planned;
- max_runs: at most `remaining` slots fire in this claim (the caller counts the fired ones).

Long outages are not walked slot by slot: past `max_scan` slots the plan counts the
rest as skipped (at least) and jumps to the window's start.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from kern_tasks.scheduler.kinds import Timetable

DEFAULT_GRACE_S = 60
MAX_SLOTS_PER_CLAIM = 100
MAX_SCAN = 2000


def _or_defaults(**given: Any) -> tuple[Any, ...]:
    """The values given, each None replaced by the schedule field's default. The defaults
    are spec.py's (pydantic), read only when one is missing: beat always passes the row's
    values, so it never imports the validation models."""
    if any(value is None for value in given.values()):
        from kern_tasks.scheduler.spec import DEFAULTS

        return tuple(DEFAULTS[name] if value is None else value for name, value in given.items())
    return tuple(given.values())


@dataclass(frozen=True)
class SlotPlan:
    """What one claim does with one schedule."""

    fire: tuple[int, ...]  # slots (epoch s) to materialise now, oldest first
    skipped: int  # missed slots passed over (a lower bound when `skipped_exact` is False)
    next_run_at: int | None  # the first slot not materialised; None: no slot is left
    skipped_exact: bool = True


def plan_slots(
    *,
    next_run_at: int,
    now: int,
    cron_expr: str = "",
    timezone: str | None = None,
    misfire_policy: str | None = None,
    overlap_policy: str | None = None,
    catchup_window_seconds: int | None = None,
    grace_s: int = DEFAULT_GRACE_S,
    max_slots: int = MAX_SLOTS_PER_CLAIM,
    max_scan: int = MAX_SCAN,
    timetable: Timetable | None = None,
    remaining: int | None = None,
) -> SlotPlan:
    """Plan the claim of a schedule whose `next_run_at` <= `now` (see module docstring).
    `timetable` gives the slots of any kind (default: `cron_expr` in `timezone`);
    `remaining` is how many more slots max_runs lets fire (None: no limit). A policy left
    None is the schedule fields' default (scheduler/spec.py)."""
    misfire_policy, overlap_policy, catchup_window_seconds = _or_defaults(
        misfire_policy=misfire_policy, overlap_policy=overlap_policy, catchup_window_seconds=catchup_window_seconds,
    )  # fmt: skip
    if timetable is None:  # the zone is the timetable's: beat's claim passes none (tests/test_beat_imports.py)
        (timezone,) = _or_defaults(timezone=timezone)
    table = timetable if timetable is not None else Timetable(cron_expr=cron_expr, timezone=timezone)
    if remaining is not None and remaining <= 0:
        return SlotPlan(fire=(), skipped=0, next_run_at=None)
    oldest_kept = now - max(catchup_window_seconds, grace_s) if misfire_policy == "all" else now - grace_s
    skipped = 0
    exact = True
    start: int | None = next_run_at
    if next_run_at < oldest_kept:
        # Slots before the oldest one that could fire: count (bounded), then jump.
        start = None  # stays None when the timetable ends among the missed slots
        last_missed = None
        for slot in table.slots_from(next_run_at):
            if slot >= oldest_kept:
                start = slot
                break
            last_missed = slot
            skipped += 1
            if skipped >= max_scan:
                exact = False
                start = table.next_after(oldest_kept - 1)
                break
        if misfire_policy == "once" and last_missed is not None and (start is None or start > now):
            # Nothing on time is due: fire the newest missed slot, late, once.
            # (When the scan stopped early, the newest missed slot is the one just before `start`.)
            newest = last_missed if exact or start is None else _last_slot_before(table, start, oldest_kept)
            return SlotPlan(
                fire=(newest,),
                skipped=skipped - 1 if exact else skipped,
                next_run_at=None if remaining == 1 else start,
                skipped_exact=exact,
            )
    # From `start` on, every slot up to now fires (on time, or caught up under "all").
    limit = 1 if overlap_policy == "forbid" else max_slots
    if remaining is not None:
        limit = min(limit, remaining)
    fire: list[int] = []
    next_slot = start
    if start is not None:
        next_slot = None  # unless a slot is left after the loop
        for slot in table.slots_from(start):
            if slot > now or len(fire) >= limit:
                next_slot = slot
                break
            fire.append(slot)
    if remaining is not None and len(fire) >= remaining:
        next_slot = None  # max_runs: the last slot that may fire is planned
    return SlotPlan(fire=tuple(fire), skipped=skipped, next_run_at=next_slot, skipped_exact=exact)


def slots_in_range(table: Timetable, *, start: int, end: int, limit: int) -> tuple[int, ...] | None:
    """The slots of `table` (any kind, within its window) in [start, end), oldest first,
    walked as beat walks them (Timetable.slots_from); None when there are more than
    `limit` (the caller refuses the range)."""
    found: list[int] = []
    first = table.next_after(start - 1)
    if first is None:
        return ()
    for slot in table.slots_from(first):
        if slot >= end:
            break
        if len(found) >= limit:
            return None
        found.append(slot)
    return tuple(found)


def _last_slot_before(table: Timetable, start: int, oldest_kept: int) -> int:
    """The newest slot before `start`, found without walking the whole outage."""
    if table.interval_seconds is not None:
        found = table.last_before(start, table.anchor)
        if found is not None:
            return found
    probe = table.next_after(oldest_kept - 1 - (start - oldest_kept) - 1)
    newest = probe if probe is not None else start
    for slot in table.slots_from(newest):
        if slot >= start:
            break
        newest = slot
    return newest


def jitter_offset(schedule_id: str, slot: int, jitter_seconds: int) -> int:
    """A delay in [0, jitter_seconds], the same for the same slot on every replica."""
    if jitter_seconds <= 0:
        return 0
    digest = hashlib.blake2b(f"{schedule_id}:{slot}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (jitter_seconds + 1)


def skip_overlapped(
    cron_expr: str, timezone: str, next_run_at: int | None, now: int, misfire_policy: str | None = None,
    *, timetable: Timetable | None = None,
) -> tuple[int | None, int]:
    """When a run ends under overlap "forbid", the slots that fell due while it ran follow
    the misfire policy: "skip" passes over them all (agno's behaviour); "once" keeps the
    newest, which fires late right away, and passes over the rest (Kubernetes' Forbid);
    "all" keeps them all. Returns (next_run_at, skipped); next_run_at None when no slot
    is left. `timetable` gives the slots of any kind (default: the cron in its zone)."""
    (misfire_policy,) = _or_defaults(misfire_policy=misfire_policy)
    if next_run_at is None or next_run_at > now or misfire_policy == "all":
        return next_run_at, 0
    table = timetable if timetable is not None else Timetable(cron_expr=cron_expr, timezone=timezone)
    due = 0
    newest = next_run_at
    after: int | None = None  # the first slot after now, if any is left
    for slot in table.slots_from(next_run_at):
        if slot > now:
            after = slot
            break
        newest, due = slot, due + 1
        if due >= MAX_SCAN:  # a run that outlived thousands of slots: go on from now
            return table.next_after(now), due
    if misfire_policy == "once":
        return newest, due - 1
    return after, due
