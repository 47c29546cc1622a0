"""Missed runs are loud: each incident is one webhook POST at a loopback receiver, with real
beat replicas and a real worker (tests/fire_stack.py; the stack's TargetServer is both the
schedules' target and the webhook receiver, at /hook).

- overdue: a schedule whose next slot is two minutes old while its row is locked by a stuck
  transaction (beat's claim skips locked rows; both beat replicas keep ticking and watching
  every 0.5 s): one "opened" POST, however many watch rounds pass; the lock released, beat
  claims it and one "resolved" POST follows;
- failing: an every-second schedule answered 500 with alert_after_failures=2: one "opened"
  POST carrying the slot and the last error while it keeps failing; once it succeeds, one
  "resolved";
- no beat: both beats stopped, the web process's watch (an AgentOS served on a thread) opens
  "no_beat" once; a beat started again resolves it.

"Exactly one" is checked after the beats' heartbeats moved on by several watch intervals
(a condition on the database, not a sleep).
"""

from __future__ import annotations

import json
import subprocess
from typing import Any, Iterator

import pytest
from sqlalchemy import select, text, update

from kern_tasks import beat_health
from kern_tasks.db import Database, db_now, schedule_runs, schedules
from kern_tasks.alerts.incidents import Incident, count_open
from kern_tasks.alerts.webhook import Notifier, payload
from kern_tasks.db.tables import incidents
from kern_tasks.os import AgentOS
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.settings import Settings
from tests.conftest import POSTGRES_URL
from tests.fire_stack import FireStack, fire_stack
from tests.processes import PYTHON, ServerThread, clean_environ, wait_for
from tests.targets import Reply, TargetServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REDIS_DB = 0
FAR_CRON = "0 0 1 1 *"
WATCH = {"kern_alert_interval": 0.5}


class Alerts:
    def __init__(self, made: FireStack) -> None:
        self.made = made
        self.manager = ScheduleManager(made.db)
        self.hook = f"{made.target.url}/hook"
        self.lock: Any = None

    def posts(self, kind: str, event: str | None = None, schedule_id: str | None = None) -> list[dict[str, Any]]:
        bodies = [r.json() for r in self.made.target.requests("/hook")]
        return [b for b in bodies if b["kind"] == kind and event in (None, b["event"])
                and schedule_id in (None, b["schedule_id"])]  # fmt: skip

    def now(self) -> int:
        with self.made.db.connect() as conn:
            return db_now(conn)

    def rounds_pass(self, since: int, seconds: int = 3) -> None:
        """Wait until every beat replica has ticked `seconds` after `since` (db clock)."""
        def moved() -> bool:
            health = beat_health.read_database(self.made.db)
            return bool(health.replicas) and all(r.tick_at >= since + seconds for r in health.replicas)

        wait_for(moved, 30, 0.2, f"beat replicas ticking {seconds}s after {since}")


@pytest.fixture(scope="module")
def alerts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alerts]:
    with fire_stack(tmp_path_factory.mktemp("alerts"), REDIS_DB) as made:
        got = Alerts(made)
        made.procs.env["KERN_ALERT_WEBHOOK"] = got.hook
        made.procs.worker(concurrency=4)
        made.procs.wait_for_log("worker", " ready.", timeout=60)
        got.manager.create(name="keeper", cron=FAR_CRON, endpoint="/ok")  # something is enabled
        # Staged before any beat runs: overdue by two minutes, then locked by a transaction
        # that stays open (beat's claim skips locked rows; plain reads do not wait).
        stuck = got.manager.create(name="stuck", cron=FAR_CRON, endpoint="/ok")
        with made.db.begin() as conn:
            conn.execute(update(schedules).where(schedules.c.id == stuck.id).values(next_run_at=db_now(conn) - 120))
        got.lock = made.db.engine.connect()
        got.lock.begin()
        got.lock.execute(text(f'SELECT id FROM "{made.schema}".agno_schedules WHERE id = :id FOR UPDATE'),
                         {"id": stuck.id})  # fmt: skip
        for name in ("beat", "beat2"):
            made.procs.beat(name, max_interval=1, conf=WATCH)
        try:
            yield got
        finally:
            if got.lock is not None:
                got.lock.close()


def test_an_overdue_slot_is_one_post_then_one_resolution(alerts: Alerts) -> None:
    stuck = alerts.manager.get_by_name("stuck")
    opened = wait_for(lambda: alerts.posts("overdue", "opened", stuck.id), 60, 0.2, "the overdue POST")[0]
    assert opened["schedule_name"] == "stuck" and opened["slot"] == stuck.next_run_at
    assert "overdue" in opened["message"] and opened["slot_at"].endswith("Z")
    alerts.rounds_pass(opened["opened_at"])
    assert len(alerts.posts("overdue", "opened", stuck.id)) == 1  # not per tick, not per replica
    with alerts.made.db.connect() as conn:
        assert count_open(conn)["overdue"] == 1  # what kern_alert_incidents_open{kind="overdue"} reports
    assert any("alert overdue" in alerts.made.procs.log_text(b) for b in ("beat", "beat2"))  # the log warning

    alerts.lock.close()  # the stuck transaction ends: beat claims and fires it
    alerts.lock = None
    resolved = wait_for(lambda: alerts.posts("overdue", "resolved", stuck.id), 60, 0.2, "the resolved POST")[0]
    assert resolved["incident_id"] == opened["incident_id"] and resolved["resolved_at"] >= opened["opened_at"]
    alerts.rounds_pass(resolved["resolved_at"])
    assert len(alerts.posts("overdue", schedule_id=stuck.id)) == 2
    with alerts.made.db.connect() as conn:
        fired = conn.execute(select(schedule_runs.c.status).where(schedule_runs.c.schedule_id == stuck.id)).scalars()
        assert list(fired) == ["success"]


