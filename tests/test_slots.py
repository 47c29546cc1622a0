"""The misfire and overlap policies as a pure function: a table of cases."""

from __future__ import annotations

import pytest

from kern_tasks.scheduler.slots import SlotPlan, jitter_offset, plan_slots, skip_overlapped

EVERY_MIN = "* * * * *"
T = 1_800_000_000 - (1_800_000_000 % 60)  # a whole minute


def plan(**kw) -> SlotPlan:
    kw.setdefault("cron_expr", EVERY_MIN)
    kw.setdefault("timezone", "UTC")
    return plan_slots(**kw)


@pytest.mark.parametrize(
    "case, kw, expected",
    [
        ("on time", dict(next_run_at=T, now=T), SlotPlan((T,), 0, T + 60)),
        ("a little late is not a misfire", dict(next_run_at=T, now=T + 59), SlotPlan((T,), 0, T + 60)),
        # Two slots within grace under forbid: one now, the other stays due for the next claim.
        ("forbid takes one", dict(next_run_at=T, now=T + 60), SlotPlan((T,), 0, T + 60)),
        ("allow takes all on time", dict(next_run_at=T, now=T + 60, overlap_policy="allow"),
         SlotPlan((T, T + 60), 0, T + 120)),
        # Beat was down 10 minutes: slots T .. T+540 missed (older than 60 s), T+600 on time.
        ("once with an on-time slot", dict(next_run_at=T, now=T + 600),
         SlotPlan((T + 540,), 9, T + 600)),
        ("skip with an on-time slot", dict(next_run_at=T, now=T + 600, misfire_policy="skip"),
         SlotPlan((T + 540,), 9, T + 600)),
        ("all within the window", dict(next_run_at=T, now=T + 600, misfire_policy="all", overlap_policy="allow"),
         SlotPlan(tuple(T + 60 * i for i in range(11)), 0, T + 660)),
        ("all, window shorter than the outage",
         dict(next_run_at=T, now=T + 600, misfire_policy="all", overlap_policy="allow", catchup_window_seconds=120),
         SlotPlan((T + 480, T + 540, T + 600), 8, T + 660)),
        ("all under forbid: one at a time, oldest first",
         dict(next_run_at=T, now=T + 600, misfire_policy="all"), SlotPlan((T,), 0, T + 60)),
    ],
)
def test_policies(case: str, kw: dict, expected: SlotPlan) -> None:
    assert plan(**kw) == expected, case


def test_once_fires_the_newest_missed_slot_when_nothing_is_on_time() -> None:
    # hourly schedule, beat down for 5 hours, now between slots
    hourly = dict(cron_expr="0 * * * *", next_run_at=T - T % 3600, now=T - T % 3600 + 5 * 3600 + 1800)
    base = hourly["next_run_at"]
    assert plan(**hourly) == SlotPlan((base + 5 * 3600,), 5, base + 6 * 3600)
    assert plan(**hourly, misfire_policy="skip") == SlotPlan((), 6, base + 6 * 3600)


def test_a_long_outage_is_not_walked_slot_by_slot() -> None:
    secondly = dict(cron_expr="* * * * * *", next_run_at=T, now=T + 86_400)
    result = plan(**secondly, max_scan=100)
    assert result.skipped_exact is False and result.skipped >= 100
    assert result.fire == (T + 86_400 - 60,)  # first slot inside the grace window
    assert result.next_run_at == T + 86_400 - 59
    once_no_ontime = plan(cron_expr="0 * * * *", next_run_at=T - T % 3600,
                          now=T - T % 3600 + 500 * 3600 + 1800, max_scan=10)
    assert once_no_ontime.fire == (T - T % 3600 + 500 * 3600,)
    assert once_no_ontime.skipped_exact is False


def test_skip_overlapped_passes_over_slots_due_during_the_run() -> None:
    assert skip_overlapped(EVERY_MIN, "UTC", T + 60, T + 30) == (T + 60, 0)
    # T+60, T+120 and T+180 fell due while the previous run was in flight
    assert skip_overlapped(EVERY_MIN, "UTC", T + 60, T + 200, "skip") == (T + 240, 3)
    assert skip_overlapped(EVERY_MIN, "UTC", T + 60, T + 200, "once") == (T + 180, 2)
    assert skip_overlapped(EVERY_MIN, "UTC", T + 60, T + 200, "all") == (T + 60, 0)
    assert skip_overlapped(EVERY_MIN, "UTC", T + 60, T + 60, "once") == (T + 60, 0)
    assert skip_overlapped(EVERY_MIN, "UTC", None, T) == (None, 0)


def test_jitter_is_deterministic_and_bounded() -> None:
    offsets = {jitter_offset("s1", T + i, 30) for i in range(200)}
    assert offsets <= set(range(31)) and len(offsets) > 10
    assert jitter_offset("s1", T, 30) == jitter_offset("s1", T, 30)
    assert jitter_offset("s1", T, 0) == 0


def test_a_lease_outlasts_the_whole_retry_budget_of_its_slot() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    from kern_tasks.firing.backoff import retry_budget_seconds
    from kern_tasks.scheduler.claims import lease_budget

    @given(st.integers(1, 7 * 24 * 3600), st.integers(0, 20), st.integers(0, 24 * 3600))
    def check(timeout: int, retries: int, delay: int) -> None:
        assert lease_budget(timeout, retries) >= retry_budget_seconds(timeout, retries, delay)

    check()
