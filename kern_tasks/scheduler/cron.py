"""Cron expressions: parsing, validation, next fire times and descriptions.

A pure module: it knows time, not SQL, and never reads the clock or does I/O.

Syntax: five fields ``minute hour day-of-month month day-of-week``, or six with a
LEADING seconds field; each field is ``*`` or a comma list of ``N``, ``A-B``, ``*/S``,
``N/S`` (N to the field's end) and ``A-B/S``. Months accept jan-dec and days of the
week sun-sat (0 and 7 are Sunday). Macros: @hourly @daily @midnight @weekly @monthly
@yearly @annually. When both day-of-month and day-of-week are restricted (neither
covers its whole range) a day matches either one (OR), as in croniter. Rejected with
a message: croniter's extensions (L, W, #, ?, H), @reboot and ranges that run
backwards (5-1). We hand croniter explicit value lists, not the text, because it
reads some forms its own way (it takes "5-5" for the whole range).

DST rules (the contract, like Vixie cron). Matches are enumerated in local wall-clock
time, then each wall time is mapped to real instants:

* Schedules whose hour field is a wildcard or a step (contains ``*`` or ``/``; also
  @hourly) fire by real elapsed time. A wall time in the spring-forward gap does not
  exist, so it does not fire; a wall time in the repeated fall-back hour fires at both
  instants. ``*/15 * * * *`` keeps firing every 15 real minutes through both changes
  and ``0 * * * *`` fires at 01:00 EDT and again at 01:00 EST.
* Any other (fixed-hour) schedule: a wall time in the gap fires once, at the first
  instant after the gap (``30 2 * * *`` in New York on 2026-03-08 fires at 03:00 EDT);
  several gap times fire once in all; a repeated wall time fires only at its first
  occurrence (fold=0).

How: croniter enumerates matching wall times on NAIVE datetimes (pure wall-clock
arithmetic, from an expression we normalise to explicit value lists); each is mapped
with zoneinfo (fold=0 vs fold=1 offsets tell a gap from a repeated hour). The mapped
instants need not be monotonic (01:00 EST comes after 01:30 EDT), so a small heap
holds them until no later wall time can map below them. If ``after`` is in the first
pass of a repeated hour, the wall times already passed come round again: a second
stream enumerates them and is merged in. Fire times are whole seconds, strictly after
``after`` and strictly increasing.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from kern_tasks.errors import CronError

_SECOND = timedelta(seconds=1)
_EPOCH = datetime(1970, 1, 1)  # naive: croniter enumerates wall-clock times
_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# How far ahead to look for the clock going back (real changes are a few hours at most).
_LOOKAHEAD = 86_400
# Longest possible wait between matches: Feb 29 skips 2100, so 8 years; a margin on top.
_MAX_YEARS = 10
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # 29: leap years exist
_MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
           "@annually": "0 0 1 1 *"}
_FIELD_COUNT_MSG = ("expected 5 fields (minute hour day-of-month month day-of-week) "
                    "or 6 with a leading seconds field, got {}")
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() accepts "²"


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int  # highest value accepted (7 for day-of-week)
    top: int  # where "*" and "N/S" end (6 for day-of-week, whose 7 is Sunday again)
    names: tuple[str, ...] = ()  # names[i] means low + i
    hint: str = ""

    def value(self, token: str) -> int | None:
        if _DIGITS.fullmatch(token):
            return int(token)
        low = token.lower()
        return self.names.index(low) + self.low if low in self.names else None


_SECONDS = _Field("second", 0, 59, 59)
_MINUTES = _Field("minute", 0, 59, 59)
_HOURS = _Field("hour", 0, 23, 23)
_DAYS = _Field("day-of-month", 1, 31, 31)
_MONTHS = _Field("month", 1, 12, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug",
                                        "sep", "oct", "nov", "dec"), " (or jan-dec)")
_WEEKDAYS = _Field("day-of-week", 0, 7, 6, ("sun", "mon", "tue", "wed", "thu", "fri", "sat"),
                   " (or sun-sat)")


@dataclass(frozen=True)
class CronExpression:
    """A validated, normalised cron expression.

    ``fields`` are the texts of the six fields, second first ("0" when the
    expression had five); the value tuples are sorted, weekdays 0-6 with 0 = Sunday.
    """

    source: str
    fields: tuple[str, str, str, str, str, str]
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]
    has_seconds: bool
    hour_is_wildcard: bool  # fires by elapsed time across DST changes
    croniter_expr: str  # croniter's own field order: seconds LAST, full fields as "*"


def validate_timezone(name: str) -> ZoneInfo:
    """The IANA zone called ``name``; CronError("timezone", ...) if there is none."""
    try:
        # "localtime" is this machine's zone, not a name that means the same everywhere.
        if isinstance(name, str) and name.strip() == name and name != "localtime":
            return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    raise CronError("timezone",
                    f'unknown time zone "{name}": use an IANA name such as "America/New_York"')


@lru_cache(maxsize=1024)
def parse(cron: str) -> CronExpression:
    """Validate ``cron``; CronError("cron", ...) names the faulty field and says why."""
    if not isinstance(cron, str):
        raise CronError("cron", f"expected a string, got {type(cron).__name__}")
    text = cron.strip()
    if text.startswith("@"):
        if text.lower() not in _MACROS:
            raise CronError("cron", f'unknown macro "{text}": use one of {", ".join(_MACROS)}')
        parts = _MACROS[text.lower()].split()
    else:
        parts = text.split()
    if len(parts) not in (5, 6):
        raise CronError("cron", _FIELD_COUNT_MSG.format(len(parts)))
    has_seconds = len(parts) == 6
    fields = tuple(parts) if has_seconds else ("0", *parts)
    specs = (_SECONDS, _MINUTES, _HOURS, _DAYS, _MONTHS, _WEEKDAYS)
    values = [_parse_field(t, spec) for t, spec in zip(fields, specs)]
    _check_can_fire(fields, values)
    full = [sorted(set(range(s.low, s.top + 1))) for s in specs]
    texts = ["*" if v == f else ",".join(map(str, v)) for v, f in zip(values, full)]
    return CronExpression(
        source=text,
        fields=fields,  # type: ignore[arg-type]
        seconds=tuple(values[0]), minutes=tuple(values[1]), hours=tuple(values[2]),
        days=tuple(values[3]), months=tuple(values[4]), weekdays=tuple(values[5]),
        has_seconds=has_seconds,
        hour_is_wildcard="*" in fields[2] or "/" in fields[2],
        croniter_expr=" ".join(texts[1:] + texts[:1] if has_seconds else texts[1:]),
    )


def _parse_field(text: str, spec: _Field) -> list[int]:
    values: set[int] = set()
    for part in text.split(","):
        values.update(_parse_part(part, text, spec))
    return sorted({v % 7 for v in values} if spec is _WEEKDAYS else values)


def _parse_part(part: str, text: str, spec: _Field) -> range:
    def fail(why: str) -> CronError:
        return CronError("cron", f'{spec.name} field "{text}": {why}')

    def value(token: str) -> int:
        if not token:
            raise fail(f'"{part}" is missing a number')
        v = spec.value(token)
        if v is None or not spec.low <= v <= spec.high:
            where = "" if token == text else f'"{token}" '
            raise fail(f"{where}must be {spec.low}-{spec.high}{spec.hint}")
        return v

    if not part:
        raise fail("empty item in list")
    base, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not _DIGITS.fullmatch(step_text):
            raise fail(f'step "{step_text}" is not a number')
        step = int(step_text)
        if step < 1:
            raise fail("step must be at least 1")
    if base == "*":
        return range(spec.low, spec.top + 1, step)
    if "-" in base:
        first, _, last = base.partition("-")
        low, high = value(first), value(last)
        if low > high:
            raise fail(f'range "{base}" starts after it ends; write a range that wraps '
                       f'around as two, e.g. "{low}-{spec.top},{spec.low}-{high}"')
        return range(low, high + 1, step)
    low = value(base)
    # "N/S" runs from N to the end of the field, as in croniter.
    return range(low, max(low, spec.top) + 1 if slash else low + 1, step)


def _check_can_fire(fields: tuple[str, ...], values: list[list[int]]) -> None:
    """Reject day/month combinations that never occur (croniter would search forever)."""
    days, months, weekdays = values[3], values[4], values[5]
    if len(weekdays) < 7 and len(days) < 31:
        return  # OR rule: the weekday side fires every week
    if any(d <= _MONTH_DAYS[m - 1] for m in months for d in days):
        return
    raise CronError("cron", f'day-of-month field "{fields[3]}" never occurs in month field '
                            f'"{fields[4]}": this schedule would never fire')


def next_runs(cron: str, timezone: str, after: datetime, count: int = 1) -> list[datetime]:
    """The next ``count`` fire times strictly after ``after``, aware, in the schedule's zone."""
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError("after must be a timezone-aware datetime, got a naive one")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    zone = validate_timezone(timezone)
    # Floor to whole seconds: a fire time r > after exactly when r > floor(after).
    after_epoch = (after - _UTC_EPOCH) // _SECOND
    epochs = itertools.islice(_fire_epochs(parse(cron), zone, after_epoch), count)
    return [datetime.fromtimestamp(e, zone) for e in epochs]


