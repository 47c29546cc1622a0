"""What the dashboard's pages read, through the core (ScheduleManager, RunQueries and the
listing statements of scheduler/listing.py), always scoped to the caller (`Reads` for the
schedules, `RunRecords` for the sessions and traces their runs left): a user's token
reads that user's rows only (os/auth.py `scoped_user`), the security key and admin read
all. Pages call `reads_of(request)` and never touch SQL. Every read runs on a worker
thread (the event loop never waits on the database).

    reads = reads_of(request)
    listing = await reads.schedules(Browse(status="paused"), limit=50)
    detail = await reads.schedule(schedule_id)
    runs = await reads.recent_runs(failures_first=True, window="24h", page=1, limit=50)  # scheduler/history.py
    tree = await reads.workflow_run("report", run_id)                                    # workflow/tree.py
    run, attempts = await records_of(request).component_run("agent", "digest", run_id)   # runs/store.py
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Callable, TypeVar

from fastapi import Request

from kern_tasks.db import Database
from kern_tasks.errors import NotFound, ValidationError
from kern_tasks.os.auth import scoped_user
from kern_tasks.runs.queries import RunQueries
from kern_tasks.runs.store import RunStore, StoredRun
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.scheduler import listing
from kern_tasks.scheduler.kinds import dst_marked
from kern_tasks.scheduler.listing import Browse, Listing
from kern_tasks.scheduler.history import Health, Overdue, RunHistory, RunsPage
from kern_tasks.scheduler.models import Schedule, ScheduleRun
from kern_tasks.workflow import tree as step_tree
from kern_tasks.workflow.tree import RunTree

R = TypeVar("R")
RECENT_ATTEMPTS = 60
NEXT_FIRES = 10


@dataclass(frozen=True)
class ScheduleDetail:
    """A schedule's page: the row, its next fires (DST changes marked), its recent
    attempts newest first, its failures, how many attempts are open now, and why its
    timetable cannot be read, if it cannot."""

    schedule: Schedule
    next_fires: list[dict[str, Any]]
    attempts: list[ScheduleRun]
    failures: list[ScheduleRun]
    in_flight: int
    unreadable: str | None = None  # why its timetable cannot be read (beat disables such a row)


@dataclass(frozen=True)
class Live:
    """What a schedule's page refreshes while a run is in flight."""

    schedule: Schedule
    attempts: list[ScheduleRun]
    in_flight: int


class Reads:
    """The reads of one request's caller (`owner` None: every owner's rows)."""

    def __init__(self, manager: ScheduleManager, owner: str | None, workflows: dict[str, Any] | None = None) -> None:
        self.manager = manager
        self.db: Database = manager.db
        self.owner = owner
        self.workflows = workflows or {}  # the served workflows by id: a run's tree is named through them

    async def _run(self, read: Callable[[], R]) -> R:
        return await asyncio.to_thread(read)

    def _attempts(self, schedule_id: str, limit: int) -> list[ScheduleRun]:
        """The newest attempts of a schedule the caller was just shown (get_or_raise checked
        the owner): every attempt of it, as manager.runs lists them, without runs' second
        load of the row and its count, which no page shows (this runs on every live poll)."""
        return self.manager.get_runs(schedule_id, limit=limit, user_id=None)

    async def schedules(
        self, given: Browse, *, limit: int, after: str | None = None, before: str | None = None,
    ) -> tuple[Listing, dict[str, ScheduleRun]]:
        """One page of schedules, and each one's last attempt."""
        def read() -> tuple[Listing, dict[str, ScheduleRun]]:
            with self.db.connect() as conn:
                page = listing.browse(conn, given, owner=self.owner, limit=limit, after=after, before=before)
                return page, listing.last_attempts(conn, [s.id for s in page.rows])
        return await self._run(read)

    async def matching(self, given: Browse, most: int) -> list[Schedule]:
        """Up to `most` schedules of `given` (a bulk action's set), in its order."""
        def read() -> list[Schedule]:
            found: list[Schedule] = []
            after = None
            with self.db.connect() as conn:
                while len(found) < most:
                    page = listing.browse(conn, given, owner=self.owner, limit=min(listing.MAX_LIMIT, most - len(found)),
                                          after=after)
                    found += page.rows
                    if page.next_cursor is None:
                        break
                    after = page.next_cursor
            return found
        return await self._run(read)

    async def schedule(self, schedule_id: str) -> ScheduleDetail:
        """Raises `NotFound` for a schedule that is missing or not the caller's."""
        def read() -> ScheduleDetail:
            schedule = self.manager.get_or_raise(schedule_id, self.owner)
            now = datetime.now(UTC)
            try:
                fires = dst_marked(self.manager.next_slots(schedule_id, NEXT_FIRES, self.owner, after=now), now)
            except ValidationError as exc:  # a row agno wrote that our engine refuses (croniter's "5#3", a bad zone)
                fires, unreadable = [], exc.message
            else:
                unreadable = None
            attempts = self._attempts(schedule_id, RECENT_ATTEMPTS)
            with self.db.connect() as conn:
                failed = listing.failures(conn, schedule_id)
                in_flight = listing.open_attempts(conn, schedule_id)
            return ScheduleDetail(schedule, fires, attempts, failed, in_flight, unreadable)
        return await self._run(read)

    async def live(self, schedule_id: str, limit: int = RECENT_ATTEMPTS) -> Live:
        def read() -> Live:
            schedule = self.manager.get_or_raise(schedule_id, self.owner)
            attempts = self._attempts(schedule_id, limit)
            with self.db.connect() as conn:
                in_flight = listing.open_attempts(conn, schedule_id)
            return Live(schedule, attempts, in_flight)
        return await self._run(read)

    # --- runs, workflow runs, health (dash-runs: runs.py, health.py) ---------------------------

    async def recent_runs(self, *, status: str | None, failures_first: bool, window: str, page: int,
                          limit: int) -> RunsPage:
        return await self._run(lambda: RunHistory(self.db).recent(
            user_id=self.owner, status=status, failures_first=failures_first, window=window, page=page, limit=limit))

    async def workflow_run(self, workflow_id: str, run_id: str) -> RunTree:
        """Raises `NotFound` for a run that is missing, of another workflow or not the caller's."""
        def read() -> RunTree:
            found = step_tree.run_tree(self.db, run_id, workflow_id=workflow_id, user_id=self.owner,
                                       workflow=self.workflows.get(workflow_id))
            if found is None:
                raise NotFound(f"no run {run_id!r} of workflow {workflow_id!r}")
            return found
        return await self._run(read)

    async def workflow_run_mark(self, workflow_id: str, run_id: str) -> str | None:
        return await self._run(lambda: step_tree.run_mark(self.db, run_id, workflow_id=workflow_id,
                                                          user_id=self.owner))

    async def health(self, window: str) -> Health:
        return await self._run(lambda: RunHistory(self.db).health(user_id=self.owner, window=window))

    async def overdue(self) -> tuple[int, list[Overdue]]:
        return await self._run(lambda: RunHistory(self.db).overdue(user_id=self.owner))


