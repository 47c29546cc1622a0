"""Schedule kinds beside cron (issue 12 part 1): interval_seconds, run_at, the start_at /
end_at window, max_runs and expires_after_seconds.

Pure slot tables (kinds.Timetable, slots.plan_slots, the preview, DST), the rules across
fields (spec.check_kind: every error names its field), and the manager and the claim,
attempt and sweep statements on real Postgres and SQLite with the claim's `now` given.
The same kinds through the HTTP API and SchedulerTools: tests/test_schedule_kinds_api.py;
with beat replicas and workers: tests/test_schedule_kinds_beat.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from kern_tasks.db import Database, db_now
from kern_tasks.db.tables import schedule_runs, schedules
from kern_tasks.errors import ValidationError
from kern_tasks.firing.http import FireOutcome
from kern_tasks.scheduler import ScheduleManager, attempts, claims, limits, spec
from kern_tasks.scheduler.kinds import COMPLETED, Timetable, next_slots
from kern_tasks.scheduler.slots import plan_slots, skip_overlapped

NY = ZoneInfo("America/New_York")
SUCCESS = FireOutcome("success", retryable=False, status_code=200)


# --- pure: the timetable of each kind ---------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "after", "expected"),
    [
        (Timetable(interval_seconds=90, created_at=1000), 0, 1000),  # the anchor is the first slot
        (Timetable(interval_seconds=90, created_at=1000), 1000, 1090),
        (Timetable(interval_seconds=90, created_at=1000), 1089, 1090),
        (Timetable(interval_seconds=90, created_at=1000), 100_000, 1000 + 1101 * 90),  # strictly after
        (Timetable(interval_seconds=90, created_at=1000, start_at=5000), 0, 5000),  # start_at anchors
        (Timetable(interval_seconds=90, created_at=1000, start_at=5000), 5000, 5090),
        (Timetable(interval_seconds=90, created_at=1000, end_at=1180), 1090, 1180),  # end_at inclusive
        (Timetable(interval_seconds=90, created_at=1000, end_at=1180), 1180, None),
        (Timetable(run_at=7000), 6999, 7000),
        (Timetable(run_at=7000), 7000, None),
        (Timetable(run_at=7000, start_at=7000), 0, 7000),
        (Timetable(cron_expr="*/10 * * * * *", start_at=1_800_000_005), 0, 1_800_000_010),
        (Timetable(cron_expr="*/10 * * * * *", start_at=1_800_000_010), 0, 1_800_000_010),
        (Timetable(cron_expr="*/10 * * * * *", end_at=1_800_000_015), 1_800_000_010, None),
        (Timetable(), 0, None),  # agno's on-demand (cron "")
    ],
)
def test_next_slot_of_every_kind(table: Timetable, after: int, expected: int | None) -> None:
    assert table.next_after(after) == expected


def test_interval_slots_never_drift_with_claim_times() -> None:
    """Claims at irregular moments (late wake-ups, a restart) fire exactly anchor + k*N."""
    table = Timetable(interval_seconds=7, created_at=10_000)
    next_run_at, fired = table.next_after(10_000), []
    for now in (10_007, 10_016, 10_030, 10_031, 10_049, 10_099, 10_100):
        plan = plan_slots(timetable=table, next_run_at=next_run_at, now=now, overlap_policy="allow")
        fired += plan.fire
        next_run_at = plan.next_run_at
    assert fired == list(range(10_007, 10_100, 7))
    assert next_run_at == 10_105


def test_an_interval_fires_by_elapsed_time_across_both_2026_new_york_transitions() -> None:
    """Every 30 minutes: 23 real hours on 2026-03-08 hold 46 slots, 25 on 2026-11-01 hold 50;
    each gap is exactly 1800 s whatever the wall clock did."""
    for day, hours in ((datetime(2026, 3, 8, tzinfo=NY), 23), (datetime(2026, 11, 1, tzinfo=NY), 25)):
        start, end = day, day + timedelta(days=1)
        assert (end.timestamp() - start.timestamp()) / 3600 == hours  # wall-clock days of 23 and 25 hours
        table = Timetable(interval_seconds=1800, timezone="America/New_York", start_at=int(start.timestamp()),
                          end_at=int(end.timestamp()) - 1)  # fmt: skip
        slots = list(table.slots_from(table.anchor))
        assert len(slots) == hours * 2
        assert {b - a for a, b in zip(slots, slots[1:])} == {1800}
        walls = [datetime.fromtimestamp(s, NY) for s in slots]
        if hours == 23:
            assert not any(w.hour == 2 for w in walls)  # 02:00-02:59 does not exist that night
        else:
            assert sum(w.hour == 1 for w in walls) == 4  # 01:00-01:59 happens twice: EDT, then EST
        preview = next_slots(table, start - timedelta(seconds=1), count=100)
        assert [int(p.timestamp()) for p in preview] == slots and preview[0].tzinfo == NY


def test_max_runs_caps_a_claim_and_ends_the_timetable() -> None:
    table = Timetable(interval_seconds=1, created_at=100)
    plan = plan_slots(timetable=table, next_run_at=101, now=120, overlap_policy="allow", remaining=3)
    assert plan.fire == (101, 102, 103) and plan.next_run_at is None
    plan = plan_slots(timetable=table, next_run_at=101, now=105, overlap_policy="allow", remaining=10)
    assert plan.fire == (101, 102, 103, 104, 105) and plan.next_run_at == 106
    assert plan_slots(timetable=table, next_run_at=101, now=120, remaining=0).fire == ()
    # after an outage: the oldest slot still on time (60 s grace), and that was the last one allowed
    late = plan_slots(timetable=table, next_run_at=101, now=10_000, remaining=1)
    assert late.fire == (9_940,) and late.next_run_at is None and late.skipped == 2000 and not late.skipped_exact


def test_a_window_ends_the_plan_and_the_overlap_skip() -> None:
    table = Timetable(interval_seconds=10, created_at=0, end_at=50)
    plan = plan_slots(timetable=table, next_run_at=40, now=100, overlap_policy="allow", misfire_policy="all")
    assert plan.fire == (40, 50) and plan.next_run_at is None
    once = Timetable(run_at=500)
    assert plan_slots(timetable=once, next_run_at=500, now=500).fire == (500,)
    assert plan_slots(timetable=once, next_run_at=500, now=500).next_run_at is None
    # a forbid run that outlived the rest of the window: nothing is left after it
    assert skip_overlapped("", "UTC", 40, 100, "skip", timetable=table) == (None, 2)
    assert skip_overlapped("", "UTC", 40, 100, "once", timetable=table) == (50, 1)


def test_preview_of_every_kind() -> None:
    after = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    t0 = int(after.timestamp())
    assert [int(d.timestamp()) - t0 for d in next_slots(Timetable(interval_seconds=90, created_at=t0), after, 3)] == [
        90, 180, 270]  # fmt: skip
    assert next_slots(Timetable(run_at=t0 + 1200), after, 5) == [after + timedelta(minutes=20)]
    assert next_slots(Timetable(run_at=t0 - 1), after, 5) == []
    assert len(next_slots(Timetable(interval_seconds=60, created_at=t0), after, 10, max_runs=5, fired=3)) == 2
    cron = next_slots(Timetable(cron_expr="0 9 * * *", timezone="America/New_York", end_at=t0 + 2 * 86400), after, 5)
    assert [d.hour for d in cron] == [9, 9] and cron[0].tzinfo == NY


# --- pure: the rules across fields -------------------------------------------------------------

NOW = 1_800_000_000


@pytest.mark.parametrize(
    ("values", "field", "words"),
    [
        ({}, "cron", "give when it runs"),
        ({"cron_expr": "@daily", "interval_seconds": 60}, "interval_seconds", "exactly one of"),
        ({"cron_expr": "@daily", "run_at": NOW + 60}, "run_at", "cron is given too"),
        ({"interval_seconds": 60, "run_at": NOW + 60}, "run_at", "interval_seconds is given too"),
        ({"interval_seconds": 60, "start_at": NOW + 10, "end_at": NOW + 10}, "end_at", "must be after start_at"),
        ({"run_at": NOW + 60, "max_runs": 2}, "max_runs", "runs once"),
        ({"run_at": NOW + 60, "start_at": NOW + 61}, "run_at", "before start_at"),
        ({"run_at": NOW + 60, "end_at": NOW + 59}, "run_at", "after end_at"),
        ({"run_at": NOW - 61}, "run_at", "in the past"),
        ({"interval_seconds": 5, "end_at": NOW}, "end_at", "in the past"),
    ],
)
def test_check_kind_names_the_field(values: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as err:
        spec.check_kind(values, now=NOW)
    assert err.value.field == field and words in err.value.message, err.value


def test_check_kind_accepts_each_kind_and_a_recent_one_off() -> None:
    for values in ({"cron_expr": "@daily"}, {"interval_seconds": 1, "max_runs": 1}, {"run_at": NOW - 60},
                   {"run_at": NOW + 5, "start_at": NOW, "end_at": NOW + 5}):  # fmt: skip
        spec.check_kind(values, now=NOW)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("interval_seconds", 0, "between 1 and"),
        ("interval_seconds", 1.5, "whole number"),
        ("run_at", "2026-12-01T10:00:00", "epoch seconds"),
        ("run_at", datetime(2026, 12, 1, 10), "naive datetime"),
        ("start_at", -1, "between 0 and"),
        ("max_runs", 0, "between 1 and"),
        ("expires_after_seconds", 0, "between 1 and"),
    ],
)
def test_each_kind_field_is_checked(field: str, value: Any, words: str) -> None:
    with pytest.raises(ValidationError) as err:
        spec.check(field, value)
    assert err.value.field == field and words in err.value.message


def test_an_aware_datetime_is_epoch_seconds() -> None:
    assert spec.check("run_at", datetime(2027, 1, 15, 9, 30, tzinfo=NY)) == int(datetime(2027, 1, 15, 14, 30, tzinfo=UTC).timestamp())


# --- the manager, on Postgres and SQLite --------------------------------------------------------


def now_of(db: Database) -> int:
    with db.connect() as conn:
        return db_now(conn)


def test_every_kind_through_the_manager(db: Database) -> None:
    manager = ScheduleManager(db)
    now = now_of(db)
    interval = manager.create(name="every-90", interval_seconds=90, endpoint="/x")
    assert (interval.kind, interval.cron_expr, interval.interval_seconds) == ("interval", "", 90)
    assert interval.next_run_at == interval.created_at + 90
    started = manager.create(name="from-start", interval_seconds=60, start_at=now + 3600, end_at=now + 7200,
                             max_runs=4, expires_after_seconds=30, endpoint="/x")  # fmt: skip
    assert started.next_run_at == now + 3600
    assert (started.start_at, started.end_at, started.max_runs, started.expires_after_seconds) == (
        now + 3600, now + 7200, 4, 30)  # fmt: skip
    one_off = manager.create(name="remind", run_at=datetime.fromtimestamp(now + 1200, UTC), endpoint="/x")
    assert (one_off.kind, one_off.run_at, one_off.next_run_at) == ("run_at", now + 1200, now + 1200)
    cron = manager.create(name="windowed-cron", cron="0 9 * * *", timezone="America/New_York",
                          start_at=now + 10 * 86400, endpoint="/x")  # fmt: skip
    assert cron.next_run_at >= now + 10 * 86400 and datetime.fromtimestamp(cron.next_run_at, NY).hour == 9

    # A kind given replaces the schedule's kind; None clears a window or a limit.
    switched = manager.update(one_off.id, interval_seconds=30)
    assert (switched.kind, switched.run_at, switched.interval_seconds) == ("interval", None, 30)
    back = manager.update(switched.id, cron="*/5 * * * *")
    assert (back.kind, back.interval_seconds, back.cron_expr) == ("cron", None, "*/5 * * * *")
    cleared = manager.update(started.id, end_at=None, max_runs=None)
    assert (cleared.end_at, cleared.max_runs, cleared.start_at) == (None, None, now + 3600)
    # if_exists="update": the call describes the whole schedule (what it leaves out is cleared)
    again = manager.create(name="from-start", interval_seconds=60, endpoint="/x", if_exists="update")
    assert (again.id, again.start_at, again.expires_after_seconds) == (started.id, None, None)
    assert manager.create(name="from-start", interval_seconds=60, endpoint="/x", if_exists="update") == again


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "cron"),
        ({"cron": "@daily", "interval_seconds": 5}, "interval_seconds"),
        ({"interval_seconds": 5, "run_at": 10**10}, "run_at"),
        ({"run_at": 5}, "run_at"),
        ({"interval_seconds": 5, "end_at": 5}, "end_at"),
        ({"run_at": 10**10, "max_runs": 1}, "max_runs"),
        ({"interval_seconds": 0}, "interval_seconds"),
    ],
)
def test_a_bad_combination_writes_nothing(db: Database, kwargs: dict[str, Any], field: str) -> None:
    manager = ScheduleManager(db)
    with pytest.raises(ValidationError) as err:
        manager.create(name="bad", endpoint="/x", **kwargs)
    assert err.value.field == field
    assert manager.list_all() == []


def test_a_bad_change_names_the_field_and_changes_nothing(db: Database) -> None:
    manager = ScheduleManager(db)
    made = manager.create(name="ok", interval_seconds=60, start_at=now_of(db) + 100, endpoint="/x")
    for change, field in (({"cron": "@daily", "run_at": 10**10}, "run_at"), ({"end_at": made.start_at}, "end_at"),
                          ({"run_at": 10**10, "max_runs": 2}, "max_runs")):  # fmt: skip
        with pytest.raises(ValidationError) as err:
            manager.update(made.id, **change)
        assert err.value.field == field
    assert manager.get(made.id) == made


# --- claims, attempts and sweeps, on Postgres and SQLite ----------------------------------------


def claim(db: Database, now: int, batch: int = 50) -> list[str]:
    token = claims.new_lease_token("test")
    with db.begin() as conn:
        claimed = claims.claim_due(conn, token=token, now=now, batch=batch)
        return [d.attempt_id for d in claims.materialise(conn, claimed, token=token, now=now)]


def run_all(db: Database, attempt_ids: list[str]) -> None:
    for attempt_id in attempt_ids:
        with db.begin() as conn:
            assert isinstance(attempts.start_attempt(conn, attempt_id), attempts.Attempt)
        with db.begin() as conn:
            attempts.finish_attempt(conn, attempt_id, SUCCESS)


def sweep(db: Database, now: int) -> list[tuple[str, str]]:
    with db.begin() as conn:
        limits.skip_expired_attempts(conn, now=now, limit=100)
        return limits.finish_exhausted(conn, now=now, limit=100)


def runs_of(db: Database, schedule_id: str) -> list[Any]:
    with db.connect() as conn:
        return list(conn.execute(select(schedule_runs).where(schedule_runs.c.schedule_id == schedule_id)
                                 .order_by(schedule_runs.c.scheduled_for)).mappings())  # fmt: skip


def test_max_runs_fires_exactly_n_slots_then_disables(db: Database) -> None:
    manager = ScheduleManager(db)
    made = manager.create(name="five", interval_seconds=1, max_runs=5, overlap_policy="allow", endpoint="/x")
    t = made.next_run_at
    fired = claim(db, t + 2)  # three due
    assert len(fired) == 3
    assert sweep(db, t + 2) == []  # slots are left
    run_all(db, fired)
    fired = claim(db, t + 30)
    assert len(fired) == 2 and manager.get(made.id).next_run_at is None
    assert sweep(db, t + 30) == []  # its last slots are still open
    run_all(db, fired)
    assert sweep(db, t + 31) == [(made.id, "max_runs reached: 5 of 5 runs fired")]
    done = manager.get(made.id)
    assert (done.enabled, done.disabled_reason) == (False, "max_runs reached: 5 of 5 runs fired")
    assert [r["scheduled_for"] - t for r in runs_of(db, made.id)] == [0, 1, 2, 3, 4]
    # enabled again, it still may fire nothing (the slot rows say 5 fired) and ends again
    manager.enable(made.id)
    assert claim(db, t + 40) == [] and sweep(db, t + 40)[0][0] == made.id


def test_a_one_off_fires_once_and_reads_completed_after_its_last_attempt(db: Database) -> None:
    manager = ScheduleManager(db)
    now = now_of(db)
    made = manager.create(name="once", run_at=now, endpoint="/x", max_retries=1, retry_delay_seconds=0)
    (attempt,) = claim(db, now)
    assert claim(db, now + 5) == [] and manager.get(made.id).next_run_at is None
    with db.begin() as conn:
        attempts.start_attempt(conn, attempt)
    with db.begin() as conn:  # a retryable failure: the slot is not over yet
        retry = attempts.finish_attempt(conn, attempt, FireOutcome("failed", retryable=True, status_code=503))
    assert retry is not None and sweep(db, now + 5) == []
    assert manager.get(made.id).enabled
    with db.begin() as conn:
        conn.execute(update(schedule_runs).where(schedule_runs.c.id == retry.attempt_id).values(not_before=None))
    run_all(db, [retry.attempt_id])
    assert sweep(db, now + 6) == [(made.id, COMPLETED)]
    done = manager.get(made.id)
    assert (done.enabled, done.disabled_reason) == (False, COMPLETED)
    assert [(r["attempt"], r["status"]) for r in runs_of(db, made.id)] == [(1, "retrying"), (2, "success")]


def test_end_at_stops_the_slots_and_disables_with_the_reason(db: Database) -> None:
    manager = ScheduleManager(db)
    now = now_of(db)
    made = manager.create(name="window", interval_seconds=10, start_at=now + 10, end_at=now + 30,
                          overlap_policy="allow", endpoint="/x")  # fmt: skip
    fired = claim(db, now + 100)  # late: "once" fires the newest missed slot, the window's last
    assert len(fired) == 1 and manager.get(made.id).next_run_at is None
    run_all(db, fired)
    ((sid, reason),) = sweep(db, now + 100)
    assert sid == made.id and reason.startswith("end_at passed")
    assert [r["scheduled_for"] for r in runs_of(db, made.id)] == [now + 30]


def test_expired_slots_are_skipped_recorded_and_counted(db: Database) -> None:
    manager = ScheduleManager(db)
    now = now_of(db)
    made = manager.create(name="expiring", interval_seconds=10, start_at=now - 1000, expires_after_seconds=5,
                          misfire_policy="all", overlap_policy="allow", endpoint="/x")  # fmt: skip
    with db.begin() as conn:  # beat was down for a minute: the missed slots are caught up ("all") ...
        conn.execute(update(schedules).where(schedules.c.id == made.id).values(next_run_at=now - 60))
    fired = claim(db, now)
    rows = runs_of(db, made.id)
    # ... except those already more than 5 s late: written "skipped", never published
    assert [r["status"] for r in rows] == ["skipped"] * 6 + ["queued"]
    assert len(fired) == 1 and "expires_after_seconds (5)" in rows[0]["error"]
    assert manager.get(made.id).skipped_slots == 6
    # the queued one is not taken in time (no worker): the sweep skips it
    assert sweep(db, now + 6) == [] and runs_of(db, made.id)[-1]["status"] == "skipped"
    assert manager.get(made.id).skipped_slots == 7 and manager.get(made.id).locked_by is None
    # and a worker that takes a slot too late skips it rather than firing it
    made2 = manager.create(name="late-worker", interval_seconds=10, expires_after_seconds=5, endpoint="/x")
    with db.begin() as conn:
        conn.execute(update(schedules).where(schedules.c.id == made2.id).values(next_run_at=now - 3))
    (late,) = claim(db, now)
    with db.begin() as conn:
        conn.execute(update(schedule_runs).where(schedule_runs.c.id == late).values(scheduled_for=now - 30))
    with db.begin() as conn:
        assert attempts.start_attempt(conn, late) is None
    row = runs_of(db, made2.id)[0]
    assert (row["status"], row["triggered_at"]) == ("skipped", None)
    assert manager.get(made2.id).skipped_slots == 1 and manager.get(made2.id).locked_by is None


def test_a_forbid_interval_skips_the_slots_its_run_overlapped_on_its_anchor(db: Database) -> None:
    manager = ScheduleManager(db)
    now = now_of(db)
    made = manager.create(name="slow", interval_seconds=2, start_at=now - 100, endpoint="/x", misfire_policy="skip")
    with db.begin() as conn:  # its run was in flight for 20 s: ten slots fell due meanwhile
        conn.execute(update(schedules).where(schedules.c.id == made.id).values(next_run_at=now - 20))
    (first,) = claim(db, now)
    assert claim(db, now) == []  # leased: the run is in flight
    run_all(db, [first])
    after = manager.get(made.id)
    assert after.locked_by is None and after.skipped_slots >= 9
    assert after.next_run_at > now - 1 and (after.next_run_at - made.start_at) % 2 == 0  # still on its anchor
    assert [r["scheduled_for"] for r in runs_of(db, made.id)] == [now - 20]


def test_the_preview_of_a_stored_schedule_counts_what_fired(db: Database) -> None:
    manager = ScheduleManager(db)
    made = manager.create(name="preview", interval_seconds=60, max_runs=3, overlap_policy="allow", endpoint="/x",
                          timezone="America/New_York")  # fmt: skip
    coming = manager.next_slots(made.id, count=10)
    assert [int(d.timestamp()) for d in coming] == [made.next_run_at + 60 * k for k in range(3)]
    assert coming[0].tzinfo == NY
    run_all(db, claim(db, made.next_run_at))  # one fired: two are left
    after = datetime.fromtimestamp(made.next_run_at, UTC)
    assert [int(d.timestamp()) for d in manager.next_slots(made.id, after=after)] == [
        made.next_run_at + 60, made.next_run_at + 120]  # fmt: skip
    cron = manager.create(name="cron-preview", cron="0 9 * * *", endpoint="/x")
    assert [d.hour for d in manager.next_slots(cron.id, count=3)] == [9, 9, 9]


def test_agno_rows_stay_cron_and_on_demand_rows_are_never_finished(db: Database) -> None:
    manager = ScheduleManager(db)
    now = now_of(db)
    with db.begin() as conn:  # as agno writes an on-demand schedule: cron "", no next run
        conn.execute(schedules.insert().values(
            id=str(uuid.uuid4()), name="agno-on-demand", method="POST", endpoint="/x", cron_expr="",
            timezone="UTC", timeout_seconds=60, max_retries=0, retry_delay_seconds=60, enabled=True,
            created_at=now,
        ))  # fmt: skip
    assert sweep(db, now) == []
    (row,) = manager.list_all()
    assert (row.kind, row.enabled) == ("on_demand", True)
