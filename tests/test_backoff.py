"""Tests for kern_tasks.firing.backoff: pure, tables and properties, no I/O."""

from __future__ import annotations

import math
import os
import random
import statistics
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kern_tasks.firing.backoff import backoff_bound, backoff_delay, parse_retry_after, retry_budget_seconds

NOW = datetime(2015, 10, 21, 7, 27, 0, tzinfo=UTC)

delays = st.integers(min_value=0, max_value=10_000)
retry_numbers = st.integers(min_value=1, max_value=200)
caps = st.integers(min_value=0, max_value=100_000)
seeds = st.integers(min_value=0, max_value=2**32)


# --- bounds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delay", "retry", "cap", "bound"),
    [
        (10, 1, 3600, 10),
        (10, 2, 3600, 20),
        (10, 3, 3600, 40),
        (60, 6, 3600, 1920),
        (60, 7, 3600, 3600),  # 3840 capped
        (10, 10, 3600, 3600),
        (0, 5, 3600, 0),
        (1, 10**6, 3600, 3600),  # a huge retry number neither overflows nor hangs
        (30, 3, 100, 100),
        (7200, 1, 3600, 3600),  # even the first wait is capped
        (5, 2, 0, 0),
    ],
)
def test_backoff_bound_table(delay: int, retry: int, cap: int, bound: float) -> None:
    assert backoff_bound(delay, retry, cap) == bound


@pytest.mark.parametrize(("delay", "retry", "cap"), [(10, 0, 3600), (10, -1, 3600), (-1, 1, 3600), (10, 1, -1)])
def test_backoff_bound_rejects_nonsense(delay: int, retry: int, cap: int) -> None:
    with pytest.raises(ValueError):
        backoff_bound(delay, retry, cap)


@given(delays, retry_numbers, caps)
def test_bounds_grow_and_stay_under_the_cap(delay: int, retry: int, cap: int) -> None:
    this, following = backoff_bound(delay, retry, cap), backoff_bound(delay, retry + 1, cap)
    assert 0 <= this <= following <= cap
    if delay > 0 and following < cap:
        assert following == 2 * this


# --- delays --------------------------------------------------------------------------------


@given(delays, retry_numbers, caps, seeds)
def test_delay_is_within_zero_and_the_bound(delay: int, retry: int, cap: int, seed: int) -> None:
    wait = backoff_delay(delay, retry, cap_seconds=cap, rng=random.Random(seed))
    assert 0 <= wait <= backoff_bound(delay, retry, cap)


@given(delays, retry_numbers, caps, seeds, st.floats(min_value=0, max_value=1e6))
def test_retry_after_is_a_floor_and_the_cap_a_ceiling(
    delay: int, retry: int, cap: int, seed: int, retry_after: float
) -> None:
    bound = backoff_bound(delay, retry, cap)
    wait = backoff_delay(delay, retry, retry_after=retry_after, cap_seconds=cap, rng=random.Random(seed))
    assert min(retry_after, cap) <= wait <= min(cap, max(bound, retry_after))


@pytest.mark.parametrize(
    ("delay", "retry", "retry_after", "low", "high"),
    [
        (0, 3, None, 0, 0),  # no delay configured: retry at once
        (0, 3, 30.0, 30, 30),  # ...unless the server asked for a wait
        (10, 1, 120.0, 120, 120),  # the server's wait wins over a shorter jitter
        (10, 1, 5.0, 5, 10),  # a shorter Retry-After is only a floor
        (10, 1, 7200.0, 3600, 3600),  # nothing waits past the cap
        (10, 1, -5.0, 0, 10),  # a negative Retry-After means "now"
        (10, 1, math.nan, 0, 10),  # and a NaN is ignored
    ],
)
def test_backoff_delay_table(delay: int, retry: int, retry_after: float | None, low: float, high: float) -> None:
    for seed in range(50):
        wait = backoff_delay(delay, retry, retry_after=retry_after, rng=random.Random(seed))
        assert low <= wait <= high


