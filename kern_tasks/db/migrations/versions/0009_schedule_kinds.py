"""Schedule kinds beside cron: interval_seconds, run_at, the start_at/end_at window,
max_runs and expires_after_seconds on agno_schedules (kern_tasks.scheduler.kinds).

All nullable, so agno's inserts still work; agno's rows (cron only) keep their meaning.
A partial index finds the few schedules with no slot left that the sweep finishes.

Revision ID: 0009
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from kern_tasks.db.migrations.support import column_names, index_names
from kern_tasks.db.migrations.support import schema as _schema

revision = "0009"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = ("interval_seconds", "run_at", "start_at", "end_at", "max_runs", "expires_after_seconds")
FINISHING = "enabled AND next_run_at IS NULL AND (run_at IS NOT NULL OR end_at IS NOT NULL OR max_runs IS NOT NULL)"


def upgrade() -> None:
    schema = _schema()
    present = column_names("agno_schedules")
    for name in COLUMNS:
        if name not in present:
            op.add_column("agno_schedules", sa.Column(name, sa.BigInteger), schema=schema)
    if "ix_kern_schedules_finishing" not in index_names("agno_schedules"):
        op.create_index(
            "ix_kern_schedules_finishing", "agno_schedules", ["id"], schema=schema,
            postgresql_where=sa.text(FINISHING), sqlite_where=sa.text(FINISHING),
        )


def downgrade() -> None:
    schema = _schema()
    op.drop_index("ix_kern_schedules_finishing", "agno_schedules", schema=schema)
    for name in COLUMNS:
        op.drop_column("agno_schedules", name, schema=schema)
