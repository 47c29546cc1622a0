"""The gauges read from SQL at scrape time (a custom collector): `kern_runs{status}` (open
attempts, queued and running), `kern_schedules_overdue` (the dead-man signal) and beat's
heartbeat (`kern_beat_heartbeat_age_seconds`, `kern_beat_replicas`: beat_health.read, a
handful of rows), and `kern_alert_incidents_open{kind}` (the partial index on open ones). One indexed query each (alerts/conditions.py says which index); a scrape that cannot reach the
database reports `kern_sql_gauges_up 0` instead of failing the whole scrape.

Served by the web app's /metrics and by beat's KERN_METRICS_PORT, never by workers (there
may be many; each would repeat the same global numbers): take max() across instances.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from kern_tasks import beat_health
from kern_tasks.alerts import conditions, incidents
from kern_tasks.db import Database, db_now
from kern_tasks.scheduler.slots import DEFAULT_GRACE_S

log = logging.getLogger("kern_tasks.metrics")


class SqlGauges(Collector):
    """`database` is called at each scrape (so a process's Database is made on first use)."""

    def __init__(self, database: Callable[[], Database], *, grace_s: int = DEFAULT_GRACE_S) -> None:
        self.database = database
        self.grace_s = grace_s

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("kern_sql_gauges_up", "1 when the SQL gauges below were read at this scrape")
        try:
            with self.database().connect() as conn:
                runs = conditions.open_runs_by_status(conn)
                overdue = conditions.count_overdue(conn, now=db_now(conn), grace_s=self.grace_s)
                beats = beat_health.read(conn)
                open_incidents = incidents.count_open(conn)
        except SQLAlchemyError as exc:
            log.warning("metrics: SQL gauges not read (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        family = GaugeMetricFamily("kern_runs", "Open attempts by status", labels=["status"])
        for status, count in runs.items():
            family.add_metric([status], count)
        yield family
        if beats.newest_age_s is not None:  # absent when no replica has a row: alert on absent()
            yield GaugeMetricFamily("kern_beat_heartbeat_age_seconds", "Seconds since the newest beat replica's "
                                    "heartbeat (kern_beats)", value=beats.newest_age_s)
        alerts = GaugeMetricFamily("kern_alert_incidents_open", "Open alert incidents by kind (kern_tasks.alerts)",
                                   labels=["kind"])  # fmt: skip
        for kind, count in open_incidents.items():
            alerts.add_metric([kind], count)
        yield alerts
        yield GaugeMetricFamily("kern_beat_replicas", "Beat replicas with a heartbeat row", value=len(beats.replicas))
        yield GaugeMetricFamily(
            "kern_schedules_overdue", f"Enabled, unleased schedules whose next slot is more than {self.grace_s}s old",
            value=overdue,
        )