def test_jitter_is_full_jitter_not_a_constant_or_half() -> None:
    rng = random.Random(7)
    waits = [backoff_delay(10, 4, rng=rng) for _ in range(4000)]  # bound 80
    assert min(waits) < 4 and max(waits) > 76
    assert 36 < statistics.mean(waits) < 44


def test_same_rng_seed_same_delays() -> None:
    first = [backoff_delay(5, n, rng=random.Random(3)) for n in range(1, 8)]
    assert first == [backoff_delay(5, n, rng=random.Random(3)) for n in range(1, 8)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_workers_draw_different_jitter() -> None:
    """The default generator is reseeded in each forked child (Celery prefork)."""
    draws = []
    for _ in range(2):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.write(write_end, repr([backoff_delay(1000, 3) for _ in range(5)]).encode())
            os._exit(0)
        os.close(write_end)
        draws.append(os.read(read_end, 4096))
        os.close(read_end)
        os.waitpid(pid, 0)
    assert draws[0] != draws[1]


# --- Retry-After ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0),
        ("Wed, 21 Oct 2015 07:28:00 -0000", 60.0),  # parses as naive: taken as UTC
        ("Wed, 21 Oct 2015 09:28:00 +0200", 60.0),
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # in the past: now
        (None, None),
        ("", None),
        ("   ", None),
        ("soon", None),
        ("inf", None),
        ("nan", None),
        ("Wed, 99 Oct 2015 07:28:00 GMT", None),
        ("1 2 3 4 5", None),
    ],
)
def test_parse_retry_after_table(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def test_parse_retry_after_takes_a_naive_now_as_utc() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=NOW.replace(tzinfo=None)) == 60.0


def test_parse_retry_after_uses_the_real_clock_by_default() -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=100), usegmt=True)
    assert 95 <= (parse_retry_after(soon) or 0) <= 100


@given(st.text(max_size=60))
def test_parse_retry_after_never_raises(header: str) -> None:
    seconds = parse_retry_after(header, now=NOW)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


@given(st.integers(min_value=0, max_value=10**9))
def test_parse_retry_after_seconds_round_trip(seconds: int) -> None:
    assert parse_retry_after(str(seconds)) == seconds


@given(
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)),
)
def test_parse_retry_after_http_date_round_trip(when: datetime, now: datetime) -> None:
    when, now = when.replace(microsecond=0, tzinfo=UTC), now.replace(tzinfo=UTC)
    expected = max(0.0, (when - now).total_seconds())
    assert parse_retry_after(format_datetime(when, usegmt=True), now=now) == expected


# --- the retry budget ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "retries", "delay", "cap", "budget"),
    [
        (30, 0, 60, 3600, 30),  # one attempt, no waits
        (30, 3, 10, 3600, 4 * 30 + 10 + 20 + 40),
        (10, 2, 0, 3600, 30),
        (1, 20, 600, 3600, 21 + 600 + 1200 + 2400 + 17 * 3600),
        (3600, 5, 3600, 3600, 6 * 3600 + 5 * 3600),  # agno's fixed 300 s lease would be wrong by far
        (30, 3, 100, 150, 120 + 100 + 150 + 150),
    ],
)
def test_retry_budget_table(timeout: int, retries: int, delay: int, cap: int, budget: int) -> None:
    assert retry_budget_seconds(timeout, retries, delay, cap) == budget


def test_retry_budget_of_a_million_retries_is_computed_at_once() -> None:
    first_waits = sum(60 * 2**k for k in range(6))  # 60 ... 1920, then capped
    expected = (10**6 + 1) + first_waits + 3600 * (10**6 - 6)
    assert retry_budget_seconds(1, 10**6, 60) == expected


@given(
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=40),
    delays,
    caps,
)
def test_retry_budget_is_timeouts_plus_every_bound(timeout: int, retries: int, delay: int, cap: int) -> None:
    waits = sum(backoff_bound(delay, n, cap) for n in range(1, retries + 1))
    budget = retry_budget_seconds(timeout, retries, delay, cap)
    assert budget == math.ceil(timeout * (retries + 1) + waits)
    assert retry_budget_seconds(timeout, retries + 1, delay, cap) >= budget + timeout
