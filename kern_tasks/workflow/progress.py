"""The one module that writes a workflow run's progress: kern_workflow_runs (one row per run)
and kern_workflow_steps (one row per step attempt, and one per recorded decision). Every
statement is a named function here, with the invariant it keeps written above it; the
tables are migration 0005's.

A step is named by its `path` in the run: the positions of the nodes around it, "/"-joined
("2/b1/0": top-level node 2, Parallel branch 1, its first node; a Loop's later iterations
continue its count). A decision of a Loop, Condition or Router is the container's path plus
"?end<i>", "?choose" or "?select" (replay.py makes both).

One step attempt's life (each arrow one conditional UPDATE or INSERT below):

    queue_steps ---> queued --take_step--> running --finish_step--> succeeded | failed (final)
                       ^                      |  --retry_step--> failed, + attempt+1 running
                       |                      +--expire_lost_steps--> lost, + attempt+1 queued
                       +-- republish_queued (a message that may be lost is sent again)
    queued | running --cancel_open_steps--> cancelled (the run was cancelled; never final)

- an attempt leaves "queued" once and "running" once, so a duplicate message, or the late
  result of a worker taken for lost, changes nothing;
- a step's outcome is its one `final` row; a step with a final row is never queued again,
  so a finished step never runs again;
- every write of a run's progress happens with its run row locked (`lock_run`), so
  decisions and the steps queued after them are taken by one transaction at a time.

The run as agno keeps it (agno_runs, agno_sessions, a span per attempt) is record.py's,
written by tasks.py around these statements.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger, Boolean, Column, Connection, Float, ForeignKey, Index, RowMapping, String, Table, Text, and_,
    bindparam, exists, false, func, or_, select, text, update,
)


from kern_tasks.db.clock import db_clock
from kern_tasks.db.tables import JSONType, metadata, workers
from kern_tasks.firing.liveness import LOST_AFTER_S

# A running run with no open step this long has lost its advance message (never sent, or
# its worker died before committing anything): the sweep sends it again.
STALLED_AFTER_S = 10.0
# A queued step whose message went out this long ago may have lost it: sent again.
REPUBLISH_AFTER_S = 30.0
# A lost worker is not the step's fault: this many lost attempts per step are free.
FREE_LOST_ATTEMPTS = 1
RUNNING, COMPLETED, ERROR, CANCELLED = "RUNNING", "COMPLETED", "ERROR", "CANCELLED"

runs = Table(
    "kern_workflow_runs",
    metadata,
    Column("run_id", String, primary_key=True),
    Column("workflow_id", String, nullable=False),
    Column("session_id", String, nullable=False),
    Column("user_id", String),
    Column("status", String, nullable=False),  # RUNNING, then COMPLETED, ERROR or CANCELLED (agno's values)
    Column("request", JSONType, nullable=False),  # input, additional_data, media, metadata
    Column("session_state", JSONType),  # the run's state, changes of each finished step merged in
    Column("result", JSONType),  # the run's to_dict() once it ended
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
Index("ix_kern_workflow_runs_open", runs.c.updated_at, postgresql_where=text("status = 'RUNNING'"),
      sqlite_where=text("status = 'RUNNING'"))

steps = Table(
    "kern_workflow_steps",
    metadata,
    Column("id", String, primary_key=True),
    Column("run_id", String, ForeignKey("kern_workflow_runs.run_id", ondelete="CASCADE"), nullable=False),
    Column("path", String, nullable=False),
    Column("attempt", BigInteger, nullable=False),  # from 1; 0 for a decision
    Column("status", String, nullable=False),  # queued, running, succeeded, failed, lost, cancelled, decided
    Column("final", Boolean, nullable=False, server_default=false()),  # the step's outcome
    Column("worker_id", String),  # kern_workers.id of the worker that took it
    Column("output", JSONType),  # StepOutput.to_dict(); a decision's {"value": ...}
    Column("error", Text),
    Column("executor_runs", JSONType),  # agent / nested workflow runs, as agno keeps them
    Column("enqueued_at", Float),
    Column("started_at", Float),
    Column("ended_at", Float),
)
Index("uq_kern_workflow_steps_attempt", steps.c.run_id, steps.c.path, steps.c.attempt, unique=True)
Index("ix_kern_workflow_steps_open", steps.c.status, steps.c.enqueued_at,
      postgresql_where=text("status IN ('queued', 'running')"),
      sqlite_where=text("status IN ('queued', 'running')"))

_OPEN = ("queued", "running")


@dataclass(frozen=True)
class Outcome:
    """A finished step: its output (None when it raised) or the error it raised."""

    output: dict[str, Any] | None
    error: str | None
    executor_runs: list[dict[str, Any]] | None = None


@dataclass
class Progress:
    """What a run has done so far: outcomes and decisions by path, open paths, the paths
    an attempt of which has started (taken by a worker), and those cancelled."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    decisions: dict[str, Any] = field(default_factory=dict)
    open: set[str] = field(default_factory=set)
    last_attempt: dict[str, int] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)
    cancelled: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Taken:
    """A step attempt this worker now runs: its row id, number, and the tries left."""

    row_id: str
    attempt: int
    tries_left: int


