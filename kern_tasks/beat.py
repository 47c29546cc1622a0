"""LeaseScheduler: a Celery beat scheduler that reads its schedules from agno_schedules.

Any number of replicas may run; the row lease is the only coordination (see
kern_tasks.scheduler.claims for the rules). Each tick:

  1. claim a batch of due schedules, materialise their run rows and advance
     next_run_at, all in one transaction;
  2. after commit, publish kern.fire(attempt_id) for each new attempt;
  3. about once a second, sweep: publish queued attempts that have no message (a crash
     between 1 and 2, manual triggers, retries whose wait is over, messages lost with a
     broker restart) and end attempts whose worker was lost (it stopped beating:
     firing.liveness), retrying them at once; the same for workflow steps
     (kern_tasks.workflow.sweep); skip first attempts past expires_after_seconds
     and disable schedules with no slot left (scheduler/limits.py); record this
     replica's heartbeat in kern_beats (kern_tasks.beat_health: at most once a second, so
     its age is bounded by kern_sweep_interval); then, with
     KERN_RUN_RETENTION_DAYS set, prune old runs for at most kern_retention_budget
     (scheduler/retention.py: small batches, each its own short transaction);
  4. sleep until the earliest claimable next_run_at, at most one sweep interval and at
     most max_interval (the seed's scheduler_poll_interval).

Use it from your own app with `beat_scheduler = "kern_tasks.beat:LeaseScheduler"` and
`kern_tasks.app.install(app)`. Celery builds a scheduler lazily just to print its
banner: constructing one does no I/O.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from celery.beat import Scheduler
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError

from kern_tasks import beat_health, metrics
from kern_tasks.alerts.watch import ALERT_INTERVAL_S, Watch
from kern_tasks.alerts.webhook import notifier_for
from kern_tasks.db import db_time
from kern_tasks.dispatch import DEFAULT_FIRE_BATCH, publish, publish_messages
from kern_tasks.firing import liveness
from kern_tasks.runtime import runtime_for
from kern_tasks.scheduler import claims, limits, retention, sweeps
from kern_tasks.scheduler.slots import DEFAULT_GRACE_S
from kern_tasks.workflow import sweep as workflow_sweep

log = logging.getLogger("kern_tasks.beat")

DEFAULT_BATCH = 500
SWEEP_INTERVAL_S = 1.0
REPUBLISH_AFTER_S = 30
ERROR_BACKOFF_S = 1.0
RETENTION_BUDGET_S = 0.25


class LeaseScheduler(Scheduler):
    """Celery beat scheduler over agno_schedules, safe to run as many replicas.

    Options (Celery config): kern_beat_batch (500), kern_fire_batch (attempts per fire
    message, dispatch.DEFAULT_FIRE_BATCH), kern_sweep_interval (1.0 s),
    kern_republish_after (30 s), kern_misfire_grace (60 s), kern_retention_budget (0.25 s of
    pruning per sweep at most), kern_alert_interval (10 s between alert checks), beat_max_loop_interval.
    """

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        conf = app.conf
        self.batch = int(conf.get("kern_beat_batch") or DEFAULT_BATCH)
        self.sweep_interval = float(conf.get("kern_sweep_interval") or SWEEP_INTERVAL_S)
        self.republish_after = int(conf.get("kern_republish_after") or REPUBLISH_AFTER_S)
        self.grace_s = int(conf.get("kern_misfire_grace") or DEFAULT_GRACE_S)
        self.retention_budget = float(conf.get("kern_retention_budget") or RETENTION_BUDGET_S)
        self._pruner: retention.Pruner | None = None  # made on first use: settings are per process
        self.fire_batch = int(conf.get("kern_fire_batch") or DEFAULT_FIRE_BATCH)
        self._last_sweep = 0.0
        self.claimed = 0  # schedules the current round leased (for the metrics)
        self.alert_interval = float(conf.get("kern_alert_interval") or ALERT_INTERVAL_S)
        self._watch: Watch | None = None  # made on first use: construction does no I/O
        # A worker's silence counts only once this replica itself has reached the database
        # for liveness.LOST_AFTER_S (after an outage, the workers get that long to beat).
        self.vigil = liveness.Vigil()
        self.heartbeat = beat_health.Heartbeat()
        super().__init__(app, *args, **kwargs)

    # --- celery.beat.Scheduler interface -------------------------------------------

    def setup_schedule(self) -> None:
        if self.app.conf.beat_schedule:
            log.warning("LeaseScheduler ignores beat_schedule entries; create them with ScheduleManager")

    @property
    def schedule(self) -> dict[str, Any]:
        return {}  # schedules live in SQL, read a batch at a time, never all at once

    @property
    def info(self) -> str:
        return f"    . kern_tasks lease scheduler, replica {self.replica}"

    def sync(self) -> None:
        pass  # every change is committed as it happens

    def close(self) -> None:
        if self.heartbeat.recorded:
            self._remove_heartbeat()
        runtime_for(self.app).close()

    def _remove_heartbeat(self) -> None:
        try:  # a clean stop is seen at once by `kern-tasks health beat`, not after max-age
            with runtime_for(self.app).db.begin() as conn:
                self.heartbeat.remove(conn)
        except Exception as exc:  # noqa: BLE001 - stopping must not fail on a database outage
            log.debug("beat: heartbeat row not removed (%s)", exc)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One round; returns how long to sleep. Outages are logged and retried."""
        started, self.claimed = time.monotonic(), 0
        try:
            return self.run_once()
        except DBAPIError as exc:
            self.vigil.failed()
            log.warning("beat: database unavailable (%s); retrying", type(exc.orig).__name__)
        except BrokerError as exc:
            log.warning("beat: broker unavailable (%s); retrying", exc)
        except Exception:  # noqa: BLE001 - beat must outlive anything one round can raise
            log.exception("beat: round failed; retrying")
        finally:
            metrics.beat_ticked(self.claimed, time.monotonic() - started)
        return ERROR_BACKOFF_S

    # --- one round -----------------------------------------------------------------

    def run_once(self) -> float:
        db = runtime_for(self.app).db
        token = claims.new_lease_token(self.replica)
        with db.begin() as conn:
            now = db_time(conn)
            claimed = claims.claim_due(conn, token=token, now=int(now), batch=self.batch)
            dispatches = claims.materialise(conn, claimed, token=token, now=now, grace_s=self.grace_s)
        publish(self.app, dispatches)
        self.claimed = len(claimed)
        if claimed:
            log.info("beat: %d schedule(s) claimed, %d run(s) published", len(claimed), len(dispatches))
        self.sweep_if_due()
        if len(claimed) >= self.batch:
            return 0.0  # more are due right now
        with db.connect() as conn:
            wait = claims.seconds_until_due(conn, now=db_time(conn))
        until_sweep = max(0.0, self._last_sweep + self.sweep_interval - time.monotonic())
        return min(x for x in (wait, until_sweep, float(self.max_interval)) if x is not None)

    def sweep_if_due(self) -> None:
        if time.monotonic() - self._last_sweep < self.sweep_interval:
            return
        self._last_sweep = time.monotonic()
        db = runtime_for(self.app).db
        with db.begin() as conn:
            now = db_time(conn)
            self.vigil.reached()
            by_queue = sweeps.maybe_lost_by_queue(conn, now=int(now), republish_after_s=self.republish_after)
            waiting = sum(by_queue.values())
            dispatches = sweeps.sweep_unpublished(
                conn, now=int(now), republish_after_s=self.republish_after, limit=self.batch,
                # A message may carry up to fire_batch attempts (kern.fire_batch).
                include_maybe_lost=waiting > 0 and self.broker_backlog(set(by_queue)) * self.fire_batch < waiting,
            )
            dispatches += sweeps.expire_lost_attempts(
                conn, now=now, limit=self.batch, heartbeats=self.vigil.trusts_heartbeats()
            )
            workflow_messages = workflow_sweep.sweep(
                conn, now=now, limit=self.batch, heartbeats=self.vigil.trusts_heartbeats()
            )
            limits.skip_expired_attempts(conn, now=int(now), limit=self.batch)
            limits.finish_exhausted(conn, now=int(now), limit=self.batch)
            liveness.forget_dead_workers(conn, now=int(now))
            beat_health.forget_dead_beats(conn, now=int(now))
            # Last: a sweep that raised rolls it back, so tick_at means a whole round done.
            self.heartbeat.record(conn)
        if dispatches:
            log.info("beat: sweep published %d attempt(s)", len(dispatches))
        publish(self.app, dispatches)
        publish_messages(self.app, workflow_messages)
        self.prune()
        self.watch_alerts()

    def watch_alerts(self) -> None:
        """Alerts (kern_tasks.alerts.watch), every kern_alert_interval, after the sweep's
        commit and in a transaction of their own; webhook POSTs go on a thread."""
        if self._watch is None:
            self._watch = Watch(notifier_for(runtime_for(self.app).settings.alert_webhook),
                                interval_s=self.alert_interval, grace_s=self.grace_s)  # fmt: skip
        self._watch.check_if_due(runtime_for(self.app).db)

    def prune(self) -> None:
        """Retention, after the sweep's commit: a bounded slice of pruning per sweep."""
        if self._pruner is None:
            days = runtime_for(self.app).settings.run_retention_days
            self._pruner = retention.Pruner(days, budget_s=self.retention_budget)
        deleted, spent = self._pruner.run(runtime_for(self.app).db)
        if deleted:
            log.info("beat: retention pruned %d run(s) in %.3fs", deleted, spent)

    def broker_backlog(self, queues: set[str | None] | None = None) -> int:
        """Messages (each up to fire_batch attempts) waiting in the broker's queues (`queues`, None standing for the app's
        default queue; by default that one alone). When at least as many as the attempts
        that have waited long, those are a backlog, not lost: re-publishing them would
        only double the load on workers that are already behind."""
        names = {self.app.conf.task_default_queue if q is None else q for q in (queues or {None})}
        total = 0
        try:
            with self.app.pool.acquire(block=True, timeout=5) as connection:
                for name in sorted(names):
                    try:
                        total += int(connection.default_channel.queue_declare(queue=name, passive=True).message_count)
                    except Exception as exc:  # noqa: BLE001 - a queue nobody declared yet holds nothing
                        log.debug("beat: queue %s size unknown (%s)", name, exc)
        except Exception as exc:  # noqa: BLE001 - unknown: assume lost, republishing is safe
            log.debug("beat: broker queue size unknown (%s)", exc)
            return 0
        return total
