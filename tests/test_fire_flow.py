"""End to end: schedules fired by real beat and worker processes at a real HTTP target.

Two stacks, each one beat and one worker (`celery -A kern_tasks beat|worker`, see
tests/processes.py) and a loopback `TargetServer` whose answers are scripted per path:

- `pg`: Postgres (a schema of its own) and Redis database 9, shared by most tests of
  this module; each test uses its own schedules and target paths. The broker database
  is flushed when the stack starts and stops, not between its tests: a flush removes
  kombu's queue bindings under a running worker, and later messages would be dropped.
- the embedded default: no KERN_DATABASE_URL and no KERN_BROKER_URL, so SQLite and
  kombu's SQL transport in KERN_DATA_DIR (a tmp folder).

The misfire scenario is staged before the `pg` stack's beat starts (schedules whose
next_run_at lies 5 hours back, as after an outage of every beat); its test only checks
what beat made of them.

Timestamps in agno_schedule_runs are whole seconds; gaps are measured on the target's
arrival times (floats) where a second is too coarse.
"""

from __future__ import annotations

import re
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import RowMapping, select, update

from kern_tasks.db import Database, db_now, schedule_runs, schedules
from kern_tasks.firing.backoff import backoff_bound
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.scheduler.cron import next_run_epoch
from kern_tasks.scheduler.models import Schedule
from kern_tasks.settings import Settings
from tests.fire_stack import fire_stack
from tests.processes import Processes, kern_env, wait_for
from tests.targets import AgnoRun, Reply, Request, TargetServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REDIS_DB = 9
EVERY_SECOND = "* * * * * *"
FAR_CRON = "0 0 1 1 *"  # New Year only: fires when triggered or forced due, never by itself
SLACK_S = 2.5  # scheduling noise allowed on top of a computed wait (busy 2-core machine)
OPEN = ("queued", "running")
FORM = "application/x-www-form-urlencoded"


# --- the stack --------------------------------------------------------------------------------


@dataclass
class Stack:
    """A database, a target, and the beat and worker processes firing at it."""

    db: Database
    target: TargetServer
    cluster: Processes
    manager: ScheduleManager = field(init=False)
    staged: dict[str, Any] = field(default_factory=dict)  # scenarios set up before beat ran

    def __post_init__(self) -> None:
        self.manager = ScheduleManager(self.db)

    def create(self, name: str, **options: Any) -> Schedule:
        """A schedule firing at /{name} of the target, never by itself unless `cron` says so."""
        options.setdefault("cron", FAR_CRON)
        options.setdefault("endpoint", f"/{name}")
        options.setdefault("timeout_seconds", 10)
        return self.manager.create(name=name, **options)

    def now(self) -> int:
        with self.db.connect() as conn:
            return db_now(conn)

    def set_next_run_at(self, schedule_id: str, next_run_at: int) -> None:
        """Write next_run_at behind the manager's back (as an outage or a clock would)."""
        with self.db.begin() as conn:
            conn.execute(update(schedules).where(schedules.c.id == schedule_id).values(next_run_at=next_run_at))

    def due_now(self, schedule_id: str) -> int:
        """Make the schedule's next slot "now" (database clock); returns that slot."""
        now = self.now()
        self.set_next_run_at(schedule_id, now)
        return now

    def runs(self, schedule_id: str) -> list[RowMapping]:
        """Every attempt row of the schedule, by slot, then attempt."""
        with self.db.connect() as conn:
            return list(
                conn.execute(
                    select(schedule_runs)
                    .where(schedule_runs.c.schedule_id == schedule_id)
                    .order_by(schedule_runs.c.scheduled_for, schedule_runs.c.attempt)
                ).mappings()
            )

    def settled_runs(self, schedule_id: str, count: int, timeout: float) -> list[RowMapping]:
        """Wait until the schedule has at least `count` attempt rows, none of them open."""

        def done() -> list[RowMapping] | None:
            rows = self.runs(schedule_id)
            return rows if len(rows) >= count and all(r["status"] not in OPEN for r in rows) else None

        return wait_for(done, timeout, what=f"{count} finished run row(s) of {schedule_id}")

    def quiesce(self, *schedule_ids: str, timeout: float = 20) -> None:
        """Disable the schedules and wait until none of their attempts is still open."""
        for schedule_id in schedule_ids:
            self.manager.disable(schedule_id)
        for schedule_id in schedule_ids:
            wait_for(
                lambda: all(r["status"] not in OPEN for r in self.runs(schedule_id)), timeout,
                what=f"open attempts of {schedule_id} to end",
            )  # fmt: skip

    @contextmanager
    def logs_on_failure(self) -> Iterator[None]:
        """Print the processes' logs when the block fails (pytest shows them with the failure)."""
        try:
            yield
        except BaseException:
            print(self.cluster.dump_logs(tail=150))
            raise


