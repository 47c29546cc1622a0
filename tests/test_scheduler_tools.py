"""SchedulerTools on Postgres and SQLite, called directly and by an agent.

The agent tests go through the real OpenAI adapter against tests/chat_server.py, whose
scripted replies play the model.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

from kern_tasks.agent import Agent
from kern_tasks.db import Database
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.settings import Settings
from kern_tasks.tools.scheduler import SchedulerTools

if TYPE_CHECKING:
    from tests.chat_server import ChatServer

pytest_plugins = ["tests.chat_server"]  # the chat_server fixture

NEW_YORK = ZoneInfo("America/New_York")


def call(tools: SchedulerTools, tool_name: str, /, **arguments: Any) -> dict[str, Any]:
    """Call a tool the way the agent does (arguments checked against the signature)."""
    functions = {f.name: f for f in tools.functions()}
    text = functions[tool_name].execute(arguments)
    assert isinstance(text, str)
    return json.loads(text)


@pytest.fixture
def tools(db: Database) -> SchedulerTools:
    return SchedulerTools(db=db, default_endpoint="/agents/my-agent/runs", default_method="POST",
                          default_timezone="UTC", default_payload={"stream": False})


def test_seed_code_runs_as_written(db: Database) -> None:
    # No key, no network needed to construct (the key is asked for when the model is called).
    agent = Agent(model="openai:gpt-5.4", tools=[SchedulerTools(
        db=db, default_endpoint="/agents/my-agent/runs", default_method="POST", default_timezone="UTC")])
    assert list(agent.functions) == [
        "create_schedule", "list_schedules", "get_schedule", "update_schedule", "delete_schedule",
        "enable_schedule", "disable_schedule", "trigger_schedule", "get_schedule_runs"]
    assert all(t["function"]["description"] for t in agent.tool_schemas())


def test_create_is_idempotent_by_name(tools: SchedulerTools) -> None:
    first = call(tools, "create_schedule", name="digest", cron="0 9 * * 1-5", timezone="Europe/Berlin",
                 message="Summarise yesterday")
    assert first["status"] == "created"
    assert {k: first[k] for k in ("name", "cron_expr", "timezone", "endpoint", "method", "enabled", "payload")} == {
        "name": "digest", "cron_expr": "0 9 * * 1-5", "timezone": "Europe/Berlin",
        "endpoint": "/agents/my-agent/runs", "method": "POST", "enabled": True,
        "payload": {"stream": False, "message": "Summarise yesterday"}}
    assert first["schedule"] == "At 09:00, Monday through Friday (Europe/Berlin)"
    local = datetime.fromisoformat(first["next_run_at_local"])
    assert local.timestamp() == first["next_run_at"] > time.time()
    assert (local.hour, local.minute, local.isoweekday() <= 5) == (9, 0, True)

    again = call(tools, "create_schedule", name="digest", cron="0 9 * * 1-5", timezone="Europe/Berlin",
                 message="Summarise yesterday")
    assert again["status"] == "unchanged" and again["id"] == first["id"]
    changed = call(tools, "create_schedule", name="digest", cron="0 10 * * 1-5", timezone="Europe/Berlin",
                   message="Summarise yesterday")
    assert changed["status"] == "updated" and changed["id"] == first["id"] and changed["cron_expr"] == "0 10 * * 1-5"
    assert call(tools, "list_schedules")["meta"]["total_count"] == 1


def test_mistakes_come_back_as_errors_that_say_how_to_fix_them(tools: SchedulerTools, db: Database) -> None:
    bad_hour = call(tools, "create_schedule", name="x", cron="0 25 * * *", message="m")
    assert bad_hour["field"] == "cron" and 'hour field "25": must be 0-23' in bad_hour["error"]
    assert '"0 9 * * *"' in bad_hour["hint"]

    unknown_zone = call(tools, "create_schedule", name="x", cron="0 9 * * *", timezone="ET", message="m")
    assert unknown_zone["field"] == "timezone" and '"ET"' in unknown_zone["error"]
    assert 'timezone="America/New_York"' in unknown_zone["hint"]
    fixed = call(tools, "create_schedule", name="x", cron="0 9 * * *", timezone="EST", message="m")
    assert fixed["field"] == "timezone" and "America/New_York" in fixed["error"]

    full_url = call(tools, "create_schedule", name="x", cron="0 9 * * *", message="m",
                    endpoint="https://example.com/agents/a/runs")
    assert full_url["field"] == "endpoint" and "full URL" in full_url["error"] and "/agents/" in full_url["hint"]

    no_message = call(tools, "create_schedule", name="x", cron="0 9 * * *")
    assert no_message["field"] == "message" and "message=" in no_message["error"]
    blank = call(tools, "create_schedule", name="x", cron="0 9 * * *", message="  ")
    assert blank["field"] == "message"

    no_endpoint = call(SchedulerTools(db=db), "create_schedule", name="x", cron="0 9 * * *")
    assert no_endpoint["field"] == "endpoint" and "pass endpoint" in no_endpoint["error"]
    assert call(tools, "list_schedules")["meta"]["total_count"] == 0  # nothing was written

    # Only a POST to a /runs endpoint needs a message.
    assert call(tools, "create_schedule", name="ping", cron="@hourly", endpoint="/health", method="get")["method"] == "GET"
    assert call(tools, "create_schedule", name="hook", cron="@daily", endpoint="/hooks/x")["status"] == "created"


def test_manage_a_schedule_by_name_or_id(tools: SchedulerTools) -> None:
    created = call(tools, "create_schedule", name="report", cron="*/15 * * * *", message="Report")
    sid = created["id"]
    assert call(tools, "get_schedule", schedule_id="report")["id"] == sid
    assert call(tools, "get_schedule", schedule_id=sid)["name"] == "report"

    updated = call(tools, "update_schedule", schedule_id="report", cron="0 8 * * *",
                   timezone="America/Los_Angeles", message="Report, briefly")
    assert (updated["cron_expr"], updated["timezone"]) == ("0 8 * * *", "America/Los_Angeles")
    assert updated["payload"] == {"stream": False, "message": "Report, briefly"}
    assert datetime.fromtimestamp(updated["next_run_at"], ZoneInfo("America/Los_Angeles")).hour == 8
    assert call(tools, "update_schedule", schedule_id=sid, payload={})["field"] == "message"
    assert "nothing to change" in call(tools, "update_schedule", schedule_id=sid)["error"]
    assert call(tools, "update_schedule", schedule_id=sid, cron="61 * * * *")["field"] == "cron"

    disabled = call(tools, "disable_schedule", schedule_id=sid, reason="holiday")
    assert (disabled["status"], disabled["enabled"], disabled["disabled_reason"]) == ("disabled", False, "holiday")
    assert call(tools, "list_schedules", enabled=True)["meta"]["total_count"] == 0
    enabled = call(tools, "enable_schedule", schedule_id="report")
    assert enabled["enabled"] is True and enabled["next_run_at"] > time.time()

    triggered = call(tools, "trigger_schedule", schedule_id="report")
    assert triggered["run"]["status"] == "queued" and triggered["run"]["manual"] is True
    runs = call(tools, "get_schedule_runs", schedule_id="report", limit=5)
    assert runs["total_count"] == 1 and runs["runs"][0]["id"] == triggered["run"]["id"]
    assert call(tools, "get_schedule", schedule_id=sid)["cron_expr"] == "0 8 * * *"  # trigger kept the cron

    assert call(tools, "delete_schedule", schedule_id="report") == {"status": "deleted", "id": sid, "name": "report"}
    gone = call(tools, "get_schedule", schedule_id=sid)
    assert "no schedule with id or name" in gone["error"] and "list_schedules" in gone["hint"]
    assert "error" in call(tools, "get_schedule_runs", schedule_id=sid)


def pr_digest_agent(db: Database, server: ChatServer) -> Agent:
    # The seed's construction, pointed at the local chat server.
    settings = Settings(openai_base_url=server.url, openai_api_key="test-key")
    return Agent(model="openai:gpt-test", settings=settings, tools=[SchedulerTools(
        db=db, default_endpoint="/agents/my-agent/runs", default_method="POST", default_timezone="UTC")])


DIGEST = {"name": "daily-pr-digest", "cron": "0 9 * * *", "timezone": "America/New_York",
          "message": "Post a digest of open PRs"}


def assert_digest_scheduled(db: Database) -> None:
    schedule = ScheduleManager(db).get_by_name("daily-pr-digest")
    assert (schedule.cron_expr, schedule.timezone, schedule.endpoint, schedule.method) == (
        "0 9 * * *", "America/New_York", "/agents/my-agent/runs", "POST")
    assert schedule.payload == {"message": "Post a digest of open PRs"} and schedule.enabled
    fires = datetime.fromtimestamp(schedule.next_run_at, NEW_YORK)
    assert (fires.hour, fires.minute, fires.second) == (9, 0, 0)
    assert time.time() < schedule.next_run_at <= time.time() + 25 * 3600
    assert len(ScheduleManager(db).list()) == 1


def test_agent_schedules_a_daily_digest_at_9am_et(db: Database, chat_server: ChatServer) -> None:
    chat_server.reset([
        {"tool_calls": [{"id": "call_1", "name": "create_schedule", "arguments": DIGEST}]},
        "Done: the digest of open PRs is posted every day at 09:00 New York time.",
    ])
    out = pr_digest_agent(db, chat_server).run("post a daily digest of open PRs at 9am ET")
    assert out.status == "COMPLETED", out.error
    assert_digest_scheduled(db)
    first, second = (r["json"] for r in chat_server.requests)
    assert first["messages"] == [{"role": "user", "content": "post a daily digest of open PRs at 9am ET"}]
    assert "create_schedule" in [t["function"]["name"] for t in first["tools"]]
    result = json.loads(second["messages"][-1]["content"])
    assert second["messages"][-1]["tool_call_id"] == "call_1"
    assert result["status"] == "created" and result["next_run_at_local"].startswith(
        datetime.fromtimestamp(result["next_run_at"], NEW_YORK).strftime("%Y-%m-%dT09:00:00"))


def test_agent_fixes_a_wrong_zone_after_the_error(db: Database, chat_server: ChatServer) -> None:
    def retry_with_the_hint(request: dict[str, Any]) -> dict[str, Any]:
        error = json.loads(request["messages"][-1]["content"])
        assert error["field"] == "timezone" and "America/New_York" in error["hint"]
        return {"tool_calls": [{"id": "call_2", "name": "create_schedule", "arguments": DIGEST}]}

    chat_server.reset([
        {"tool_calls": [{"id": "call_1", "name": "create_schedule", "arguments": {**DIGEST, "timezone": "ET"}}]},
        retry_with_the_hint,
        "Scheduled for 09:00 America/New_York.",
    ])
    out = pr_digest_agent(db, chat_server).run("post a daily digest of open PRs at 9am ET")
    assert out.status == "COMPLETED", out.error
    assert len(chat_server.requests) == 3
    assert [s.status for s in out.spans if s.kind == "tool"] == ["ERROR", "OK"]
    assert out.metrics["tool_errors"] == 1
    assert_digest_scheduled(db)
