"""Tables on first start (issue 7): a process that starts on a database without our tables
migrates it before it serves, ticks or consumes (once, however many start together), or,
with auto-upgrade off, stops at start naming `kern-tasks db upgrade`. And explicit beats
implicit: a Database given a URL reads nothing from the environment.

Real processes throughout: uvicorn serving tests/startup_app.py (an AgentOS configured
only by KERN_*), `celery -A kern_tasks beat|worker`, on a fresh Postgres schema (one that
does not exist yet: creating it is part of the migration) and a Redis database of its own.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import textwrap
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from sqlalchemy import create_engine, inspect, text

from kern_tasks.agent import Agent
from kern_tasks.app import create_app
from kern_tasks.db import Database
from kern_tasks.db.migrate import VERSION_TABLE, head_revision
from kern_tasks.errors import NotMigrated, ValidationError
from kern_tasks.os import AgentOS
from kern_tasks.runtime import runtime_for
from kern_tasks.settings import Settings

from .conftest import EMPTY_SETTINGS, POSTGRES_URL, broker_url_for, flush_broker
from .processes import LOOPBACK, PYTHON, Processes, ServerThread, clean_environ, free_port, kern_env, wait_for

REDIS_DB = 13
MIGRATED = "migrated Database("  # the line Database logs when it applied migrations (kern_tasks.db)
UPGRADE_HINT = "kern-tasks db upgrade"
START_TIMEOUT_S = 90  # six Python processes importing at once on two shared cores


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    processes = Processes(tmp_path / "logs")
    try:
        yield processes
    except BaseException:
        print(processes.dump_logs())
        raise
    finally:
        processes.stop_all()


def env_for(tmp_path: Path, schema: str, base_port: int, **extra: str) -> dict[str, str]:
    return {
        **kern_env(database_url=POSTGRES_URL, base_url=f"http://{LOOPBACK}:{base_port}", data_dir=tmp_path / "kern",
                   schema=schema, broker_url=broker_url_for(REDIS_DB)),
        **extra,
    }  # fmt: skip


def web(procs: Processes, name: str, port: int, env: dict[str, str]) -> subprocess.Popen:
    argv = [PYTHON, "-m", "uvicorn", "tests.startup_app:app", "--host", LOOPBACK, "--port", str(port),
            "--lifespan", "on", "--no-access-log"]  # fmt: skip
    return procs.start(name, argv, env)


def accepting(proc: subprocess.Popen, port: int, procs: Processes, name: str) -> bool:
    """uvicorn listens only once the app's lifespan has started: a connection means ready."""
    if proc.poll() is not None:
        raise AssertionError(f"{name} exited with {proc.returncode}:\n{procs.tail(name)}")
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


def versions(schema: str) -> list[str]:
    engine = create_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(f'SELECT version_num FROM "{schema}".{VERSION_TABLE}')).scalars())
    finally:
        engine.dispose()


def tables(schema: str) -> list[str]:
    engine = create_engine(POSTGRES_URL)
    try:
        return inspect(engine).get_table_names(schema=schema)
    finally:
        engine.dispose()


def migration_lines(procs: Processes) -> list[str]:
    return [line for path in sorted(procs.logs.glob("*.log"))
            for line in path.read_text(errors="replace").splitlines() if MIGRATED in line]  # fmt: skip


def schedule_body(name: str, cron: str = "0 9 * * *") -> dict[str, object]:
    return {"name": name, "cron_expr": cron, "endpoint": "/agents/echo/runs", "payload": {"message": name}}


# --- AgentOS on an empty schema ------------------------------------------------------------


