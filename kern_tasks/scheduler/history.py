"""The read side of attempts across schedules, for the people who watch them (the
dashboard's runs and health pages): recent attempts, and the fires, lag and overdue
schedules of the last hour or day. Nothing here writes.

    history = RunHistory(db)
    found = history.recent(user_id="u1", failures_first=True, window="24h", page=1, limit=50)
    picture = history.health(user_id=None, window="1h")   # Health: one Bucket a minute
    late = history.overdue(user_id=None, limit=10)        # enabled schedules past their slot

Promises:
- `user_id` scopes every read to that owner's rows (the attempts stamped with it, the
  schedules it owns); None is every owner's (the caller decides: os/auth.scoped_user);
- `window` is one of WINDOWS; anything else is a ValidationError naming `window` (as are a
  bad status, page or limit), raised before any query;
- `recent` reads one page and one row more (whether a next page exists): no count of a
  large table; newest first (created_at, then id, so pages never overlap), walking the
  created_at index; failures (FAILURES) first on demand as two walks, the failures' (from
  the status index) then the rest's, never a sort of the whole window (a count of the
  window's failures only for a page past them all);
- `health` is one grouped statement over the window's rows, found by the created_at index
  (the user_id index for one owner): rows per bucket (epoch arithmetic, the same on
  Postgres and SQLite) with a count per status, the fire lag of the slots' first attempts
  (their start minus their slot; backfilled slots are late on purpose and left out) and
  the number of schedules that had a slot start OVERDUE_AFTER_S late or not at all
  (skipped, or still queued past it). Buckets that ended SETTLED_AFTER_S ago hardly change
  (their attempts ended; a retry is a row of its own, in a later bucket): each process
  keeps them for CACHE_S, so the day's picture, once read whole, reads only its last hour
  of rows (a picture is at most CACHE_S behind for its settled part).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Connection, String, and_, bindparam, case, cast, func, null, or_, select, union_all

from kern_tasks.db import Database, db_now
from kern_tasks.db.tables import SCHEDULE_STATUSES, schedule_runs, schedules
from kern_tasks.errors import ValidationError
from kern_tasks.scheduler.endpoints import target_of
from kern_tasks.scheduler.rows import owned_by

# What the pages offer: the span read, and the width of one health bucket in it.
WINDOWS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
HEALTH_WINDOWS = {"1h": 60, "24h": 900}  # window -> bucket seconds (60 buckets, 96 buckets)
# The statuses of an attempt that went wrong: what "failures first" lifts to the top.
FAILURES = ("failed", "timeout", "retrying")
# A slot whose first attempt starts this much after it (or never) counts as overdue.
OVERDUE_AFTER_S = 60
MAX_LIMIT = 200
SETTLED_AFTER_S = 3600
CACHE_S = 300.0
CACHE_KEYS = 512  # (database, owner, bucket width) pictures kept per process, least recently used dropped

_r = schedule_runs
_s = schedules


@dataclass(frozen=True)
class RecentRun:
    """One attempt, with what the page shows of its schedule."""

    id: str
    schedule_id: str
    schedule_name: str
    endpoint: str
    attempt: int
    status: str
    created_at: int
    scheduled_for: int | None
    triggered_at: int | None
    completed_at: int | None
    status_code: int | None
    run_id: str | None
    session_id: str | None
    error: str | None
    manual: bool
    backfill: bool
    user_id: str | None
    target_type: str | None = None
    target_id: str | None = None

    @property
    def duration_s(self) -> int | None:
        if self.triggered_at is None or self.completed_at is None:
            return None
        return max(0, self.completed_at - self.triggered_at)

    @property
    def failed(self) -> bool:
        return self.status in FAILURES


@dataclass(frozen=True)
class RunsPage:
    """A page of recent attempts and whether another follows."""

    runs: list[RecentRun]
    page: int
    limit: int
    has_next: bool


@dataclass(frozen=True)
class Bucket:
    """One bucket of the health picture: attempts by status, the lag of first attempts."""

    start: int
    counts: dict[str, int] = field(default_factory=dict)
    lag_count: int = 0
    lag_avg_s: float | None = None
    lag_max_s: int | None = None
    overdue: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class _Sums:
    counts: dict[str, int] = field(default_factory=dict)
    lag_count: int = 0
    lag_sum: int = 0
    lag_max: int | None = None
    overdue: int = 0


class _SettledBuckets:
    """Per process: the settled buckets of recent pictures, by (database, owner, width)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: OrderedDict[tuple[Any, ...], tuple[float, int, dict[int, _Sums]]] = OrderedDict()

    def fill(self, key: tuple[Any, ...], buckets: dict[int, _Sums], start: int) -> int:
        """Put the kept buckets from `start` on into `buckets`; where the read must begin."""
        with self._lock:
            found = self._kept.get(key)
            if found is None or found[0] < time.monotonic():
                return start
            _, until, kept = found
            self._kept.move_to_end(key)
        if until <= start:
            return start
        for at, sums in kept.items():
            if at in buckets:
                buckets[at] = sums
        return until

    def keep(self, key: tuple[Any, ...], buckets: dict[int, _Sums], start: int, settled: int) -> None:
        """Keep the buckets before `settled`; the first keep of a key sets its expiry."""
        kept = {at: sums for at, sums in buckets.items() if at < settled}
        if not kept:
            return
        with self._lock:
            found = self._kept.get(key)
            expires = found[0] if found is not None and found[0] >= time.monotonic() else time.monotonic() + CACHE_S
            self._kept[key] = (expires, settled, kept)
            self._kept.move_to_end(key)
            while len(self._kept) > CACHE_KEYS:
                self._kept.popitem(last=False)


