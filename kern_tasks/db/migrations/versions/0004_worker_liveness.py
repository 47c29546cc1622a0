"""Worker liveness: kern_workers (one heartbeat row per worker process), and on each attempt
the worker that took it and whether it ended because that worker was lost.

kern_workers is ours alone (agno never reads it); the two columns on agno_schedule_runs
are nullable or defaulted, so agno's inserts still work.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from kern_tasks.db.migrations.support import column_names, has_table, index_names
from kern_tasks.db.migrations.support import schema as _schema

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

RUN_COLUMNS = [
    sa.Column("worker_id", sa.String),
    sa.Column("lost", sa.Boolean, nullable=False, server_default=sa.false()),
]


def upgrade() -> None:
    schema = _schema()
    if not has_table("kern_workers"):
        op.create_table(
            "kern_workers",
            sa.Column("id", sa.String, primary_key=True),
            sa.Column("hostname", sa.String, nullable=False),
            sa.Column("pid", sa.BigInteger, nullable=False),
            sa.Column("started_at", sa.BigInteger, nullable=False),
            sa.Column("heartbeat_at", sa.BigInteger, nullable=False),
            schema=schema,
        )
    # Beat forgets long-dead workers through this index, without reading the table.
    if "ix_kern_workers_heartbeat_at" not in index_names("kern_workers"):
        op.create_index("ix_kern_workers_heartbeat_at", "kern_workers", ["heartbeat_at"], schema=schema)
    present = column_names("agno_schedule_runs")
    for column in RUN_COLUMNS:
        if column.name not in present:
            op.add_column("agno_schedule_runs", column, schema=schema)


def downgrade() -> None:
    schema = _schema()
    for column in RUN_COLUMNS:
        op.drop_column("agno_schedule_runs", column.name, schema=schema)
    op.drop_table("kern_workers", schema=schema)
