"""Benchmark 3: claim cost, dispatch time and beat memory with few versus many schedule rows.

For each N (1,000 and 1,000,000; --quick: 1,000 and 100,000) in a schema of its own:
  - N rows are bulk-inserted with one INSERT ... SELECT generate_series (every NOT NULL
    column set; random-looking UUID ids as ScheduleManager makes them); 500 of them are due
    (next_run_at a few seconds ago), the others are spread over the next day; ANALYZE.
  - claim: one transaction of `claims.claim_due` + `claims.materialise` (+ commit) for the
    500 due rows, timed `reps` times; between repetitions the 500 rows are made due and
    unleased again and their run rows deleted (not timed).
  - dispatch: `LeaseScheduler.run_once()` in this process (claim, materialise, commit,
    publish the 500 as kern.fire_batch messages to Redis; its sweep put off), timed `reps`
    times, the broker queue flushed in between; publishing alone, and the sweep beat runs
    about once a second (timed on its own after each dispatch), are also reported.
  - beat RSS: a real beat process is started against the schema with the 500 due; once
    it has published them (500 run rows, queue length 500) and run one more sweep, its
    VmRSS and VmHWM are read from /proc/<pid>/status. Three beats, one after another: the
    Procfile's (`python -m beat`) and `celery -A beat beat`, both in a runtime-only install
    made as the Dockerfile makes it (tests/runtime_install.py: what users run), and the
    Procfile's in this test venv, whose test-only packages (opentelemetry's SDK, PyYAML)
    redis-py and kombu import when present.
  - at the largest N: EXPLAIN (ANALYZE, BUFFERS) of the claim statement exactly as
    claim_due sends it (captured from the engine), in a transaction rolled back.
Baselines: the same figures at N = 1,000, measured in the same run.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event

from bench.common import (
    POSTGRES_URL, REDIS_URL, Schema, bench_kern_env, fresh_schema, log, loadavg, median, processes, redis_client,
    rss_mib,
)  # fmt: skip
from kern_tasks.app import create_app
from kern_tasks.beat import LeaseScheduler
from kern_tasks.db import db_time
from kern_tasks.dispatch import DEFAULT_FIRE_BATCH, Dispatch, publish
from kern_tasks.runtime import runtime_for
from kern_tasks.scheduler import claims
from kern_tasks.settings import Settings
from tests.processes import PYTHON, wait_for
from tests.runtime_install import NO_CHECKOUT, install_runtime

DUE = 500
# What beat publishes for them: kern.fire_batch messages of DEFAULT_FIRE_BATCH attempts.
MESSAGES = -(-DUE // DEFAULT_FIRE_BATCH)
QUEUE = "celery"  # the Redis list of Celery's default queue


def _reset(schema: Schema, ids: list[str], due_at: int) -> None:
    """Make the DUE rows due and free again; forget their runs."""
    schema.execute(
        f"UPDATE {schema.q}.agno_schedules SET next_run_at = :due, locked_by = NULL, locked_at = NULL "
        f"WHERE id = ANY(:ids)",
        due=due_at, ids=ids,
    )  # fmt: skip
    schema.execute(f"DELETE FROM {schema.q}.agno_schedule_runs")


def _capture_claim_sql(schema: Schema) -> tuple[str, Any]:
    """The claim statement as claim_due sends it (SQL text and parameters)."""
    captured: list[tuple[str, Any]] = []
    engine = schema.db.engine

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if "FOR UPDATE SKIP LOCKED" in statement and not captured:
            captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        with schema.db.begin() as conn:
            claims.claim_due(conn, token="explain", now=int(db_time(conn)), batch=DUE)
            conn.rollback()
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    return captured[0]


def explain_claim(schema: Schema) -> str:
    statement, parameters = _capture_claim_sql(schema)
    with schema.db.begin() as conn:
        rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).all()
        conn.rollback()
    return "\n".join(r[0] for r in rows)


def measure(n: int, reps: int, explain: bool, runtime_python: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"n": n}
    with fresh_schema() as schema:
        t = time.time()
        due_at = int(schema.now()) - 5
        schema.insert_schedules(n, due_at=due_at, n_due=DUE, future_at=due_at + 7 * 86_400)
        schema.execute(f"ANALYZE {schema.q}.agno_schedules")
        ids = [row[0] for row in schema.execute(
            f"SELECT id FROM {schema.q}.agno_schedules WHERE next_run_at = :due", due=due_at).all()]  # fmt: skip
        assert len(ids) == DUE, len(ids)
        result["insert_s"] = round(time.time() - t, 1)
        log(f"N={n}: inserted in {result['insert_s']}s")
        db = schema.db

        # claim + materialise (+ commit), one transaction
        claim_ms, commit_ms = [], []
        for _ in range(reps + 1):  # the first one warms caches and prepares statements
            _reset(schema, ids, due_at)
            with db.connect() as conn:
                t0 = time.perf_counter()
                with conn.begin():
                    now = db_time(conn)
                    claimed = claims.claim_due(conn, token="bench", now=int(now), batch=DUE)
                    dispatches = claims.materialise(conn, claimed, token="bench", now=now)
                    t1 = time.perf_counter()
                t2 = time.perf_counter()
            assert len(dispatches) == DUE, len(dispatches)
            claim_ms.append((t1 - t0) * 1000)
            commit_ms.append((t2 - t0) * 1000)
        result["claim_ms_median"] = round(median(claim_ms[1:]), 1)
        result["claim_ms_min"] = round(min(claim_ms[1:]), 1)
        result["claim_commit_ms_median"] = round(median(commit_ms[1:]), 1)

        # the whole beat tick, publishing included
        settings = Settings(database_url=POSTGRES_URL, db_schema=schema.name, broker_url=REDIS_URL)
        app = create_app(settings)
        scheduler = LeaseScheduler(app)
        r = redis_client()
        tick_ms, publish_ms, sweep_ms = [], [], []
        for _ in range(reps + 1):
            _reset(schema, ids, due_at)
            r.delete(QUEUE)  # the queue only: flushing would drop kombu's exchange bindings too
            scheduler._last_sweep = time.monotonic()  # the dispatch alone: claim, materialise, publish
            t0 = time.perf_counter()
            scheduler.run_once()
            tick_ms.append((time.perf_counter() - t0) * 1000)
            scheduler._last_sweep = 0.0  # then beat's sweep of this state (about once a second), timed apart
            t0 = time.perf_counter()
            scheduler.sweep_if_due()
            sweep_ms.append((time.perf_counter() - t0) * 1000)
            assert r.llen(QUEUE) == MESSAGES, r.llen(QUEUE)
            # publishing alone, the same 500 run ids again
            run_ids = [row[0] for row in schema.execute(f"SELECT id FROM {schema.q}.agno_schedule_runs").all()]
            r.delete(QUEUE)
            t0 = time.perf_counter()
            publish(app, [Dispatch(i) for i in run_ids])
            publish_ms.append((time.perf_counter() - t0) * 1000)
        r.delete(QUEUE)
        runtime_for(app).close()  # (the broker pool is kombu's, shared per URL: left open)
        result["dispatch_ms_median"] = round(median(tick_ms[1:]), 1)
        result["dispatch_ms_min"] = round(min(tick_ms[1:]), 1)
        result["publish_ms_median"] = round(median(publish_ms[1:]), 1)
        result["sweep_ms_median"] = round(median(sweep_ms[1:]), 1)

        # a real beat process: RSS after dispatching the 500 (BEATS: which, run how)
        for key, (python, argv) in beats(runtime_python).items():
            _reset(schema, ids, due_at)
            r.delete(QUEUE)
            with processes() as procs:
                env = bench_kern_env(schema, "http://127.0.0.1:9", procs)
                if python != PYTHON:
                    env |= NO_CHECKOUT
                beat = procs.start(key, [python, *argv, "-l", "INFO", "--max-interval", "5"], env=env)
                wait_for(lambda: schema.count_runs("queued") >= DUE and r.llen(QUEUE) >= MESSAGES, 120, 0.1,
                         "beat to dispatch the due rows")  # fmt: skip
                time.sleep(2.5)  # another tick and sweep or two
                procs.check_alive()
                result[f"{key}_rss_mib"], result[f"{key}_hwm_mib"] = rss_mib(beat.pid)
        r.delete(QUEUE)
        if explain:
            _reset(schema, ids, due_at)
            result["explain"] = explain_claim(schema)
    result["loadavg"] = loadavg()
    log(f"N={n}: claim+materialise {result['claim_ms_median']} ms (median of {reps}), "
        f"dispatch (claim, materialise, publish) {result['dispatch_ms_median']} ms, publish alone "
        f"{result['publish_ms_median']} ms, sweep {result['sweep_ms_median']} ms, "
        f"beat RSS (python -m beat, runtime install) {result['beat_rss_mib']} MiB (peak {result['beat_hwm_mib']}), "
        f"celery -A beat beat {result['celery_beat_rss_mib']} MiB, "
        f"python -m beat in the test venv {result['test_venv_beat_rss_mib']} MiB")  # fmt: skip
    return result


def plain_celery_beat_rss() -> tuple[float, float]:
    """RSS of `celery beat` with Celery's own scheduler and a no-op app: the floor any beat pays."""
    with processes() as procs:
        beat = procs.celery("celery-beat", ["beat", "-l", "INFO", "-s", str(procs.logs / "schedule")],
                            app="bench.noop_app", env={"BENCH_REDIS_URL": REDIS_URL})  # fmt: skip
        wait_for(lambda: "beat: Starting" in procs.tail("celery-beat"), 60, 0.1, "celery beat to start")
        time.sleep(2.5)
        procs.check_alive()
        return rss_mib(beat.pid)


