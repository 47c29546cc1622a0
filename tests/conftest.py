"""Shared fixtures: every store test runs on both real Postgres and SQLite.

Postgres tests each get a schema of their own in the `test` database (dropped after),
so tests never see each other's rows. The URLs can be pointed elsewhere with
KERN_TEST_POSTGRES_URL / KERN_TEST_REDIS_URL. Each test process starts a Redis of its own
(`redis_url`) unless KERN_TEST_REDIS_URL names one.
"""

from __future__ import annotations

import atexit
import functools
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from sqlalchemy import create_engine, text

from kern_tasks.db import Database
from kern_tasks.settings import Settings
from tests.processes import Processes, free_port, kern_env
from tests.rabbitmq import rabbit_vhost
from tests.services import PrivateRedis, ServiceUnavailable

POSTGRES_URL = os.environ.get("KERN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"

# Tests never read the developer's KERN_* environment.
EMPTY_SETTINGS = Settings()


@functools.cache
def redis_url() -> str:
    """The Redis the tests of this process use: KERN_TEST_REDIS_URL, else a redis-server of
    this process's own (started on first use, killed at exit), so test processes running
    side by side (pytest-xdist workers, two checkouts) never consume each other's Celery
    messages; the machine's Redis only when there is no redis-server binary."""
    if os.environ.get("KERN_TEST_REDIS_URL"):
        return os.environ["KERN_TEST_REDIS_URL"]
    try:
        private = PrivateRedis().start()
    except ServiceUnavailable:
        return SHARED_REDIS_URL
    atexit.register(private.stop)
    return private.url


def broker_url_for(redis_db: int) -> str:
    """A Redis database of its own per test module (modules of one process run one after
    another; other processes have their own Redis: `redis_url`)."""
    return redis_url().rsplit("/", 1)[0] + f"/{redis_db}"


def flush_broker(redis_db: int) -> None:
    redis.Redis.from_url(broker_url_for(redis_db)).flushdb()


def one_shot_cron(slot: int) -> str:
    """A 6-field cron that fires at `slot` (epoch seconds, UTC) and not again for a year."""
    at = datetime.fromtimestamp(slot, UTC)
    return f"{at.second} {at.minute} {at.hour} {at.day} {at.month} *"


def fresh_schema_name() -> str:
    return f"kt_{uuid.uuid4().hex[:12]}"


def drop_schema(schema: str) -> None:
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """An unused Postgres schema name, dropped after the test."""
    schema = fresh_schema_name()
    yield schema
    drop_schema(schema)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'kern.db'}"


@pytest.fixture(params=["postgres", "sqlite"])
def db_url_schema(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(url, schema) of an empty, not yet migrated database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'kern.db'}", None
    else:
        schema = fresh_schema_name()
        yield POSTGRES_URL, schema
        drop_schema(schema)


@pytest.fixture
def db(db_url_schema: tuple[str, str | None]) -> Iterator[Database]:
    """A migrated database, on Postgres and on SQLite."""
    url, schema = db_url_schema
    database = Database(url, schema=schema, settings=EMPTY_SETTINGS)
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def agno_on_ours(db: Database, db_url_schema: tuple[str, str | None]) -> Iterator[Any]:
    """agno's own adapter (PostgresDb or SqliteDb) on the database our fixture migrated."""
    from agno.db.postgres import PostgresDb
    from agno.db.sqlite import SqliteDb

    url, schema = db_url_schema
    adapter: Any = SqliteDb(db_url=url) if schema is None else PostgresDb(db_url=url, db_schema=schema)
    yield adapter
    adapter.db_engine.dispose()


@pytest.fixture
def pg_db(pg_schema: str) -> Iterator[Database]:
    """A migrated Postgres schema of this test's own."""
    database = Database(POSTGRES_URL, schema=pg_schema, settings=EMPTY_SETTINGS)
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Iterator[str]:
    """The broker URL of a test's processes: the Redis database its module names in
    REDIS_DB (flushed), or, for a test parametrized `broker="rabbitmq"` (indirect), a
    RabbitMQ vhost of its own (tests/rabbitmq.py), deleted after the test."""
    kind = getattr(request, "param", "redis")
    if kind == "rabbitmq":
        with rabbit_vhost() as url:
            yield url
        return
    assert kind == "redis", f"unknown broker {kind!r}"
    flush_broker(request.module.REDIS_DB)
    yield broker_url_for(request.module.REDIS_DB)


BROKERS = pytest.mark.parametrize("broker", ["redis", "rabbitmq"], indirect=True)  # a test on both brokers


def unreachable(url: str) -> str:
    """`url` with a loopback port nothing listens on (a broker that is not there)."""
    parts = urlsplit(url)
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{free_port()}"))


@pytest.fixture
def cluster_for(
    request: pytest.FixtureRequest, tmp_path: Path, pg_schema: str, broker: str
) -> Iterator[Callable[[str], Processes]]:
    """Makes the test's Processes (kern settings on `pg_schema` and `broker`: the Redis
    database the test module names in REDIS_DB, or a RabbitMQ vhost) once its target's URL
    is known; stops them after the test and, when the test failed, prints the processes'
    logs."""
    failed_before = request.session.testsfailed
    made: list[Processes] = []

    def make(base_url: str) -> Processes:
        settings = kern_env(
            database_url=POSTGRES_URL, schema=pg_schema, base_url=base_url, data_dir=tmp_path / "kern",
            broker_url=broker,
        )  # fmt: skip
        made.append(Processes(tmp_path / "logs", env=settings))
        return made[-1]

    yield make
    for cluster in made:
        cluster.stop_all()
        if request.session.testsfailed > failed_before:
            print(cluster.dump_logs(tail=150))
