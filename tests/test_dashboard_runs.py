"""The dashboard's runs page (/dashboard/runs) and health page (/dashboard/health), on a
real uvicorn and real Postgres, and in a real chromium (tests/browser.py):

- the runs page lists the caller's attempts across schedules, newest first, or failures
  first on demand; pages; links each to its schedule's page and to the run it started
  (a workflow's page, an agent's run); a user's token never shows another's rows, the
  security key and admin show all; bad query values answer 422 naming the field;
- the health page draws fires by status, lag and overdue schedules as inline SVG from the
  caller's rows, and lists the schedules overdue now;
- the reads behind them (scheduler/history.py) agree on Postgres and SQLite;
- in the browser: the runs page turned failures first, the health page with its chart
  (screenshots in test-artifacts/, looked at).

The attempt rows are written straight into agno_schedule_runs, as beat and the workers
write them (what is under test is what the pages read and show, not firing).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import update

from kern_tasks.db import Database, db_now
from kern_tasks.db.tables import schedule_runs, schedules
from kern_tasks.errors import ValidationError
from kern_tasks.os import AgentOS
from kern_tasks.os.scopes import ADMIN_SCOPE
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.scheduler.history import OVERDUE_AFTER_S, RunHistory
from kern_tasks.settings import Settings
from tests.browser import browser, logged_in, screenshot  # noqa: F401 (fixtures)
from tests.conftest import POSTGRES_URL, drop_schema, fresh_schema_name
from tests.os_server import LiveServer

OS_ID = "dashboard-runs-os"
SECRET = "the identity provider's secret, 32+ bytes long"
SECURITY_KEY = "dashboard-runs-key-5c1e"
READER = ["schedules:read", "workflows:read", "sessions:read", "traces:read"]
BOB_ERROR = "bob's private failure: token expired for bob@example.com"
ALICE_ERROR = "HTTP 502 from the digest service: upstream connect error"


def token(user: str | None, scopes: list[str] = READER) -> str:
    claims: dict[str, Any] = {"aud": OS_ID, "scopes": scopes}
    if user is not None:
        claims["sub"] = user
    return jwt.encode(claims, SECRET, algorithm="HS256")


ALICE, BOB, ADMIN = token("alice"), token("bob"), token("root", [ADMIN_SCOPE])


class Seeded:
    """Schedules and attempts of two users and of nobody, written once for the module."""

    def __init__(self, db: Database) -> None:
        self.db = db
        manager = ScheduleManager(db)
        self.digest = manager.create(name="alice-digest", cron="*/5 * * * *", endpoint="/agents/digest/runs",
                                     user_id="alice")
        self.report = manager.create(name="alice-report", cron="0 * * * *", endpoint="/workflows/report/runs",
                                     user_id="alice")
        self.bobs = manager.create(name="bob-backup", cron="0 3 * * *", endpoint="/agents/backup/runs",
                                   user_id="bob")
        self.ops = manager.create(name="ops-sweep", cron="* * * * *", endpoint="/agents/ops/runs")
        with db.begin() as conn:
            self.now = db_now(conn)
        # (schedule, status, seconds ago, lag, error): alice 6 rows (2 failures), bob 2, ops 1.
        self.rows = [
            self.attempt(self.digest.id, "alice", "success", 30, lag=1),
            self.attempt(self.digest.id, "alice", "failed", 330, lag=2, error=ALICE_ERROR, code=502),
            self.attempt(self.report.id, "alice", "success", 630, lag=0, run_id="wf-run-1", session_id="wf-session-1"),
            self.attempt(self.digest.id, "alice", "success", 930, lag=3),
            self.attempt(self.digest.id, "alice", "timeout", 1230, lag=1, error="no answer within 60s"),
            self.attempt(self.report.id, "alice", "success", 1530, lag=120, run_id="wf-run-2"),
            self.attempt(self.bobs.id, "bob", "failed", 60, lag=0, error=BOB_ERROR, code=401),
            self.attempt(self.bobs.id, "bob", "success", 400, lag=0),
            self.attempt(self.ops.id, None, "skipped", 200, lag=None, error="expired"),
        ]
        with db.begin() as conn:
            conn.execute(schedule_runs.insert(), self.rows)
            # bob's schedule is overdue now: its slot passed well over OVERDUE_AFTER_S ago; the
            # others' next slots are a day away (no beat runs here to move them on).
            conn.execute(update(schedules).values(next_run_at=self.now + 86400))
            conn.execute(update(schedules).where(schedules.c.id == self.bobs.id)
                         .values(next_run_at=self.now - OVERDUE_AFTER_S * 5))

    def attempt(self, schedule_id: str, user: str | None, status: str, ago: int, *, lag: int | None,
                error: str | None = None, code: int | None = None, run_id: str | None = None,
                session_id: str | None = None) -> dict[str, Any]:
        slot = self.now - ago
        return {"id": str(uuid.uuid4()), "schedule_id": schedule_id, "attempt": 1, "status": status,
                "created_at": slot, "scheduled_for": slot, "triggered_at": None if lag is None else slot + lag,
                "completed_at": None if lag is None else slot + lag + 4, "status_code": code, "error": error,
                "user_id": user, "run_id": run_id, "session_id": session_id}


class Served:
    def __init__(self, seeded: Seeded, server: LiveServer) -> None:
        self.seeded, self.server, self.url = seeded, server, server.url
        self.client = httpx.Client(base_url=server.url, timeout=15, trust_env=False)

    def get(self, path: str, credential: str, **params: Any) -> httpx.Response:
        return self.client.get(path, params=params, headers={"Authorization": f"Bearer {credential}",
                                                             "Accept": "text/html"})


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    schema = fresh_schema_name()
    db = Database(POSTGRES_URL, schema=schema, settings=Settings())
    db.upgrade()
    seeded = Seeded(db)
    settings = Settings(security_key=SECURITY_KEY, jwt_verification_key=SECRET, jwt_algorithm="HS256", os_id=OS_ID)
    with LiveServer(AgentOS(db=db, settings=settings).get_app()) as server:
        yield (made := Served(seeded, server))
        made.client.close()
    db.dispose()
    drop_schema(schema)


def statuses(html: str) -> list[str]:
    return re.findall(r'<tr data-attempt="[^"]+" data-status="([a-z]+)"', html)


def attempt_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-attempt="([^"]+)"', html)


# --- the runs page ------------------------------------------------------------------------------


def test_a_user_sees_only_their_own_runs_newest_first(served: Served) -> None:
    answer = served.get("/dashboard/runs", ALICE)
    assert answer.status_code == 200, answer.text
    html = answer.text
    alice = [row for row in served.seeded.rows if row["user_id"] == "alice"]
    assert attempt_ids(html) == [row["id"] for row in sorted(alice, key=lambda r: -r["created_at"])]
    assert "alice-digest" in html and "alice-report" in html and ALICE_ERROR in html
    assert "bob" not in html and "ops-sweep" not in html and "expired" not in html
    for row in served.seeded.rows:
        if row["user_id"] != "alice":
            assert row["id"] not in html
    # Bob, likewise: his two rows only.
    bob = served.get("/dashboard/runs", BOB).text
    assert set(attempt_ids(bob)) == {row["id"] for row in served.seeded.rows if row["user_id"] == "bob"}
    assert "alice" not in bob and "digest service" not in bob


def test_the_security_key_and_admin_see_every_owner(served: Served) -> None:
    every = {row["id"] for row in served.seeded.rows}
    for credential in (SECURITY_KEY, ADMIN):
        html = served.get("/dashboard/runs", credential).text
        assert set(attempt_ids(html)) == every


def test_failures_first_on_demand(served: Served) -> None:
    html = served.get("/dashboard/runs", SECURITY_KEY, failures_first="true").text
    found = statuses(html)
    assert found[:3] == ["failed", "failed", "timeout"]  # newest failure first among failures
    assert set(found[3:]) <= {"success", "skipped"}
    newest = served.get("/dashboard/runs", SECURITY_KEY).text
    assert statuses(newest)[0] == "success"  # without it, newest first
    assert 'href="/dashboard/runs?window=24h"' in html  # the toggle back


def test_pages_and_filters(served: Served) -> None:
    first = served.get("/dashboard/runs", ALICE, limit=4).text
    second = served.get("/dashboard/runs", ALICE, limit=4, page=2).text
    assert len(attempt_ids(first)) == 4 and len(attempt_ids(second)) == 2
    assert not set(attempt_ids(first)) & set(attempt_ids(second))
    assert 'rel="next"' in first and 'rel="next"' not in second and 'rel="prev"' in second
    failed = served.get("/dashboard/runs", ALICE, status="failed").text
    assert statuses(failed) == ["failed"]
    recent = served.get("/dashboard/runs", ALICE, window="1h").text
    assert len(attempt_ids(recent)) == 6  # all within the hour
    assert "No runs in the last 24h" in served.get("/dashboard/runs", token("carol")).text


def test_each_run_links_to_its_schedule_and_its_run(served: Served) -> None:
    html = served.get("/dashboard/runs", ALICE).text
    seeded = served.seeded
    assert f'href="/dashboard/schedules/{seeded.digest.id}"' in html
    assert f'href="/dashboard/schedules/{seeded.report.id}"' in html
    assert 'href="/dashboard/workflows/report/runs/wf-run-1"' in html
    assert 'href="/dashboard/sessions/wf-session-1"' in html


@pytest.mark.parametrize(("params", "field"), [
    ({"window": "5y"}, "window"), ({"page": "0"}, "page"), ({"status": "exploded"}, "status"),
    ({"limit": "1000"}, "limit"), ({"failures_first": "perhaps"}, "failures_first"), ({"page": "x"}, "page"),
    ({"tz": "Mars/Olympus_Mons"}, "tz"),
])
def test_bad_query_values_answer_422_naming_the_field(served: Served, params: dict[str, str], field: str) -> None:
    answer = served.get("/dashboard/runs", SECURITY_KEY, **params)
    assert answer.status_code == 422, answer.text
    assert field in answer.text


def test_without_a_key_the_page_asks_for_one(served: Served) -> None:
    answer = served.client.get("/dashboard/runs", headers={"Accept": "text/html"})
    assert answer.status_code in (401, 303)
    assert served.client.get("/dashboard/runs", headers={"Authorization": "Bearer nope"}).status_code == 401


# --- the health page ------------------------------------------------------------------------------


def figure(html: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}">([^<]*)<', html)
    assert found, element_id
    return found.group(1)


def test_health_draws_the_callers_rows(served: Served) -> None:
    answer = served.get("/dashboard/health", ALICE)
    assert answer.status_code == 200, answer.text
    html = answer.text
    assert figure(html, "fires-total") == "6" and figure(html, "fires-failed") == "2"
    assert html.count("<svg") == 3
    bars = re.findall(r"<rect [^>]*><title>([^<]*)</title>", html.split('id="lag-chart"')[0])
    assert bars and all("bob" not in bar for bar in bars)
    assert sum(float(n) for bar in bars for n in re.findall(r"success (\d+(?:\.\d+)?)", bar)) == 4
    assert figure(html, "overdue-now") == "0" and "bob-backup" not in html
    everyone = served.get("/dashboard/health", SECURITY_KEY).text
    assert figure(everyone, "fires-total") == "9" and figure(everyone, "overdue-now") == "1"
    assert "bob-backup" in everyone  # overdue now, linked
    assert f'href="/dashboard/schedules/{served.seeded.bobs.id}"' in everyone
    day = served.get("/dashboard/health", ALICE, window="24h").text
    assert figure(day, "fires-total") == "6" and "avg over 15 min" in day


def test_health_lag_and_overdue_buckets(served: Served) -> None:
    history = RunHistory(served.seeded.db)
    health = history.health(user_id="alice", window="1h")
    assert sum(b.lag_count for b in health.buckets) == 6
    assert max(b.lag_max_s or 0 for b in health.buckets) == 120
    assert sum(b.overdue for b in health.buckets) == 1  # the slot that started 120 s late
    everyone = history.health(user_id=None, window="1h")
    assert sum(b.overdue for b in everyone.buckets) == 2  # and ops' skipped slot


@pytest.mark.parametrize("window", ["7d", "2h", ""])
def test_health_refuses_a_bad_window(served: Served, window: str) -> None:
    answer = served.get("/dashboard/health", SECURITY_KEY, window=window)
    assert answer.status_code == 422 and "window" in answer.text


# --- the reads, on both databases ---------------------------------------------------------------


def test_history_reads_on_postgres_and_sqlite(db: Database) -> None:
    seeded = Seeded(db)
    history = RunHistory(db)
    page = history.recent(user_id="alice", failures_first=True, limit=3)
    assert [run.status for run in page.runs] == ["failed", "timeout", "success"] and page.has_next
    assert page.runs[0].target_type == "agent" and page.runs[0].target_id == "digest"
    assert history.recent(user_id="nobody").runs == []
    health = history.health(user_id=None, window="24h")
    assert len(health.buckets) == 96 and sum(b.total for b in health.buckets) == len(seeded.rows)
    assert health.totals()["failed"] == 2
    count, late = history.overdue(user_id=None)
    assert count == 1 and late[0].name == "bob-backup" and late[0].late_s >= OVERDUE_AFTER_S * 5
    assert history.overdue(user_id="alice") == (0, [])
    for bad in ({"window": "1y"}, {"status": "nope"}, {"page": 0}, {"limit": 0}):
        with pytest.raises(ValidationError) as refused:
            history.recent(user_id=None, **bad)  # type: ignore[arg-type]
        assert refused.value.field == next(iter(bad))


# --- in the browser ---------------------------------------------------------------------------------


def test_browser_runs_page_failures_first(served: Served, logged_in: Any) -> None:
    page = logged_in(served.url, SECURITY_KEY)
    page.goto(served.url + "/dashboard/runs")
    rows = page.locator("table.runs tbody tr")
    assert rows.count() == len(served.seeded.rows)
    screenshot(page, "dashboard-runs")
    page.click("#failures-first")
    page.wait_for_url(re.compile(r".*failures_first=true.*"))
    first = [rows.nth(i).get_attribute("data-status") for i in range(3)]
    assert first == ["failed", "failed", "timeout"]
    assert page.locator("table.runs tbody tr.failed-row").count() == 3
    screenshot(page, "dashboard-runs-failures-first")
    page.click(f'a[href="/dashboard/schedules/{served.seeded.digest.id}"] >> nth=0')
    page.wait_for_url(re.compile(rf".*/dashboard/schedules/{served.seeded.digest.id}"))


def test_browser_health_page_with_its_chart(served: Served, logged_in: Any) -> None:
    page = logged_in(served.url, SECURITY_KEY)
    page.goto(served.url + "/dashboard/health")
    chart = page.locator("#fires-chart svg.chart")
    assert chart.count() == 1 and chart.bounding_box()["height"] > 100  # type: ignore[index]
    assert page.locator("#fires-chart svg.chart rect").count() >= 9
    assert page.locator("#lag-chart svg.chart polyline").count() >= 1
    screenshot(page, "dashboard-health")
    page.select_option("select[name=window]", "24h")
    page.wait_for_url(re.compile(r".*window=24h.*"))
    screenshot(page, "dashboard-health-day")
