"""Worker liveness: every process that fires attempts keeps a heartbeat row in kern_workers.

Contract:
- A process is registered (its kern_workers row upserted) in the very transaction that
  takes its first attempt queued -> running (`register`, called by the fire task), and
  again whenever its own heart has not beaten for FRESH_S; from then on a daemon thread
  (`Heart`) refreshes heartbeat_at every HEARTBEAT_INTERVAL_S, each beat one short
  transaction of its own, on the database's clock.
- One worker id per process and one heart per (process, database): prefork children,
  the threads and solo pools and the worker embedded in a web process all fire through
  the same task, so each gets its heart on its first attempt. A forked child never
  inherits its parent's id or heart (`os.register_at_fork`).
- A database outage never ends the thread: a failed beat is logged once per outage and
  retried every RETRY_S until the database answers again.
- An attempt is lost when it has run for LOST_AFTER_S and its worker's heartbeat is older
  than LOST_AFTER_S or its row is gone (kern_tasks.scheduler.sweeps owns that rule).
  LOST_AFTER_S is six intervals, so a few missed beats (a slow database, a long GC
  pause) are not a death, and a call that is merely slow on a live worker never is.
- A sweeper trusts a worker's silence only after it has itself reached the database for
  LOST_AFTER_S without a failure (`Vigil`): after an outage that silenced everyone, the
  workers get LOST_AFTER_S to beat again before any of them is taken for dead.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import Connection, delete
from sqlalchemy.dialects import postgresql, sqlite

from kern_tasks.db.clock import epoch_now
from kern_tasks.db.tables import workers

if TYPE_CHECKING:
    from kern_tasks.db import Database

log = logging.getLogger("kern_tasks.liveness")

HEARTBEAT_INTERVAL_S = 5.0
LOST_AFTER_S = 30
# A heart that beat this recently needs no upsert in the transaction that takes an attempt.
FRESH_S = 2 * HEARTBEAT_INTERVAL_S
RETRY_S = 1.0
# kern_workers rows silent this long are deleted by beat (their attempts were lost long ago).
FORGET_AFTER_S = 24 * 3600

_w = workers


def _upsert(dialect: Any, worker_id: str) -> Any:
    values = dict(
        id=worker_id, hostname=socket.gethostname(), pid=os.getpid(), started_at=epoch_now(), heartbeat_at=epoch_now()
    )
    insert = dialect.insert(_w).values(**values)
    return insert.on_conflict_do_update(index_elements=[_w.c.id], set_={"heartbeat_at": epoch_now()})


# Invariant: a worker's heartbeat_at only moves forward while its process lives; the row
# is the worker's alone (its id is unique to the process), so beats never contend.
def beat_once(conn: Connection, worker_id: str) -> None:
    """Insert or refresh `worker_id`'s row, heartbeat_at = the database's now."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(_upsert(dialect, worker_id))


# Invariant: only rows silent for FORGET_AFTER_S go (far beyond LOST_AFTER_S, so no attempt
# of a living worker ever loses its row).
def forget_dead_workers(conn: Connection, *, now: int, older_than_s: int = FORGET_AFTER_S) -> int:
    """Delete workers silent for `older_than_s`; read through ix_kern_workers_heartbeat_at."""
    return conn.execute(delete(_w).where(_w.c.heartbeat_at < now - older_than_s)).rowcount


class Heart:
    """This process's heartbeat into one database, on a daemon thread (see the module)."""

    def __init__(self, db: "Database", worker_id: str, *, interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        self.worker_id = worker_id
        self.interval_s = interval_s
        self._db = weakref.ref(db)  # a disposed, forgotten Database ends the thread
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_beat: float | None = None  # monotonic time of the last committed beat
        self.failing = False

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def fresh(self) -> bool:
        """True when a beat committed within FRESH_S (the row is there and recent)."""
        last = self._last_beat
        return last is not None and time.monotonic() - last < FRESH_S

    def start(self) -> None:
        """Start the thread unless it runs (idempotent, thread-safe)."""
        with self._lock:
            if self.alive:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"kern-heartbeat:{self.worker_id}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def beat(self) -> bool:
        """One beat in a transaction of its own; False (logged) when the database failed."""
        db = self._db()
        if db is None:
            self._stop.set()
            return False
        try:
            with db.begin() as conn:
                beat_once(conn, self.worker_id)
        except Exception as exc:  # noqa: BLE001 - an outage (or anything) must not end the heart
            if not self.failing:
                log.warning("worker %s: heartbeat failed (%s: %s); retrying", self.worker_id, type(exc).__name__, exc)
            self.failing = True
            return False
        if self.failing:
            log.info("worker %s: heartbeat restored", self.worker_id)
        self.failing = False
        self._last_beat = time.monotonic()
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self.interval_s if self.beat() else min(RETRY_S, self.interval_s)
            self._stop.wait(wait)


# --- one worker id and one heart per database, per process ------------------------------------

_lock = threading.Lock()
_worker_id: str | None = None
_hearts: "weakref.WeakKeyDictionary[Database, Heart]" = weakref.WeakKeyDictionary()


def worker_id() -> str:
    """This process's worker id: hostname:pid:random (a reused pid is another worker)."""
    global _worker_id
    if _worker_id is None:
        with _lock:
            if _worker_id is None:
                _worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return _worker_id


def heart_for(db: "Database") -> Heart:
    """This process's heart for `db`, started (the thread beats at once)."""
    heart = _hearts.get(db)
    if heart is None:
        me = worker_id()  # takes _lock itself: not under it
        with _lock:
            heart = _hearts.get(db)
            if heart is None:
                heart = _hearts[db] = Heart(db, me)
    heart.start()
    return heart


def register(conn: Connection, heart: Heart) -> str:
    """In the transaction that takes an attempt: make sure the worker's row is there and
    fresh (an upsert only when the heart has not beaten lately); returns the worker id."""
    if not heart.fresh():
        beat_once(conn, heart.worker_id)
    return heart.worker_id


def _after_fork_in_child() -> None:
    # Threads do not survive a fork and a lock held at the fork would stay held: the child
    # starts from nothing and makes its own id and heart on its first attempt.
    global _lock, _worker_id, _hearts
    _lock = threading.Lock()
    _worker_id = None
    _hearts = weakref.WeakKeyDictionary()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Vigil:
    """A sweeper's own contact with the database: a worker's silence counts as death only
    once the sweeper has reached the database for LOST_AFTER_S without a failure."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, after_s: float = LOST_AFTER_S) -> None:
        self.clock, self.after_s = clock, after_s
        self._since: float | None = None

    def reached(self) -> None:
        """The database answered."""
        if self._since is None:
            self._since = self.clock()

    def failed(self) -> None:
        """The database did not answer: start over."""
        self._since = None

    def trusts_heartbeats(self) -> bool:
        return self._since is not None and self.clock() - self._since >= self.after_s
