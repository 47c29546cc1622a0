"""The dashboard's reads: the schedules listing by next fire (enabled schedules by
next_run_at, the rest after them), alone or within one owner's rows, and by name, each
keyset-paged with the id; a schedule's attempts newest first (its last status, its
timeline). Indexes only.

Revision ID: 0014
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

from kern_tasks.db.migrations.support import schema as _schema

revision = "0014"
down_revision = "0011"
branch_labels = None
depends_on = None

NO_NEXT_FIRE = 2**63 - 1
NEXT_FIRE_SQL = f"(CASE WHEN enabled AND next_run_at IS NOT NULL THEN next_run_at ELSE {NO_NEXT_FIRE} END)"
INDEXES = (
    ("ix_kern_schedules_next_fire", "agno_schedules", [sa.text(NEXT_FIRE_SQL), "id"]),
    ("ix_kern_schedules_owner_next_fire", "agno_schedules", ["user_id", sa.text(NEXT_FIRE_SQL), "id"]),
    ("ix_kern_schedules_name_id", "agno_schedules", ["name", "id"]),
    ("ix_kern_schedule_runs_schedule_created", "agno_schedule_runs", ["schedule_id", "created_at"]),
)


def upgrade() -> None:
    schema = _schema()
    for name, table, columns in INDEXES:
        # IF NOT EXISTS: reflection cannot see expression indexes (SQLite), so ask the database.
        op.create_index(name, table, columns, schema=schema, if_not_exists=True)


def downgrade() -> None:
    schema = _schema()
    for name, table, _ in INDEXES:
        op.drop_index(name, table, schema=schema, if_exists=True)
