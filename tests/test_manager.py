"""ScheduleManager against real Postgres and SQLite: CRUD, if_exists, paging, triggers,
owner scope and the endpoint policy. (tests/test_agno_interop.py runs one script against
agno's manager and ours.)"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from datetime import datetime, timezone as dt_timezone

import pytest
from sqlalchemy import func, select, update

from kern_tasks.db import Database, db_now
from kern_tasks.db.tables import schedule_runs, schedules
from kern_tasks.errors import Conflict, NotFound, ScheduleDisabled, ValidationError
from kern_tasks.scheduler import ScheduleManager, next_run

from .conftest import EMPTY_SETTINGS


def make(manager: ScheduleManager, name: str = "daily_digest", **kw):
    kw.setdefault("cron", "0 9 * * 1-5")
    kw.setdefault("endpoint", "/workflows/daily-digest/runs")
    return manager.create(name=name, **kw)


def row_count(db: Database, table=schedules) -> int:
    with db.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_seed_startup_pattern_creates_one_schedule(db: Database) -> None:
    manager = ScheduleManager(db=db)
    s = manager.create(
        name="daily_digest", cron="0 9 * * 1-5", endpoint="/workflows/daily-digest/runs", if_exists="update"
    )
    assert s.name == "daily_digest" and s.cron_expr == "0 9 * * 1-5"
    assert s.method == "POST" and s.timezone == "UTC" and s.enabled is True
    assert (s.timeout_seconds, s.max_retries, s.retry_delay_seconds) == (3600, 0, 60)
    assert (s.target_type, s.target_id) == ("workflow", "daily-digest")
    with db.connect() as conn:
        now = db_now(conn)
    expected = next_run("0 9 * * 1-5", "UTC", datetime.fromtimestamp(now, dt_timezone.utc))
    assert s.next_run_at in (int(expected.timestamp()), int(expected.timestamp()) + 86400 * 3)
    assert s.next_run_at > now


def test_next_run_at_follows_the_time_zone(db: Database) -> None:
    s = make(ScheduleManager(db), cron="0 9 * * *", timezone="America/New_York")
    fire = datetime.fromtimestamp(s.next_run_at, dt_timezone.utc).astimezone(
        __import__("zoneinfo").ZoneInfo("America/New_York")
    )
    assert (fire.hour, fire.minute) == (9, 0)


def test_crud_round_trip(db: Database) -> None:
    manager = ScheduleManager(db)
    s = make(manager, payload={"message": "digest", "n": 1}, description="weekday digest", max_retries=2)
    assert manager.get(s.id) == s
    assert manager.get_by_name("daily_digest") == s
    assert manager.get(s.id).payload == {"message": "digest", "n": 1}

    changed = manager.update(s.id, description="new", payload={"message": "other"})
    assert changed.description == "new" and changed.payload == {"message": "other"}
    assert changed.next_run_at == s.next_run_at  # timing did not change
    assert changed.updated_at >= s.updated_at

    assert manager.delete(s.id) is True
    # agno's conventions for a missing id: None, and False from delete; ours raise.
    assert manager.get(s.id) is None
    assert manager.delete(s.id) is False
    assert manager.update(s.id, description="x") is None
    assert manager.enable(s.id) is None and manager.disable(s.id) is None
    with pytest.raises(NotFound, match=s.id):
        manager.get_or_raise(s.id)
    with pytest.raises(NotFound):
        manager.trigger_run(s.id)


def test_update_recomputes_next_run_at_on_timing_changes(db: Database) -> None:
    manager = ScheduleManager(db)
    s = make(manager, cron="0 9 * * *")
    moved = manager.update(s.id, cron="30 17 * * *")
    assert moved.cron_expr == "30 17 * * *"
    assert datetime.fromtimestamp(moved.next_run_at, dt_timezone.utc).strftime("%H:%M") == "17:30"
    zoned = manager.update(s.id, timezone="Asia/Kolkata")
    assert datetime.fromtimestamp(zoned.next_run_at, dt_timezone.utc).strftime("%H:%M") == "12:00"


def test_enable_disable_and_stale_next_run(db: Database) -> None:
    manager = ScheduleManager(db)
    s = make(manager, cron="* * * * *")
    off = manager.disable(s.id, reason="maintenance")
    assert off.enabled is False and off.disabled_reason == "maintenance"
    assert [x.id for x in manager.list(enabled=False)] == [s.id]
    assert manager.list(enabled=True) == []
    # A long-disabled schedule must not come back with a slot in the past.
    with db.begin() as conn:
        conn.execute(update(schedules).where(schedules.c.id == s.id).values(next_run_at=1000))
        now = db_now(conn)
    on = manager.enable(s.id)
    assert on.enabled is True and on.disabled_reason is None
    assert on.next_run_at > now


def test_list_pages_newest_first_with_total(db: Database) -> None:
    manager = ScheduleManager(db)
    for i in range(7):
        make(manager, name=f"job-{i}")
    first = manager.list_page(limit=3, page=1)
    assert first.total_count == 7 and first.total_pages == 3 and len(first) == 3
    names = [s.name for p in (1, 2, 3) for s in manager.list_page(limit=3, page=p)]
    assert sorted(names) == sorted(f"job-{i}" for i in range(7))
    assert len(set(names)) == 7
    assert manager.list_page(limit=3, page=4).data == []
    # agno's list is the same page as a plain list; list_all is every row, in that order.
    assert manager.list(limit=3, page=2) == manager.list_page(limit=3, page=2).data
    assert type(manager.list()) is list and len(manager.list()) == 7
    assert manager.list_all() == [s for p in (1, 2, 3) for s in manager.list_page(limit=3, page=p)]
    with pytest.raises(ValidationError, match="limit"):
        manager.list_page(limit=0)
    with pytest.raises(ValidationError, match="page"):
        manager.list(page=0)


def test_if_exists_raise_names_the_clash(db: Database) -> None:
    manager = ScheduleManager(db)
    first = make(manager)
    with pytest.raises(Conflict, match='"daily_digest" already exists') as err:
        make(manager, cron="0 10 * * *")
    assert first.id in str(err.value)
    assert isinstance(err.value, ValueError)  # what agno raises, so agno code catches it
    assert manager.get(first.id) == first
    assert row_count(db) == 1


def test_if_exists_update_is_idempotent(db: Database) -> None:
    manager = ScheduleManager(db)
    first = make(manager, if_exists="update")
    time.sleep(1.1)  # a write now would move updated_at and next_run_at's base
    again = make(manager, if_exists="update")
    assert again == first  # not even updated_at moved
    assert row_count(db) == 1


def test_if_exists_update_changes_what_differs_and_keeps_enabled(db: Database) -> None:
    manager = ScheduleManager(db)
    first = make(manager, if_exists="update")
    manager.disable(first.id)
    changed = make(manager, cron="0 10 * * 1-5", if_exists="update")
    assert changed.id == first.id and changed.cron_expr == "0 10 * * 1-5"
    assert changed.enabled is False  # someone disabled it; a restart does not undo that
    assert changed.next_run_at != first.next_run_at


def test_if_exists_skip_leaves_edits_alone(db: Database) -> None:
    manager = ScheduleManager(db)
    first = make(manager)
    edited = manager.update(first.id, cron="15 8 * * *")
    kept = make(manager, if_exists="skip")
    assert kept == edited
    assert row_count(db) == 1


def test_names_are_unique_per_owner(db: Database) -> None:
    manager = ScheduleManager(db)
    make(manager)
    make(manager, user_id="alice")
    make(manager, user_id="bob")
    with pytest.raises(Conflict):
        make(manager, user_id="alice")
    assert manager.get_by_name("daily_digest", user_id="alice").user_id == "alice"
    assert row_count(db) == 3
    other = make(manager, name="other")
    with pytest.raises(Conflict):
        manager.update(other.id, name="daily_digest")


def test_trigger_queues_one_manual_run_without_moving_the_cron(db: Database) -> None:
    manager = ScheduleManager(db)
    s = make(manager)
    run = manager.trigger_run(s.id)
    assert run.status == "queued" and run.manual is True and run.attempt == 1
    assert manager.get(s.id).next_run_at == s.next_run_at
    runs = manager.runs(s.id)
    assert runs.total_count == 1 and runs.data[0].id == run.id
    assert manager.get_run(s.id, run.id) == runs.data[0]
    assert manager.get_runs(s.id) == runs.data
    with pytest.raises(NotFound):
        manager.trigger_run("nope")
    with pytest.raises(NotFound):
        manager.trigger("nope")
    with pytest.raises(NotFound):
        manager.get_run(s.id, "nope")
    # agno's trigger answers nothing; ours queues the run all the same.
    time.sleep(1.1)  # the same second would answer the run already queued
    assert manager.trigger(s.id) is None
    assert manager.runs(s.id).total_count == 2


def test_trigger_needs_an_enabled_schedule(db: Database) -> None:
    manager = ScheduleManager(db)
    s = make(manager)
    manager.disable(s.id)
    for trigger in (manager.trigger_run, manager.trigger):
        with pytest.raises(ScheduleDisabled, match="'daily_digest' is disabled: enable it first") as err:
            trigger(s.id)
        assert isinstance(err.value, Conflict)
    assert manager.get_runs(s.id) == []


def test_runs_newest_first_and_cascade_on_delete(db: Database) -> None:
    manager = ScheduleManager(db)
    s = make(manager)
    with db.begin() as conn:
        for i in range(5):
            conn.execute(
                schedule_runs.insert().values(
                    id=f"r{i}", schedule_id=s.id, attempt=1, status="success",
                    scheduled_for=1000 + i, created_at=1000 + i,
                )
            )
    page = manager.runs(s.id, limit=2)
    assert [r.id for r in page] == ["r4", "r3"] and page.total_count == 5
    assert [r.id for r in manager.runs(s.id, limit=2, page=3)] == ["r0"]
    with pytest.raises(NotFound):
        manager.runs("missing")
    assert manager.get_runs("missing") == []
    assert [r.id for r in manager.get_runs(s.id, limit=2, page=2)] == ["r2", "r1"]
    assert manager.delete(s.id)
    assert row_count(db, schedule_runs) == 0


def test_create_options_of_agno(db: Database) -> None:
    manager = ScheduleManager(db)
    off = make(manager, enabled_on_create=False, provenance={"managed_by": "ops", "created_by_run_id": "r1"})
    assert (off.enabled, off.managed_by, off.created_by_run_id) == (False, "ops", "r1")
    with pytest.raises(ValidationError, match="provenance: may only carry") as err:
        make(manager, name="x", provenance={"updated_by_run_id": "r2"})
    assert isinstance(err.value, ValueError)
    with pytest.raises(ValidationError, match="enabled_on_create"):
        make(manager, name="x", enabled_on_create="yes")
    assert manager.stamp_provenance(off.id, updated_by_run_id="r2", target_id="t") is True
    assert (manager.get(off.id).updated_by_run_id, manager.get(off.id).target_id) == ("r2", "t")
    assert manager.stamp_provenance("nope", managed_by="ops") is False
    with pytest.raises(ValidationError, match="provenance"):
        manager.stamp_provenance(off.id, name="renamed")
    assert row_count(db) == 1


def serving(*agent_ids: str):
    """The endpoint policy of an AgentOS serving these agents (and GET /health)."""
    from kern_tasks.agent import Agent
    from kern_tasks.os.targets import Targets, by_id

    return Targets(agents=by_id([Agent(model="offline", id=a) for a in agent_ids], "agent"))


def test_the_endpoint_policy_is_applied_on_every_write_that_aims_a_schedule(db: Database) -> None:
    policy = serving("demo")
    manager = ScheduleManager(db, endpoint_policy=policy)
    with pytest.raises(ValidationError, match='unknown agent "ghost"; this AgentOS serves: POST /agents/demo/runs'):
        make(manager, endpoint="/agents/ghost/runs")
    with pytest.raises(ValidationError, match="call it with POST, not GET") as err:
        make(manager, endpoint="/agents/demo/runs", method="get")
    assert err.value.field == "method"
    s = make(manager, endpoint="/agents/demo/runs")
    with pytest.raises(ValidationError, match="not served by this AgentOS"):
        manager.update(s.id, endpoint="/schedules")
    assert manager.update(s.id, description="changed").description == "changed"

    # A row aimed elsewhere (written by agno, or before the agent was removed) can be read,
    # changed and disabled, but not enabled or triggered.
    bare = ScheduleManager(db)
    gone = make(bare, name="gone", endpoint="/agents/retired/runs")
    assert manager.update(gone.id, description="kept").description == "kept"
    assert manager.disable(gone.id).enabled is False
    for call in (manager.enable, lambda i: manager.update(i, enabled=True)):
        with pytest.raises(ValidationError, match='unknown agent "retired"'):
            call(gone.id)
    assert manager.get(gone.id).enabled is False
    assert bare.enable(gone.id).enabled is True  # no policy: any path
    for call in (manager.trigger_run, manager.trigger, manager.enable):
        with pytest.raises(ValidationError, match='unknown agent "retired"'):
            call(gone.id)
    assert manager.get_runs(gone.id) == []
    assert manager.trigger_run(s.id).status == "queued"
    assert row_count(db) == 2


def test_a_slot_is_materialised_once_per_attempt(db: Database) -> None:
    from sqlalchemy.exc import IntegrityError

    s = make(ScheduleManager(db))
    values = dict(schedule_id=s.id, attempt=1, status="queued", scheduled_for=5000, created_at=5000)
    with db.begin() as conn:
        conn.execute(schedule_runs.insert().values(id="a", **values))
    with pytest.raises(IntegrityError):
        with db.begin() as conn:
            conn.execute(schedule_runs.insert().values(id="b", **values))


def test_async_twins(db: Database) -> None:
    manager = ScheduleManager(db)

    async def scenario() -> None:
        s = await manager.acreate(name="async-one", cron="@hourly", endpoint="/health", method="GET")
        assert (await manager.aget(s.id)).name == "async-one"
        assert await manager.aget("nope") is None
        assert [x.id for x in await manager.alist()] == [s.id] == [x.id for x in await manager.alist_all()]
        assert (await manager.alist_page()).total_count == 1
        assert (await manager.aupdate(s.id, description="d")).description == "d"
        assert (await manager.adisable(s.id)).enabled is False
        assert (await manager.aenable(s.id)).enabled is True
        assert await manager.astamp_provenance(s.id, managed_by="ops") is True
        run = await manager.atrigger_run(s.id)
        assert [r.id for r in await manager.aget_runs(s.id)] == [run.id]
        assert (await manager.aruns(s.id)).total_count == 1
        assert await manager.adelete(s.id) is True
        assert await manager.adelete(s.id) is False

    asyncio.run(scenario())


# --- several processes creating the same name at once --------------------------------


def _create_in_process(url: str, schema: str | None, mode: str, barrier, results) -> None:
    db = Database(url, schema=schema, settings=EMPTY_SETTINGS)
    manager = ScheduleManager(db)
    barrier.wait()
    try:
        s = manager.create(name="race", cron="*/5 * * * *", endpoint="/agents/a/runs", if_exists=mode)
        results.put(("ok", s.id))
    except Conflict:
        results.put(("conflict", None))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put(("error", repr(exc)))


@pytest.mark.parametrize("mode", ["update", "skip", "raise"])
def test_concurrent_creators_make_exactly_one_row(db: Database, db_url_schema, mode: str) -> None:
    url, schema = db_url_schema
    ctx = multiprocessing.get_context("spawn")
    n = 6
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_create_in_process, args=(url, schema, mode, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert row_count(db) == 1
    kinds = [kind for kind, _ in outcomes]
    assert "error" not in kinds, outcomes
    if mode == "raise":
        assert kinds.count("ok") == 1 and kinds.count("conflict") == n - 1
    else:
        assert kinds == ["ok"] * n
        assert len({sid for _, sid in outcomes}) == 1