_SETTLED = _SettledBuckets()


@dataclass(frozen=True)
class Health:
    """The window's buckets, oldest first, every one present (empty ones too)."""

    window: str
    bucket_s: int
    start: int
    end: int
    buckets: list[Bucket]

    def totals(self) -> dict[str, int]:
        summed: dict[str, int] = {}
        for bucket in self.buckets:
            for status, n in bucket.counts.items():
                summed[status] = summed.get(status, 0) + n
        return summed


@dataclass(frozen=True)
class Overdue:
    """An enabled schedule whose next slot passed OVERDUE_AFTER_S ago or more."""

    id: str
    name: str
    next_run_at: int
    late_s: int
    user_id: str | None


def check_window(window: str, allowed: dict[str, int] = WINDOWS) -> int:
    if window not in allowed:
        raise ValidationError("window", f"must be one of {', '.join(allowed)} (got {window!r})")
    return allowed[window]


def check_paging(page: int, limit: int) -> None:
    if page < 1:
        raise ValidationError("page", f"must be 1 or more (got {page})")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError("limit", f"must be between 1 and {MAX_LIMIT} (got {limit})")


def check_status(status: str | None) -> None:
    if status is not None and status not in SCHEDULE_STATUSES:
        raise ValidationError("status", f"must be one of {', '.join(SCHEDULE_STATUSES)} (got {status!r})")


def _owned(user_id: str | None) -> list[ColumnElement[bool]]:
    return [] if user_id is None else [_r.c.user_id == user_id]


class RunHistory:
    """Read queries over one database's attempts. Thread-safe; cheap to construct."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def recent(self, *, user_id: str | None, status: str | None = None, failures_first: bool = False,
               window: str = "24h", page: int = 1, limit: int = 50) -> RunsPage:
        """A page of the window's attempts (see the module docstring)."""
        span = check_window(window)
        check_status(status)
        check_paging(page, limit)
        offset, wanted = (page - 1) * limit, limit + 1
        with self.db.connect() as conn:
            since = db_now(conn) - span
            where = [_r.c.created_at >= since, *_owned(user_id), *([] if status is None else [_r.c.status == status])]
            if not failures_first or status is not None:
                rows = _page(conn, where, offset, wanted)
            else:
                # Two walks newest first, never a sort of the window: the failures (the status
                # index), then the rest (the created_at index) from where the failures end.
                failed = [*where, _r.c.status.in_(FAILURES)]
                rows = _page(conn, failed, offset, wanted)
                if len(rows) < wanted:
                    before = offset + len(rows) if rows else _count(conn, failed)
                    rows += _page(conn, [*where, _r.c.status.not_in(FAILURES)], max(0, offset - before),
                                  wanted - len(rows))
        found = []
        for row in rows[:limit]:
            target_type, target_id = target_of(row["endpoint"])
            found.append(RecentRun(**row, target_type=target_type, target_id=target_id))
        return RunsPage(runs=found, page=page, limit=limit, has_next=len(rows) > limit)

    def health(self, *, user_id: str | None, window: str = "1h") -> Health:
        """The window's fires, lag and overdue schedules, one Bucket per HEALTH_WINDOWS
        step (see the module docstring)."""
        bucket_s = check_window(window, HEALTH_WINDOWS)
        span = WINDOWS[window]
        key = (self.db.url.render_as_string(hide_password=True), self.db.schema, user_id, bucket_s)
        with self.db.connect() as conn:
            now = db_now(conn)
            end = now - now % bucket_s + bucket_s  # the current bucket included
            start = end - span
            settled = end - SETTLED_AFTER_S - (end - SETTLED_AFTER_S) % bucket_s
            buckets = {at: _Sums() for at in range(start, end, bucket_s)}
            since = _SETTLED.fill(key, buckets, start)
            rows = conn.execute(_health_query(bucket_s, user_id), {"since": since, "now": now}).mappings().all()
        for row in rows:
            sums = buckets.get(int(row["bucket"]))
            if sums is None:
                continue  # a row created after `end` (a clock step): not in the picture
            if row["status"] is None:
                sums.overdue = int(row["overdue"] or 0)
                continue
            sums.counts[row["status"]] = int(row["n"])
            sums.lag_count += int(row["lag_count"] or 0)
            sums.lag_sum += int(row["lag_sum"] or 0)
            if row["lag_max"] is not None:
                peak = int(row["lag_max"])
                sums.lag_max = peak if sums.lag_max is None else max(sums.lag_max, peak)
        _SETTLED.keep(key, buckets, start, settled)
        found = [Bucket(start=at, counts=sums.counts, lag_count=sums.lag_count,
                        lag_avg_s=sums.lag_sum / sums.lag_count if sums.lag_count else None, lag_max_s=sums.lag_max,
                        overdue=sums.overdue) for at, sums in buckets.items()]
        return Health(window=window, bucket_s=bucket_s, start=start, end=end, buckets=found)

    def overdue(self, *, user_id: str | None, limit: int = 10) -> tuple[int, list[Overdue]]:
        """(how many enabled schedules are OVERDUE_AFTER_S or more past their next slot, the
        `limit` latest of them), from the (user_id,) enabled, next_run_at indexes."""
        check_paging(1, limit)
        with self.db.connect() as conn:
            now = db_now(conn)
            where = and_(_s.c.enabled.is_(True), _s.c.next_run_at <= now - OVERDUE_AFTER_S, *owned_by(user_id))
            total = conn.execute(select(func.count()).select_from(_s).where(where)).scalar_one()
            rows = conn.execute(select(_s.c.id, _s.c.name, _s.c.next_run_at, _s.c.user_id).where(where)
                                .order_by(_s.c.next_run_at.asc(), _s.c.id.asc()).limit(limit)).all()
        return int(total), [Overdue(id=row.id, name=row.name, next_run_at=int(row.next_run_at),
                                    late_s=now - int(row.next_run_at), user_id=row.user_id) for row in rows]


