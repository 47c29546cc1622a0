"""Run the Alembic migrations in `kern_tasks/db/migrations` against an engine.

The version table is `kern_alembic_version` (in the tables' schema), so an
application that keeps its own Alembic history in the same database is not disturbed.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "kern_alembic_version"


def alembic_config(engine: Engine, schema: str | None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    config.attributes["schema"] = schema
    return config


def migrate(engine: Engine, schema: str | None, revision: str = "head") -> None:
    """Upgrade to `revision`. Concurrent callers on Postgres are serialised by an advisory lock."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # One migrator at a time: several replicas may start together.
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('kern_tasks.migrate'))"))
            if schema:
                connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        config = alembic_config(engine, schema)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
