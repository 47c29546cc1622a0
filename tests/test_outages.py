"""Broker and database outages while schedules fire every second.

Each test starts its own broker (Redis, or a RabbitMQ node: tests/rabbitmq.py) and
Postgres (tests/services.py; the machine's shared ones serve other tests at the same
time), a loopback HTTP target process, one Celery
worker and two beat replicas, lets 24 schedules (cron `* * * * * *`) fire, then restarts
one service under them. Our processes are never restarted: they must carry on alone.

Then, with everything still running, for every schedule and every slot from its first
to a few seconds after the outage:
- nothing doubled: one run row per slot (scheduled_for), each Idempotency-Key reached
  the target at most once, and the target saw no key without a run;
- nothing lost: 20 schedules use overlap "allow", so every slot has a run row (slots due
  during the outage fire late, within the 60 s misfire grace) and reached the target;
  4 keep the default "forbid", whose slots that fall due while a run is in flight are
  passed over by design: for those every slot is either fired or counted in
  skipped_slots, and they fire again after the outage;
- nothing stuck: every run row of those slots ends `success`, none stays queued or
  running.

A Redis restart loses every queued message: beat's sweep re-publishes attempts still
queued after kern_republish_after (lowered to 10 s here through Celery's command-line
config, `kern_republish_after=(int)10`).
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from sqlalchemy import select

from kern_tasks.db import Database, db_time, schedule_runs, schedules
from kern_tasks.scheduler import ScheduleManager
from tests.conftest import EMPTY_SETTINGS
from tests.processes import Processes, kern_env, wait_for
from tests.rabbitmq import PrivateRabbitMQ
from tests.services import PrivatePostgres, PrivateRedis, skip_unless_available
from tests.targets import TargetProcess, target_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

EVERY_SECOND = "* * * * * *"
N_ALLOW = 20
N_FORBID = 4
REPUBLISH_AFTER_S = 10
WARMUP_RUNS = 3  # successful runs per schedule before the outage
SETTLE_S = 5  # slots this long after recovery must all be fired before checking
RECOVERY_BOUND_S = REPUBLISH_AFTER_S + 75  # generous: sweep + backlog on a busy 2-core box
SLOW = (0, 1, 2)  # these allow schedules' endpoints answer after SLOW_DELAY_S
SLOW_DELAY_S = 1.5
WORKER_CONCURRENCY = 16
LATE_S = 2  # a fire this long after its slot is late (normally it is well under 1 s)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def private_broker(request: pytest.FixtureRequest) -> Iterator[PrivateRedis | PrivateRabbitMQ]:
    """A broker of the test's own: Redis (nothing on disk: a restart loses every message),
    or, for a test parametrized "rabbitmq" (indirect), a RabbitMQ node (durable queues and
    persistent messages survive its restart; unacknowledged ones are delivered again)."""
    if getattr(request, "param", "redis") == "rabbitmq":
        with PrivateRabbitMQ() as rabbit:
            yield rabbit
        return
    skip_unless_available("redis")
    with PrivateRedis() as server:
        yield server


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    skip_unless_available("postgres")
    with PrivatePostgres() as server:
        yield server


@pytest.fixture
def target(tmp_path: Path) -> Iterator[TargetProcess]:
    """The target as a process of its own (it outlives everything we restart), with a few
    slow paths, so that some attempts are always mid-call when a service goes away (their
    outcome must still be recorded). Its output is printed with the cluster's logs."""
    slow_paths = [f"/hook/{i}" for i in SLOW]
    with target_process(tmp_path / "logs", log=tmp_path / "arrivals.log", slow=slow_paths, delay=SLOW_DELAY_S) as proc:
        yield proc


# --- the firing setup ------------------------------------------------------------------------


@dataclass
class Firing:
    """Schedules firing through a worker and two beats, and what happened to them."""

    db: Database
    cluster: Processes
    target: TargetProcess
    allow: list[str] = field(default_factory=list)
    forbid: list[str] = field(default_factory=list)
    first_slot: dict[str, int] = field(default_factory=dict)

    @property
    def all_ids(self) -> list[str]:
        return self.allow + self.forbid

    def now(self) -> float:
        with self.db.connect() as conn:
            return db_time(conn)

    def runs(self) -> list[dict[str, Any]]:
        with self.db.connect() as conn:
            return [dict(r) for r in conn.execute(select(schedule_runs)).mappings()]

    def processes_alive(self) -> dict[str, int | None]:
        return {name: proc.poll() for name, proc in self.cluster.procs}

    def beat_log_sum(self, pattern: str) -> int:
        total = 0
        for path in self.cluster.logs.glob("beat*.log"):
            for match in re.finditer(pattern, path.read_text(errors="replace")):
                total += int(match.group(1)) if match.groups() else 1
        return total

    def log_count(self, glob: str, needle: str) -> int:
        return sum(path.read_text(errors="replace").count(needle) for path in self.cluster.logs.glob(glob))


