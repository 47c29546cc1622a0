"""Owners: a run's user owns what its SchedulerTools create and sees only that; a user's
token sees only that user's schedules, sessions and traces.

The agents play scripted models (ScriptedModel): what is under test is which rows the
tools and the routes let through, not what a model decides.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kern_tasks.agent import Agent, ScriptedModel
from kern_tasks.db import Database
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.tools.scheduler import SchedulerTools

ENDPOINT = "/agents/helper/runs"


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
