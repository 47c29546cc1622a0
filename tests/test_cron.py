"""Tests for kern_tasks.scheduler.cron: pure, no database."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kern_tasks.errors import CronError, ValidationError
from kern_tasks.scheduler.cron import (
    CronExpression,
    describe,
    next_run,
    next_run_epoch,
    next_runs,
    parse,
    validate_timezone,
)

NY = ZoneInfo("America/New_York")


def iso(cron: str, tz: str, after: str, count: int) -> list[str]:
    return [d.isoformat() for d in next_runs(cron, tz, datetime.fromisoformat(after), count)]


def utc_gaps(runs: list[datetime]) -> set[float]:
    # Not `b - a`: Python subtracts datetimes sharing a tzinfo as wall-clock times.
    return {b.timestamp() - a.timestamp() for a, b in pairwise(runs)}


# --- the table ------------------------------------------------------------------------

TABLE = [
    # seconds field (leading)
    ("*/5 * * * * *", "UTC", "2026-01-01T00:00:00+00:00",
     ["2026-01-01T00:00:05+00:00", "2026-01-01T00:00:10+00:00", "2026-01-01T00:00:15+00:00"]),
    ("30 */10 * * * *", "UTC", "2026-01-01T00:00:30+00:00",
     ["2026-01-01T00:10:30+00:00", "2026-01-01T00:20:30+00:00"]),
    ("0 0 12 * * *", "UTC", "2026-01-01T12:00:00+00:00",
     ["2026-01-02T12:00:00+00:00", "2026-01-03T12:00:00+00:00"]),
    ("15,45 * * * * *", "UTC", "2026-01-01T00:00:15+00:00",
     ["2026-01-01T00:00:45+00:00", "2026-01-01T00:01:15+00:00"]),
    ("* * * * * *", "UTC", "2026-01-01T00:00:00.500000+00:00",
     ["2026-01-01T00:00:01+00:00", "2026-01-01T00:00:02+00:00"]),
    # plain fields
    ("* * * * *", "UTC", "2026-01-01T00:00:30+00:00",
     ["2026-01-01T00:01:00+00:00", "2026-01-01T00:02:00+00:00"]),
    ("*/15 * * * *", "UTC", "2026-01-01T00:50:00+00:00",
     ["2026-01-01T01:00:00+00:00", "2026-01-01T01:15:00+00:00"]),
    ("0 8-18/5 * * *", "UTC", "2026-01-01T00:00:00+00:00",
     ["2026-01-01T08:00:00+00:00", "2026-01-01T13:00:00+00:00", "2026-01-01T18:00:00+00:00",
      "2026-01-02T08:00:00+00:00"]),
    ("50/5 * * * *", "UTC", "2026-01-01T00:00:00+00:00",
     ["2026-01-01T00:50:00+00:00", "2026-01-01T00:55:00+00:00", "2026-01-01T01:50:00+00:00"]),
    ("5,10-12 3 * * *", "UTC", "2026-01-01T00:00:00+00:00",
     ["2026-01-01T03:05:00+00:00", "2026-01-01T03:10:00+00:00", "2026-01-01T03:11:00+00:00",
      "2026-01-01T03:12:00+00:00", "2026-01-02T03:05:00+00:00"]),
    ("  0 9 * * *\n", "UTC", "2026-01-01T00:00:00+00:00", ["2026-01-01T09:00:00+00:00"]),
    ("0 0 31 * *", "UTC", "2026-01-01T00:00:00+00:00",
     ["2026-01-31T00:00:00+00:00", "2026-03-31T00:00:00+00:00", "2026-05-31T00:00:00+00:00"]),
    ("0 0 29 2 *", "UTC", "2026-01-01T00:00:00+00:00",
     ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]),
    # macros
    ("@hourly", "UTC", "2026-01-01T00:00:00+00:00",
     ["2026-01-01T01:00:00+00:00", "2026-01-01T02:00:00+00:00"]),
    ("@daily", "UTC", "2026-01-01T00:00:00+00:00",
     ["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"]),
    ("@midnight", "UTC", "2026-01-01T23:59:59+00:00", ["2026-01-02T00:00:00+00:00"]),
    ("@weekly", "UTC", "2026-01-01T00:00:00+00:00",
     ["2026-01-04T00:00:00+00:00", "2026-01-11T00:00:00+00:00"]),  # Sundays
    ("@monthly", "UTC", "2026-01-15T00:00:00+00:00",
     ["2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00"]),
    ("@yearly", "UTC", "2026-01-01T00:00:00+00:00", ["2027-01-01T00:00:00+00:00"]),
    ("@ANNUALLY", "UTC", "2026-06-01T00:00:00+00:00", ["2027-01-01T00:00:00+00:00"]),
    # names
    ("0 9 * * mon-fri", "UTC", "2026-01-02T09:00:00+00:00",  # a Friday
     ["2026-01-05T09:00:00+00:00", "2026-01-06T09:00:00+00:00"]),
    ("0 12 1 FEB,aug *", "UTC", "2026-01-01T00:00:00+00:00",
     ["2026-02-01T12:00:00+00:00", "2026-08-01T12:00:00+00:00", "2027-02-01T12:00:00+00:00"]),
    ("0 0 * jan-mar/2 sun", "UTC", "2026-01-20T00:00:00+00:00",  # AND: dom is "*"
     ["2026-01-25T00:00:00+00:00", "2026-03-01T00:00:00+00:00", "2026-03-08T00:00:00+00:00"]),
    ("0 0 * * 7", "UTC", "2026-01-01T00:00:00+00:00", ["2026-01-04T00:00:00+00:00"]),
    ("0 0 * * 5-7", "UTC", "2026-01-01T00:00:00+00:00",
     ["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00", "2026-01-04T00:00:00+00:00",
      "2026-01-09T00:00:00+00:00"]),
    # day-of-month OR day-of-week when both are restricted
    ("0 0 13 * fri", "UTC", "2026-01-01T00:00:00+00:00",
     ["2026-01-02T00:00:00+00:00", "2026-01-09T00:00:00+00:00", "2026-01-13T00:00:00+00:00",
      "2026-01-16T00:00:00+00:00"]),
    ("0 0 */10 * 1", "UTC", "2026-01-01T00:00:00+00:00",
     ["2026-01-05T00:00:00+00:00", "2026-01-11T00:00:00+00:00", "2026-01-12T00:00:00+00:00"]),
    ("0 0 31 2 mon", "UTC", "2026-01-31T00:00:00+00:00",  # Feb 31 never, Mondays do
     ["2026-02-02T00:00:00+00:00"]),
    ("0 0 1-31 * 1", "UTC", "2026-01-01T00:00:00+00:00",  # whole dom range: Mondays only
     ["2026-01-05T00:00:00+00:00", "2026-01-12T00:00:00+00:00"]),
    # zones: results come back in the schedule's zone whatever zone `after` is in
    ("0 9 * * *", "Asia/Kolkata", "2026-01-01T00:00:00+00:00",
     ["2026-01-01T09:00:00+05:30", "2026-01-02T09:00:00+05:30"]),
    ("0 9 * * *", "America/New_York", "2026-06-01T12:00:00+09:00",
     ["2026-06-01T09:00:00-04:00"]),
    ("0 0 * * *", "Australia/Lord_Howe", "2026-01-01T00:00:00+00:00",
     ["2026-01-02T00:00:00+11:00"]),
]


@pytest.mark.parametrize(("cron", "tz", "after", "expected"), TABLE)
def test_table(cron: str, tz: str, after: str, expected: list[str]) -> None:
    runs = next_runs(cron, tz, datetime.fromisoformat(after), len(expected))
    assert [d.isoformat() for d in runs] == expected
    assert all(d.tzinfo == ZoneInfo(tz) for d in runs)
    assert next_run(cron, tz, datetime.fromisoformat(after)) == runs[0]
    after_epoch = int(datetime.fromisoformat(after).timestamp())
    assert next_run_epoch(cron, tz, after_epoch) == int(runs[0].timestamp())


def test_parse_normalises() -> None:
    expr = parse(" */5 * * * * * ")
    assert isinstance(expr, CronExpression)
    assert expr.has_seconds and expr.hour_is_wildcard
    assert expr.seconds == tuple(range(0, 60, 5))
    assert expr.croniter_expr == "* * * * * 0,5,10,15,20,25,30,35,40,45,50,55"
    daily = parse("@daily")
    assert daily.fields == ("0", "0", "0", "*", "*", "*") and not daily.hour_is_wildcard
    assert parse("@hourly").hour_is_wildcard
    assert parse("0 1-23/2 * * *").hour_is_wildcard
    assert not parse("0 0-23 * * *").hour_is_wildcard
    assert parse("0 0 * * sun,7").weekdays == (0,)
    assert parse("5-5 * * * *").minutes == (5,)  # croniter alone reads "5-5" as "*"
    assert parse("0 0 * * 7/3").weekdays == (0,)


# --- DST --------------------------------------------------------------------------------


def test_ny_spring_fixed_time_in_gap_fires_once_after_gap() -> None:
    assert iso("30 2 * * *", "America/New_York", "2026-03-07T12:00:00-05:00", 2) == [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
    assert next_run("30 2 * * *", "America/New_York", datetime(2026, 3, 7, 12, tzinfo=NY)
                    ).astimezone(UTC) == datetime(2026, 3, 8, 7, tzinfo=UTC)
    # 02:00 does not exist that day either: 03:00 EDT
    assert iso("0 2 * * *", "America/New_York", "2026-03-07T12:00:00-05:00", 2) == [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"]
    # many gap times, one fire; 03:00 itself is not in the hour field
    assert iso("*/10 2 * * *", "America/New_York", "2026-03-08T01:00:00-05:00", 2) == [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"]
    assert iso("* * 2 * * *", "America/New_York", "2026-03-08T01:59:59-05:00", 2) == [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"]
    gap_end = int(datetime(2026, 3, 8, 7, tzinfo=UTC).timestamp())
    assert next_run_epoch("30 2 * * *", "America/New_York", gap_end - 1) == gap_end
    next_day = int(datetime(2026, 3, 9, 6, 30, tzinfo=UTC).timestamp())
    assert next_run_epoch("30 2 * * *", "America/New_York", gap_end) == next_day


def test_ny_fall_fixed_time_in_repeated_hour_fires_once() -> None:
    assert iso("30 1 * * *", "America/New_York", "2026-10-31T12:00:00-04:00", 3) == [
        "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00", "2026-11-03T01:30:00-05:00"]
    # already fired at the first 01:30: not again at the second, whatever `after` is
    for after in ("2026-11-01T01:40:00-04:00", "2026-11-01T01:10:00-05:00"):
        assert iso("30 1 * * *", "America/New_York", after, 1) == ["2026-11-02T01:30:00-05:00"]


def test_croniter_alone_fires_the_repeated_hour_twice() -> None:
    start = datetime(2026, 10, 31, 12, tzinfo=NY)
    plain = croniter("30 1 * * *", start)
    theirs = [plain.get_next(datetime) for _ in range(2)]
    ours = next_runs("30 1 * * *", "America/New_York", start, 2)
    assert [d.isoformat() for d in theirs] == [
        "2026-11-01T01:30:00-04:00", "2026-11-01T01:30:00-05:00"]
    assert [d.isoformat() for d in ours] == [
        "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]


@pytest.mark.parametrize(("tz", "change"), [
    ("America/New_York", datetime(2026, 3, 8, 7, tzinfo=UTC)),  # spring forward
    ("America/New_York", datetime(2026, 11, 1, 6, tzinfo=UTC)),  # fall back
    ("Europe/London", datetime(2026, 3, 29, 1, tzinfo=UTC)),
    ("Europe/London", datetime(2026, 10, 25, 1, tzinfo=UTC)),
    ("Australia/Lord_Howe", datetime(2026, 4, 4, 15, tzinfo=UTC)),  # back 30 min
    ("Australia/Lord_Howe", datetime(2026, 10, 3, 15, 30, tzinfo=UTC)),  # forward 30 min
])
@pytest.mark.parametrize(("cron", "step"), [
    ("0 * * * *", 3600), ("*/15 * * * *", 900), ("@hourly", 3600), ("*/10 * * * * *", 10),
    ("* * * * * *", 1),
])
@pytest.mark.parametrize("runs_before", [1, 2, 3, 1800])
def test_wildcard_hour_fires_by_elapsed_time(tz: str, change: datetime, cron: str,
                                             step: int, runs_before: int) -> None:
    zone = ZoneInfo(tz)
    assert (change - timedelta(seconds=1)).astimezone(zone).utcoffset() != \
        change.astimezone(zone).utcoffset()
    # `after` falls just before the change, or up to 3 h before (and so inside a repeated
    # stretch, when the clock goes back): either way no run may be missed or doubled.
    runs_before = min(runs_before, 3 * 3600 // step)
    start = change - timedelta(seconds=runs_before * step + 1)
    runs = next_runs(cron, tz, start, 2 * runs_before + 2)
    if tz == "Australia/Lord_Howe" and step == 3600:
        # The clock moves 30 min: the :00 that falls in the gap (or would repeat) is
        # not there, so one interval is 90 real minutes.
        assert utc_gaps(runs) <= {3600, 5400}
    else:
        assert utc_gaps(runs) == {step}
    assert runs[0].timestamp() - start.timestamp() <= step
    assert runs[0].timestamp() < change.timestamp() < runs[-1].timestamp()


def test_next_run_epoch_stays_fast_around_changes() -> None:
    # A loose guard (typical calls take tens of microseconds): no call may have to
    # walk through an hour of per-second wall times.
    fall_back = int(datetime(2026, 11, 1, 6, tzinfo=UTC).timestamp())
    started = time.perf_counter()
    for after in range(fall_back - 3600, fall_back + 3600, 7):
        assert next_run_epoch("* * * * * *", "America/New_York", after) == after + 1
    assert time.perf_counter() - started < 2.0  # ~1000 calls


def test_ny_hourly_at_both_one_oclocks() -> None:
    assert iso("0 * * * *", "America/New_York", "2026-11-01T00:30:00-04:00", 3) == [
        "2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"]
    # from inside the first pass, the second 01:00 is still ahead
    assert iso("0 * * * *", "America/New_York", "2026-11-01T01:30:00-04:00", 1) == [
        "2026-11-01T01:00:00-05:00"]
    assert iso("*/15 * * * *", "America/New_York", "2026-11-01T01:50:00-04:00", 2) == [
        "2026-11-01T01:00:00-05:00", "2026-11-01T01:15:00-05:00"]
    assert iso("0 * * * *", "America/New_York", "2026-03-08T01:30:00-05:00", 2) == [
        "2026-03-08T03:00:00-04:00", "2026-03-08T04:00:00-04:00"]


def test_london_transitions() -> None:
    assert iso("30 1 * * *", "Europe/London", "2026-03-28T12:00:00+00:00", 2) == [
        "2026-03-29T02:00:00+01:00", "2026-03-30T01:30:00+01:00"]
    assert iso("30 1 * * *", "Europe/London", "2026-10-24T12:00:00+01:00", 2) == [
        "2026-10-25T01:30:00+01:00", "2026-10-26T01:30:00+00:00"]
    assert iso("0 * * * *", "Europe/London", "2026-10-25T00:30:00+01:00", 3) == [
        "2026-10-25T01:00:00+01:00", "2026-10-25T01:00:00+00:00", "2026-10-25T02:00:00+00:00"]


def test_lord_howe_half_hour_transitions() -> None:
    assert iso("15 2 * * *", "Australia/Lord_Howe", "2026-10-03T12:00:00+10:30", 2) == [
        "2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]
    assert iso("45 1 * * *", "Australia/Lord_Howe", "2026-04-04T12:00:00+11:00", 2) == [
        "2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"]


# --- errors -----------------------------------------------------------------------------

ERRORS = [
    ("61 * * * *", 'minute field "61": must be 0-59'),
    ("* 24 * * *", 'hour field "24": must be 0-23'),
    ("* * 0 * *", 'day-of-month field "0": must be 1-31'),
    ("* * 32 * *", 'day-of-month field "32": must be 1-31'),
    ("* * * 0 *", 'month field "0": must be 1-12 (or jan-dec)'),
    ("* * * 13 *", 'month field "13": must be 1-12 (or jan-dec)'),
    ("* * * * 8", 'day-of-week field "8": must be 0-7 (or sun-sat)'),
    ("60 * * * * *", 'second field "60": must be 0-59'),
    ("*/0 * * * * *", 'second field "*/0": step must be at least 1'),
    ("*/0 * * * *", 'minute field "*/0": step must be at least 1'),
    ("0 1-5/0 * * *", 'hour field "1-5/0": step must be at least 1'),
    ("*/x * * * *", 'minute field "*/x": step "x" is not a number'),
    ("1,99 * * * *", 'minute field "1,99": "99" must be 0-59'),
    ("0 20-25 * * *", 'hour field "20-25": "25" must be 0-23'),
    ("5-1 * * * *", 'minute field "5-1": range "5-1" starts after it ends'),
    ("0 0 * * fri-mon", 'day-of-week field "fri-mon": range "fri-mon" starts after'),
    ("1,,2 * * * *", 'minute field "1,,2": empty item in list'),
    ("mon * * * *", 'minute field "mon": must be 0-59'),
    ("0 0 * * funday", 'day-of-week field "funday": must be 0-7 (or sun-sat)'),
    ("0 0 * foo *", 'month field "foo": must be 1-12 (or jan-dec)'),
    ("0 0 L * *", 'day-of-month field "L": must be 1-31'),
    ("0 0 * * 5#2", 'day-of-week field "5#2": must be 0-7'),
    ("-1 * * * *", 'minute field "-1"'),
    ("* * *", ("expected 5 fields (minute hour day-of-month month day-of-week) or 6 with a "
               "leading seconds field, got 3")),
    ("* * * * * * *", "or 6 with a leading seconds field, got 7"),
    ("", "got 0"),
    ("   ", "got 0"),
    ("@every 5m", 'unknown macro "@every 5m": use one of @hourly'),
    ("@reboot", 'unknown macro "@reboot"'),
    ("@daily 1", 'unknown macro "@daily 1"'),
    ("0 0 31 2 *", 'day-of-month field "31" never occurs in month field "2"'),
    ("0 0 30,31 feb *", 'day-of-month field "30,31" never occurs in month field "feb"'),
    ("0 0 31 4,6,9,11 *", "this schedule would never fire"),
]


@pytest.mark.parametrize(("cron", "message"), ERRORS)
def test_parse_errors_name_the_field(cron: str, message: str) -> None:
    with pytest.raises(CronError) as info:
        parse(cron)
    assert info.value.field == "cron"
    assert message in info.value.message
    assert str(info.value).startswith("cron: ")
    assert isinstance(info.value, ValueError) and isinstance(info.value, ValidationError)
    with pytest.raises(CronError):  # every entry point validates
        next_run(cron, "UTC", datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("cron", ["0 0 29 2 *", "0 0 31 2 mon", "0 0 31 * *", "@yearly"])
def test_rare_but_possible_schedules_parse(cron: str) -> None:
    parse(cron)


@pytest.mark.parametrize("name", ["Mars/Base", "", "utc", " UTC", "../etc/passwd", "localtime"])
def test_unknown_time_zone(name: str) -> None:
    with pytest.raises(CronError) as info:
        validate_timezone(name)
    assert info.value.field == "timezone"
    assert str(info.value) == (f'timezone: unknown time zone "{name}": use an IANA name such '
                               'as "America/New_York"')
    with pytest.raises(CronError, match="^timezone: "):
        next_runs("* * * * *", name, datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(CronError, match="^timezone: "):
        next_run_epoch("* * * * *", name, 0)


def test_validate_timezone_returns_zoneinfo() -> None:
    assert validate_timezone("America/New_York") == NY
    assert validate_timezone("UTC") == ZoneInfo("UTC")


def test_naive_after_and_bad_count() -> None:
    with pytest.raises(ValueError, match="after"):
        next_runs("* * * * *", "UTC", datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="after"):
        next_run("* * * * *", "UTC", datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="count"):
        next_runs("* * * * *", "UTC", datetime(2026, 1, 1, tzinfo=UTC), 0)


# --- describe ---------------------------------------------------------------------------


@pytest.mark.parametrize(("cron", "text"), [
    ("0 9 * * 1-5", "At 09:00, Monday through Friday"),
    ("0 9 * * mon-fri", "At 09:00, Monday through Friday"),
    ("*/15 * * * *", "Every 15 minutes"),
    ("*/5 * * * * *", "Every 5 seconds"),
    ("30 0 9 * * *", "At 09:00:30"),
    ("@daily", "At 00:00"),
    ("0 0 13 * fri", "At 00:00, on day 13 of the month, or on Friday"),
])
def test_describe(cron: str, text: str) -> None:
    assert describe(cron) == text


def test_describe_rejects_invalid() -> None:
    with pytest.raises(CronError, match='minute field "61"'):
        describe("61 * * * *")


# --- property: random expressions, zones and instants -----------------------------------

ZONES = ["America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]
LOW = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
HIGH = int(datetime(2028, 12, 31, tzinfo=UTC).timestamp())
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (low, high accepted, top of "*", names)
SPECS = {
    "second": (0, 59, 59, None), "minute": (0, 59, 59, None), "hour": (0, 23, 23, None),
    "dom": (1, 31, 31, None), "month": (1, 12, 12, MONTHS), "dow": (0, 7, 6, WEEKDAYS),
}


@st.composite
def field(draw: st.DrawFn, kind: str) -> tuple[str, set[int]]:
    low, high, top, names = SPECS[kind]

    def number() -> tuple[str, int]:
        # Hours 0-3 are where the DST changes under test happen: favour them.
        n = draw(st.integers(0, 3) if kind == "hour" and draw(st.booleans())
                 else st.integers(low, high))
        if names and n - low < len(names) and draw(st.booleans()):
            return names[n - low], n
        return str(n), n

    def part() -> tuple[str, set[int]]:
        shape = draw(st.sampled_from(["star", "n", "range", "star_step", "range_step",
                                      "n_step"]))
        if shape == "star":
            return "*", set(range(low, top + 1))
        if shape == "star_step":
            s = draw(st.integers(1, top - low + 1))
            return f"*/{s}", set(range(low, top + 1, s))
        (a_txt, a), (b_txt, b) = sorted([number(), number()], key=lambda p: p[1])
        s = draw(st.integers(1, high - low + 1))
        return {
            "n": (a_txt, {a}),
            "range": (f"{a_txt}-{b_txt}", set(range(a, b + 1))),
            "range_step": (f"{a_txt}-{b_txt}/{s}", set(range(a, b + 1, s))),
            "n_step": (f"{a_txt}/{s}", set(range(a, max(a, top) + 1, s))),
        }[shape]

    parts = [part() for _ in range(draw(st.integers(1, 3)))]
    values = set().union(*(v for _, v in parts))
    if kind == "dow":
        values = {v % 7 for v in values}
    return ",".join(t for t, _ in parts), values


@lru_cache
def transitions(tz: str) -> tuple[int, ...]:
    """Every UTC-offset change of `tz` in 2025-2028 (epoch seconds), by scan and bisection."""
    zone, found = ZoneInfo(tz), []

    def off(t: int) -> timedelta | None:
        return datetime.fromtimestamp(t, zone).utcoffset()

    for t in range(LOW, HIGH, 3600):
        if off(t) != off(t + 3600):
            lo, hi = t, t + 3600
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if off(mid) == off(lo) else (lo, mid)
            found.append(hi)
    return tuple(found)


@st.composite
def instant(draw: st.DrawFn, tz: str) -> int:
    near = transitions(tz)
    if len(near) > 0 and draw(st.booleans()):  # half the time, near a DST change
        return draw(st.sampled_from(near)) + draw(st.integers(-3 * 3600, 3600))
    return draw(st.integers(LOW, HIGH))


class Oracle:
    """An independent reading of the contract, by stepping over real time."""

    def __init__(self, fields: dict[str, tuple[str, set[int]]], has_seconds: bool) -> None:
        self.v = {k: vals for k, (_, vals) in fields.items()}
        self.has_seconds = has_seconds
        self.by_elapsed = any(c in fields["hour"][0] for c in "*/")
        self.day_or = len(self.v["dom"]) < 31 and len(self.v["dow"]) < 7

    def matches(self, wall: datetime) -> bool:
        v = self.v
        dom, dow = wall.day in v["dom"], wall.isoweekday() % 7 in v["dow"]
        return ((wall.second in v["second"] if self.has_seconds else wall.second == 0)
                and wall.minute in v["minute"] and wall.hour in v["hour"]
                and wall.month in v["month"] and ((dom or dow) if self.day_or else dom and dow))

    def can_fire(self) -> bool:
        days_in = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        return self.day_or or any(d <= days_in[m - 1] for m in self.v["month"]
                                  for d in self.v["dom"])

    def gap_matches(self, zone: ZoneInfo, t: int) -> bool:
        """Whether `t` ends a spring-forward gap that hides a matching wall time."""
        before, at = (datetime.fromtimestamp(x, zone) for x in (t - 1, t))
        if at.utcoffset() <= before.utcoffset():  # type: ignore[operator]
            return False
        wall, end = before.replace(tzinfo=None) + timedelta(seconds=1), at.replace(tzinfo=None)
        step = timedelta(seconds=1 if self.has_seconds else 60)
        while wall < end:
            if self.matches(wall):
                return True
            wall += step
        return False

    def fires(self, zone: ZoneInfo, t: int) -> bool:
        local = datetime.fromtimestamp(t, zone)
        if self.matches(local.replace(tzinfo=None)):
            return self.by_elapsed or local.fold == 0
        return not self.by_elapsed and self.gap_matches(zone, t)


def check_runs(fields: dict[str, tuple[str, set[int]]], tz: str, after_epoch: int,
               count: int, max_steps: int) -> None:
    """The contract for one expression: order, pattern, DST rules, and nothing skipped."""
    has_seconds = "second" in fields
    kinds = ["second", "minute", "hour", "dom", "month", "dow"][0 if has_seconds else 1:]
    cron = " ".join(fields[k][0] for k in kinds)
    zone, after = ZoneInfo(tz), datetime.fromtimestamp(after_epoch, UTC)
    oracle = Oracle({"second": ("0", {0}), **fields}, has_seconds)
    if not oracle.can_fire():
        with pytest.raises(CronError, match="never"):
            parse(cron)
        return

    runs = next_runs(cron, tz, after, count)
    epochs = [int(r.timestamp()) for r in runs]
    assert epochs[0] > after_epoch
    assert all(a < b for a, b in pairwise(epochs))
    for r, t in zip(runs, epochs):
        assert r.tzinfo == zone and r.microsecond == 0
        if oracle.matches(r.replace(tzinfo=None)):
            assert oracle.by_elapsed or r.fold == 0  # fixed hours: first occurrence only
            if r.fold:
                event("a run in the second pass of a repeated hour")
        else:  # only a fixed-hour time in the gap may fire off-pattern: at the gap's end
            event("a fixed-hour run moved to the end of a gap")
            assert not oracle.by_elapsed
            assert datetime.fromtimestamp(t - 1, zone).utcoffset() != r.utcoffset()
            assert oracle.gap_matches(zone, t)
    # Nothing was skipped: step over every real second (or minute) up to the last run.
    step = 1 if has_seconds else 60
    first = after_epoch + 1 if has_seconds else (after_epoch // 60 + 1) * 60
    if (epochs[-1] - first) // step <= max_steps:
        expected = [t for t in range(first, epochs[-1] + 1, step) if oracle.fires(zone, t)]
        assert expected == epochs
        event("checked against stepping over real time")
    assert next_run_epoch(cron, tz, after_epoch) == epochs[0]


def full(kind: str) -> tuple[str, set[int]]:
    return "*", set(range(SPECS[kind][0], SPECS[kind][2] + 1))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_random_expressions(data: st.DataObject) -> None:
    kinds = ["second"] if data.draw(st.booleans(), label="seconds") else []
    kinds += ["minute", "hour", "dom", "month", "dow"]
    tz = data.draw(st.sampled_from(ZONES), label="tz")
    fields = {k: data.draw(field(k), label=k) for k in kinds}
    check_runs(fields, tz, data.draw(instant(tz), label="after"), 6, 4000)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_near_dst_changes(data: st.DataObject) -> None:
    """Every-day schedules, starting within hours of a DST change of a zone that has them."""
    kinds = ["second"] if data.draw(st.booleans(), label="seconds") else []
    tz = data.draw(st.sampled_from(ZONES[:3]), label="tz")
    fields = {k: data.draw(field(k), label=k) for k in [*kinds, "minute"]}
    # Half the time a fixed set of the hours the changes happen in, to exercise the gap.
    early = st.sets(st.integers(0, 3), min_size=1).map(
        lambda hours: (",".join(map(str, sorted(hours))), hours))
    fields["hour"] = data.draw(early | field("hour"), label="hour")
    fields |= {k: full(k) for k in ("dom", "month", "dow")}
    after = data.draw(st.sampled_from(transitions(tz)), label="change")
    after += data.draw(st.integers(-3 * 3600, 3600), label="offset")
    check_runs(fields, tz, after, 4, 30_000)