# Invariant: a run row is made once, RUNNING, before any message about it is sent.
def create_run(conn: Connection, *, run_id: str, workflow_id: str, session_id: str, user_id: str | None,
               request: dict[str, Any], session_state: dict[str, Any] | None, now: float) -> None:
    conn.execute(runs.insert().values(
        run_id=run_id, workflow_id=workflow_id, session_id=session_id, user_id=user_id, status=RUNNING,
        request=request, session_state=session_state, created_at=now, updated_at=now,
    ))


# Invariant: whoever writes a run's progress holds its row (FOR UPDATE on Postgres; SQLite
# serialises writers with its database lock, taken by the first write of the transaction).
def lock_run(conn: Connection, run_id: str) -> RowMapping | None:
    """The run's row, locked until the transaction ends; None when there is no such run."""
    if conn.dialect.name == "sqlite":
        # Take the write lock now, so no other writer reads the same progress meanwhile.
        conn.execute(_SQLITE_WRITE_LOCK, {"r_run_id": run_id})
    return conn.execute(_LOCK_RUN, {"r_run_id": run_id}).mappings().first()


# Built once (every step runs these): building and cache-keying a statement costs more CPU than sending it.
_GET_RUN = select(runs).where(runs.c.run_id == bindparam("r_run_id"))
_READ_RUN = select(runs, db_clock().label("db_now")).where(runs.c.run_id == bindparam("r_run_id"))
_LOCK_TOUCH_RUN = (update(runs).where(runs.c.run_id == bindparam("r_run_id")).values(updated_at=db_clock())
                   .returning(*runs.c))
_LOCK_RUN = _GET_RUN.with_for_update()
_SQLITE_WRITE_LOCK = update(runs).where(runs.c.run_id == bindparam("r_run_id")).values(updated_at=runs.c.updated_at)
_TOUCH_RUN = update(runs).where(runs.c.run_id == bindparam("r_run_id")).values(updated_at=bindparam("r_now"))


def get_run(conn: Connection, run_id: str) -> RowMapping | None:
    """Read only: the run's row as it is."""
    return conn.execute(_GET_RUN, {"r_run_id": run_id}).mappings().first()


def read_run(conn: Connection, run_id: str) -> tuple[RowMapping | None, float | None]:
    """Read only: the run's row as it is and the database's clock, in one statement
    ((None, None) when there is no such run)."""
    row = conn.execute(_READ_RUN, {"r_run_id": run_id}).mappings().first()
    return (row, float(row["db_now"])) if row is not None else (None, None)


