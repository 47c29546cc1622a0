"""The read side of the run tables, as agno's session and trace routes read them
(agno/db/postgres/postgres.py: get_sessions, get_session, delete_session, get_traces,
get_trace, get_spans), for agno_sessions / agno_runs / agno_traces / agno_spans written by
RunStore or by agno itself.

    queries = RunQueries(db)
    page = queries.sessions(session_type="agent", component_id="demo", user_id="u1", page=1, limit=20)
    session = queries.session(session_id)              # the row and its runs, or None
    queries.delete_session(session_id, user_id="u1")  # True when a session was deleted
    page = queries.traces(session_id=session_id, start_time="2026-01-01T00:00:00+00:00")
    found = queries.trace(trace_id)                     # (trace row, its span rows), or None

Promises:
- filters are agno's: `component_id` matches the column of `session_type` (any of agent_id,
  team_id, workflow_id without a type); `user_id` None means every owner; `session_name`
  is a case-insensitive substring of session_data.session_name;
- sorting is by one of SESSION_SORT_FIELDS (updated_at falls back to created_at, as agno's);
  pages count from 1; traces are newest first (start_time), with agno's span counts;
- trace times compare as stored (ISO 8601 strings in UTC): bounds are given in that form;
- every read is one short transaction; nothing here writes except `delete_session`, which
  removes the session with its runs in one transaction (its traces stay, as agno's do).
Arguments are not validated here beyond their types: the routers check what a caller sent.
"""

from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import and_, case, delete, func, or_, select
from sqlalchemy.sql import Select

from kern_tasks.db import Database
from kern_tasks.db.run_tables import runs, sessions, spans, traces
from kern_tasks.scheduler.models import Page

SESSION_TYPES = ("agent", "team", "workflow")
SESSION_SORT_FIELDS = ("created_at", "updated_at", "session_id", "session_type", "user_id", "agent_id",
                       "team_id", "workflow_id")
SORT_ORDERS = ("asc", "desc")


def _row(mapping: Any) -> dict[str, Any]:
    return dict(mapping)