_COLUMNS = (_r.c.id, _r.c.schedule_id, _s.c.name.label("schedule_name"), _s.c.endpoint, _r.c.attempt, _r.c.status,
            _r.c.created_at, _r.c.scheduled_for, _r.c.triggered_at, _r.c.completed_at, _r.c.status_code, _r.c.run_id,
            _r.c.session_id, _r.c.error, _r.c.manual, _r.c.backfill, _r.c.user_id)


def _page(conn: Connection, where: list[ColumnElement[bool]], offset: int, count: int) -> list[dict[str, Any]]:
    """`count` attempts matching `where` after `offset`, newest first (id breaks ties)."""
    query = (select(*_COLUMNS).join(_s, _s.c.id == _r.c.schedule_id).where(*where)
             .order_by(_r.c.created_at.desc(), _r.c.id.desc()).limit(count).offset(offset))
    return [dict(m) for m in conn.execute(query).mappings()]


def _count(conn: Connection, where: list[ColumnElement[bool]]) -> int:
    return int(conn.execute(select(func.count()).select_from(_r).where(*where)).scalar_one())


def _health_query(bucket_s: int, user_id: str | None) -> Any:
    """The one grouped statement of `health` (binds `since` and `now`): per bucket, a row
    per status (its count and its first attempts' lag: a plain hash aggregate), and a row
    with the overdue schedules (a distinct count over the few late slots only; a distinct
    over every row would sort the whole window)."""
    bucket = (_r.c.created_at - _r.c.created_at % bucket_s).label("bucket")
    in_window = [_r.c.created_at >= bindparam("since", type_=BigInteger), *_owned(user_id)]
    first_slot = and_(_r.c.attempt == 1, _r.c.backfill.is_(False), _r.c.scheduled_for.isnot(None))
    lag = case((and_(first_slot, _r.c.triggered_at.isnot(None)), _r.c.triggered_at - _r.c.scheduled_for))
    late = and_(first_slot, or_(
        _r.c.status == "skipped",
        _r.c.triggered_at - _r.c.scheduled_for >= OVERDUE_AFTER_S,
        and_(_r.c.status == "queued", bindparam("now", type_=BigInteger) - _r.c.scheduled_for >= OVERDUE_AFTER_S),
    ))
    none = null()
    by_status = (
        select(bucket, _r.c.status.label("status"), func.count().label("n"), func.count(lag).label("lag_count"),
               func.sum(lag).label("lag_sum"), func.max(lag).label("lag_max"), cast(none, BigInteger).label("overdue"))
        .where(*in_window).group_by(bucket, _r.c.status)
    )
    overdue = (
        select(bucket, cast(none, String).label("status"), cast(none, BigInteger).label("n"),
               cast(none, BigInteger).label("lag_count"), cast(none, BigInteger).label("lag_sum"),
               cast(none, BigInteger).label("lag_max"), func.count(func.distinct(_r.c.schedule_id)).label("overdue"))
        .where(*in_window, late).group_by(bucket)
    )
    return union_all(by_status, overdue)
