"""Owners: a run's user owns what its SchedulerTools create and sees only that; a user's
token sees only that user's schedules, sessions and traces.

The agents play scripted models (ScriptedModel): what is under test is which rows the
tools and the routes let through, not what a model decides.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select

from kern_tasks.agent import Agent, ScriptedModel
from kern_tasks.db import Database
from kern_tasks.db.run_tables import traces
from kern_tasks.firing.http import FireRequest, fire, make_client
from kern_tasks.os import AgentOS
from kern_tasks.os.scopes import ADMIN_SCOPE
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.settings import Settings
from kern_tasks.tools.scheduler import SchedulerTools

from .conftest import POSTGRES_URL, drop_schema, fresh_schema_name
from .os_server import LiveServer

ENDPOINT = "/agents/helper/runs"
OS_ID = "owners-os"
SECRET = "the identity provider's secret, 32+ bytes long"
SECURITY_KEY = "security-key-0b7d"
SERVICE_TOKEN = "service-token-41fe"
USER_SCOPES = ["schedules:read", "schedules:write", "schedules:delete", "sessions:read", "sessions:delete",
               "traces:read", "agents:run", "agents:read"]


def scheduler_agent(db: Database, replies: list[Any]) -> Agent:
    return Agent(model=ScriptedModel(replies), id="helper", tools=[SchedulerTools(
        db=db, default_endpoint=ENDPOINT, default_method="POST", default_timezone="UTC")])


def call(tool_name: str, /, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": tool_name, "arguments": arguments}]}


def tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the tools answered the model, in order."""
    return [json.loads(m["content"]) for m in messages if m["role"] == "tool"]


def run_as(db: Database, user: str, replies: list[Any], session_id: str | None = None) -> tuple[Any, list[Any]]:
    out = scheduler_agent(db, [*replies, "done"]).run("manage my schedules", user_id=user, session_id=session_id)
    assert out.status == "COMPLETED", out.error
    return out, tool_results(out.messages)


def test_two_users_agents_create_list_and_trigger_only_their_own(db: Database) -> None:
    mine = {"name": "digest", "cron": "0 9 * * *"}
    alice_run, alice = run_as(db, "alice", [
        call("create_schedule", **mine, message="alice's digest"),
        call("list_schedules"),
        call("trigger_schedule", schedule_id="digest"),
        call("get_schedule_runs", schedule_id="digest"),
    ], session_id="alice-session")
    bob_run, bob = run_as(db, "bob", [
        call("create_schedule", **mine, message="bob's digest"),  # the same name: names are per owner
        call("list_schedules"),
        call("trigger_schedule", schedule_id="digest"),
        call("get_schedule_runs", schedule_id="digest"),
    ])
    created = {"alice": alice[0], "bob": bob[0]}
    assert [r["status"] for r in (alice[0], bob[0])] == ["created", "created"]
    assert alice[0]["id"] != bob[0]["id"]
    for results, user in ((alice, "alice"), (bob, "bob")):
        listed, triggered, runs = results[1], results[2], results[3]
        assert [s["id"] for s in listed["data"]] == [created[user]["id"]]
        assert listed["data"][0]["payload"]["message"] == f"{user}'s digest"
        assert triggered["status"] == "triggered" and triggered["schedule_id"] == created[user]["id"]
        assert [r["id"] for r in runs["runs"]] == [triggered["run"]["id"]]

    manager = ScheduleManager(db)
    alice_row = manager.get_or_raise(created["alice"]["id"])
    bob_row = manager.get_or_raise(created["bob"]["id"])
    assert (alice_row.user_id, bob_row.user_id) == ("alice", "bob")
    # agno's provenance columns: which run and session created each one.
    assert (alice_row.created_by_run_id, alice_row.created_by_session_id) == (alice_run.run_id, "alice-session")
    assert (bob_row.created_by_run_id, bob_row.created_by_session_id) == (bob_run.run_id, bob_run.session_id)
    # Each trigger queued a run of its own schedule, stamped with its owner.
    assert [r.user_id for r in manager.get_runs(alice_row.id)] == ["alice"]
    assert [r.user_id for r in manager.get_runs(bob_row.id)] == ["bob"]