# Invariant: as lock_run (an UPDATE holds the row as FOR UPDATE does; on SQLite it takes the
# database's write lock), the run touched (its updated_at the database's clock, which every
# advance does anyway) in the same statement.
def lock_and_touch_run(conn: Connection, run_id: str) -> RowMapping | None:
    """The run's row, locked until the transaction ends, its updated_at now the database's
    clock (the transaction's `now`); None when there is no such run."""
    return conn.execute(_LOCK_TOUCH_RUN, {"r_run_id": run_id}).mappings().first()


_LOAD_COLUMNS = (steps.c.path, steps.c.attempt, steps.c.status, steps.c.final, steps.c.output, steps.c.error,
                 steps.c.executor_runs, steps.c.started_at)
_LOAD = select(*_LOAD_COLUMNS).where(steps.c.run_id == bindparam("l_run_id"))
# Postgres: the run's row, the clock and its progress in one statement (the progress rows
# as one JSON array of arrays in _LOAD_COLUMNS' order; a step task's first read).
_READ_RUN_AND_PROGRESS = select(
    runs, db_clock().label("db_now"),
    select(func.json_agg(func.json_build_array(*_LOAD_COLUMNS))).where(steps.c.run_id == runs.c.run_id)
    .scalar_subquery().label("progress_rows"),
).where(runs.c.run_id == bindparam("r_run_id"))
# The same, and the rest of the transaction commits without waiting for its WAL flush
# (set_config(..., true) is SET LOCAL), for the transaction that takes an attempt.
#
# Invariant: an outcome is never lost once its transaction committed; a take may be. The
# transaction that takes an attempt (queued -> running) writes nothing else of the run's
# progress, so it may commit without waiting: visible to every other transaction at once, as
# any commit (a duplicate message still finds the attempt taken), durable within three of
# Postgres's wal_writer_delay (0.6 s by default) and before any later commit that waits (the
# outcome's). Only a crash of the database server inside that window forgets a take: the
# attempt is queued again and the step runs again, as after a lost worker (at least once per step); a finished step never
# runs again, since its outcome's commit waited and so made the take durable too.
_READ_RUN_AND_PROGRESS_ASYNC = _READ_RUN_AND_PROGRESS.add_columns(
    func.set_config("synchronous_commit", "off", True).label("async_commit"))


def _progress_of(rows: Iterable[Sequence[Any]]) -> Progress:
    """Progress from rows of _LOAD_COLUMNS, in any order."""
    progress = Progress()
    for path, attempt, status, final, output, error, executor_runs, started_at in rows:
        progress.last_attempt[path] = max(progress.last_attempt.get(path, 0), attempt)
        if attempt > 0 and started_at is not None:
            progress.started.add(path)
        if status == "cancelled":
            progress.cancelled.add(path)
        elif status == "decided":
            progress.decisions[path] = (output or {}).get("value")
        elif final:
            progress.outcomes[path] = Outcome(output, error, executor_runs)
        elif status in _OPEN:
            progress.open.add(path)
    return progress


def load_progress(conn: Connection, run_id: str) -> Progress:
    """Read only: the run's outcomes, decisions and open steps."""
    return _progress_of(conn.execute(_LOAD, {"l_run_id": run_id}))


def read_run_and_progress(conn: Connection, run_id: str, *, without_waiting: bool = False,
                          ) -> tuple[RowMapping | None, float | None, Progress]:
    """Read only: `read_run` and `load_progress` (on Postgres in one statement); (None,
    None, empty progress) when there is no such run. `without_waiting` (Postgres; the
    take's transaction): the transaction's commit will not wait for its WAL flush."""
    if conn.dialect.name != "postgresql":
        row, now = read_run(conn, run_id)
        return row, now, load_progress(conn, run_id) if row is not None else Progress()
    statement = _READ_RUN_AND_PROGRESS_ASYNC if without_waiting else _READ_RUN_AND_PROGRESS
    row = conn.execute(statement, {"r_run_id": run_id}).mappings().first()
    if row is None:
        return None, None, Progress()
    found = row["progress_rows"]
    return row, float(row["db_now"]), _progress_of(json.loads(found) if isinstance(found, str) else found or [])


