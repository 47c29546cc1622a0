"""Workflow runs over agno's HTTP protocol, executed on Celery workers (issue 8, parts 3 and 5).

One cluster per module: a migrated Postgres schema, Redis (database REDIS_DB), two real
`celery worker` processes and a real `kern-tasks serve` (uvicorn) process, all loading this
module's `agent_os` through KERN_APP:

- stream=false answers the run's to_dict(), and it equals agno's own run of the same
  definitions (tests/test_workflow_parity.py's helpers; a sequence, a Parallel with a
  failing branch, a Loop with a CEL end condition, a Router, a Condition with else fed by
  the form's session_state and additional_data, a stop); the steps ran in a worker
  process, not the web process;
- background=true answers 202, the run polls RUNNING in agno's shape (agno's
  WorkflowRunOutput reads it) while a step holds it, then ends with the body stream=false
  gives;
- agno's own AgentOSClient.run_workflow parses the answer;
- refusals: unknown workflow 404, input failing the input_schema and bad fields 422
  naming the field, a session of another workflow or user 409 (and
  nothing recorded for them);
- a user's token (JWT) runs as its subject whatever the form says, and polls only its own
  runs (an AgentOS in this process on the cluster's database and broker);
- on the embedded default (SQLite, no broker, AgentOS(scheduler=True) in a uvicorn
  thread, no KERN_APP) a workflow runs through HTTP on the in-process worker.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import jwt
import pytest
from pydantic import BaseModel

from agno.client import AgentOSClient
from agno.run.base import RunStatus as AgnoRunStatus
from agno.run.workflow import WorkflowRunOutput as AgnoWorkflowRunOutput
from agno.utils.http import get_default_async_client

from kern_tasks.os import AgentOS
from kern_tasks.runs.store import RunStore
from kern_tasks.settings import Settings
from kern_tasks.workflow import StepInput, Workflow
from tests import test_workflow_parity as parity
from tests.conftest import broker_url_for
from tests.os_server import LiveServer
from tests.processes import wait_for
from tests.workflow_cluster import READY, WorkflowCluster, running

pytestmark = pytest.mark.slow

REDIS_DB = 1
APP = "tests.test_workflow_http:agent_os"
GATES_ENV = "WORKFLOW_HTTP_GATES"  # a folder: the gate step waits for a file named by its input
GATE_WAIT_S = 60
NOT_A_MESSAGE = object()


# --- the definitions: parity's, built from our classes here and from agno's in the test -----------

def sequence(ns: Any, calls: collections.Counter) -> list[Any]:
    def lookup(step_input: Any) -> str:
        calls["lookup"] += 1
        return f"{step_input.get_step_content('first')} / {step_input.get_all_previous_content()}"
    return [parity.step(ns, "first", parity.echo("first", calls)), parity.echo("bare", calls), lookup]


def parallel_failing(ns: Any, calls: collections.Counter) -> list[Any]:
    def read(step_input: Any) -> str:
        return f"{step_input.previous_step_content} || {step_input.get_step_content('par')}"
    return [
        parity.step(ns, "start", parity.echo("start", calls)),
        ns.Parallel(parity.step(ns, "a", parity.echo("a", calls)),
                    parity.step(ns, "b", parity.failing("b", calls), max_retries=1),
                    parity.step(ns, "c", parity.echo("c", calls)), name="par"),
        parity.step(ns, "read", read),
    ]


def loop_cel(ns: Any, calls: collections.Counter) -> list[Any]:
    # Content grows with each iteration through the steps themselves (no call counter:
    # iterations may run in different worker processes).
    return [ns.Loop(name="lp", max_iterations=4, end_condition="all_success && current_iteration >= 2", steps=[
        parity.step(ns, "work", parity.echo("work", calls)), parity.step(ns, "check", parity.echo("check", calls)),
    ]), parity.step(ns, "after", parity.echo("after", calls))]


def router(ns: Any, calls: collections.Counter) -> list[Any]:
    return [parity.step(ns, "start", parity.echo("start", calls)),
            ns.Router(name="route", selector='input.contains("video") ? "video" : additional_data.route', choices=[
                parity.step(ns, "image", parity.echo("image", calls)),
                parity.step(ns, "video", parity.echo("video", calls))]),
            parity.step(ns, "after", parity.echo("after", calls))]


def condition_else(ns: Any, calls: collections.Counter) -> list[Any]:
    return [parity.step(ns, "start", parity.echo("start", calls)),
            ns.Condition(name="cond", evaluator='additional_data.priority > 5 || session_state.tier == "gold"',
                         steps=[parity.step(ns, "yes", parity.echo("yes", calls))],
                         else_steps=[parity.step(ns, "no", parity.echo("no", calls)),
                                     parity.step(ns, "no2", parity.echo("no2", calls))]),
            parity.step(ns, "after", parity.echo("after", calls))]


def stop(ns: Any, calls: collections.Counter) -> list[Any]:
    return [parity.step(ns, "halt", parity.output(ns, "halt", calls, lambda n: "enough", lambda n: True)),
            parity.step(ns, "never", parity.echo("never", calls))]


BUILDS = {"sequence": sequence, "parallel-failing": parallel_failing, "loop-cel": loop_cel, "router": router,
          "condition": condition_else, "stop": stop}
# case: (workflow id, message, the form's JSON fields)
CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "sequence": ("sequence", "a topic", {}),
    "parallel-failing": ("parallel-failing", "a topic", {}),
    "loop-cel": ("loop-cel", "AI agents", {}),
    "router-input": ("router", "a video please", {"additional_data": {"route": "image"}}),
    "router-data": ("router", "a picture", {"additional_data": {"route": "video"}}),
    "condition-else": ("condition", "urgent: fix",
                       {"additional_data": {"priority": 3}, "session_state": {"tier": "silver"}}),
    "condition-if": ("condition", "urgent: fix",
                     {"additional_data": {"priority": 3}, "session_state": {"tier": "gold"}}),
    "stop": ("stop", "a topic", {}),
}


def where(step_input: StepInput) -> str:
    return f"pid {os.getpid()}"


def gate(step_input: StepInput) -> str:
    """Holds the run RUNNING until the test creates the file its input names."""
    opened = Path(os.environ.get(GATES_ENV, "/nonexistent")) / str(step_input.input)
    deadline = time.monotonic() + GATE_WAIT_S
    while not opened.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return f"opened {step_input.input}" if opened.exists() else "gate timed out"


class Topic(BaseModel):
    topic: str
    depth: int = 1


def typed_step(step_input: StepInput) -> str:
    return f"topic {step_input.input.topic} at depth {step_input.input.depth}"


def workflows() -> list[Workflow]:
    made = [Workflow(id=name, name=name, steps=build(parity.OURS, collections.Counter()))
            for name, build in BUILDS.items()]
    return made + [
        Workflow(id="where", name="where", steps=[where]),
        Workflow(id="gated", name="gated", steps=[gate, parity.echo("after", collections.Counter())]),
        Workflow(id="typed", name="typed", input_schema=Topic, steps=[typed_step]),
    ]


WORKFLOWS = workflows()
# What the web process and the workers load (KERN_APP); its settings are theirs (env).
agent_os = AgentOS(workflows=WORKFLOWS)


def normalised(data: dict[str, Any]) -> dict[str, Any]:
    return {"status": data["status"], "content": data.get("content"), "keys": sorted(k for k in data if k != "events"),
            "steps": [parity.tree(s) for s in data.get("step_results", [])]}


def agno_run(case: str, **kwargs: Any) -> dict[str, Any]:
    """agno's own run of the case's definitions (in this process, agno's classes)."""
    workflow_id, message, fields = CASES[case]
    ran = parity.run(parity.AGNO, BUILDS[workflow_id], message, **copy.deepcopy(fields), **kwargs)
    return {key: ran[key] for key in ("status", "content", "keys", "steps")}


def form(message: Any = NOT_A_MESSAGE, **fields: Any) -> dict[str, str]:
    """agno's form: JSON objects as their text, flags as "true"/"false"."""
    data = {} if message is NOT_A_MESSAGE else {"message": message}
    for key, value in fields.items():
        if isinstance(value, bool):
            data[key] = "true" if value else "false"
        elif isinstance(value, (dict, list)):
            data[key] = json.dumps(value)
        elif value is not None:
            data[key] = value
    data.setdefault("stream", "false")
    return data


# --- the cluster ------------------------------------------------------------------------------------

class Cluster(WorkflowCluster):
    """Two workers (two tasks each) and the web process; `gates` is the folder the gate step
    waits in; `client` speaks HTTP to the web process."""

    def __init__(self, tmp: Path) -> None:
        self.gates = tmp / "gates"
        self.gates.mkdir()
        super().__init__(tmp, REDIS_DB, APP, env={GATES_ENV: str(self.gates)})
        self.client = httpx.Client(base_url=self.url, timeout=60, trust_env=False)
        self.worker_pids: list[int] = []
        self.web_pid = 0

    def start_worker(self, name: str) -> subprocess.Popen:
        return self.procs.worker(name, concurrency=2)

    def start(self) -> None:
        # The workers and the web process start side by side; then each is waited for.
        self.worker_pids = [self.start_worker(name).pid for name in ("w1", "w2")]
        self.web_pid = self.start_web().pid
        for name in ("w1", "w2"):
            self.procs.wait_for_log(name, READY)
        self.wait_up()

    def post(self, workflow_id: str, data: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        return self.client.post(f"/workflows/{workflow_id}/runs", data=data, **kwargs)

    def run(self, workflow_id: str, message: str, **fields: Any) -> dict[str, Any]:
        fields.setdefault("session_id", f"s-{uuid.uuid4().hex[:8]}")
        reply = self.post(workflow_id, form(message, **fields))
        assert reply.status_code == 200, reply.text
        return reply.json()

    def close(self, failed: bool) -> None:
        self.client.close()
        super().close(failed)


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(request, Cluster(tmp_path_factory.mktemp("workflow-http"))) as made:
        yield made


# --- runs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", list(CASES))
def test_a_run_over_http_equals_agnos_own_run(cluster: Cluster, case: str) -> None:
    workflow_id, message, fields = CASES[case]
    session_id = f"s-{case}-{uuid.uuid4().hex[:6]}"
    ran = cluster.run(workflow_id, message, session_id=session_id, user_id="u1", **fields)
    assert normalised(ran) == agno_run(case, user_id="u1")
    assert (ran["workflow_id"], ran["session_id"], ran["input"]) == (workflow_id, session_id, message)
    # The same body is what polling answers, and agno's tables keep the run as it ended.
    polled = cluster.client.get(f"/workflows/{workflow_id}/runs/{ran['run_id']}", params={"session_id": session_id})
    assert polled.status_code == 200 and polled.json() == ran
    stored = RunStore(cluster.db).get(ran["run_id"])
    assert stored is not None and (stored.status, stored.user_id, stored.component_id) == (
        ran["status"], "u1", workflow_id)


def test_steps_run_on_a_worker_not_in_the_web_process(cluster: Cluster) -> None:
    ran = cluster.run("where", "anything")
    pid = int(ran["content"].split()[1])
    assert pid != cluster.web_pid
    # A worker's pool thread runs it, in the worker process (threads pool: the same pid).
    assert pid in cluster.worker_pids


def test_background_run_polls_running_in_agnos_shape_then_ends(cluster: Cluster) -> None:
    token = f"gate-{uuid.uuid4().hex[:8]}"
    accepted = cluster.post("gated", form(token, background=True, session_id=f"s-{token}"))
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body == {"run_id": body["run_id"], "session_id": f"s-{token}", "status": "PENDING"}
    path = f"/workflows/gated/runs/{body['run_id']}"

    running = cluster.client.get(path, params={"session_id": body["session_id"]})
    assert running.status_code == 200, running.text
    seen = running.json()
    assert seen["status"] == "RUNNING" and (seen["run_id"], seen["workflow_id"], seen["input"]) == (
        body["run_id"], "gated", token)
    parsed = AgnoWorkflowRunOutput.from_dict(seen)
    assert parsed.status == AgnoRunStatus.running and parsed.run_id == body["run_id"]
    assert parsed.session_id == body["session_id"] and parsed.workflow_id == "gated"

    (cluster.gates / token).touch()

    def ended() -> dict[str, Any] | None:
        reply = cluster.client.get(path, params={"session_id": body["session_id"]})
        assert reply.status_code == 200, reply.text
        return reply.json() if reply.json()["status"] != "RUNNING" else None

    final = wait_for(ended, timeout=60, interval=0.1, what="the gated run to end")
    assert final["status"] == "COMPLETED" and final["content"].startswith(f"after<opened {token}|")
    assert [s["step_name"] for s in final["step_results"]] == ["gate", "echo_after"]
    # Another session's id, or another workflow, does not find it.
    assert cluster.client.get(path, params={"session_id": "s-other"}).status_code == 404
    assert cluster.client.get(f"/workflows/where/runs/{body['run_id']}").status_code == 404


def test_agnos_client_runs_a_workflow(cluster: Cluster) -> None:
    async def main() -> Any:
        try:
            return await AgentOSClient(cluster.url).run_workflow("sequence", "a topic", user_id="u-client")
        finally:
            await get_default_async_client().aclose()

    result = asyncio.run(main())
    assert isinstance(result, AgnoWorkflowRunOutput)
    assert result.status == AgnoRunStatus.completed and result.workflow_id == "sequence"
    assert normalised(result.to_dict())["steps"] == agno_run("sequence")["steps"]
    assert result.content == agno_run("sequence")["content"]


def test_a_typed_workflow_takes_json_and_refuses_what_fails_its_schema(cluster: Cluster) -> None:
    ran = cluster.run("typed", '{"topic": "agents", "depth": 2}')
    assert (ran["status"], ran["content"]) == ("COMPLETED", "topic agents at depth 2")
    for message in ("not json", '{"depth": 2}', '["agents"]'):
        refused = cluster.post("typed", form(message, session_id="s-typed-refused"))
        assert refused.status_code == 422, (message, refused.text)
        assert refused.json()["field"] == "message"
    assert RunStore(cluster.db).session_data("s-typed-refused") is None


@pytest.mark.parametrize("fields, field", [
    ({"session_state": "{not json"}, "session_state"),
    ({"session_state": "[1, 2]"}, "session_state"),
    ({"additional_data": "42"}, "additional_data"),
    ({"additional_data": "{\"a\": \"nul\\u0000\"}"}, "additional_data"),
    ({"stream": "sometimes"}, "stream"),
    ({"background": "maybe"}, "background"),
    ({}, "message"),
])
def test_bad_fields_answer_422_naming_them(cluster: Cluster, fields: dict[str, str], field: str) -> None:
    session_id = f"s-bad-{uuid.uuid4().hex[:6]}"
    message = NOT_A_MESSAGE if field == "message" else "hi"
    reply = cluster.post("sequence", {**form(message, session_id=session_id), **fields})
    assert reply.status_code == 422, reply.text
    assert reply.json()["field"] == field
    assert RunStore(cluster.db).session_data(session_id) is None


def test_json_bodies_are_read_as_forms(cluster: Cluster) -> None:
    reply = cluster.client.post("/workflows/condition/runs", json={
        "message": "urgent: fix", "stream": False, "additional_data": {"priority": 9}, "session_state": {}})
    assert reply.status_code == 200, reply.text
    assert [s["step_name"] for s in reply.json()["step_results"]][1] == "cond"
    assert reply.json()["step_results"][1]["steps"][0]["step_name"] == "yes"


def test_unknown_workflow_and_run_answer_404(cluster: Cluster) -> None:
    assert cluster.post("nope", form("hi")).status_code == 404
    assert "unknown workflow" in cluster.post("nope", form("hi")).json()["detail"]
    assert cluster.client.get("/workflows/nope/runs/x").status_code == 404
    assert cluster.client.get(f"/workflows/sequence/runs/{uuid.uuid4()}").status_code == 404


def test_a_session_of_another_workflow_or_user_answers_409(cluster: Cluster) -> None:
    session_id = f"s-owned-{uuid.uuid4().hex[:6]}"
    first = cluster.run("sequence", "mine", session_id=session_id, user_id="alice")
    for workflow_id, user_id in (("stop", "alice"), ("sequence", "bob")):
        refused = cluster.post(workflow_id, form("theirs", session_id=session_id, user_id=user_id))
        assert refused.status_code == 409, refused.text
    # The session still holds only alice's one run of "sequence".
    runs = cluster.client.get(f"/sessions/{session_id}/runs", params={"type": "workflow"})
    assert runs.status_code == 200, runs.text
    assert [r["run_id"] for r in runs.json()] == [first["run_id"]]


def test_workflows_are_listed_and_schedulable(cluster: Cluster) -> None:
    listed = cluster.client.get("/workflows")
    assert listed.status_code == 200
    assert [w["id"] for w in listed.json()] == [w.id for w in WORKFLOWS]
    made = cluster.client.post("/schedules", json={
        "name": f"nightly-{uuid.uuid4().hex[:6]}", "cron_expr": "0 3 * * *", "endpoint": "/workflows/sequence/runs",
        "payload": {"message": "a topic"}})
    assert made.status_code == 201, made.text
    refused = cluster.client.post("/schedules", json={
        "name": "nowhere", "cron_expr": "0 3 * * *", "endpoint": "/workflows/nope/runs"})
    assert refused.status_code == 422 and refused.json()["field"] == "endpoint"


# --- a user's token -----------------------------------------------------------------------------------

JWT_SECRET = "workflow-http-jwt-secret-of-32-bytes!"
OS_ID = "workflow-http-os"


def user_token(sub: str, *scopes: str) -> dict[str, str]:
    body = {"sub": sub, "aud": OS_ID, "exp": int(time.time()) + 600, "scopes": list(scopes)}
    return {"Authorization": f"Bearer {jwt.encode(body, JWT_SECRET, algorithm='HS256')}"}


def test_a_users_token_runs_as_its_subject_and_polls_and_cancels_only_its_runs(cluster: Cluster) -> None:
    settings = Settings(security_key="workflow-http-key", os_id=OS_ID, jwt_verification_key=JWT_SECRET,
                        jwt_algorithm="HS256", broker_url=broker_url_for(REDIS_DB))
    guarded = AgentOS(workflows=WORKFLOWS, db=cluster.db, settings=settings)  # the cluster's workers run it
    alice = user_token("alice", "workflows:run", "workflows:read")
    bob = user_token("bob", "workflows:run", "workflows:read")
    with LiveServer(guarded.get_app()) as server, httpx.Client(base_url=server.url, timeout=60,
                                                                 trust_env=False) as client:
        reply = client.post("/workflows/sequence/runs", data=form("a topic", user_id="mallory"), headers=alice)
        assert reply.status_code == 200, reply.text
        ran = reply.json()
        assert ran["status"] == "COMPLETED"
        stored = RunStore(cluster.db).get(ran["run_id"])
        assert stored is not None and stored.user_id == "alice"
        path = f"/workflows/sequence/runs/{ran['run_id']}"
        assert client.get(path, headers=alice).json() == ran
        assert client.get(path, headers=bob).status_code == 404
        assert client.get(path, headers={"Authorization": "Bearer workflow-http-key"}).status_code == 200
        # Cancel is scoped the same way: another's run is as missing as none; hers has ended.
        assert client.post(f"{path}/cancel", headers=bob).status_code == 404
        assert client.post(f"{path}/cancel", headers=alice).status_code == 409


# --- the embedded default: no services ---------------------------------------------------------------

def test_the_embedded_default_runs_a_workflow_over_http_with_no_services(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'kern.db'}", data_dir=tmp_path / "data")
    assert settings.broker_url is None and settings.app is None
    workflow = Workflow(id="sequence", name="sequence", steps=sequence(parity.OURS, collections.Counter()))
    embedded = AgentOS(workflows=[workflow], settings=settings, scheduler=True, scheduler_poll_interval=1)
    with LiveServer(embedded.get_app()) as server, httpx.Client(base_url=server.url, timeout=60,
                                                                  trust_env=False) as client:
        reply = client.post("/workflows/sequence/runs", data=form("a topic", session_id="s-embedded"))
        assert reply.status_code == 200, reply.text
        assert normalised(reply.json()) == agno_run("sequence")
        accepted = client.post("/workflows/sequence/runs", data=form("a topic", background=True))
        assert accepted.status_code == 202

        def ended() -> dict[str, Any] | None:
            polled = client.get(f"/workflows/sequence/runs/{accepted.json()['run_id']}")
            return polled.json() if polled.json()["status"] != "RUNNING" else None

        assert normalised(wait_for(ended, timeout=60, what="the background run")) == agno_run("sequence")
