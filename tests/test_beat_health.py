"""Beat's heartbeat (kern_tasks.beat_health) and the probes that read it.

- the store on Postgres and SQLite: one write a second at most, read on the database's
  clock, long-dead replicas forgotten, a clean stop removes its row;
- real processes: `kern-tasks health beat` exits 0 while a real beat ticks and turns
  non-zero (with the reason) once the only beat is SIGKILLed; a SIGTERMed beat removes
  its row; `kern-tasks health worker` answers 0 while a real worker answers a ping over
  Redis and 1 when none does; a database on a closed port is unhealthy, said why;
- web's GET /health on uvicorn: agno's fields plus the database, the broker and beat's
  heartbeat age; 503 on a database at a closed port, 200 with the broker named when only
  the broker is down.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from sqlalchemy import insert, select, update

from kern_tasks import beat_health
from kern_tasks.db import Database
from kern_tasks.db.tables import beats
from kern_tasks.os import AgentOS
from kern_tasks.settings import Settings
from tests.conftest import POSTGRES_URL
from tests.fire_stack import FireStack, fire_stack
from tests.processes import PYTHON, ROOT, ServerThread, free_port, wait_for

REDIS_DB = 3  # shared by number with another module: modules of one process run one after another


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_record_writes_at_most_once_a_second_and_read_ages_on_the_database_clock(db: Database) -> None:
    clock = FakeClock()
    heart = beat_health.Heartbeat(clock)
    with db.begin() as conn:
        assert heart.record(conn) is True
        assert heart.record(conn) is False  # within the second: no statement
    clock.t += 1.0
    with db.begin() as conn:
        conn.execute(update(beats).values(tick_at=beats.c.tick_at - 50))  # as if it ticked 50 s ago
        assert heart.record(conn) is True  # a second later: written again, tick_at is now
    health = beat_health.read_database(db)
    assert [r.id for r in health.replicas] == [heart.id]
    assert health.newest_age_s is not None and health.newest_age_s <= 2
    assert health.alive(5) and health.reason(5) is None
    with db.begin() as conn:
        conn.execute(update(beats).values(tick_at=beats.c.tick_at - 40))
    stale = beat_health.read_database(db)
    assert not stale.alive(5)
    assert "no beat replica ticked within 5 s" in (stale.reason(5) or "") and heart.id in (stale.reason(5) or "")


def test_no_row_is_not_alive_and_dead_replicas_are_forgotten(db: Database) -> None:
    empty = beat_health.read_database(db)
    assert empty.newest_age_s is None and not empty.alive()
    assert empty.reason() == "no beat replica has recorded a heartbeat"
    heart = beat_health.Heartbeat()
    with db.begin() as conn:
        heart.record(conn)
        now = int(conn.execute(select(beats.c.tick_at)).scalar_one())
        conn.execute(insert(beats).values(id="gone:1:x", hostname="gone", pid=1, started_at=0,
                                          tick_at=now - beat_health.FORGET_AFTER_S - 1))
        assert beat_health.forget_dead_beats(conn, now=now) == 1
    assert [r.id for r in beat_health.read_database(db).replicas] == [heart.id]
    with db.begin() as conn:
        heart.remove(conn)
    assert beat_health.read_database(db).replicas == ()


# --- real processes --------------------------------------------------------------------------


def kern_tasks(stack: FireStack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "kern_tasks", *args], env={**stack.procs.env, **(env or {})}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FireStack]:
    with fire_stack(tmp_path_factory.mktemp("beat_health"), REDIS_DB) as made:
        yield made


def test_health_beat_turns_non_zero_after_the_only_beat_is_sigkilled(stack: FireStack) -> None:
    before = kern_tasks(stack, "health", "beat", "--max-age", "3")
    assert before.returncode == 1 and "no beat replica has recorded a heartbeat" in before.stderr
    beat = stack.procs.beat("beat", max_interval=1)
    wait_for(lambda: kern_tasks(stack, "health", "beat", "--max-age", "3").returncode == 0, 60, 0.5,
             "health beat 0 while beat runs")
    alive = kern_tasks(stack, "health", "beat", "--max-age", "3", "--json")
    assert alive.returncode == 0, alive.stderr
    report = json.loads(alive.stdout)
    assert report["healthy"] and report["replicas"][0]["pid"] == beat.pid and report["newest_age_s"] <= 3
    stack.procs.kill(beat, signal.SIGKILL)
    dead = wait_for(lambda: (r := kern_tasks(stack, "health", "beat", "--max-age", "3")).returncode != 0 and r,
                    30, 0.5, "health beat non-zero after SIGKILL")
    assert dead.returncode == 1
    assert "unhealthy: no beat replica ticked within 3 s" in dead.stderr
    # SIGKILL leaves the row (nothing said goodbye); its age is what tells.
    assert [r.pid for r in beat_health.read_database(stack.db).replicas] == [beat.pid]


def test_a_beat_stopped_cleanly_removes_its_row(stack: FireStack) -> None:
    beat = stack.procs.beat("beat-term", max_interval=1)
    wait_for(lambda: beat.pid in [r.pid for r in beat_health.read_database(stack.db).replicas], 60, 0.3,
             "the beat's row")
    stack.procs.stop(beat)
    assert beat.returncode is not None
    assert beat.pid not in [r.pid for r in beat_health.read_database(stack.db).replicas]


def test_health_worker_pings_over_the_broker(stack: FireStack) -> None:
    none = kern_tasks(stack, "health", "worker", "--timeout", "1")
    assert none.returncode == 1 and "no worker answered a ping within 1 s" in none.stderr
    # A worker with its remote control on (the test helper's workers turn gossip and
    # mingle off, not control): the Procfile's worker answers the same way.
    stack.procs.worker("pinged", concurrency=2)
    stack.procs.wait_for_log("pinged", " ready.")
    answered = wait_for(lambda: (r := kern_tasks(stack, "health", "worker", "--json")).returncode == 0 and r, 30, 0.5,
                        "a worker answering the ping")
    assert any(name.startswith("pinged@") for name in json.loads(answered.stdout)["workers"])
    other = kern_tasks(stack, "health", "worker", "--timeout", "1", "--destination", "nobody@nowhere")
    assert other.returncode == 1 and "worker nobody@nowhere answered" in other.stderr


def test_health_beat_on_a_closed_port_says_the_database_is_unreachable(stack: FireStack, tmp_path: Path) -> None:
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    result = kern_tasks(stack, "health", "beat", env={"KERN_DATABASE_URL": closed})
    assert result.returncode == 1 and "unhealthy: database unreachable (OperationalError" in result.stderr


def test_bad_max_age_is_bad_input(stack: FireStack) -> None:
    result = kern_tasks(stack, "health", "beat", "--max-age", "0")
    assert result.returncode == 2 and "max_age" in result.stderr


# --- GET /health on a real uvicorn ---------------------------------------------------------------


def health_of(db: Database, settings: Settings) -> httpx.Response:
    agent_os = AgentOS(db=db, settings=settings)
    with ServerThread(agent_os.get_app(), lifespan="on", name="web") as web:
        return httpx.get(f"{web.url}/health", timeout=30)


def test_health_reports_database_broker_and_beat_age(stack: FireStack) -> None:
    settings = Settings(broker_url=stack.procs.env["KERN_BROKER_URL"], database_url=POSTGRES_URL,
                        db_schema=stack.schema)
    beat = stack.procs.beat("beat-web", max_interval=1)
    wait_for(lambda: beat_health.read_database(stack.db).alive(3), 60, 0.3, "a fresh heartbeat")
    reply = health_of(stack.db, settings)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "ok" and body["instantiated_at"]  # agno's fields
    assert body["database"] == {"status": "ok", "error": None}
    assert body["broker"] == {"status": "ok", "error": None}
    assert body["beat"]["status"] == "ok" and 0 <= body["beat"]["heartbeat_age_s"] <= 3
    assert body["beat"]["replicas"] >= 1
    stack.procs.stop(beat)


def test_health_is_503_when_the_database_is_down_and_names_a_dead_broker(stack: FireStack) -> None:
    closed_db = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    settings = Settings(broker_url=f"redis://127.0.0.1:{free_port()}/0", database_url=closed_db)
    dead = Database(closed_db, settings=settings)
    reply = health_of(dead, settings)
    assert reply.status_code == 503, reply.text
    body = reply.json()
    assert body["status"] == "unavailable" and body["instantiated_at"]
    assert body["database"] == {"status": "down", "error": "OperationalError"}
    assert body["broker"]["status"] == "down" and body["broker"]["error"]
    assert body["beat"]["status"] == "unknown"
    dead.dispose()


def test_health_with_only_the_broker_down_is_200_with_the_broker_named(stack: FireStack) -> None:
    settings = Settings(broker_url=f"redis://127.0.0.1:{free_port()}/0", database_url=POSTGRES_URL,
                        db_schema=stack.schema)
    reply = health_of(stack.db, settings)
    assert reply.status_code == 200 and reply.json()["status"] == "ok"
    assert reply.json()["broker"]["status"] == "down"
