"""Where agent and workflow runs are kept: agno_sessions, agno_runs, agno_traces, agno_spans.

Names, columns and types are agno 3.1's (agno/db/postgres/schemas.py: SESSION_TABLE_SCHEMA,
the runs table of `_get_run_table_schema`, TRACE_TABLE_SCHEMA and the spans table of
`_get_span_table_schema`), so agno reads the runs kern_tasks stores and the other way round.
agno 3.x keeps a session's runs in agno_runs (one row per run, `run_data` holding the run
as RunOutput.to_dict() shapes it), not in a `runs` column of agno_sessions.

Times: sessions and runs use epoch seconds (BigInteger); traces and spans use ISO 8601
strings, as agno writes them. Defined on the same `metadata` as the schedule tables.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, Index, String, Table, Text

from kern_tasks.db.tables import JSONType, metadata

# One conversation (or one workflow's history) of one owner with one agent/team/workflow.
sessions = Table(
    "agno_sessions",
    metadata,
    Column("session_id", String, primary_key=True),
    Column("session_type", String, nullable=False),  # agent | team | workflow
    Column("agent_id", String),
    Column("team_id", String),
    Column("workflow_id", String),
    Column("user_id", String),
    Column("session_data", JSONType),
    Column("agent_data", JSONType),
    Column("team_data", JSONType),
    Column("workflow_data", JSONType),
    Column("metadata", JSONType),
    Column("summary", JSONType),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger),
)
Index("idx_agno_sessions_session_type", sessions.c.session_type)
Index("idx_agno_sessions_created_at", sessions.c.created_at)

# One run of a session; `status` is agno's RunStatus (PENDING, RUNNING, COMPLETED, ERROR, ...).
runs = Table(
    "agno_runs",
    metadata,
    Column("run_id", String, primary_key=True),
    Column(
        "session_id",
        String,
        ForeignKey("agno_sessions.session_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("run_type", String, nullable=False),  # agent | team | workflow
    Column("agent_id", String),
    Column("team_id", String),
    Column("workflow_id", String),
    Column("user_id", String),
    Column("parent_run_id", String),
    Column("status", String),
    Column("run_index", BigInteger),  # position in the session, from 0
    Column("run_data", JSONType, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger),
)
for _column in ("session_id", "run_type", "agent_id", "team_id", "workflow_id", "user_id", "status", "created_at"):
    Index(f"idx_agno_runs_{_column}", runs.c[_column])
# agno's "most recent N runs of a session" index.
Index("idx_agno_runs_session_id_run_index", runs.c.session_id, runs.c.run_index)

# One trace per trace_id: the run's span tree summarised.
traces = Table(
    "agno_traces",
    metadata,
    Column("trace_id", String, primary_key=True),
    Column("name", String, nullable=False),
    Column("status", String, nullable=False),  # OK | ERROR
    Column("start_time", String, nullable=False),  # ISO 8601
    Column("end_time", String, nullable=False),
    Column("duration_ms", BigInteger, nullable=False),
    Column("run_id", String),
    Column("session_id", String),
    Column("user_id", String),
    Column("agent_id", String),
    Column("team_id", String),
    Column("workflow_id", String),
    Column("created_at", String, nullable=False),
)
for _column in (
    "status", "start_time", "run_id", "session_id", "user_id", "agent_id", "team_id", "workflow_id", "created_at",
):
    Index(f"idx_agno_traces_{_column}", traces.c[_column])

spans = Table(
    "agno_spans",
    metadata,
    Column("span_id", String, primary_key=True),
    Column("trace_id", String, ForeignKey("agno_traces.trace_id"), nullable=False),
    Column("parent_span_id", String),
    Column("name", String, nullable=False),
    Column("span_kind", String, nullable=False),  # OpenTelemetry's: INTERNAL, CLIENT, ...
    Column("status_code", String, nullable=False),  # OK | ERROR | UNSET
    Column("status_message", Text),
    Column("start_time", String, nullable=False),
    Column("end_time", String, nullable=False),
    Column("duration_ms", BigInteger, nullable=False),
    Column("attributes", JSONType),
    Column("created_at", String, nullable=False),
)
for _column in ("trace_id", "parent_span_id", "start_time", "created_at"):
    Index(f"idx_agno_spans_{_column}", spans.c[_column])
