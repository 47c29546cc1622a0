"""Beat and worker high availability, with real processes (tests/processes.py).

Real Postgres, a real broker (each test runs twice: on Redis, database 8, and on
RabbitMQ, a vhost of its own), real `celery -A kern_tasks worker|beat` processes and a
real HTTP target on loopback:

1. three beat replicas fire every slot of 50 every-second schedules exactly once, with
   no gaps, for 30 s (and 10 more under overlap "forbid", whose only gaps are slots that
   fell due while the previous run was in flight, each one counted);
2. a beat replica SIGKILLed while it holds leases: its schedules carry on from the other
   replica, nothing fires twice, nothing stays queued; and the same when it dies between
   a claim's commit and its publish (the sweep republishes what it left queued);
3. a worker SIGKILLed mid-request: the attempt ends lost once the worker's heartbeat is
   LOST_AFTER_S old, and is retried on a fresh worker; the first loss of a slot does not
   count against max_retries (a lost worker is not the target's fault; issue 7 item 8).

Beat's timing knobs are lowered per replica through Celery's command line
(Processes.beat(conf=...)), never through the library. Runtime: about 2 minutes a broker.

When one fails, the processes' logs are printed (captured output of the teardown).
"""

from __future__ import annotations

import math
import signal
import socket
import subprocess
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

import pytest
from sqlalchemy import RowMapping, func, select

from kern_tasks.db import Database, db_now, db_time, schedule_runs, schedules
from kern_tasks.firing.liveness import LOST_AFTER_S
from kern_tasks.scheduler.claims import LOST_ATTEMPT_MARGIN_S
from kern_tasks.scheduler import ScheduleManager
from tests.conftest import BROKERS, one_shot_cron, unreachable
from tests.processes import Processes, wait_for
from tests.targets import Reply, TargetServer, read_log, target_process

pytestmark = [pytest.mark.slow, BROKERS]  # each test on Redis and on RabbitMQ (a vhost of its own)

REDIS_DB = 8
EVERY_SECOND = "* * * * * *"
NEVER_SOON = "0 0 1 1 *"  # once a year: how a test stops a schedule without disabling it


# --- helpers (the fixtures pg_db and cluster_for are conftest.py's) --------------------------


def replica_prefix(proc: subprocess.Popen) -> str:
    """The start of every lease token a beat process stamps (LeaseScheduler.replica)."""
    return f"{socket.gethostname()}:{proc.pid}/"


def now_db(db: Database) -> float:
    with db.connect() as conn:
        return db_time(conn)


def all_runs(db: Database) -> list[RowMapping]:
    with db.connect() as conn:
        return list(conn.execute(select(schedule_runs).order_by(schedule_runs.c.created_at)).mappings())


def unfinished(db: Database) -> list[RowMapping]:
    with db.connect() as conn:
        return list(
            conn.execute(select(schedule_runs).where(schedule_runs.c.status.in_(("queued", "running")))).mappings()
        )


def lease_holders(db: Database) -> dict[str, str]:
    """schedule id -> locked_by, for every leased schedule."""
    with db.connect() as conn:
        rows = conn.execute(select(schedules.c.id, schedules.c.locked_by).where(schedules.c.locked_by.is_not(None)))
        return {sid: token for sid, token in rows}


def quiesce(manager: ScheduleManager, ids: list[str]) -> None:
    """No new slots from now on (the schedules stay enabled, so queued attempts still run)."""
    for sid in ids:
        manager.update(sid, cron=NEVER_SOON)


def settle(db: Database, timeout: float) -> None:
    """Wait until no attempt is queued or running."""
    wait_for(lambda: not unfinished(db), timeout, 0.5, "every attempt to finish (none queued or running)")


def key_of(run: RowMapping) -> str:
    return f"kern:{run['schedule_id']}:slot:{run['scheduled_for']}"


