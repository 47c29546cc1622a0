"""Schedule kinds through the HTTP API (uvicorn on loopback) and SchedulerTools (called
directly, and by an agent whose model is tests/chat_server.py's script), on real
Postgres and SQLite: every kind is made, read back, changed and refused with the field
named, as through the manager (tests/test_schedule_kinds.py).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from kern_tasks.agent import Agent
from kern_tasks.db import Database, db_now
from kern_tasks.os import AgentOS
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.settings import Settings
from kern_tasks.tools.scheduler import SchedulerTools

from .conftest import EMPTY_SETTINGS
from .os_server import LiveServer

if TYPE_CHECKING:
    from tests.chat_server import ChatServer

pytest_plugins = ["tests.chat_server"]  # the chat_server fixture

BERLIN = ZoneInfo("Europe/Berlin")


def now_of(db: Database) -> int:
    with db.connect() as conn:
        return db_now(conn)


def call(tools: SchedulerTools, tool_name: str, /, **arguments: Any) -> dict[str, Any]:
    """Call a tool the way the agent does (arguments checked against the signature)."""
    functions = {f.name: f for f in tools.functions()}
    return json.loads(functions[tool_name].execute(arguments))


# --- the schedules API ---------------------------------------------------------------------------


def test_every_kind_through_the_api(db: Database) -> None:
    agent_os = AgentOS(agents=[Agent(model="offline", name="Demo")], db=db, settings=EMPTY_SETTINGS)
    now = now_of(db)
    base = {"endpoint": "/agents/demo/runs", "payload": {"message": "hi"}}
    with LiveServer(agent_os.get_app()) as server, httpx.Client(base_url=server.url, timeout=15,
                                                                 trust_env=False) as client:  # fmt: skip
        every = client.post("/schedules", json={"name": "every-90", "interval_seconds": 90, "max_runs": 10,
                                                "expires_after_seconds": 30, **base})  # fmt: skip
        assert every.status_code == 201, every.text
        body = every.json()
        assert (body["interval_seconds"], body["max_runs"], body["expires_after_seconds"], body["cron_expr"]) == (
            90, 10, 30, "")  # fmt: skip
        assert body["next_run_at"] == body["created_at"] + 90
        once = client.post("/schedules", json={"name": "remind", "run_at": now + 1200, **base}).json()
        assert (once["run_at"], once["next_run_at"]) == (now + 1200, now + 1200)
        window = client.post("/schedules", json={"name": "windowed", "cron_expr": "0 9 * * *", "start_at": now + 86400,
                                                 "end_at": now + 30 * 86400, **base}).json()  # fmt: skip
        assert window["next_run_at"] >= now + 86400 and window["end_at"] == now + 30 * 86400
        assert client.get(f"/schedules/{once['id']}").json()["run_at"] == now + 1200

        # A kind sent in a PATCH replaces the schedule's; null clears a limit or the window.
        patched = client.patch(f"/schedules/{once['id']}", json={"interval_seconds": 60}).json()
        assert (patched["interval_seconds"], patched["run_at"], patched["cron_expr"]) == (60, None, "")
        cleared = client.patch(f"/schedules/{body['id']}", json={"max_runs": None}).json()
        assert cleared["max_runs"] is None and cleared["interval_seconds"] == 90

        # Every bad combination is a 422 naming the field, and changes nothing.
        for bad, field in (
            ({"name": "none"}, None),  # no kind: the document's oneOf refuses it
            ({"name": "two", "cron_expr": "@daily", "interval_seconds": 5}, None),
            ({"name": "past", "run_at": now - 3600}, "run_at"),
            ({"name": "once-twice", "run_at": now + 60, "max_runs": 2}, "max_runs"),
            ({"name": "backwards", "interval_seconds": 5, "start_at": now + 100, "end_at": now + 50}, "end_at"),
            ({"name": "zero", "interval_seconds": 0}, "interval_seconds"),
            ({"name": "text", "run_at": "tomorrow"}, "run_at"),
        ):
            reply = client.post("/schedules", json={**bad, **base})
            assert reply.status_code == 422, (bad, reply.text)
            if field:
                assert reply.json()["field"] == field, reply.json()
        bad_patch = client.patch(f"/schedules/{window['id']}", json={"end_at": now + 10})
        assert bad_patch.status_code == 422 and bad_patch.json()["field"] == "end_at", bad_patch.text
        two_kinds = client.patch(f"/schedules/{window['id']}", json={"cron_expr": "@daily", "run_at": now + 60})
        assert two_kinds.status_code == 422
        assert client.get(f"/schedules/{window['id']}").json() == window
        assert client.get("/schedules").json()["meta"]["total_count"] == 3


# --- SchedulerTools ---------------------------------------------------------------------------------


@pytest.fixture
def tools(db: Database) -> SchedulerTools:
    return SchedulerTools(db=db, default_endpoint="/agents/my-agent/runs", default_method="POST",
                          default_timezone="Europe/Berlin")  # fmt: skip


def test_every_kind_through_the_tools(tools: SchedulerTools, db: Database) -> None:
    now = now_of(db)
    remind = call(tools, "create_schedule", name="stretch", run_in_seconds=1200, message="Remind me to stretch")
    assert remind["status"] == "created" and remind["timezone"] == "Europe/Berlin"
    assert now + 1200 <= remind["run_at"] <= now_of(db) + 1200 and remind["next_run_at"] == remind["run_at"]
    assert datetime.fromisoformat(remind["run_at_local"]).utcoffset() == datetime.fromtimestamp(now, BERLIN).utcoffset()
    assert remind["schedule"].startswith("once at ")

    every = call(tools, "create_schedule", name="poll", interval_seconds=90, message="Poll the queue",
                 max_runs=10, expires_after_seconds=30)  # fmt: skip
    assert (every["interval_seconds"], every["max_runs"], every["cron_expr"]) == (90, 10, "")
    assert every["schedule"].startswith("every 90 seconds from ")

    local = call(tools, "create_schedule", name="xmas", run_at="2030-12-24T09:00", message="Merry Christmas")
    assert datetime.fromtimestamp(local["run_at"], BERLIN) == datetime(2030, 12, 24, 9, 0, tzinfo=BERLIN)
    windowed = call(tools, "create_schedule", name="quarter", cron="0 9 * * 1", start_at="2030-01-06T00:00",
                    end_at="2030-03-31T23:59", message="Weekly")  # fmt: skip
    assert datetime.fromtimestamp(windowed["next_run_at"], BERLIN) == datetime(2030, 1, 7, 9, 0, tzinfo=BERLIN)  # the first Monday

    switched = call(tools, "update_schedule", schedule_id="xmas", interval_seconds=3600)
    assert (switched["status"], switched["interval_seconds"], switched.get("run_at")) == ("updated", 3600, None)

    # Mistakes come back naming the field, with a hint saying what to send.
    none = call(tools, "create_schedule", name="vague", message="m")
    assert none["field"] == "cron" and "run_in_seconds" in none["hint"]
    two = call(tools, "create_schedule", name="both", cron="@daily", interval_seconds=60, message="m")
    assert two["field"] == "interval_seconds" and "exactly one of" in two["hint"]
    past = call(tools, "create_schedule", name="past", run_at="2020-01-01T09:00", message="m")
    assert past["field"] == "run_at" and "run_in_seconds=1200" in past["hint"]
    garbled = call(tools, "create_schedule", name="garbled", run_at="next tuesday", message="m")
    assert garbled["field"] == "run_at" and "2026-12-24T09:00" in garbled["error"]
    once_limited = call(tools, "create_schedule", name="limited", run_in_seconds=60, max_runs=3, message="m")
    assert once_limited["field"] == "max_runs" and "hint" in once_limited
    assert {s.name for s in ScheduleManager(db).list_all()} == {"stretch", "poll", "xmas", "quarter"}


def agent(db: Database, server: ChatServer) -> Agent:
    settings = Settings(openai_base_url=server.url, openai_api_key="test-key")
    return Agent(model="openai:gpt-test", settings=settings, tools=[SchedulerTools(
        db=db, default_endpoint="/agents/my-agent/runs", default_method="POST", default_timezone="America/New_York")])


def test_an_agent_makes_a_reminder_and_an_interval(db: Database, chat_server: ChatServer) -> None:
    """"remind me in 20 minutes" ends as a run_at in the user's zone, "every 90 seconds" as an interval."""
    chat_server.reset([
        {"tool_calls": [{"id": "call_1", "name": "create_schedule", "arguments": {
            "name": "tea", "run_in_seconds": 1200, "timezone": "Europe/Berlin", "message": "Remind me: tea"}}]},
        "Done: I will remind you in 20 minutes.",
        {"tool_calls": [{"id": "call_2", "name": "create_schedule", "arguments": {
            "name": "heartbeat", "interval_seconds": 90, "message": "Check the build"}}]},
        "Done: every 90 seconds.",
    ])
    before = now_of(db)
    assert agent(db, chat_server).run("remind me in 20 minutes to make tea").status == "COMPLETED"
    assert agent(db, chat_server).run("check the build every 90 seconds").status == "COMPLETED"
    manager = ScheduleManager(db)
    tea, heartbeat = manager.get_by_name("tea"), manager.get_by_name("heartbeat")
    assert (tea.kind, tea.timezone) == ("run_at", "Europe/Berlin") and before + 1200 <= tea.run_at <= now_of(db) + 1200
    assert (heartbeat.kind, heartbeat.interval_seconds, heartbeat.timezone) == ("interval", 90, "America/New_York")
    tools_offered = {t["function"]["name"]: t["function"] for t in chat_server.requests[0]["json"]["tools"]}
    parameters = tools_offered["create_schedule"]["parameters"]["properties"]
    assert {"interval_seconds", "run_in_seconds", "run_at", "start_at", "end_at", "max_runs",
            "expires_after_seconds"} <= parameters.keys()  # fmt: skip
    assert "remind me in 20 minutes" in parameters["run_in_seconds"]["description"]
    result = json.loads(chat_server.requests[1]["json"]["messages"][-1]["content"])
    assert result["status"] == "created" and result["run_at"] == tea.run_at
