"""Benchmark 6: the dashboard's pages on large tables, against the JSON API in the same run.

`python -m bench.dashboard_pages [--schedules 100000] [--runs 1000000] [--requests 40]`

In a schema of its own: `--schedules` rows and one attempt each bulk-inserted as
bench/dashboard_listing.py seeds them (`populate`: INSERT ... SELECT generate_series; a
tenth paused with a reason, owners user-0..user-99), then `--runs` attempt rows over the
last day (a tenth of them failed; lag 0-4 s), ANALYZE. A real `kern-tasks serve` process (uvicorn, the security key
on) serves them; this process sends the requests over loopback HTTP, one at a time,
interleaved round-robin so both sides see the same machine load:

- the baseline: `GET /schedules?limit=50` (the API's JSON page of schedules);
- `GET /dashboard/schedules` (the HTML listing, 50 by next fire, each with its last
  attempt), its next page (the cursor), a name filter and one owner's rows;
- `GET /dashboard/runs` (newest first, and failures first), `GET /dashboard/health` (the
  hour and the day).

Reported: median and p95 per request, the ratio of each median to the baseline's, and
whether the schedules page answers within a second (the issue's bar; a benchmark, not a
test). Results: stdout and bench/results/dashboard_pages.{json,md}. (bench/dashboard_listing.py is
the listing's own: every page kind in-process, with the EXPLAIN of each statement.)
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    POSTGRES_URL, dump_json, fresh_schema, loadavg, log, machine_info, median, percentile, processes,
)  # fmt: skip
from bench.dashboard_listing import populate
from tests.processes import PYTHON, free_port, kern_env, wait_for

RESULTS = Path(__file__).resolve().parent / "results"
KEY = "bench-dashboard-key"
APP = "tests.dashboard_app:agent_os"
BAR_S = 1.0


def seed(schema: Any, n_schedules: int, n_runs: int) -> None:
    """dashboard_listing's schedules (one attempt each, an hour ago), then `n_runs` attempts
    over the day (at odd seconds back from now: never the slot of one of those)."""
    populate(schema, n_schedules)
    now = int(schema.now())
    schema.execute(
        f"""
        INSERT INTO {schema.q}.agno_schedule_runs
            (id, schedule_id, attempt, status, status_code, error, created_at, scheduled_for, triggered_at,
             completed_at, user_id)
        SELECT md5('day' || i::text)::uuid::text, md5('d' || ((i % :n_s) + 1)::text)::uuid::text, 1,
               CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'success' END,
               CASE WHEN i % 10 = 0 THEN 500 ELSE 200 END,
               CASE WHEN i % 10 = 0 THEN 'HTTP 500 from the target' END,
               :now - 1 - 2 * (i % 43200), :now - 1 - 2 * (i % 43200), :now - 1 - 2 * (i % 43200) + i % 5,
               :now - 1 - 2 * (i % 43200) + i % 5 + 2,
               'user-' || (((i % :n_s) + 1) % 100)::text
        FROM generate_series(1, :n) AS i
        """, n=n_runs, n_s=n_schedules, now=now)  # fmt: skip
    schema.execute(f"ANALYZE {schema.q}.agno_schedule_runs")


def measure(client: httpx.Client, requests: dict[str, str], rounds: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Each request once (the first: templates, plans, pools, the health page's settled
    buckets), then `rounds` times round-robin; seconds per answer (each must be 200)."""
    timings: dict[str, list[float]] = {name: [] for name in requests}
    headers = {"Authorization": f"Bearer {KEY}", "Accept": "text/html"}
    first: dict[str, float] = {}
    for name, path in requests.items():
        started = time.perf_counter()
        assert client.get(path, headers=headers).status_code == 200, (name, path)
        first[name] = time.perf_counter() - started
    for _ in range(rounds):
        for name, path in requests.items():
            started = time.perf_counter()
            answer = client.get(path, headers=headers)
            timings[name].append(time.perf_counter() - started)
            assert answer.status_code == 200, (name, answer.status_code, answer.text[:300])
    return first, timings