# Invariant: a decision is recorded once (the unique (run, path, attempt 0) row) and only
# under the run's lock, so every replay after it takes the same branch.
def record_decisions(conn: Connection, run_id: str, decisions: dict[str, Any], *, now: float) -> None:
    for path, value in decisions.items():
        conn.execute(steps.insert().values(
            id=str(uuid.uuid4()), run_id=run_id, path=path, attempt=0, status="decided", final=True,
            output={"value": value}, started_at=now, ended_at=now,
        ))


# Invariant: a step is queued only while it has neither an open attempt nor an outcome;
# called under the run's lock, with the progress read under it.
def queue_steps(conn: Connection, run_id: str, paths: set[str], progress: Progress, *, now: float) -> list[str]:
    """Queue the next attempt of each path that needs one; returns the paths queued."""
    queued = [path for path in sorted(paths) if path not in progress.open and path not in progress.outcomes]
    if queued:  # one executemany: a Parallel's branches in one round trip (insertmanyvalues)
        conn.execute(steps.insert(), [
            {"id": str(uuid.uuid4()), "run_id": run_id, "path": path,
             "attempt": progress.last_attempt.get(path, 0) + 1, "status": "queued", "enqueued_at": now}
            for path in queued
        ])
    return queued


def _earlier(status: str) -> Any:
    """How many attempts of the step being updated ended `status` (read in its UPDATE's
    RETURNING: the statement's snapshot, before this row leaves queued)."""
    prior = steps.alias("prior")
    return (select(func.count()).where(prior.c.run_id == steps.c.run_id, prior.c.path == steps.c.path,
                                       prior.c.attempt > 0, prior.c.status == status).scalar_subquery())


# Built once: building and cache-keying a statement costs more CPU than sending it.
_TAKE = (
    update(steps)
    .where(steps.c.run_id == bindparam("t_run_id"), steps.c.path == bindparam("t_path"), steps.c.status == "queued")
    .values(status="running", worker_id=bindparam("t_worker_id"), started_at=bindparam("t_now"))
    .returning(steps.c.id, steps.c.attempt, _earlier("failed"), _earlier("lost"))
)


# Invariant: queued -> running once (a conditional UPDATE), stamped with the worker that takes it.
def take_step(conn: Connection, run_id: str, path: str, *, worker_id: str, max_tries: int, now: float) -> Taken | None:
    """Take the step's queued attempt; None when there is none (a duplicate message, a
    step already running or finished). Its tries left: `max_tries` less the failed
    attempts and the lost ones beyond FREE_LOST_ATTEMPTS, counted in the same statement."""
    row = conn.execute(_TAKE, {"t_run_id": run_id, "t_path": path, "t_worker_id": worker_id, "t_now": now}).first()
    if row is None:
        return None
    used = int(row[2]) + max(0, int(row[3]) - FREE_LOST_ATTEMPTS)
    return Taken(row_id=row[0], attempt=int(row[1]), tries_left=max(1, max_tries - used))


# Invariant: running -> failed once; the next attempt is a new row, running on this worker.
def retry_step(conn: Connection, run_id: str, path: str, taken: Taken, *, error: str, worker_id: str,
               now: float) -> Taken | None:
    """Record the attempt's error and start the next one; None when the attempt was no
    longer running (taken for lost: its retry belongs to whoever takes that)."""
    ended = conn.execute(
        update(steps).where(steps.c.id == taken.row_id, steps.c.status == "running")
        .values(status="failed", error=error, ended_at=now)
    ).rowcount
    if not ended:
        return None
    row_id = str(uuid.uuid4())
    conn.execute(steps.insert().values(
        id=row_id, run_id=run_id, path=path, attempt=taken.attempt + 1, status="running", worker_id=worker_id,
        started_at=now,
    ))
    return Taken(row_id=row_id, attempt=taken.attempt + 1, tries_left=taken.tries_left - 1)


