"""Beat liveness: every beat replica keeps a heartbeat row in kern_beats, and whoever asks
"is beat alive?" reads it here (`kern-tasks health beat`, web's /health, alerts).

Write side (LeaseScheduler, kern_tasks/beat.py):
- `Heartbeat` is one replica's: its id (hostname:pid:random, new in every process),
  hostname and pid; started_at is its first write's time. `Heartbeat.record(conn)` upserts the row with
  tick_at = the database's now, at most once every TICK_EVERY_S (else it does nothing),
  in a transaction beat opens anyway (its sweep): one statement on one row, O(1), and
  the row is the replica's alone, so replicas never contend.
- A tick that fails (database down, a sweep that raised) rolls its heartbeat back with it:
  tick_at says when this replica last did a whole round of its work.
- A replica that stops cleanly deletes its row (`Heartbeat.remove`); rows silent for
  FORGET_AFTER_S are deleted by any replica's sweep (`forget_dead_beats`, through
  ix_kern_beats_tick_at).

Read side, one call for every reader:

    with db.connect() as conn:
        health = beat_health.read(conn)       # BeatHealth, on the database's clock
    health.newest_age_s                       # seconds since the newest tick; None: no replica
    health.alive(max_age_s=30)                # some replica ticked within 30 s
    health.replicas                           # BeatReplica rows, newest tick first
    health.reason(max_age_s=30)               # a line saying why not alive (None when alive)
    health.on_host("beat-1")                  # only that host's replicas (a container's own probe)

`read_database(db)` is the same from a `Database` (a connection of its own).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from kern_tasks.db.clock import db_now, epoch_now
from kern_tasks.db.tables import beats

if TYPE_CHECKING:
    from kern_tasks.db import Database

# At most one heartbeat write per replica per this many seconds.
TICK_EVERY_S = 1.0
# What `kern-tasks health beat` allows by default: beat sweeps every second, so 30 s of
# silence is a dead or wedged replica, not a slow round.
DEFAULT_MAX_AGE_S = 30
# kern_beats rows silent this long are deleted (the replica is long gone).
FORGET_AFTER_S = 24 * 3600

_b = beats


@dataclass(frozen=True)
class BeatReplica:
    """One replica's row, and how old its last tick is on the database's clock."""

    id: str
    hostname: str
    pid: int
    started_at: int
    tick_at: int
    age_s: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "hostname": self.hostname, "pid": self.pid, "started_at": self.started_at,
                "tick_at": self.tick_at, "age_s": self.age_s}


@dataclass(frozen=True)
class BeatHealth:
    """The replicas' heartbeats as read at `now` (the database's epoch seconds)."""

    now: int
    replicas: tuple[BeatReplica, ...]

    @property
    def newest_age_s(self) -> int | None:
        """Seconds since the newest tick of any replica; None when no replica has a row."""
        return self.replicas[0].age_s if self.replicas else None

    def on_host(self, hostname: str) -> "BeatHealth":
        """Only the replicas running on `hostname` (a per-container or per-pod probe)."""
        return BeatHealth(self.now, tuple(r for r in self.replicas if r.hostname == hostname))

    def alive(self, max_age_s: float = DEFAULT_MAX_AGE_S) -> bool:
        """True while some replica ticked within `max_age_s` seconds."""
        age = self.newest_age_s
        return age is not None and age <= max_age_s

    def reason(self, max_age_s: float = DEFAULT_MAX_AGE_S) -> str | None:
        """Why beat is not alive, in one line; None when it is."""
        if self.alive(max_age_s):
            return None
        if not self.replicas:
            return "no beat replica has recorded a heartbeat"
        newest = self.replicas[0]
        return (f"no beat replica ticked within {max_age_s:g} s: the newest tick, replica {newest.id}, "
                f"is {newest.age_s} s old ({len(self.replicas)} replica row(s))")

    def to_dict(self, max_age_s: float = DEFAULT_MAX_AGE_S) -> dict[str, Any]:
        return {"alive": self.alive(max_age_s), "max_age_s": max_age_s, "newest_age_s": self.newest_age_s,
                "now": self.now, "replicas": [r.to_dict() for r in self.replicas]}


def read(conn: Connection) -> BeatHealth:
    """Every replica's heartbeat, newest first (a handful of rows: dead ones are forgotten)."""
    now = db_now(conn)
    rows = conn.execute(select(_b).order_by(_b.c.tick_at.desc(), _b.c.id)).mappings().all()
    return BeatHealth(now, tuple(
        BeatReplica(r["id"], r["hostname"], int(r["pid"]), int(r["started_at"]), int(r["tick_at"]),
                    max(0, now - int(r["tick_at"])))
        for r in rows
    ))


def read_database(db: "Database") -> BeatHealth:
    """`read` on a connection of its own."""
    with db.connect() as conn:
        return read(conn)


# Invariant: only rows silent for FORGET_AFTER_S go; a living replica writes every second.
def forget_dead_beats(conn: Connection, *, now: int, older_than_s: int = FORGET_AFTER_S) -> int:
    """Delete replicas silent for `older_than_s`; read through ix_kern_beats_tick_at."""
    return conn.execute(delete(_b).where(_b.c.tick_at < now - older_than_s)).rowcount


class Heartbeat:
    """One beat replica's heartbeat (see the module). Construction does no I/O: Celery
    builds a scheduler just to print its banner."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, every_s: float = TICK_EVERY_S) -> None:
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.clock, self.every_s = clock, every_s
        self._last: float | None = None  # monotonic time of the last write (rolled back ones too)

    @property
    def recorded(self) -> bool:
        """True once a write was made (a replica that never ticked has no row to remove)."""
        return self._last is not None

    def due(self) -> bool:
        return self._last is None or self.clock() - self._last >= self.every_s

    def record(self, conn: Connection) -> bool:
        """Upsert this replica's row (tick_at = the database's now) unless one was written
        within `every_s`; True when it wrote."""
        if not self.due():
            return False
        dialect: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(_b).values(
            id=self.id, hostname=self.hostname, pid=self.pid, started_at=epoch_now(), tick_at=epoch_now()
        )
        conn.execute(insert.on_conflict_do_update(index_elements=[_b.c.id], set_={"tick_at": epoch_now()}))
        self._last = self.clock()
        return True

    def remove(self, conn: Connection) -> None:
        """This replica stops: its row goes (readers see beat gone at once, not after max-age)."""
        conn.execute(delete(_b).where(_b.c.id == self.id))