def test_a_failure_streak_is_one_post_with_the_slot_and_error(alerts: Alerts) -> None:
    alerts.made.target.script("/fail", Reply(500, body="target down"))
    failing = alerts.manager.create(name="failing", interval_seconds=1, endpoint="/fail", max_retries=0,
                                    timeout_seconds=5, alert_after_failures=2)  # fmt: skip

    def failed_slots() -> list[Any]:
        with alerts.made.db.connect() as conn:
            return list(conn.execute(select(schedule_runs).where(
                schedule_runs.c.schedule_id == failing.id, schedule_runs.c.status == "failed")).mappings())

    opened = wait_for(lambda: alerts.posts("failing", "opened", failing.id), 60, 0.2, "the failing POST")[0]
    wait_for(lambda: len(failed_slots()) >= 2 + 3, 60, 0.2, "three more failed slots after the streak of 2")
    assert len(alerts.posts("failing", "opened", failing.id)) == 1  # it kept failing: still one
    assert opened["schedule_name"] == "failing"
    assert opened["slot"] in {row["scheduled_for"] for row in failed_slots()}
    assert "500" in opened["last_error"] and "2 slot(s) failed" in opened["message"]

    alerts.made.target.script("/fail", Reply(200, json={"ok": True}))
    resolved = wait_for(lambda: alerts.posts("failing", "resolved", failing.id), 60, 0.2, "the resolved POST")[0]
    assert resolved["incident_id"] == opened["incident_id"]
    alerts.manager.disable(failing.id)
    alerts.rounds_pass(resolved["resolved_at"])
    assert len(alerts.posts("failing", schedule_id=failing.id)) == 2
    with alerts.made.db.connect() as conn:
        rows = conn.execute(select(incidents).where(incidents.c.schedule_id == failing.id)).mappings().all()
    assert len(rows) == 1 and rows[0]["resolved_at"] is not None


def test_no_beat_is_seen_by_the_web_process_once(alerts: Alerts) -> None:
    made = alerts.made
    agent_os = AgentOS(db=made.db, settings=Settings(alert_webhook=alerts.hook), alert_interval_s=0.5)
    with ServerThread(agent_os.get_app(), lifespan="on"):
        for name, proc in list(made.procs.procs):
            if name.startswith("beat"):
                made.procs.stop(proc)  # a clean stop removes the replica's heartbeat row
        opened = wait_for(lambda: alerts.posts("no_beat", "opened"), 60, 0.2, "the no_beat POST")[0]
        assert "no beat replica" in opened["message"] and opened["schedule_id"] is None
        wait_for(lambda: alerts.now() >= opened["opened_at"] + 3, 10, 0.2, "three seconds of web watching")
        assert len(alerts.posts("no_beat")) == 1
        made.procs.beat("beat3", max_interval=1, conf=WATCH)
        resolved = wait_for(lambda: alerts.posts("no_beat", "resolved"), 60, 0.2, "no_beat resolved")[0]
        assert resolved["incident_id"] == opened["incident_id"]
    assert len(alerts.posts("no_beat")) == 2


def test_alert_after_failures_is_checked_naming_the_field(pg_db: Database, pg_schema: str) -> None:
    manager = ScheduleManager(pg_db)
    with pytest.raises(ValueError, match="alert_after_failures"):
        manager.create(name="x", cron=FAR_CRON, endpoint="/x", alert_after_failures=-1)
    made = manager.create(name="x", cron=FAR_CRON, endpoint="/x", alert_after_failures=0)
    assert made.alert_after_failures == 0
    assert manager.update(made.id, alert_after_failures=None).alert_after_failures is None
    # The CLI sets it too; a bad value exits 2 naming it.
    env = {**clean_environ(), "KERN_DATABASE_URL": POSTGRES_URL, "KERN_DB_SCHEMA": pg_schema}
    cli = [PYTHON, "-m", "kern_tasks", "schedules"]
    done = subprocess.run([*cli, "create", "y", "--cron", FAR_CRON, "--endpoint", "/y", "--alert-after-failures", "5",
                           "--json"], env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["alert_after_failures"] == 5
    bad = subprocess.run([*cli, "update", "y", "--alert-after-failures", "-2"], env=env, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "alert_after_failures" in bad.stderr


def test_a_webhook_post_is_tried_again_after_a_5xx_and_never_blocks_the_caller() -> None:
    with TargetServer() as receiver:
        receiver.script("/hook", [Reply(503, delay=1.0), Reply(200)])  # the first answer is a second late
        notifier = Notifier(f"{receiver.url}/hook", retry_waits_s=(0.1, 0.1))
        incident = Incident(id="i1", key="failing:s1", kind="failing", schedule_id="s1", schedule_name="s",
                            slot=1796194800, last_error="HTTP 500", message="m", opened_at=1796194801)
        notifier.announce("opened", incident)  # returns at once: the POST is the thread's
        # Had announce waited for the POSTs, the retry would have arrived by now.
        assert len(receiver.requests("/hook")) <= 1, "announce waited for the webhook"
        first, second = receiver.wait_for_requests(2, "/hook", timeout=10)
        assert first.json() == second.json() == payload("opened", incident)
        assert second.json()["slot_at"] == "2026-12-02T07:00:00Z"
        receiver.script("/hook", Reply(400))
        notifier.announce("resolved", incident)
        receiver.wait_for_requests(3, "/hook", timeout=10)
        wait_for(lambda: notifier._queue.unfinished_tasks == 0, 10, 0.05, "the POST given up")
        assert len(receiver.requests("/hook")) == 3  # a 4xx is not tried again
