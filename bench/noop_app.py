"""The raw-Celery baseline: a no-op task on the same broker, configured like kern_tasks' app.

`celery -A bench.noop_app worker ...` runs it. The task counts itself done with one Redis
INCR (`bench:noop:done`): a single round trip, cheaper than a result backend, and it lets
the benchmark see the moment the last task finished without asking the workers.

Same Celery settings as `kern_tasks.app.create_app` (JSON, no results, prefetch 4, the
Redis visibility timeout) and the same task options as `kern.fire` (acks_late), so the
only difference between the two runs is what the task body does.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery

from kern_tasks.app import transport_options

BROKER_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
COUNTER = "bench:noop:done"
TASK = "bench.noop"


def baseline_app(name: str, backend: str | None = None, **conf: Any) -> Celery:
    """A plain Celery app on the benchmark broker with kern_tasks' app settings (the
    baselines' one configuration: this no-op's, bench/handwritten_app.py's and
    bench/canvas_app.py's); `conf` adds or overrides settings of a baseline's own."""
    made = Celery(name, broker=BROKER_URL, backend=backend)
    made.conf.update({
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport_options(BROKER_URL),
        "worker_prefetch_multiplier": 4,
        "enable_utc": True,
        **conf,
    })
    return made


app = baseline_app("bench_noop")

_clients: dict[int, redis.Redis] = {}


def _client() -> redis.Redis:
    pid = os.getpid()  # one client (a thread-safe pool) per process, made after a fork
    if pid not in _clients:
        _clients[pid] = redis.Redis.from_url(BROKER_URL)
    return _clients[pid]


@app.task(name=TASK, acks_late=True, ignore_result=True)
def noop(run_id: str) -> str:
    _client().incr(COUNTER)
    return "ok"
