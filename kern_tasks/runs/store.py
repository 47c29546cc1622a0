"""RunStore: agent, team and workflow runs in agno_sessions / agno_runs, traces in
agno_traces / agno_spans, written the way agno writes them so either can read the other's.

    store = RunStore(db)
    run = store.start(run_type="agent", component_id="digest", component_name="Digest",
                      message="hi", session_id=None, user_id="u1")      # PENDING
    store.mark_running(run.run_id)                                       # RUNNING
    store.finish(run.run_id, RunResult(status="COMPLETED", content="..."), ...)

A workflow run is kept the same way, with what agno keeps of it besides: `start(run_data=)`
holds the run's dict at the start (agno's WorkflowRunOutput.to_dict()), `component_data=` the
session's workflow_data, `finish(session_data=)` the session's state saved at the end
(`session_data()` reads it back for the next run), and its spans are recorded as the steps
run (`start_span`, `end_span`, see `kern_tasks.runs.live`) instead of given to `finish`.

Promises:
- all state is in the database: any process (another web replica, a worker) reads a run
  by its run_id with `get()`;
- a session belongs to one component and one owner: starting a run in another's session
  raises `Conflict`; `run_index` counts a session's runs from 0 without gaps from
  concurrent starts (the session row is locked on Postgres; SQLite writes are serialised);
- a run ends once: `finish()` on a run already finished changes nothing and returns it
  as stored (so a late result never overwrites a run abandoned at shutdown);
- the run row, the session's updated_at (and session_data, if given) and the trace (with
  spans) of a finished run are written in one transaction; every finished run has a trace
  (a run with spans recorded as it ran: that trace, ended and summed up);
- stored text never holds NUL or lone surrogates (see `kern_tasks.runs.safe`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from kern_tasks.db import Database, db_now, db_time
from kern_tasks.db.run_tables import runs, sessions, spans, traces
from kern_tasks.errors import Conflict
from kern_tasks.runs.live import close_span, close_trace, insert_ignoring_duplicates, open_span
from kern_tasks.runs.safe import json_safe, text
from kern_tasks.runs.traces import RunContext, iso, trace_rows

ACTIVE = ("PENDING", "RUNNING")
TERMINAL = ("COMPLETED", "ERROR", "CANCELLED", "PAUSED")
RUN_TYPES = ("agent", "team", "workflow")
HISTORY_RUNS = 10


@dataclass(frozen=True)
class RunResult:
    """How a run ended, as the runner hands it to `finish()`."""

    status: str  # COMPLETED | ERROR | CANCELLED | PAUSED
    content: Any = None
    error: str | None = None
    messages: list[Any] | None = None
    metrics: dict[str, Any] | None = None
    started_at: float | None = None  # epoch seconds
    ended_at: float | None = None
    spans: Sequence[Any] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # more run_data keys (model, ...)


@dataclass(frozen=True)
class StoredRun:
    """A row of agno_runs."""

    run_id: str
    session_id: str
    run_type: str
    component_id: str | None
    user_id: str | None
    status: str
    run_index: int | None
    run_data: dict[str, Any]
    created_at: int
    updated_at: int | None

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    def to_api(self) -> dict[str, Any]:
        """agno's run body (RunOutput.to_dict() shape); the status column is authoritative."""
        body = dict(self.run_data)
        body.update(run_id=self.run_id, session_id=self.session_id, status=self.status)
        body.setdefault("content_type", "str")
        body.setdefault("created_at", self.created_at)
        return body


def _component_column(run_type: str) -> str:
    return f"{run_type}_id"