_FINISH = (
    update(steps).where(steps.c.id == bindparam("f_id"), steps.c.status == "running")
    .values(status=bindparam("f_status"), final=True, ended_at=bindparam("f_now"), error=bindparam("f_error"),
            output=bindparam("f_output", type_=JSONType), executor_runs=bindparam("f_executor_runs", type_=JSONType))
)


# Invariant: running -> an outcome once (a conditional UPDATE): the step's one final row.
def finish_step(conn: Connection, taken: Taken, outcome: Outcome, *, now: float) -> bool:
    """Record the step's outcome; False when the attempt was no longer running."""
    return bool(conn.execute(_FINISH, {
        "f_id": taken.row_id, "f_now": now, "f_output": outcome.output, "f_error": outcome.error,
        "f_executor_runs": outcome.executor_runs,
        "f_status": "succeeded" if outcome.output is not None and outcome.output.get("success", True) else "failed",
    }).rowcount)


# Invariant: a step's changes to the session state join the run's under the run's lock
# (top-level keys: set ones replace, removed ones go), so parallel branches keep each other's.
def merge_state(conn: Connection, run_id: str, state: dict[str, Any] | None, changed: dict[str, Any],
                removed: set[str], *, now: float) -> dict[str, Any] | None:
    if not changed and not removed:
        return state
    merged = {k: v for k, v in (state or {}).items() if k not in removed}
    merged.update(changed)
    conn.execute(update(runs).where(runs.c.run_id == run_id).values(session_state=merged, updated_at=now))
    return merged


def touch_run(conn: Connection, run_id: str, *, now: float) -> None:
    conn.execute(_TOUCH_RUN, {"r_run_id": run_id, "r_now": now})


# Invariant: a run's dict is written (still RUNNING) before agno's record of its end, and
# the run ends only after that record: an end interrupted in between is a RUNNING run with
# nothing open, which the sweep advances again (agno's record of an end is idempotent).
def record_result(conn: Connection, run_id: str, result: dict[str, Any], *, now: float) -> None:
    conn.execute(update(runs).where(runs.c.run_id == run_id, runs.c.status == RUNNING)
                 .values(result=result, updated_at=now))


# Invariant: RUNNING -> COMPLETED | ERROR | CANCELLED once, with the run's dict; a later advance finds
# the run ended and does nothing.
def finish_run(conn: Connection, run_id: str, *, status: str, result: dict[str, Any], now: float) -> bool:
    return bool(conn.execute(
        update(runs).where(runs.c.run_id == run_id, runs.c.status == RUNNING)
        .values(status=status, result=result, updated_at=now)
    ).rowcount)


# --- the sweep (beat) ------------------------------------------------------------------------


# Invariant: an attempt is "running" only while its worker may still report on it: one
# whose worker has not beaten for LOST_AFTER_S (or whose row is gone), running that long,
# ends "lost" and its step gets a queued attempt (within LOST_AFTER_S + a sweep of the loss).
def expire_lost_steps(conn: Connection, *, now: float, limit: int) -> list[tuple[str, str]]:
    """End lost attempts; returns the (run_id, path) queued again, to publish."""
    silent = or_(workers.c.heartbeat_at.is_(None), workers.c.heartbeat_at <= now - LOST_AFTER_S)
    lost = conn.execute(
        select(steps.c.id, steps.c.run_id, steps.c.path, steps.c.attempt)
        .outerjoin(workers, workers.c.id == steps.c.worker_id)
        .where(steps.c.status == "running", steps.c.started_at <= now - LOST_AFTER_S, silent)
        .limit(limit).with_for_update(of=steps, skip_locked=True)
    ).all()
    queued = []
    for row_id, run_id, path, attempt in lost:
        conn.execute(update(steps).where(steps.c.id == row_id, steps.c.status == "running").values(
            status="lost", ended_at=now, error="no heartbeat from its worker: the worker was lost"))
        conn.execute(steps.insert().values(
            id=str(uuid.uuid4()), run_id=run_id, path=path, attempt=attempt + 1, status="queued", enqueued_at=now,
        ))
        queued.append((run_id, path))
    return queued