def start_processes(stack: Stack, stage: Callable[[Stack], None] | None = None) -> None:
    """Worker first (ready before anything is published), then stage, then beat."""
    stack.cluster.worker(concurrency=8)
    stack.cluster.wait_for_log("worker", " ready.", timeout=60)
    if stage is not None:
        stage(stack)
    stack.cluster.beat(max_interval=5)


# --- the Postgres + Redis stack, and what is staged before its beat starts ---------------------


def stage_misfires(stack: Stack) -> None:
    """Three hourly schedules whose next_run_at is 5 hours back: 6 missed slots each.

    The cron's minute is half an hour away from now, so the newest missed slot is about
    30 minutes old: never within the 60 s misfire grace, whatever the time of day."""
    now = stack.now()
    minute = ((now % 3600) // 60 + 30) % 60
    cron = f"{minute} * * * *"
    last = next_run_epoch(cron, "UTC", now - 3600)  # the newest slot <= now
    first = last - 5 * 3600
    ids = {
        "once": stack.create("misfire-once", cron=cron, misfire_policy="once").id,
        "skip": stack.create("misfire-skip", cron=cron, misfire_policy="skip").id,
        # A window of 3 h holds the slots 30 min, 1 h 30 and 2 h 30 old, not 3 h 30.
        "all": stack.create(
            "misfire-all", cron=cron, misfire_policy="all", overlap_policy="allow", catchup_window_seconds=3 * 3600
        ).id,
    }
    for schedule_id in ids.values():
        stack.set_next_run_at(schedule_id, first)
    stack.staged["misfire"] = {"ids": ids, "first": first, "last": last}


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with fire_stack(tmp_path_factory.mktemp("pg-stack"), REDIS_DB) as made:
        stack = Stack(made.db, made.target, made.procs)
        start_processes(stack, stage=stage_misfires)
        yield stack


def arrivals(requests: list[Request]) -> list[float]:
    return [r.monotonic for r in requests]


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


def slot_of(request: Request) -> int:
    """The slot a fire belongs to, from its Idempotency-Key (kern:{schedule}:{kind}:{slot})."""
    return int(request.headers["idempotency-key"].rsplit(":", 1)[1])


def lag_summary(requests: list[Request]) -> str:
    """Median and worst delay from a cron slot (in the Idempotency-Key) to its arrival."""
    lags = [r.at - slot_of(r) for r in requests]
    return f"median {statistics.median(lags):.2f}s, max {max(lags):.2f}s over {len(lags)}" if lags else "none"


# --- retries ------------------------------------------------------------------------------------


def test_retries_back_off_within_their_bounds_then_succeed(pg: Stack) -> None:
    with pg.logs_on_failure():
        pg.target.script("/retry", [Reply(500), Reply(503), Reply(200, json={"ok": True})])
        sched = pg.create("retry", max_retries=2, retry_delay_seconds=1)
        slot = pg.due_now(sched.id)

        rows = pg.settled_runs(sched.id, 3, timeout=30)
        hits = pg.target.requests("/retry")

        assert [r["attempt"] for r in rows] == [1, 2, 3]
        assert [r["status"] for r in rows] == ["retrying", "retrying", "success"]
        assert [r["status_code"] for r in rows] == [500, 503, 200]
        assert {r["scheduled_for"] for r in rows} == {slot}
        assert not any(r["manual"] for r in rows)
        assert len(hits) == 3
        assert [h.headers["x-kern-attempt"] for h in hits] == ["1", "2", "3"]
        assert len({h.headers["idempotency-key"] for h in hits}) == 1  # one slot, one key
        waits = gaps(arrivals(hits))
        for retry_number, wait in enumerate(waits, start=1):
            bound = backoff_bound(1, retry_number)
            assert 0 < wait <= bound + SLACK_S, f"wait before retry {retry_number}: {wait:.2f}s > {bound}s + slack"
        print(f"retry waits {[round(w, 2) for w in waits]} s (bounds 1, 2)")
        # Overlap "forbid": the slot held the schedule's lease through its retries, and
        # its last attempt gave it back.
        token = rows[0]["lease_token"]
        assert token and all(r["lease_token"] == token for r in rows)
        assert pg.manager.get(sched.id).locked_by is None


def test_a_404_fails_at_once_without_retries(pg: Stack) -> None:
    with pg.logs_on_failure():
        pg.target.script("/gone", Reply(404, json={"detail": "Not Found"}))
        sched = pg.create("gone", max_retries=3, retry_delay_seconds=1)
        pg.manager.trigger(sched.id)

        pg.settled_runs(sched.id, 1, timeout=15)
        time.sleep(backoff_bound(1, 1) + SLACK_S)  # a retry would have come by now

        rows = pg.runs(sched.id)
        assert [(r["attempt"], r["status"], r["status_code"]) for r in rows] == [(1, "failed", 404)]
        assert "404" in rows[0]["error"]
        assert len(pg.target.requests("/gone")) == 1


def test_a_hung_target_times_out(pg: Stack) -> None:
    with pg.logs_on_failure():
        pg.target.script("/hung", Reply(200, delay=60))
        sched = pg.create("hung", timeout_seconds=2, max_retries=0)
        pg.manager.trigger(sched.id)

        rows = pg.settled_runs(sched.id, 1, timeout=20)

        assert [(r["attempt"], r["status"]) for r in rows] == [(1, "timeout")]
        row = rows[0]
        assert row["status_code"] is None
        assert "2s" in row["error"]
        # Whole seconds (floored): the attempt lasted its 2 s, nowhere near the target's 60 s.
        assert 2 <= row["completed_at"] - row["triggered_at"] <= 2 + SLACK_S
        assert len(pg.target.requests("/hung")) == 1


def test_429_retry_after_is_honoured(pg: Stack) -> None:
    retry_after_s = 3
    with pg.logs_on_failure():
        pg.target.script(
            "/busy", [Reply(429, headers={"Retry-After": str(retry_after_s)}), Reply(200, json={"ok": True})]
        )
        sched = pg.create("busy", max_retries=1, retry_delay_seconds=1)  # jitter alone: at most 1 s
        pg.manager.trigger(sched.id)

        rows = pg.settled_runs(sched.id, 2, timeout=25)
        hits = pg.target.requests("/busy")

        assert [(r["attempt"], r["status"], r["status_code"]) for r in rows] == [
            (1, "retrying", 429), (2, "success", 200),
        ]  # fmt: skip
        assert rows[1]["not_before"] - rows[0]["completed_at"] >= retry_after_s
        assert len(hits) == 2
        (wait,) = gaps(arrivals(hits))
        print(f"429 Retry-After {retry_after_s}s: the retry came {wait:.2f}s after the first call")
        # No earlier than asked (2 ms for clock granularity), and not much later either.
        assert retry_after_s - 0.002 <= wait <= retry_after_s + SLACK_S


# --- agno's run protocol ------------------------------------------------------------------------

AGNO_CASES = {
    # agno status: (what the target adds to the terminal body, our run status)
    "COMPLETED": ({}, "success"),
    "PAUSED": ({"requirements": [{"tool": "approve_payment", "args": {"amount": 10}}]}, "paused"),
    "CANCELLED": ({}, "cancelled"),
    "ERROR": ({"error": "the model exploded"}, "failed"),
}


def test_agno_run_endpoints_map_each_terminal_status(pg: Stack) -> None:
    with pg.logs_on_failure():
        made = {}
        for agno_status, (fields, _) in AGNO_CASES.items():
            agent = f"agent-{agno_status.lower()}"
            path = f"/agents/{agent}/runs"
            run = AgnoRun(polls=["RUNNING", agno_status], content=f"said {agno_status}", fields=fields)
            pg.target.script(path, run)
            sched = pg.create(f"agno-{agno_status.lower()}", endpoint=path, payload={"message": "hello"})
            pg.manager.trigger(sched.id)
            made[agno_status] = (sched, path)

        for agno_status, (sched, path) in made.items():
            fields, expected = AGNO_CASES[agno_status]
            (row,) = pg.settled_runs(sched.id, 1, timeout=25)
            posts = [r for r in pg.target.requests(path) if r.method == "POST"]
            polls = [r for r in pg.target.requests() if r.method == "GET" and r.path.startswith(path + "/")]

            assert row["status"] == expected, agno_status
            assert row["manual"] is True
            assert len(posts) == 1
            post = posts[0]
            assert post.headers["content-type"].startswith(FORM)
            form = dict(parse_qsl(post.body.decode()))
            assert form["background"] == "true" and form["stream"] == "false"
            assert form["message"] == "hello"
            assert "session_id" not in form  # so a session id on the row can only be the target's
            # Ids as the target answered them in its 202, which the polls used.
            assert len(polls) >= 2  # RUNNING, then the terminal status
            assert {p.path.rsplit("/", 1)[1] for p in polls} == {row["run_id"]}
            assert re.fullmatch(r"[0-9a-f]{32}", row["session_id"] or "")
            assert {p.params.get("session_id") for p in polls} == {row["session_id"]}
            assert row["output"]["content"] == f"said {agno_status}"
            if agno_status == "PAUSED":
                assert row["requirements"] == fields["requirements"]
            if agno_status == "ERROR":
                assert "the model exploded" in row["error"]


# --- misfire and overlap policies ---------------------------------------------------------------


def test_misfire_policies_after_beat_was_down(pg: Stack) -> None:
    staged = pg.staged["misfire"]
    ids, first, last = staged["ids"], staged["first"], staged["last"]
    hour = 3600
    with pg.logs_on_failure():
        wait_for(lambda: pg.manager.get(ids["skip"]).next_run_at != first, 30, what="beat to pass the skip schedule")
        pg.settled_runs(ids["once"], 1, timeout=30)
        pg.settled_runs(ids["all"], 3, timeout=30)
        time.sleep(2)  # a couple more ticks: nothing else may fire

        once, skip, catchup = (pg.manager.get(ids[k]) for k in ("once", "skip", "all"))
        once_runs, skip_runs, all_runs = (pg.runs(ids[k]) for k in ("once", "skip", "all"))

        # once: the newest missed slot fires, late, once; the 5 before it are counted.
        assert [(r["scheduled_for"], r["status"]) for r in once_runs] == [(last, "success")]
        assert once.skipped_slots == 5
        assert len(pg.target.requests("/misfire-once")) == 1
        # skip: nothing fires; all 6 missed slots are counted; the cron goes on from now.
        assert skip_runs == []
        assert skip.skipped_slots == 6
        assert skip.next_run_at == last + hour and skip.next_run_at > pg.now()
        assert pg.target.requests("/misfire-skip") == []
        # all, within a 3 h window: the 3 newest slots fire, the 3 older ones are counted.
        assert [(r["scheduled_for"], r["status"]) for r in all_runs] == [
            (last - 2 * hour, "success"), (last - hour, "success"), (last, "success"),
        ]  # fmt: skip
        assert catchup.skipped_slots == 3
        all_keys = {r.headers["idempotency-key"] for r in pg.target.requests("/misfire-all")}
        assert len(all_keys) == 3 and len(pg.target.requests("/misfire-all")) == 3
        for sched in (once, catchup):
            assert sched.next_run_at == last + hour
            assert sched.locked_by is None


def test_overlap_forbid_never_overlaps_and_allow_does(pg: Stack) -> None:
    """Every second, a target that takes 2 s: forbid runs one at a time and counts the
    slots passed over; allow fires every slot, two at a time."""
    hold_s = 2.0
    with pg.logs_on_failure():
        pg.target.script("/slow-forbid", Reply(200, delay=hold_s))
        pg.target.script("/slow-allow", Reply(200, delay=hold_s))
        forbid = pg.create("slow-forbid", cron=EVERY_SECOND)
        allow = pg.create("slow-allow", cron=EVERY_SECOND, overlap_policy="allow")
        assert forbid.overlap_policy == "forbid"  # the default
        first_forbid = forbid.next_run_at

        wait_for(lambda: len(pg.target.requests("/slow-forbid")) >= 4, 40, what="4 forbid runs")
        wait_for(lambda: len(pg.target.requests("/slow-allow")) >= 4, 20, what="4 allow runs")
        pg.quiesce(forbid.id, allow.id)

        # forbid: one run at a time, as the target saw it (float clock) and as the rows say.
        forbid_hits = arrivals(pg.target.requests("/slow-forbid"))
        forbid_rows = [r for r in pg.runs(forbid.id) if r["status"] == "success"]
        print(f"forbid: gaps between calls {[round(g, 2) for g in gaps(forbid_hits)]} s")
        assert all(g >= hold_s - 0.05 for g in gaps(forbid_hits))
        by_start = sorted(forbid_rows, key=lambda r: (r["triggered_at"], r["scheduled_for"]))
        for prev, nxt in zip(by_start, by_start[1:]):
            assert nxt["triggered_at"] >= prev["completed_at"]
            # Of the slots that fell due meanwhile only the newest fired (misfire "once").
            assert nxt["scheduled_for"] >= prev["completed_at"]
        # Every slot from the first on was either fired or counted as skipped.
        final = pg.manager.get(forbid.id)
        materialised = {r["scheduled_for"] for r in pg.runs(forbid.id)}
        assert len(materialised) == len(pg.runs(forbid.id))  # one attempt per slot here
        slots = set(range(first_forbid, final.next_run_at))
        assert materialised <= slots
        assert final.skipped_slots >= len(forbid_rows) - 1 >= 3
        assert len(materialised) + final.skipped_slots == len(slots)

        # allow: the next slot's run starts while the previous one is still in flight.
        allow_requests = pg.target.requests("/slow-allow")
        allow_hits = arrivals(allow_requests)
        allow_rows = [r for r in pg.runs(allow.id) if r["attempt"] == 1]
        print(f"allow: gaps between calls {[round(g, 2) for g in gaps(allow_hits)]} s")
        print(f"allow: fire lag (arrival - slot) {lag_summary(allow_requests)}")
        assert any(g < hold_s - 0.5 for g in gaps(allow_hits))
        done = sorted((r for r in allow_rows if r["status"] == "success"), key=lambda r: r["scheduled_for"])
        assert any(nxt["triggered_at"] < prev["completed_at"] for prev, nxt in zip(done, done[1:]))
        fired = sorted(r["scheduled_for"] for r in allow_rows)
        assert fired == list(range(fired[0], fired[0] + len(fired)))  # every slot, once
        assert pg.manager.get(allow.id).skipped_slots == 0


# --- trigger, disable, edit -----------------------------------------------------------------------


def test_trigger_now_fires_at_once_and_leaves_the_cron_alone(pg: Stack) -> None:
    with pg.logs_on_failure():
        sched = pg.create("trigger-me")
        before = pg.manager.get(sched.id).next_run_at
        assert before > pg.now() + 60  # New Year: not while this test runs

        started = time.monotonic()
        run = pg.manager.trigger_run(sched.id)
        (hit,) = pg.target.wait_for_requests(1, "/trigger-me", timeout=5)
        latency = hit.monotonic - started
        print(f"trigger -> target: {latency:.2f}s")
        assert latency <= 3.0

        (row,) = pg.settled_runs(sched.id, 1, timeout=10)
        assert row["id"] == run.id
        assert row["status"] == "success" and row["manual"] is True
        assert row["scheduled_for"] == run.scheduled_for
        assert hit.headers["idempotency-key"] == f"kern:{sched.id}:manual:{run.scheduled_for}"
        after = pg.manager.get(sched.id)
        assert after.next_run_at == before
        assert after.locked_by is None


def test_a_batch_holds_no_fast_call_behind_a_slow_one_and_a_duplicate_message_fires_nothing_twice(pg: Stack) -> None:
    """Four schedules due in one second go as one kern.fire_batch message: the three fast
    calls are recorded while the slow one still runs; the same message delivered twice
    more (as a broker redelivery would) fires nothing again."""
    from celery import Celery

    with pg.logs_on_failure():
        pg.target.script("/dup/0", Reply(delay=3, json={"slow": True}))
        made = [pg.create(f"dup-{i}", endpoint=f"/dup/{i}") for i in range(4)]
        slot = pg.now() + 2
        for schedule in made:
            pg.set_next_run_at(schedule.id, slot)

        def fast_ones_done() -> list[RowMapping] | None:
            rows = [row for schedule in made for row in pg.runs(schedule.id)]
            by_path = {row["schedule_id"]: row["status"] for row in rows}
            fast = [by_path.get(schedule.id) for schedule in made[1:]]
            return rows if fast == ["success"] * 3 and by_path.get(made[0].id) == "running" else None

        rows = wait_for(fast_ones_done, 15, 0.05, "the fast calls recorded while the slow one runs")
        ids = sorted(row["id"] for row in rows)
        # "Task kern.fire_batch[dup-0,...][<first id>+3] received": the shadow names the schedules.
        batches = re.findall(r"kern\.fire_batch(?:\[[^\]]*\])?\[([^\]]+)\] received", pg.cluster.log_text("worker"))
        assert any(batch.endswith("+3") for batch in batches), batches  # the four, one message

        sender = Celery("duplicates", broker=pg.cluster.env["KERN_BROKER_URL"])
        for copy in ("dup-copy-1", "dup-copy-2"):
            sender.send_task("kern.fire_batch", args=[ids], task_id=copy)
        wait_for(lambda: pg.cluster.log_text("worker").count("kern.fire_batch[dup-copy-") >= 4, 15, 0.1,
                 "both copies received and done")  # fmt: skip
        for schedule in made:
            (row,) = pg.settled_runs(schedule.id, 1, timeout=10)
            assert (row["status"], row["attempt"]) == ("success", 1)
        for i in range(4):
            assert len(pg.target.requests(f"/dup/{i}")) == 1, f"/dup/{i} was called twice"


def test_a_disabled_schedule_never_fires(pg: Stack) -> None:
    with pg.logs_on_failure():
        off = pg.create("disabled", cron=EVERY_SECOND, enabled_on_create=False)
        twin = pg.create("disabled-twin", cron=EVERY_SECOND)  # the control: proves beat fires meanwhile
        time.sleep(5)
        pg.quiesce(twin.id)

        assert pg.target.requests("/disabled") == []
        assert pg.runs(off.id) == []
        assert len(pg.target.requests("/disabled-twin")) >= 3


def test_an_edited_schedule_fires_on_its_new_cron_and_endpoint(pg: Stack) -> None:
    with pg.logs_on_failure():
        sched = pg.create("edit-old", cron="*/10 * * * *")
        if sched.next_run_at - pg.now() < 10:  # a 10-minute slot is just coming: let it pass first
            time.sleep(sched.next_run_at - pg.now() + 2)
            pg.settled_runs(sched.id, 1, timeout=10)
        fired_before = len(pg.runs(sched.id))

        edited_at = pg.now()
        pg.manager.update(sched.id, cron=EVERY_SECOND)
        old_hits = pg.target.wait_for_requests(fired_before + 2, "/edit-old", timeout=6)[fired_before:]
        assert old_hits[0].at >= edited_at

        pg.manager.update(sched.id, endpoint="/edit-new")
        moved_at = time.time()
        new_hits = pg.target.wait_for_requests(2, "/edit-new", timeout=6)
        time.sleep(1.5)
        pg.quiesce(sched.id)

        # Slots of the new cron: every second from the edit on.
        rows = pg.runs(sched.id)[fired_before:]
        assert len(rows) >= 4
        assert all(r["scheduled_for"] >= edited_at for r in rows)
        # After the endpoint change (and a run that was already in flight), only /edit-new.
        late_old = [h for h in pg.target.requests("/edit-old") if h.at > moved_at + 1.0]
        assert late_old == []
        assert all(h.at >= moved_at - 0.01 for h in new_hits)


# --- the embedded default: SQLite and kombu's SQL transport ---------------------------------------


def test_embedded_sqlite_default(tmp_path: Path) -> None:
    """No KERN_DATABASE_URL, no KERN_BROKER_URL: the same code on files in KERN_DATA_DIR."""
    data_dir = tmp_path / "kern-data"
    with TargetServer() as target:
        cluster = Processes(tmp_path / "logs", env=kern_env(database_url="unused", base_url=target.url, data_dir=data_dir))
        del cluster.env["KERN_DATABASE_URL"]
        assert not any(k in cluster.env for k in ("KERN_DATABASE_URL", "KERN_BROKER_URL", "KERN_DB_SCHEMA"))
        settings = Settings.from_env(cluster.env)
        assert settings.is_embedded and settings.broker_url is None
        db = Database(settings=settings)  # the processes' own default file; migrates itself
        stack = Stack(db, target, cluster)
        try:
            with stack.logs_on_failure():
                assert db.dialect == "sqlite" and Path(db.url.database) == data_dir / "kern.db"
                every = stack.create("tick", cron=EVERY_SECOND, overlap_policy="allow")
                default = stack.create("tick-default", cron=EVERY_SECOND)  # overlap forbid
                target.script("/flaky", [Reply(500), Reply(200, json={"ok": True})])
                flaky = stack.create("flaky", max_retries=1, retry_delay_seconds=1)
                manual = stack.create("manual")
                start_processes(stack)
                flaky_slot = stack.due_now(flaky.id)
                run = stack.manager.trigger_run(manual.id)
                observed_from = stack.now()
                time.sleep(10)
                disabled_at = stack.now()
                stack.quiesce(every.id, default.id)

                # Every second: each slot since the processes came up fired exactly once.
                ticks = stack.runs(every.id)
                slots = [r["scheduled_for"] for r in ticks]
                ran = [r["scheduled_for"] for r in ticks if r["status"] == "success"]
                keys = [h.headers["idempotency-key"] for h in target.requests("/tick")]
                print(f"embedded: {len(ran)} ticks ran, {len(slots)} slots materialised")
                on_time = [h for h in target.requests("/tick") if slot_of(h) >= observed_from]  # not backlog
                print(f"embedded: fire lag {lag_summary(on_time)}")
                assert len([s for s in ran if s >= observed_from]) >= 7
                assert slots == list(range(slots[0], slots[0] + len(slots)))  # no slot lost, none twice
                assert all(r["attempt"] == 1 for r in ticks)
                # Only a slot still queued when the schedule was disabled may end cancelled.
                assert all(r["status"] == "success" for r in ticks if r["scheduled_for"] < disabled_at - 1)
                assert all(r["status"] in ("success", "cancelled") for r in ticks)
                # The target saw each slot that ran, once, under its slot's key.
                assert sorted(keys) == sorted(f"kern:{every.id}:slot:{s}" for s in ran)

                # The default (forbid) passes over slots that fall due while a run is in
                # flight: every slot is fired or counted, and most fire.
                final = stack.manager.get(default.id)
                default_slots = [r["scheduled_for"] for r in stack.runs(default.id)]
                first_slot = default.next_run_at
                assert len(set(default_slots)) == len(default_slots)
                assert set(default_slots) <= set(range(first_slot, final.next_run_at))
                assert len(default_slots) + final.skipped_slots == final.next_run_at - first_slot
                assert len([s for s in default_slots if s >= observed_from]) >= 4
                print(f"embedded, forbid: {len(default_slots)} fired, {final.skipped_slots} skipped")

                # A retry: 500, then success, one slot, two attempts.
                flaky_rows = stack.settled_runs(flaky.id, 2, timeout=15)
                assert [(r["attempt"], r["status"], r["status_code"]) for r in flaky_rows] == [
                    (1, "retrying", 500), (2, "success", 200),
                ]  # fmt: skip
                assert {r["scheduled_for"] for r in flaky_rows} == {flaky_slot}
                assert len(target.requests("/flaky")) == 2

                # Trigger now.
                (row,) = stack.settled_runs(manual.id, 1, timeout=10)
                assert row["id"] == run.id and row["status"] == "success" and row["manual"] is True
                assert len(target.requests("/manual")) == 1
                assert stack.manager.get(manual.id).next_run_at == manual.next_run_at
        finally:
            cluster.stop_all()
            db.dispose()