def every_second(manager: ScheduleManager, name: str, endpoint: str, **options: Any) -> str:
    """A schedule firing every second (timeout 10 s unless given); returns its id."""
    options.setdefault("timeout_seconds", 10)
    return manager.create(name=name, cron=EVERY_SECOND, endpoint=endpoint, **options).id


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# --- 1. three replicas, every slot once, no gaps ----------------------------------------------

N_ALLOW = 50  # overlap "allow": every slot fires, however late, so no gap is allowed at all
N_FORBID = 10  # the default "forbid": a slot due while the last run is in flight is skipped
WINDOW_S = 30  # seconds of every-second slots checked for gaps
WARM_UP_S = 2  # after the first second when every schedule has fired
EDGE_S = 3  # slots this close to the stop are not checked for gaps


def test_three_replicas_fire_every_slot_exactly_once_without_gaps(
    pg_db: Database, cluster_for: Callable[[str], Processes], tmp_path: Path
) -> None:
    arrivals = tmp_path / "arrivals.log"
    with target_process(tmp_path / "logs", log=arrivals) as target:
        cluster = cluster_for(target.url)
        manager = ScheduleManager(pg_db)
        cluster.worker("worker", concurrency=16)
        beats = [cluster.beat(f"beat{i}", max_interval=1) for i in range(3)]
        cluster.wait_for_log("worker", "ready.")
        for i in range(3):
            cluster.wait_for_log(f"beat{i}", "beat: Starting...")
        allow = [every_second(manager, f"allow-{i}", f"/hook/{i}", overlap_policy="allow") for i in range(N_ALLOW)]
        forbid = [every_second(manager, f"forbid-{i}", f"/hook/{N_ALLOW + i}") for i in range(N_FORBID)]
        ids = allow + forbid

        def all_fired() -> int | None:
            with pg_db.connect() as conn:
                rows = conn.execute(
                    select(schedule_runs.c.schedule_id, func.min(schedule_runs.c.scheduled_for))
                    .group_by(schedule_runs.c.schedule_id)
                ).all()
            return max(first for _, first in rows) if len(rows) == len(ids) else None

        first_all = wait_for(all_fired, 60, 0.5, "every schedule to fire once")
        window_start = first_all + WARM_UP_S
        wait_for(lambda: now_db(pg_db) >= window_start + WINDOW_S + EDGE_S, WINDOW_S + 60, 0.5, "the window")
        stopped_at = int(now_db(pg_db))
        quiesce(manager, ids)
        settle(pg_db, 90)
        for beat in beats:
            assert beat.poll() is None, "a beat replica died"
            cluster.kill(beat, signal.SIGTERM)
        window_end = stopped_at - EDGE_S

        runs = all_runs(pg_db)
        path_of = {sid: f"/hook/{i}" for i, sid in enumerate(ids)}
        fired: dict[str, dict[int, RowMapping]] = defaultdict(dict)
        for r in runs:
            fired[r["schedule_id"]][r["scheduled_for"]] = r

        # Each slot materialised once (one attempt, one row), and every attempt succeeded.
        slots = Counter((r["schedule_id"], r["scheduled_for"]) for r in runs)
        repeated = {slot: n for slot, n in slots.items() if n > 1}
        assert not repeated, f"slots materialised more than once: {list(repeated.items())[:10]}"
        assert all(r["attempt"] == 1 for r in runs)
        statuses = Counter(r["status"] for r in runs)
        assert set(statuses) == {"success"}, f"run statuses: {statuses}"

        # The target saw every slot's Idempotency-Key exactly once, on its schedule's path.
        requests = read_log(str(arrivals))
        keys = Counter(key for _, key, _ in requests)
        twice = {key: n for key, n in keys.items() if n > 1}
        assert not twice, f"keys the target saw more than once: {list(twice.items())[:10]}"
        assert set(keys) == {key_of(r) for r in runs}, "the target's keys differ from the slots in the database"
        misrouted = [(path, key) for path, key, _ in requests if path != path_of[key.split(":")[1]]]
        assert not misrouted, f"requests at another schedule's path: {misrouted[:10]}"

        # No gaps under "allow": every second of the window fired for every schedule.
        assert window_end - window_start + 1 >= WINDOW_S
        window = set(range(window_start, window_end + 1))
        gaps = {ids.index(sid): sorted(window - fired[sid].keys()) for sid in allow if window - fired[sid].keys()}
        assert not gaps, f"slots that never fired (schedule index: seconds): {gaps}"

        # Under "forbid", a slot may be missing only when the schedule's previous run was
        # still in flight when it fell due, and then it is counted in skipped_slots.
        with pg_db.connect() as conn:
            skipped_counted = dict(
                conn.execute(select(schedules.c.id, schedules.c.skipped_slots).where(schedules.c.id.in_(forbid))).all()
            )
        overlapped = 0
        for sid in forbid:
            mine = sorted(fired[sid])
            assert mine[-1] - mine[0] >= WINDOW_S, f"forbid schedule {sid} fired only {mine}"
            missing = [s for s in range(mine[0], mine[-1]) if s not in fired[sid]]
            for slot in missing:
                previous = fired[sid][max(s for s in mine if s < slot)]
                # completed_at is the finishing statement's clock, floored to the second; its
                # commit, what a claim sees, can land in the next second on a loaded machine:
                # a run stamped in the second before the slot may still have been in flight.
                assert previous["completed_at"] + 1 >= slot, (
                    f"slot {slot} of {sid} never fired, yet its previous run (slot {previous['scheduled_for']}) "
                    f"ended at {previous['completed_at']}"
                )
            assert len(missing) <= skipped_counted[sid], f"{sid}: {len(missing)} gaps, {skipped_counted[sid]} counted"
            overlapped += len(missing)

        # All three replicas took part (each claimed at least once).
        claims = {
            f"beat{i}": (cluster.logs / f"beat{i}.log").read_text().count("schedule(s) claimed") for i in range(3)
        }
        assert all(claims.values()), f"a replica never claimed anything: {claims}"

        arrival = {key: at for _, key, at in requests}
        lags = [arrival[key_of(r)] - r["scheduled_for"] for r in runs if r["scheduled_for"] in window]
        print(
            f"\nslots fired: {len(runs)} ({len(window) * N_ALLOW} checked for gaps in a {len(window)} s window); "
            f"forbid slots skipped for overlap: {overlapped}; claim rounds per replica: {claims}; "
            f"lag to arrival in the window: p50 {percentile(lags, 0.5):.3f} s, p99 {percentile(lags, 0.99):.3f} s, "
            f"max {max(lags):.3f} s"
        )


