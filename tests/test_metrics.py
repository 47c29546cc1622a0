"""Prometheus metrics scraped over HTTP from real processes after real fires.

One stack (tests/fire_stack.py: Postgres schema, Redis database 0, a loopback target): a
prefork worker (-P prefork -c 2) and a beat, each serving KERN_METRICS_PORT. Six schedules
are made due at once: three answer 200 after a second (so both pool children take one),
one answers 500 then 200 (one retry), one 404 (failed, not retried), and one daily schedule
whose next_run_at lies ten days back under misfire "skip" (its missed slots are counted,
nothing fires). The counters must move by exactly that, summed over the worker's children.

The web app's /metrics is checked on its own database (no beat: an overdue schedule stays
overdue): the SQL gauges, and who may read it (security key, KERN_METRICS_TOKEN only there);
and on the embedded default (AgentOS(scheduler=True): a worker in the web process), a
workflow run's steps and retry counted in web's /metrics.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, update

from kern_tasks.db import Database, db_now, schedule_runs, schedules
from kern_tasks.os import AgentOS
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.settings import Settings
from kern_tasks.workflow import Step, StepInput, Workflow
from tests.conftest import EMPTY_SETTINGS
from tests.fire_stack import FireStack, fire_stack
from tests.processes import ServerThread, free_port, wait_for
from tests.targets import Reply

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REDIS_DB = 0
FAR_CRON = "0 0 1 1 *"
OPEN = ("queued", "running")


def scrape(url: str, **headers: str) -> dict[str, float]:
    """Every sample of a /metrics answer by name and labels: {'kern_fires_total{status="success"}': 4.0}."""
    answer = httpx.get(url, headers=headers, timeout=10)
    answer.raise_for_status()
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def reachable(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def set_next_run_at(db: Database, schedule_id: str, next_run_at: int) -> None:
    with db.begin() as conn:
        conn.execute(update(schedules).where(schedules.c.id == schedule_id).values(next_run_at=next_run_at))


def now_of(db: Database) -> int:
    with db.connect() as conn:
        return db_now(conn)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FireStack, str, str]]:
    with fire_stack(tmp_path_factory.mktemp("metrics"), REDIS_DB) as made:
        worker_port, beat_port = free_port(), free_port()
        made.procs.worker(concurrency=2, pool="prefork", env={"KERN_METRICS_PORT": str(worker_port)})
        made.procs.wait_for_log("worker", " ready.", timeout=60)
        # One attempt per message (no kern.fire_batch), so the three slow calls go to both
        # pool children (prefork hands a message to an idle child: one is busy for a second).
        made.procs.beat(max_interval=1, conf={"kern_fire_batch": 1}, env={"KERN_METRICS_PORT": str(beat_port)})
        worker_url, beat_url = f"http://127.0.0.1:{worker_port}/metrics", f"http://127.0.0.1:{beat_port}/metrics"
        wait_for(lambda: reachable(worker_url) and reachable(beat_url), 60, 0.2, "both metrics ports")
        yield made, worker_url, beat_url


def test_counters_move_by_exactly_the_fires_summed_over_prefork_children(stack: tuple[FireStack, str, str]) -> None:
    made, worker_url, beat_url = stack
    manager = ScheduleManager(made.db)
    made.target.script("/slow", Reply(200, json={"ok": True}, delay=1.0))
    made.target.script("/flaky", [Reply(500), Reply(200, json={"ok": True})])
    made.target.script("/gone", Reply(404))
    before_worker, before_beat = scrape(worker_url), scrape(beat_url)
    assert before_worker.get('kern_fires_total{status="success"}', 0) == 0

    fired = [manager.create(name=f"slow-{i}", cron=FAR_CRON, endpoint="/slow", timeout_seconds=10) for i in range(3)]
    fired.append(manager.create(name="flaky", cron=FAR_CRON, endpoint="/flaky", max_retries=1,
                                retry_delay_seconds=1, timeout_seconds=10))  # fmt: skip
    fired.append(manager.create(name="gone", cron=FAR_CRON, endpoint="/gone", timeout_seconds=10))
    # Missed slots, none fired: a daily slot 12 hours away from now, due ten days ago.
    hour = (datetime.now(UTC) + timedelta(hours=12)).hour
    missed = manager.create(name="missed", cron=f"0 {hour} * * *", endpoint="/never", misfire_policy="skip")
    now = now_of(made.db)
    for schedule in fired:
        set_next_run_at(made.db, schedule.id, now)
    set_next_run_at(made.db, missed.id, now - 10 * 86400)
    ids = [s.id for s in fired]

    def settled() -> list | None:
        with made.db.connect() as conn:
            rows = conn.execute(select(schedule_runs).where(schedule_runs.c.schedule_id.in_(ids))).mappings().all()
        done = len(rows) == 6 and all(r["status"] not in OPEN for r in rows)
        return list(rows) if done else None

    rows = wait_for(settled, 60, 0.2, "six attempts ended")
    with made.db.connect() as conn:
        skipped = conn.execute(select(schedules.c.skipped_slots).where(schedules.c.id == missed.id)).scalar_one()
    assert skipped >= 9  # ten days of daily slots, the newest maybe not yet due
    assert sorted(r["status"] for r in rows) == ["failed", "retrying", "success", "success", "success", "success"]
    # The prefork pool's two children both fired (their worker ids differ), and the
    # counters below are their sum.
    assert len({r["worker_id"] for r in rows}) == 2, {r["worker_id"] for r in rows}

    def worker_caught_up() -> dict[str, float] | None:
        got = scrape(worker_url)
        return got if got.get("kern_fire_duration_seconds_count") == 6 else None

    worker = wait_for(worker_caught_up, 10, 0.2, "the worker's counters")
    assert worker['kern_fires_total{status="success"}'] == 4
    assert worker['kern_fires_total{status="failed"}'] == 2  # the 500 (then retried) and the 404
    assert worker["kern_fire_retries_total"] == 1
    assert worker["kern_fire_lag_seconds_count"] == 6
    assert worker['kern_fire_lag_seconds_bucket{le="+Inf"}'] == 6
    assert 0 <= worker["kern_fire_lag_seconds_sum"] < 6 * 30
    # The three slow calls each took a second or more.
    assert worker['kern_fire_duration_seconds_bucket{le="0.5"}'] <= 3
    assert worker["kern_fire_duration_seconds_sum"] >= 3.0
    assert "kern_runs" not in {name.split("{")[0] for name in worker}  # SQL gauges: web and beat only

    beat = scrape(beat_url)
    assert beat["kern_beat_claimed_total"] - before_beat.get("kern_beat_claimed_total", 0) == 6
    assert beat["kern_skipped_slots_total"] - before_beat.get("kern_skipped_slots_total", 0) == skipped
    assert beat["kern_beat_ticks_total"] > before_beat["kern_beat_ticks_total"]
    assert beat["kern_beat_tick_seconds_count"] == beat["kern_beat_ticks_total"]
    assert beat['kern_runs{status="queued"}'] == 0 and beat['kern_runs{status="running"}'] == 0
    assert beat["kern_schedules_overdue"] == 0
    assert beat["kern_sql_gauges_up"] == 1
    assert beat["kern_beat_replicas"] == 1 and 0 <= beat["kern_beat_heartbeat_age_seconds"] <= 30


def test_web_metrics_report_sql_gauges_to_the_key_or_the_metrics_token(pg_db: Database) -> None:
    manager = ScheduleManager(pg_db)
    late = manager.create(name="late", cron=FAR_CRON, endpoint="/agents/a/runs")
    manager.create(name="on-time", cron=FAR_CRON, endpoint="/agents/a/runs")
    set_next_run_at(pg_db, late.id, now_of(pg_db) - 3600)  # no beat here: it stays overdue
    manager.trigger(late.id)  # one queued attempt
    settings = Settings(security_key="the-key", metrics_token="scraper-token")
    agent_os = AgentOS(db=pg_db, settings=settings, alert_interval_s=3600)  # its alert watch stays out of this
    with ServerThread(agent_os.get_app(), lifespan="on") as server:
        url = f"{server.url}/metrics"
        got = scrape(url, authorization="Bearer scraper-token")
        assert got["kern_schedules_overdue"] == 1
        assert got['kern_runs{status="queued"}'] == 1 and got['kern_runs{status="running"}'] == 0
        assert got["kern_sql_gauges_up"] == 1
        assert got["kern_beat_replicas"] == 0 and "kern_beat_heartbeat_age_seconds" not in got  # no beat ran here
        assert got['kern_alert_incidents_open{kind="overdue"}'] == 0  # no watch has looked yet
        assert scrape(url, authorization="Bearer the-key")["kern_schedules_overdue"] == 1
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"authorization": "Bearer wrong"}).status_code == 401
        refused = httpx.get(f"{server.url}/schedules", headers={"authorization": "Bearer scraper-token"})
        assert refused.status_code == 403 and "metrics token" in refused.json()["detail"]
        manager.disable(late.id)
        assert scrape(url, authorization="Bearer the-key")["kern_schedules_overdue"] == 0


def test_metrics_port_setting_is_checked_naming_it() -> None:
    assert Settings.from_env({"KERN_METRICS_PORT": "9464"}).metrics_port == 9464
    assert Settings.from_env({}).metrics_port is None
    for bad in ("http", "0", "70000"):
        with pytest.raises(ValueError, match="KERN_METRICS_PORT"):
            Settings.from_env({"KERN_METRICS_PORT": bad})
    assert "scraper" not in repr(Settings(metrics_token="scraper", alert_webhook="http://h/scraper"))


def test_count_of_open_runs_matches_sql(pg_db: Database) -> None:
    """The gauge's read is the table's count (by the open-attempts index)."""
    from kern_tasks.alerts import conditions

    manager = ScheduleManager(pg_db, endpoint_policy=None)
    s = manager.create(name="x", cron=FAR_CRON, endpoint="/x")
    manager.trigger(s.id)
    with pg_db.connect() as conn:
        counted = conn.execute(select(func.count()).select_from(schedule_runs).where(
            schedule_runs.c.status == "queued")).scalar_one()  # fmt: skip
        assert counted == 1  # the trigger's attempt: a count of 0 on both sides would prove nothing
        assert conditions.open_runs_by_status(conn) == {"queued": counted, "running": 0}
    assert EMPTY_SETTINGS.metrics_port is None


def test_workflow_steps_are_counted_on_the_embedded_default(tmp_path: Path) -> None:
    """AgentOS(scheduler=True) runs a worker in the web process: its steps count in web's
    /metrics (counted from the start, not from the first scrape)."""
    tries: list[int] = []

    def flaky(step_input: StepInput) -> str:
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("first try fails")
        return "ok"

    workflow = Workflow(name="metered", steps=[Step(name="one", executor=lambda step_input: "1"),
                                               Step(name="two", executor=flaky, max_retries=1)])  # fmt: skip
    port = free_port()
    settings = Settings(data_dir=tmp_path / "kern", base_url=f"http://127.0.0.1:{port}")
    agent_os = AgentOS(workflows=[workflow], db=Database(settings=settings), scheduler=True,
                       scheduler_poll_interval=1, settings=settings)  # fmt: skip
    with ServerThread(agent_os.get_app(), port=port, lifespan="on") as server:
        url = f"{server.url}/metrics"
        before = scrape(url)
        answer = httpx.post(f"{server.url}/workflows/{workflow.id}/runs", data={"message": "go", "stream": "false"},
                            timeout=60)  # fmt: skip
        assert answer.status_code == 200 and answer.json()["status"] == "COMPLETED", answer.text

        def delta(name: str) -> float:
            return scrape(url).get(name, 0) - before.get(name, 0)

        wait_for(lambda: delta('kern_workflow_steps_total{status="success"}') == 2, 10, 0.1, "two steps counted")
        assert delta('kern_workflow_steps_total{status="failed"}') == 0
        assert delta("kern_workflow_step_retries_total") == 1
        assert delta("kern_workflow_step_duration_seconds_count") == 2
