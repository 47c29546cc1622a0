"""The core reads behind the dashboard's runs, workflow run and health pages, on Postgres
and SQLite (the `db` fixture): scheduler/history.py (recent attempts across schedules,
fires, lag and overdue schedules per bucket) and workflow/tree.py (a run's step tree from
agno's record; the tree of runs on workers is tests/test_dashboard_workflows.py's).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import event, update

from kern_tasks.db import Database, db_now
from kern_tasks.db.tables import schedule_runs, schedules
from kern_tasks.errors import ValidationError
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.scheduler.history import OVERDUE_AFTER_S, SETTLED_AFTER_S, RunHistory
from kern_tasks.workflow import Parallel, Step, Workflow
from kern_tasks.workflow.tree import preview, run_mark, run_tree


def attempt(schedule_id: str, user: str | None, status: str, slot: int, *, lag: int | None = 0,
            **extra: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "schedule_id": schedule_id, "attempt": 1, "status": status,
            "created_at": slot, "scheduled_for": slot, "triggered_at": None if lag is None else slot + lag,
            "completed_at": None if lag is None else slot + lag + 3, "user_id": user,
            **{"run_id": None, "error": None, "status_code": None, "backfill": False, **extra}}


def seed(db: Database) -> dict[str, Any]:
    manager = ScheduleManager(db)
    mine = manager.create(name="mine", cron="*/5 * * * *", endpoint="/workflows/wf/runs", user_id="u1")
    theirs = manager.create(name="theirs", cron="0 * * * *", endpoint="/agents/a/runs", user_id="u2")
    with db.begin() as conn:
        now = db_now(conn)
        rows = [
            attempt(mine.id, "u1", "success", now - 10, lag=1, run_id="r1"),
            attempt(mine.id, "u1", "failed", now - 100, lag=2, error="boom", status_code=500),
            attempt(mine.id, "u1", "success", now - 200, lag=90),  # late: overdue in its bucket
            attempt(mine.id, "u1", "timeout", now - 300, lag=0),
            attempt(mine.id, "u1", "success", now - 400, lag=5, backfill=True),  # no lag counted
            attempt(theirs.id, "u2", "failed", now - 50, lag=0),
            attempt(theirs.id, "u2", "skipped", now - 500, lag=None),
            attempt(theirs.id, "u2", "success", now - 3 * 86400, lag=0),  # outside 24h
        ]
        conn.execute(schedule_runs.insert(), rows)
        conn.execute(update(schedules).values(next_run_at=now + 86400))  # no beat here moves them on
        conn.execute(update(schedules).where(schedules.c.id == theirs.id).values(next_run_at=now - 600))
    return {"mine": mine, "theirs": theirs, "rows": rows, "now": now}


def test_recent_attempts_scoped_paged_and_failures_first(db: Database) -> None:
    seeded = seed(db)
    history = RunHistory(db)
    newest = history.recent(user_id="u1", limit=10)
    assert [r.status for r in newest.runs] == ["success", "failed", "success", "timeout", "success"]
    assert not newest.has_next and {r.schedule_name for r in newest.runs} == {"mine"}
    first = newest.runs[0]
    assert (first.target_type, first.target_id, first.run_id, first.duration_s) == ("workflow", "wf", "r1", 3)
    lifted = history.recent(user_id="u1", failures_first=True, limit=2)
    assert [r.status for r in lifted.runs] == ["failed", "timeout"] and lifted.has_next
    second = history.recent(user_id="u1", failures_first=True, limit=2, page=2)
    assert [r.status for r in second.runs] == ["success", "success"]
    across = history.recent(user_id="u1", failures_first=True, limit=3, page=1)  # the failures, then the rest
    assert [r.status for r in across.runs] == ["failed", "timeout", "success"] and across.has_next
    past = history.recent(user_id="u1", failures_first=True, limit=3, page=2)  # past every failure
    assert [r.id for r in past.runs] == [r.id for r in newest.runs if r.status == "success"][1:]
    assert not past.has_next
    assert {r.user_id for r in history.recent(user_id="u2").runs} == {"u2"}
    assert len(history.recent(user_id=None).runs) == 7  # the 3-day-old one is outside 24h
    assert len(history.recent(user_id=None, window="7d").runs) == 8
    assert [r.status for r in history.recent(user_id=None, status="failed").runs] == ["failed", "failed"]
    assert seeded["rows"][1]["id"] in {r.id for r in history.recent(user_id="u1", status="failed").runs}


def test_health_buckets_counts_lag_and_overdue(db: Database) -> None:
    seed(db)
    history = RunHistory(db)
    hour = history.health(user_id="u1", window="1h")
    assert len(hour.buckets) == 60 and hour.bucket_s == 60 and hour.end - hour.start == 3600
    assert hour.totals() == {"success": 3, "failed": 1, "timeout": 1}
    assert sum(b.lag_count for b in hour.buckets) == 4  # the backfilled slot is left out
    assert max(b.lag_max_s or 0 for b in hour.buckets) == 90
    assert sum(b.overdue for b in hour.buckets) == 1
    assert [b.start for b in hour.buckets] == sorted(b.start for b in hour.buckets)
    everyone = history.health(user_id=None, window="24h")
    assert len(everyone.buckets) == 96 and sum(b.total for b in everyone.buckets) == 7
    assert sum(b.overdue for b in everyone.buckets) == 2  # and u2's skipped slot
    assert history.overdue(user_id="u1") == (0, [])
    count, late = history.overdue(user_id=None)
    assert count == 1 and late[0].name == "theirs" and late[0].late_s >= 600


def test_settled_buckets_are_read_once_per_cache_period(db: Database) -> None:
    manager = ScheduleManager(db)
    old = manager.create(name="old", cron="0 * * * *", endpoint="/agents/a/runs")
    with db.begin() as conn:
        now = db_now(conn)
        conn.execute(schedule_runs.insert(), [attempt(old.id, None, status, now - ago, run_id=None, error=None)
                                              for status, ago in (("success", 3 * 3600), ("failed", 2 * 3600),
                                                                  ("success", 600))])
    sent: list[int] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if "overdue" in statement:
            values = parameters.values() if isinstance(parameters, dict) else parameters
            sent.append(min(v for v in values if isinstance(v, int) and v > 10**9))

    event.listen(db.engine, "before_cursor_execute", grab)
    try:
        history = RunHistory(db)
        first = history.health(user_id=None, window="24h")
        again = history.health(user_id=None, window="24h")
    finally:
        event.remove(db.engine, "before_cursor_execute", grab)
    assert [b.counts for b in first.buckets] == [b.counts for b in again.buckets]
    assert first.totals() == {"success": 2, "failed": 1}
    assert sent[0] == first.start  # the whole day, then only what is not settled yet
    assert sent[1] >= first.end - SETTLED_AFTER_S - first.bucket_s and sent[1] > first.start


@pytest.mark.parametrize(("call", "field"), [
    ({"window": "1y"}, "window"), ({"status": "nope"}, "status"), ({"page": 0}, "page"), ({"limit": 500}, "limit"),
])
def test_bad_arguments_name_their_field(db: Database, call: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        RunHistory(db).recent(user_id=None, **call)
    assert refused.value.field == field
    with pytest.raises(ValidationError, match="window"):
        RunHistory(db).health(user_id=None, window="7d")


def test_a_run_kept_by_agno_runs_reads_as_a_tree(db: Database) -> None:
    workflow = Workflow(id="wf", name="wf", db=db, steps=[
        Step(name="first", executor=lambda step_input: "one"),
        Parallel(Step(name="a", executor=lambda step_input: {"k": "v"}),
                 Step(name="b", executor=lambda step_input: "x" * 1000), name="both"),
    ])
    run = workflow.run("go", user_id="u1")
    tree = run_tree(db, str(run.run_id), workflow_id="wf", user_id="u1")
    assert tree is not None and tree.source == "agno_runs" and tree.ended and tree.status == "COMPLETED"
    assert [(n.name, n.kind, n.status) for n in tree.nodes] == [("first", "Step", "succeeded"),
                                                                 ("both", "Parallel", "succeeded")]
    assert [c.name for c in tree.nodes[1].children] == ["a", "b"]
    assert tree.nodes[0].preview == "one" and len(tree.nodes[1].children[1].preview or "") <= 240
    assert run_tree(db, str(run.run_id), workflow_id="wf", user_id="u2") is None  # another owner's
    assert run_tree(db, str(run.run_id), workflow_id="other", user_id=None) is None
    assert run_tree(db, "missing", workflow_id="wf", user_id=None) is None
    assert run_mark(db, str(run.run_id), workflow_id="wf", user_id=None) is None  # not a run on workers


def test_preview_is_one_short_line() -> None:
    assert preview(None) is None
    assert preview("a\n  b\tc") == "a b c"
    assert preview({"rows": [1, 2]}) == '{"rows": [1, 2]}'
    assert preview("y" * 500, limit=10) == "y" * 9 + "…"
