"""The hand-written baseline: the Celery task a shop would write instead of kern_tasks.

`celery -A bench.handwritten_app worker ...` runs it. Its task does what one scheduled
job does, the plain way: one httpx POST (one client per process, a JSON body, an
Authorization header) to the same loopback target kern fires at, then one INSERT of a
result row (the status code and the answer's JSON) through SQLAlchemy Core on psycopg 3,
one transaction. Same Celery settings as `kern_tasks.app.create_app` (JSON, no results,
prefetch 4, the Redis visibility timeout) and the same task options as `kern.fire`
(acks_late), published as the no-op baseline is (`send_task` one by one).

It keeps none of kern's promises (a retry, a row per attempt, exactly once per slot, a
lost worker's job found): it is the rate users compare with.

Settings (environment; the benchmark sets them): BENCH_REDIS_URL, BENCH_TARGET_URL,
BENCH_HANDWRITTEN_DB (a SQLAlchemy URL), BENCH_HANDWRITTEN_TABLE (schema.table, made by
the benchmark: `create_table`), BENCH_HANDWRITTEN_POOL (the engine's pool size: a shop
sizes it to its worker's concurrency, so it opens no connection after warm-up).
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any

import httpx
from sqlalchemy import JSON, Column, Engine, Integer, MetaData, String, Table, create_engine, insert
from sqlalchemy.dialects.postgresql import JSONB

from bench.noop_app import baseline_app

TASK = "bench.handwritten"
TOKEN = "bench-service-token"

app = baseline_app("bench_handwritten")


def results_table(qualified: str) -> Table:
    """The result rows' table, `schema.table`."""
    schema, _, name = qualified.rpartition(".")
    return Table(
        name, MetaData(schema=schema or None),
        Column("id", String, primary_key=True),
        Column("job_id", String, nullable=False),
        Column("status_code", Integer, nullable=False),
        Column("output", JSON().with_variant(JSONB(), "postgresql")),
    )  # fmt: skip


def create_table(engine: Engine, qualified: str) -> None:
    results_table(qualified).create(engine, checkfirst=True)


_lock = threading.Lock()
_per_process: dict[int, tuple[httpx.Client, Engine, Table]] = {}


def _resources() -> tuple[httpx.Client, Engine, Table]:
    """One client and one engine per process, made after a fork (prefork children)."""
    pid = os.getpid()
    found = _per_process.get(pid)
    if found is None:
        with _lock:
            found = _per_process.get(pid)
            if found is None:
                client = httpx.Client(timeout=httpx.Timeout(30.0), headers={"Authorization": f"Bearer {TOKEN}"})
                pool = int(os.environ.get("BENCH_HANDWRITTEN_POOL", "5"))
                engine = create_engine(os.environ["BENCH_HANDWRITTEN_DB"], pool_size=pool, max_overflow=10)
                found = _per_process[pid] = (client, engine, results_table(os.environ["BENCH_HANDWRITTEN_TABLE"]))
    return found


@app.task(name=TASK, acks_late=True, ignore_result=True)
def handwritten(job_id: str) -> int:
    client, engine, table = _resources()
    reply = client.post(os.environ["BENCH_TARGET_URL"] + "/hook", json={"job": job_id, "kind": "digest"})
    reply.raise_for_status()
    output: Any = reply.json()
    with engine.begin() as conn:
        conn.execute(insert(table).values(id=str(uuid.uuid4()), job_id=job_id, status_code=reply.status_code,
                                          output=output))  # fmt: skip
    return reply.status_code
