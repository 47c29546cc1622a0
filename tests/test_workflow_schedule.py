"""Scheduled workflow fires end to end (issue 8, parts 5 and 8): a schedule whose endpoint is
/workflows/{id}/runs fires the workflow on Celery workers, and its agno_schedule_runs row
links to the workflow run.

Two stacks, real processes throughout, serving tests/workflow_schedule_app.py (the demo's
content pipeline, and `fact_check`, whose run ends in ERROR):

- Postgres (a schema of this module's) and Redis (database 3): uvicorn, two Celery worker
  processes (KERN_APP names the AgentOS, so they know its workflows) and a beat process.
  The web process only records and publishes the run: every step attempt is taken by a
  worker process (kern_workflow_steps.worker_id -> kern_workers.pid).
- The embedded default: no KERN_DATABASE_URL and no KERN_BROKER_URL; one uvicorn process
  serving AgentOS(scheduler=True), whose beat and in-process worker fire and run the
  workflows on SQLite and kombu's SQL transport in KERN_DATA_DIR. No services.

On each: a cron fire of the pipeline (a schedule of user alice's) ends `success`, its row
carrying the workflow run's run_id and session_id, the run and its session alice's; the run is COMPLETED in agno_runs (run_type workflow) with its
step_results (the Loop ended by its CEL condition after two iterations); a triggered fire
of `fact_check` ends `failed` with the run's error, not retried (a run in ERROR is
terminal), linked to the run in ERROR. On Postgres, a fired run cancelled while a step
runs (POST .../cancel) ends its attempt `cancelled`, the step after never run.
"""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from sqlalchemy import select

from kern_tasks.db import Database, db_now, schedule_runs
from kern_tasks.db.run_tables import runs as agno_runs
from kern_tasks.db.run_tables import sessions as agno_sessions
from kern_tasks.db.tables import workers
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.settings import Settings
from kern_tasks.workflow import progress
from tests.conftest import POSTGRES_URL, broker_url_for, drop_schema, flush_broker, fresh_schema_name, one_shot_cron
from tests.processes import LOOPBACK, PYTHON, Processes, free_port, kern_env, wait_for
from tests.workflow_schedule_app import FACT_CHECK_ERROR, GATE_ENV

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REDIS_DB = 3
APP = "tests.workflow_schedule_app"
FAR_CRON = "0 0 1 1 *"  # fires only when triggered
START_TIMEOUT_S = 60
RUN_TIMEOUT_S = 60
PIPELINE = "/workflows/content-pipeline/runs"
FACT_CHECK = "/workflows/fact-check/runs"
HELD = "/workflows/held/runs"


@dataclass
class Stack:
    """A database, the processes serving and firing at it, and the web process's pid."""

    db: Database
    procs: Processes
    web: subprocess.Popen
    base_url: str
    gate: Path  # held's first step waits for this file
    worker_pids: set[int]
    manager: ScheduleManager

    def ended_attempts(self, schedule_id: str) -> list[Any]:
        def ended() -> list[Any] | None:
            self.procs.check_alive()
            rows = self.attempts(schedule_id)
            return rows if rows and all(r["status"] not in ("queued", "running") for r in rows) else None

        return wait_for(ended, RUN_TIMEOUT_S, 0.2, what=f"the attempts of schedule {schedule_id} to end")

    def attempts(self, schedule_id: str) -> list[Any]:
        with self.db.connect() as conn:
            return list(conn.execute(select(schedule_runs).where(schedule_runs.c.schedule_id == schedule_id)
                                     .order_by(schedule_runs.c.attempt)).mappings())

    def step_rows(self, run_id: str) -> list[Any]:
        with self.db.connect() as conn:
            return list(progress.attempts(conn, run_id))

    def agno_run(self, run_id: str) -> Any:
        with self.db.connect() as conn:
            return conn.execute(select(agno_runs).where(agno_runs.c.run_id == run_id)).mappings().one()

    def session(self, session_id: str) -> Any:
        with self.db.connect() as conn:
            return conn.execute(select(agno_sessions).where(agno_sessions.c.session_id == session_id)).mappings().one()

    def step_pids(self, run_id: str) -> set[int]:
        """The pids of the processes that took the run's step attempts."""
        with self.db.connect() as conn:
            ids = {row["worker_id"] for row in progress.attempts(conn, run_id)}
            rows = conn.execute(select(workers.c.id, workers.c.pid).where(workers.c.id.in_(ids))).all()
        assert len(rows) == len(ids), f"step attempts name unknown workers: {ids}"
        return {pid for _, pid in rows}

    def slot_now(self) -> str:
        """A cron that fires two seconds from now (the database's clock), once."""
        with self.db.connect() as conn:
            return one_shot_cron(db_now(conn) + 2)


