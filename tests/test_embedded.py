"""AgentOS(scheduler=True) and the main command: web, beat and a Celery worker in one process."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from kern_tasks.agent import Agent
from kern_tasks.db import Database
from kern_tasks.db.run_tables import runs as agno_runs
from kern_tasks.db.run_tables import sessions as agno_sessions
from kern_tasks.db.run_tables import traces as agno_traces
from kern_tasks.os import AgentOS
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.settings import Settings

from .os_server import LiveServer
from .processes import ROOT, free_port, wait_for


@pytest.mark.slow
def test_a_scheduled_fire_ends_as_a_success_row_linked_to_its_session_and_trace(tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(data_dir=tmp_path / "kern", base_url=f"http://127.0.0.1:{port}", security_key="user-key")
    db = Database(settings=settings)
    agent = Agent(model="offline", name="Briefer", id="briefer")
    agent_os = AgentOS(agents=[agent], db=db, scheduler=True, scheduler_poll_interval=2, settings=settings)
    manager = ScheduleManager(db)
    schedule = manager.create(
        name="briefing", cron="* * * * * *", endpoint="/agents/briefer/runs", payload={"message": "brief me"}
    )
    with LiveServer(agent_os.get_app(), port=port):
        run = wait_for(
            lambda: next((r for r in manager.runs(schedule.id).data if r.status == "success"), None),
            timeout=30, what="a successful scheduled run",
        )
    assert run.status_code == 200 and run.run_id and run.session_id
    with db.connect() as conn:
        stored = conn.execute(select(agno_runs).where(agno_runs.c.run_id == run.run_id)).mappings().one()
        session = conn.execute(
            select(agno_sessions).where(agno_sessions.c.session_id == run.session_id)
        ).mappings().one()
        trace = conn.execute(select(agno_traces).where(agno_traces.c.run_id == run.run_id)).mappings().one()
    assert stored["status"] == "COMPLETED" and stored["session_id"] == run.session_id
    assert session["agent_id"] == "briefer"
    assert trace["session_id"] == run.session_id
    # Shutdown stopped beat: nothing is claimed any more.
    count = manager.runs(schedule.id).total_count
    time.sleep(2.5)
    assert manager.runs(schedule.id).total_count == count


def _read_lines(stream, lines: "queue.Queue[str]") -> None:
    for line in iter(stream.readline, ""):
        lines.put(line)


@pytest.mark.slow
def test_the_main_command_from_a_clean_checkout_fires_and_stops_on_sigint(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs the project's git checkout")
    checkout = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(checkout)], check=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERN_")}
    env.update(KERN_DATA_DIR=str(tmp_path / "data"), KERN_BASE_URL=f"http://127.0.0.1:{port}",
               PYTHONPATH=str(checkout), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kern_tasks", "run"], cwd=checkout, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []

    def shown() -> bool:
        """A successful fire of the demo agent, and one of the demo workflow printed with its steps
        (the Loop ended by its CEL condition after two iterations, the editor's approval last)."""
        text = "".join(seen)
        agent = any("fired demo_heartbeat" in line and "success" in line for line in seen)
        workflow = re.search(
            r"fired demo_content_pipeline: POST /workflows/content-pipeline/runs -> success 200.*\n"
            r".*workflow content-pipeline run \S+: COMPLETED\n"
            r".*research \(Parallel\) +ok.*\n.*market.*\n.*technology.*\n.*outline \(Step\) +ok.*\n"
            r".*draft_review \(Loop\) +ok +Loop draft_review completed 2 iterations.*\n"
            r"(.*(draft|review) \(Step\) +ok.*\n){3}.*review \(Step\) +ok +APPROVED", text)
        return agent and workflow is not None

    try:
        deadline = time.monotonic() + 45
        while not shown():
            assert time.monotonic() < deadline, "no successful fires within 45 s:\n" + "".join(seen)
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                assert proc.poll() is None, "the main command exited:\n" + "".join(seen)
        assert any(f"http://127.0.0.1:{port}/docs" in line for line in seen)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    while not lines.empty():
        seen.append(lines.get())
    assert "stopped" in "".join(seen[-5:])
    assert "Traceback" not in "".join(seen)


@pytest.mark.slow
def test_two_web_replicas_with_the_scheduler_fire_each_slot_once(tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(data_dir=tmp_path / "kern", base_url=f"http://127.0.0.1:{port}")
    replicas = []
    for _ in range(2):
        db = Database(settings=settings)
        agent = Agent(model="offline", name="Pinger", id="pinger")
        replicas.append(AgentOS(agents=[agent], db=db, scheduler=True, scheduler_poll_interval=2,
                                settings=settings, service_token="shared-token"))
    manager = ScheduleManager(replicas[0].db)
    schedule = manager.create(name="ping", cron="* * * * * *", endpoint="/agents/pinger/runs",
                              payload={"message": "ping"}, overlap_policy="allow")
    with LiveServer(replicas[0].get_app(), port=port), LiveServer(replicas[1].get_app()):
        wait_for(lambda: manager.runs(schedule.id).total_count >= 8, timeout=40, what="8 fires")
        manager.disable(schedule.id)  # attempts not yet started end "cancelled"
        wait_for(
            lambda: all(r.status not in ("queued", "running") for r in manager.runs(schedule.id, limit=1000).data),
            timeout=30, what="every run to end",
        )
    runs = manager.runs(schedule.id, limit=1000).data
    slots = sorted(r.scheduled_for for r in runs)
    assert len(slots) == len(set(slots)), "a slot was materialised twice"
    assert all(r.attempt == 1 for r in runs)
    assert {r.status for r in runs} <= {"success", "cancelled"}
    assert sum(r.status == "success" for r in runs) >= 6
