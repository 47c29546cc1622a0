"""Who notices what, and when (the incidents' rules are incidents.py's):

- `Watch.check(db)`: the periodic look, every `interval_s` (ALERT_INTERVAL_S), run by
  every beat replica after its sweep (beat.py) and by every web process on a thread of its
  own (`WatchThread`, os/app.py's lifespan). Web is the one that sees every beat dead: it
  outlives them, and it is always deployed (it serves the API the fires call). One
  transaction of a few indexed reads:
    1. no beat: some schedule is enabled and no beat replica ticked within
       beat_max_age_s (beat_health) -> opens "no_beat"; a tick again resolves it;
    2. overdue: each enabled, unleased schedule whose next slot is older than the misfire
       grace (conditions.overdue_schedules) -> opens "overdue:<id>", at most
       MAX_OVERDUE_INCIDENTS of them at a time (when every beat died with 10,000 schedules,
       the no_beat incident says so, not 10,000 POSTs); claimed, disabled or deleted
       resolves it;
    3. failing: an open failure streak resolves once the schedule's latest outcome is not a
       failure, or it is disabled, deleted, or its alert_after_failures became 0.
- `fire_failed(db, schedule, notifier)`: called by the fire task after an attempt that did
  not succeed (never after a success: the hot path pays nothing): when the schedule's
  latest alert_after_failures slots all failed (conditions.failing_streak), opens
  "failing:<id>" with the newest slot and its error.

Announcing (a log warning, the webhook POST on a thread: webhook.py) happens after the
transaction commits, only by the process that opened or resolved the row. Nothing here
runs in beat's claim transaction, and no error here ever fails a tick or a fire.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any, Callable, Mapping

from sqlalchemy import Connection, exists, select, true
from sqlalchemy.exc import SQLAlchemyError

from kern_tasks import beat_health
from kern_tasks.alerts import conditions, incidents
from kern_tasks.alerts.incidents import DEFAULT_ALERT_AFTER_FAILURES, FAILING, NO_BEAT, OVERDUE, Incident
from kern_tasks.alerts.webhook import Notifier
from kern_tasks.db import Database, db_now
from kern_tasks.db.tables import schedules
from kern_tasks.scheduler.slots import DEFAULT_GRACE_S

log = logging.getLogger("kern_tasks.alerts")

ALERT_INTERVAL_S = 10.0
MAX_OVERDUE_INCIDENTS = 20

_s = schedules
Announcement = tuple[str, Incident]


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Watch:
    """The periodic check of one process (see the module docstring)."""

    def __init__(self, notifier: Notifier, *, interval_s: float = ALERT_INTERVAL_S, grace_s: int = DEFAULT_GRACE_S,
                 beat_max_age_s: float = beat_health.DEFAULT_MAX_AGE_S) -> None:  # fmt: skip
        self.notifier = notifier
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.beat_max_age_s = beat_max_age_s
        self._last: float | None = None

    def check_if_due(self, db: Database) -> None:
        if self._last is not None and time.monotonic() - self._last < self.interval_s:
            return
        self._last = time.monotonic()
        self.check(db)

    def check(self, db: Database) -> list[Announcement]:
        """One look; returns what this process announced. A database error is logged."""
        try:
            with db.begin() as conn:
                announcements = self._look(conn)
        except SQLAlchemyError as exc:
            log.warning("alerts: not checked (%s: %s)", type(exc).__name__, str(exc).splitlines()[0][:200])
            return []
        for event, incident in announcements:
            self.notifier.announce(event, incident)
        return announcements

    def _look(self, conn: Connection) -> list[Announcement]:
        now = db_now(conn)
        out: list[Announcement] = []
        out += self._no_beat(conn, now)
        out += self._overdue(conn, now)
        out += self._failing_resolved(conn, now)
        return out

    def _no_beat(self, conn: Connection, now: int) -> list[Announcement]:
        health = beat_health.read(conn)
        reason = health.reason(self.beat_max_age_s)
        wanted = reason is not None and conn.execute(select(exists().where(_s.c.enabled == true()))).scalar()
        if wanted:
            overdue = conditions.count_overdue(conn, now=now, grace_s=self.grace_s)
            opened = incidents.open_incident(
                conn, kind=NO_BEAT, now=now,
                message=f"{reason}; nothing claims due schedules ({overdue} overdue now)",
            )  # fmt: skip
            return [("opened", opened)] if opened else []
        return [("resolved", r) for i in incidents.open_incidents(conn, NO_BEAT)
                if (r := incidents.resolve(conn, i.id, now=now)) is not None]  # fmt: skip

    def _overdue(self, conn: Connection, now: int) -> list[Announcement]:
        out: list[Announcement] = []
        open_now = incidents.open_incidents(conn, OVERDUE)
        still = conditions.still_overdue(conn, [i.schedule_id for i in open_now if i.schedule_id], now=now,
                                         grace_s=self.grace_s)  # fmt: skip
        for incident in open_now:
            if incident.schedule_id not in still:
                resolved = incidents.resolve(conn, incident.id, now=now)
                if resolved is not None:
                    out.append(("resolved", resolved))
        room = MAX_OVERDUE_INCIDENTS - len(still)
        if room <= 0:
            return out
        for late in conditions.overdue_schedules(conn, now=now, grace_s=self.grace_s, limit=room + len(still)):
            if late.schedule_id in still:
                continue
            opened = incidents.open_incident(
                conn, kind=OVERDUE, now=now, schedule_id=late.schedule_id, schedule_name=late.name, slot=late.slot,
                message=f'schedule "{late.name}": its slot {_iso(late.slot)} is {now - late.slot}s overdue (misfire '
                        f"grace {self.grace_s}s) and no beat has claimed it",
            )  # fmt: skip
            if opened is not None:
                out.append(("opened", opened))
        return out

    def _failing_resolved(self, conn: Connection, now: int) -> list[Announcement]:
        out: list[Announcement] = []
        for incident in incidents.open_incidents(conn, FAILING):
            row = conn.execute(
                select(_s.c.enabled, _s.c.alert_after_failures).where(_s.c.id == incident.schedule_id)
            ).first()
            latest = conditions.latest_outcomes(conn, incident.schedule_id or "", 1)
            cleared = (
                row is None or not row.enabled or row.alert_after_failures == 0
                or (latest and latest[0].status not in conditions.FAILED)
            )
            if cleared and (resolved := incidents.resolve(conn, incident.id, now=now)) is not None:
                out.append(("resolved", resolved))
        return out


def threshold_of(schedule: Mapping[str, Any]) -> int:
    value = schedule.get("alert_after_failures")
    return DEFAULT_ALERT_AFTER_FAILURES if value is None else int(value)


def fire_failed(db: Database, schedule: Mapping[str, Any], notifier: Notifier) -> Incident | None:
    """After an attempt of `schedule` (its row) that did not succeed: open its failure
    streak's incident when its latest slots all failed. Never raises."""
    threshold = threshold_of(schedule)
    if threshold <= 0:
        return None
    try:
        with db.begin() as conn:
            streak = conditions.failing_streak(conn, schedule["id"], threshold)
            if streak is None:
                return None
            newest = streak[0]
            opened = incidents.open_incident(
                conn, kind=FAILING, now=db_now(conn), schedule_id=schedule["id"], schedule_name=schedule["name"],
                slot=newest.slot, last_error=newest.error,
                message=f'schedule "{schedule["name"]}": its last {threshold} slot(s) failed '
                        f"(newest {_iso(newest.slot) if newest.slot else '?'}: {newest.status})",
            )  # fmt: skip
    except SQLAlchemyError as exc:
        log.warning("alerts: failure streak of %s not checked (%s)", schedule.get("id"), type(exc).__name__)
        return None
    if opened is not None:
        notifier.announce("opened", opened)
    return opened


class WatchThread:
    """`Watch.check` every interval on a daemon thread (the web process's), until stopped."""

    def __init__(self, database: Callable[[], Database], watch: Watch) -> None:
        self.database, self.watch = database, watch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "WatchThread":
        self._thread = threading.Thread(target=self._run, name="kern-alert-watch", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.watch.interval_s):
            self.watch.check(self.database())

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
