"""agno's run tables: agno_sessions, agno_runs, agno_traces, agno_spans (as agno 3.1 makes them).

Skipped table by table when agno (or an earlier kern_tasks) created them already; a
missing index of agno's is added to a table that exists.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from kern_tasks.db.migrations.support import JSONType, has_table, index_names
from kern_tasks.db.migrations.support import schema as _schema

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

def _ref(table_column: str) -> str:
    schema = _schema()
    return f"{schema}.{table_column}" if schema else table_column


def _ensure_indexes(table: str, indexes: dict[str, list[str]]) -> None:
    present = index_names(table)
    for name, columns in indexes.items():
        if name not in present:
            op.create_index(name, table, columns, schema=_schema())


def upgrade() -> None:
    schema = _schema()
    if not has_table("agno_sessions"):
        op.create_table(
            "agno_sessions",
            sa.Column("session_id", sa.String, primary_key=True),
            sa.Column("session_type", sa.String, nullable=False),
            sa.Column("agent_id", sa.String),
            sa.Column("team_id", sa.String),
            sa.Column("workflow_id", sa.String),
            sa.Column("user_id", sa.String),
            sa.Column("session_data", JSONType),
            sa.Column("agent_data", JSONType),
            sa.Column("team_data", JSONType),
            sa.Column("workflow_data", JSONType),
            sa.Column("metadata", JSONType),
            sa.Column("summary", JSONType),
            sa.Column("created_at", sa.BigInteger, nullable=False),
            sa.Column("updated_at", sa.BigInteger),
            schema=schema,
        )
    _ensure_indexes(
        "agno_sessions",
        {"idx_agno_sessions_session_type": ["session_type"], "idx_agno_sessions_created_at": ["created_at"]},
    )

    if not has_table("agno_runs"):
        op.create_table(
            "agno_runs",
            sa.Column("run_id", sa.String, primary_key=True),
            sa.Column(
                "session_id",
                sa.String,
                sa.ForeignKey(_ref("agno_sessions.session_id"), ondelete="CASCADE"),
                nullable=False,
            ),
            sa.Column("run_type", sa.String, nullable=False),
            sa.Column("agent_id", sa.String),
            sa.Column("team_id", sa.String),
            sa.Column("workflow_id", sa.String),
            sa.Column("user_id", sa.String),
            sa.Column("parent_run_id", sa.String),
            sa.Column("status", sa.String),
            sa.Column("run_index", sa.BigInteger),
            sa.Column("run_data", JSONType, nullable=False),
            sa.Column("created_at", sa.BigInteger, nullable=False),
            sa.Column("updated_at", sa.BigInteger),
            schema=schema,
        )
    run_indexes = {
        f"idx_agno_runs_{c}": [c]
        for c in ("session_id", "run_type", "agent_id", "team_id", "workflow_id", "user_id", "status", "created_at")
    }
    run_indexes["idx_agno_runs_session_id_run_index"] = ["session_id", "run_index"]
    _ensure_indexes("agno_runs", run_indexes)

    if not has_table("agno_traces"):
        op.create_table(
            "agno_traces",
            sa.Column("trace_id", sa.String, primary_key=True),
            sa.Column("name", sa.String, nullable=False),
            sa.Column("status", sa.String, nullable=False),
            sa.Column("start_time", sa.String, nullable=False),
            sa.Column("end_time", sa.String, nullable=False),
            sa.Column("duration_ms", sa.BigInteger, nullable=False),
            sa.Column("run_id", sa.String),
            sa.Column("session_id", sa.String),
            sa.Column("user_id", sa.String),
            sa.Column("agent_id", sa.String),
            sa.Column("team_id", sa.String),
            sa.Column("workflow_id", sa.String),
            sa.Column("created_at", sa.String, nullable=False),
            schema=schema,
        )
    _ensure_indexes(
        "agno_traces",
        {
            f"idx_agno_traces_{c}": [c]
            for c in (
                "status", "start_time", "run_id", "session_id", "user_id",
                "agent_id", "team_id", "workflow_id", "created_at",
            )
        },
    )

    if not has_table("agno_spans"):
        op.create_table(
            "agno_spans",
            sa.Column("span_id", sa.String, primary_key=True),
            sa.Column("trace_id", sa.String, sa.ForeignKey(_ref("agno_traces.trace_id")), nullable=False),
            sa.Column("parent_span_id", sa.String),
            sa.Column("name", sa.String, nullable=False),
            sa.Column("span_kind", sa.String, nullable=False),
            sa.Column("status_code", sa.String, nullable=False),
            sa.Column("status_message", sa.Text),
            sa.Column("start_time", sa.String, nullable=False),
            sa.Column("end_time", sa.String, nullable=False),
            sa.Column("duration_ms", sa.BigInteger, nullable=False),
            sa.Column("attributes", JSONType),
            sa.Column("created_at", sa.String, nullable=False),
            schema=schema,
        )
    _ensure_indexes(
        "agno_spans", {f"idx_agno_spans_{c}": [c] for c in ("trace_id", "parent_span_id", "start_time", "created_at")}
    )


def downgrade() -> None:
    # The tables may be agno's own, holding its sessions: never drop them.
    pass