@pytest.mark.slow
def test_agentos_under_uvicorn_on_an_empty_postgres_schema_answers_its_first_requests(
    tmp_path: Path, pg_schema: str, procs: Processes
) -> None:
    port = free_port()
    proc = web(procs, "web", port, env_for(tmp_path, pg_schema, port))
    wait_for(lambda: accepting(proc, port, procs, "web"), START_TIMEOUT_S, what="uvicorn to serve")
    with httpx.Client(base_url=f"http://{LOOPBACK}:{port}", timeout=30) as client:
        listed = client.get("/schedules")  # the very first request
        assert listed.status_code == 200, listed.text
        assert listed.json()["data"] == [] and listed.json()["meta"]["total_count"] == 0
        created = client.post("/schedules", json=schedule_body("first"))
        assert created.status_code == 201, created.text
        run = client.post("/agents/echo/runs", data={"message": "hello", "stream": "false"})
        assert run.status_code == 200, run.text
        assert run.json()["status"] == "COMPLETED" and "hello" in run.json()["content"]
        runs = client.get(f"/schedules/{created.json()['id']}/runs")
        assert runs.status_code == 200 and runs.json()["data"] == []
    (line,) = migration_lines(procs)
    assert f"schema='{pg_schema}'" in line and line.rstrip().endswith(head_revision())
    assert versions(pg_schema) == [head_revision()]


# --- six processes, one empty database -------------------------------------------------------


@pytest.mark.slow
def test_six_processes_starting_together_on_an_empty_database_all_come_up_and_migrate_it_once(
    tmp_path: Path, pg_schema: str, procs: Processes
) -> None:
    flush_broker(REDIS_DB)
    ports = [free_port(), free_port()]
    env = env_for(tmp_path, pg_schema, ports[0])
    webs = [web(procs, f"web{i}", port, env) for i, port in enumerate(ports)]
    for i in range(2):
        procs.beat(f"beat{i}", max_interval=1, env=env)
        procs.worker(f"worker{i}", concurrency=2, env=env)

    for i, (proc, port) in enumerate(zip(webs, ports)):
        wait_for(lambda: accepting(proc, port, procs, f"web{i}"), START_TIMEOUT_S, what=f"web{i} to serve")
    for i in range(2):
        procs.wait_for_log(f"worker{i}", " ready.", START_TIMEOUT_S)
        procs.wait_for_log(f"beat{i}", "beat: Starting...", START_TIMEOUT_S)
    procs.check_alive()

    # Every process works: both webs answer, beat claims, a worker fires at web0.
    clients = [httpx.Client(base_url=f"http://{LOOPBACK}:{port}", timeout=30) for port in ports]
    try:
        created = clients[1].post("/schedules", json=schedule_body("tick", cron="* * * * * *"))
        assert created.status_code == 201, created.text
        schedule_id = created.json()["id"]

        def a_success() -> bool:
            reply = clients[0].get(f"/schedules/{schedule_id}/runs")
            assert reply.status_code == 200, reply.text
            return any(r["status"] == "success" for r in reply.json()["data"])

        wait_for(a_success, 60, 0.5, what="a scheduled fire to succeed")
        assert clients[0].post(f"/schedules/{schedule_id}/disable").status_code == 200
        for client in clients:
            assert client.get("/schedules").status_code == 200
    finally:
        for client in clients:
            client.close()
    procs.check_alive()

    # Migrated once: of the six, exactly one applied the migrations (all of them, to head);
    # the others found them done under the advisory lock.
    lines = migration_lines(procs)
    assert len(lines) == 1, lines
    assert "applied 0001, " in lines[0] and lines[0].rstrip().endswith(head_revision())
    assert versions(pg_schema) == [head_revision()]


# --- auto-upgrade off -------------------------------------------------------------------------


