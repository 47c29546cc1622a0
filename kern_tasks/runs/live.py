"""Spans recorded as they happen, in agno_spans and agno_traces, by whichever process runs
the part of the run the span covers (a workflow's step attempts on different workers).

Promises (on one connection, inside the caller's transaction):
- `open_span` stores a started span (UNSET, ending when it starts) under the run's trace
  `trace_id_for(run_id)`, creating that trace if it is the run's first span; opening a span
  id that exists already changes nothing (a duplicate message records one span);
- `close_span` ends a span once: a span already ended (or unknown) is left as it is;
- `close_trace` ends what is still open of the run's root spans with the run's status and
  sums the trace up again from every stored span, when the run ends. Spans of attempts that
  never ended (a lost worker) stay UNSET.
"""

from __future__ import annotations

from typing import Any, Mapping

from sqlalchemy import Connection, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite

from kern_tasks.db.run_tables import spans, traces
from kern_tasks.runs.traces import RunContext, ended_span_values, iso, open_span_row, trace_id_for, trace_row


def insert_ignoring_duplicates(conn: Connection, table: Table, key: str, rows: list[dict[str, Any]]) -> None:
    """Insert rows; a row whose key exists already is left as it is."""
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(table).values(rows).on_conflict_do_nothing(index_elements=[key]))


def open_span(conn: Connection, ctx: RunContext, span: Mapping[str, Any], *, now: float) -> str:
    """Store `span` (span_id, parent_span_id, name, kind, start_time, attributes) as started,
    in the trace of `ctx.run_id`. Returns the span id."""
    trace_id = trace_id_for(ctx.run_id)
    row = open_span_row({**span, "trace_id": trace_id}, ctx, created_at=iso(now))
    insert_ignoring_duplicates(conn, traces, "trace_id", [trace_row(trace_id, [row], ctx, created_at=iso(now))])
    insert_ignoring_duplicates(conn, spans, "span_id", [row])
    return row["span_id"]


def close_span(
    conn: Connection, span_id: str, *, ended_at: float, status: str, error: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> bool:
    """End the open span `span_id`; False when there is none (unknown, or ended already)."""
    query = select(spans).where(spans.c.span_id == span_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()  # two enders of one span: the first wins
    row = conn.execute(query).mappings().first()
    if row is None or row["status_code"] != "UNSET":
        return False
    values = ended_span_values(row, ended_at=ended_at, status=status, error=error, attributes=attributes)
    conn.execute(update(spans).where(spans.c.span_id == span_id, spans.c.status_code == "UNSET").values(**values))
    return True


def close_trace(conn: Connection, ctx: RunContext, *, now: float) -> bool:
    """End the run's live trace (see the module docstring); False when the run has none."""
    trace_id = trace_id_for(ctx.run_id)
    stored = conn.execute(select(spans).where(spans.c.trace_id == trace_id)).mappings().all()
    if not stored:
        return False
    status = "ERROR" if ctx.status == "ERROR" else "OK"
    for row in stored:
        if row["parent_span_id"] is None and row["status_code"] == "UNSET":
            close_span(conn, row["span_id"], ended_at=ctx.ended_at, status=status, error=ctx.error)
    stored = conn.execute(select(spans).where(spans.c.trace_id == trace_id)).mappings().all()
    summary = trace_row(trace_id, list(stored), ctx, created_at=iso(now))
    del summary["trace_id"], summary["created_at"]
    conn.execute(update(traces).where(traces.c.trace_id == trace_id).values(**summary))
    return True