# --- 2. a beat replica SIGKILLed while it holds leases ----------------------------------------

N_SLOW = 8
SLOW_S = 3.0
REPUBLISH_AFTER_S = 5  # lowered from 30 s through beat's Celery config (kern_republish_after)
N_ORPHANED = 4


def test_sigkill_beat_holding_leases_other_replica_carries_on(
    pg_db: Database, cluster_for: Callable[[str], Processes]
) -> None:
    with TargetServer() as target:
        target.script("/slow", Reply(delay=SLOW_S))
        cluster = cluster_for(target.url)
        manager = ScheduleManager(pg_db)
        cluster.worker("worker", concurrency=16)
        beats = {
            name: cluster.beat(name, max_interval=1, conf={"kern_republish_after": REPUBLISH_AFTER_S})
            for name in ("beat-a", "beat-b")
        }
        cluster.wait_for_log("worker", "ready.")
        for name in beats:
            cluster.wait_for_log(name, "beat: Starting...")
        ids = [every_second(manager, f"slow-{i}", "/slow", timeout_seconds=20) for i in range(N_SLOW)]
        prefixes = {name: replica_prefix(proc) for name, proc in beats.items()}
        wait_for(lambda: sum(r["status"] == "success" for r in all_runs(pg_db)) >= N_SLOW, 60, 0.5, "a first round")

        def victim_with_fresh_lease() -> tuple[str, dict[str, str]] | None:
            """A replica holding a lease whose run started at most ~1 s ago (so it is still
            held well after the kill), with every lease it holds."""
            with pg_db.connect() as conn:
                now = db_now(conn)
                fresh = conn.execute(
                    select(schedule_runs.c.lease_token).where(
                        schedule_runs.c.status == "running", schedule_runs.c.triggered_at >= now - 1
                    )
                ).scalars().all()
            for name, prefix in prefixes.items():
                if any(token and token.startswith(prefix) for token in fresh):
                    held = {sid: tok for sid, tok in lease_holders(pg_db).items() if tok.startswith(prefix)}
                    if held:
                        return name, held
            return None

        victim, held = wait_for(victim_with_fresh_lease, 30, 0.1, "a replica holding a fresh lease")
        cluster.kill(beats[victim])  # SIGKILL
        killed_at = int(now_db(pg_db))
        survivor = next(name for name in beats if name != victim)
        assert beats[victim].returncode == -signal.SIGKILL
        still_held = {sid for sid, tok in lease_holders(pg_db).items() if tok.startswith(prefixes[victim])}
        assert still_held, "the killed replica's leases were all gone at once (no lease was held across the kill)"

        # Its schedules carry on from the survivor: new slots, claimed and fired by it.
        def survivor_successes(min_each: int) -> dict[str, list[RowMapping]] | None:
            per: dict[str, list[RowMapping]] = {sid: [] for sid in held}
            for r in all_runs(pg_db):
                if (
                    r["schedule_id"] in per and r["scheduled_for"] > killed_at and r["status"] == "success"
                    and (r["lease_token"] or "").startswith(prefixes[survivor])
                ):  # fmt: skip
                    per[r["schedule_id"]].append(r)
            return per if all(len(v) >= min_each for v in per.values()) else None

        taken_over = wait_for(lambda: survivor_successes(2), 60, 0.5, "the survivor to fire the victim's schedules")
        assert beats[survivor].poll() is None, "the surviving replica died"
        takeover_s = [min(r["triggered_at"] for r in runs) - killed_at for runs in taken_over.values()]

        quiesce(manager, ids)
        settle(pg_db, 3 * REPUBLISH_AFTER_S + 30)  # a slot orphaned by the kill is republished by the sweep
        runs = all_runs(pg_db)
        slots = Counter((r["schedule_id"], r["scheduled_for"], r["attempt"]) for r in runs)
        assert all(n == 1 for n in slots.values())
        assert all(r["attempt"] == 1 for r in runs), "a slot was attempted twice"
        keys = Counter(req.headers.get("idempotency-key") for req in target.requests("/slow"))
        twice = {key: n for key, n in keys.items() if n > 1}
        assert not twice, f"slots the target saw twice: {twice}"
        assert set(keys) == {key_of(r) for r in runs}
        statuses = Counter(r["status"] for r in runs)
        assert set(statuses) == {"success"}, f"run statuses: {statuses}"
        posthumous = [
            r for r in runs if (r["lease_token"] or "").startswith(prefixes[victim]) and r["created_at"] > killed_at
        ]
        assert not posthumous, "the killed replica materialised slots after its death"
        assert not lease_holders(pg_db), "a lease outlived its run"

        print(
            f"\nvictim {victim} held {len(held)} lease(s) ({len(still_held)} still held after the kill); "
            f"survivor took them over after {sorted(takeover_s)} s; {len(runs)} runs, "
            f"{sum(1 for r in runs if r['scheduled_for'] > killed_at)} after the kill"
        )