def beats(runtime_python: Path) -> dict[str, tuple[str, list[str]]]:
    """The beats whose RSS is read: key -> (python, its arguments before the options)."""
    return {
        "beat": (str(runtime_python), ["-m", "beat"]),  # the Procfile's, as deployed
        "celery_beat": (str(runtime_python), ["-m", "celery", "-A", "beat", "beat"]),
        "test_venv_beat": (PYTHON, ["-m", "beat"]),
    }


def run(quick: bool) -> dict[str, Any]:
    sizes = [1_000, 100_000] if quick else [1_000, 1_000_000]
    reps = 5 if quick else 9
    with tempfile.TemporaryDirectory(prefix="kern-runtime-") as folder:
        t = time.time()
        runtime_python = install_runtime(Path(folder))
        log(f"runtime-only install (as the Dockerfile's) in {time.time() - t:.0f} s")
        small = measure(sizes[0], reps, explain=False, runtime_python=runtime_python)
        large = measure(sizes[1], reps, explain=True, runtime_python=runtime_python)
    plain_rss, _ = plain_celery_beat_rss()
    log(f"plain celery beat (no-op app, Celery's own scheduler): RSS {plain_rss} MiB")
    return {
        "due": DUE,
        "plain_celery_beat_rss_mib": plain_rss,
        "small": small,
        "large": large,
        "claim_ratio": round(large["claim_ms_median"] / small["claim_ms_median"], 2),
        "rss_ratio": round(large["beat_rss_mib"] / small["beat_rss_mib"], 2),
    }