def serve(procs: Processes, app: str, port: int) -> subprocess.Popen:
    proc = procs.start("web", [PYTHON, "-m", "uvicorn", f"{APP}:{app}", "--host", LOOPBACK, "--port", str(port),
                               "--lifespan", "on", "--no-access-log"])

    def accepting() -> bool:  # uvicorn listens once the app's lifespan has started
        procs.check_alive()
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((LOOPBACK, port)) == 0

    wait_for(accepting, START_TIMEOUT_S, 0.2, what="uvicorn to serve")
    return proc


@pytest.fixture(scope="module")
def postgres_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("workflow-schedule-pg")
    schema = fresh_schema_name()
    flush_broker(REDIS_DB)
    port = free_port()
    env = kern_env(database_url=POSTGRES_URL, schema=schema, base_url=f"http://{LOOPBACK}:{port}",
                   data_dir=tmp / "kern", broker_url=broker_url_for(REDIS_DB))
    gate = tmp / "gate"
    procs = Processes(tmp / "logs", env={**env, "KERN_APP": f"{APP}:agent_os", GATE_ENV: str(gate)})
    db = Database(POSTGRES_URL, schema=schema, settings=Settings(database_url=POSTGRES_URL, db_schema=schema))
    db.upgrade()
    failed_before = request.session.testsfailed
    try:
        web = serve(procs, "app", port)
        pids = {procs.worker(name, concurrency=4).pid for name in ("w1", "w2")}
        procs.beat(max_interval=1)
        for name in ("w1", "w2"):
            procs.wait_for_log(name, " ready.", START_TIMEOUT_S)
        procs.wait_for_log("beat", "beat: Starting...", START_TIMEOUT_S)
        yield Stack(db, procs, web, f"http://{LOOPBACK}:{port}", gate, pids, ScheduleManager(db))
    finally:
        procs.stop_all()
        if request.session.testsfailed > failed_before:
            print(procs.dump_logs(tail=150))
        db.dispose()
        drop_schema(schema)


@pytest.fixture(scope="module")
def embedded_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("workflow-schedule-embedded")
    port = free_port()
    # Only a data folder and the URL fires go to: SQLite and the embedded broker in it.
    gate = tmp / "gate"
    procs = Processes(tmp / "logs", env={"KERN_DATA_DIR": str(tmp / "kern"), "KERN_BASE_URL": f"http://{LOOPBACK}:{port}",
                                         GATE_ENV: str(gate)})
    failed_before = request.session.testsfailed
    db: Database | None = None
    try:
        web = serve(procs, "embedded_app", port)
        db = Database(settings=Settings(data_dir=tmp / "kern"))
        yield Stack(db, procs, web, f"http://{LOOPBACK}:{port}", gate, {web.pid}, ScheduleManager(db))
    finally:
        procs.stop_all()
        if request.session.testsfailed > failed_before:
            print(procs.dump_logs(tail=150))
        if db is not None:
            db.dispose()


@pytest.fixture(params=["postgres", "embedded"])
def stack(request: pytest.FixtureRequest) -> Stack:
    return request.getfixturevalue(f"{request.param}_stack")


