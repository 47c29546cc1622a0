"""Beat liveness: kern_beats, one heartbeat row per beat replica (kern_tasks.beat_health).

Ours alone (agno never reads it). Beat forgets long-dead replicas through the tick_at
index, without reading the table.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

from kern_tasks.db.migrations.support import has_table, index_names
from kern_tasks.db.migrations.support import schema as _schema

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = _schema()
    if not has_table("kern_beats"):
        op.create_table(
            "kern_beats",
            sa.Column("id", sa.String, primary_key=True),
            sa.Column("hostname", sa.String, nullable=False),
            sa.Column("pid", sa.BigInteger, nullable=False),
            sa.Column("started_at", sa.BigInteger, nullable=False),
            sa.Column("tick_at", sa.BigInteger, nullable=False),
            schema=schema,
        )
    if "ix_kern_beats_tick_at" not in index_names("kern_beats"):
        op.create_index("ix_kern_beats_tick_at", "kern_beats", ["tick_at"], schema=schema)


def downgrade() -> None:
    op.drop_table("kern_beats", schema=_schema())
