"""Streaming agent runs: the openai SDK adapter streaming against a local chat-completions
server (tests/chat_server.py), retries (429 then 200) and a 500 forever recorded on the run;
agno's run events (parsed by agno's own `run_output_event_from_dict`) from Agent.run and over
SSE from a real uvicorn on Postgres; cooperative cancel; a disconnecting client; the
listing of an agent's runs; owners (a user's token reaches only its runs); the bounded event channel
between a run's thread and its response.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from kern_tasks.agent import Agent, OpenAIChat, ScriptedModel
from kern_tasks.db import Database
from kern_tasks.os import AgentOS
from kern_tasks.os.run_stream import EventChannel
from kern_tasks.settings import Settings

from .conftest import EMPTY_SETTINGS, POSTGRES_URL, drop_schema, fresh_schema_name
from .os_server import LiveServer, RaisingAgent, gate_agent
from .processes import wait_for

pytest_plugins = ["tests.chat_server"]  # the chat_server fixtures

agno_events = pytest.importorskip("agno.run.agent")
API_KEY = "sk-stream-SECRET-0987654321"


def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: the first
        b: the second
    """
    return a + b


class Gate:
    """A tool that waits until released; `entered` says a call is waiting."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def wait_here(self) -> str:
        """Wait for the test."""
        self.entered.set()
        self.release.wait(20)
        return "waited"


def model_on(server: Any, **options: Any) -> OpenAIChat:
    return OpenAIChat("gpt-test", api_key=API_KEY, base_url=server.url, **options)


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def test_streamed_tool_loop_over_the_wire_in_agnos_events(chat_server: Any) -> None:
    chat_server.reset([
        {"tool_calls": [{"id": "call_1", "name": "add", "arguments": {"a": 2, "b": 3}}]},
        {"content": "2 + 3 = 5", "chunks": ["2 +", " 3 =", " 5"]},
    ])
    agent = Agent(model=model_on(chat_server), name="Math Bot", tools=[add])
    events: list[dict[str, Any]] = []
    out = agent.run("what is 2 + 3?", on_event=events.append, run_id="r1", session_id="s1")
    assert (out.status, out.content) == ("COMPLETED", "2 + 3 = 5")
    assert names(events) == [
        "RunStarted", "ModelRequestStarted", "ModelRequestCompleted", "ToolCallStarted", "ToolCallCompleted",
        "ModelRequestStarted", "RunContent", "RunContent", "RunContent", "ModelRequestCompleted",
        "RunContentCompleted", "RunCompleted"]
    assert [e["content"] for e in events if e["event"] == "RunContent"] == ["2 +", " 3 =", " 5"]
    assert all((e["run_id"], e["session_id"], e["agent_id"], e["agent_name"]) == ("r1", "s1", "math-bot", "Math Bot")
               for e in events)
    # The wire: streamed requests with usage asked for; the tool call assembled from its deltas.
    assert all(r["json"]["stream"] is True and r["json"]["stream_options"] == {"include_usage": True}
               for r in chat_server.requests)
    assert chat_server.requests[1]["json"]["messages"][-2]["tool_calls"][0]["function"] == {
        "name": "add", "arguments": '{"a": 2, "b": 3}'}
    assert out.metrics["input_tokens"] == 22 and out.metrics["model_calls"] == 2

    parsed = [agno_events.run_output_event_from_dict(dict(e)) for e in events]
    started, completed = parsed[3], parsed[4]
    assert isinstance(started, agno_events.ToolCallStartedEvent) and started.tool is not None
    assert (started.tool.tool_name, started.tool.tool_args, started.tool.tool_call_id) == ("add", {"a": 2, "b": 3},
                                                                                          "call_1")
    assert isinstance(completed, agno_events.ToolCallCompletedEvent) and completed.tool is not None
    assert (completed.tool.result, completed.tool.tool_call_error, completed.content) == ("5", False, "5")
    assert isinstance(parsed[2], agno_events.ModelRequestCompletedEvent) and parsed[2].input_tokens == 11
    final = parsed[-1]
    assert isinstance(final, agno_events.RunCompletedEvent) and final.content == "2 + 3 = 5"
    assert final.metrics is not None and final.metrics.total_tokens == 36


def test_a_429_is_retried_streamed_or_not(chat_server: Any) -> None:
    for stream in (False, True):
        chat_server.reset([{"status": 429, "body": '{"error": {"message": "slow down"}}'}, "fine"])
        events: list[dict[str, Any]] = []
        out = Agent(model=model_on(chat_server)).run("hi", on_event=events.append if stream else None)
        assert (out.status, out.content) == ("COMPLETED", "fine")
        assert len(chat_server.requests) == 2
        assert chat_server.requests[1]["headers"]["x-stainless-retry-count"] == "1"
        assert ("RunContent" in names(events)) is stream


def test_a_500_forever_is_a_clear_error_without_the_key(chat_server: Any) -> None:
    body = json.dumps({"error": {"message": f"upstream broke for key {API_KEY}"}})
    chat_server.reset([{"status": 500, "body": body, "forever": True}])
    events: list[dict[str, Any]] = []
    out = Agent(model=model_on(chat_server, max_retries=3)).run("hi", on_event=events.append)
    assert out.status == "ERROR" and len(chat_server.requests) == 4
    assert out.error.startswith("model call failed: openai at 127.0.0.1: HTTP 500 after 4 attempts: ")
    assert "upstream broke" in out.error and API_KEY not in json.dumps(out.to_dict())
    assert names(events) == ["RunStarted", "ModelRequestStarted", "RunError"]
    error = agno_events.run_output_event_from_dict(dict(events[-1]))
    assert isinstance(error, agno_events.RunErrorEvent)
    assert (error.content, error.error_type) == (out.error, "ModelError")


def test_the_offline_model_streams_a_word_at_a_time() -> None:
    events: list[dict[str, Any]] = []
    out = Agent(name="Demo").run("stream this please", on_event=events.append)
    pieces = [e["content"] for e in events if e["event"] == "RunContent"]
    assert len(pieces) > 5 and "".join(pieces) == out.content == Agent(name="Demo").run("stream this please").content


def test_cancel_stops_at_the_next_boundary() -> None:
    gate = Gate()
    model = ScriptedModel([{"tool_calls": [{"name": "wait_here", "arguments": {}},
                                           {"name": "wait_here", "arguments": {}}]}, "never"])
    asked = threading.Event()
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(
        Agent(model=model, tools=[gate.wait_here]).run("go", cancelled=asked.is_set)))
    thread.start()
    assert gate.entered.wait(10)
    asked.set()
    gate.release.set()
    thread.join(10)
    (out,) = result
    assert out.status == "CANCELLED" and out.error == "the run was cancelled"
    assert len(model.calls) == 1  # the second tool call and the next model call never ran
    tool_results = [m["content"] for m in out.messages if m["role"] == "tool"]
    assert tool_results[0] == "waited" and "not run" in tool_results[1]


def test_the_event_channel_is_bounded_and_a_gone_reader_never_blocks_the_run() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        channel = EventChannel(loop, maxsize=2)
        third_put = threading.Event()

        def writer() -> None:
            for n in range(3):
                channel.put({"n": n})
                if n == 2:
                    third_put.set()
            channel.end()

        thread = threading.Thread(target=writer)
        thread.start()
        reader = aiter(channel)
        await asyncio.to_thread(wait_for, lambda: len(channel._items) == 2 or None)
        assert not third_put.is_set()  # the queue is full: the writer waits for the reader
        assert [await anext(reader), await anext(reader), await anext(reader)] == [{"n": 0}, {"n": 1}, {"n": 2}]
        with pytest.raises(StopAsyncIteration):
            await anext(reader)
        await asyncio.to_thread(thread.join, 10)

        gone = EventChannel(loop, maxsize=1)
        gone.put({"n": 0})
        gone.close()  # the reader went away: nothing waits any more
        done = threading.Event()
        threading.Thread(target=lambda: (gone.put({"n": 1}), gone.put({"n": 2}), gone.end(), done.set())).start()
        assert await asyncio.to_thread(done.wait, 10)

        # A reader that stops reading is given up on: its stream ends short, the run goes on.
        stalled = EventChannel(loop, maxsize=1, put_timeout_s=0.05)
        finished = threading.Event()
        threading.Thread(target=lambda: ([stalled.put({"n": n}) for n in range(5)], stalled.end(),
                                         finished.set())).start()
        assert await asyncio.to_thread(finished.wait, 10)
        assert [event async for event in stalled] == []

    asyncio.run(main())


# --- over HTTP: a real uvicorn on Postgres -------------------------------------------------


class Served:
    def __init__(self, url: str, schema: str, agent_os: AgentOS, gate: Gate, waiter: Agent, gate_model: Any) -> None:
        self.url, self.schema, self.agent_os = url, schema, agent_os
        self.gate, self.waiter, self.gate_model = gate, waiter, gate_model


@pytest.fixture(scope="module")
def served(chat_server_module: Any) -> Iterator[Served]:
    schema = fresh_schema_name()
    db = Database(POSTGRES_URL, schema=schema, settings=EMPTY_SETTINGS)
    db.upgrade()
    gate = Gate()
    waiter = Agent(model=ScriptedModel([]), id="waiter", tools=[gate.wait_here])
    slow, gate_model = gate_agent("slow")
    broken = Agent(model=OpenAIChat("gpt-test", api_key=API_KEY, base_url=chat_server_module.url, max_retries=1),
                   id="broken")
    agent_os = AgentOS(agents=[Agent(model="offline", name="Demo", tools=[add]), waiter, slow, broken,
                               RaisingAgent()], db=db, settings=Settings(), background_workers=2)
    try:
        with LiveServer(agent_os.get_app()) as server:
            yield Served(server.url, schema, agent_os, gate, waiter, gate_model)
    finally:
        db.dispose()
        drop_schema(schema)


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """agno's framing: an `event:` line, a `data:` line whose JSON names the same event."""
    kind = None
    for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            event = json.loads(line[6:])
            assert event["event"] == kind
            yield event


