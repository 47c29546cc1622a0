"""agno 3.1 and kern_tasks on one database: each reads and changes what the other wrote,
and one script in agno's Python API gives the same answers from agno's ScheduleManager
and ours (missing ids, taken names, owner scope, lists, runs, provenance), on Postgres
and SQLite.

Every test gets a schema (or SQLite file) of its own. agno is an optional (test-extra)
dependency: without it this module is skipped.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Callable, Iterator

import pytest

pytest.importorskip("agno")

from agno.db.postgres import PostgresDb  # noqa: E402
from agno.scheduler import ScheduleManager as AgnoManager  # noqa: E402
from agno.scheduler.cron import next_run_for  # noqa: E402
from sqlalchemy import text  # noqa: E402

from kern_tasks.db import Database, db_now, schedule_runs, schedules  # noqa: E402
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
    page = manager.list_page()
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
    run = manager.trigger_run(first.id)
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
    assert len(manager.list()) == 3


# --- one script, agno's manager and ours ---------------------------------------------------


def agno_script(manager: Any, add_run: Callable[[str, str | None], None]) -> dict[str, Any]:
    """agno 3.1's ScheduleManager API, as agno's docs and cookbooks use it. Answers are
    recorded with ids replaced by labels, so two managers' answers can be compared."""
    seen: dict[str, Any] = {}
    common = {"cron": "0 9 * * *", "endpoint": "/agents/reporter/runs", "payload": {"message": "report"}}
    alice = manager.create(name="report", user_id="alice", **common)
    bob = manager.create(name="report", user_id="bob", **common)
    unowned = manager.create(name="report", **common)
    paused = manager.create(name="paused", enabled_on_create=False,
                            provenance={"managed_by": "ops", "created_by_run_id": "run-1"}, **common)
    labels = {alice.id: "alice", bob.id: "bob", unowned.id: "unowned", paused.id: "paused"}

    def label(schedule: Any) -> str | None:
        return None if schedule is None else labels.get(schedule.id, "?")

    def refused(call: Callable[[], Any]) -> tuple[str, ...]:
        try:
            call()
        except ValueError as exc:
            return ("ValueError", "already exists") if "already exists" in str(exc) else ("ValueError",)
        return ("accepted",)

    # A taken name (per owner) is a ValueError; skip answers the stored row.
    seen["duplicate alice"] = refused(lambda: manager.create(name="report", user_id="alice", **common))
    seen["duplicate unowned"] = refused(lambda: manager.create(name="report", **common))
    seen["skip"] = label(manager.create(name="report", user_id="alice", if_exists="skip", **common))
    seen["if_exists=merge"] = refused(lambda: manager.create(name="x", if_exists="merge", **common))
    seen["blank owner"] = refused(lambda: manager.create(name="x", user_id=" ", **common))
    seen["bad provenance"] = refused(lambda: manager.create(name="x", provenance={"user_id": "eve"}, **common))
    seen["enabled_on_create"] = (paused.enabled, paused.managed_by, paused.created_by_run_id)

    # A missing id: None, and False from delete; [] runs.
    seen["missing"] = (
        manager.get("no-such-id"), manager.update("no-such-id", description="x"), manager.enable("no-such-id"),
        manager.disable("no-such-id"), manager.delete("no-such-id"), manager.get_runs("no-such-id"),
    )

    # Owner scope: another owner's schedule is missing for every call.
    add_run(alice.id, "alice")
    add_run(alice.id, "alice")
    add_run(bob.id, "bob")
    seen["get"] = [label(manager.get(alice.id, user_id=who)) for who in ("alice", "bob", None)]
    seen["by bob"] = (
        label(manager.update(alice.id, user_id="bob", description="bob was here")),
        label(manager.disable(alice.id, user_id="bob")),
        label(manager.enable(paused.id, user_id="bob")),
        manager.delete(alice.id, user_id="bob"),
        len(manager.get_runs(alice.id, user_id="bob")),
    )
    after = manager.get(alice.id)
    seen["alice's after bob"] = (after.description, after.enabled, after.user_id, len(manager.get_runs(alice.id)))
    mine = manager.update(alice.id, user_id="alice", description="mine")
    seen["update by alice"] = (label(mine), mine.description, mine.user_id)
    seen["disable by alice"] = manager.disable(alice.id, user_id="alice").enabled
    seen["enable by alice"] = manager.enable(alice.id, user_id="alice").enabled
    seen["enable unscoped"] = manager.enable(paused.id).enabled
    manager.disable(paused.id)

    # Lists are plain lists, filtered by owner and state.
    seen["list is a list"] = (type(manager.list()) is list, type(manager.list_all()) is list)
    seen["list"] = sorted(label(s) for s in manager.list())
    seen["list alice"] = [label(s) for s in manager.list(user_id="alice")]
    seen["list disabled"] = [label(s) for s in manager.list(enabled=False)]
    seen["list pages"] = [len(manager.list(limit=3, page=p)) for p in (1, 2, 3)]
    seen["list_all"] = sorted(label(s) for s in manager.list_all())
    seen["list_all bob enabled"] = [label(s) for s in manager.list_all(enabled=True, user_id="bob")]

    # Runs: a plain list, newest first, filtered by the owner stamped on them.
    runs = manager.get_runs(alice.id)
    seen["get_runs"] = (type(runs) is list, len(runs), len(manager.get_runs(alice.id, limit=1)),
                        len(manager.get_runs(alice.id, user_id="alice")), len(manager.get_runs(alice.id, page=2)))
    seen["run fields"] = sorted({(r.schedule_id == alice.id, r.user_id, r.status) for r in runs})

    # Provenance through its own door.
    seen["stamp"] = (manager.stamp_provenance(bob.id, managed_by="ops", updated_by_run_id="run-2"),
                     manager.stamp_provenance("no-such-id", managed_by="ops"))
    stamped = manager.get(bob.id)
    seen["stamped"] = (stamped.managed_by, stamped.updated_by_run_id, stamped.user_id)

    # Delete by the owner takes the runs along.
    seen["delete by alice"] = (manager.delete(alice.id, user_id="alice"), manager.get(alice.id),
                               manager.get_runs(alice.id), manager.delete(alice.id))
    seen["trigger"] = manager.trigger(unowned.id)
    manager.close()
    return seen