@pytest.fixture
def firing(tmp_path: Path, private_broker: PrivateRedis | PrivateRabbitMQ, private_pg: PrivatePostgres,
           target: TargetProcess) -> Iterator[Firing]:  # fmt: skip
    db = Database(private_pg.url, schema=None, settings=EMPTY_SETTINGS)
    db.upgrade()
    manager = ScheduleManager(db)
    settings = kern_env(
        database_url=private_pg.url, base_url=target.url, data_dir=tmp_path / "kern", broker_url=private_broker.url
    )
    cluster = Processes(tmp_path / "logs", env=settings)
    setup = Firing(db=db, cluster=cluster, target=target)
    for i in range(N_ALLOW + N_FORBID):
        policy = "allow" if i < N_ALLOW else "forbid"
        created = manager.create(
            name=f"every-second-{i}", cron=EVERY_SECOND, endpoint=f"/hook/{i}", timeout_seconds=30,
            overlap_policy=policy,
        )  # fmt: skip
        (setup.allow if policy == "allow" else setup.forbid).append(created.id)
        setup.first_slot[created.id] = created.next_run_at
    try:
        cluster.worker(concurrency=WORKER_CONCURRENCY)
        for name in ("beat-a", "beat-b"):
            cluster.beat(name, max_interval=15, conf={"kern_republish_after": REPUBLISH_AFTER_S})
        yield setup
    finally:
        cluster.stop_all()
        db.dispose()


def _succeeded(setup: Firing, at_least: int) -> Callable[[], bool]:
    def check() -> bool:
        done = Counter(r["schedule_id"] for r in setup.runs() if r["status"] == "success")
        return all(done[sid] >= at_least for sid in setup.all_ids)

    return check


def _unsettled(setup: Firing, slot: int) -> str:
    """What keeps the slots up to `slot` from being settled ("" when they are): runs of
    them still open (queued or running), schedules with no run at or past `slot` yet."""
    runs = setup.runs()
    newest: dict[str, int] = defaultdict(int)
    open_runs = []
    for run in runs:
        newest[run["schedule_id"]] = max(newest[run["schedule_id"]], run["scheduled_for"])
        if run["scheduled_for"] <= slot and run["status"] in ("queued", "running"):
            open_runs.append((run["schedule_id"][:8], run["scheduled_for"], run["status"]))
    behind = [sid[:8] for sid in setup.all_ids if newest[sid] < slot]
    problems = []
    if open_runs:
        problems.append(f"{len(open_runs)} run(s) still open, e.g. {open_runs[:5]}")
    if behind:
        problems.append(f"{len(behind)} schedule(s) with no run at or after {slot}: {behind[:5]}")
    return "; ".join(problems)


def wait_settled(setup: Firing, slot: int, timeout: float) -> None:
    """Wait until every slot up to `slot` fired and succeeded; fail at once if one of our
    processes exits (nothing restarts them)."""
    deadline = time.monotonic() + timeout
    while True:
        dead = {name: code for name, code in setup.processes_alive().items() if code is not None}
        assert not dead, f"process(es) exited by themselves (exit codes): {dead}"
        problem = _unsettled(setup, slot)
        if not problem:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"slots up to {slot} not settled after {timeout}s: {problem}")
        time.sleep(0.5)


