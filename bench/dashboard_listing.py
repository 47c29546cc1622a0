"""The dashboard's schedules page with 100,000 schedules: how long a page takes over HTTP,
and the plan of every statement it sends (EXPLAIN ANALYZE, BUFFERS).

    python -m bench.dashboard_listing [N]      # default N = 100000; results in bench/results/dashboard.txt

In a schema of its own: N schedules bulk-inserted (100 owners, one in ten paused with a
reason, next fires spread over a week), one finished attempt each (one in twenty failed)
and ANALYZE; then an AgentOS (security key, JWTs) on uvicorn in this process, and each
page asked for `reps` times after a warm-up, the median and worst reported: the first
page, a page deep in the listing (its cursor), a name filter, status=paused, status=failing,
owner=, a user's own page (a JWT), sorted by name, and a schedule's page. The promise
(issue 13): each answers within a second, however many schedules there are, because
only a page is read (scheduler/listing.py: an index walk from the cursor, one row more
than the page, no count).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
from sqlalchemy import event

from bench.common import Schema, fresh_schema, log
from kern_tasks.os import AgentOS
from kern_tasks.scheduler import listing
from kern_tasks.settings import Settings
from tests.os_server import LiveServer

KEY = "bench-dashboard-key"
SECRET = "bench dashboard identity provider secret, 32 bytes+"
OS_ID = "bench-dashboard"
REPS = 7
RESULTS = Path(__file__).resolve().parent / "results" / "dashboard.txt"


def populate(schema: Schema, n: int) -> None:
    now = int(schema.now())
    schema.execute(
        f"""
        INSERT INTO {schema.q}.agno_schedules
            (id, name, method, endpoint, cron_expr, timezone, timeout_seconds, max_retries, retry_delay_seconds,
             enabled, disabled_reason, next_run_at, user_id, created_at, updated_at)
        SELECT md5('d' || i::text)::uuid::text, 'job-' || lpad(i::text, 6, '0'), 'POST', '/hook', '0 9 * * *',
               CASE WHEN i % 3 = 0 THEN 'America/New_York' ELSE 'UTC' END, 30, 0, 60,
               i % 10 <> 0, CASE WHEN i % 10 = 0 THEN 'paused for the benchmark' END,
               :now + (i * 7919) % 604800, 'user-' || (i % 100)::text, :now - i, :now - i
        FROM generate_series(1, :n) AS i
        """, now=now, n=n)  # fmt: skip
    schema.execute(
        f"""
        INSERT INTO {schema.q}.agno_schedule_runs
            (id, schedule_id, attempt, status, status_code, error, triggered_at, completed_at, created_at,
             scheduled_for, manual, user_id)
        SELECT md5('r' || i::text)::uuid::text, md5('d' || i::text)::uuid::text, 1,
               CASE WHEN i % 20 = 3 THEN 'failed' ELSE 'success' END,
               CASE WHEN i % 20 = 3 THEN 500 ELSE 200 END,
               CASE WHEN i % 20 = 3 THEN 'HTTP 500 from the target' END,
               :now - 3600, :now - 3590, :now - 3600, :now - 3600, false, 'user-' || (i % 100)::text
        FROM generate_series(1, :n) AS i
        """, now=now, n=n)  # fmt: skip
    schema.execute(f"ANALYZE {schema.q}.agno_schedules")
    schema.execute(f"ANALYZE {schema.q}.agno_schedule_runs")


def explain_all(schema: Schema, cases: dict[str, tuple[listing.Browse, str | None, str | None]]) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of each statement a listing sends, captured from the engine."""
    out = []
    engine = schema.db.engine
    for label, (given, owner, after) in cases.items():
        captured: list[tuple[str, Any]] = []

        def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
            if not statement.startswith("EXPLAIN") and "pg_" not in statement:
                captured.append((statement, parameters))

        event.listen(engine, "before_cursor_execute", grab)
        try:
            with schema.db.connect() as conn:
                page = listing.browse(conn, given, owner=owner, limit=50, after=after)
                listing.last_attempts(conn, [s.id for s in page.rows])
        finally:
            event.remove(engine, "before_cursor_execute", grab)
        for statement, parameters in captured:
            with schema.db.connect() as conn:
                plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).all()
            out.append(f"--- {label}\n{statement}\n" + "\n".join(row[0] for row in plan))
    return out


def timed(client: httpx.Client, path: str, headers: dict[str, str] | None = None) -> tuple[float, float]:
    client.get(path, headers=headers)  # warm-up
    times = []
    for _ in range(REPS):
        start = time.perf_counter()
        answer = client.get(path, headers=headers)
        times.append((time.perf_counter() - start) * 1000)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    return statistics.median(times), max(times)


def main(n: int) -> None:
    lines = [f"dashboard schedules page, N = {n} schedules, {n} attempts; median and worst of {REPS} (ms)"]
    with fresh_schema("dash") as schema:
        t = time.time()
        populate(schema, n)
        log(f"inserted {n} schedules and attempts in {time.time() - t:.1f}s")
        with schema.db.connect() as conn:
            deep = listing.browse(conn, listing.Browse(), owner=None, limit=200)
            for _ in range(n // 400):  # half-way down the listing
                deep = listing.browse(conn, listing.Browse(), owner=None, limit=200, after=deep.next_cursor)
            some_id = deep.rows[0].id
        cursor = deep.next_cursor
        settings = Settings(security_key=KEY, jwt_verification_key=SECRET, jwt_algorithm="HS256", os_id=OS_ID)
        agent_os = AgentOS(db=schema.db, settings=settings)
        user = jwt.encode({"sub": "user-7", "aud": OS_ID, "scopes": ["schedules:read"]}, SECRET, algorithm="HS256")
        with LiveServer(agent_os.get_app()) as server, httpx.Client(
                base_url=server.url, timeout=30, headers={"authorization": f"Bearer {KEY}"}) as client:
            pages = {
                "first page (by next fire)": "/dashboard/schedules",
                "half-way down (cursor)": f"/dashboard/schedules?after={cursor}",
                "name contains 'job-0421'": "/dashboard/schedules?name=job-0421",
                "status=paused": "/dashboard/schedules?status=paused",
                "status=failing": "/dashboard/schedules?status=failing",
                "owner=user-42": "/dashboard/schedules?owner=user-42",
                "sorted by name": "/dashboard/schedules?sort=name",
                "a user's own (JWT user-7)": ("/dashboard/schedules", {"authorization": f"Bearer {user}"}),
                "a schedule's page": f"/dashboard/schedules/{some_id}",
            }
            for label, target in pages.items():
                path, headers = target if isinstance(target, tuple) else (target, None)
                median_ms, worst_ms = timed(client, path, headers)
                lines.append(f"{label:32s} {median_ms:7.1f} {worst_ms:7.1f}")
                log(lines[-1])
        lines.append("")
        lines += explain_all(schema, {
            "first page": (listing.Browse(), None, None),
            "half-way down": (listing.Browse(), None, cursor),
            "status=failing": (listing.Browse(status="failing"), None, None),
            "status=paused": (listing.Browse(status="paused"), None, None),
            "a user's own": (listing.Browse(), "user-7", None),
            "name contains": (listing.Browse(name="job-0421"), None, None),
        })
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
