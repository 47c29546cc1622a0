"""Benchmark 1: end-to-end fires/s with N schedules due at once, vs raw Celery no-op tasks/s.

kern:  N schedules (cron yearly) get next_run_at = T0, a whole second at least 1.5 s ahead,
       while beat and the worker are already running and warmed up (50 schedules fired
       first). Clock: from T0 (the slot; beat wakes at it) until the N run rows of slot T0
       are `success` (polled every 20 ms). That covers beat's claim + materialise +
       publish, the broker, the worker's fire task (start attempt, HTTP POST to the
       loopback target, record the outcome, release the lease) and the commits.
raw:   the same worker command (pool, concurrency, log level, flags) on the same Redis
       database runs `bench.noop_app`, whose task does one Redis INCR. N tasks are
       published from this process with plain `send_task` calls over one producer
       connection (the ordinary way; kern's beat publishes in kombu batches), and the
       clock runs from the first publish until the counter reaches N.
Each is repeated `reps` times in the same worker processes; the best run of each is
compared (on a shared, noisy machine the best run is the least disturbed one), and every
run is reported, with the CPU time each process spent per task in it (/proc/<pid>/stat of
the worker's process group, beat, the target, this publisher, and the Postgres backends of
kern's sessions, found by application_name): a measure that other people's load on the
machine disturbs much less than wall-clock rates.
"""

from __future__ import annotations

import importlib
import math
import time
import uuid
from typing import Any, Callable

from bench.common import (
    PG_APP, PG_APP_HANDWRITTEN, POSTGRES_URL, REDIS_URL, CpuMeter, DbCounter, Schema, bench_kern_env, celery_log_lines,
    fresh_schema, loadavg, log, processes, redis_client, sleep_until, with_application_name,
)  # fmt: skip
from tests.processes import Processes, wait_for
from tests.targets import TargetProcess, start_target_process

WARMUP = 50
TIMEOUT_S = 300


def publish_tasks(app: Any, task: str, n: int) -> None:
    """n messages of `task(task_id)`, sent one by one over one producer (the ordinary way)."""
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            task_id = str(uuid.uuid4())
            app.send_task(
                task, args=[task_id], task_id=task_id, producer=producer, retry=True,
                retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2},
            )  # fmt: skip


def declare_default_queue(app: Any) -> None:
    with app.connection_for_write() as conn:
        app.amqp.queues[app.conf.task_default_queue](conn.default_channel).declare()


def _publish_counted(pool: str, concurrency: int, n: int, reps: int, *, name: str, app_module: str, task: str,
                     done: Callable[[], int], reset: Callable[[], None], env: dict[str, str],
                     pg_app: str | None = None, extra: Callable[[Processes], dict[str, int]] | None = None,
                     ) -> list[dict[str, Any]]:  # fmt: skip
    """A plain Celery app's throughput: its worker (the same command as kern's) consumes n
    tasks published from this process one by one (`send_task` over one producer); the
    clock runs from the first publish until `done()` reaches n. With `pg_app`, the Postgres
    backends of that application_name count in its CPU and the benchmark database's
    commits and connections are counted (DbCounter)."""
    app = importlib.import_module(app_module).app
    runs = []
    with processes() as procs:
        redis_client().flushdb()
        declare_default_queue(app)  # this process may have declared it before the flush: again
        groups = extra(procs) if extra else {}
        worker = procs.worker(f"{name}-worker", concurrency, pool, app=app_module, level="WARNING",
                              env={"BENCH_REDIS_URL": REDIS_URL, **env})  # fmt: skip
        groups["worker"] = worker.pid
        publish_tasks(app, task, WARMUP)
        wait_for(lambda: done() >= WARMUP, 120, 0.05, f"the {name} warm-up")
        for rep in range(reps):
            reset()
            time.sleep(0.5)
            counter = DbCounter().start(settle=rep == 0) if pg_app else None
            meter = CpuMeter(groups, include_self=True, postgres=pg_app is not None,
                             application_name=pg_app or PG_APP).start()  # fmt: skip
            t0 = time.time()
            publish_tasks(app, task, n)
            published = time.time() - t0
            wait_for(lambda: done() >= n, TIMEOUT_S, 0.02, f"{n} {name} tasks")
            seconds = time.time() - t0
            run = {"seconds": round(seconds, 3), "per_s": round(n / seconds, 1), "publish_s": round(published, 3),
                   **meter.stop(per=n), "loadavg": loadavg()}  # fmt: skip
            if counter is not None:
                run.update(counter.stop(per=n))
            runs.append(run)
            log(f"{name} {pool} -c {concurrency}: {n} tasks in {seconds:.2f}s = {n / seconds:.0f}/s "
                f"(publishing took {published:.2f}s; CPU ms per task: worker {run['worker_cpu_ms']}, "
                f"publisher {run['publisher_cpu_ms']}, postgres {run.get('postgres_cpu_ms', '-')}; "
                f"commits {run.get('commits_per_job', '-')}, connections opened {run.get('sessions_per_job', '-')} "
                f"per task; machine busy {run['machine_busy_cpus']} CPUs)")  # fmt: skip
        procs.check_alive()
    return runs