def run(n_schedules: int, n_runs: int, rounds: int) -> dict[str, Any]:
    with fresh_schema("dash") as schema, processes() as procs:
        log(f"seeding {n_schedules:,} schedules and {n_runs:,} attempts")
        started = time.perf_counter()
        seed(schema, n_schedules, n_runs)
        seeded_s = time.perf_counter() - started
        log(f"seeded in {seeded_s:.1f} s")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**kern_env(database_url=POSTGRES_URL, schema=schema.name, base_url=url, data_dir=procs.logs / "kern"),
               "KERN_APP": APP, "KERN_SECURITY_KEY": KEY, "DASHBOARD_GATES": str(procs.logs)}
        procs.start("web", [PYTHON, "-m", "kern_tasks", "serve", "--port", str(port)], env=env)
        with httpx.Client(base_url=url, timeout=60, trust_env=False) as client:
            wait_for(lambda: _up(client), timeout=60, what="kern-tasks serve")
            first = client.get("/dashboard/schedules", headers={"Authorization": f"Bearer {KEY}"}).text
            cursor = re.search(r'href="(/dashboard/schedules\?[^"]*after=[^"]+)"', first)
            requests = {
                "API GET /schedules?limit=50 (baseline)": "/schedules?limit=50",
                "/dashboard/schedules": "/dashboard/schedules",
                "/dashboard/schedules, next page": (cursor.group(1).replace("&amp;", "&") if cursor
                                                    else "/dashboard/schedules"),
                "/dashboard/schedules?name=job-000042": "/dashboard/schedules?name=job-000042",
                "/dashboard/schedules?owner=user-7": "/dashboard/schedules?owner=user-7",
                "/dashboard/runs": "/dashboard/runs",
                "/dashboard/runs?failures_first=true": "/dashboard/runs?failures_first=true",
                "/dashboard/health (hour)": "/dashboard/health",
                "/dashboard/health?window=24h": "/dashboard/health?window=24h",
            }
            load_before = loadavg()
            first, timings = measure(client, requests, rounds)
    base = median(timings["API GET /schedules?limit=50 (baseline)"])
    rows = []
    for name, values in timings.items():
        rows.append({"request": name, "median_ms": round(median(values) * 1000, 1),
                     "p95_ms": round(percentile(values, 95) * 1000, 1), "max_ms": round(max(values) * 1000, 1),
                     "ratio": round(median(values) / base, 2), "first_ms": round(first[name] * 1000, 1)})
    page = next(r for r in rows if r["request"] == "/dashboard/schedules")
    return {"schedules": n_schedules, "runs": n_runs, "rounds": rounds, "seeded_s": round(seeded_s, 1),
            "load_before": load_before, "load_after": loadavg(), "rows": rows,
            "schedules_page_within_1s": max(timings["/dashboard/schedules"]) <= BAR_S,
            "schedules_page_p95_ms": page["p95_ms"], "machine": machine_info()}


def _up(client: httpx.Client) -> bool:
    try:
        return client.get("/health").status_code == 200
    except httpx.TransportError:
        return False


def table(result: dict[str, Any]) -> str:
    lines = [f"{result['schedules']:,} schedules, {result['runs']:,} attempts over the last day; "
             f"{result['rounds']} requests each, interleaved; load {result['load_before']} before, "
             f"{result['load_after']} after", "",
             "| Request | first | median | p95 | max | median / API baseline |", "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| `{row['request']}` | {row['first_ms']} ms | {row['median_ms']} ms | {row['p95_ms']} ms "
                     f"| {row['max_ms']} ms "
                     f"| x{row['ratio']} |")
    lines.append("")
    lines.append(f"Schedules page within {BAR_S:.0f} s on every request: "
                 f"{'yes' if result['schedules_page_within_1s'] else '**no**'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    result = run(args.schedules, args.runs, args.requests)
    text = table(result)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    dump_json(RESULTS / "dashboard_pages.json", result)
    (RESULTS / "dashboard_pages.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
