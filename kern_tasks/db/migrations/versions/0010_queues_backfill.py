"""Per-schedule Celery routing and backfilled slots: `queue` and `priority` on
agno_schedules (NULL: the app's default queue, the broker's default priority), and
`backfill` on agno_schedule_runs (true for a slot asked for by `ScheduleManager.backfill`).

All nullable or defaulted, so agno's own inserts keep working.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from kern_tasks.db.migrations.support import column_names
from kern_tasks.db.migrations.support import schema as _schema

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

SCHEDULE_COLUMNS = [sa.Column("queue", sa.String), sa.Column("priority", sa.BigInteger)]
RUN_COLUMNS = [sa.Column("backfill", sa.Boolean, nullable=False, server_default=sa.false())]


def upgrade() -> None:
    schema = _schema()
    for table, columns in (("agno_schedules", SCHEDULE_COLUMNS), ("agno_schedule_runs", RUN_COLUMNS)):
        present = column_names(table)
        for column in columns:
            if column.name not in present:
                op.add_column(table, column, schema=schema)


def downgrade() -> None:
    schema = _schema()
    for table, columns in (("agno_schedules", SCHEDULE_COLUMNS), ("agno_schedule_runs", RUN_COLUMNS)):
        for column in columns:
            op.drop_column(table, column.name, schema=schema)
