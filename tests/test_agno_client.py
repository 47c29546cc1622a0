"""agno's own client (`agno.client.AgentOSClient`, agno 3.1.10) reads our AgentOS: config,
agents, workflows, sessions and their runs (all, or one), traces and their span trees, deleting a
session. Every answer is parsed by agno's models (the client does it) and checked for the
right values; unknown ids answer 404 and bad query values 4xx, never 500.

One real uvicorn per database kind (Postgres and SQLite) serves an AgentOS with a security
key, two offline agents and a workflow, after three agent runs through the client's
run_agent (two in one session) and one workflow run in process. Agent runs through the client
(sync, streamed, background, cancelled, listed) have a server of their own on Postgres
(`test_agent_runs_sync_streamed_background_cancelled_and_listed`).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Iterator, TypeVar

import httpx
import pytest

pytest.importorskip("agno")

from agno.client import AgentOSClient  # noqa: E402
from agno.db.base import SessionType  # noqa: E402
from agno.os.routers.agents.schema import AgentResponse  # noqa: E402
from agno.os.routers.traces.schemas import TraceDetail, TraceNode, TraceSummary  # noqa: E402
from agno.os.routers.workflows.schema import WorkflowResponse  # noqa: E402
from agno.run import agent as agno_run  # noqa: E402
from agno.utils import log as agno_log  # noqa: E402
from agno.os.schema import (  # noqa: E402
    AgentSessionDetailSchema,
    ConfigResponse,
    RunSchema,
    WorkflowRunSchema,
    WorkflowSessionDetailSchema,
)
from agno.utils.http import get_default_async_client  # noqa: E402

from kern_tasks import __version__  # noqa: E402
from kern_tasks.agent import Agent  # noqa: E402
from kern_tasks.agent.models import Model, ModelResponse, ToolCall  # noqa: E402
from kern_tasks.db import Database  # noqa: E402
from kern_tasks.os import AgentOS  # noqa: E402
from kern_tasks.settings import Settings  # noqa: E402
from kern_tasks.workflow import Condition, Loop, Parallel, Router, Step, StepInput, Workflow  # noqa: E402

from .conftest import EMPTY_SETTINGS, POSTGRES_URL, drop_schema, fresh_schema_name  # noqa: E402
from .os_server import LiveServer  # noqa: E402
from .processes import wait_for  # noqa: E402

KEY = "agno-client-key-51d0"
AUTH = {"Authorization": f"Bearer {KEY}"}
T = TypeVar("T")


def lookup(term: str) -> str:
    """Look a term up.

    Args:
        term: what to look up
    """
    return term.upper()


def shout(step_input: StepInput) -> str:
    return str(step_input.input).upper()


def left(step_input: StepInput) -> str:
    return f"left of {step_input.previous_step_content}"


def right(step_input: StepInput) -> str:
    return f"right of {step_input.previous_step_content}"


@dataclass(frozen=True)
class World:
    url: str
    session_id: str  # demo's session of u1: two runs
    run_ids: tuple[str, str]
    helper_run_id: str  # helper's run for u2, in a session of its own
    workflow_session_id: str  # the workflow's run for u3
    workflow_run_id: str


def sync(awaitable: Awaitable[T]) -> T:
    """Await one of the client's async calls. agno shares one httpx client per process: it
    is closed after each call so the next event loop gets a fresh one."""

    async def main() -> T:
        try:
            return await awaitable
        finally:
            await get_default_async_client().aclose()

    return asyncio.run(main())


def status_of(call: Any) -> int:
    with pytest.raises(httpx.HTTPStatusError) as refused:
        sync(call) if asyncio.iscoroutine(call) else call()
    return refused.value.response.status_code


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if request.param == "postgres":
        schema: str | None = fresh_schema_name()
        db = Database(POSTGRES_URL, schema=schema, settings=EMPTY_SETTINGS)
    else:
        schema, db = None, Database(f"sqlite:///{tmp_path_factory.mktemp('agno') / 'kern.db'}", settings=EMPTY_SETTINGS)
    db.upgrade()
    demo = Agent(model="offline", name="Demo", instructions="Be brief.", description="Answers", tools=[lookup])
    helper = Agent(model="offline", id="helper")
    workflow = Workflow(name="Pipeline", description="shout, then fan out", db=db, steps=[
        Step(name="shout", executor=shout),
        Parallel(Step(name="a", executor=left), Step(name="b", executor=right), name="fan"),
    ])
    # Listed with its steps, never run: every container, an agent step, a nested workflow.
    branchy = Workflow(id="branchy", name="Branchy", steps=[
        Condition(name="check", evaluator=True, steps=[Step(name="ask", agent=demo)],
                  else_steps=[Step(name="skip", executor=shout)]),
        Loop(name="again", steps=[shout], max_iterations=2),
        Router(name="route", choices=[Step(name="l", executor=left), [right]], selector='"l"'),
        Step(name="inner", workflow=Workflow(name="Inner", steps=[shout])),
    ])
    agent_os = AgentOS(agents=[demo, helper], workflows=[workflow, branchy], db=db,
                       settings=Settings(security_key=KEY))
    try:
        with LiveServer(agent_os.get_app()) as server:
            client = AgentOSClient(server.url)  # its run_agent sends stream=false
            first = sync(client.run_agent("demo", "hello there", user_id="u1", headers=AUTH))
            second = sync(client.run_agent("demo", "and again", session_id=first.session_id, user_id="u1",
                                           headers=AUTH))
            other = sync(client.run_agent("helper", "help me", user_id="u2", headers=AUTH))
            flow = workflow.run(input="data", user_id="u3")
            assert [r.status.value for r in (first, second, other)] == ["COMPLETED"] * 3
            assert flow.status == "COMPLETED" and second.session_id == first.session_id
            yield World(server.url, str(first.session_id), (first.run_id, second.run_id), other.run_id,
                        flow.session_id, flow.run_id)
    finally:
        db.dispose()
        if schema:
            drop_schema(schema)


def test_config_agents_and_workflows(world: World) -> None:
    client = AgentOSClient(world.url)
    config = client.get_config(headers=AUTH)
    assert isinstance(config, ConfigResponse) and config.os_id == "kern_tasks AgentOS"
    assert [(a.id, a.name, a.model.provider if a.model else None) for a in config.agents] == [
        ("demo", "Demo", "offline"), ("helper", None, "offline")]
    assert [(w.id, w.name, w.description) for w in config.workflows] == [
        ("pipeline", "Pipeline", "shout, then fan out"), ("branchy", "Branchy", None)]
    assert config.databases == [config.os_database] and config.os_database
    assert config.session and [(d.db_id, d.tables) for d in config.session.dbs or []] == [
        (config.os_database, ["agno_sessions"])]
    assert config.traces and [d.db_id for d in config.traces.dbs or []] == [config.os_database]
    assert [(m.id, m.provider) for m in config.available_models] == [("echo", "offline")]
    assert config.queue is not None and (config.queue.durable, config.queue.queue_per_session) == (False, False)
    assert (config.teams, config.interfaces) == ([], [])
    # What this OS lacks is declared absent: null, present in the body.
    raw = httpx.get(world.url + "/config", headers=AUTH, trust_env=False).json()
    absent = ("memory", "knowledge", "evals", "metrics", "learning", "company", "filesystem", "chat")
    assert {key: raw[key] for key in absent} == dict.fromkeys(absent)
    assert raw["os_version"] == __version__

    listed = sync(client.list_agents(headers=AUTH))
    assert [(a.id, a.description, a.db_id) for a in listed] == [
        ("demo", "Answers", config.os_database), ("helper", None, config.os_database)]
    agent = client.get_agent("demo", headers=AUTH)
    assert isinstance(agent, AgentResponse)
    assert (agent.id, agent.name, agent.db_id) == ("demo", "Demo", config.os_database)
    assert agent.model and (agent.model.model, agent.model.provider) == ("echo", "offline")
    assert agent.tools and [t["name"] for t in agent.tools["tools"]] == ["lookup"]
    assert agent.tools["tools"][0]["parameters"]["properties"]["term"]["type"] == "string"
    assert agent.system_message == {"instructions": "Be brief.", "description": "Answers"}
    assert agent.sessions and agent.sessions["add_history_to_context"] is True

    flows = sync(client.list_workflows(headers=AUTH))
    assert [(w.id, w.db_id) for w in flows] == [("pipeline", config.os_database), ("branchy", config.os_database)]
    flow = client.get_workflow("pipeline", headers=AUTH)
    assert isinstance(flow, WorkflowResponse) and flow.steps is not None
    assert [(s["name"], s["type"]) for s in flow.steps] == [("shout", "Step"), ("fan", "Parallel")]
    assert [(s["name"], s["type"]) for s in flow.steps[1]["steps"]] == [("a", "Step"), ("b", "Step")]
    branchy = client.get_workflow("branchy", headers=AUTH)
    assert branchy.steps is not None
    assert [(s["name"], s["type"]) for s in branchy.steps] == [
        ("check", "Condition"), ("again", "Loop"), ("route", "Router"), ("inner", "Workflow")]
    check, again, route, inner = branchy.steps
    (ask,) = check["steps"]
    assert (ask["name"], ask["agent"]["id"], ask["agent"]["model"]["provider"]) == ("ask", "demo", "offline")
    assert [s["name"] for s in check["else_steps"]] == ["skip"]
    assert [s["name"] for s in again["steps"]] == ["shout"]
    assert [(s["name"], s["type"]) for s in route["steps"]] == [("l", "Step"), ("steps_group_1", "Steps")]
    assert (inner["workflow_id"], [s["name"] for s in inner["steps"]]) == ("inner", ["shout"])

    assert status_of(lambda: client.get_agent("ghost", headers=AUTH)) == 404
    assert status_of(lambda: client.get_workflow("ghost", headers=AUTH)) == 404
    assert status_of(lambda: client.get_workflow("pipeline", version=1, headers=AUTH)) == 404
    assert status_of(lambda: client.get_config()) == 401


def test_sessions_and_their_runs(world: World) -> None:
    client = AgentOSClient(world.url)
    everything = sync(client.get_sessions(headers=AUTH))
    assert everything.meta.total_count == 3 and len(everything.data) == 3
    assert {s.session_id: s.session_type for s in everything.data} == {
        world.session_id: "agent", world.workflow_session_id: "workflow",
        next(s.session_id for s in everything.data if s.agent_id == "helper"): "agent"}

    (mine,) = sync(client.get_sessions(session_type=SessionType.AGENT, component_id="demo", user_id="u1",
                                       headers=AUTH)).data
    assert (mine.session_id, mine.session_name, mine.agent_id, mine.user_id) == (
        world.session_id, "hello there", "demo", "u1")
    assert mine.created_at is not None and mine.updated_at is not None and mine.updated_at >= mine.created_at
    assert [s.user_id for s in sync(client.get_sessions(component_id="helper", headers=AUTH)).data] == ["u2"]
    (flow,) = sync(client.get_sessions(session_type=SessionType.WORKFLOW, headers=AUTH)).data
    assert (flow.session_id, flow.workflow_id, flow.session_name) == (world.workflow_session_id, "pipeline", "data")
    assert sync(client.get_sessions(session_type=SessionType.TEAM, headers=AUTH)).meta.total_count == 0
    assert sync(client.get_sessions(user_id="nobody", headers=AUTH)).data == []
    assert sync(client.get_sessions(session_name="hello", headers=AUTH)).data == []  # no stored names
    second = sync(client.get_sessions(limit=1, page=2, sort_by="user_id", sort_order="asc", headers=AUTH))
    assert [s.user_id for s in second.data] == ["u2"]
    assert (second.meta.page, second.meta.limit, second.meta.total_pages, second.meta.total_count) == (2, 1, 3, 3)
    newest_user = sync(client.get_sessions(sort_by="user_id", sort_order="desc", headers=AUTH))
    assert [s.user_id for s in newest_user.data] == ["u3", "u2", "u1"]

    detail = sync(client.get_session(world.session_id, headers=AUTH))
    assert isinstance(detail, AgentSessionDetailSchema)
    assert (detail.agent_session_id, detail.agent_id, detail.user_id, detail.session_name) == (
        world.session_id, "demo", "u1", "hello there")
    assert detail.agent_data == {"name": "Demo", "agent_id": "demo"}
    assert detail.chat_history is not None
    assert [(m["role"], m["content"][:9]) for m in detail.chat_history] == [
        ("user", "hello the"), ("assistant", "Offline m"), ("user", "and again"), ("assistant", "Offline m")]
    assert sync(client.get_session(world.session_id, user_id="u1", headers=AUTH)).session_id == world.session_id
    flow_detail = sync(client.get_session(world.workflow_session_id, headers=AUTH))
    assert isinstance(flow_detail, WorkflowSessionDetailSchema)
    assert (flow_detail.workflow_id, flow_detail.workflow_name, flow_detail.user_id) == ("pipeline", "Pipeline", "u3")

    runs = sync(client.get_session_runs(world.session_id, headers=AUTH))
    assert all(isinstance(r, RunSchema) for r in runs)
    assert [(r.run_id, r.run_input, r.status, r.agent_id, r.user_id) for r in runs] == [
        (world.run_ids[0], "hello there", "COMPLETED", "demo", "u1"),
        (world.run_ids[1], "and again", "COMPLETED", "demo", "u1")]
    assert all(isinstance(r.content, str) and r.content.startswith("Offline model") for r in runs)
    assert runs[0].run_response_format == "text" and runs[0].created_at is not None
    assert len(sync(client.get_session_runs(world.session_id, status=["completed"], headers=AUTH))) == 2
    assert sync(client.get_session_runs(world.session_id, status=["ERROR", "paused"], headers=AUTH)) == []
    assert sync(client.get_session_runs(world.session_id, created_after=2**40, headers=AUTH)) == []
    assert len(sync(client.get_session_runs(world.session_id, created_before=2**40, headers=AUTH))) == 2
    (flow_run,) = sync(client.get_session_runs(world.workflow_session_id, headers=AUTH))
    assert isinstance(flow_run, WorkflowRunSchema)
    assert (flow_run.run_id, flow_run.workflow_id, flow_run.run_input, flow_run.status) == (
        world.workflow_run_id, "pipeline", "data", "COMPLETED")
    assert flow_run.step_results and [s["step_name"] for s in flow_run.step_results] == ["shout", "fan"]
    one = sync(client.get_session_run(world.session_id, world.run_ids[1], headers=AUTH))
    assert isinstance(one, RunSchema) and (one.run_id, one.run_input) == (world.run_ids[1], "and again")
    one_flow = sync(client.get_session_run(world.workflow_session_id, world.workflow_run_id, headers=AUTH))
    assert isinstance(one_flow, WorkflowRunSchema) and one_flow.run_id == world.workflow_run_id

    # Unknown, of another owner, or of another type: 404.
    assert status_of(client.get_session("ghost", headers=AUTH)) == 404
    assert status_of(client.get_session(world.session_id, user_id="u2", headers=AUTH)) == 404
    assert status_of(client.get_session(world.session_id, session_type=SessionType.WORKFLOW, headers=AUTH)) == 404
    assert status_of(client.get_session_runs("ghost", headers=AUTH)) == 404
    assert status_of(client.get_session_runs(world.session_id, user_id="u2", headers=AUTH)) == 404
    assert status_of(client.get_session_run(world.session_id, world.helper_run_id, headers=AUTH)) == 404
    assert status_of(client.get_session_run(world.session_id, "ghost", headers=AUTH)) == 404


def test_traces_and_their_span_trees(world: World) -> None:
    client = AgentOSClient(world.url)
    session_traces = sync(client.get_traces(session_id=world.session_id, headers=AUTH))
    assert session_traces.meta.total_count == 2 and all(isinstance(t, TraceSummary) for t in session_traces.data)
    assert {t.run_id for t in session_traces.data} == set(world.run_ids)
    assert all((t.agent_id, t.user_id, t.status, t.total_spans, t.error_count) == ("demo", "u1", "OK", 2, 0)
               for t in session_traces.data)
    assert session_traces.data[0].start_time >= session_traces.data[1].start_time  # newest first
    (by_run,) = sync(client.get_traces(run_id=world.helper_run_id, headers=AUTH)).data
    assert (by_run.agent_id, by_run.user_id) == ("helper", "u2")
    assert [t.run_id for t in sync(client.get_traces(user_id="u2", headers=AUTH)).data] == [world.helper_run_id]
    (flow,) = sync(client.get_traces(workflow_id="pipeline", headers=AUTH)).data
    assert (flow.run_id, flow.session_id) == (world.workflow_run_id, world.workflow_session_id)
    window = sync(client.get_traces(start_time="2000-01-01T00:00:00Z", end_time="2999-01-01T00:00:00+00:00",
                                    limit=3, headers=AUTH))
    assert (window.meta.total_count, len(window.data), window.meta.total_pages) == (4, 3, 2)
    assert sync(client.get_traces(start_time="2999-01-01T00:00:00Z", headers=AUTH)).data == []
    assert sync(client.get_traces(end_time="2000-01-01T00:00:00", headers=AUTH)).data == []
    assert sync(client.get_traces(status="ERROR", headers=AUTH)).data == []
    # Times past what the store can write are its first or last instant, not an error.
    assert sync(client.get_traces(start_time="9999-12-31T23:59:59-23:59", headers=AUTH)).data == []
    assert sync(client.get_traces(end_time="9999-12-31T23:59:59-23:59", headers=AUTH)).meta.total_count == 4

    trace_id = by_run.trace_id
    detail = sync(client.get_trace(trace_id, headers=AUTH))
    assert isinstance(detail, TraceDetail) and (detail.run_id, detail.total_spans) == (world.helper_run_id, 2)
    (root,) = detail.tree
    assert (root.name, root.type, root.status, root.start_time) == ("agent.run", "AGENT", "OK", detail.start_time)
    assert root.spans and [(s.name, s.type) for s in root.spans] == [("model.call", "LLM")]
    child = sync(client.get_trace(trace_id, span_id=root.spans[0].id, headers=AUTH))
    assert isinstance(child, TraceNode) and (child.id, child.name) == (root.spans[0].id, "model.call")
    assert sync(client.get_trace(trace_id, run_id=world.helper_run_id, headers=AUTH)).trace_id == trace_id

    flow_detail = sync(client.get_trace(flow.trace_id, headers=AUTH))
    assert isinstance(flow_detail, TraceDetail)
    (flow_root,) = flow_detail.tree

    def count(node: TraceNode) -> int:
        return 1 + sum(count(inner) for inner in node.spans or [])

    assert flow_root.type == "WORKFLOW" and count(flow_root) == flow_detail.total_spans > 1

    assert status_of(client.get_trace("ghost", headers=AUTH)) == 404
    assert status_of(client.get_trace(trace_id, span_id="ghost", headers=AUTH)) == 404
    assert status_of(client.get_trace(trace_id, run_id=world.run_ids[0], headers=AUTH)) == 404


def test_delete_session_removes_it_and_its_runs(world: World) -> None:
    client = AgentOSClient(world.url)
    with httpx.Client(base_url=world.url, headers=AUTH, timeout=15, trust_env=False) as http:
        run = http.post("/agents/helper/runs", data={"message": "forget me", "user_id": "u9", "stream": "false"}).json()
    session_id = run["session_id"]
    assert sync(client.get_sessions(user_id="u9", headers=AUTH)).meta.total_count == 1
    assert status_of(client.delete_session(session_id, user_id="u2", headers=AUTH)) == 404  # not u2's
    assert sync(client.delete_session(session_id, user_id="u9", headers=AUTH)) is None
    assert sync(client.get_sessions(user_id="u9", headers=AUTH)).meta.total_count == 0
    assert status_of(client.get_session(session_id, headers=AUTH)) == 404
    assert status_of(client.get_session_runs(session_id, headers=AUTH)) == 404
    assert status_of(client.delete_session(session_id, headers=AUTH)) == 404
    # The run's trace stays (as agno keeps traces of deleted sessions).
    assert [t.run_id for t in sync(client.get_traces(session_id=session_id, headers=AUTH)).data] == [run["run_id"]]


LONG = "x" * 300
BAD_QUERIES = [
    ("/sessions?type=bogus", 422),
    ("/sessions?limit=0", 422),
    ("/sessions?limit=100000", 422),
    ("/sessions?page=0", 422),
    ("/sessions?page=x", 422),
    ("/sessions?sort_by=bogus", 422),
    ("/sessions?sort_by=session_data", 422),
    ("/sessions?sort_order=up", 422),
    ("/sessions?user_id=a%00b", 422),
    ("/sessions?component_id=a%00b", 422),
    ("/sessions?session_name=a%00b", 422),
    (f"/sessions?user_id={LONG}", 422),
    ("/sessions?db_id=other", 404),
    ("/sessions?table=agno_memories", 404),
    ("/sessions/a%00b", 404),
    (f"/sessions/{LONG}", 404),
    ("/sessions/ghost/runs?status=DONE", 422),
    ("/sessions/ghost/runs?created_after=-1", 422),
    ("/sessions/ghost/runs?created_before=99999999999999999999", 422),
    ("/sessions/a%00b/runs", 404),
    ("/sessions/ghost/runs/a%00b", 404),
    ("/traces?start_time=yesterday", 422),
    ("/traces?end_time=2026-13-01T00:00:00Z", 422),
    ("/traces?status=MAYBE", 422),
    ("/traces?run_id=a%00b", 422),
    ("/traces?page=0", 422),
    ("/traces?limit=0", 422),
    ("/traces/a%00b", 404),
    ("/traces/ghost?span_id=a%00b", 422),
    ("/agents/a%00b", 404),
    (f"/agents/{LONG}", 404),
    ("/workflows/a%00b", 404),
    ("/workflows/pipeline?version=-1", 422),
]


@pytest.mark.parametrize(("path", "expected"), BAD_QUERIES)
def test_bad_query_values_answer_4xx_with_a_message(world: World, path: str, expected: int) -> None:
    reply = httpx.get(world.url + path, headers=AUTH, timeout=15, trust_env=False)
    assert reply.status_code == expected, reply.text
    assert reply.json()["detail"]


# --- agent runs through the client: sync, streamed, background, cancel, listing ------------


class WaitingModel(Model):
    """Asks for the `wait_here` tool, then answers once the tool's result is in."""

    provider = "waiting"

    def __init__(self) -> None:
        super().__init__("waiting")

    def invoke(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ModelResponse:
        if messages[-1]["role"] == "tool":
            return ModelResponse(content="done waiting", finish_reason="stop")
        return ModelResponse(tool_calls=[ToolCall(id="call_wait", name="wait_here", arguments="{}")],
                             finish_reason="tool_calls")


def collect(events: AsyncIterator[Any]) -> list[Any]:
    async def main() -> list[Any]:
        try:
            return [event async for event in events]
        finally:
            await get_default_async_client().aclose()

    return asyncio.run(main())


def test_agent_runs_sync_streamed_background_cancelled_and_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release = threading.Event(), threading.Event()
    # The client skips an SSE event it cannot parse, logging it: none may be.
    unparsed: list[Any] = []
    monkeypatch.setattr(agno_log.logger, "exception", lambda *args, **kwargs: unparsed.append(args))

    def wait_here() -> str:
        """Wait for the test."""
        entered.set()
        release.wait(20)
        return "waited"

    schema = fresh_schema_name()
    db = Database(POSTGRES_URL, schema=schema, settings=EMPTY_SETTINGS)
    db.upgrade()
    agents = [Agent(model="offline", name="Demo", tools=[lookup]), Agent(WaitingModel(), id="waiter", tools=[wait_here])]
    agent_os = AgentOS(agents=agents, db=db, settings=Settings(security_key=KEY))
    try:
        with LiveServer(agent_os.get_app()) as server:
            client = AgentOSClient(server.url)
            ran = sync(client.run_agent("demo", "sync please", user_id="u1", headers=AUTH))
            assert isinstance(ran, agno_run.RunOutput) and ran.status == agno_run.RunStatus.completed
            assert ran.content and ran.content.startswith("Offline model")

            # Streamed (agno's default): our SSE parsed into agno's own event classes.
            events = collect(client.run_agent_stream("demo", "stream please", session_id=ran.session_id,
                                                     user_id="u1", headers=AUTH))
            assert isinstance(events[0], agno_run.RunStartedEvent) and events[0].model_provider == "offline"
            assert isinstance(events[-1], agno_run.RunCompletedEvent)
            pieces = [e.content for e in events if isinstance(e, agno_run.RunContentEvent)]
            assert len(pieces) > 3 and "".join(pieces) == events[-1].content
            assert {e.run_id for e in events} == {events[0].run_id} and events[0].session_id == ran.session_id
            assert unparsed == []

            # Background: 202 with agno's three fields, read by the client as a RunOutput.
            accepted = sync(client.run_agent("waiter", "wait for me", user_id="u1", background=True, headers=AUTH))
            assert (accepted.status, accepted.content) == (agno_run.RunStatus.pending, None) and accepted.run_id
            assert entered.wait(10)
            assert sync(client.cancel_agent_run("waiter", accepted.run_id, headers=AUTH)) is None
            release.set()
            with httpx.Client(base_url=server.url, headers=AUTH, timeout=15, trust_env=False) as http:
                path = f"/agents/waiter/runs/{accepted.run_id}"
                stopped = wait_for(lambda: (lambda r: r if r["status"] != "RUNNING" else None)(http.get(path).json()))
                cancelled = agno_run.RunOutput.from_dict(stopped)
                assert cancelled.status == agno_run.RunStatus.cancelled and cancelled.content is None

                # The agent's runs in a session, as agno lists them (the client has no call for it).
                listed = http.get("/agents/demo/runs", params={"session_id": ran.session_id})
                runs = [RunSchema.model_validate(r) for r in listed.json()]
                assert [(r.run_id, r.status, r.run_input) for r in runs] == [
                    (ran.run_id, "COMPLETED", "sync please"), (events[0].run_id, "COMPLETED", "stream please")]
                assert http.get("/agents/demo/runs", params={"session_id": ran.session_id,
                                                             "status": "CANCELLED"}).json() == []
                (mine,) = [RunSchema.model_validate(r) for r in http.get(
                    "/agents/waiter/runs", params={"session_id": accepted.session_id, "status": "CANCELLED"}).json()]
                assert mine.run_id == accepted.run_id
            # The session's runs through the client agree.
            assert [r.run_id for r in sync(client.get_session_runs(ran.session_id, headers=AUTH))] == [
                r.run_id for r in runs]
            assert status_of(client.cancel_agent_run("waiter", "ghost", headers=AUTH)) == 404
            assert status_of(client.cancel_agent_run("demo", accepted.run_id, headers=AUTH)) == 404
    finally:
        db.dispose()
        drop_schema(schema)