def next_run(cron: str, timezone: str, after: datetime) -> datetime:
    """The first fire time strictly after ``after``."""
    return next_runs(cron, timezone, after)[0]


# Memoised: a function of its arguments alone, and beat asks it the same question for every
# schedule of one cron due in one tick (500 top-of-the-hour rows: one croniter walk, not 500).
@lru_cache(maxsize=4096)
def next_run_epoch(cron: str, timezone: str, after_epoch: int) -> int:
    """The first fire time strictly after ``after_epoch``, both in epoch seconds."""
    return next(_fire_epochs(parse(cron), validate_timezone(timezone), int(after_epoch)))


def describe(cron: str) -> str:
    """A sentence for people, e.g. "At 09:00, Monday through Friday"."""
    expr = parse(cron)
    # Imported here: only the API needs it, workers computing fire times do not.
    from cron_descriptor import ExpressionDescriptor, Options

    options = Options()
    options.use_24hour_time_format = True
    # Whole-range day fields become "*" so the text follows our AND/OR rule; seven
    # parts (with year "*") so a four-digit weekday is never read as a year.
    sec, minute, hour, dom, month, dow = expr.fields
    dom = dom if len(expr.days) < 31 else "*"
    dow = dow if len(expr.weekdays) < 7 else "*"
    parts = (sec, minute, hour, dom, month, dow, "*") if expr.has_seconds else (
        minute, hour, dom, month, dow)
    try:
        return str(ExpressionDescriptor(" ".join(parts), options).get_description())
    except Exception:  # noqa: BLE001 - a description is a nicety: never break a request
        return f"Cron schedule {expr.source}"