class RunQueries:
    """Read queries over one database's run tables. Thread-safe; cheap to construct."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- sessions -----------------------------------------------------------------

    def sessions(
        self,
        *,
        session_type: str | None = None,
        component_id: str | None = None,
        user_id: str | None = None,
        session_name: str | None = None,
        page: int = 1,
        limit: int = 20,
        sort_by: str = "created_at",
        sort_order: str = "desc",
    ) -> Page[dict[str, Any]]:
        """One page of session rows; each carries `first_run`: the run_data of its first run
        (None without runs), which agno's session name falls back to."""
        query = select(sessions)
        if user_id is not None:
            query = query.where(sessions.c.user_id == user_id)
        if component_id is not None:
            columns = [sessions.c[f"{kind}_id"] for kind in ([session_type] if session_type else SESSION_TYPES)]
            query = query.where(or_(*[column == component_id for column in columns]))
        if session_type is not None:
            query = query.where(sessions.c.session_type == session_type)
        if session_name is not None:
            name = func.coalesce(sessions.c.session_data["session_name"].as_string(), "")
            query = query.where(name.ilike(f"%{_like_escaped(session_name)}%", escape="\\"))
        column = sessions.c[sort_by]
        if sort_by == "updated_at":
            column = func.coalesce(sessions.c.updated_at, sessions.c.created_at)
        # session_id breaks ties, so pages never overlap or skip rows.
        ordered = [column.asc(), sessions.c.session_id.asc()] if sort_order == "asc" else [
            column.desc(), sessions.c.session_id.desc()]
        with self.db.connect() as conn:
            total = conn.execute(select(func.count()).select_from(query.subquery())).scalar() or 0
            found = [_row(m) for m in conn.execute(
                query.order_by(*ordered).limit(limit).offset((page - 1) * limit)).mappings()]
            first = self._first_runs(conn, [s["session_id"] for s in found])
        for session in found:
            session["first_run"] = first.get(session["session_id"])
        return Page(data=found, page=page, limit=limit, total_count=total)

    @staticmethod
    def _first_runs(conn: Any, session_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not session_ids:
            return {}
        first = (
            select(runs.c.session_id, func.min(runs.c.run_index).label("first_index"))
            .where(runs.c.session_id.in_(session_ids))
            .group_by(runs.c.session_id)
            .subquery()
        )
        query = select(runs.c.session_id, runs.c.run_data).join(
            first, and_(runs.c.session_id == first.c.session_id, runs.c.run_index == first.c.first_index)
        )
        return {row.session_id: dict(row.run_data or {}) for row in conn.execute(query)}

    def session(self, session_id: str, *, user_id: str | None = None) -> dict[str, Any] | None:
        """The session row with `runs`: its run rows in order (run_index, then created_at);
        None when there is no such session (or it belongs to another user than `user_id`)."""
        query = select(sessions).where(sessions.c.session_id == session_id)
        if user_id is not None:
            query = query.where(sessions.c.user_id == user_id)
        with self.db.connect() as conn:
            found = conn.execute(query).mappings().first()
            if found is None:
                return None
            session = _row(found)
            session["runs"] = [_row(m) for m in conn.execute(self._runs_of(session_id)).mappings()]
        return session

    def session_runs(
        self,
        session_id: str,
        *,
        user_id: str | None = None,
        created_after: int | None = None,
        created_before: int | None = None,
        statuses: Sequence[str] | None = None,
        run_id: str | None = None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """(session row, its run rows within the bounds, inclusive, of one of `statuses`, and
        only run `run_id` when given); None when there is no such session for `user_id`."""
        query = select(sessions).where(sessions.c.session_id == session_id)
        if user_id is not None:
            query = query.where(sessions.c.user_id == user_id)
        run_query = self._runs_of(session_id)
        if created_after is not None:
            run_query = run_query.where(runs.c.created_at >= created_after)
        if created_before is not None:
            run_query = run_query.where(runs.c.created_at <= created_before)
        if statuses:
            run_query = run_query.where(runs.c.status.in_(list(statuses)))
        if run_id is not None:
            run_query = run_query.where(runs.c.run_id == run_id)
        with self.db.connect() as conn:
            found = conn.execute(query).mappings().first()
            if found is None:
                return None
            return _row(found), [_row(m) for m in conn.execute(run_query).mappings()]

    @staticmethod
    def _runs_of(session_id: str) -> Select[Any]:
        return select(runs).where(runs.c.session_id == session_id).order_by(
            runs.c.run_index.asc(), runs.c.created_at.asc(), runs.c.run_id.asc())

    def delete_session(self, session_id: str, *, user_id: str | None = None) -> bool:
        """Delete the session (of `user_id`, when given) and its runs; False when there was none."""
        owned = sessions.c.session_id == session_id
        if user_id is not None:
            owned = and_(owned, sessions.c.user_id == user_id)
        with self.db.begin() as conn:
            if conn.execute(select(sessions.c.session_id).where(owned)).first() is None:
                return False
            # Runs first: the foreign key cascades on Postgres, and on SQLite only with the
            # foreign_keys pragma on (ours sets it; a connection agno opened may not).
            conn.execute(delete(runs).where(runs.c.session_id == session_id))
            conn.execute(delete(sessions).where(owned))
            return True

    # --- traces -------------------------------------------------------------------

    def traces(
        self,
        *,
        run_id: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        workflow_id: str | None = None,
        status: str | None = None,
        start_time: str | None = None,
        end_time: str | None = None,
        page: int = 1,
        limit: int = 20,
    ) -> Page[dict[str, Any]]:
        """One page of trace rows, newest first, each with `total_spans`, `error_count` and
        `root_attributes` (its first root span's attributes, where agno reads the input).
        `start_time` keeps traces that start at or after it, `end_time` those that end at or
        before it (ISO 8601 in UTC, the stored form)."""
        query = self._traces_with_counts()
        for column, value in (("run_id", run_id), ("session_id", session_id), ("user_id", user_id),
                              ("agent_id", agent_id), ("team_id", team_id), ("workflow_id", workflow_id),
                              ("status", status)):
            if value is not None:
                query = query.where(traces.c[column] == value)
        if start_time is not None:
            query = query.where(traces.c.start_time >= start_time)
        if end_time is not None:
            query = query.where(traces.c.end_time <= end_time)
        ordered = query.order_by(traces.c.start_time.desc(), traces.c.trace_id.desc())
        with self.db.connect() as conn:
            total = conn.execute(select(func.count()).select_from(query.subquery())).scalar() or 0
            found = [_row(m) for m in conn.execute(ordered.limit(limit).offset((page - 1) * limit)).mappings()]
            roots: dict[str, dict[str, Any]] = {}
            if found:
                root_query = select(spans.c.trace_id, spans.c.attributes).where(
                    spans.c.trace_id.in_([t["trace_id"] for t in found]), spans.c.parent_span_id.is_(None)
                ).order_by(spans.c.start_time.asc())
                for row in conn.execute(root_query):
                    roots.setdefault(row.trace_id, dict(row.attributes or {}))
        for trace in found:
            trace["root_attributes"] = roots.get(trace["trace_id"], {})
        return Page(data=found, page=page, limit=limit, total_count=total)

    def trace(self, trace_id: str, *, run_id: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """(the trace row with its span counts, its span rows by start time); None when there
        is no such trace, or it is not the trace of `run_id` when that is given."""
        query = self._traces_with_counts().where(traces.c.trace_id == trace_id)
        if run_id is not None:
            query = query.where(traces.c.run_id == run_id)
        with self.db.connect() as conn:
            found = conn.execute(query).mappings().first()
            if found is None:
                return None
            span_rows = [_row(m) for m in conn.execute(
                select(spans).where(spans.c.trace_id == trace_id).order_by(spans.c.start_time.asc(),
                                                                           spans.c.span_id.asc())).mappings()]
        return _row(found), span_rows

    @staticmethod
    def _traces_with_counts() -> Select[Any]:
        counts = (
            select(
                spans.c.trace_id,
                func.count().label("total_spans"),
                func.sum(case((spans.c.status_code == "ERROR", 1), else_=0)).label("error_count"),
            )
            .group_by(spans.c.trace_id)
            .subquery()
        )
        return select(
            traces,
            func.coalesce(counts.c.total_spans, 0).label("total_spans"),
            func.coalesce(counts.c.error_count, 0).label("error_count"),
        ).outerjoin(counts, counts.c.trace_id == traces.c.trace_id)


def _like_escaped(text: str) -> str:
    """`text` matched literally inside a LIKE pattern."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
