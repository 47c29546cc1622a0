"""Prometheus metrics: the small API the fire path, beat and workflow steps call.

Every function here is a no-op until `enable()` made the families (a process that serves no
metrics pays one global read per call), and each one is a label lookup and an increment or
an observation afterwards: nothing in the hot path waits, queries or allocates much.

    metrics.fire_finished(outcome.status, lag, duration)   # firing/task.py, once per attempt
    metrics.fire_retried()                                  # scheduler/attempts.py, a retry queued
    metrics.beat_ticked(claimed, seconds)                   # beat.py, once per round
    metrics.slots_skipped(count)                            # claims.py, attempts.py: slots not fired
    metrics.workflow_step_finished(status, seconds)         # workflow/tasks.py, once per step
    metrics.workflow_step_retried()

Who enables: the web app when it is built (`/metrics`, os/routers/metrics.py, one process's
own registry), beat and worker processes when KERN_METRICS_PORT is set
(metrics/exposition.py, prometheus_client's multiprocess mode so a prefork worker's children
add up). Names, labels and what they mean: docs/operating.md, "Metrics".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kern_tasks.metrics.families import Families

_families: "Families | None" = None


def enable(multiprocess_dir: str | None = None) -> "Families":
    """Make the metric families of this process (once; later calls return the same).
    `multiprocess_dir`: values live in files there (a prefork worker's children and its
    parent's exposition share them); None: in this process's memory."""
    global _families
    if _families is None:
        from kern_tasks.metrics.families import Families

        _families = Families(multiprocess_dir)
    return _families


def enabled() -> "Families | None":
    return _families


def fire_finished(status: str, lag: float | None, duration: float) -> None:
    """An attempt's call ended with `status` after `duration` s; it started `lag` s after
    it was due (None: unknown, e.g. a row agno wrote)."""
    families = _families
    if families is None:
        return
    families.fires.labels(status).inc()
    families.fire_duration.observe(duration)
    if lag is not None:
        families.fire_lag.observe(max(0.0, lag))


def fire_retried() -> None:
    """A retry attempt was queued (after a retryable failure, or a lost worker)."""
    if _families is not None:
        _families.fire_retries.inc()


def beat_ticked(claimed: int, seconds: float) -> None:
    """One beat round: `claimed` schedules leased, the round took `seconds`."""
    families = _families
    if families is None:
        return
    families.beat_ticks.inc()
    if claimed:
        families.beat_claimed.inc(claimed)
    families.beat_tick_seconds.observe(seconds)


def slots_skipped(count: int) -> None:
    """`count` slots were passed over (misfire or overlap policy, expires_after_seconds)."""
    if _families is not None and count:
        _families.skipped_slots.inc(count)


def workflow_step_finished(status: str, seconds: float) -> None:
    """A workflow step ended ("success" or "failed") after `seconds` on this worker."""
    families = _families
    if families is None:
        return
    families.workflow_steps.labels(status).inc()
    families.workflow_step_seconds.observe(seconds)


def workflow_step_retried() -> None:
    if _families is not None:
        _families.workflow_step_retries.inc()