@dataclass(frozen=True)
class SpanRow:
    """One span of a trace, with its depth in the tree (0: a root)."""

    span: dict[str, Any]
    depth: int


def span_tree(span_rows: list[dict[str, Any]]) -> list[SpanRow]:
    """Spans in tree order (each after its parent, siblings by start time), with depths."""
    children: dict[str | None, list[dict[str, Any]]] = {}
    known = {span["span_id"] for span in span_rows}
    for span in span_rows:  # already by start time
        parent = span.get("parent_span_id")
        children.setdefault(parent if parent in known else None, []).append(span)
    out: list[SpanRow] = []
    stack = [(span, 0) for span in reversed(children.get(None, []))]
    while stack:
        span, depth = stack.pop()
        out.append(SpanRow(span, depth))
        stack += [(child, depth + 1) for child in reversed(children.get(span["span_id"], []))]
    return out


class RunRecords:
    """What an attempt's run left, as agno keeps it (RunQueries): its session with its runs,
    and its trace; scoped to the caller as the API's session and trace routes are."""

    def __init__(self, queries: RunQueries, owner: str | None) -> None:
        self.queries = queries
        self.owner = owner

    async def component_run(self, run_type: str, component_id: str, run_id: str,
                            with_attempts: bool = True) -> tuple[StoredRun, list[tuple[ScheduleRun, str]]]:
        """An agent's or a team's run (RunStore.get, the API's read of it) and the schedule
        attempts that started it (each with its schedule's name); `NotFound` for a run that is missing, of another kind or
        component, or not the caller's (as GET /agents/{id}/runs/{run_id} answers)."""
        def read() -> tuple[StoredRun, list[tuple[ScheduleRun, str]]]:
            found = RunStore(self.queries.db).get(run_id)
            if (found is None or found.run_type != run_type or found.component_id != component_id
                    or (self.owner is not None and found.user_id != self.owner)):
                raise NotFound(f"{run_type} {component_id[:200]!r} has no run {run_id[:80]!r}")
            if not with_attempts:
                return found, []
            with self.queries.db.connect() as conn:
                return found, listing.attempts_of_run(conn, run_id, found.created_at, self.owner)
        return await asyncio.to_thread(read)

    async def session(self, session_id: str) -> dict[str, Any]:
        found = await asyncio.to_thread(self.queries.session, session_id, user_id=self.owner)
        if found is None:
            raise NotFound(f"no session with id {session_id}")
        return found

    async def trace_of_run(self, run_id: str) -> tuple[dict[str, Any], list[SpanRow]]:
        def read() -> tuple[dict[str, Any], list[SpanRow]]:
            listed = self.queries.traces(run_id=run_id, user_id=self.owner, limit=1)
            found = self.queries.trace(listed.data[0]["trace_id"], run_id=run_id) if listed.data else None
            if found is None:
                raise NotFound(f"no trace of run {run_id}")
            return found[0], span_tree(found[1])
        return await asyncio.to_thread(read)


def records_of(request: Request) -> RunRecords:
    """The session and trace reads of this request's caller."""
    return RunRecords(RunQueries(request.app.state.agent_os.db), scoped_user(request))


def reads_of(request: Request) -> Reads:
    """The reads of this request's caller, on the AgentOS the dashboard serves."""
    agent_os = request.app.state.agent_os
    return Reads(agent_os.manager, scoped_user(request), agent_os.targets.workflows)