def test_sigkill_beat_between_commit_and_publish_sweep_republishes(
    pg_db: Database, cluster_for: Callable[[str], Processes], broker: str
) -> None:
    """The crash window between a claim's commit and its publish, made wide on purpose: the
    victim's broker URL leads nowhere, so its claims commit (leases held, attempts queued)
    and never reach the broker. After its SIGKILL the survivor's sweep republishes them,
    the worker releases the dead replica's leases, and the survivor carries on."""
    with TargetServer() as target:
        cluster = cluster_for(target.url)
        manager = ScheduleManager(pg_db)
        conf = {"kern_republish_after": REPUBLISH_AFTER_S}
        nowhere = {"KERN_BROKER_URL": unreachable(broker)}
        cluster.worker("worker", concurrency=8)
        victim = cluster.beat("victim", max_interval=1, conf=conf, env=nowhere)
        cluster.wait_for_log("worker", "ready.")
        cluster.wait_for_log("victim", "beat: Starting...")
        ids = [every_second(manager, f"orphaned-{i}", "/quick", timeout_seconds=20) for i in range(N_ORPHANED)]
        prefix = replica_prefix(victim)

        def orphans() -> list[RowMapping] | None:
            runs = all_runs(pg_db)
            held = lease_holders(pg_db)
            ok = (
                len(runs) == N_ORPHANED and all(r["status"] == "queued" for r in runs)
                and len(held) == N_ORPHANED and all(token.startswith(prefix) for token in held.values())
            )  # fmt: skip
            return runs if ok else None

        queued = wait_for(orphans, 30, 0.2, "the victim to lease every schedule and queue its first slot")
        cluster.wait_for_log("victim", "broker unavailable")
        survivor = cluster.beat("survivor", max_interval=1, conf=conf)
        cluster.wait_for_log("survivor", "beat: Starting...")
        cluster.kill(victim)  # SIGKILL
        assert victim.returncode == -signal.SIGKILL
        killed_at = now_db(pg_db)
        assert not target.requests(), "an attempt the victim never published reached the target"
        assert {r["status"] for r in all_runs(pg_db) if r["id"] in {q["id"] for q in queued}} == {"queued"}

        # The orphans run (republished by the survivor's sweep) and the survivor carries on.
        def carried_on() -> bool:
            runs = all_runs(pg_db)
            done = {r["id"] for r in runs if r["status"] == "success"}
            later = Counter(
                r["schedule_id"] for r in runs
                if r["status"] == "success" and (r["lease_token"] or "").startswith(replica_prefix(survivor))
            )  # fmt: skip
            return all(q["id"] in done for q in queued) and all(later[sid] >= 2 for sid in ids)

        wait_for(carried_on, 3 * REPUBLISH_AFTER_S + 30, 0.5, "the orphans to run and the survivor to carry on")
        assert survivor.poll() is None, "the surviving replica died"
        quiesce(manager, ids)
        settle(pg_db, 3 * REPUBLISH_AFTER_S + 30)

        runs = all_runs(pg_db)
        assert Counter(r["status"] for r in runs) == {"success": len(runs)}
        assert all(n == 1 for n in Counter((r["schedule_id"], r["scheduled_for"], r["attempt"]) for r in runs).values())
        assert all(r["attempt"] == 1 for r in runs)
        keys = Counter(req.headers.get("idempotency-key") for req in target.requests("/quick"))
        assert all(n == 1 for n in keys.values()), f"slots the target saw twice: {keys.most_common(3)}"
        assert set(keys) == {key_of(r) for r in runs}
        orphan_arrivals = [req.at for req in target.requests("/quick") if req.headers["idempotency-key"] in
                           {key_of(q) for q in queued}]  # fmt: skip
        # Republished by the sweep, not by anything faster (nothing else knew of them).
        first_enqueued = min(q["enqueued_at"] for q in queued)
        assert min(orphan_arrivals) >= first_enqueued + REPUBLISH_AFTER_S - 1
        assert not lease_holders(pg_db), "a lease outlived its run"
        print(
            f"\n{N_ORPHANED} orphaned attempts ran {min(orphan_arrivals) - killed_at:.1f}.."
            f"{max(orphan_arrivals) - killed_at:.1f} s after the kill "
            f"({min(orphan_arrivals) - first_enqueued:.1f} s after they were queued); {len(runs)} runs in all"
        )