def test_a_model_told_to_touch_another_users_schedule_gets_a_not_found(db: Database) -> None:
    manager = ScheduleManager(db)
    bobs = manager.create(name="bobs-report", cron="0 8 * * *", endpoint=ENDPOINT,
                          payload={"message": "bob's report"}, user_id="bob")
    attempts = [
        call("get_schedule", schedule_id=bobs.id),
        call("get_schedule", schedule_id="bobs-report"),
        call("update_schedule", schedule_id=bobs.id, cron="* * * * *"),
        call("disable_schedule", schedule_id=bobs.id),
        call("enable_schedule", schedule_id="bobs-report"),
        call("trigger_schedule", schedule_id=bobs.id),
        call("get_schedule_runs", schedule_id=bobs.id),
        call("delete_schedule", schedule_id="bobs-report"),
        call("list_schedules"),
    ]
    # One model turn asking for all of them (a turn may call several tools).
    _, answers = run_as(db, "alice", [{"tool_calls": [a["tool_calls"][0] for a in attempts]}])
    *refused, listed = answers
    for answer, attempt in zip(refused, attempts):
        target = attempt["tool_calls"][0]["arguments"]["schedule_id"]
        # The answer a missing schedule gets: nothing of bob's row, and what to do next.
        assert answer == {"error": f'no schedule with id or name "{target}"',
                          "hint": "Call list_schedules to see the ids and names of existing schedules."}
    assert listed["data"] == [] and listed["meta"]["total_count"] == 0
    after = manager.get_or_raise(bobs.id)
    assert after == bobs and manager.get_runs(bobs.id) == []  # untouched, never triggered


def test_a_changing_run_is_recorded_and_a_fixed_owner_wins(db: Database) -> None:
    out, (created, updated) = run_as(db, "carol", [
        call("create_schedule", name="weekly", cron="0 9 * * 1", message="weekly"),
        call("update_schedule", schedule_id="weekly", cron="0 10 * * 1"),
    ])
    row = ScheduleManager(db).get_or_raise(created["id"])
    assert updated["status"] == "updated" and row.cron_expr == "0 10 * * 1"
    assert (row.updated_by_run_id, row.updated_by_session_id) == (out.run_id, out.session_id)

    # A toolkit given user_id acts for that owner whoever runs it (agno's rule).
    fixed = SchedulerTools(db=db, default_endpoint=ENDPOINT, user_id="dave")
    agent = Agent(model=ScriptedModel([call("create_schedule", name="weekly", cron="0 9 * * 1", message="m"),
                                       call("list_schedules"), "done"]), tools=[fixed])
    answers = tool_results(agent.run("go", user_id="carol").messages)
    assert answers[0]["status"] == "created" and answers[0]["id"] != created["id"]
    assert [s["id"] for s in answers[1]["data"]] == [answers[0]["id"]]
    assert ScheduleManager(db).get_or_raise(answers[0]["id"]).user_id == "dave"


def test_the_model_cannot_pass_a_run_context() -> None:
    # run_context is filled in by the tool layer; the model is neither told of it nor may send it.
    tools = {f.name: f for f in SchedulerTools(default_endpoint=ENDPOINT).functions()}
    for function in tools.values():
        assert "run_context" not in function.parameters["properties"]
    with pytest.raises(ValueError, match="unknown argument"):
        tools["list_schedules"].bind({"run_context": {"user_id": "bob"}})


# --- the same over the API, with users' tokens ---------------------------------------------


def token_of(user: str | None, scopes: list[str] = USER_SCOPES) -> dict[str, str]:
    claims: dict[str, Any] = {"aud": OS_ID, "scopes": scopes}
    if user is not None:
        claims["sub"] = user
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


KEY = {"Authorization": f"Bearer {SECURITY_KEY}"}
ADMIN = token_of("root", [ADMIN_SCOPE])