def client(served: Served) -> httpx.Client:
    return httpx.Client(base_url=served.url, timeout=20, trust_env=False)


def test_a_run_streams_by_default_and_is_stored(served: Served) -> None:
    with client(served) as http:
        with http.stream("POST", "/agents/demo/runs", data={"message": "hello stream", "user_id": "u1"}) as reply:
            assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
            events = list(sse_events(reply.iter_lines()))
        assert names(events)[0] == "RunStarted" and names(events)[-1] == "RunCompleted"
        run_id, session_id = events[0]["run_id"], events[0]["session_id"]
        text = "".join(e["content"] for e in events if e["event"] == "RunContent")
        stored = http.get(f"/agents/demo/runs/{run_id}").json()
        # The last event comes after the run is stored: the poll already sees it done.
        assert (stored["status"], stored["content"], events[-1]["content"]) == ("COMPLETED", text, text)
        assert (stored["session_id"], stored["user_id"]) == (session_id, "u1")
        assert all(agno_events.run_output_event_from_dict(dict(e)) for e in events)

        listed = http.get("/agents/demo/runs", params={"session_id": session_id})
        assert [(r["run_id"], r["status"], r["run_input"]) for r in listed.json()] == [
            (run_id, "COMPLETED", "hello stream")]
        assert http.get("/agents/demo/runs", params={"session_id": session_id, "status": "error"}).json() == []
        assert http.get("/agents/waiter/runs", params={"session_id": session_id}).status_code == 404
        assert http.get("/agents/demo/runs", params={"session_id": "ghost"}).status_code == 404
        assert http.get("/agents/demo/runs").status_code == 422
        assert http.get("/agents/demo/runs", params={"session_id": session_id, "status": "DONE"}).status_code == 422


