"""KERN_LOG_FORMAT=json (kern_tasks/logs.py): every line web, beat and worker write is one
JSON object, and each fire line names its schedule (id and name), attempt id, slot and
attempt. Real processes: `celery -A kern_tasks worker|beat` and `kern-tasks serve` on
Postgres and Redis, firing at a loopback target; their whole output (stdout and stderr)
is read while they run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from sqlalchemy import select

from kern_tasks.db import schedule_runs
from kern_tasks.logs import JsonFormatter
from kern_tasks.scheduler import ScheduleManager
from tests.fire_stack import FireStack, fire_stack
from tests.processes import PYTHON, free_port, wait_for

REDIS_DB = 0
KEYS = {"time", "level", "logger", "message", "process", "pid"}


def lines_of(text: str) -> list[dict[str, Any]]:
    """Every line of a log as JSON (failing on the first that is not an object)."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
        assert isinstance(entry, dict) and KEYS <= entry.keys(), f"line {number} lacks {KEYS - set(entry)}: {line}"
        entries.append(entry)
    return entries


def test_the_formatter_keeps_extras_and_puts_a_traceback_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("kern_tasks.x", logging.ERROR, __file__, 1, "failed %s", ("it",), True)
        import sys

        record.exc_info = sys.exc_info()
    record.fire = {"schedule": "digest", "slot": 1}
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "failed it" and entry["level"] == "ERROR" and entry["logger"] == "kern_tasks.x"
    assert entry["fire"] == {"schedule": "digest", "slot": 1}
    assert "ValueError: boom" in entry["exc_info"] and entry["time"].endswith("Z")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[FireStack]:
    with fire_stack(tmp_path, REDIS_DB) as made:
        made.procs.env["KERN_LOG_FORMAT"] = "json"
        yield made


def test_web_beat_and_worker_write_one_json_object_per_line(stack: FireStack) -> None:
    procs, db = stack.procs, stack.db
    port = free_port()
    procs.worker(concurrency=4)
    procs.beat(max_interval=1)
    procs.start("web", [PYTHON, "-m", "kern_tasks", "serve", "--port", str(port)],
                env={"KERN_APP": "tests.startup_app:agent_os"})  # fmt: skip
    procs.wait_for_log("worker", " ready.")
    procs.wait_for_log("beat", "beat: Starting...")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(url + "/health"), 60, 0.2, "the web process to answer")
    assert httpx.get(url + "/nowhere").status_code == 404

    manager = ScheduleManager(db)
    schedule = manager.create(name="json-digest", cron="* * * * * *", endpoint="/hook", overlap_policy="allow")

    def fired() -> list[dict[str, Any]]:
        return [e for e in lines_of(procs.log_text("worker")) if e["logger"] == "kern_tasks.fire" and "fire" in e]

    fires = wait_for(lambda: len(fired()) >= 3 and fired(), 60, 0.3, "three fire lines")
    procs.check_alive()
    with db.connect() as conn:
        attempts = {row.id: row for row in conn.execute(select(schedule_runs))}
    for entry in fires:
        fire = entry["fire"]
        row = attempts[fire["attempt_id"]]
        assert fire["schedule_id"] == schedule.id and fire["schedule"] == "json-digest"
        assert (fire["slot"], fire["attempt"]) == (row.scheduled_for, row.attempt)
        assert fire["status"] == "success" and entry["level"] == "INFO"
        assert entry["task"] == "kern.fire" and entry["attempt_id"] == fire["attempt_id"] and entry["task_id"]

    # Every line of every process, Celery's start-up included, is JSON.
    worker, beat, web = (lines_of(procs.log_text(name)) for name in ("worker", "beat", "web"))
    assert any(e["message"].endswith(" ready.") for e in worker)
    assert any("schedule(s) claimed" in e["message"] for e in beat)
    assert any(e["logger"] == "uvicorn.access" and "GET /nowhere" in e["message"] for e in web), web[-5:]
    assert any(e["logger"] == "uvicorn.error" and "Uvicorn running" in e["message"] for e in web)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 600
    except httpx.HTTPError:
        return False
