"""Benchmark 5: workflows on Celery vs raw Celery canvas, on the same worker command.

kern:  `submit(app, workflow)` then `wait(db, run_id)` from this process, on a real
       `celery -A kern_tasks worker` (KERN_APP=bench.workflow_app:WORKFLOWS) over Postgres
       and Redis: (a) a sequence of 20 no-op executor Steps, (b) one Parallel of 50 no-op
       Steps. Every step is durable: its attempt queued, taken, finished and the next one
       queued in Postgres before the next message goes out, a span per attempt, agno's
       run record at the end (bench/README.md says what that costs).
raw:   the same worker command (pool, concurrency, log level, flags) on the same Redis
       database running `bench.canvas_app` (its own queue): (a) `chain` of 20 no-op tasks,
       each one Redis INCR, done when the counter has grown by 20; (b) `chord` of 50 no-op
       tasks (Redis result backend) whose body does one INCR.
Clock: from just before the submit / apply_async until the end is seen; both ends are
polled every POLL_S (the run's row in Postgres; the counter in Redis). kern and raw runs
are interleaved (kern, raw, kern, raw, ...) so that other people's load on the shared
machine falls on both alike; medians of `reps` runs are compared, and every run is kept
with the CPU its worker (and, for kern, the Postgres backends of its sessions) spent.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from bench.common import (
    POSTGRES_URL, REDIS_URL, CpuMeter, bench_kern_env, fresh_schema, loadavg, log, median, processes, redis_client,
)  # fmt: skip
from tests.processes import Processes, wait_for

WARMUP = 2
POLL_S = 0.005
TIMEOUT_S = 120
KERN_APP = "bench.workflow_app:WORKFLOWS"


def worker_args(name: str, pool: str, concurrency: int, *extra: str) -> list[str]:
    return ["worker", "-P", pool, "-c", str(concurrency), "-l", "WARNING", "-n", f"{name}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat", *extra]  # fmt: skip


class Kern:
    """Runs the benchmark's workflows on a kern worker through submit / wait."""

    def __init__(self, procs: Processes, schema: Any, pool: str, concurrency: int) -> None:
        from kern_tasks.app import create_app
        from kern_tasks.settings import Settings

        env = {**bench_kern_env(schema, "http://127.0.0.1:9", procs), "KERN_APP": KERN_APP}
        self.worker = procs.celery("kern-worker", worker_args("kern-worker", pool, concurrency), env=env)
        self.db = schema.db
        self.app = create_app(Settings(database_url=POSTGRES_URL, db_schema=schema.name, broker_url=REDIS_URL))

    def run(self, workflow: Any) -> float:
        """Seconds from submit to the run's end as `wait` sees it; the run must complete."""
        from kern_tasks.workflow.submit import submit, wait

        t0 = time.perf_counter()
        run_id = submit(self.app, workflow, "go", db=self.db)
        ended = wait(self.db, run_id, timeout=TIMEOUT_S, interval=POLL_S)
        seconds = time.perf_counter() - t0
        if ended.status.value != "COMPLETED":
            raise RuntimeError(f"benchmark run {run_id} ended {ended.status.value}: {ended.content}")
        return seconds


class Raw:
    """Runs the raw chain and chord on a bench.canvas_app worker."""

    def __init__(self, procs: Processes, pool: str, concurrency: int) -> None:
        from bench.canvas_app import QUEUE

        self.worker = procs.celery("raw-worker", worker_args("raw-worker", pool, concurrency, "-Q", QUEUE),
                                   app="bench.canvas_app", env={"BENCH_REDIS_URL": REDIS_URL})  # fmt: skip
        self.redis = redis_client()

    def chain(self, n: int) -> float:
        from celery import chain

        from bench.canvas_app import COUNTER, link

        start = int(self.redis.get(COUNTER) or 0)
        t0 = time.perf_counter()
        chain(*[link.si() for _ in range(n)]).apply_async()
        wait_for(lambda: int(self.redis.get(COUNTER) or 0) >= start + n, TIMEOUT_S, POLL_S, f"a chain of {n}")
        return time.perf_counter() - t0

    def chord(self, n: int) -> float:
        from celery import chord

        from bench.canvas_app import CHORDS, branch, joined

        start = int(self.redis.get(CHORDS) or 0)
        t0 = time.perf_counter()
        result = chord([branch.si() for _ in range(n)])(joined.s())
        del result
        wait_for(lambda: int(self.redis.get(CHORDS) or 0) >= start + 1, TIMEOUT_S, POLL_S, f"a chord of {n}")
        return time.perf_counter() - t0

    def close(self) -> None:
        """Drop the publisher's result subscriptions (Redis pub/sub, one per task sent), so
        that no AsyncResult left for garbage collection at exit tries to unsubscribe then."""
        from bench.canvas_app import app

        consumer = app.backend.result_consumer
        consumer.subscribed_to.clear()
        consumer.stop()


