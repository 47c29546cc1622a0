"""Shared fixtures: every store test runs on both real Postgres and SQLite.

Postgres tests each get a schema of their own in the `test` database (dropped after),
so tests never see each other's rows. The URLs can be pointed elsewhere with
KERN_TEST_POSTGRES_URL / KERN_TEST_REDIS_URL.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import create_engine, text

from kern_tasks.db import Database
from kern_tasks.settings import Settings

POSTGRES_URL = os.environ.get("KERN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("KERN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# Tests never read the developer's KERN_* environment.
EMPTY_SETTINGS = Settings()


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