def test_a_cron_fire_of_a_workflow_links_its_attempt_to_the_completed_workflow_run(stack: Stack) -> None:
    schedule = stack.manager.create(name="pipeline", cron=stack.slot_now(), endpoint=PIPELINE,
                                    payload={"message": "AI agents in 2026"}, timeout_seconds=RUN_TIMEOUT_S,
                                    user_id="alice")
    [attempt] = stack.ended_attempts(schedule.id)
    assert (attempt["status"], attempt["status_code"], attempt["manual"]) == ("success", 200, False), attempt["error"]
    assert attempt["run_id"] and attempt["session_id"]

    run = stack.agno_run(attempt["run_id"])
    assert (run["run_type"], run["workflow_id"], run["status"]) == ("workflow", "content-pipeline", "COMPLETED")
    assert run["session_id"] == attempt["session_id"]
    assert run["user_id"] == attempt["user_id"] == "alice"  # the run is the schedule owner's
    data = run["run_data"]
    assert data["input"] == "AI agents in 2026"
    steps = data["step_results"]
    assert [(s["step_name"], s["step_type"]) for s in steps] == [
        ("research", "Parallel"), ("outline", "Step"), ("draft_review", "Loop")]
    assert [s["step_name"] for s in steps[0]["steps"]] == ["market", "technology"]
    loop = steps[2]
    assert loop["content"] == "Loop draft_review completed 2 iterations with 4 total steps"
    assert [s["step_name"] for s in loop["steps"]] == ["draft", "review", "draft", "review"]
    assert loop["steps"][-1]["content"].startswith("APPROVED")
    assert data["content"] == loop["steps"][-1]["content"]
    assert attempt["output"]["content"] == data["content"]  # what the fire saw is what was stored
    session = stack.session(run["session_id"])
    assert (session["session_type"], session["workflow_id"], session["user_id"]) == (
        "workflow", "content-pipeline", "alice")
    # The steps ran on the workers: never in a process the test did not start as one.
    assert stack.step_pids(run["run_id"]) <= stack.worker_pids


def test_a_workflow_run_ending_in_error_fails_its_schedule_run_without_a_retry(stack: Stack) -> None:
    schedule = stack.manager.create(name="fact_check", cron=FAR_CRON, endpoint=FACT_CHECK,
                                    payload={"message": "the launch post"}, max_retries=2,
                                    timeout_seconds=RUN_TIMEOUT_S)
    stack.manager.trigger_run(schedule.id)
    [attempt] = stack.ended_attempts(schedule.id)  # one attempt: a run in ERROR is not retried
    assert (attempt["status"], attempt["manual"]) == ("failed", True)
    assert FACT_CHECK_ERROR in attempt["error"]
    run = stack.agno_run(attempt["run_id"])
    assert (run["run_type"], run["workflow_id"], run["status"]) == ("workflow", "fact-check", "ERROR")
    assert run["session_id"] == attempt["session_id"]
    steps = run["run_data"]["step_results"]
    assert [(s["step_name"], s["success"]) for s in steps] == [("gather", True), ("verify", False)]
    assert stack.step_pids(run["run_id"]) <= stack.worker_pids


def test_a_fired_workflow_run_cancelled_mid_step_ends_its_schedule_run_cancelled(postgres_stack: Stack) -> None:
    # Postgres only: cancel is the same code on both stacks, and this file keeps within its time.
    stack = postgres_stack
    schedule = stack.manager.create(name="held", cron=FAR_CRON, endpoint=HELD, payload={"message": "hold"},
                                    timeout_seconds=RUN_TIMEOUT_S)
    stack.manager.trigger_run(schedule.id)
    # The fire records the run as soon as the route accepts it; then its first step runs.
    run_id = wait_for(lambda: next((r["run_id"] for r in stack.attempts(schedule.id) if r["run_id"]), None),
                      RUN_TIMEOUT_S, 0.1, what="the fire to record the workflow run it started")
    wait_for(lambda: any(r["path"] == "0" and r["status"] == "running" for r in stack.step_rows(run_id)),
             RUN_TIMEOUT_S, 0.1, what="the held step to run")
    try:
        cancelled = httpx.post(f"{stack.base_url}/workflows/held/runs/{run_id}/cancel", timeout=10)
        assert cancelled.status_code == 200, cancelled.text
    finally:
        stack.gate.touch()  # let the step's thread go (its result is ignored now)
    [attempt] = stack.ended_attempts(schedule.id)
    assert (attempt["status"], attempt["run_id"]) == ("cancelled", run_id)
    assert "cancelled" in attempt["error"]
    run = stack.agno_run(run_id)
    assert (run["workflow_id"], run["status"], run["session_id"]) == ("held", "CANCELLED", attempt["session_id"])
    assert not any(r["path"] == "1" for r in stack.step_rows(run_id))  # the step after never ran


def test_workers_in_other_processes_find_the_demo_workflow_through_kern_app() -> None:
    from kern_tasks import demo
    from kern_tasks.workflow.tasks import workflows_from

    assert workflows_from("kern_tasks.demo:pipeline") == {"content-pipeline": demo.pipeline}
    assert demo.DEMO_WORKFLOW_ENDPOINT == f"/workflows/{demo.pipeline.id}/runs"