def test_a_500_forever_is_recorded_on_the_run(served: Served, chat_server_module: Any) -> None:
    chat_server_module.reset([{"status": 500, "body": "upstream is down", "forever": True}])
    with client(served) as http:
        with http.stream("POST", "/agents/broken/runs", data={"message": "hi"}) as reply:
            events = list(sse_events(reply.iter_lines()))
        assert names(events) == ["RunStarted", "ModelRequestStarted", "RunError"]
        assert "HTTP 500 after 2 attempts: upstream is down" in events[-1]["content"]
        stored = http.get(f"/agents/broken/runs/{events[0]['run_id']}").json()
        assert (stored["status"], stored["error"]) == ("ERROR", events[-1]["content"])
        sync = http.post("/agents/broken/runs", data={"message": "hi", "stream": "false"}).json()
        assert sync["status"] == "ERROR" and "HTTP 500 after 2 attempts" in sync["error"]


def test_cancel_a_streamed_run_mid_tool_and_one_that_never_started(served: Served) -> None:
    served.gate.entered.clear()
    served.gate.release.clear()
    waiter_model = ScriptedModel([{"tool_calls": [{"name": "wait_here", "arguments": {}}]}, "never"])
    served.waiter.model = waiter_model  # the served agent is this object
    with client(served) as http:
        with http.stream("POST", "/agents/waiter/runs", data={"message": "wait"}) as reply:
            lines = reply.iter_lines()
            seen = []
            for event in sse_events(lines):
                seen.append(event)
                if event["event"] == "ToolCallStarted":
                    break
            run_id, session_id = seen[0]["run_id"], seen[0]["session_id"]
            # Two more runs fill the pool (2 threads): the third waits, and is cancelled waiting.
            served.gate_model.release.clear()
            busy = http.post("/agents/slow/runs", data={"message": "x", "stream": "false", "background": "true"}).json()
            waiting = http.post("/agents/slow/runs", data={"message": "y", "stream": "false",
                                                           "background": "true"}).json()
            assert http.post(f"/agents/slow/runs/{waiting['run_id']}/cancel").json() == {}
            assert http.get(f"/agents/slow/runs/{waiting['run_id']}").json()["status"] == "CANCELLED"

            cancel = http.post(f"/agents/waiter/runs/{run_id}/cancel", params={"session_id": session_id})
            assert (cancel.status_code, cancel.json()) == (200, {})
            assert http.get(f"/agents/waiter/runs/{run_id}").json()["status"] == "RUNNING"  # until its boundary
            served.gate.release.set()
            rest = list(sse_events(lines))
        assert names(rest) == ["ToolCallCompleted", "RunCancelled"]
        assert agno_events.run_output_event_from_dict(dict(rest[-1])).is_cancelled
        stored = http.get(f"/agents/waiter/runs/{run_id}").json()
        assert (stored["status"], stored["error"]) == ("CANCELLED", "the run was cancelled")
        assert len(waiter_model.calls) == 1

        served.gate_model.release.set()
        wait_for(lambda: http.get(f"/agents/slow/runs/{busy['run_id']}").json()["status"] == "COMPLETED" or None)
        # A run already ended stays as it is; unknown runs, or another agent's: 404.
        assert http.post(f"/agents/slow/runs/{busy['run_id']}/cancel").json() == {}
        assert http.get(f"/agents/slow/runs/{busy['run_id']}").json()["status"] == "COMPLETED"
        assert http.post("/agents/slow/runs/ghost/cancel").status_code == 404
        assert http.post(f"/agents/demo/runs/{busy['run_id']}/cancel").status_code == 404
        assert http.post(f"/agents/waiter/runs/{run_id}/cancel", params={"session_id": "other"}).status_code == 404


