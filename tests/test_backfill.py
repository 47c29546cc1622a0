"""Backfill: `ScheduleManager.backfill` queues a range's slots, each once, marked backfill.

- through the manager on Postgres and SQLite (no processes): which slots, idempotence, the
  range's checks (each refusal names its field and writes nothing);
- end to end on Postgres + Redis database 7 with a real beat and worker: a 2-hour range of
  an every-10-minutes schedule fires its 12 slots once, one after another (overlap
  "forbid"), and the same backfill again adds none.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Iterator

import pytest
from sqlalchemy import select

from kern_tasks.db import Database, schedule_runs
from kern_tasks.errors import NotFound, ScheduleDisabled, ValidationError
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.scheduler.backfill import MAX_BACKFILL_SLOTS
from tests.conftest import EMPTY_SETTINGS
from tests.fire_stack import fire_stack
from tests.processes import Processes, wait_for
from tests.targets import TargetServer

REDIS_DB = 7
EVERY_10_MIN = "*/10 * * * *"


def two_hours_back(manager: ScheduleManager) -> tuple[int, int]:
    """[start, end): the last two whole hours of 10-minute slots before now."""
    end = int(datetime.now(UTC).timestamp()) // 600 * 600
    return end - 7200, end


def runs_of(db: Database, schedule_id: str) -> list[Any]:
    with db.connect() as conn:
        return list(conn.execute(
            select(schedule_runs).where(schedule_runs.c.schedule_id == schedule_id)
            .order_by(schedule_runs.c.scheduled_for, schedule_runs.c.attempt)
        ).mappings())


def test_backfill_queues_each_slot_of_the_range_once(db: Database) -> None:
    manager = ScheduleManager(db)
    s = manager.create(name="tenly", cron=EVERY_10_MIN, endpoint="/hook")
    start, end = two_hours_back(manager)
    first = manager.backfill(s.id, start, end)
    assert first.slots == tuple(range(start, end, 600)) and len(first.slots) == 12
    assert [r.scheduled_for for r in first.added] == list(first.slots)
    assert all(r.backfill and not r.manual and r.attempt == 1 and r.status == "queued" for r in first.added)
    # The same range again, and an overlapping one given as ISO text: nothing new but the new slots.
    again = manager.backfill(s.id, start, end)
    assert (len(again.slots), len(again.added), again.existing) == (12, 0, 12)
    wider = manager.backfill(s.id, datetime.fromtimestamp(start - 1200, UTC).isoformat(), end)
    assert [r.scheduled_for for r in wider.added] == [start - 1200, start - 600]
    assert len(runs_of(db, s.id)) == 14
    assert manager.backfill(s.id, start, end).to_dict()["added"] == 0


def test_backfill_refuses_bad_ranges_naming_the_field(db: Database) -> None:
    manager = ScheduleManager(db)
    s = manager.create(name="secondly", cron="* * * * * *", endpoint="/hook")
    start, end = two_hours_back(manager)
    with pytest.raises(ValidationError) as too_many:
        manager.backfill(s.id, start, end)  # 7200 slots
    assert too_many.value.field == "end" and str(MAX_BACKFILL_SLOTS) in str(too_many.value)
    cases = [((end, start), "end"), ((start, end + 3600), "end"), (("yesterday", end), "start"),
             ((start, True), "end")]
    for (a, b), field in cases:
        with pytest.raises(ValidationError) as bad:
            manager.backfill(s.id, a, b)
        assert bad.value.field == field, (a, b)
    with pytest.raises(NotFound):
        manager.backfill("no-such-id", start, end)
    manager.disable(s.id)
    with pytest.raises(ScheduleDisabled):
        manager.backfill(s.id, end - 10, end)
    assert runs_of(db, s.id) == []


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Database, TargetServer, Processes]]:
    with fire_stack(tmp_path_factory.mktemp("backfill"), REDIS_DB) as made:
        made.procs.worker(concurrency=4)
        made.procs.wait_for_log("worker", " ready.", timeout=60)
        made.procs.beat(max_interval=1)
        yield made.db, made.target, made.procs


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_backfill_fires_12_slots_once_on_beat_and_a_worker(stack: tuple[Database, TargetServer, Processes]) -> None:
    db, target, cluster = stack
    manager = ScheduleManager(db)
    s = manager.create(name="tenly-fired", cron=EVERY_10_MIN, endpoint="/tenly")
    start, end = two_hours_back(manager)
    assert len(manager.backfill(s.id, start, end).added) == 12

    def settled() -> list[Any] | None:
        rows = runs_of(db, s.id)
        return rows if len(rows) == 12 and all(r["status"] == "success" for r in rows) else None

    try:
        rows = wait_for(settled, 90, what="12 backfilled slots to succeed")
    except AssertionError:
        print(cluster.dump_logs(tail=100))
        raise
    assert [r["scheduled_for"] for r in rows] == list(range(start, end, 600))
    assert all(r["backfill"] and r["attempt"] == 1 for r in rows)
    keys = [r.headers["idempotency-key"] for r in target.requests("/tenly")]
    assert sorted(keys) == sorted(f"kern:{s.id}:slot:{slot}" for slot in range(start, end, 600))
    # overlap "forbid": each slot started after the previous one ended (oldest first).
    for before, after in zip(rows, rows[1:]):
        assert after["triggered_at"] >= before["completed_at"]
    again = manager.backfill(s.id, start, end)
    assert (len(again.added), again.existing) == (0, 12)
    # A manual run of another schedule fires only through beat's sweep: once it has, that
    # sweep came after the second backfill, and still one run per slot, 12 calls.
    probe = manager.create(name="probe", cron="0 0 1 1 *", endpoint="/probe")
    probe_run = manager.trigger_run(probe.id)
    wait_for(lambda: manager.get_run(probe.id, probe_run.id).status == "success", 30, what="the probe run")
    assert len(runs_of(db, s.id)) == 12 and len(target.requests("/tenly")) == 12
    print(f"backfill: {len(rows)} slots fired once; again added {len(again.added)}")


def test_backfill_over_http(db: Database) -> None:
    """POST /schedules/{id}/backfill on a real AgentOS: 202 with the counts; a bad range is a
    422 naming the field; an unknown schedule a 404; queue/priority round-trip the API."""
    import httpx

    from kern_tasks.agent import Agent
    from kern_tasks.os import AgentOS
    from tests.os_server import LiveServer

    agent_os = AgentOS(agents=[Agent(model="offline", name="Demo")], db=db, settings=EMPTY_SETTINGS)
    with LiveServer(agent_os.get_app()) as server, httpx.Client(base_url=server.url, trust_env=False) as client:
        made = client.post("/schedules", json={"name": "api-tenly", "cron_expr": EVERY_10_MIN,
                                               "endpoint": "/agents/demo/runs", "queue": "reports", "priority": 6})
        assert made.status_code == 201, made.text
        assert (made.json()["queue"], made.json()["priority"]) == ("reports", 6)
        schedule_id = made.json()["id"]
        start, end = two_hours_back(ScheduleManager(db))
        body = {"start": datetime.fromtimestamp(start, UTC).isoformat(), "end": end}
        first = client.post(f"/schedules/{schedule_id}/backfill", json=body)
        assert first.status_code == 202, first.text
        assert {k: first.json()[k] for k in ("slots", "added", "existing")} == {"slots": 12, "added": 12, "existing": 0}
        assert all(run["backfill"] for run in first.json()["runs"])
        again = client.post(f"/schedules/{schedule_id}/backfill", json=body).json()
        assert (again["added"], again["existing"]) == (0, 12)
        bad = client.post(f"/schedules/{schedule_id}/backfill", json={"start": end, "end": start})
        assert bad.status_code == 422 and bad.json()["field"] == "end", bad.text
        assert client.post("/schedules/nope/backfill", json=body).status_code == 404
        bad_queue = client.patch(f"/schedules/{schedule_id}", json={"queue": "a b"})
        assert bad_queue.status_code == 422 and "queue" in bad_queue.text
        cleared = client.patch(f"/schedules/{schedule_id}", json={"queue": None, "priority": None}).json()
        assert (cleared["queue"], cleared["priority"]) == (None, None)
        listed = client.get(f"/schedules/{schedule_id}/runs", params={"limit": 50}).json()
        assert listed["meta"]["total_count"] == 12


def test_backfilled_slots_never_expire_and_count_towards_max_runs(db: Database) -> None:
    from kern_tasks.db import db_now
    from kern_tasks.scheduler import limits

    manager = ScheduleManager(db)
    start, end = two_hours_back(manager)
    late = manager.create(name="late-ok", cron=EVERY_10_MIN, endpoint="/hook", expires_after_seconds=60)
    assert len(manager.backfill(late.id, start, end).added) == 12
    with db.begin() as conn:
        assert limits.skip_expired_attempts(conn, now=db_now(conn), limit=100) == 0
    assert {r["status"] for r in runs_of(db, late.id)} == {"queued"}
    capped = manager.create(name="capped", cron=EVERY_10_MIN, endpoint="/hook", max_runs=5)
    with pytest.raises(ValidationError) as over:
        manager.backfill(capped.id, start, end)
    assert over.value.field == "end" and "max_runs (5)" in str(over.value)
    assert runs_of(db, capped.id) == []
    assert len(manager.backfill(capped.id, end - 3000, end).added) == 5
