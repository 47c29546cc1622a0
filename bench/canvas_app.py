"""The raw-Celery baseline of benchmark 5: a chain of no-op tasks and a chord of no-op tasks.

`celery -A bench.canvas_app worker -Q bench_canvas ...` runs it. Configured like
bench/noop_app.py (itself like kern's app: JSON, prefetch 4, acks_late, the Redis
visibility timeout), plus a Redis result backend, which a chord needs (its header's
results are counted there before the body runs); a chain needs none. Its own queue, so a
kern worker on the same Redis database never takes its messages (and both stay up, so
the benchmark can interleave kern and raw runs).

- `bench.canvas.link`: a no-op that counts itself (one Redis INCR of COUNTER), result ignored;
  a chain of them ends when COUNTER has grown by its length.
- `bench.canvas.branch`: a no-op whose result is stored (a chord header's task).
- `bench.canvas.joined`: the chord's body, one INCR of CHORDS.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

from kern_tasks.app import transport_options

BROKER_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
QUEUE = "bench_canvas"
COUNTER = "bench:canvas:links"
CHORDS = "bench:canvas:chords"

app = Celery("bench_canvas", broker=BROKER_URL, backend=BROKER_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    broker_transport_options=transport_options(BROKER_URL),
    worker_prefetch_multiplier=4,
    enable_utc=True,
    result_expires=3600,
)

_clients: dict[int, redis.Redis] = {}


def _client() -> redis.Redis:
    pid = os.getpid()  # one client (a thread-safe pool) per process, made after a fork
    if pid not in _clients:
        _clients[pid] = redis.Redis.from_url(BROKER_URL)
    return _clients[pid]


@app.task(name="bench.canvas.link", acks_late=True, ignore_result=True)
def link() -> str:
    _client().incr(COUNTER)
    return "ok"


@app.task(name="bench.canvas.branch", acks_late=True)
def branch() -> str:
    return "ok"


@app.task(name="bench.canvas.joined", acks_late=True, ignore_result=True)
def joined(results: list[str]) -> int:
    _client().incr(CHORDS)
    return len(results)