def test_a_client_that_disconnects_does_not_cancel_the_run(served: Served) -> None:
    served.gate_model.release.clear()
    served.gate_model.entered.clear()
    with client(served) as http:
        with http.stream("POST", "/agents/slow/runs", data={"message": "leaving"}) as reply:
            first = next(sse_events(reply.iter_lines()))
        # The connection is closed; the run goes on and is recorded.
        assert served.gate_model.entered.wait(10)
        served.gate_model.release.set()
        done = wait_for(lambda: (lambda r: r if r["status"] != "RUNNING" else None)(
            http.get(f"/agents/slow/runs/{first['run_id']}").json()))
        assert (done["status"], done["content"]) == ("COMPLETED", "released")


def test_an_agent_that_raises_streams_a_run_error(served: Served) -> None:
    with client(served) as http:
        with http.stream("POST", "/agents/raiser/runs", data={"message": "boom"}) as reply:
            events = list(sse_events(reply.iter_lines()))
    assert names(events) == ["RunStarted", "RunError"]
    assert events[-1]["content"].startswith("RuntimeError: agent bug") and events[0]["agent_name"] == "Raiser"


def test_a_cancel_sent_to_another_replica_stops_the_run(served: Served) -> None:
    served.gate.entered.clear()
    served.gate.release.clear()
    waiter_model = ScriptedModel([{"tool_calls": [{"name": "wait_here", "arguments": {}}]}, "never"])
    served.waiter.model = waiter_model
    other_db = Database(POSTGRES_URL, schema=served.schema, settings=EMPTY_SETTINGS)
    other = AgentOS(agents=[Agent(model=ScriptedModel([]), id="waiter")], db=other_db, settings=Settings())
    try:
        with LiveServer(other.get_app()) as replica, client(served) as http:
            accepted = http.post("/agents/waiter/runs", data={"message": "wait", "stream": "false",
                                                              "background": "true"}).json()
            assert served.gate.entered.wait(10)
            with httpx.Client(base_url=replica.url, timeout=20, trust_env=False) as there:
                assert there.post(f"/agents/waiter/runs/{accepted['run_id']}/cancel").json() == {}
            # Ended in the store at once; the run's own replica stops at its next boundary.
            assert http.get(f"/agents/waiter/runs/{accepted['run_id']}").json()["status"] == "CANCELLED"
            served.gate.release.set()
            wait_for(lambda: served.agent_os.runner.in_progress == 0 or None)  # its thread is done
            assert len(waiter_model.calls) == 1  # never asked again after the tool
            assert http.get(f"/agents/waiter/runs/{accepted['run_id']}").json()["status"] == "CANCELLED"
    finally:
        other_db.dispose()