def raw_celery(pool: str, concurrency: int, n: int, reps: int) -> list[dict[str, Any]]:
    """The raw Celery no-op (one Redis INCR per task)."""
    from bench.noop_app import COUNTER, TASK

    r = redis_client()
    return _publish_counted(
        pool, concurrency, n, reps, name="no-op", app_module="bench.noop_app", task=TASK, env={},
        done=lambda: int(r.get(COUNTER) or 0), reset=lambda: r.set(COUNTER, 0),
    )  # fmt: skip


def handwritten(pool: str, concurrency: int, n: int, reps: int) -> list[dict[str, Any]]:
    """The hand-written job (bench/handwritten_app.py: an httpx POST to the target and an
    INSERT of a result row), its pool sized to the worker's concurrency."""
    from bench.handwritten_app import TASK, create_table

    with fresh_schema("bench_hand") as schema:
        table = f"{schema.name}.results"
        create_table(schema.db.engine, table)
        count = f'SELECT count(*) FROM "{schema.name}".results'

        def start_target(procs: Processes) -> dict[str, int]:
            target = start_target_process(procs, "hand-target")
            env["BENCH_TARGET_URL"] = target.url
            return {"target": target.proc.pid}

        env = {
            "BENCH_HANDWRITTEN_DB": with_application_name(POSTGRES_URL, PG_APP_HANDWRITTEN),
            "BENCH_HANDWRITTEN_TABLE": table,
            "BENCH_HANDWRITTEN_POOL": str(concurrency if pool == "threads" else 1),
        }
        return _publish_counted(
            pool, concurrency, n, reps, name="hand-written", app_module="bench.handwritten_app", task=TASK, env=env,
            done=lambda: int(schema.scalar(count)), reset=lambda: schema.execute(f'DELETE FROM "{schema.name}".results'),
            pg_app=PG_APP_HANDWRITTEN, extra=start_target,
        )  # fmt: skip


def start_kern(procs: Processes, schema: Schema, pool: str, concurrency: int) -> tuple[TargetProcess, dict[str, str]]:
    """Target, worker and beat on `schema`, warmed up by firing WARMUP schedules."""
    redis_client().flushdb()
    target = start_target_process(procs)
    env = bench_kern_env(schema, target.url, procs)
    procs.worker("worker", concurrency, pool, level="WARNING", env=env)
    schema.insert_schedules(WARMUP, due_at=int(schema.now()), prefix="warm")
    procs.beat("beat", max_interval=5, env=env)
    wait_for(lambda: schema.count_runs("success") >= WARMUP, 120, 0.1, "the kern warm-up fires")
    return target, env


def next_slot(schema: Schema, lead_s: float = 1.5) -> int:
    """A whole second at least lead_s ahead on the database's clock."""
    return math.ceil(schema.now() + lead_s)


