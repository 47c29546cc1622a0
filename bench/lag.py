"""Benchmark 2: fire lag at S schedules firing every second (cron `* * * * * *`).

S schedules (defaults: misfire `once`, overlap `forbid`) get next_run_at = T0, a whole
second a little ahead, while beat and a worker (warmed up) are running. After `duration`
seconds they are disabled. Every request the loopback target receives carries the
slot in its Idempotency-Key (`kern:<schedule>:slot:<scheduled_for>`), so
lag = arrival time at the target - scheduled_for (the cron slot), per fire.

Also counted: slots that did not fire. Under overlap `forbid` a slot that falls due
while the previous run of the same schedule is still in flight is skipped (and counted in
agno_schedules.skipped_slots); a lag figure that hides skipped slots would flatter.
Baseline: the same measurement at a tenth of the load (S/10 schedules), in the same run,
which shows how much of the lag is load and how much is the fixed path (beat wake-up,
broker, worker pick-up, HTTP).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

from sqlalchemy.exc import OperationalError

from bench.common import fresh_schema, loadavg, log, median, percentile, processes, sleep_until
from bench.throughput import start_kern
from tests.processes import wait_for

EVERY_SECOND = "* * * * * *"


def disable_all(schema: Any) -> None:
    """Disable the lag schedules one row per transaction: one statement over hundreds of
    rows that the workers are releasing meanwhile would be chosen as a deadlock's victim."""
    ids = [row[0] for row in schema.execute(
        f"SELECT id FROM {schema.q}.agno_schedules WHERE name LIKE 'lag-%' AND enabled ORDER BY id").all()]  # fmt: skip
    for schedule_id in ids:
        for attempt in range(5):
            try:
                schema.execute(f"UPDATE {schema.q}.agno_schedules SET enabled = false WHERE id = :id", id=schedule_id)
                break
            except OperationalError:
                if attempt == 4:
                    raise
                time.sleep(0.05)


def measure(n: int, duration: int, pool: str, concurrency: int) -> dict[str, Any]:
    with fresh_schema() as schema, processes() as procs:
        target, _ = start_kern(procs, schema, pool, concurrency)
        t0 = math.ceil(schema.now() + 2.0)
        schema.insert_schedules(n, due_at=t0, cron=EVERY_SECOND, prefix="lag")
        end = t0 + duration
        sleep_until(end + 2)  # slots up to end-1 are measured; give the last ones time to start
        disable_all(schema)
        # Let the fires in flight finish (later slots are cancelled or never claimed).
        wait_for(lambda: schema.scalar(
            f"SELECT count(*) FROM {schema.q}.agno_schedule_runs WHERE status IN ('queued', 'running')") == 0,
            60, 0.2, "in-flight fires to finish")  # fmt: skip
        procs.check_alive()
        skipped = int(schema.scalar(
            f"SELECT coalesce(sum(skipped_slots), 0) FROM {schema.q}.agno_schedules WHERE name LIKE 'lag-%'"))  # fmt: skip
        statuses = dict(
            schema.execute(
                f"SELECT r.status, count(*) FROM {schema.q}.agno_schedule_runs r "
                f"JOIN {schema.q}.agno_schedules s ON s.id = r.schedule_id WHERE s.name LIKE 'lag-%' GROUP BY r.status"
            ).all()
        )
        arrivals = target.arrivals()
    lags, slots_hit = [], Counter()
    for _, key, at in arrivals:
        if ":slot:" not in key:
            continue
        slot = int(key.rsplit(":", 1)[1])
        if t0 <= slot < end:  # the measurement window; warm-up fires are "warm-..." yearly slots < t0
            lags.append(at - slot)
            slots_hit[slot] += 1
    expected = n * duration
    result = {
        "schedules": n,
        "duration_s": duration,
        "expected_slots": expected,
        "fired": len(lags),
        "missing": expected - len(lags),
        "skipped_slots_counted": skipped,
        "run_statuses": statuses,
        "p50_s": round(percentile(lags, 50), 3),
        "p90_s": round(percentile(lags, 90), 3),
        "p99_s": round(percentile(lags, 99), 3),
        "max_s": round(max(lags), 3) if lags else None,
        "mean_s": round(sum(lags) / len(lags), 3) if lags else None,
        "fires_per_s": round(len(lags) / duration, 1),
        "per_second_min": min(slots_hit.get(t0 + i, 0) for i in range(duration)),
        "per_second_median": median([slots_hit.get(t0 + i, 0) for i in range(duration)]),
                "loadavg": loadavg(),
    }
    log(f"lag at {n} schedules every second for {duration}s: {len(lags)}/{expected} fired, "
        f"p50 {result['p50_s']}s p99 {result['p99_s']}s max {result['max_s']}s, "
        f"{skipped} slot(s) skipped (overlap)")  # fmt: skip
    return result


# The ramp: schedules every second, raised until fire lag p99 passes RAMP_P99_S.
RAMP = (400, 600, 800, 1000, 1300, 1600)
RAMP_P99_S = 1.0


def ramp(duration: int, pool: str, concurrency: int, rates: tuple[int, ...] = RAMP) -> dict[str, Any]:
    """Lag at rising rates (fires/s), until p99 passes RAMP_P99_S (or a slot goes missing):
    the rate at which this machine stops keeping up."""
    steps = []
    for n in rates:
        result = measure(n, duration, pool, concurrency)
        steps.append(result)
        if result["p99_s"] > RAMP_P99_S or result["missing"] > 0:
            break
    passed = next((s for s in steps if s["p99_s"] > RAMP_P99_S or s["missing"] > 0), None)
    kept = [s["schedules"] for s in steps if s is not passed]
    return {"steps": steps, "p99_passes_1s_at": passed["schedules"] if passed else None,
            "last_kept_up": max(kept) if kept else None}  # fmt: skip


def run(quick: bool, pool: str = "threads", concurrency: int = 16) -> dict[str, Any]:
    n, duration = (100, 12) if quick else (200, 30)
    baseline = measure(max(1, n // 10), duration if not quick else 8, pool, concurrency)
    loaded = measure(n, duration, pool, concurrency)
    rising = ramp(8 if quick else 15, pool, concurrency, RAMP[:2] if quick else RAMP)
    return {"pool": pool, "concurrency": concurrency, "baseline": baseline, "loaded": loaded, "ramp": rising}