# Invariant: every queued step is in the broker at least once: one sent REPUBLISH_AFTER_S
# ago and still queued is sent again (a duplicate is harmless: take_step is conditional).
def republish_queued(conn: Connection, *, now: float, limit: int,
                     after_s: float = REPUBLISH_AFTER_S) -> list[tuple[str, str]]:
    rows = conn.execute(
        update(steps).where(steps.c.id.in_(
            select(steps.c.id).where(steps.c.status == "queued", steps.c.enqueued_at <= now - after_s).limit(limit)
        )).values(enqueued_at=now).returning(steps.c.run_id, steps.c.path)
    ).all()
    return [(run_id, path) for run_id, path in rows]


# Invariant: a RUNNING run always has a step open or an advance in flight: one with neither
# for STALLED_AFTER_S is advanced again (advancing twice is harmless: it is under the lock).
def stalled_runs(conn: Connection, *, now: float, limit: int, after_s: float = STALLED_AFTER_S) -> list[str]:
    open_step = exists().where(and_(steps.c.run_id == runs.c.run_id, steps.c.status.in_(_OPEN)))
    rows = conn.execute(
        update(runs).where(runs.c.run_id.in_(
            select(runs.c.run_id).where(runs.c.status == RUNNING, runs.c.updated_at <= now - after_s, ~open_step)
            .limit(limit)
        )).values(updated_at=now).returning(runs.c.run_id)
    ).all()
    return [row[0] for row in rows]


# --- cancel --------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Interrupted:
    """A step attempt a cancel ended: its path, number, and whether a worker had it."""

    path: str
    attempt: int
    was_running: bool


# Invariant: a cancel ends every open attempt of the run (queued or running -> cancelled, not
# final) under the run's lock, in the transaction that records the run's CANCELLED dict, so
# no attempt of the run is taken afterwards (take_step wants "queued") and a worker still
# running one changes nothing when it ends (finish_step and retry_step want "running"); the
# sweep looks at queued and running attempts only, so it never re-drives them.
def cancel_open_steps(conn: Connection, run_id: str, *, now: float, reason: str) -> list[Interrupted]:
    rows = conn.execute(
        update(steps).where(steps.c.run_id == run_id, steps.c.status.in_(_OPEN))
        .values(status="cancelled", error=reason, ended_at=now)
        .returning(steps.c.path, steps.c.attempt, steps.c.started_at)
    ).all()
    return sorted(Interrupted(path, int(attempt), started is not None) for path, attempt, started in rows)


def is_cancelling(row: RowMapping | dict[str, Any]) -> bool:
    """A RUNNING run whose CANCELLED dict is recorded: a cancel whose end is not recorded
    yet (an advance ends it as cancelled, never replays it)."""
    return row["status"] == RUNNING and (row["result"] or {}).get("status") == CANCELLED


# --- reading a run's progress as it goes (events.py) ---------------------------------------


def progress_mark(conn: Connection, run_id: str) -> tuple[Any, ...]:
    """Read only, one cheap query: a value that changes whenever the run's progress does
    (its status, a row added, an attempt taken or ended)."""
    mine = steps.c.run_id == runs.c.run_id
    row = conn.execute(select(
        runs.c.status, runs.c.updated_at,
        *(select(func.count(column)).where(mine).scalar_subquery()
          for column in (steps.c.id, steps.c.started_at, steps.c.ended_at)),
    ).where(runs.c.run_id == run_id)).first()
    return tuple(row) if row is not None else ()


def attempts(conn: Connection, run_id: str) -> list[RowMapping]:
    """Read only: every step attempt of the run (not decisions), in path and attempt order."""
    return list(conn.execute(
        select(steps).where(steps.c.run_id == run_id, steps.c.attempt > 0).order_by(steps.c.path, steps.c.attempt)
    ).mappings())
