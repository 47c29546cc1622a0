"""Serving the metrics: the text a scrape gets (`render`, for the web app's /metrics) and,
for beat and worker processes, the HTTP server on KERN_METRICS_PORT (`serve_port`, which
metrics/startup.py starts from Celery's signals).

Beat and workers always use prometheus_client's multiprocess mode: the main process makes
a fresh directory of its own (nothing else writes there, so there is nothing stale to
clean) before Celery forks a prefork pool, the children inherit it and write their values
there, and the server in the main process sums every file at each scrape. Counters and
histograms of a child that exited keep counting (Prometheus' rule for counters), so a
restarted child (max_tasks_per_child) loses nothing. Beat's server adds the SQL gauges
(metrics/sql_gauges.py); workers' do not.

The port serves only metrics, with no authentication (prometheus_client's server has
none): bind it on a private network (docs/operating.md, "Metrics").
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from typing import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from kern_tasks import metrics
from kern_tasks.db import Database
from kern_tasks.metrics.families import Families
from kern_tasks.metrics.sql_gauges import SqlGauges

log = logging.getLogger("kern_tasks.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def web_registry(database: Callable[[], Database]) -> CollectorRegistry:
    """The web process's: its own families (the embedded scheduler's fires count here) and
    the SQL gauges."""
    return _registry(metrics.enable(), database)


def _registry(families: Families, database: Callable[[], Database] | None) -> CollectorRegistry:
    """What a scrape collects: the families (summed from the multiprocess files when this
    process enabled that mode, else its own memory), and the SQL gauges with a database."""
    registry = CollectorRegistry()
    if families.multiprocess_dir is not None:
        MultiProcessCollector(registry, path=families.multiprocess_dir)
    else:
        registry.register(_Delegate(families.registry))  # type: ignore[arg-type]
    if database is not None:
        registry.register(SqlGauges(database))
    return registry


class _Delegate(Collector):
    """Another registry's metrics, collected at each scrape (the families' registry is one
    per process; each app's registry adds its own SQL gauges to it)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


serving: set[int] = set()  # ports this process serves


def serve_port(port: int, *, database: Callable[[], Database] | None, addr: str = "0.0.0.0") -> None:
    """Enable multiprocess metrics in this (main) process and serve them on `port`."""
    families = metrics.enabled()
    if families is None:
        directory = tempfile.mkdtemp(prefix=f"kern-metrics-{os.getpid()}-")
        owner = os.getpid()
        atexit.register(lambda: os.getpid() == owner and shutil.rmtree(directory, ignore_errors=True))
        families = metrics.enable(multiprocess_dir=directory)
    if families.multiprocess_dir is None:
        # Something enabled them in memory first (an AgentOS app built when the Celery app
        # was imported): serve those, and say what that costs.
        log.warning("metrics: enabled in this process's memory before the port was served (an AgentOS app "
                    "built at import?): a prefork pool's children are not counted on port %d", port)
    start_http_server(port, addr=addr, registry=_registry(families, database))
    serving.add(port)
    log.info("metrics: serving on port %d (/metrics)", port)
