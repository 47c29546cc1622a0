"""Run the Alembic migrations in `kern_tasks/db/migrations` against an engine, and tell
whether a database is at their head.

The version table is `kern_alembic_version` (in the tables' schema), so an
application that keeps its own Alembic history in the same database is not disturbed.

Every process that starts on a database (web, beat, worker, a ScheduleManager) asks
`revision_gap` once: one query when the database is already at head. Only when it is
behind does it call `migrate`, which takes a Postgres advisory lock first, so of several
replicas starting together on an empty database exactly one runs the migrations and the
others find them done (on SQLite, `BEGIN IMMEDIATE` serialises them the same way).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Column, Connection, Engine, MetaData, String, Table, inspect, select, text
from sqlalchemy.exc import DBAPIError

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "kern_alembic_version"

# The version table as a Table, so the engine's schema_translate_map places it.
_versions = Table(VERSION_TABLE, MetaData(), Column("version_num", String(32), primary_key=True))


def alembic_config(engine: Engine | None, schema: str | None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    config.attributes["schema"] = schema
    return config


@functools.cache
def head_revision() -> str:
    """The newest revision this kern_tasks ships (read from the scripts once per process)."""
    head = ScriptDirectory.from_config(alembic_config(None, None)).get_current_head()
    assert head is not None, "kern_tasks ships no migrations"
    return head


@functools.cache
def is_known_revision(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config(None, None)).get_revision(revision) is not None
    except CommandError:
        return False


def current_revision(connection: Connection, schema: str | None) -> str | None:
    """The revision the database is at; None when it has no kern_tasks version table.

    One query when the table exists; only when that query fails do we look whether the
    table is there at all (a missing table is "no revision", anything else is raised).
    Leaves `connection` outside any transaction."""
    try:
        revision = connection.execute(select(_versions.c.version_num)).scalar()
    except DBAPIError:
        connection.rollback()  # Postgres refuses anything more in a failed transaction
        exists = inspect(connection).has_table(VERSION_TABLE, schema=schema)
        connection.rollback()
        if exists:
            raise
        return None
    connection.rollback()
    return revision


@dataclass(frozen=True)
class RevisionGap:
    """Where a database stands against this kern_tasks' migrations."""

    current: str | None  # None: no kern_tasks tables at all
    head: str

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    @property
    def ahead(self) -> bool:
        """At a revision this kern_tasks does not know: a newer release migrated it (a
        rolling deploy). Revisions only add, so older code carries on."""
        return self.current is not None and not self.at_head and not is_known_revision(self.current)

    @property
    def behind(self) -> bool:
        return not self.at_head and not self.ahead


def revision_gap(engine: Engine, schema: str | None) -> RevisionGap:
    """Where the database stands: one query when it has our tables."""
    with engine.connect() as connection:
        current = current_revision(connection, schema)
    return RevisionGap(current=current, head=head_revision())


def migrate(engine: Engine, schema: str | None, revision: str = "head") -> list[str]:
    """Upgrade to `revision`; returns the revisions this call applied (empty when another
    process had done it). Concurrent callers on Postgres are serialised by an advisory lock."""
    applied: list[str] = []
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # One migrator at a time: several replicas may start together. The lock is
            # held to this transaction's end, so the next one in sees the version committed.
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('kern_tasks.migrate'))"))
            if schema:
                connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        config = alembic_config(engine, schema)
        config.attributes["connection"] = connection
        config.attributes["applied"] = applied
        command.upgrade(config, revision)
    return applied
