"""The dashboard's skeleton and schedules pages over HTTP, on real uvicorn and Postgres
(tests/dashboard_stack.py: the AgentOS's embedded scheduler fires for real): the login
and its cookie, who sees which rows, CSRF, the listing's filters, order and pages, a
schedule's page (next fires with DST marks, runs, failures, links), the actions through
the core's rules, the live fragment, and bad input answered 4xx naming the field."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from sqlalchemy import update

from kern_tasks.db import Database
from kern_tasks.db.tables import schedules
from kern_tasks.os import AgentOS
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.settings import Settings
from tests.conftest import POSTGRES_URL, drop_schema, fresh_schema_name
from tests.dashboard_stack import SECURITY_KEY, DashboardStack, csrf_of, dashboard_stack, user_token
from tests.os_server import LiveServer
from tests.processes import wait_for

HTML = {"accept": "text/html"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardStack]:
    with dashboard_stack(tmp_path_factory.mktemp("dashboard")) as made:
        yield made


@pytest.fixture(scope="module")
def key_client(stack: DashboardStack) -> Iterator[httpx.Client]:
    with closing(stack.logged_in()) as client:
        yield client


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def post(client: httpx.Client, path: str, page_path: str, **fields: str) -> httpx.Response:
    """A form POST as the page would send it: its CSRF token, this origin."""
    token = csrf_of(client.get(page_path).text)
    return client.post(path, data={"csrf": token, **fields}, headers={"origin": str(client.base_url).rstrip("/")})


def names_listed(html: str) -> list[str]:
    return re.findall(r'<a class="name" href="[^"]+">([^<]+)</a>', html)


# --- login, cookie, auth ------------------------------------------------------------------


def test_without_a_cookie_pages_send_to_the_login_and_fetches_get_401(stack: DashboardStack) -> None:
    with stack.client() as client:
        page = client.get("/dashboard/schedules", headers=HTML)
        assert page.status_code == 303
        assert page.headers["location"] == "/dashboard/login?why=missing&next=/dashboard/schedules"
        assert client.get("/dashboard/schedules").status_code == 401  # not HTML: JSON 401
        login = client.get("/dashboard/login?why=missing")
        assert login.status_code == 200 and 'name="key"' in login.text and "Log in to see this page" in login.text
        assert "<nav>" not in login.text and "auth off" not in login.text  # not signed in: no menu
        assert client.get("/dashboard/static/dashboard.css").status_code == 200  # assets are open


def test_the_login_keeps_the_key_in_a_strict_httponly_cookie_for_the_dashboard_only(stack: DashboardStack) -> None:
    with stack.client() as client:
        answer = client.post("/dashboard/login", data={"key": SECURITY_KEY, "next": "/dashboard/schedules"})
        assert answer.status_code == 303 and answer.headers["location"] == "/dashboard/schedules"
        cookie = answer.headers["set-cookie"].lower()
        for part in ("kern_dashboard=", "httponly", "samesite=strict", "path=/dashboard"):
            assert part in cookie, cookie
        assert client.get("/dashboard/schedules").status_code == 200
        # The cookie is no credential for the API.
        with stack.client(cookies={"kern_dashboard": SECURITY_KEY}) as api:
            assert api.get("/schedules").status_code == 401
        out = client.post("/dashboard/logout")
        assert out.status_code == 303 and "kern_dashboard=" in out.headers["set-cookie"]
        assert client.get("/dashboard/schedules").status_code == 401


def test_a_bad_key_is_refused_with_the_reason_and_no_cookie(stack: DashboardStack) -> None:
    with stack.client() as client:
        wrong = client.post("/dashboard/login", data={"key": "not-the-key"})
        assert wrong.status_code == 401 and "invalid bearer token" in wrong.text
        assert "set-cookie" not in wrong.headers
        empty = client.post("/dashboard/login", data={"key": "  "})
        assert empty.status_code == 422 and "key:" in empty.text
        # A next that leaves the dashboard is not followed.
        away = client.post("/dashboard/login", data={"key": SECURITY_KEY, "next": "https://evil.example/"})
        assert away.headers["location"] == "/dashboard/schedules"
        # A stale cookie sends the browser back to the login, saying why.
    with stack.client(cookies={"kern_dashboard": "rotated-key"}) as stale_client:
        stale = stale_client.get("/dashboard/schedules", headers=HTML)
        assert stale.status_code == 303 and "why=invalid" in stale.headers["location"]


def test_a_user_without_the_scope_is_told_which_one(stack: DashboardStack) -> None:
    token = user_token("carol", scopes=["agents:read"])
    with stack.client() as client:
        refused = client.post("/dashboard/login", data={"key": token})
        assert refused.status_code == 403 and "schedules:read" in refused.text
        page = client.get("/dashboard/schedules", headers={**HTML, "authorization": f"Bearer {token}"})
        assert page.status_code == 403 and "schedules:read" in page.text
        reader = user_token("carol", scopes=["schedules:read"])
        made = stack.create(name=unique("carols"), token=user_token("carol"))
        with closing(stack.logged_in(reader)) as read_only:
            assert read_only.get(f"/dashboard/schedules/{made['id']}").status_code == 200
            denied = read_only.post(f"/dashboard/schedules/{made['id']}/trigger", data={"csrf": "x"})
            assert denied.status_code == 403 and "schedules:write" in denied.text


def test_a_users_key_never_shows_another_users_rows(stack: DashboardStack) -> None:
    tag = unique("owned")
    alices = stack.create(name=f"{tag}-alice", token=user_token("alice"))
    bobs = stack.create(name=f"{tag}-bob", token=user_token("bob"))
    with closing(stack.logged_in(user_token("alice"))) as alice:
        listed = names_listed(alice.get("/dashboard/schedules", params={"name": tag}).text)
        assert listed == [f"{tag}-alice"]
        # Asking for bob's rows by the owner filter finds none; his page is a 404.
        assert names_listed(alice.get("/dashboard/schedules", params={"owner": "bob"}).text) == []
        other = alice.get(f"/dashboard/schedules/{bobs['id']}")
        assert other.status_code == 404 and "no schedule" in other.text
        assert alice.get(f"/dashboard/schedules/{bobs['id']}/live").status_code == 404
        refused = post(alice, f"/dashboard/schedules/{bobs['id']}/pause", f"/dashboard/schedules/{alices['id']}",
                       reason="not mine")
        assert refused.status_code == 404
        bulk = post(alice, "/dashboard/schedules/bulk", "/dashboard/schedules", action="pause", name=tag)
        assert bulk.status_code == 200 and "Paused 1 schedule" in bulk.text
    manager = ScheduleManager(stack.db)
    assert manager.get_or_raise(bobs["id"]).enabled is True
    assert manager.get_or_raise(alices["id"]).enabled is False
    with closing(stack.logged_in()) as admin:  # the security key sees both
        assert sorted(names_listed(admin.get("/dashboard/schedules", params={"name": tag}).text)) == [
            f"{tag}-alice", f"{tag}-bob"]


def test_posts_without_the_csrf_token_or_from_another_origin_change_nothing(
        stack: DashboardStack, key_client: httpx.Client) -> None:
    made = stack.create(name=unique("csrf"))
    path = f"/dashboard/schedules/{made['id']}/pause"
    assert key_client.post(path, data={"reason": "x"}).status_code == 403
    assert key_client.post(path, data={"reason": "x", "csrf": "0" * 64}).status_code == 403
    token = csrf_of(key_client.get(f"/dashboard/schedules/{made['id']}").text)
    foreign = key_client.post(path, data={"csrf": token}, headers={"origin": "https://evil.example"})
    assert foreign.status_code == 403 and "cross-origin" in foreign.text
    # Another user's token does not fit this session.
    with closing(stack.logged_in(user_token("dave"))) as dave:
        dave_token = csrf_of(dave.get("/dashboard/schedules").text)
    assert dave_token != token
    assert key_client.post(path, data={"csrf": dave_token}).status_code == 403
    assert ScheduleManager(stack.db).get_or_raise(made["id"]).enabled is True


# --- the listing ---------------------------------------------------------------------------


def test_the_listing_shows_what_a_schedule_is_and_when_it_fires(stack: DashboardStack, key_client: httpx.Client) -> None:
    made = stack.create(name=unique("digest"), cron_expr="0 9 * * 1-5", timezone="America/New_York",
                        description="the morning digest")
    html = key_client.get("/dashboard/schedules", params={"name": made["name"], "tz": "Asia/Tokyo"}).text
    row = html[html.index(f'data-id="{made["id"]}"'):]
    row = row[:row.index("</tr>")]
    assert "0 9 * * 1-5" in row and "At 09:00, Monday through Friday" in row and "America/New_York" in row
    assert "the morning digest" in row and "never ran" in row and "enabled" in row
    assert re.search(r"\d{4}-\d\d-\d\d 09:00:00 E[SD]T", row)  # its zone
    assert re.search(r"\d{4}-\d\d-\d\d 2[23]:00:00 JST", row)  # the viewer's (?tz=)


def test_filters_order_by_next_fire_and_pages_that_meet(stack: DashboardStack, key_client: httpx.Client) -> None:
    tag = unique("paged")
    made = [stack.create(name=f"{tag}-{n}", cron_expr=f"0 {hour} * * *") for n, hour in enumerate([5, 1, 3, 2, 4, 0, 6])]
    paused = stack.create(name=f"{tag}-paused", cron_expr="0 7 * * *")
    ScheduleManager(stack.db).disable(paused["id"], reason="quiet")
    by_next_fire = sorted(made, key=lambda s: (s["next_run_at"], s["id"]))
    expected = [s["name"] for s in by_next_fire] + [f"{tag}-paused"]  # paused ones last

    seen: list[str] = []
    page = key_client.get("/dashboard/schedules", params={"name": tag, "limit": 3})
    pages = 0
    while True:
        pages += 1
        seen += names_listed(page.text)
        found = re.search(r'<a href="([^"]+)" rel="next">', page.text)
        if not found:
            break
        page = key_client.get(found.group(1).replace("&amp;", "&"))
    assert seen == expected and pages == 3
    back = re.search(r'<a href="([^"]+)">‹ Previous</a>', page.text)
    assert back
    assert names_listed(key_client.get(back.group(1).replace("&amp;", "&")).text) == expected[3:6]

    assert names_listed(key_client.get("/dashboard/schedules", params={"name": tag, "status": "paused"}).text) == [
        f"{tag}-paused"]
    # Paused ones page by id (they share one next-fire key); the pages meet there too.
    walked, query = [], {"status": "paused", "limit": 1}
    while len(walked) < 50:
        answer = key_client.get("/dashboard/schedules", params=query).text
        walked += names_listed(answer)
        found = re.search(r'<a href="[^"]*after=([^"&]+)[^"]*" rel="next">', answer)
        if not found:
            break
        query = {"status": "paused", "limit": 1, "after": found.group(1).replace("%7E", "~")}
    assert f"{tag}-paused" in walked and len(walked) == len(set(walked))
    listed = key_client.get("/dashboard/schedules", params={"name": tag, "status": "paused"}).text
    assert "quiet" in listed
    assert names_listed(key_client.get("/dashboard/schedules", params={"name": tag, "sort": "name"}).text) == sorted(
        expected)
    assert names_listed(key_client.get("/dashboard/schedules", params={"name": tag, "owner": "nobody"}).text) == []
    assert len(names_listed(key_client.get("/dashboard/schedules", params={"name": tag.upper()}).text)) == 8


@pytest.mark.parametrize(("params", "field"), [
    ({"status": "sleeping"}, "status"), ({"sort": "color"}, "sort"), ({"tz": "Mars/Olympus"}, "tz"),
    ({"limit": "0"}, "limit"), ({"limit": "many"}, "limit"), ({"after": "no-cursor"}, "after"),
    ({"after": "x~1", "before": "y~2"}, "before"), ({"name": "n" * 300}, "name"),
])
def test_bad_listing_input_answers_422_naming_the_field(key_client: httpx.Client, params: dict[str, str],
                                                        field: str) -> None:
    answer = key_client.get("/dashboard/schedules", params=params)
    assert answer.status_code == 422, answer.text
    assert f"{field}:" in answer.text and "<html" in answer.text


# --- a schedule's page and its actions ------------------------------------------------------


def test_a_schedules_page_lists_ten_fires_with_dst_changes_marked(stack: DashboardStack,
                                                                  key_client: httpx.Client) -> None:
    made = stack.create(name=unique("monthly"), cron_expr="0 9 1 * *", timezone="America/New_York")
    html = key_client.get(f"/dashboard/schedules/{made['id']}").text
    fires = html[html.index("<table class=\"grid fires\">"):]
    fires = fires[:fires.index("</table>")]
    assert fires.count("<tr") == 11  # the header and ten fires
    assert "Next 10 fires" in html
    # Ten months always hold a DST change of New York (March and November).
    assert re.search(r"DST -0[45]:00 -&gt; -0[45]:00", fires), fires


def test_trigger_fires_through_the_core_and_the_live_fragment_follows_it(stack: DashboardStack,
                                                                         key_client: httpx.Client) -> None:
    made = stack.create(name=unique("now"))
    page = f"/dashboard/schedules/{made['id']}"
    answer = post(key_client, f"{page}/trigger", page)
    assert answer.status_code == 303 and "done=triggered" in answer.headers["location"]
    shown = key_client.get(answer.headers["location"]).text
    assert "Triggered: run" in shown

    def ended() -> dict[str, Any] | None:
        live = key_client.get(f"{page}/live").json()
        return live if live["in_flight"] == 0 and 'data-status="success"' in live["attempts"] else None

    live = wait_for(ended, timeout=30, what="the triggered run to succeed")
    assert set(live) == {"in_flight", "status", "timeline", "attempts"}
    assert 'class="tick ok"' in live["timeline"]
    run_link = re.search(r'href="(/dashboard/agents/briefer/runs/[^"]+)">run</a>', live["attempts"])
    assert run_link, "the attempt links its agent run's page"
    run_page = key_client.get(run_link.group(1))
    assert run_page.status_code == 200 and ">COMPLETED<" in run_page.text and 'id="run-input">brief</pre>' in run_page.text
    session_link = re.search(r'href="(/dashboard/sessions/[^"]+)">session</a>', live["attempts"])
    trace_link = re.search(r'href="(/dashboard/traces\?run_id=[^"]+)">trace</a>', live["attempts"])
    assert session_link and trace_link
    session = key_client.get(session_link.group(1))
    assert session.status_code == 200 and "briefer" in session.text and "brief" in session.text
    # The run's trace is stored as its spans end; the page shows it once it is there.
    trace = wait_for(lambda: (answer := key_client.get(trace_link.group(1).replace("&amp;", "&"))).status_code == 200
                     and answer, timeout=15, what="the run's trace")
    assert 'class="grid spans"' in trace.text and "OK" in trace.text
    # Another user's token reaches neither (the API's rule: another's session is a 404).
    with closing(stack.logged_in(user_token("eve"))) as eve:
        assert eve.get(session_link.group(1)).status_code == 404
        assert eve.get(trace_link.group(1).replace("&amp;", "&")).status_code == 404
    assert key_client.get("/dashboard/traces", params={"run_id": "no-such-run"}).status_code == 404
    assert key_client.get("/dashboard/traces").status_code == 422


def test_a_failing_schedule_shows_its_error_and_status_code(stack: DashboardStack, key_client: httpx.Client) -> None:
    made = stack.create(name=unique("broken"), endpoint="/agents/raiser/runs")
    page = f"/dashboard/schedules/{made['id']}"
    post(key_client, f"{page}/trigger", page)
    wait_for(lambda: key_client.get(f"{page}/live").json()["in_flight"] == 0 and "failed" in key_client.get(
        f"{page}/live").json()["attempts"], timeout=30, what="the failing run to end")
    html = key_client.get(page).text
    failures = html[html.index("<h2>Failures</h2>"):]
    assert "agent bug while handling" in failures and "HTTP 200" in failures
    listed = key_client.get("/dashboard/schedules", params={"name": made["name"], "status": "failing"}).text
    assert names_listed(listed) == [made["name"]]


def test_pause_with_a_reason_then_resume_and_a_paused_trigger_says_why(stack: DashboardStack,
                                                                        key_client: httpx.Client) -> None:
    made = stack.create(name=unique("pausable"))
    page = f"/dashboard/schedules/{made['id']}"
    paused = post(key_client, f"{page}/pause", page, reason="vendor outage")
    assert paused.status_code == 303
    html = key_client.get(page).text
    assert "vendor outage" in html and "Resume…" in html
    stored = ScheduleManager(stack.db).get_or_raise(made["id"])
    assert (stored.enabled, stored.disabled_reason) == (False, "vendor outage")
    refused = post(key_client, f"{page}/trigger", page)
    assert refused.status_code == 409 and "is disabled: enable it first" in refused.text
    resumed = post(key_client, f"{page}/resume", page)
    assert resumed.status_code == 303
    stored = ScheduleManager(stack.db).get_or_raise(made["id"])
    assert (stored.enabled, stored.disabled_reason) == (True, None)


def test_bulk_pause_and_resume_a_filtered_set_after_a_confirmation(stack: DashboardStack,
                                                                   key_client: httpx.Client) -> None:
    tag = unique("bulk")
    made = [stack.create(name=f"{tag}-{n}") for n in range(3)]
    other = stack.create(name=unique("bystander"))
    confirm = key_client.get("/dashboard/schedules/bulk", params={"action": "pause", "name": tag})
    assert confirm.status_code == 200 and "Pause 3 schedules?" in confirm.text
    done = post(key_client, "/dashboard/schedules/bulk", "/dashboard/schedules", action="pause", name=tag,
                reason="release freeze")
    assert done.status_code == 200 and "Paused 3 schedules" in done.text and "release freeze" in done.text
    manager = ScheduleManager(stack.db)
    assert [manager.get_or_raise(s["id"]).disabled_reason for s in made] == ["release freeze"] * 3
    assert manager.get_or_raise(other["id"]).enabled is True
    back = post(key_client, "/dashboard/schedules/bulk", "/dashboard/schedules", action="resume", name=tag,
                status="paused")
    assert "Resumed 3 schedules" in back.text
    assert all(manager.get_or_raise(s["id"]).enabled for s in made)
    bad = post(key_client, "/dashboard/schedules/bulk", "/dashboard/schedules", action="delete", name=tag)
    assert bad.status_code == 422 and "action:" in bad.text
    assert key_client.get("/dashboard/schedules/bulk", params={"action": "explode"}).status_code == 422


def test_a_result_line_is_worded_from_the_schedule_never_from_the_link(stack: DashboardStack,
                                                                        key_client: httpx.Client) -> None:
    made = stack.create(name=unique("worded"))
    page = key_client.get(f"/dashboard/schedules/{made['id']}", params={"done": "call +1 555 0100 now"}).text
    assert "555" not in page
    page = key_client.get(f"/dashboard/schedules/{made['id']}", params={"done": "triggered", "run": "<b>x</b>"}).text
    assert "Triggered: a run is queued" in page and "<b>x" not in page


def test_with_auth_off_the_dashboard_is_open_and_still_wants_its_csrf_token(tmp_path: Path) -> None:
    schema = fresh_schema_name()
    db = Database(POSTGRES_URL, schema=schema, settings=Settings())
    try:
        made = ScheduleManager(db).create(name="open-one", cron="0 9 * * *", endpoint="/hook")
        with LiveServer(AgentOS(db=db, settings=Settings()).get_app()) as server, httpx.Client(
                base_url=server.url, timeout=20) as client:
            assert client.get("/dashboard/login").headers.get("location") == "/dashboard/schedules"
            listing = client.get("/dashboard/", follow_redirects=True)
            assert listing.status_code == 200 and "open-one" in listing.text and "auth off" in listing.text
            path = f"/dashboard/schedules/{made.id}/pause"
            assert client.post(path, data={"reason": "x"}).status_code == 403
            assert post(client, path, f"/dashboard/schedules/{made.id}", reason="quiet").status_code == 303
        assert ScheduleManager(db).get_or_raise(made.id).disabled_reason == "quiet"
    finally:
        db.dispose()
        drop_schema(schema)


def test_bad_input_on_a_schedules_page_and_its_actions_answers_4xx_and_changes_nothing(
        stack: DashboardStack, key_client: httpx.Client) -> None:
    made = stack.create(name=unique("bad-input"))
    page = f"/dashboard/schedules/{made['id']}"
    for path in (page, f"{page}/live"):
        answer = key_client.get(path, params={"tz": "Nowhere/Atlantis"})
        assert answer.status_code == 422 and "tz:" in answer.text, path
    too_long = post(key_client, f"{page}/pause", page, reason="r" * 10_001)
    assert too_long.status_code == 422 and "disabled_reason" in too_long.text
    not_a_form = key_client.post(f"{page}/pause", content=b'{"reason": "x"}',
                                 headers={"content-type": "application/json"})
    assert not_a_form.status_code == 415
    assert ScheduleManager(stack.db).get_or_raise(made["id"]).enabled is True


def test_a_row_agno_wrote_with_a_cron_only_croniter_reads_still_shows(stack: DashboardStack,
                                                                       key_client: httpx.Client) -> None:
    made = stack.create(name=unique("third-friday"))
    with stack.db.begin() as conn:  # as agno's own manager would store it
        conn.execute(update(schedules).where(schedules.c.id == made["id"]).values(cron_expr="0 9 * * 5#3"))
    page = key_client.get(f"/dashboard/schedules/{made['id']}")
    assert page.status_code == 200 and "cannot read this schedule" in page.text and "0 9 * * 5#3" in page.text
    listed = key_client.get("/dashboard/schedules", params={"name": made["name"]})
    assert listed.status_code == 200 and "not understood by kern_tasks" in listed.text


def test_unknown_schedules_and_pages_answer_404_pages(key_client: httpx.Client) -> None:
    for path in ("/dashboard/schedules/no-such-id", "/dashboard/schedules/" + "x" * 300, "/dashboard/nowhere"):
        answer = key_client.get(path)
        assert answer.status_code == 404 and "<html" in answer.text, path
    missing = post(key_client, "/dashboard/schedules/no-such-id/trigger", "/dashboard/schedules")
    assert missing.status_code == 404 and "no schedule" in missing.text