def _from_row(row: Any) -> StoredRun:
    return StoredRun(
        run_id=row["run_id"],
        session_id=row["session_id"],
        run_type=row["run_type"],
        component_id=row[_component_column(row["run_type"])] if row["run_type"] in RUN_TYPES else None,
        user_id=row["user_id"],
        status=row["status"] or "PENDING",
        run_index=row["run_index"],
        run_data=dict(row["run_data"] or {}),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class RunStore:
    """The runs of one database. Thread-safe; cheap to construct."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- write ------------------------------------------------------------------

    def start(
        self,
        *,
        run_type: str,
        component_id: str,
        component_name: str | None,
        message: str,
        session_id: str | None,
        user_id: str | None,
        run_id: str | None = None,
        run_data: Mapping[str, Any] | None = None,
        component_data: Mapping[str, Any] | None = None,
    ) -> StoredRun:
        """Record a new PENDING run (and its session, when new). Raises `Conflict` when the
        session belongs to another component or owner. `run_data` is laid over the run's
        stored dict (a workflow's input is its own, not an agent's `input_content`);
        `component_data` over a new session's `<run_type>_data` (name and id)."""
        if run_type not in RUN_TYPES:
            raise ValueError(f"run_type must be one of {RUN_TYPES}, got {run_type!r}")
        run_id = run_id or str(uuid.uuid4())
        session_id = session_id or str(uuid.uuid4())
        for attempt in range(2):
            try:
                with self.db.begin() as conn:
                    now = db_now(conn)
                    self._claim_session(conn, run_type, component_id, component_name, session_id, user_id, now,
                                        dict(json_safe(dict(component_data or {}))))
                    index = conn.execute(
                        select(func.max(runs.c.run_index)).where(runs.c.session_id == session_id)
                    ).scalar()
                    stored_data = {
                        "run_id": run_id,
                        _component_column(run_type): component_id,
                        f"{run_type}_name": component_name,
                        "session_id": session_id,
                        "user_id": user_id,
                        "input": {"input_content": text(message)},
                        "content": None,
                        "content_type": "str",
                        "status": "PENDING",
                        "created_at": now,
                        **json_safe(dict(run_data or {})),
                        # What the row says of the run, whatever `run_data` held.
                        **{"run_id": run_id, "session_id": session_id, "status": "PENDING"},
                    }
                    row = {
                        "run_id": run_id,
                        "session_id": session_id,
                        "run_type": run_type,
                        _component_column(run_type): component_id,
                        "user_id": user_id,
                        "status": "PENDING",
                        "run_index": 0 if index is None else index + 1,
                        "run_data": stored_data,
                        "created_at": now,
                        "updated_at": now,
                    }
                    conn.execute(insert(runs).values(**row))
                    return _from_row(row)
            except IntegrityError:
                # Two first runs of one new session raced to create it: the loser retries
                # and finds the session; a taken run_id fails again and is raised.
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _claim_session(
        self,
        conn: Connection,
        run_type: str,
        component_id: str,
        component_name: str | None,
        session_id: str,
        user_id: str | None,
        now: int,
        component_data: dict[str, Any],
    ) -> None:
        query = select(sessions).where(sessions.c.session_id == session_id)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()  # serialises run_index within the session
        existing = conn.execute(query).mappings().first()
        if existing is None:
            conn.execute(
                insert(sessions).values(
                    session_id=session_id,
                    session_type=run_type,
                    user_id=user_id,
                    created_at=now,
                    updated_at=now,
                    **{
                        _component_column(run_type): component_id,
                        f"{run_type}_data": {
                            "name": component_name, _component_column(run_type): component_id, **component_data,
                        },
                    },
                )
            )
            return
        owner = existing[_component_column(run_type)] if existing["session_type"] == run_type else None
        if owner != component_id:
            raise Conflict(f"session {session_id} belongs to another {existing['session_type']}; use a new session_id")
        if existing["user_id"] is not None and existing["user_id"] != user_id:
            raise Conflict(f"session {session_id} belongs to another user; use a new session_id")

    def mark_running(self, run_id: str) -> bool:
        """PENDING -> RUNNING; False when the run is no longer PENDING."""
        with self.db.begin() as conn:
            current = self._lock(conn, run_id)
            if current is None or current.status != "PENDING":
                return False
            self._write(conn, current, "RUNNING", {**current.run_data, "status": "RUNNING"})
            return True

    def finish(
        self, run_id: str, result: RunResult, *, component_name: str | None = None,
        session_data: Mapping[str, Any] | None = None,
    ) -> StoredRun | None:
        """End an active run with `result`: run row, session and trace in one transaction.
        `session_data` keys replace the session's (agno's session_state, ...). A run that has
        already ended is returned unchanged, and its session too (None: no such run)."""
        with self.db.begin() as conn:
            current = self._lock(conn, run_id)
            if current is None or not current.is_active:
                return current
            now = db_time(conn)
            status = result.status if result.status in TERMINAL else "ERROR"
            run_data = {
                **current.run_data,
                **json_safe(result.extra),
                "status": status,
                "content": json_safe(result.content),
                "content_type": "str" if result.content is None or isinstance(result.content, str) else "json",
            }
            if result.messages is not None:
                run_data["messages"] = json_safe(result.messages)
            if result.metrics is not None:
                run_data["metrics"] = json_safe(result.metrics)
            if result.error is not None:
                run_data["error"] = text(result.error)
            stored = self._write(conn, current, status, run_data)
            session_values: dict[str, Any] = {"updated_at": int(now)}
            if session_data is not None:
                before = conn.execute(
                    select(sessions.c.session_data).where(sessions.c.session_id == current.session_id)
                ).scalar()
                session_values["session_data"] = {**(before or {}), **json_safe(dict(session_data))}
            conn.execute(update(sessions).where(sessions.c.session_id == current.session_id).values(**session_values))
            started = result.started_at if result.started_at is not None else float(current.created_at)
            ctx = RunContext(
                run_id=run_id,
                session_id=current.session_id,
                user_id=current.user_id,
                component_type=current.run_type,
                component_id=current.component_id or "",
                name=component_name or current.component_id or current.run_type,
                status=status,
                started_at=started,
                ended_at=result.ended_at if result.ended_at is not None else max(now, started),
                error=run_data.get("error"),
            )
            if close_trace(conn, ctx, now=now) and not result.spans:
                return stored
            trace_list, span_list = trace_rows(result.spans, ctx, created_at=iso(now))
            insert_ignoring_duplicates(conn, traces, "trace_id", trace_list)
            insert_ignoring_duplicates(conn, spans, "span_id", span_list)
            return stored

    def start_span(self, run_id: str, span: Mapping[str, Any], *, started_at: float | None = None) -> str | None:
        """Record that a part of run `run_id` started: `span` has span_id (made if absent),
        parent_span_id (None for the run's root), name, kind (see traces.KINDS) and
        attributes; `started_at` is epoch seconds (now, by the database, if None). Returns
        the span id; None when there is no such run. Opening a span id twice records one."""
        with self.db.begin() as conn:
            current = conn.execute(select(runs).where(runs.c.run_id == run_id)).mappings().first()
            if current is None:
                return None
            run = _from_row(current)
            now = db_time(conn)
            start = now if started_at is None else started_at
            ctx = RunContext(
                run_id=run_id, session_id=run.session_id, user_id=run.user_id, component_type=run.run_type,
                component_id=run.component_id or "", name=run.component_id or run.run_type, status=run.status,
                started_at=start, ended_at=start,
            )
            return open_span(conn, ctx, {**span, "start_time": start}, now=now)["span_id"]

    def end_span(
        self, span_id: str, *, status: str, error: str | None = None, ended_at: float | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record that the span `span_id` ended with `status` (OK | ERROR) and `error`, at
        `ended_at` (now, by the database, if None); `attributes` join the span's. Ends a span
        once: False when it was ended already or is unknown."""
        with self.db.begin() as conn:
            end = db_time(conn) if ended_at is None else ended_at
            return close_span(conn, span_id, ended_at=end, status=status, error=error, attributes=attributes)

    def _lock(self, conn: Connection, run_id: str) -> StoredRun | None:
        query = select(runs).where(runs.c.run_id == run_id)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).mappings().first()
        return _from_row(row) if row is not None else None

    def _write(self, conn: Connection, current: StoredRun, status: str, run_data: dict[str, Any]) -> StoredRun:
        now = db_now(conn)
        conn.execute(
            update(runs).where(runs.c.run_id == current.run_id).values(status=status, run_data=run_data, updated_at=now)
        )
        return replace(current, status=status, run_data=run_data, updated_at=now)

    # --- read -------------------------------------------------------------------

    def session_data(self, session_id: str) -> dict[str, Any] | None:
        """The session's session_data ({} if it has none); None when there is no such session."""
        with self.db.connect() as conn:
            row = conn.execute(
                select(sessions.c.session_data).where(sessions.c.session_id == session_id)
            ).first()
        return None if row is None else dict(row[0] or {})

    def get(self, run_id: str) -> StoredRun | None:
        with self.db.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.run_id == run_id)).mappings().first()
        return _from_row(row) if row is not None else None

    def history(self, session_id: str, *, before_index: int | None = None, limit: int = HISTORY_RUNS) -> list[dict]:
        """The session's last `limit` completed runs as chat messages (user, then assistant)."""
        query = select(runs.c.run_data).where(runs.c.session_id == session_id, runs.c.status == "COMPLETED")
        if before_index is not None:
            query = query.where(runs.c.run_index < before_index)
        with self.db.connect() as conn:
            rows = conn.execute(query.order_by(runs.c.run_index.desc()).limit(limit)).scalars().all()
        messages: list[dict] = []
        for data in reversed(rows):
            question = (data.get("input") or {}).get("input_content")
            if question is not None:
                messages.append({"role": "user", "content": question})
            if data.get("content") is not None:
                messages.append({"role": "assistant", "content": data["content"]})
        return messages