def measured(call: Callable[[], float], meter: CpuMeter, per: int) -> dict[str, Any]:
    meter.start()
    seconds = call()
    return {"seconds": round(seconds, 4), "ms_per_step": round(seconds * 1000 / per, 2), **meter.stop(per=per),
            "loadavg": loadavg()}


def summary(kern: list[dict[str, Any]], raw: list[dict[str, Any]]) -> dict[str, Any]:
    k = median([r["ms_per_step"] for r in kern])
    b = median([r["ms_per_step"] for r in raw])
    kc = median([r["worker_cpu_ms"] for r in kern])
    bc = median([r["worker_cpu_ms"] for r in raw])
    pairs = [a["ms_per_step"] / c["ms_per_step"] for a, c in zip(kern, raw)]
    return {
        "kern_ms_per_step": round(k, 2), "raw_ms_per_step": round(b, 2), "ratio": round(k / b, 2),
        "ratio_of_pairs_median": round(median(pairs), 2),
        "kern_worker_cpu_ms": round(kc, 2), "raw_worker_cpu_ms": round(bc, 2), "cpu_ratio": round(kc / bc, 2),
        "kern_postgres_cpu_ms": round(median([r["postgres_cpu_ms"] for r in kern]), 2),
        "kern_runs": kern, "raw_runs": raw,
    }  # fmt: skip


def run(quick: bool, pool: str = "prefork", concurrency: int = 4) -> dict[str, Any]:
    from bench.workflow_app import PARALLEL_BRANCHES, SEQUENCE_STEPS, parallel, sequence

    reps = 3 if quick else 9
    seq_kern: list[dict[str, Any]] = []
    seq_raw: list[dict[str, Any]] = []
    par_kern: list[dict[str, Any]] = []
    par_raw: list[dict[str, Any]] = []
    with fresh_schema() as schema, processes() as procs:
        redis_client().flushdb()
        kern = Kern(procs, schema, pool, concurrency)
        raw = Raw(procs, pool, concurrency)
        for _ in range(WARMUP):  # imports, pools and connections warm in every worker child
            kern.run(sequence), kern.run(parallel), raw.chain(SEQUENCE_STEPS), raw.chord(PARALLEL_BRANCHES)
        kern_meter = CpuMeter({"worker": kern.worker.pid}, postgres=True)
        raw_meter = CpuMeter({"worker": raw.worker.pid})
        for rep in range(reps):
            seq_kern.append(measured(lambda: kern.run(sequence), kern_meter, SEQUENCE_STEPS))
            seq_raw.append(measured(lambda: raw.chain(SEQUENCE_STEPS), raw_meter, SEQUENCE_STEPS))
            par_kern.append(measured(lambda: kern.run(parallel), kern_meter, PARALLEL_BRANCHES))
            par_raw.append(measured(lambda: raw.chord(PARALLEL_BRANCHES), raw_meter, PARALLEL_BRANCHES))
            log(f"workflow rep {rep + 1}/{reps}: sequence of {SEQUENCE_STEPS} kern {seq_kern[-1]['ms_per_step']} "
                f"ms/step vs chain {seq_raw[-1]['ms_per_step']}; Parallel of {PARALLEL_BRANCHES} kern "
                f"{par_kern[-1]['seconds'] * 1000:.0f} ms vs chord {par_raw[-1]['seconds'] * 1000:.0f} ms; "
                f"machine busy {seq_kern[-1]['machine_busy_cpus']} CPUs, load {loadavg()}")  # fmt: skip
        procs.check_alive()
        raw.close()
    seq, par = summary(seq_kern, seq_raw), summary(par_kern, par_raw)
    log(f"=> sequence of {SEQUENCE_STEPS}: kern {seq['kern_ms_per_step']} ms/step vs raw chain "
        f"{seq['raw_ms_per_step']} = x{seq['ratio']}; Parallel of {PARALLEL_BRANCHES}: kern "
        f"{par['kern_ms_per_step']} ms/branch vs raw chord {par['raw_ms_per_step']} = x{par['ratio']} "
        f"(medians of {reps}; goal <= x2)")  # fmt: skip
    return {"pool": pool, "concurrency": concurrency, "reps": reps, "steps": SEQUENCE_STEPS,
            "branches": PARALLEL_BRANCHES, "sequence": seq, "parallel": par}  # fmt: skip
