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

from bench.noop_app import BROKER_URL, baseline_app

QUEUE = "bench_canvas"
COUNTER = "bench:canvas:links"
CHORDS = "bench:canvas:chords"

# Results kept by default (a chord's header needs them; the no-ops below say ignore_result).
app = baseline_app("bench_canvas", backend=BROKER_URL, task_ignore_result=False, result_serializer="json",
                   task_default_queue=QUEUE, result_expires=3600)  # fmt: skip

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
