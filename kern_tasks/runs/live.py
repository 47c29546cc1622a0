"""Spans recorded as they happen, in agno_spans and agno_traces, by whichever process runs
the part of the run the span covers (a workflow's step attempts on different workers).

Promises (on one connection, inside the caller's transaction):
- `open_span` stores a started span (UNSET, ending when it starts) under the run's trace
  `trace_id_for(run_id)`, creating that trace if it is the run's first span; opening a span
  id that exists already changes nothing (a duplicate message records one span); on
  Postgres one statement, built once (a workflow step's span is opened in the transaction
  that takes the step: kern_tasks.workflow.tasks);
- `close_span` ends a span once: a span already ended (or unknown) is left as it is
  (`close_opened_span` the same, for a span whose stored row its caller knows: no read);
- `close_trace` ends what is still open of the run's root spans with the run's status and
  sums the trace up again from every stored span, when the run ends. Spans of attempts that
  never ended (a lost worker) stay UNSET.
"""

from __future__ import annotations

from typing import Any, Mapping

from sqlalchemy import Connection, Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from kern_tasks.db.run_tables import spans, traces
from kern_tasks.runs.traces import RunContext, ended_span_values, iso, open_span_row, trace_id_for, trace_row


# Built once per (dialect, table): an INSERT of `.values(rows)` is compiled anew every call
# (SQLAlchemy cannot cache it); this one is executed with the rows as parameters.
_INSERTS: dict[tuple[str, str], Any] = {}


def _insert_new(conn: Connection, table: Table, key: str) -> Any:
    name = conn.dialect.name
    statement = _INSERTS.get((name, table.name))
    if statement is None:
        dialect = postgresql if name == "postgresql" else sqlite
        statement = _INSERTS[(name, table.name)] = dialect.insert(table).on_conflict_do_nothing(index_elements=[key])
    return statement


def insert_ignoring_duplicates(conn: Connection, table: Table, key: str, rows: list[dict[str, Any]]) -> None:
    """Insert rows (each with the same keys); a row whose key exists already is left as it is."""
    if not rows:
        return
    conn.execute(_insert_new(conn, table, key), rows if len(rows) > 1 else rows[0])


def _open_in_one_statement() -> Any:
    """Postgres: the trace (if new) and the span (if new) by one statement, the trace's
    INSERT a data-modifying CTE of the span's; parameters t_<column> and s_<column>."""
    new_trace = (postgresql.insert(traces).values({c.name: bindparam(f"t_{c.name}", type_=c.type) for c in traces.c})
                 .on_conflict_do_nothing(index_elements=["trace_id"]).cte("new_trace"))
    return (postgresql.insert(spans).values({c.name: bindparam(f"s_{c.name}", type_=c.type) for c in spans.c})
            .on_conflict_do_nothing(index_elements=["span_id"]).add_cte(new_trace))


_OPEN_POSTGRES = _open_in_one_statement()


def open_span(conn: Connection, ctx: RunContext, span: Mapping[str, Any], *, now: float) -> dict[str, Any]:
    """Store `span` (span_id, parent_span_id, name, kind, start_time, attributes) as started,
    in the trace of `ctx.run_id`. Returns the span's row: the stored one when the span was
    new (the caller's to hand to `close_opened_span`; not when the id may exist already)."""
    trace_id = trace_id_for(ctx.run_id)
    row = open_span_row({**span, "trace_id": trace_id}, ctx, created_at=iso(now))
    trace = trace_row(trace_id, [row], ctx, created_at=iso(now))
    if conn.dialect.name == "postgresql":
        conn.execute(_OPEN_POSTGRES, {**{f"t_{k}": trace.get(k) for k in traces.c.keys()},
                                      **{f"s_{k}": row.get(k) for k in spans.c.keys()}})
    else:
        insert_ignoring_duplicates(conn, traces, "trace_id", [trace])
        insert_ignoring_duplicates(conn, spans, "span_id", [row])
    return row


_READ_SPAN = select(spans).where(spans.c.span_id == bindparam("c_span_id"))
_READ_SPAN_LOCKED = _READ_SPAN.with_for_update()
_CLOSE = (update(spans).where(spans.c.span_id == bindparam("c_span_id"), spans.c.status_code == "UNSET")
          .values(status_code=bindparam("status_code"), status_message=bindparam("status_message"),
                  end_time=bindparam("end_time"), duration_ms=bindparam("duration_ms"),
                  attributes=bindparam("attributes", type_=spans.c.attributes.type)))


def close_span(
    conn: Connection, span_id: str, *, ended_at: float, status: str, error: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> bool:
    """End the open span `span_id`; False when there is none (unknown, or ended already)."""
    # Postgres: two enders of one span, the first wins.
    query = _READ_SPAN_LOCKED if conn.dialect.name == "postgresql" else _READ_SPAN
    row = conn.execute(query, {"c_span_id": span_id}).mappings().first()
    if row is None or row["status_code"] != "UNSET":
        return False
    return close_opened_span(conn, row, ended_at=ended_at, status=status, error=error, attributes=attributes)


def close_opened_span(
    conn: Connection, row: Mapping[str, Any], *, ended_at: float, status: str, error: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> bool:
    """`close_span` of a span whose stored row is known (`open_span`'s answer, or a row just
    read): one conditional UPDATE, no read. False when it was not open any more."""
    values = ended_span_values(row, ended_at=ended_at, status=status, error=error, attributes=attributes)
    return bool(conn.execute(_CLOSE, {"c_span_id": row["span_id"], **values}).rowcount)


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
