"""Media between workflow steps on workers (kern_tasks.workflow.media): content larger than
its inline bound lives in kern_workflow_media, one row per stored content of a run (deleted
with the run), and a step's output holds a reference to it.

Ours alone (agno never reads it; agno's record of a run holds the content inline).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from kern_tasks.db.migrations.support import has_table, index_names
from kern_tasks.db.migrations.support import schema as _schema

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _ref(table_column: str) -> str:
    schema = _schema()
    return f"{schema}.{table_column}" if schema else table_column


def upgrade() -> None:
    schema = _schema()
    if not has_table("kern_workflow_media"):
        op.create_table(
            "kern_workflow_media",
            sa.Column("id", sa.String, primary_key=True),
            sa.Column(
                "run_id", sa.String, sa.ForeignKey(_ref("kern_workflow_runs.run_id"), ondelete="CASCADE"),
                nullable=False,
            ),
            sa.Column("mime", sa.String),
            sa.Column("bytes", sa.LargeBinary, nullable=False),
            sa.Column("size", sa.BigInteger, nullable=False),
            sa.Column("sha256", sa.String, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            schema=schema,
        )
    # A run's media by content (the same bytes again reuse a row), and the cascade's lookup.
    if "ix_kern_workflow_media_run" not in index_names("kern_workflow_media"):
        op.create_index("ix_kern_workflow_media_run", "kern_workflow_media", ["run_id", "sha256"], schema=schema)


def downgrade() -> None:
    op.drop_table("kern_workflow_media", schema=_schema())