def test_a_users_token_runs_as_that_user_and_reaches_only_their_runs(served: Served) -> None:
    secret, os_id = "a shared secret of more than thirty-two bytes", "stream-os"

    def token(user: str, *scopes: str) -> dict[str, str]:
        claims = {"sub": user, "aud": os_id, "scopes": list(scopes), "exp": int(time.time()) + 600}
        return {"Authorization": f"Bearer {jwt.encode(claims, secret, algorithm='HS256')}"}

    ann, bob = token("ann", "agents:run", "agents:read"), token("bob", "agents:run", "agents:read")
    admin = token("root", "agent_os:admin")
    other_db = Database(POSTGRES_URL, schema=served.schema, settings=EMPTY_SETTINGS)
    settings = Settings(security_key="stream-key", os_id=os_id, jwt_verification_key=secret, jwt_algorithm="HS256")
    guarded = AgentOS(agents=[Agent(model="offline", name="Demo")], db=other_db, settings=settings)
    try:
        with LiveServer(guarded.get_app()) as server, httpx.Client(base_url=server.url, timeout=20,
                                                                   trust_env=False) as http:
            run = http.post("/agents/demo/runs", data={"message": "mine", "stream": "false", "user_id": "bob"},
                            headers=ann).json()
            assert (run["status"], run["user_id"]) == ("COMPLETED", "ann")  # the token's user, not the form's
            path, session = f"/agents/demo/runs/{run['run_id']}", {"session_id": run["session_id"]}
            assert http.get(path, headers=ann).json()["user_id"] == "ann"
            assert http.get(path, headers=admin).status_code == 200
            assert [r["run_id"] for r in http.get("/agents/demo/runs", params=session, headers=ann).json()] == [
                run["run_id"]]
            assert http.get(path, headers=bob).status_code == 404
            assert http.get("/agents/demo/runs", params=session, headers=bob).status_code == 404
            assert http.post(f"{path}/cancel", headers=bob).status_code == 404
            assert http.post(f"{path}/cancel", headers=ann).json() == {}
    finally:
        other_db.dispose()
