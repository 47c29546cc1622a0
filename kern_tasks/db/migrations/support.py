"""What every revision asks about the database it migrates.

Revisions create or add only what is missing, because agno (or an earlier kern_tasks)
may have made some of it already.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

# JSONB on Postgres (agno's type), JSON text elsewhere.
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def schema() -> str | None:
    """The schema being migrated (KERN_DB_SCHEMA; None on SQLite)."""
    return context.config.attributes.get("schema")


def has_table(name: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(name, schema=schema())


def index_names(table: str) -> set[str]:
    return {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes(table, schema=schema())}


def column_names(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table, schema=schema())}
