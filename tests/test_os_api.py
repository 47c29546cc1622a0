"""AgentOS over real HTTP (uvicorn on loopback): runs in agno's protocol and where they are
stored, the schedules API, auth, bad input, and a schedule fired at the app end to end.

Run storage is checked on real Postgres and SQLite; so is the table of bad requests
(each database rejects different bytes: NUL on Postgres, lone surrogates on SQLite).
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from sqlalchemy import inspect, select

from kern_tasks.agent import Agent, ScriptedModel
from kern_tasks.agent.models import ModelError
from kern_tasks.db import Database
from kern_tasks.db.run_tables import runs, sessions, spans, traces
from kern_tasks.firing.http import FireRequest, fire, make_client
from kern_tasks.os import AgentOS
from kern_tasks.settings import Settings

from .conftest import EMPTY_SETTINGS, POSTGRES_URL, drop_schema, fresh_schema_name
from .os_server import LiveServer, RaisingAgent, gate_agent
from .processes import wait_for

USER_KEY = "user-key-3f9a"
SERVICE_TOKEN = "service-token-7c21"
USER = {"Authorization": f"Bearer {USER_KEY}"}
SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
SYNC = {"stream": "false"}  # as agno's run_agent sends: the finished run as JSON, not events


def demo() -> Agent:
    return Agent(model="offline", name="Demo")


def make_os(db: Database, *agents: Any, **options: Any) -> AgentOS:
    return AgentOS(agents=list(agents) or [demo()], db=db, settings=EMPTY_SETTINGS, **options)


@contextmanager
def serve(agent_os: AgentOS, headers: dict[str, str] | None = None) -> Iterator[tuple[LiveServer, httpx.Client]]:
    with LiveServer(agent_os.get_app()) as server:
        with httpx.Client(base_url=server.url, timeout=15, headers=headers or {}, trust_env=False) as client:
            yield server, client


def rows(db: Database, table: Any, **where: Any) -> list[dict[str, Any]]:
    query = select(table).where(*[table.c[k] == v for k, v in where.items()])
    with db.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    """For tests of the app's own logic, where the database's kind does not matter."""
    database = Database(f"sqlite:///{tmp_path / 'kern.db'}", settings=EMPTY_SETTINGS)
    database.upgrade()
    yield database
    database.dispose()


def poll(client: httpx.Client, path: str, **params: Any) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = client.get(path, params=params).json()
        return body if body.get("status") in ("COMPLETED", "ERROR", "CANCELLED") else None

    return wait_for(done)


# --- runs ---------------------------------------------------------------------------------


def test_sync_run_answers_agnos_shape_and_stores_session_run_and_trace(db: Database) -> None:
    with serve(make_os(db)) as (_, client):
        reply = client.post("/agents/demo/runs", data={"message": "hello there", "stream": "false", "user_id": "u1"})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["status"] == "COMPLETED" and body["agent_id"] == "demo" and body["user_id"] == "u1"
        assert body["content"].startswith('Offline model: I received "hello there"')
        assert body["content_type"] == "str" and body["input"] == {"input_content": "hello there"}
        assert isinstance(body["created_at"], int) and body["model"] == "echo"
        run_id, session_id = body["run_id"], body["session_id"]
        # A second run in the session sees the first as history and gets the next index.
        again = client.post("/agents/demo/runs", data={**SYNC, "message": "and again", "session_id": session_id, "user_id": "u1"})
        assert again.status_code == 200 and again.json()["session_id"] == session_id

    (session,) = rows(db, sessions, session_id=session_id)
    assert (session["session_type"], session["agent_id"], session["user_id"]) == ("agent", "demo", "u1")
    assert session["agent_data"] == {"name": "Demo", "agent_id": "demo"}
    assert isinstance(session["created_at"], int) and session["updated_at"] >= session["created_at"]
    stored = sorted(rows(db, runs, session_id=session_id), key=lambda r: r["run_index"])
    assert [(r["run_index"], r["status"], r["run_type"]) for r in stored] == [(0, "COMPLETED", "agent"), (1, "COMPLETED", "agent")]
    assert stored[0]["run_id"] == run_id and stored[0]["run_data"]["content"] == body["content"]
    assert [m["content"] for m in stored[1]["run_data"]["messages"] if m["role"] == "user"] == ["hello there", "and again"]

    (trace,) = rows(db, traces, run_id=run_id)
    assert (trace["session_id"], trace["agent_id"], trace["user_id"], trace["status"]) == (session_id, "demo", "u1", "OK")
    assert trace["name"] == "agent.run" and trace["duration_ms"] >= 0 and trace["start_time"] <= trace["end_time"]
    tree = {s["name"]: s for s in rows(db, spans, trace_id=trace["trace_id"])}
    assert set(tree) == {"agent.run", "model.call"}
    assert tree["model.call"]["parent_span_id"] == tree["agent.run"]["span_id"]
    assert tree["model.call"]["attributes"]["openinference.span.kind"] == "LLM"
    assert tree["agent.run"]["attributes"]["agno.run.id"] == run_id
    assert (tree["model.call"]["span_kind"], tree["agent.run"]["status_code"]) == ("CLIENT", "OK")


def test_background_run_is_pending_then_running_then_completed(db: Database) -> None:
    agent, gate = gate_agent()
    with serve(make_os(db, agent)) as (_, client):
        accepted = client.post("/agents/gate/runs", data={"message": "slow", "background": "true", "stream": "false"})
        assert accepted.status_code == 202, accepted.text
        run_id, session_id = accepted.json()["run_id"], accepted.json()["session_id"]
        assert accepted.json()["status"] == "PENDING"
        gate.entered.wait(10)
        running = client.get(f"/agents/gate/runs/{run_id}", params={"session_id": session_id}).json()
        assert (running["status"], running["content"], running["input"]) == ("RUNNING", None, {"input_content": "slow"})
        # Wrong session, another component, unknown run: 404.
        assert client.get(f"/agents/gate/runs/{run_id}", params={"session_id": "other"}).status_code == 404
        assert client.get(f"/agents/gate/runs/{uuid.uuid4()}").status_code == 404
        gate.release.set()
        done = poll(client, f"/agents/gate/runs/{run_id}")
        assert (done["status"], done["content"], done["session_id"]) == ("COMPLETED", "released", session_id)
    assert rows(db, traces, run_id=run_id)[0]["status"] == "OK"


def test_a_poll_is_answered_by_another_replica(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'shared.db'}", settings=EMPTY_SETTINGS)
    db.upgrade()
    agent, gate = gate_agent()
    other_db = Database(f"sqlite:///{tmp_path / 'shared.db'}", settings=EMPTY_SETTINGS)
    with serve(make_os(db, agent)) as (_, first), serve(make_os(other_db, gate_agent()[0])) as (_, second):
        run_id = first.post("/agents/gate/runs", data={**SYNC, "message": "x", "background": "true"}).json()["run_id"]
        assert second.get(f"/agents/gate/runs/{run_id}").json()["status"] in ("PENDING", "RUNNING")
        gate.release.set()
        assert poll(second, f"/agents/gate/runs/{run_id}")["content"] == "released"
    db.dispose()
    other_db.dispose()


def test_failed_runs_end_error_with_their_reason_and_a_trace(db: Database) -> None:
    failing = Agent(ScriptedModel([ModelError("upstream said 503")]), id="failing")
    with serve(make_os(db, failing, RaisingAgent())) as (_, client):
        model_error = client.post("/agents/failing/runs", data={**SYNC, "message": "x"}).json()
        assert model_error["status"] == "ERROR" and "upstream said 503" in model_error["error"]
        raised = client.post("/agents/raiser/runs", data={**SYNC, "message": "y", "background": "true"}).json()
        raised = poll(client, f"/agents/raiser/runs/{raised['run_id']}")
        assert raised["status"] == "ERROR" and raised["error"].startswith("RuntimeError: agent bug")
    for run in (model_error, raised):
        (trace,) = rows(db, traces, run_id=run["run_id"])
        assert trace["status"] == "ERROR"
        assert rows(db, runs, run_id=run["run_id"])[0]["status"] == "ERROR"


def test_a_full_pool_refuses_with_429_and_shutdown_ends_every_run(sqlite_db: Database) -> None:
    agent, gate = gate_agent()
    agent_os = make_os(sqlite_db, agent, background_workers=1, max_queued_runs=1, shutdown_grace_s=0.2)
    with serve(agent_os) as (_, client):
        first = client.post("/agents/gate/runs", data={**SYNC, "message": "1", "background": "true"}).json()["run_id"]
        gate.entered.wait(10)
        second = client.post("/agents/gate/runs", data={**SYNC, "message": "2", "background": "true"}).json()["run_id"]
        refused = client.post("/agents/gate/runs", data={**SYNC, "message": "3", "background": "true"})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "5"
        assert "too many runs" in refused.json()["detail"]
    # The server stopped: the waiting run was cancelled, the executing one ended ERROR...
    status = {r["run_id"]: (r["status"], r["run_data"].get("error")) for r in rows(sqlite_db, runs)}
    assert status[first] == ("ERROR", "the server shut down during the run")
    assert status[second] == ("CANCELLED", "the server shut down before the run started")
    assert len(status) == 2  # ...and the refused one was never written
    gate.release.set()  # a late result does not overwrite the ending
    wait_for(lambda: not agent_os.runner._in_flight)
    assert rows(sqlite_db, runs, run_id=first)[0]["status"] == "ERROR"


def test_a_session_belongs_to_its_agent_and_owner(sqlite_db: Database) -> None:
    with serve(make_os(sqlite_db, demo(), Agent(model="offline", id="other"))) as (_, client):
        session_id = client.post("/agents/demo/runs", data={**SYNC, "message": "a", "user_id": "ann"}).json()["session_id"]
        taken = client.post("/agents/other/runs", data={**SYNC, "message": "b", "session_id": session_id, "user_id": "ann"})
        assert taken.status_code == 409 and "belongs to another agent" in taken.json()["detail"]
        stolen = client.post("/agents/demo/runs", data={**SYNC, "message": "c", "session_id": session_id, "user_id": "bob"})
        assert stolen.status_code == 409 and "another user" in stolen.json()["detail"]
        listed = [(a["id"], a["name"]) for a in client.get("/agents").json()]  # agno's AgentSummaryResponse
        assert listed == [("demo", "Demo"), ("other", None)]


# --- a schedule fired at the app (no Celery: the fire function itself) ------------------


def test_a_fire_with_the_service_token_completes_and_leads_to_session_and_trace(db: Database) -> None:
    agent_os = make_os(db, security_key=USER_KEY, service_token=SERVICE_TOKEN)
    with serve(agent_os, USER) as (server, client), make_client() as fire_client:
        created = client.post(
            "/schedules",
            json={"name": "digest", "cron_expr": "0 9 * * 1-5", "endpoint": "/agents/demo/runs",
                  "payload": {"message": "write the digest"}, "timeout_seconds": 30},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        schedule = created.json()
        request = FireRequest(
            schedule_id=schedule["id"], attempt_id=str(uuid.uuid4()), attempt=1, method=schedule["method"],
            endpoint=schedule["endpoint"], payload=schedule["payload"], timeout_seconds=30, user_id="owner-1",
            idempotency_key=f"{schedule['id']}:1",
        )  # fmt: skip
        outcome = fire(fire_client, request, base_url=server.url, service_token=SERVICE_TOKEN, poll_initial_s=0.05)
    assert outcome.status == "success", outcome
    assert outcome.output["content"].startswith('Offline model: I received "write the digest"')
    assert outcome.input == {"input_content": "write the digest"}
    (session,) = rows(db, sessions, session_id=outcome.session_id)
    assert (session["agent_id"], session["user_id"]) == ("demo", "owner-1")
    (run,) = rows(db, runs, run_id=outcome.run_id)
    assert run["session_id"] == outcome.session_id and run["status"] == "COMPLETED"
    assert rows(db, traces, run_id=outcome.run_id)[0]["session_id"] == outcome.session_id


# --- the app's lifespan -----------------------------------------------------------------


def test_user_lifespan_runs_inside_ours_and_scheduler_hook_is_called(sqlite_db: Database) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        events.append("user up")
        yield {"greeting": "hi"}
        events.append("user down")

    agent_os = make_os(sqlite_db, lifespan=lifespan)
    agent_os._start_scheduler = lambda: events.append("scheduler up")  # type: ignore[method-assign]
    agent_os._stop_scheduler = lambda: events.append("scheduler down")  # type: ignore[method-assign]
    with serve(agent_os) as (_, client):
        assert client.get("/health").json()["status"] == "ok"
        assert events == ["scheduler up", "user up"]
    assert events == ["scheduler up", "user up", "user down", "scheduler down"]

    async def start_with_scheduler() -> tuple[bool, Any]:
        agent_os = make_os(sqlite_db, scheduler=True)
        app = agent_os.get_app()
        async with app.router.lifespan_context(app):
            running = agent_os._embedded is not None
        return running, agent_os._embedded

    assert asyncio.run(start_with_scheduler()) == (True, None)  # started, then stopped
    with pytest.raises(ValueError, match="scheduler_poll_interval"):
        make_os(sqlite_db, scheduler_poll_interval=0)
    with pytest.raises(ValueError, match="unique"):
        make_os(sqlite_db, demo(), demo())


# --- agno reads what we store, on the tables agno makes --------------------------------

RUN_TABLES = ("agno_sessions", "agno_runs", "agno_traces", "agno_spans")


def table_picture(db: Database) -> dict[str, Any]:
    insp = inspect(db.engine)
    return {
        table: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(table, schema=db.schema)],
            sorted((ix["name"], tuple(ix["column_names"]), ix["unique"]) for ix in insp.get_indexes(table, schema=db.schema)),
            sorted(
                (fk["referred_table"], tuple(fk["constrained_columns"]), fk["options"].get("ondelete"))
                for fk in insp.get_foreign_keys(table, schema=db.schema)
            ),
        )
        for table in RUN_TABLES
    }


def test_run_tables_are_agnos_and_agno_reads_our_runs(pg_schema: str) -> None:
    """agno 3.1 makes its run tables in one schema, our migration in another: same columns,
    types, indexes and keys. On agno's tables our upgrade changes nothing, and agno reads a
    run served over HTTP as its own (agno's trace reader needs opentelemetry: not checked)."""
    from agno.db.base import SessionType
    from agno.db.postgres import PostgresDb
    from agno.run.agent import RunOutput as AgnoRunOutput

    agno = PostgresDb(db_url=POSTGRES_URL, db_schema=pg_schema)
    ours = Database(POSTGRES_URL, schema=fresh_schema_name(), settings=EMPTY_SETTINGS)
    try:
        ours.upgrade()
        for table_type in ("sessions", "runs", "traces", "spans"):
            agno._get_table(table_type=table_type, create_table_if_not_found=True)
        on_agno = Database(POSTGRES_URL, schema=pg_schema, settings=EMPTY_SETTINGS)
        made_by_agno = table_picture(on_agno)
        assert made_by_agno == table_picture(ours)
        on_agno.upgrade()
        assert table_picture(on_agno) == made_by_agno
        with serve(make_os(on_agno)) as (_, client):
            body = client.post("/agents/demo/runs", data={**SYNC, "message": "hi agno", "user_id": "u9"}).json()
        session = agno.get_session(body["session_id"], SessionType.AGENT, user_id="u9")
        assert (session.agent_id, session.user_id, session.agent_data["name"]) == ("demo", "u9", "Demo")
        (run,) = session.runs
        assert (run.run_id, run.status.value, run.content) == (body["run_id"], "COMPLETED", body["content"])
        assert run.input.input_content == "hi agno"
        parsed = AgnoRunOutput.from_dict(dict(body))
        assert (parsed.run_id, parsed.status.value, parsed.agent_id) == (body["run_id"], "COMPLETED", "demo")
        on_agno.dispose()
    finally:
        agno.db_engine.dispose()
        ours.dispose()
        drop_schema(str(ours.schema))


# --- one server per database kind for the API tables below ------------------------------


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """An AgentOS with a security key and a service token, serving agent "demo"."""
    if request.param == "postgres":
        schema = fresh_schema_name()
        db = Database(POSTGRES_URL, schema=schema, settings=EMPTY_SETTINGS)
    else:
        schema, db = None, Database(f"sqlite:///{tmp_path_factory.mktemp('os') / 'kern.db'}", settings=EMPTY_SETTINGS)
    db.upgrade()
    settings = Settings(security_key=USER_KEY, service_token=SERVICE_TOKEN)  # from settings, not arguments
    agent_os = AgentOS(agents=[demo()], db=db, settings=settings)
    with LiveServer(agent_os.get_app()) as server:
        yield server
    db.dispose()
    if schema:
        drop_schema(schema)


@pytest.fixture
def api(shared: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared.url, headers=USER, timeout=15, trust_env=False) as client:
        yield client


def new_schedule(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"name": f"s-{uuid.uuid4().hex[:8]}", "cron_expr": "*/5 * * * *", "endpoint": "/agents/demo/runs",
            "payload": {"message": "hi"}, **fields}  # fmt: skip
    reply = api.post("/schedules", json=body)
    assert reply.status_code == 201, reply.text
    return reply.json()


def test_schedules_crud_in_agnos_shapes(api: httpx.Client) -> None:
    made = new_schedule(api, timezone="Europe/Berlin", description="d", misfire_policy="skip", jitter_seconds=5)
    assert made["enabled"] is True and made["next_run_at"] > made["created_at"]
    assert (made["target_type"], made["target_id"], made["method"]) == ("agent", "demo", "POST")
    assert (made["misfire_policy"], made["jitter_seconds"], made["overlap_policy"]) == ("skip", 5, "forbid")
    assert "locked_by" not in made
    sid = made["id"]
    assert api.post("/schedules", json={**{k: made[k] for k in ("name", "cron_expr", "endpoint")}}).status_code == 409
    assert api.get(f"/schedules/{sid}").json() == made

    changed = api.patch(f"/schedules/{sid}", json={"cron_expr": "0 9 * * *", "payload": None, "max_retries": 3})
    assert changed.status_code == 200, changed.text
    changed = changed.json()
    assert (changed["cron_expr"], changed["payload"], changed["max_retries"]) == ("0 9 * * *", None, 3)
    assert changed["next_run_at"] != made["next_run_at"] and changed["description"] == "d"
    assert api.patch(f"/schedules/{sid}", json={}).json() == changed
    other = new_schedule(api)
    assert api.patch(f"/schedules/{other['id']}", json={"name": made["name"]}).status_code == 409

    disabled = api.post(f"/schedules/{sid}/disable").json()
    assert set(disabled) == {"id", "name", "enabled", "next_run_at", "updated_at"} and disabled["enabled"] is False
    refused = api.post(f"/schedules/{sid}/trigger")
    assert refused.status_code == 409 and "disabled" in refused.json()["detail"]
    assert api.post(f"/schedules/{sid}/enable").json()["enabled"] is True
    queued = api.post(f"/schedules/{sid}/trigger")
    assert queued.status_code == 202, queued.text
    run = queued.json()
    assert (run["schedule_id"], run["status"], run["attempt"], run["manual"]) == (sid, "queued", 1, True)
    page = api.get(f"/schedules/{sid}/runs").json()
    assert page["meta"] == {"page": 1, "limit": 100, "total_pages": 1, "total_count": 1}
    assert page["data"] == [run]
    assert api.get(f"/schedules/{sid}/runs/{run['id']}").json() == run
    assert api.get(f"/schedules/{other['id']}/runs/{run['id']}").status_code == 404

    listed = api.get("/schedules", params={"limit": 1, "page": 2}).json()
    assert listed["meta"]["limit"] == 1 and listed["meta"]["page"] == 2 and len(listed["data"]) == 1
    assert listed["meta"]["total_pages"] == listed["meta"]["total_count"] >= 2
    api.post(f"/schedules/{other['id']}/disable")
    off = api.get("/schedules", params={"enabled": "false"}).json()["data"]
    assert other["id"] in {s["id"] for s in off} and all(not s["enabled"] for s in off)

    assert api.delete(f"/schedules/{sid}").status_code == 204
    assert api.get(f"/schedules/{sid}").status_code == 404
    assert api.delete(f"/schedules/{sid}").status_code == 404
    assert api.get(f"/schedules/{sid}/runs").status_code == 404


@pytest.mark.parametrize(
    ("method", "endpoint", "field", "says"),
    [
        ("POST", "/agents/ghost/runs", "endpoint", 'unknown agent "ghost"'),
        ("POST", "http://169.254.169.254/latest/meta-data", "endpoint", "full URL"),
        ("POST", "//evil.example/agents/demo/runs", "endpoint", "full URL"),
        ("GET", "/agents/demo/runs", "method", "call it with POST"),
        ("POST", "/health", "method", "answers GET"),
        ("POST", "/agents/demo/runs/", "endpoint", "not served"),
        ("POST", "/agents/demo/runs?x=1", "endpoint", "not served"),
        ("POST", "/teams/t/runs", "endpoint", 'unknown team "t"'),
        ("POST", "/workflows/daily-digest/runs", "endpoint", 'unknown workflow "daily-digest"'),
        ("POST", "/schedules", "endpoint", "not served"),
        ("POST", "/agents/../schedules", "endpoint", '".." segments'),
        ("POST", "agents/demo/runs", "endpoint", 'must start with "/"'),
        ("FETCH", "/health", "method", "not one of"),
    ],
)
def test_a_schedule_must_call_a_route_this_os_serves(
    api: httpx.Client, method: str, endpoint: str, field: str, says: str
) -> None:
    reply = api.post("/schedules", json={"name": "x", "cron_expr": "@daily", "endpoint": endpoint, "method": method})
    assert reply.status_code == 422, reply.text
    assert reply.json()["field"] == field and says in reply.json()["detail"]
    if "served" in says or "unknown" in says:
        assert "POST /agents/demo/runs, GET /health" in reply.json()["detail"]
    made = new_schedule(api)
    repointed = api.patch(f"/schedules/{made['id']}", json={"endpoint": endpoint, "method": method})
    assert repointed.status_code == 422 and repointed.json()["field"] == field


def test_health_is_a_valid_schedule_target(api: httpx.Client) -> None:
    made = new_schedule(api, endpoint="/health", method="get", payload=None)
    assert (made["method"], made["target_type"]) == ("GET", None)


AUTH_CASES = [
    # (method, path, headers, expected status)
    ("GET", "/health", {}, 200),
    ("GET", "/schedules", {}, 401),
    ("GET", "/schedules", {"Authorization": "Bearer wrong"}, 401),
    ("GET", "/schedules", {"Authorization": f"Basic {USER_KEY}"}, 401),
    ("GET", "/schedules", {"Authorization": f"Bearer {USER_KEY}"}, 200),
    ("GET", "/schedules", SERVICE, 403),
    ("POST", "/schedules", SERVICE, 403),
    ("DELETE", "/schedules/x", SERVICE, 403),
    ("GET", "/agents", SERVICE, 403),
    ("GET", "/docs", {}, 401),
    ("GET", "/openapi.json", {}, 401),
    ("GET", "/openapi.json", USER, 200),
    ("GET", "/docs", USER, 200),
    ("GET", "/no-such-route", {}, 401),
    ("POST", "/agents/demo/runs", {}, 401),
    ("POST", "/agents/demo/runs", {"Authorization": "Bearer wrong"}, 401),
    ("POST", "/agents/demo/runs", SERVICE, 200),
    ("POST", "/agents/demo/runs", USER, 200),
    ("POST", "/workflows/w/runs", SERVICE, 404),
    ("GET", "/agents/demo/runs/nope", SERVICE, 404),
    ("GET", "/agents/demo/runs/nope", {}, 401),
]


@pytest.mark.parametrize(("method", "path", "headers", "expected"), AUTH_CASES)
def test_auth_matrix(shared: LiveServer, method: str, path: str, headers: dict[str, str], expected: int) -> None:
    data = {"message": "hi"} if method == "POST" and "/runs" in path else None
    reply = httpx.request(method, shared.url + path, headers=headers, data=data, timeout=15, trust_env=False)
    assert reply.status_code == expected, reply.text
    assert USER_KEY not in reply.text and SERVICE_TOKEN not in reply.text
    if expected == 401:
        assert reply.headers["www-authenticate"] == "Bearer" and "bearer token" in reply.json()["detail"]


def test_the_service_token_may_poll_the_run_it_started(shared: LiveServer) -> None:
    with httpx.Client(base_url=shared.url, headers=SERVICE, timeout=15, trust_env=False) as svc:
        accepted = svc.post("/agents/demo/runs", data={**SYNC, "message": "bg", "background": "true"})
        assert accepted.status_code == 202
        assert poll(svc, f"/agents/demo/runs/{accepted.json()['run_id']}")["status"] == "COMPLETED"


def test_without_a_security_key_everything_is_open(sqlite_db: Database) -> None:
    with serve(make_os(sqlite_db, service_token=SERVICE_TOKEN)) as (_, client):
        assert client.get("/schedules").status_code == 200
        assert client.get("/openapi.json").json()["info"]["title"] == "kern_tasks AgentOS"


LONG = "x" * 300
GOOD = {"name": "ok", "cron_expr": "@daily", "endpoint": "/agents/demo/runs"}
# (method, path, request kwargs, expected status); {sid} is an existing schedule's id.
BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int]] = [
    ("POST", "/schedules", {"content": b"{bad", "headers": {"content-type": "application/json"}}, 422),
    ("POST", "/schedules", {"content": b"", "headers": {"content-type": "application/json"}}, 422),
    ("POST", "/schedules", {"json": []}, 422),
    ("POST", "/schedules", {"json": {}}, 422),
    ("POST", "/schedules", {"data": {"name": "form"}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "name": 5}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "name": ""}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "name": LONG}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "name": "a\u0000b"}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "description": "nul \u0000"}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "payload": {"message": "\u0000"}}}, 422),
    ("POST", "/schedules", {"content": b'{"name":"s","cron_expr":"@daily","endpoint":"/health","method":"GET",'
                             b'"payload":{"\\ud800":1}}', "headers": {"content-type": "application/json"}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "payload": [1, 2]}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "payload": "text"}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "cron": "@daily"}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "cron_expr": "not a cron"}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "cron_expr": "61 * * * *"}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "cron_expr": ""}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "timezone": "Mars/Olympus_Mons"}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "timezone": 1}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "timeout_seconds": "5"}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "timeout_seconds": 1.5}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "timeout_seconds": -1}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "timeout_seconds": 10**30}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "max_retries": True}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "retry_delay_seconds": 10**9}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "misfire_policy": "sometimes"}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "overlap_policy": None}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "jitter_seconds": 10**6}}, 422),
    ("POST", "/schedules", {"json": {**GOOD, "payload": {"big": "x" * 300_000}}}, 422),
    ("POST", "/schedules", {"content": b"x" * (2 * 1024 * 1024), "headers": {"content-type": "application/json"}}, 413),
    ("POST", "/schedules", {"chunked": "application/json"}, 413),
    ("POST", "/agents/demo/runs", {"chunked": "application/x-www-form-urlencoded"}, 413),
    ("GET", "/schedules?limit=0", {}, 422),
    ("GET", "/schedules?limit=abc", {}, 422),
    ("GET", "/schedules?limit=1001", {}, 422),
    ("GET", "/schedules?page=0", {}, 422),
    ("GET", "/schedules?page=99999999999999999999999999", {}, 422),
    ("GET", "/schedules?enabled=maybe", {}, 422),
    ("GET", "/schedules/nope", {}, 404),
    ("GET", "/schedules/%00", {}, 404),
    ("GET", f"/schedules/{LONG}", {}, 404),
    ("GET", "/schedules/%F0%9F%98%80", {}, 404),
    ("PATCH", "/schedules/nope", {"json": {}}, 404),
    ("PATCH", "/schedules/{sid}", {"json": {"name": None}}, 422),
    ("PATCH", "/schedules/{sid}", {"json": {"timezone": "Nope/Zone"}}, 422),
    ("PATCH", "/schedules/{sid}", {"json": {"cron_expr": "* * *"}}, 422),
    ("PATCH", "/schedules/{sid}", {"json": {"enabled": False}}, 422),
    ("PATCH", "/schedules/{sid}", {"json": {"description": "\u0000"}}, 422),
    ("PATCH", "/schedules/{sid}", {"content": b"[", "headers": {"content-type": "application/json"}}, 422),
    ("DELETE", "/schedules/nope", {}, 404),
    ("DELETE", "/schedules/%00", {}, 404),
    ("POST", "/schedules/nope/enable", {}, 404),
    ("POST", "/schedules/nope/disable", {}, 404),
    ("POST", "/schedules/nope/trigger", {}, 404),
    ("GET", "/schedules/nope/runs", {}, 404),
    ("GET", "/schedules/{sid}/runs?page=-1", {}, 422),
    ("GET", "/schedules/{sid}/runs?limit=x", {}, 422),
    ("GET", "/schedules/{sid}/runs/nope", {}, 404),
    ("GET", "/schedules/{sid}/runs/%00", {}, 404),
    ("PUT", "/schedules", {"json": GOOD}, 405),
    ("GET", "/nowhere", {}, 404),
    ("POST", "/agents/demo/runs", {}, 422),
    ("POST", "/agents/demo/runs", {"data": {"stream": "false"}}, 422),
    ("POST", "/agents/demo/runs", {"data": {"message": ""}}, 422),
    ("POST", "/agents/demo/runs", {"data": {"message": "hi", "stream": "maybe"}}, 422),
    ("POST", "/agents/demo/runs", {"data": {"message": "hi", "background": "maybe"}}, 422),
    ("POST", "/agents/demo/runs", {"data": {"message": "hi", "session_id": "a\u0000b"}}, 422),
    ("POST", "/agents/demo/runs", {"data": {"message": "hi", "user_id": LONG}}, 422),
    ("POST", "/agents/demo/runs", {"files": {"f": ("a.txt", b"x")}, "data": {"message": "hi"}}, 415),
    ("POST", "/agents/demo/runs", {"content": b"message=hi", "headers": {"content-type": "text/plain"}}, 415),
    ("POST", "/agents/demo/runs", {"content": b"{", "headers": {"content-type": "application/json"}}, 422),
    ("POST", "/agents/demo/runs", {"json": ["hi"]}, 422),
    ("POST", "/agents/demo/runs", {"json": {"message": 5}}, 422),
    ("POST", "/agents/demo/runs", {"content": b"message=%ff%fe&stream=false",
                                    "headers": {"content-type": "application/x-www-form-urlencoded"}}, 200),
    ("POST", "/agents/demo/runs", {"content": b"message=" + b"x" * (2 * 1024 * 1024),
                                    "headers": {"content-type": "application/x-www-form-urlencoded"}}, 413),
    ("POST", "/agents/ghost/runs", {"data": {"message": "hi"}}, 404),
    ("GET", "/agents/demo/runs/nope", {}, 404),
    ("GET", "/agents/demo/runs/%00", {}, 404),
    ("GET", f"/agents/demo/runs/{LONG}", {}, 404),
    ("GET", f"/agents/demo/runs/x?session_id={LONG}", {}, 422),
    ("GET", "/agents/ghost/runs/x", {}, 404),
    ("GET", "/agents/demo/runs", {}, 422),
    ("GET", "/agents/demo/runs?session_id=x&status=DONE", {}, 422),
    ("GET", "/agents/demo/runs?session_id=%00", {}, 404),
    ("GET", "/agents/demo/runs?session_id=ghost", {}, 404),
    ("GET", "/agents/ghost/runs?session_id=x", {}, 404),
    ("POST", "/agents/demo/runs/nope/cancel", {}, 404),
    ("POST", "/agents/demo/runs/%00/cancel", {}, 404),
    ("POST", f"/agents/demo/runs/x/cancel?session_id={LONG}", {}, 422),
    ("POST", "/agents/ghost/runs/x/cancel", {}, 404),
    ("POST", "/workflows/daily-digest/runs", {"data": {"message": "hi"}}, 404),
    ("GET", "/workflows/daily-digest/runs/x", {}, 404),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "expected"), BAD_REQUESTS)
def test_bad_input_answers_4xx_with_a_message_never_500(
    api: httpx.Client, method: str, path: str, kwargs: dict[str, Any], expected: int
) -> None:
    if "{sid}" in path:
        path = path.replace("{sid}", new_schedule(api)["id"])
    if "chunked" in kwargs:  # 2 MiB without a Content-Length
        chunks = (b"x" * 65536 for _ in range(32))
        kwargs = {"content": chunks, "headers": {"content-type": kwargs["chunked"]}}
    reply = api.request(method, path, **kwargs)
    assert reply.status_code == expected, reply.text
    detail = reply.json()["detail"] if expected != 200 else reply.json()["status"]
    assert isinstance(detail, str) and detail
    if method == "POST" and path == "/workflows/daily-digest/runs":
        assert detail == "unknown workflow 'daily-digest'"