async def agno_async_script(manager: Any) -> dict[str, Any]:
    """The async twins, as agno's async cookbooks call them."""
    made = await manager.acreate(name="async", cron="*/5 * * * *", endpoint="/agents/a/runs", user_id="carol")
    taken = None
    try:
        await manager.acreate(name="async", cron="*/5 * * * *", endpoint="/agents/a/runs", user_id="carol")
    except ValueError:
        taken = "ValueError"
    return {
        "taken": taken,
        "aget": [(await manager.aget(made.id, user_id=who)) is not None for who in ("carol", "dave")],
        "missing": (await manager.aget("nope"), await manager.aupdate("nope", description="d"),
                    await manager.aenable("nope"), await manager.adisable("nope"), await manager.adelete("nope")),
        "aupdate": (await manager.aupdate(made.id, user_id="carol", description="d")).description,
        "adisable": (await manager.adisable(made.id, user_id="carol")).enabled,
        "aenable": (await manager.aenable(made.id)).enabled,
        "alist": [s.name for s in await manager.alist(user_id="carol")],
        "alist_all": [s.name for s in await manager.alist_all(enabled=False)],
        "aget_runs": await manager.aget_runs(made.id),
        "adelete": (await manager.adelete(made.id, user_id="dave"), await manager.adelete(made.id, user_id="carol")),
    }


def run_adder(db: Database) -> Callable[[str, str | None], None]:
    """Adds a finished attempt as the fire path does: stamped with the schedule's owner."""
    counter = iter(range(1, 1000))

    def add_run(schedule_id: str, user_id: str | None) -> None:
        n = next(counter)
        with db.begin() as conn:
            conn.execute(schedule_runs.insert().values(
                id=f"run-{uuid.uuid4().hex}", schedule_id=schedule_id, attempt=1, status="success",
                status_code=200, user_id=user_id, scheduled_for=1_700_000_000 + n, created_at=1_700_000_000 + n,
            ))

    return add_run


def empty(db: Database) -> None:
    with db.begin() as conn:
        conn.execute(schedule_runs.delete())
        conn.execute(schedules.delete())


def test_one_agno_script_answers_the_same_from_agnos_manager_and_ours(db: Database, agno_on_ours: Any) -> None:
    theirs = agno_script(AgnoManager(agno_on_ours), run_adder(db))
    empty(db)
    ours = agno_script(ScheduleManager(db), run_adder(db))
    assert ours == theirs
    # And the answers are the ones agno documents (so the comparison cannot pass vacuously).
    assert theirs["duplicate alice"] == ("ValueError", "already exists")
    assert theirs["missing"] == (None, None, None, None, False, [])
    assert theirs["get"] == ["alice", None, "alice"]
    assert theirs["by bob"] == (None, None, None, False, 0)
    assert theirs["alice's after bob"] == (None, True, "alice", 2)
    assert theirs["list alice"] == ["alice"] and theirs["list disabled"] == ["paused"]
    assert theirs["get_runs"] == (True, 2, 1, 2, 0)
    assert theirs["delete by alice"] == (True, None, [], False)
    assert theirs["enabled_on_create"] == (False, "ops", "run-1")


def test_the_async_twins_answer_the_same(db: Database, agno_on_ours: Any) -> None:
    theirs = asyncio.run(agno_async_script(AgnoManager(agno_on_ours)))
    empty(db)
    ours = asyncio.run(agno_async_script(ScheduleManager(db)))
    assert ours == theirs
    assert theirs["taken"] == "ValueError" and theirs["aget"] == [True, False]
    assert theirs["missing"] == (None, None, None, None, False) and theirs["adelete"] == (False, True)