def snapshot(setup: Firing) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Runs and schedules as of one instant (one REPEATABLE READ transaction), while
    beats and the worker go on: each committed change keeps fired + skipped slots of a
    schedule equal to how far its next_run_at moved, so one snapshot can be checked."""
    with setup.db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            runs = [dict(r) for r in conn.execute(select(schedule_runs)).mappings()]
            rows = {r["id"]: dict(r) for r in conn.execute(select(schedules)).mappings()}
    return runs, rows


@dataclass
class Report:
    slots: int
    late_slots: int  # fired LATE_S or more after their slot
    max_lag_s: int  # the latest fire (triggered_at - scheduled_for)
    max_done_s: int  # the latest outcome (completed_at - scheduled_for)
    republished: int  # attempts beat's sweep published again
    beat_db_errors: int
    beat_broker_errors: int
    worker_db_retries: int
    worker_broker_losses: int
    skipped_forbid: int

    def __str__(self) -> str:
        return (f"slots fired {self.slots}, late (>={LATE_S} s) {self.late_slots}, max lag {self.max_lag_s} s, "
                f"max slot-to-success {self.max_done_s} s, republished by sweep {self.republished}, "
                f"beat db/broker errors {self.beat_db_errors}/{self.beat_broker_errors}, "
                f"worker db retries {self.worker_db_retries}, worker broker losses {self.worker_broker_losses}, "
                f"forbid slots skipped {self.skipped_forbid}")  # fmt: skip


def check_nothing_lost_or_doubled(setup: Firing, *, outage_from: float, outage_to: float, until: int) -> Report:
    """Check every promise (module docstring) for the slots up to `until`, with beats and
    the worker still running (stopping a beat mid-tick could itself leave a queued run
    that only a beat's sweep would publish)."""
    alive = setup.processes_alive()
    assert all(code is None for code in alive.values()), f"a process exited by itself: {alive}"

    # The target's log first: every key in it belongs to a run committed before the call.
    arrivals = Counter(key for _, key, _ in setup.target.arrivals())
    runs, rows = snapshot(setup)
    by_schedule: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_schedule[run["schedule_id"]].append(run)
    window = [r for r in runs if r["scheduled_for"] <= until]

    not_success = [(r["schedule_id"], r["scheduled_for"], r["status"], r["error"]) for r in window
                   if r["status"] != "success"]  # fmt: skip
    assert not not_success, f"{len(not_success)} run(s) up to {until} did not succeed, e.g. {not_success[:5]}"

    skipped_forbid = 0
    for sid in setup.all_ids:
        slots = [r["scheduled_for"] for r in by_schedule[sid]]
        doubled = sorted(s for s, n in Counter(slots).items() if n > 1)
        assert not doubled, f"schedule {sid}: slots materialised more than once: {doubled}"
        assert all(r["attempt"] == 1 for r in by_schedule[sid]), f"schedule {sid}: unexpected retry attempts"
        assert min(slots) < outage_from, f"schedule {sid}: no slot before the outage ({min(slots)})"
        assert max(slots) >= until > outage_to, f"schedule {sid}: no slot after the outage ({max(slots)})"
        first, next_run_at = setup.first_slot[sid], rows[sid]["next_run_at"]
        if sid in setup.allow:
            missing = sorted(set(range(first, until + 1)) - set(slots))
            assert not missing, f"schedule {sid} (allow): {len(missing)} slot(s) lost: {missing[:20]}"
            assert rows[sid]["skipped_slots"] == 0, f"schedule {sid} (allow): {rows[sid]['skipped_slots']} skipped"
        else:
            # forbid: each slot in [first, next_run_at) is fired or counted as skipped.
            assert set(slots) <= set(range(first, next_run_at)), f"schedule {sid}: slot outside its window"
            accounted = len(slots) + rows[sid]["skipped_slots"]
            assert accounted == next_run_at - first, (
                f"schedule {sid} (forbid): {len(slots)} fired + {rows[sid]['skipped_slots']} skipped "
                f"!= {next_run_at - first} slots"
            )
            skipped_forbid += rows[sid]["skipped_slots"]

    # The target's view: each slot's key at most once, every run up to `until` (all of
    # them succeeded before the log was read) reached it, and no key without a run.
    repeated = {key: n for key, n in arrivals.items() if n > 1}
    assert not repeated, f"Idempotency-Key(s) that reached the target more than once: {list(repeated.items())[:5]}"
    keys = {f"kern:{r['schedule_id']}:slot:{r['scheduled_for']}": r for r in runs}
    unknown = set(arrivals) - set(keys)
    assert not unknown, f"the target saw {len(unknown)} key(s) of no run: {sorted(unknown)[:5]}"
    unseen = [key for key, r in keys.items() if r["scheduled_for"] <= until and key not in arrivals]
    assert not unseen, f"{len(unseen)} successful run(s) never reached the target: {unseen[:5]}"

    lags = [r["triggered_at"] - r["scheduled_for"] for r in window]
    return Report(
        slots=len(window),
        late_slots=sum(lag >= LATE_S for lag in lags),
        max_lag_s=max(lags),
        max_done_s=max(r["completed_at"] - r["scheduled_for"] for r in window),
        republished=setup.beat_log_sum(r"sweep published (\d+) attempt"),
        beat_db_errors=setup.beat_log_sum(r"beat: database unavailable"),
        beat_broker_errors=setup.beat_log_sum(r"beat: broker unavailable"),
        worker_db_retries=setup.log_count("worker*.log", "database unavailable"),
        worker_broker_losses=setup.log_count("worker*.log", "Connection to broker lost"),
        skipped_forbid=skipped_forbid,
    )


@contextmanager
def dumped_on_failure(setup: Firing, extra: Callable[[], str] = lambda: "") -> Iterator[None]:
    """Print the processes' exit codes and logs when the block fails."""
    try:
        yield
    except BaseException:
        print(f"\n===== processes (exit codes) =====\n{setup.processes_alive()}"
              f"\n===== cluster logs =====\n{setup.cluster.dump_logs(tail=120)}\n{extra()}", flush=True)  # fmt: skip
        raise


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("private_broker", ["redis", "rabbitmq"], indirect=True)
def test_broker_restart_loses_no_slot_and_doubles_none(
    firing: Firing, private_broker: PrivateRedis | PrivateRabbitMQ
) -> None:
    name = "redis" if isinstance(private_broker, PrivateRedis) else "rabbitmq"
    extra = (lambda: f"===== rabbitmq =====\n{private_broker.log_tail()}") if name == "rabbitmq" else (lambda: "")
    with dumped_on_failure(firing, extra=extra):
        wait_for(_succeeded(firing, WARMUP_RUNS), timeout=60, what=f"{WARMUP_RUNS} successful runs per schedule")

        outage_from = firing.now()
        private_broker.restart(down_for=4)  # SIGKILL; Redis: every queued and unacked message is gone
        outage_to = firing.now()

        settle = int(outage_to) + SETTLE_S
        wait_settled(firing, settle, timeout=RECOVERY_BOUND_S)
        report = check_nothing_lost_or_doubled(firing, outage_from=outage_from, outage_to=outage_to, until=settle)
        print(f"\n{name} restart ({outage_to - outage_from:.1f}s down): {report}")
        # The outage was real: the worker lost its connection; on Redis, attempts whose
        # message was lost (or never sent) came back through the sweep (RabbitMQ keeps
        # its persistent messages, so there the sweep may have nothing to do).
        assert report.worker_broker_losses > 0, f"the worker never lost its broker connection: {report}"
        if name == "redis":
            assert report.republished > 0, f"no attempt was re-published: did the outage lose nothing? {report}"
        assert report.max_done_s <= RECOVERY_BOUND_S, f"a slot took too long to succeed: {report}"


@pytest.mark.parametrize(
    "private_broker, stop_mode",
    [("redis", "fast"), ("redis", "immediate"), ("rabbitmq", "immediate")],  # the hardest one on RabbitMQ too
    indirect=["private_broker"],
)
def test_postgres_restart_loses_no_slot_and_doubles_none(
    firing: Firing, private_pg: PrivatePostgres, stop_mode: str
) -> None:
    with dumped_on_failure(firing, extra=lambda: f"===== postgres log =====\n{private_pg.log_tail()}"):
        wait_for(_succeeded(firing, WARMUP_RUNS), timeout=60, what=f"{WARMUP_RUNS} successful runs per schedule")

        outage_from = firing.now()
        # fast: sessions are ended ("terminating connection due to administrator command");
        # immediate: every server process quits at once, and the start does crash recovery.
        private_pg.restart(down_for=6, mode=stop_mode)
        outage_to = firing.now()

        settle = int(outage_to) + SETTLE_S
        wait_settled(firing, settle, timeout=RECOVERY_BOUND_S)
        report = check_nothing_lost_or_doubled(firing, outage_from=outage_from, outage_to=outage_to, until=settle)
        print(f"\npostgres restart -m {stop_mode} ({outage_to - outage_from:.1f}s down): {report}")
        # The outage was real: slots due while the database was down fired late, beat
        # saw it, and attempts mid-call (the slow endpoints) recorded their outcome late.
        assert report.late_slots > 0 and report.max_lag_s >= 5, f"no slot fired late: {report}"
        assert report.beat_db_errors > 0, f"beat never saw the database go away: {report}"
        assert report.worker_db_retries > 0, f"no attempt had to wait for the database: {report}"
        assert report.max_done_s <= RECOVERY_BOUND_S, f"a slot took too long to succeed: {report}"
