"""agno 3.1 and kern_tasks on one Postgres database: each reads and changes what the other wrote.

Every test gets a schema of its own. agno is an optional (test-extra) dependency: without
it this module is skipped.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

pytest.importorskip("agno")

from agno.db.postgres import PostgresDb  # noqa: E402
from agno.scheduler import ScheduleManager as AgnoManager  # noqa: E402
from agno.scheduler.cron import next_run_for  # noqa: E402
from sqlalchemy import text  # noqa: E402

from kern_tasks.db import Database, db_now  # noqa: E402
from kern_tasks.errors import CronError  # noqa: E402
from kern_tasks.scheduler import ScheduleManager  # noqa: E402
from kern_tasks.scheduler.cron import next_run_epoch  # noqa: E402

from .conftest import EMPTY_SETTINGS, POSTGRES_URL  # noqa: E402

# The columns both sides have; agno's Schedule dataclass carries exactly these.
SHARED_FIELDS = (
    "id", "name", "description", "method", "endpoint", "payload", "cron_expr", "timezone",
    "timeout_seconds", "max_retries", "retry_delay_seconds", "enabled", "next_run_at",
    "locked_by", "locked_at", "user_id", "managed_by", "target_type", "target_id",
    "created_by_run_id", "created_by_session_id", "updated_by_run_id", "updated_by_session_id",
    "disabled_reason", "created_at", "updated_at",
)
RUN_FIELDS = (
    "id", "schedule_id", "attempt", "triggered_at", "completed_at", "status", "status_code",
    "run_id", "session_id", "error", "input", "output", "requirements", "user_id", "created_at",
)


@pytest.fixture
def agno_db(pg_schema: str) -> Iterator[PostgresDb]:
    db = PostgresDb(db_url=POSTGRES_URL, db_schema=pg_schema)
    yield db
    db.db_engine.dispose()


@pytest.fixture
def ours(pg_schema: str) -> Iterator[Database]:
    """Our Database on the same schema. Not upgraded: each test decides who makes the tables."""
    db = Database(POSTGRES_URL, schema=pg_schema, settings=EMPTY_SETTINGS)
    yield db
    db.dispose()


def shared(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in SHARED_FIELDS}


def now_of(db: Database) -> int:
    with db.connect() as conn:
        return db_now(conn)


# --- agno writes, we read and change -----------------------------------------------------


def test_schedule_written_by_agno_is_read_updated_and_toggled_by_ours(
    agno_db: PostgresDb, ours: Database
) -> None:
    agno_mgr = AgnoManager(agno_db)
    written = agno_mgr.create(
        name="nightly-report",
        cron="0 3 * * *",
        endpoint="/agents/reporter/runs",
        payload={"message": "report", "options": {"depth": 2, "tags": ["a", "b"]}},
        timezone="America/New_York",
        description="made by agno",
        timeout_seconds=900,
        max_retries=2,
        retry_delay_seconds=30,
        if_exists="raise",
    )
    owned = agno_mgr.create(name="nightly-report", cron="0 4 * * *", endpoint="/agents/a/runs", user_id="alice")
    ours.upgrade()  # an existing agno deployment adopting kern_tasks
    manager = ScheduleManager(ours)

    # Read: get, get_by_name (per owner), list.
    got = manager.get(written.id)
    assert shared(got) == shared(written)
    assert got.payload == {"message": "report", "options": {"depth": 2, "tags": ["a", "b"]}}
    assert (got.timezone, got.timeout_seconds, got.max_retries, got.retry_delay_seconds) == (
        "America/New_York", 900, 2, 30,
    )
    assert (got.misfire_policy, got.overlap_policy, got.jitter_seconds) == ("once", "forbid", 0)
    assert manager.get_by_name("nightly-report") == got
    assert manager.get_by_name("nightly-report", user_id="alice").id == owned.id
    page = manager.list()
    assert page.total_count == 2
    assert [s.id for s in page] == [s.id for s in agno_mgr.list()]
    assert {s.id for s in manager.list(user_id="alice")} == {owned.id}

    # Update cron and payload: next_run_at is recomputed, and agno computes the same slot.
    changed = manager.update(written.id, cron="30 4 * * *", payload={"message": "changed"})
    now = now_of(ours)
    assert changed.cron_expr == "30 4 * * *" and changed.payload == {"message": "changed"}
    assert changed.next_run_at == next_run_epoch("30 4 * * *", "America/New_York", now)
    assert changed.next_run_at != written.next_run_at
    assert changed.next_run_at == next_run_for("30 4 * * *", "America/New_York")
    assert changed.updated_at is not None and changed.updated_at >= now - 1
    seen = agno_mgr.get(written.id)
    assert shared(seen) == shared(changed)

    # Disable and enable.
    off = manager.disable(written.id, reason="maintenance")
    assert off.enabled is False
    seen = agno_mgr.get(written.id)
    assert (seen.enabled, seen.disabled_reason) == (False, "maintenance")
    assert [s.id for s in agno_mgr.list(enabled=True)] == [owned.id]
    with ours.begin() as conn:  # long disabled: the stored slot is in the past
        conn.execute(text(f'UPDATE "{ours.schema}".agno_schedules SET next_run_at = 1000 WHERE id = :id'),
                     {"id": written.id})
    on = manager.enable(written.id)
    now = now_of(ours)
    assert (on.enabled, on.disabled_reason) == (True, None)
    assert on.next_run_at == next_run_epoch("30 4 * * *", "America/New_York", now) and on.next_run_at > now
    seen = agno_mgr.get(written.id)
    assert (seen.enabled, seen.disabled_reason, seen.next_run_at) == (True, None, on.next_run_at)
    # The other owner's row was never touched.
    assert shared(manager.get(owned.id)) == shared(owned)


def test_agno_payload_none_is_json_null_and_reads_as_none(agno_db: PostgresDb, ours: Database) -> None:
    written = AgnoManager(agno_db).create(name="no-payload", cron="*/15 * * * *", endpoint="/agents/a/runs")
    assert written.payload is None
    ours.upgrade()
    with ours.connect() as conn:
        stored = conn.execute(
            text(f'SELECT payload IS NULL, jsonb_typeof(payload) FROM "{ours.schema}".agno_schedules')
        ).one()
    assert tuple(stored) == (False, "null")  # agno stores JSON null, not SQL NULL
    manager = ScheduleManager(ours)
    assert manager.get(written.id).payload is None
    assert manager.get_by_name("no-payload").payload is None
    assert [s.payload for s in manager.list()] == [None]
    # Changing something else keeps it None; setting None again is no change at all.
    assert manager.update(written.id, description="still none").payload is None
    before = manager.get(written.id)
    assert manager.update(written.id, payload=None) == before
    # And a real payload replaces the JSON null.
    assert manager.update(written.id, payload={"k": "v"}).payload == {"k": "v"}
    assert AgnoManager(agno_db).get(written.id).payload == {"k": "v"}


def test_agno_runs_are_read_by_ours(agno_db: PostgresDb, ours: Database) -> None:
    written = AgnoManager(agno_db).create(name="with-runs", cron="0 * * * *", endpoint="/workflows/w/runs")
    for attempt, status in ((1, "failed"), (2, "success")):
        agno_db.create_schedule_run({
            "id": f"agno-run-{attempt}", "schedule_id": written.id, "attempt": attempt,
            "triggered_at": 1_700_000_000 + attempt, "completed_at": 1_700_000_010 + attempt,
            "status": status, "status_code": 500 if status == "failed" else 200,
            "run_id": f"r{attempt}", "session_id": "s", "error": "boom" if status == "failed" else None,
            "input": {"message": "hi"}, "output": {"content": "ok"}, "requirements": None,
            "user_id": None, "created_at": 1_700_000_000 + attempt,
        })
    ours.upgrade()
    runs = ScheduleManager(ours).runs(written.id)
    assert runs.total_count == 2
    assert [(r.id, r.attempt, r.status, r.status_code, r.error) for r in runs] == [
        ("agno-run-2", 2, "success", 200, None),
        ("agno-run-1", 1, "failed", 500, "boom"),
    ]
    assert runs.data[1].input == {"message": "hi"} and runs.data[1].output == {"content": "ok"}
    assert (runs.data[0].manual, runs.data[0].scheduled_for) == (False, None)


def test_agno_only_cron_syntax_can_still_be_edited_and_disabled(agno_db: PostgresDb, ours: Database) -> None:
    """agno validates cron with croniter, which accepts "5#3" (third Friday); ours does not
    parse it. Such a row must stay readable, editable and - above all - disableable."""
    written = AgnoManager(agno_db).create(name="third-friday", cron="0 9 * * 5#3", endpoint="/agents/a/runs")
    on_demand = AgnoManager(agno_db).create(name="on-demand", cron="", endpoint="/agents/a/runs")
    ours.upgrade()
    manager = ScheduleManager(ours)
    assert manager.get(written.id).cron_expr == "0 9 * * 5#3"
    assert manager.update(written.id, payload={"x": 1}).next_run_at == written.next_run_at

    off = manager.disable(written.id, reason="unsupported cron")
    assert (off.enabled, off.disabled_reason, off.next_run_at) == (False, "unsupported cron", written.next_run_at)
    with pytest.raises(CronError) as err:
        manager.enable(written.id)
    assert err.value.field == "cron" and 'day-of-week field "5#3"' in err.value.message
    assert manager.get(written.id) == off  # the failed enable wrote nothing
    fixed = manager.update(written.id, cron="0 9 * * 5", enabled=True)
    assert fixed.enabled is True and fixed.next_run_at == next_run_epoch("0 9 * * 5", "UTC", now_of(ours))
    assert AgnoManager(agno_db).get(written.id).cron_expr == "0 9 * * 5"

    # agno's on-demand schedules (cron "") have no slot, enabled or not.
    assert manager.get(on_demand.id).next_run_at is None
    assert manager.disable(on_demand.id).next_run_at is None
    assert manager.enable(on_demand.id).next_run_at is None


# --- we write, agno reads --------------------------------------------------------------


def test_schedule_written_by_ours_is_read_by_agno(agno_db: PostgresDb, ours: Database) -> None:
    ours.upgrade()  # kern_tasks makes the tables this time
    manager = ScheduleManager(ours)
    first = manager.create(
        name="digest",
        cron="0 9 * * 1-5",
        endpoint="/workflows/daily-digest/runs",
        method="post",
        description="weekday digest",
        payload={"message": "digest", "nested": {"list": [1, 2.5, None, True], "s": "é"}},
        timezone="Europe/Berlin",
        timeout_seconds=600,
        max_retries=3,
        retry_delay_seconds=15,
        user_id="bob",
    )
    second = manager.create(name="health", cron="*/5 * * * *", endpoint="/health", method="GET")
    agno_mgr = AgnoManager(agno_db)

    seen = agno_mgr.get(first.id)
    assert seen is not None
    assert shared(seen) == shared(first)
    assert (seen.payload, seen.timezone, seen.user_id, seen.method) == (
        {"message": "digest", "nested": {"list": [1, 2.5, None, True], "s": "é"}}, "Europe/Berlin", "bob", "POST",
    )
    assert (seen.target_type, seen.target_id) == ("workflow", "daily-digest")  # stamped as agno does
    assert shared(agno_mgr.get(second.id)) == shared(second)

    # Listing: agno orders by created_at desc (id desc on ties), like ours.
    listed = agno_mgr.list()
    assert [s.id for s in listed] == [s.id for s in manager.list()]
    assert {s.id for s in listed} == {first.id, second.id}
    assert [s.id for s in agno_mgr.list(user_id="bob")] == [first.id]
    row = agno_db.get_schedule_by_name("digest", user_id="bob")
    assert row is not None and row["id"] == first.id and row["payload"] == first.payload
    assert agno_db.get_schedule_by_name("digest") is None  # unowned bucket: not bob's row
    assert row["misfire_policy"] == "once"  # agno reflects our table, our columns come along

    # agno's own run history reads the run rows we write.
    run = manager.trigger(first.id)
    (agno_run,) = agno_mgr.get_runs(first.id)
    assert {f: getattr(agno_run, f) for f in RUN_FIELDS} == {f: getattr(run, f) for f in RUN_FIELDS}
    assert (agno_run.status, agno_run.attempt, agno_run.user_id) == ("queued", 1, "bob")
    assert agno_mgr.get_runs(second.id) == []


def test_agno_writes_into_tables_ours_created(agno_db: PostgresDb, ours: Database) -> None:
    ours.upgrade()
    manager = ScheduleManager(ours)
    mine = manager.create(name="taken", cron="0 9 * * *", endpoint="/agents/a/runs", user_id="bob")
    agno_mgr = AgnoManager(agno_db)

    # agno's insert leaves our columns out; their defaults fill in.
    theirs = agno_mgr.create(name="agno-side", cron="15 6 * * *", endpoint="/teams/t/runs", payload={"x": 1})
    got = manager.get(theirs.id)
    assert shared(got) == shared(theirs)
    assert (got.misfire_policy, got.catchup_window_seconds, got.overlap_policy, got.jitter_seconds) == (
        "once", 3600, "forbid", 0,
    )
    # agno sees our names as taken (per owner).
    with pytest.raises(ValueError, match="already exists"):
        agno_mgr.create(name="taken", cron="0 9 * * *", endpoint="/agents/a/runs", user_id="bob")
    assert agno_mgr.create(name="taken", cron="0 9 * * *", endpoint="/agents/a/runs").user_id is None

    # agno changes our row; ours reads the change and keeps its own columns.
    manager.update(mine.id, jitter_seconds=30, misfire_policy="skip")
    changed = agno_mgr.update(mine.id, cron_expr="0 10 * * *", payload={"from": "agno"})
    assert changed is not None and changed.cron_expr == "0 10 * * *"
    got = manager.get(mine.id)
    assert (got.cron_expr, got.payload, got.next_run_at) == ("0 10 * * *", {"from": "agno"}, changed.next_run_at)
    assert (got.jitter_seconds, got.misfire_policy) == (30, "skip")
    assert got.next_run_at == next_run_epoch("0 10 * * *", "UTC", now_of(ours))
    assert manager.list().total_count == 3
