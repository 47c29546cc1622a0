"""Workflow runs on Celery workers: a run's progress (kern_workflow_runs) and one row per step
attempt or recorded decision (kern_workflow_steps), so the database, not the broker or the
result backend, says where a run is (kern_tasks.workflow.progress writes them).

Both tables are ours alone (agno never reads them; the run as agno keeps it stays in agno_runs).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from kern_tasks.db.migrations.support import JSONType, has_table, index_names
from kern_tasks.db.migrations.support import schema as _schema

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _ref(table_column: str) -> str:
    schema = _schema()
    return f"{schema}.{table_column}" if schema else table_column


def upgrade() -> None:
    schema = _schema()
    if not has_table("kern_workflow_runs"):
        op.create_table(
            "kern_workflow_runs",
            sa.Column("run_id", sa.String, primary_key=True),
            sa.Column("workflow_id", sa.String, nullable=False),
            sa.Column("session_id", sa.String, nullable=False),
            sa.Column("user_id", sa.String),
            sa.Column("status", sa.String, nullable=False),
            sa.Column("request", JSONType, nullable=False),
            sa.Column("session_state", JSONType),
            sa.Column("result", JSONType),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
            schema=schema,
        )
    # The sweep reads running runs only (those whose next step may never have been published).
    if "ix_kern_workflow_runs_open" not in index_names("kern_workflow_runs"):
        op.create_index(
            "ix_kern_workflow_runs_open", "kern_workflow_runs", ["updated_at"], schema=schema,
            postgresql_where=sa.text("status = 'RUNNING'"), sqlite_where=sa.text("status = 'RUNNING'"),
        )
    if not has_table("kern_workflow_steps"):
        op.create_table(
            "kern_workflow_steps",
            sa.Column("id", sa.String, primary_key=True),
            sa.Column(
                "run_id", sa.String, sa.ForeignKey(_ref("kern_workflow_runs.run_id"), ondelete="CASCADE"),
                nullable=False,
            ),
            sa.Column("path", sa.String, nullable=False),
            sa.Column("attempt", sa.BigInteger, nullable=False),
            sa.Column("status", sa.String, nullable=False),
            sa.Column("final", sa.Boolean, nullable=False, server_default=sa.false()),
            sa.Column("worker_id", sa.String),
            sa.Column("output", JSONType),
            sa.Column("error", sa.Text),
            sa.Column("executor_runs", JSONType),
            sa.Column("enqueued_at", sa.Float),
            sa.Column("started_at", sa.Float),
            sa.Column("ended_at", sa.Float),
            schema=schema,
        )
    present = index_names("kern_workflow_steps")
    # One row per attempt of a step (and one per decision, attempt 0), whoever writes it.
    if "uq_kern_workflow_steps_attempt" not in present:
        op.create_index("uq_kern_workflow_steps_attempt", "kern_workflow_steps", ["run_id", "path", "attempt"],
                        unique=True, schema=schema)
    # The sweep reads open attempts (queued, running) without scanning finished history.
    if "ix_kern_workflow_steps_open" not in present:
        op.create_index(
            "ix_kern_workflow_steps_open", "kern_workflow_steps", ["status", "enqueued_at"], schema=schema,
            postgresql_where=sa.text("status IN ('queued', 'running')"),
            sqlite_where=sa.text("status IN ('queued', 'running')"),
        )


def downgrade() -> None:
    schema = _schema()
    op.drop_table("kern_workflow_steps", schema=schema)
    op.drop_table("kern_workflow_runs", schema=schema)