@pytest.mark.slow
def test_with_auto_upgrade_off_web_beat_and_worker_stop_at_start_naming_the_upgrade_command(
    tmp_path: Path, pg_schema: str, procs: Processes
) -> None:
    port = free_port()
    env = env_for(tmp_path, pg_schema, port, KERN_AUTO_UPGRADE="0")
    started = {
        "web": web(procs, "web", port, env),
        "beat": procs.beat("beat", max_interval=1, env=env),
        "worker": procs.worker("worker", concurrency=2, env=env),
    }
    for name, proc in started.items():
        code = proc.wait(timeout=START_TIMEOUT_S)
        assert code != 0, f"{name} exited 0:\n{procs.tail(name)}"
        assert UPGRADE_HINT in procs.log_text(name), procs.tail(name)
    assert started["beat"].returncode == started["worker"].returncode == 78  # EX_CONFIG
    for name in ("beat", "worker"):  # a message, not a crash
        assert "Traceback" not in procs.log_text(name), procs.tail(name)
    assert "Application startup failed" in procs.log_text("web")
    assert tables(pg_schema) == []  # nothing was created, not even the version table
    assert migration_lines(procs) == []

    # The command the message names, then the same processes start.
    upgraded = subprocess.run([PYTHON, "-m", "kern_tasks", "db", "upgrade"], env={**procs.env, **env},
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert versions(pg_schema) == [head_revision()]
    again = web(procs, "web-again", port, env)
    wait_for(lambda: accepting(again, port, procs, "web-again"), START_TIMEOUT_S, what="uvicorn to serve")
    assert httpx.get(f"http://{LOOPBACK}:{port}/schedules", timeout=30).status_code == 200


def test_an_app_served_without_its_lifespan_answers_503_for_unmigrated_tables_never_500(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'kern.db'}", auto_upgrade=False)
    agent_os = AgentOS(agents=[Agent(model="offline", id="echo")], db=db, settings=EMPTY_SETTINGS)
    with ServerThread(agent_os.get_app(), lifespan="off") as server:  # what a bare ASGI host may do
        reply = httpx.get(server.url + "/schedules", timeout=30)
    assert reply.status_code == 503 and UPGRADE_HINT in reply.json()["detail"]
    assert "sqlite" not in reply.text  # the log names the database, the answer does not
    app = AgentOS(db=db, settings=EMPTY_SETTINGS).get_app()

    async def start_up() -> None:  # what uvicorn does first (it exits 3 on the error: see above)
        async with app.router.lifespan_context(app):
            raise AssertionError("started")

    with pytest.raises(NotMigrated, match=UPGRADE_HINT):
        asyncio.run(start_up())
    assert not inspect(db.engine).get_table_names()
    db.dispose()


# --- explicit beats implicit ---------------------------------------------------------------------


def test_a_database_given_a_url_reads_nothing_from_the_environment(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import json
        from kern_tasks.db import Database
        from kern_tasks.settings import Settings
        url = {POSTGRES_URL!r}
        cases = {{
            "url": Database(url),
            "url+schema": Database(url, schema="given"),
            "no url": Database(),
            "url+env settings": Database(url, settings=Settings.from_env()),
            "url+env settings+args": Database(url, schema="given", auto_upgrade=True, settings=Settings.from_env()),
        }}
        print(json.dumps({{k: [str(d.url), d.schema, d.auto_upgrade] for k, d in cases.items()}}))
    """)
    env = {**clean_environ(), "KERN_DATABASE_URL": "postgresql://envuser@127.0.0.1:1/from_env",
           "KERN_DB_SCHEMA": "from_env", "KERN_AUTO_UPGRADE": "0"}  # fmt: skip
    done = subprocess.run([PYTHON, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    given = str(Database(POSTGRES_URL).url)
    assert found["url"] == [given, None, True]
    assert found["url+schema"] == [given, "given", True]
    assert found["no url"] == ["postgresql+psycopg://envuser@127.0.0.1:1/from_env", "from_env", False]
    assert found["url+env settings"] == [given, "from_env", False]  # settings handed over explicitly
    assert found["url+env settings+args"] == [given, "given", True]  # and arguments still win


def test_auto_upgrade_setting_reads_kern_auto_upgrade() -> None:
    assert Settings.from_env({}).auto_upgrade is True
    for off in ("0", "false", "No", "off"):
        assert Settings.from_env({"KERN_AUTO_UPGRADE": off}).auto_upgrade is False
    assert Settings.from_env({"KERN_AUTO_UPGRADE": "1"}).auto_upgrade is True
    with pytest.raises(ValidationError, match="KERN_AUTO_UPGRADE"):
        Settings.from_env({"KERN_AUTO_UPGRADE": "maybe"})


def test_a_celery_app_has_one_settings_binding_its_runtime() -> None:
    settings = Settings(base_url="http://127.0.0.1:9", broker_url="redis://127.0.0.1:1/0")
    app = create_app(settings)
    assert runtime_for(app).settings is settings
    assert app.conf.get("kern_settings") is None  # the old second binding is gone