def kern_e2e(pool: str, concurrency: int, n: int, reps: int) -> list[dict[str, Any]]:
    """kern end to end: [{seconds, per_s, published_at, first/last arrival}] per repetition."""
    runs = []
    with fresh_schema() as schema, processes() as procs:
        target, _ = start_kern(procs, schema, pool, concurrency)
        schema.insert_schedules(n, due_at=2**40, prefix="main")  # parked far away until each round
        for rep in range(reps):
            counter = DbCounter().start(settle=rep == 0)
            slot = next_slot(schema)
            schema.execute(f"UPDATE {schema.q}.agno_schedules SET next_run_at = :slot WHERE name LIKE 'main-%'",
                           slot=slot)  # fmt: skip
            sleep_until(slot - 0.2)
            meter = CpuMeter({name: proc.pid for name, proc in procs.procs}, postgres=True).start()
            sleep_until(slot)
            wait_for(lambda: schema.count_runs("success", slot) >= n, TIMEOUT_S, 0.02, f"{n} kern fires")
            done = time.time()
            seconds = done - slot
            cpu = meter.stop(per=n)
            counted = counter.stop(per=n)
            arrivals = sorted(t for _, key, t in target.arrivals() if key.endswith(f":slot:{slot}"))
            claims = [t for t, msg in celery_log_lines(procs.logs / "beat.log", "schedule(s) claimed") if t >= slot]
            run = {
                "seconds": round(seconds, 3),
                "per_s": round(n / seconds, 1),
                "beat_published_after_s": round(claims[-1] - slot, 3) if claims else None,
                "first_arrival_after_s": round(arrivals[0] - slot, 3) if arrivals else None,
                "last_arrival_after_s": round(arrivals[-1] - slot, 3) if arrivals else None,
                "arrivals": len(arrivals),
                **cpu,
                **counted,
                "loadavg": loadavg(),
            }
            runs.append(run)
            log(f"kern {pool} -c {concurrency}: {n} fires in {seconds:.2f}s = {n / seconds:.0f}/s "
                f"(beat done publishing at +{run['beat_published_after_s']}s, "
                f"target saw the first at +{run['first_arrival_after_s']}s, the last at +{run['last_arrival_after_s']}s; "
                f"CPU ms per fire: worker {cpu['worker_cpu_ms']}, beat {cpu['beat_cpu_ms']}, target {cpu['target_cpu_ms']}, "
                f"postgres {cpu['postgres_cpu_ms']}; commits {counted['commits_per_job']}, connections opened "
                f"{counted['sessions_per_job']} per fire; machine busy {cpu['machine_busy_cpus']} CPUs)")  # fmt: skip
        procs.check_alive()
    return runs


def _app_cpu(run: dict[str, Any]) -> float:
    """CPU ms per job of the scheduler's own processes: everything measured but the target
    (which answers kern and the hand-written task alike)."""
    return round(run["ours_cpu_ms"] - run.get("target_cpu_ms", 0.0), 2)


def run(quick: bool) -> dict[str, Any]:
    n = 500 if quick else 2000
    reps = 1 if quick else 2
    configs = [("threads", 16)] if quick else [("threads", 16), ("prefork", 4)]
    results = []
    for pool, concurrency in configs:
        raw = raw_celery(pool, concurrency, n, reps)
        hand = handwritten(pool, concurrency, n, reps)
        kern = kern_e2e(pool, concurrency, n, reps)
        for r in raw + hand + kern:
            r["app_cpu_ms"] = _app_cpu(r)
        best_raw, best_hand, best_kern = (max(r["per_s"] for r in runs) for runs in (raw, hand, kern))
        cpu_hand = min(r["app_cpu_ms"] for r in hand)
        cpu_kern = min(r["app_cpu_ms"] for r in kern)
        results.append({
            "pool": pool, "concurrency": concurrency, "n": n, "raw_runs": raw, "hand_runs": hand, "kern_runs": kern,
            "raw_per_s": best_raw, "hand_per_s": best_hand, "kern_per_s": best_kern,
            "ratio": round(best_kern / best_raw, 3), "ratio_vs_hand": round(best_kern / best_hand, 3),
            "hand_cpu_ms": cpu_hand, "kern_cpu_ms": cpu_kern, "cpu_ratio_vs_hand": round(cpu_kern / cpu_hand, 3),
        })  # fmt: skip
        log(f"=> {pool} -c {concurrency}: kern {best_kern:.0f}/s vs hand-written {best_hand:.0f}/s "
            f"(x{best_kern / best_hand:.2f}, target >= 1.0) vs raw no-op {best_raw:.0f}/s (x{best_kern / best_raw:.2f}); "
            f"CPU per job kern {cpu_kern} ms vs hand-written {cpu_hand} ms")  # fmt: skip
    best = max(results, key=lambda r: r["kern_per_s"])
    keys = ("pool", "concurrency", "kern_per_s", "hand_per_s", "raw_per_s", "ratio", "ratio_vs_hand")
    return {"n": n, "configs": results, "best": {k: best[k] for k in keys}}
