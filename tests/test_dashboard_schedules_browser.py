"""The schedules pages in a real browser (Debian's chromium driven by Playwright,
tests/browser.py) against the dashboard stack (tests/dashboard_stack.py: uvicorn,
Postgres, the embedded scheduler firing for real): log in with a key, see a schedule
made through the API with its description and next fire, trigger it and watch its run
turn success without a reload, pause it with a reason and see the reason, read a failing
schedule's error, bulk-pause a filter after its confirmation. Each page is saved as a
screenshot in test-artifacts/ (tests/browser.py `screenshot`)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from playwright.sync_api import Page, expect

from tests.browser import browser, logged_in, screenshot  # noqa: F401 (fixtures)
from tests.dashboard_stack import SECURITY_KEY, DashboardStack, dashboard_stack
from tests.processes import wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardStack]:
    with dashboard_stack(tmp_path_factory.mktemp("dashboard-browser")) as made:
        tag = uuid.uuid4().hex[:4]
        # A few neighbours, so the listing looks like a real one.
        made.create(name=f"hourly-sync-{tag}", cron_expr="15 * * * *", description="pull the CRM delta")
        made.create(name=f"eu-report-{tag}", cron_expr="30 7 * * 1", timezone="Europe/Berlin",
                    description="weekly report for the EU team")
        made.create(name=f"heartbeat-{tag}", interval_seconds=300, cron_expr=None)
        quiet = made.create(name=f"legacy-export-{tag}", cron_expr="0 2 1 * *")
        made.agent_os.manager.disable(quiet["id"], reason="replaced by the warehouse job")
        yield made


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def open_schedule(page: Page, stack: DashboardStack, made: dict[str, Any]) -> None:
    page.goto(f"{stack.url}/dashboard/schedules/{made['id']}")
    expect(page.locator("h1")).to_have_text(made["name"])


def test_log_in_and_see_a_schedule_with_its_description_and_next_fire(
        stack: DashboardStack, logged_in: Callable[[str, str], Page], browser: Any) -> None:
    login = browser.new_page(viewport={"width": 1280, "height": 800})
    login.goto(f"{stack.url}/dashboard/login")
    screenshot(login, "dashboard-login")
    login.close()

    made = stack.create(name=unique("morning-digest"), cron_expr="0 9 * * 1-5", timezone="America/New_York",
                        description="the team's morning digest")
    page = logged_in(stack.url, SECURITY_KEY)
    expect(page).to_have_url(re.compile(r"/dashboard/schedules$"))
    row = page.locator(f'tr[data-id="{made["id"]}"]')
    expect(row).to_contain_text("At 09:00, Monday through Friday")
    expect(row).to_contain_text("the team's morning digest")
    expect(row).to_contain_text("America/New_York")
    expect(row.locator("td").nth(3)).to_have_text(re.compile(r"\d{4}-\d\d-\d\d 09:00:00 E[SD]T"))
    # The viewer's column is in the browser's own zone (Intl), labelled with it.
    zone = page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone")
    expect(page.locator("th .viewer-zone")).to_have_text(zone)
    expect(row.locator("td").nth(4)).to_have_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:00:00"))
    screenshot(page, "dashboard-schedules")


def test_trigger_and_watch_the_run_turn_success_without_a_reload(
        stack: DashboardStack, logged_in: Callable[[str, str], Page]) -> None:
    made = stack.create(name=unique("on-demand-brief"), cron_expr="0 9 1 * *", timezone="America/New_York",
                        description="brief the team now and then")
    page = logged_in(stack.url, SECURITY_KEY)
    open_schedule(page, stack, made)
    expect(page.locator("table.fires tbody tr")).to_have_count(10)
    expect(page.locator("table.fires .tag.warn").first).to_contain_text("DST")
    page.get_by_role("button", name="Trigger now").click()
    page.get_by_role("button", name="Trigger", exact=True).click()
    expect(page.locator(".flash.ok")).to_contain_text("Triggered: run")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    expect(page.locator('#live-attempts tr[data-status="success"]')).to_have_count(1, timeout=30_000)
    expect(page.locator("#live-timeline .timeline .tick.ok")).to_have_count(1)
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
    # Nothing in flight any more: no request is out and none is timed (no busy loop, no idle one).
    page.wait_for_function("!window.kernLive.polling()")
    assert page.locator("#schedule-facts").get_attribute("data-in-flight") == "0"
    expect(page.locator("#live-attempts a", has_text="session")).to_have_count(1)
    screenshot(page, "dashboard-schedule-triggered")
    page.locator("#live-attempts a", has_text="session").click()
    expect(page.locator("h1")).to_contain_text("Session")
    expect(page.locator("table.grid tbody tr")).to_have_count(1)
    screenshot(page, "dashboard-session")
    page.get_by_role("link", name="trace").click()
    # The trace is stored as the run's spans end: a moment after the run, at worst.
    wait_for(lambda: page.locator("table.spans").count() > 0 or page.reload() is None and False, timeout=15,
             what="the run's trace page")
    expect(page.locator("table.spans tbody tr").first).to_be_visible()
    screenshot(page, "dashboard-trace")


def test_pause_with_a_reason_and_see_the_reason(stack: DashboardStack, logged_in: Callable[[str, str], Page]) -> None:
    # Every 2 s, so its timeline has a few slots by the time it is paused.
    made = stack.create(name=unique("invoice-poller"), cron_expr="*/2 * * * * *", timezone="Europe/London",
                        description="poll the billing API for new invoices")
    manager = stack.agent_os.manager
    wait_for(lambda: sum(r.status == "success" for r in manager.runs(made["id"], limit=50).data) >= 4, timeout=40,
             what="four fires of the poller")
    page = logged_in(stack.url, SECURITY_KEY)
    open_schedule(page, stack, made)
    expect(page.locator("#live-timeline .timeline .slot")).not_to_have_count(0)
    page.get_by_role("button", name="Pause…").click()
    page.fill("#pause-dialog input[name=reason]", "billing API migration until Friday")
    page.locator("#pause-dialog").get_by_role("button", name="Pause").click()
    expect(page.locator(".paused-banner")).to_have_text("Paused: billing API migration until Friday")
    expect(page.locator(".flash.ok")).to_have_count(0)  # the banner is the result line
    expect(page.locator("#live-status .reason")).to_have_text("billing API migration until Friday")
    expect(page.get_by_role("button", name="Resume…")).to_be_visible()
    screenshot(page, "dashboard-schedule-paused")
    page.goto(f"{stack.url}/dashboard/schedules?status=paused")
    expect(page.locator(f'tr[data-id="{made["id"]}"] .reason')).to_have_text("billing API migration until Friday")
    screenshot(page, "dashboard-schedules-paused")


def test_open_a_failing_schedule_and_read_its_error(stack: DashboardStack, logged_in: Callable[[str, str], Page]) -> None:
    made = stack.create(name=unique("flaky-enrichment"), endpoint="/agents/raiser/runs", cron_expr="*/30 * * * *",
                        description="enrich new leads")
    page = logged_in(stack.url, SECURITY_KEY)
    open_schedule(page, stack, made)
    page.get_by_role("button", name="Trigger now").click()
    page.get_by_role("button", name="Trigger", exact=True).click()
    expect(page.locator('#live-attempts tr[data-status="failed"]')).to_have_count(1, timeout=30_000)
    page.reload()  # the failures section is the page's, not the live fragment's
    failures = page.locator("ul.failures li")
    expect(failures).to_have_count(1)
    expect(failures.locator(".error-text")).to_contain_text("RuntimeError: agent bug while handling 'brief'")
    expect(failures).to_contain_text("HTTP 200")
    screenshot(page, "dashboard-schedule-failing")
    page.goto(f"{stack.url}/dashboard/schedules?status=failing")
    expect(page.locator(f'tr[data-id="{made["id"]}"] .badge.bad')).to_have_text("failed")


def test_bulk_pause_a_filter_after_its_confirmation(stack: DashboardStack, logged_in: Callable[[str, str], Page]) -> None:
    tag = unique("campaign")
    made = [stack.create(name=f"{tag}-{n}", cron_expr=f"0 {8 + n} * * *") for n in range(3)]
    page = logged_in(stack.url, SECURITY_KEY)
    page.goto(f"{stack.url}/dashboard/schedules?name={tag}")
    expect(page.locator("tbody tr[data-id]")).to_have_count(3)
    page.get_by_role("link", name="Pause all matching…").click()
    expect(page.locator("h1")).to_have_text("Pause 3 schedules?")
    page.fill("input[name=reason]", "campaign over")
    screenshot(page, "dashboard-bulk-confirm")
    page.get_by_role("button", name="Pause them").click()
    expect(page.locator("h1")).to_have_text("Paused 3 schedules")
    screenshot(page, "dashboard-bulk-done")
    assert all(not stack.agent_os.manager.get_or_raise(s["id"]).enabled for s in made)