# --- 3. a worker SIGKILLed mid-request ---------------------------------------------------------

HANG_TIMEOUT_S = 5


def test_sigkill_worker_mid_request_fails_or_retries_on_a_fresh_worker(
    pg_db: Database, cluster_for: Callable[[str], Processes]
) -> None:
    with TargetServer() as target:
        target.script("/hang/no-retry", Reply(delay=30))
        target.script("/hang/retry", [Reply(delay=30), Reply(200, json={"ok": True})])
        cluster = cluster_for(target.url)
        manager = ScheduleManager(pg_db)
        first = cluster.worker("worker1", concurrency=4)
        beat = cluster.beat("beat", max_interval=1)
        cluster.wait_for_log("worker1", "ready.")
        cluster.wait_for_log("beat", "beat: Starting...")
        cron = one_shot_cron(int(now_db(pg_db)) + 3)
        common = {"cron": cron, "timeout_seconds": HANG_TIMEOUT_S, "retry_delay_seconds": 1}
        no_retry = manager.create(name="hang-no-retry", endpoint="/hang/no-retry", max_retries=0, **common).id
        retry = manager.create(name="hang-retry", endpoint="/hang/retry", max_retries=1, **common).id
        target.wait_for_requests(1, "/hang/no-retry", timeout=30)
        target.wait_for_requests(1, "/hang/retry", timeout=30)
        cluster.kill(first)  # SIGKILL, the whole process group, while both requests hang
        assert first.returncode == -signal.SIGKILL
        killed_at = now_db(pg_db)
        runs = all_runs(pg_db)
        assert sorted(r["status"] for r in runs) == ["running", "running"]
        cluster.worker("worker2", concurrency=4)

        deadline = HANG_TIMEOUT_S + LOST_ATTEMPT_MARGIN_S + 40
        settle(pg_db, deadline)
        runs = all_runs(pg_db)
        by_schedule: dict[str, list[RowMapping]] = defaultdict(list)
        for r in sorted(runs, key=lambda r: r["attempt"]):
            by_schedule[r["schedule_id"]].append(r)
        assert beat.poll() is None, "beat died"

        # max_retries=0: the lost attempt (its worker stopped beating) is retried anyway, as
        # the loss is not the target's fault; that retry hangs too and ends the slot "timeout".
        lost, own = by_schedule[no_retry]
        assert (lost["status"], lost["lost"]) == ("retrying", True), lost
        assert "worker was lost" in (lost["error"] or ""), lost["error"]
        assert lost["completed_at"] - lost["triggered_at"] >= LOST_AFTER_S
        assert (own["attempt"], own["status"], own["lost"]) == (2, "timeout", False), own

        # max_retries=1: the lost attempt hands over to a second one, which succeeds on worker2.
        lost_first, second = by_schedule[retry]
        assert lost_first["status"] == "retrying" and "worker was lost" in (lost_first["error"] or ""), lost_first
        assert (second["attempt"], second["status"], second["status_code"]) == (2, "success", 200), second
        assert second["scheduled_for"] == lost_first["scheduled_for"]
        assert second["id"] in (cluster.logs / "worker2.log").read_text(), "the retry did not run on the new worker"
        assert second["id"] not in (cluster.logs / "worker1.log").read_text()
        retried = target.requests("/hang/retry")
        assert len(retried) == 2 and len(target.requests("/hang/no-retry")) == 2
        assert retried[0].headers["idempotency-key"] == retried[1].headers["idempotency-key"] == key_of(second)
        assert retried[1].headers["x-kern-attempt"] == "2"
        assert not lease_holders(pg_db), "a lease outlived its run"

        print(
            f"\nkilled the worker {killed_at - lost['triggered_at']:.1f} s into the call; lost attempt ended after "
            f"{lost['completed_at'] - lost['triggered_at']} s; retry succeeded "
            f"{second['completed_at'] - lost_first['triggered_at']} s after the first attempt started"
        )
