"""agno's scheduler tables, exactly as agno 3.1 creates them on Postgres.

Skipped table by table when agno (or an earlier kern_tasks) created them already.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from kern_tasks.db.migrations.support import JSONType, has_table
from kern_tasks.db.migrations.support import schema as _schema

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

def upgrade() -> None:
    schema = _schema()
    if not has_table("agno_schedules"):
        op.create_table(
            "agno_schedules",
            sa.Column("id", sa.String, primary_key=True),
            sa.Column("name", sa.String, nullable=False),
            sa.Column("description", sa.Text),
            sa.Column("method", sa.String, nullable=False),
            sa.Column("endpoint", sa.String, nullable=False),
            sa.Column("payload", JSONType),
            sa.Column("cron_expr", sa.String, nullable=False),
            sa.Column("timezone", sa.String, nullable=False),
            sa.Column("timeout_seconds", sa.BigInteger, nullable=False),
            sa.Column("max_retries", sa.BigInteger, nullable=False),
            sa.Column("retry_delay_seconds", sa.BigInteger, nullable=False),
            sa.Column("enabled", sa.Boolean, nullable=False),
            sa.Column("next_run_at", sa.BigInteger),
            sa.Column("locked_by", sa.String),
            sa.Column("locked_at", sa.BigInteger),
            sa.Column("user_id", sa.String),
            sa.Column("managed_by", sa.String),
            sa.Column("target_type", sa.String),
            sa.Column("target_id", sa.String),
            sa.Column("created_by_run_id", sa.String),
            sa.Column("created_by_session_id", sa.String),
            sa.Column("updated_by_run_id", sa.String),
            sa.Column("updated_by_session_id", sa.String),
            sa.Column("disabled_reason", sa.String),
            sa.Column("created_at", sa.BigInteger, nullable=False),
            sa.Column("updated_at", sa.BigInteger),
            schema=schema,
        )
        for name, columns in {
            "idx_agno_schedules_created_at": ["created_at"],
            "idx_agno_schedules_enabled_next_run_at": ["enabled", "next_run_at"],
            "idx_agno_schedules_managed_by": ["managed_by"],
            "idx_agno_schedules_name": ["name"],
            "idx_agno_schedules_next_run_at": ["next_run_at"],
            "idx_agno_schedules_target_id": ["target_id"],
            "idx_agno_schedules_user_id": ["user_id"],
            "idx_agno_schedules_user_id_enabled_next_run_at": ["user_id", "enabled", "next_run_at"],
        }.items():
            op.create_index(name, "agno_schedules", columns, schema=schema)
        for name, columns, where in (
            ("agno_schedules_uq_user_name", ["user_id", "name"], "user_id IS NOT NULL"),
            ("agno_schedules_uq_unowned_name", ["name"], "user_id IS NULL"),
        ):
            op.create_index(
                name,
                "agno_schedules",
                columns,
                unique=True,
                schema=schema,
                postgresql_where=sa.text(where),
                sqlite_where=sa.text(where),
            )

    if not has_table("agno_schedule_runs"):
        op.create_table(
            "agno_schedule_runs",
            sa.Column("id", sa.String, primary_key=True),
            sa.Column(
                "schedule_id",
                sa.String,
                sa.ForeignKey(
                    f"{schema}.agno_schedules.id" if schema else "agno_schedules.id",
                    ondelete="CASCADE",
                ),
                nullable=False,
            ),
            sa.Column("attempt", sa.BigInteger, nullable=False),
            sa.Column("triggered_at", sa.BigInteger),
            sa.Column("completed_at", sa.BigInteger),
            sa.Column("status", sa.String, nullable=False),
            sa.Column("status_code", sa.BigInteger),
            sa.Column("run_id", sa.String),
            sa.Column("session_id", sa.String),
            sa.Column("error", sa.Text),
            sa.Column("input", JSONType),
            sa.Column("output", JSONType),
            sa.Column("requirements", JSONType),
            sa.Column("user_id", sa.String),
            sa.Column("created_at", sa.BigInteger, nullable=False),
            schema=schema,
        )
        for column in ("created_at", "schedule_id", "status", "user_id"):
            op.create_index(f"idx_agno_schedule_runs_{column}", "agno_schedule_runs", [column], schema=schema)


def downgrade() -> None:
    # The tables may be agno's own: never drop them.
    pass