class Served:
    def __init__(self, db: Database, server: LiveServer, helper: ScriptedModel) -> None:
        self.db, self.server, self.helper = db, server, helper
        self.client = httpx.Client(base_url=server.url, timeout=15, trust_env=False)

    def as_(self, headers: dict[str, str], method: str, path: str, **options: Any) -> httpx.Response:
        return self.client.request(method, path, headers=headers, **options)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    schema = fresh_schema_name()
    db = Database(POSTGRES_URL, schema=schema, settings=Settings())
    db.upgrade()
    helper = ScriptedModel([])
    agents = [Agent(model="offline", name="Demo"),
              Agent(model=helper, id="helper", tools=[SchedulerTools(db=db, default_endpoint=ENDPOINT)])]
    settings = Settings(security_key=SECURITY_KEY, service_token=SERVICE_TOKEN, jwt_verification_key=SECRET,
                        jwt_algorithm="HS256", os_id=OS_ID)
    with LiveServer(AgentOS(agents=agents, db=db, settings=settings).get_app()) as server:
        yield (served := Served(db, server, helper))
        served.client.close()
    db.dispose()
    drop_schema(schema)


def new_schedule(served: Served, headers: dict[str, str], name: str) -> dict[str, Any]:
    made = served.as_(headers, "POST", "/schedules", json={
        "name": name, "cron_expr": "0 9 * * *", "endpoint": "/agents/demo/runs", "payload": {"message": "hi"}})
    assert made.status_code == 201, made.text
    return made.json()


def listed_ids(served: Served, headers: dict[str, str], path: str, **params: Any) -> set[str]:
    answer = served.as_(headers, "GET", path, params=params)
    assert answer.status_code == 200, answer.text
    key = {"/schedules": "id", "/sessions": "session_id", "/traces": "trace_id"}[path]
    return {row[key] for row in answer.json()["data"]}


def test_a_users_token_reaches_only_that_users_schedules(served: Served) -> None:
    name = f"digest-{uuid.uuid4().hex[:6]}"
    alice, bob = token_of("alice"), token_of("bob")
    alices, bobs = new_schedule(served, alice, name), new_schedule(served, bob, name)  # names are per owner
    unowned = new_schedule(served, KEY, name)
    manager = ScheduleManager(served.db)
    assert [manager.get_or_raise(s["id"]).user_id for s in (alices, bobs, unowned)] == ["alice", "bob", None]
    run = served.as_(alice, "POST", f"/schedules/{alices['id']}/trigger")
    assert run.status_code == 202, run.text

    assert alices["id"] in listed_ids(served, alice, "/schedules")
    assert not listed_ids(served, alice, "/schedules") & {bobs["id"], unowned["id"]}
    assert {alices["id"], bobs["id"], unowned["id"]} <= listed_ids(served, ADMIN, "/schedules")
    assert {alices["id"], bobs["id"], unowned["id"]} <= listed_ids(served, KEY, "/schedules")

    theirs = alices["id"]
    for method, path, body in [
        ("GET", f"/schedules/{theirs}", None),
        ("PATCH", f"/schedules/{theirs}", {"cron_expr": "* * * * *"}),
        ("POST", f"/schedules/{theirs}/disable", None),
        ("POST", f"/schedules/{theirs}/enable", None),
        ("POST", f"/schedules/{theirs}/trigger", None),
        ("GET", f"/schedules/{theirs}/runs", None),
        ("GET", f"/schedules/{theirs}/runs/{run.json()['id']}", None),
        ("DELETE", f"/schedules/{theirs}", None),
    ]:
        answer = served.as_(bob, method, path, json=body)
        assert answer.status_code == 404, (method, path, answer.text)
        assert "alice" not in answer.text and name not in answer.text
    after = served.as_(alice, "GET", f"/schedules/{theirs}").json()
    assert after == {**alices, "updated_at": after["updated_at"]} and after["enabled"]
    assert len(manager.get_runs(theirs)) == 1  # bob's trigger queued nothing
    assert served.as_(ADMIN, "GET", f"/schedules/{theirs}").status_code == 200


def run_for(served: Served, user: str) -> dict[str, Any]:
    form = {"message": f"hi from {user}", "user_id": user, "stream": "false"}
    answer = served.as_(KEY, "POST", "/agents/demo/runs", data=form)
    assert answer.status_code == 200, answer.text
    return answer.json()


def trace_of(served: Served, run_id: str) -> str:
    with served.db.connect() as conn:
        return conn.execute(select(traces.c.trace_id).where(traces.c.run_id == run_id)).scalar_one()


