"""The metric families, made once per process by `metrics.enable()`.

Multiprocess mode (a prefork worker's children, and beat and threads workers alike when
they serve KERN_METRICS_PORT): prometheus_client keeps each value in a memory-mapped file
of the process that changes it, in PROMETHEUS_MULTIPROC_DIR, and the exposition sums the
files. Its value class reads that directory from the environment when it opens a file,
which happens in every forked child too, so the environment is the only way to hand it
over: this module sets PROMETHEUS_MULTIPROC_DIR here, from our own choice (never read from
the operator's environment: settings.py is the one reader), before any family is made, and
selects the multiprocess value class explicitly, so it does not matter whether
prometheus_client was imported earlier.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, values

# Fire lag and duration: from on time (tens of ms) to badly late (minutes).
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
TICK_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Families:
    """Every counter and histogram kern_tasks keeps (docs/operating.md, "Metrics").

    `registry`: what an in-process exposition collects (the web app's /metrics); in
    multiprocess mode it is None, the families are registered nowhere and the exposition
    reads `multiprocess_dir` instead (metrics/exposition.py)."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        disable_created_metrics()  # no *_created series: they double a scrape and say little here
        if multiprocess_dir is not None:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiprocess_dir  # see the module docstring
            values.ValueClass = values.MultiProcessValue()
            self.registry: CollectorRegistry | None = None
        else:
            self.registry = CollectorRegistry()
        reg = self.registry
        self.fires = Counter("kern_fires", "Attempts fired by workers, by the call's outcome",
                             ["status"], registry=reg)  # fmt: skip
        self.fire_duration = Histogram("kern_fire_duration_seconds", "How long an attempt's call took",
                                       buckets=DURATION_BUCKETS, registry=reg)  # fmt: skip
        self.fire_lag = Histogram("kern_fire_lag_seconds", "Attempt start minus the time it was due (its slot, "
                                  "or its jitter or retry wait's end)", buckets=LAG_BUCKETS, registry=reg)
        self.fire_retries = Counter("kern_fire_retries", "Retry attempts queued (retryable failures, lost workers)",
                                    registry=reg)  # fmt: skip
        self.beat_ticks = Counter("kern_beat_ticks", "Beat rounds (claim, publish, sweep)", registry=reg)
        self.beat_claimed = Counter("kern_beat_claimed", "Schedules leased by beat's claims", registry=reg)
        self.beat_tick_seconds = Histogram("kern_beat_tick_seconds", "How long one beat round took",
                                           buckets=TICK_BUCKETS, registry=reg)  # fmt: skip
        self.skipped_slots = Counter("kern_skipped_slots", "Slots not fired: misfire or overlap policy, "
                                     "expires_after_seconds", registry=reg)
        self.workflow_steps = Counter("kern_workflow_steps", "Workflow steps ended on workers, by outcome",
                                      ["status"], registry=reg)  # fmt: skip
        self.workflow_step_seconds = Histogram("kern_workflow_step_duration_seconds",
                                               "How long a workflow step took on its worker (its attempts)",
                                               buckets=DURATION_BUCKETS, registry=reg)  # fmt: skip
        self.workflow_step_retries = Counter("kern_workflow_step_retries", "Workflow step attempts retried",
                                             registry=reg)  # fmt: skip
