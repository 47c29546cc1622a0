"""The statements of kern_tasks.workflow.progress on real Postgres and SQLite (migration 0005):
each transition happens once, a finished step is never queued again, and the sweep's
statements find what they promise (a lost attempt, a queued step whose message may be
lost, a run with nothing open)."""

from __future__ import annotations

from kern_tasks.db import Database, db_time
from kern_tasks.firing.liveness import LOST_AFTER_S, beat_once
from kern_tasks.workflow import progress
from kern_tasks.workflow.progress import Outcome


def new_run(db: Database, run_id: str = "r1") -> float:
    with db.begin() as conn:
        now = db_time(conn)
        progress.create_run(conn, run_id=run_id, workflow_id="wf", session_id="s", user_id=None,
                            request={"input": "x"}, session_state={"k": 1}, now=now)
    return now


def test_a_step_is_queued_taken_retried_and_finished_once(db: Database) -> None:
    now = new_run(db)
    with db.begin() as conn:
        assert progress.lock_run(conn, "r1")["status"] == "RUNNING"
        found = progress.load_progress(conn, "r1")
        assert progress.queue_steps(conn, "r1", {"0", "1/b0/0"}, found, now=now) == ["0", "1/b0/0"]
        # Queued already (open): not queued twice.
        assert progress.queue_steps(conn, "r1", {"0"}, progress.load_progress(conn, "r1"), now=now) == []
        taken = progress.take_step(conn, "r1", "0", worker_id="w", max_tries=2, now=now)
        assert taken is not None and (taken.attempt, taken.tries_left) == (1, 2)
        assert progress.take_step(conn, "r1", "0", worker_id="w2", max_tries=2, now=now) is None  # a duplicate
        second = progress.retry_step(conn, "r1", "0", taken, error="boom", worker_id="w", now=now)
        assert second is not None and (second.attempt, second.tries_left) == (2, 1)
        assert progress.retry_step(conn, "r1", "0", taken, error="again", worker_id="w", now=now) is None
        assert progress.finish_step(conn, second, Outcome({"content": "ok", "success": True}, None), now=now)
        assert not progress.finish_step(conn, second, Outcome(None, "late"), now=now)  # once
        progress.record_decisions(conn, "r1", {"1?choose": "if"}, now=now)
        found = progress.load_progress(conn, "r1")
        assert found.outcomes["0"].output == {"content": "ok", "success": True}
        assert found.decisions == {"1?choose": "if"} and found.open == {"1/b0/0"}
        # Finished: never queued again.
        assert progress.queue_steps(conn, "r1", {"0"}, found, now=now) == []
        assert [(r["path"], r["attempt"], r["status"], r["final"]) for r in progress.attempts(conn, "r1")] == [
            ("0", 1, "failed", False), ("0", 2, "succeeded", True), ("1/b0/0", 1, "queued", False)]
        assert progress.merge_state(conn, "r1", {"k": 1, "gone": 0}, {"n": 2}, {"gone"}, now=now) == {"k": 1, "n": 2}
        assert progress.finish_run(conn, "r1", status="COMPLETED", result={"status": "COMPLETED"}, now=now)
        assert not progress.finish_run(conn, "r1", status="ERROR", result={}, now=now)
        assert progress.get_run(conn, "r1")["session_state"] == {"k": 1, "n": 2}


def test_the_sweep_finds_lost_attempts_lost_messages_and_stalled_runs(db: Database) -> None:
    now = new_run(db)
    new_run(db, "stalled")
    with db.begin() as conn:
        beat_once(conn, "alive")
        found = progress.load_progress(conn, "r1")
        progress.queue_steps(conn, "r1", {"0", "1", "2"}, found, now=now - 2 * LOST_AFTER_S)
        dead = progress.take_step(conn, "r1", "0", worker_id="dead", max_tries=1, now=now - 2 * LOST_AFTER_S)
        live = progress.take_step(conn, "r1", "1", worker_id="alive", max_tries=1, now=now - 2 * LOST_AFTER_S)
        assert dead is not None and live is not None
    later = now + 1
    with db.begin() as conn:
        # The dead worker's attempt (no kern_workers row) is lost and queued again; the live one's is not.
        assert progress.expire_lost_steps(conn, now=later, limit=10) == [("r1", "0")]
        assert progress.expire_lost_steps(conn, now=later, limit=10) == []
        # Step 2's message went out long ago: sent again, once per REPUBLISH_AFTER_S.
        assert progress.republish_queued(conn, now=later, limit=10) == [("r1", "2")]
        assert progress.republish_queued(conn, now=later, limit=10) == []
        # "stalled" has nothing open: advanced again after STALLED_AFTER_S; r1 has open steps.
        assert progress.stalled_runs(conn, now=later + progress.STALLED_AFTER_S, limit=10) == ["stalled"]
        rows = [(r["path"], r["attempt"], r["status"]) for r in progress.attempts(conn, "r1")]
    assert rows == [("0", 1, "lost"), ("0", 2, "queued"), ("1", 1, "running"), ("2", 1, "queued")]
