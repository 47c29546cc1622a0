"""Benchmark 4 (peer): agno 3.1's in-process poller versus kern at the same load.

agno: S schedules made with agno's own `ScheduleManager` on a Postgres schema that
agno's `PostgresDb` creates, firing at the same loopback target (`python -m tests.targets`,
a plain endpoint that answers 200). agno's `SchedulePoller` + `ScheduleExecutor` run in a
process of their own (`python -m bench.agno_peer --child ...`) with poll_interval=1; once
the poller runs (idle), all S rows get next_run_at = T0, a whole second ahead. Clock: from
T0 until S agno run rows are `success`. Run twice: agno's default max_concurrent (10), and
max_concurrent=S, agno's best case.
kern: the same S schedules due at once through beat -> Redis -> worker (benchmark 1's
setup), from T0 until S run rows are `success`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from typing import Any

from bench.common import (
    POSTGRES_URL, SERVICE_TOKEN, drop_schema, loadavg, log, processes, sleep_until,
)  # fmt: skip
from tests.processes import PYTHON, wait_for
from tests.targets import start_target_process

TIMEOUT_S = 240


def _agno_schema(n: int) -> tuple[str, Any]:
    import uuid

    from agno.db.postgres import PostgresDb
    from agno.scheduler import ScheduleManager

    schema = f"bench_agno_{uuid.uuid4().hex[:8]}"
    db = PostgresDb(db_url=POSTGRES_URL, db_schema=schema)
    manager = ScheduleManager(db)
    for i in range(n):
        manager.create(name=f"agno-{i}", cron="0 0 1 1 *", endpoint="/hook", timeout_seconds=30)
    db._get_table(table_type="schedule_runs", create_table_if_not_found=True)  # agno makes it on first use
    return schema, db


def agno_fires(n: int, max_concurrent: int, poll_interval: int = 1) -> dict[str, Any]:
    from sqlalchemy import create_engine, text

    schema, agno_db = _agno_schema(n)
    engine = create_engine(POSTGRES_URL)
    q = f'"{schema}"'

    def scalar(sql: str, **params: Any) -> Any:
        with engine.begin() as conn:
            result = conn.execute(text(sql), params)
            return result.scalar() if result.returns_rows else None

    try:
        with processes() as procs:
            target = start_target_process(procs)
            child = procs.start("agno-poller", [
                PYTHON, "-m", "bench.agno_peer", "--child", "--schema", schema, "--base-url", target.url,
                "--poll-interval", str(poll_interval), "--max-concurrent", str(max_concurrent),
            ])  # fmt: skip
            procs.wait_for_log("agno-poller", "POLLER_STARTED", 60)
            time.sleep(1.5)  # a poll or two, idle
            slot = math.ceil(float(scalar("SELECT EXTRACT(EPOCH FROM clock_timestamp())")) + 1.5)
            scalar(f"UPDATE {q}.agno_schedules SET next_run_at = :slot", slot=slot)
            sleep_until(slot)
            wait_for(lambda: scalar(f"SELECT count(*) FROM {q}.agno_schedule_runs WHERE status = 'success'") >= n,
                     TIMEOUT_S, 0.05, f"{n} agno fires")  # fmt: skip
            seconds = time.time() - slot
            if child.poll() is not None:
                raise RuntimeError(procs.tail("agno-poller"))
            arrivals = [t for path, _, t in target.arrivals() if path == "/hook"]
    finally:
        agno_db.db_engine.dispose()
        engine.dispose()
        drop_schema(schema)
    result = {
        "schedules": n, "max_concurrent": max_concurrent, "poll_interval_s": poll_interval,
        "seconds": round(seconds, 3), "per_s": round(n / seconds, 1),
        "first_arrival_after_s": round(min(arrivals) - slot, 3) if arrivals else None, "loadavg": loadavg(),
    }  # fmt: skip
    log(f"agno poller (poll_interval={poll_interval}s, max_concurrent={max_concurrent}): {n} fires in "
        f"{seconds:.2f}s = {n / seconds:.1f}/s")  # fmt: skip
    return result


def run(quick: bool, pool: str = "threads", concurrency: int = 16) -> dict[str, Any]:
    from bench.throughput import kern_e2e

    n = 100 if quick else 200
    agno_default = agno_fires(n, max_concurrent=10)
    agno_best = agno_fires(n, max_concurrent=n)
    kern = kern_e2e(pool, concurrency, n, reps=1 if quick else 2)
    kern_best = max(r["per_s"] for r in kern)
    return {
        "schedules": n,
        "agno_default": agno_default,
        "agno_max_concurrent": agno_best,
        "kern_runs": kern,
        "kern_per_s": kern_best,
        "ratio_vs_agno_default": round(kern_best / agno_default["per_s"], 1),
        "ratio_vs_agno_max_concurrent": round(kern_best / agno_best["per_s"], 1),
    }


# --- the child process: agno's poller, as an AgentOS would run it -----------------------------


def _child(schema: str, base_url: str, poll_interval: int, max_concurrent: int) -> None:
    from agno.db.postgres import PostgresDb
    from agno.scheduler import ScheduleExecutor, SchedulePoller

    db = PostgresDb(db_url=POSTGRES_URL, db_schema=schema)
    executor = ScheduleExecutor(base_url=base_url, internal_service_token=SERVICE_TOKEN, timeout=30)
    poller = SchedulePoller(db, executor, poll_interval=poll_interval, max_concurrent=max_concurrent)

    async def main() -> None:
        await poller.start()
        print(f"POLLER_STARTED {time.time():.3f}", flush=True)
        while True:
            await asyncio.sleep(3600)

    asyncio.run(main())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--schema")
    parser.add_argument("--base-url")
    parser.add_argument("--poll-interval", type=int, default=1)
    parser.add_argument("--max-concurrent", type=int, default=10)
    args = parser.parse_args()
    if args.child:
        _child(args.schema, args.base_url, args.poll_interval, args.max_concurrent)
