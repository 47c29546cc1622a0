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

import re
from typing import TYPE_CHECKING

from sqlalchemy import Column, Connection, Engine, MetaData, String, Table, inspect, select, text
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "kern_alembic_version"

# The version table as a Table, so the engine's schema_translate_map places it.
_versions = Table(VERSION_TABLE, MetaData(), Column("version_num", String(32), primary_key=True))


def alembic_config(engine: Engine | None, schema: str | None) -> "Config":
    from alembic.config import Config  # alembic is imported only to migrate (beat checks, never migrates, at head)

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    config.attributes["schema"] = schema
    return config


# `revision = "0011"` / `down_revision = "0010"` (or None) in each script of versions/.
_REVISION_LINE = re.compile(r'^(down_revision|revision)\s*(?::[^=]*)?=\s*(?:"([^"]*)"|\'([^\']*)\'|None)', re.M)


@functools.cache
def shipped_revisions() -> dict[str, str | None]:
    """Every revision this kern_tasks ships and the one before it, read from the scripts'
    own lines once per process, without alembic: a process at head (every beat and worker
    start) learns so without importing alembic (~10 MiB). tests/test_migrations.py checks
    this agrees with alembic's own reading."""
    chain: dict[str, str | None] = {}
    for script in sorted((MIGRATIONS / "versions").glob("*.py")):
        found = {m.group(1): m.group(2) or m.group(3) for m in _REVISION_LINE.finditer(script.read_text())}
        if "revision" in found:
            chain[str(found["revision"])] = found.get("down_revision")
    return chain


@functools.cache
def head_revision() -> str:
    """The newest revision this kern_tasks ships: the one no other revision follows."""
    chain = shipped_revisions()
    heads = set(chain) - {down for down in chain.values() if down is not None}
    assert len(heads) == 1, f"kern_tasks ships {len(heads)} migration heads: {sorted(heads)}"
    return heads.pop()


def is_known_revision(revision: str) -> bool:
    return revision in shipped_revisions()


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
        from alembic import command

        config = alembic_config(engine, schema)
        config.attributes["connection"] = connection
        config.attributes["applied"] = applied
        command.upgrade(config, revision)
    return applied