# --- fire times -----------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _prototype(croniter_expr: str) -> croniter:
    # Building a croniter re-parses the expression (~50-100 us); copying one is cheap.
    # max_years bounds the search so an impossible date fails fast instead of at 50 years.
    return croniter(croniter_expr, _EPOCH, max_years_between_matches=_MAX_YEARS)


def _fire_epochs(expr: CronExpression, zone: ZoneInfo, after: int) -> Iterator[int]:
    """Fire times (epoch seconds) strictly after ``after``, increasing, without end."""
    local = datetime.fromtimestamp(after, zone)
    wall = local.replace(tzinfo=None)
    ahead = _mapped(expr, zone, after, wall)
    if not expr.hour_is_wildcard:  # second occurrences never fire
        return ahead
    repeated_from = _repeat_start(zone, after, local.utcoffset() // _SECOND)  # type: ignore
    if repeated_from is None or repeated_from > wall:
        return ahead
    # `after` lies in the first pass of a repeated stretch: the wall times already
    # passed come round again, and their second occurrences interleave with `ahead`.
    behind = _mapped(expr, zone, after, repeated_from - _SECOND, stop=wall)
    return heapq.merge(ahead, behind)


def _mapped(
    expr: CronExpression, zone: ZoneInfo, after: int, start: datetime, stop: datetime | None = None
) -> Iterator[int]:
    """Instants > ``after`` of matching wall times in (start, stop], in increasing order."""
    walls = copy.copy(_prototype(expr.croniter_expr))
    walls.set_current(start, force=True)
    heap: list[int] = []  # instants mapped but not yet known to be the next one
    last = after
    while True:
        try:
            wall: datetime = walls.get_next(datetime)
        except CroniterBadDateError:
            raise CronError("cron", f'"{expr.source}" never fires') from None
        if stop is not None and wall > stop:
            break
        instants, floor, gap_end = _instants(wall, zone, expr.hour_is_wildcard)
        instants = tuple(t for t in instants if t > after)
        for instant in instants:
            heapq.heappush(heap, instant)
        # No later wall time maps below `floor`, so what lies at or below it is final.
        floor = min(instants, default=floor)
        while heap and heap[0] <= floor:
            instant = heapq.heappop(heap)
            if instant > last:  # several gap times can map to the same instant
                last = instant
                yield instant
        if gap_end is not None:
            # Skip the rest of the gap: its wall times add nothing (or the same instant).
            walls.set_current(gap_end - _SECOND, force=True)
    yield from (t for t in sorted(set(heap)) if t > last)


def _repeat_start(zone: ZoneInfo, after: int, offset: int) -> datetime | None:
    """The first repeated wall time if the clock goes back within a day of ``after``."""
    if _offset_at(zone, after + _LOOKAHEAD) >= offset:
        return None
    change = _first_change(zone, after, after + _LOOKAHEAD)
    return _EPOCH + (change + _offset_at(zone, change)) * _SECOND


def _instants(
    wall: datetime, zone: ZoneInfo, by_elapsed: bool
) -> tuple[tuple[int, ...], int, datetime | None]:
    """Map a wall time to (fire instants, lower bound for later ones, gap end or None).

    fold=0 and fold=1 give the same offset for an ordinary time; they differ inside a
    DST change, and which one is larger tells a repeated hour from a gap.
    """
    base = (wall - _EPOCH) // _SECOND
    first = base - _offset(wall, zone, 0)
    second = base - _offset(wall, zone, 1)
    if first == second:
        return (first,), first, None
    if first < second:  # repeated hour: the same wall time occurs twice
        return ((first, second) if by_elapsed else (first,)), first, None
    # In the gap: fold=1 reads the wall time with the new offset and lands before the
    # change, fold=0 with the old one and lands after it; the change lies between.
    change = _first_change(zone, second, first)
    gap_end = _EPOCH + (change + _offset_at(zone, change)) * _SECOND
    return (() if by_elapsed else (change,)), change, gap_end


def _offset(wall: datetime, zone: ZoneInfo, fold: int) -> int:
    return wall.replace(tzinfo=zone, fold=fold).utcoffset() // _SECOND  # type: ignore[operator]


def _offset_at(zone: ZoneInfo, instant: int) -> int:
    return datetime.fromtimestamp(instant, zone).utcoffset() // _SECOND  # type: ignore[operator]


def _first_change(zone: ZoneInfo, low: int, high: int) -> int:
    """The first instant in (low, high] whose UTC offset differs from low's (bisection)."""
    before = _offset_at(zone, low)
    while high - low > 1:
        mid = (low + high) // 2
        if _offset_at(zone, mid) == before:
            low = mid
        else:
            high = mid
    return high
