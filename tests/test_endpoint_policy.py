"""One rule, every way in: an AgentOS's endpoint policy and "a trigger needs an enabled
schedule" answer the same through the HTTP API (a real uvicorn), the manager AgentOS holds
(Python callers) and the SchedulerTools of its agents, on Postgres and SQLite.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import httpx
import pytest

from kern_tasks.agent import Agent
from kern_tasks.db import Database
from kern_tasks.errors import KernError, ScheduleDisabled, ValidationError
from kern_tasks.os import AgentOS
from kern_tasks.os.targets import Targets, by_id
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.tools.scheduler import SchedulerTools

from .conftest import EMPTY_SETTINGS
from .os_server import LiveServer

# (method, endpoint, what the API's message says)
UNSERVED = [
    ("POST", "/agents/ghost/runs", 'unknown agent "ghost"; this AgentOS serves: POST /agents/demo/runs, GET /health'),
    ("GET", "/agents/demo/runs", "is a run endpoint: call it with POST, not GET"),
    ("POST", "/workflows/daily-digest/runs", 'unknown workflow "daily-digest"'),
    ("POST", "/schedules", "is not served by this AgentOS; it serves: POST /agents/demo/runs, GET /health"),
    ("POST", "/health", '"/health" answers GET, not POST'),
    ("POST", "/agents/demo/runs/", "is not served by this AgentOS"),
]


def call(tools: SchedulerTools, tool_name: str, /, **arguments: Any) -> dict[str, Any]:
    """Call a tool the way the agent does (arguments checked against the signature)."""
    functions = {f.name: f for f in tools.functions()}
    return json.loads(functions[tool_name].execute(arguments))


def python_error(action: Any) -> tuple[str | None, str]:
    """(field, message) of the deliberate error a manager call raises."""
    with pytest.raises(KernError) as err:
        action()
    return getattr(err.value, "field", None), str(err.value)


class Scene:
    def __init__(self, db: Database) -> None:
        self.tools = SchedulerTools(db=db)  # no policy of its own: the AgentOS hands it its own
        self.agent_os = AgentOS(agents=[Agent(model="offline", id="demo", tools=[self.tools])], db=db,
                                settings=EMPTY_SETTINGS)
        self.manager = self.agent_os.manager
        self.server = LiveServer(self.agent_os.get_app())
        self.api = httpx.Client(timeout=15, trust_env=False)

    def http(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.api.request(method, self.server.url + path, **kwargs)


@pytest.fixture
def scene(db: Database) -> Iterator[Scene]:
    made = Scene(db)
    with made.server:
        yield made
    made.api.close()


@pytest.mark.parametrize(("method", "endpoint", "says"), UNSERVED)
def test_an_unserved_route_is_refused_with_the_apis_message_on_every_way_in(
    scene: Scene, method: str, endpoint: str, says: str
) -> None:
    reply = scene.http("POST", "/schedules", json={"name": "x", "cron_expr": "@daily", "endpoint": endpoint,
                                                   "method": method, "payload": {"message": "m"}})
    assert reply.status_code == 422, reply.text
    api = (reply.json()["field"], reply.json()["detail"])
    assert says in api[1]

    assert python_error(lambda: scene.manager.create(
        name="x", cron="@daily", endpoint=endpoint, method=method, payload={"message": "m"})) == api
    tool = call(scene.tools, "create_schedule", name="x", cron="@daily", endpoint=endpoint, method=method, message="m")
    assert (tool["field"], tool["error"]) == api

    # Re-pointing a served schedule is refused alike.
    made = scene.manager.create(name="served", cron="@daily", endpoint="/agents/demo/runs", payload={"message": "m"})
    reply = scene.http("PATCH", f"/schedules/{made.id}", json={"endpoint": endpoint, "method": method})
    assert (reply.status_code, reply.json()["field"], reply.json()["detail"]) == (422, *api)
    assert python_error(lambda: scene.manager.update(made.id, endpoint=endpoint, method=method)) == api
    tool = call(scene.tools, "update_schedule", schedule_id="served", endpoint=endpoint, method=method)
    assert (tool["field"], tool["error"]) == api
    assert [s.id for s in scene.manager.list_all()] == [made.id]
    assert scene.manager.get(made.id) == made


def test_enable_and_trigger_check_the_route_is_still_served(scene: Scene, db: Database) -> None:
    # A schedule aimed at an agent this AgentOS no longer serves, written by a bare manager.
    retired = ScheduleManager(db).create(name="retired", cron="@daily", endpoint="/agents/retired/runs",
                                         payload={"message": "m"}, enabled_on_create=False)
    reply = scene.http("POST", f"/schedules/{retired.id}/enable")
    assert reply.status_code == 422, reply.text
    api = (reply.json()["field"], reply.json()["detail"])
    assert api[0] == "endpoint" and 'unknown agent "retired"' in api[1]
    assert python_error(lambda: scene.manager.enable(retired.id)) == api
    tool = call(scene.tools, "enable_schedule", schedule_id="retired")
    assert (tool["field"], tool["error"]) == api
    assert scene.manager.get(retired.id).enabled is False

    ScheduleManager(db).enable(retired.id)  # no policy there: any path
    reply = scene.http("POST", f"/schedules/{retired.id}/trigger")
    assert (reply.status_code, reply.json()["field"], reply.json()["detail"]) == (422, *api)
    for trigger in (scene.manager.trigger_run, scene.manager.trigger):
        assert python_error(lambda: trigger(retired.id)) == api
    tool = call(scene.tools, "trigger_schedule", schedule_id="retired")
    assert (tool["field"], tool["error"]) == api
    assert scene.manager.get_runs(retired.id) == []


def test_a_disabled_schedule_is_not_triggered_on_any_way_in(scene: Scene) -> None:
    made = scene.manager.create(name="paused", cron="@daily", endpoint="/agents/demo/runs",
                                payload={"message": "m"}, enabled_on_create=False)
    reply = scene.http("POST", f"/schedules/{made.id}/trigger")
    assert reply.status_code == 409, reply.text
    detail = reply.json()["detail"]
    assert detail == "schedule 'paused' is disabled: enable it first"
    for trigger in (scene.manager.trigger_run, scene.manager.trigger):
        with pytest.raises(ScheduleDisabled) as err:
            trigger(made.id)
        assert str(err.value) == detail
    tool = call(scene.tools, "trigger_schedule", schedule_id="paused")
    assert tool["error"] == detail and "enable_schedule" in tool["hint"]
    assert scene.manager.get_runs(made.id) == []

    # Enabled, every way in queues a run.
    assert scene.http("POST", f"/schedules/{made.id}/enable").json()["enabled"] is True
    assert scene.http("POST", f"/schedules/{made.id}/trigger").status_code == 202
    assert call(scene.tools, "trigger_schedule", schedule_id="paused")["run"]["status"] == "queued"
    assert scene.manager.trigger_run(made.id).status == "queued"


def test_a_policy_given_to_the_tools_is_kept_and_a_bare_one_accepts_any_path(db: Database) -> None:
    elsewhere = Targets(agents=by_id([Agent(model="offline", id="elsewhere")], "agent"))
    own = SchedulerTools(db=db, endpoint_policy=elsewhere)
    AgentOS(agents=[Agent(model="offline", id="demo", tools=[own])], db=db, settings=EMPTY_SETTINGS)
    assert own.endpoint_policy is elsewhere
    refused = call(own, "create_schedule", name="x", cron="@daily", endpoint="/agents/demo/runs", message="m")
    assert refused["field"] == "endpoint" and "POST /agents/elsewhere/runs" in refused["error"]

    bare = SchedulerTools(db=db)
    assert bare.endpoint_policy is None
    assert call(bare, "create_schedule", name="x", cron="@daily", endpoint="/agents/any/runs",
                message="m")["status"] == "created"
    with pytest.raises(ValidationError, match="full URL"):  # validation still holds without a policy
        ScheduleManager(db).create(name="y", cron="@daily", endpoint="https://evil.example/x")
