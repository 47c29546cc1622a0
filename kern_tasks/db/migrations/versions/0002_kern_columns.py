"""kern_tasks' own columns and indexes on agno's tables.

All nullable or defaulted, so agno's inserts still work on the same tables.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from kern_tasks.db.migrations.support import column_names, index_names
from kern_tasks.db.migrations.support import schema as _schema

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEDULE_COLUMNS = [
    sa.Column("misfire_policy", sa.String, nullable=False, server_default="once"),
    sa.Column("catchup_window_seconds", sa.BigInteger, nullable=False, server_default="3600"),
    sa.Column("overlap_policy", sa.String, nullable=False, server_default="forbid"),
    sa.Column("jitter_seconds", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("skipped_slots", sa.BigInteger, nullable=False, server_default="0"),
]
RUN_COLUMNS = [
    sa.Column("scheduled_for", sa.BigInteger),
    sa.Column("manual", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("not_before", sa.BigInteger),
    sa.Column("enqueued_at", sa.BigInteger),
    sa.Column("lease_token", sa.String),
]


def _add_missing_columns(table: str, columns: list[sa.Column]) -> None:
    present = column_names(table)
    for column in columns:
        if column.name not in present:
            op.add_column(table, column, schema=_schema())


def _has_index(table: str, name: str) -> bool:
    return name in index_names(table)


def upgrade() -> None:
    schema = _schema()
    _add_missing_columns("agno_schedules", SCHEDULE_COLUMNS)
    _add_missing_columns("agno_schedule_runs", RUN_COLUMNS)

    # agno creates these too; a hand-made table may lack them.
    if not _has_index("agno_schedules", "idx_agno_schedules_enabled_next_run_at"):
        op.create_index(
            "idx_agno_schedules_enabled_next_run_at", "agno_schedules", ["enabled", "next_run_at"], schema=schema
        )
    for name, columns, where in (
        ("agno_schedules_uq_user_name", ["user_id", "name"], "user_id IS NOT NULL"),
        ("agno_schedules_uq_unowned_name", ["name"], "user_id IS NULL"),
    ):
        if not _has_index("agno_schedules", name):
            op.create_index(
                name, "agno_schedules", columns, unique=True, schema=schema,
                postgresql_where=sa.text(where), sqlite_where=sa.text(where),
            )

    # Beat's wake-up query reads the earliest claimable slot from this index alone.
    if not _has_index("agno_schedules", "ix_kern_schedules_claimable"):
        where = "enabled AND locked_by IS NULL"
        op.create_index(
            "ix_kern_schedules_claimable", "agno_schedules", ["next_run_at"], schema=schema,
            postgresql_where=sa.text(where), sqlite_where=sa.text(where),
        )
    # The few leased rows (their runs are in flight), for the wake-up query too.
    if not _has_index("agno_schedules", "ix_kern_schedules_leased"):
        where = "enabled AND locked_by IS NOT NULL"
        op.create_index(
            "ix_kern_schedules_leased", "agno_schedules", ["next_run_at"], schema=schema,
            postgresql_where=sa.text(where), sqlite_where=sa.text(where),
        )
    # A slot is materialised at most once per attempt.
    if not _has_index("agno_schedule_runs", "uq_kern_schedule_runs_slot_attempt"):
        op.create_index(
            "uq_kern_schedule_runs_slot_attempt",
            "agno_schedule_runs",
            ["schedule_id", "scheduled_for", "manual", "attempt"],
            unique=True,
            schema=schema,
        )
    # The sweep reads open attempts without scanning finished history.
    if not _has_index("agno_schedule_runs", "ix_kern_schedule_runs_open"):
        where = "status IN ('queued', 'running')"
        op.create_index(
            "ix_kern_schedule_runs_open", "agno_schedule_runs", ["status", "not_before"], schema=schema,
            postgresql_where=sa.text(where), sqlite_where=sa.text(where),
        )


def downgrade() -> None:
    schema = _schema()
    op.drop_index("ix_kern_schedule_runs_open", "agno_schedule_runs", schema=schema)
    op.drop_index("ix_kern_schedules_claimable", "agno_schedules", schema=schema)
    op.drop_index("ix_kern_schedules_leased", "agno_schedules", schema=schema)
    op.drop_index("uq_kern_schedule_runs_slot_attempt", "agno_schedule_runs", schema=schema)
    for column in RUN_COLUMNS:
        op.drop_column("agno_schedule_runs", column.name, schema=schema)
    for column in SCHEDULE_COLUMNS:
        op.drop_column("agno_schedules", column.name, schema=schema)
