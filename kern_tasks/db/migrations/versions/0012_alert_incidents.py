"""Alerts: kern_alert_incidents (one row per incident: an overdue slot, a failure streak,
no beat; kern_tasks.alerts), and agno_schedules.alert_after_failures (how many failed slots
in a row make an incident; NULL: the default, 3; 0: never).

An incident is open while resolved_at is NULL; the partial unique index on its key keeps
one open incident per key, whatever the replicas do, so it is POSTed once. Ours alone
(agno never reads the table); the column is nullable, so agno's inserts keep working.

Revision ID: 0012
Revises: 0014 (the head on main when this landed; the two are independent)
"""

import sqlalchemy as sa
from alembic import op

from kern_tasks.db.migrations.support import column_names, has_table, index_names
from kern_tasks.db.migrations.support import schema as _schema

revision = "0012"
down_revision = "0014"
branch_labels = None
depends_on = None

OPEN = "resolved_at IS NULL"


def upgrade() -> None:
    schema = _schema()
    if not has_table("kern_alert_incidents"):
        op.create_table(
            "kern_alert_incidents",
            sa.Column("id", sa.String, primary_key=True),
            sa.Column("key", sa.String, nullable=False),
            sa.Column("kind", sa.String, nullable=False),
            sa.Column("schedule_id", sa.String),
            sa.Column("schedule_name", sa.String),
            sa.Column("slot", sa.BigInteger),
            sa.Column("last_error", sa.Text),
            sa.Column("message", sa.Text, nullable=False),
            sa.Column("opened_at", sa.BigInteger, nullable=False),
            sa.Column("resolved_at", sa.BigInteger),
            schema=schema,
        )
    present = index_names("kern_alert_incidents")
    if "uq_kern_alert_incidents_open_key" not in present:
        op.create_index("uq_kern_alert_incidents_open_key", "kern_alert_incidents", ["key"], unique=True,
                        schema=schema, postgresql_where=sa.text(OPEN), sqlite_where=sa.text(OPEN))
    if "ix_kern_alert_incidents_open_kind" not in present:
        op.create_index("ix_kern_alert_incidents_open_kind", "kern_alert_incidents", ["kind"], schema=schema,
                        postgresql_where=sa.text(OPEN), sqlite_where=sa.text(OPEN))
    if "alert_after_failures" not in column_names("agno_schedules"):
        op.add_column("agno_schedules", sa.Column("alert_after_failures", sa.BigInteger), schema=schema)


def downgrade() -> None:
    schema = _schema()
    op.drop_column("agno_schedules", "alert_after_failures", schema=schema)
    op.drop_table("kern_alert_incidents", schema=schema)