def test_a_users_token_reaches_only_that_users_sessions_and_traces(served: Served) -> None:
    carol_run, dave_run = run_for(served, "carol"), run_for(served, "dave")
    carol, dave_session, dave_trace = token_of("carol"), dave_run["session_id"], trace_of(served, dave_run["run_id"])
    carols = {"session": carol_run["session_id"], "trace": trace_of(served, carol_run["run_id"])}

    for path, kind in (("/sessions", "session"), ("/traces", "trace")):
        # Narrowed to carol whatever user_id asks for (agno's rule); admin and the key see all.
        assert listed_ids(served, carol, path) == {carols[kind]}
        assert listed_ids(served, carol, path, user_id="dave") == {carols[kind]}
        everyone = {carols[kind], dave_session if kind == "session" else dave_trace}
        assert everyone <= listed_ids(served, ADMIN, path) and everyone <= listed_ids(served, KEY, path)

    for method, path in [
        ("GET", f"/sessions/{dave_session}"),
        ("GET", f"/sessions/{dave_session}/runs"),
        ("GET", f"/sessions/{dave_session}/runs/{dave_run['run_id']}"),
        ("DELETE", f"/sessions/{dave_session}"),
        ("GET", f"/traces/{dave_trace}"),
    ]:
        answer = served.as_(carol, method, path)
        assert answer.status_code == 404, (method, path, answer.text)
        assert "dave" not in answer.text
    assert served.as_(carol, "GET", f"/sessions/{carols['session']}").status_code == 200
    assert served.as_(carol, "GET", f"/traces/{carols['trace']}").status_code == 200
    assert served.as_(token_of("dave"), "GET", f"/sessions/{dave_session}").status_code == 200  # not deleted


def test_an_agents_tools_act_for_the_user_of_the_run_and_of_the_firing_schedule(served: Served) -> None:
    erin, frank = f"erin-{uuid.uuid4().hex[:6]}", f"frank-{uuid.uuid4().hex[:6]}"
    served.helper.replies[:] = [call("create_schedule", name="weekly", cron="0 9 * * 1", message="m"), "done"]
    answer = served.as_(KEY, "POST", ENDPOINT, data={"message": "schedule it", "user_id": erin, "stream": "false"})
    assert answer.status_code == 200 and answer.json()["status"] == "COMPLETED", answer.text
    created = json.loads(served.helper.calls[-1][0][-1]["content"])
    row = ScheduleManager(served.db).get_or_raise(created["id"])
    assert (row.user_id, row.created_by_run_id, row.created_by_session_id) == (
        erin, answer.json()["run_id"], answer.json()["session_id"])
    assert [s["id"] for s in served.as_(token_of(erin), "GET", "/schedules").json()["data"]] == [row.id]
    assert row.id not in listed_ids(served, token_of(frank), "/schedules")

    # A fire of erin's schedule runs as erin: the tools of that run list erin's schedules only.
    ScheduleManager(served.db).create(name="franks", cron="0 9 * * *", endpoint=ENDPOINT,
                                      payload={"message": "m"}, user_id=frank)
    served.helper.replies[:] = [call("list_schedules"), "listed"]
    request = FireRequest(schedule_id=row.id, attempt_id=str(uuid.uuid4()), attempt=1, method="POST",
                          endpoint=ENDPOINT, payload={"message": "what is mine?"}, timeout_seconds=30,
                          user_id=erin, idempotency_key=f"{row.id}:1")
    with make_client() as client:
        outcome = fire(client, request, base_url=served.server.url, service_token=SERVICE_TOKEN, poll_initial_s=0.05)
    assert outcome.status == "success", outcome
    listed = json.loads(served.helper.calls[-1][0][-1]["content"])
    assert [s["id"] for s in listed["data"]] == [row.id]


def test_a_users_run_runs_as_that_user_whatever_the_form_says(served: Served) -> None:
    form = {"message": "hi", "user_id": "hank", "stream": "false"}
    answer = served.as_(token_of("gina"), "POST", "/agents/demo/runs", data=form)
    assert answer.status_code == 200, answer.text
    assert answer.json()["user_id"] == "gina"
