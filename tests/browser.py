"""The browser tests' one copy: Debian's chromium (/usr/bin/chromium, which `.ci/run`
installs) driven by Playwright from PyPI. Playwright never downloads a browser here: it
launches the system one (`executable_path`), headless.

    from tests.browser import browser, logged_in, screenshot  # noqa: F401 (fixtures)

    def test_page(logged_in, server):
        page = logged_in(server.url, "the-security-key")   # at /dashboard, signed in
        page.goto(server.url + "/dashboard/runs")
        screenshot(page, "runs")                           # test-artifacts/runs.png

- `browser` (module fixture): one chromium for the test module, closed after it (a test
  module imports the fixture, so each has its own; Playwright's sync API runs one at a
  time in a thread, so the module's is closed before the next module starts its own);
- `logged_in` (fixture): makes a page in a fresh browser context (its own cookies) signed
  in to a dashboard with a key, through the login form as a person would; its contexts are
  closed after the test;
- `screenshot(page, name)`: the whole page as ARTIFACTS/<name>.png (the path returned).
  ARTIFACTS (gitignored) is the one place screenshots go; CI keeps it as the run's artifacts.

The login form's contract (kern_tasks/dashboard's login page): an input named `key` and a
submit button; a good key lands on a page under /dashboard that is not the login page.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.processes import ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
VIEWPORT = {"width": 1280, "height": 800}
# Waits of a page (navigation, a selector): long enough for a loaded CI machine, short
# enough that a page that never shows what it should fails the test soon.
TIMEOUT_MS = 20_000
# expect()'s assertions retry for as long (Playwright's own default is 5 s).
expect.set_options(timeout=TIMEOUT_MS)
LOGIN_PATH = "/dashboard/login"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless chromium for the test module."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests use Debian's chromium "
                    "(apt-get install chromium chromium-driver; .ci/run installs it)")
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield launched
        finally:
            launched.close()


def new_page(browser: Browser) -> tuple[BrowserContext, Page]:
    """A page in a context of its own (no cookies shared with other pages)."""
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    return context, context.new_page()


def log_in(page: Page, base_url: str, key: str) -> Page:
    """Sign `page` in to the dashboard at `base_url` with `key` through the login form."""
    page.goto(base_url.rstrip("/") + LOGIN_PATH)
    page.fill("input[name=key], input[name=token]", key)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(re.compile(r".*/dashboard(?!/login).*"))
    return page


@pytest.fixture
def logged_in(browser: Browser) -> Iterator[Callable[[str, str], Page]]:
    """`logged_in(base_url, key)`: a new page signed in with `key` (see the module docstring)."""
    contexts: list[BrowserContext] = []

    def make(base_url: str, key: str) -> Page:
        context, page = new_page(browser)
        contexts.append(context)
        return log_in(page, base_url, key)

    yield make
    for context in contexts:
        context.close()


def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as ARTIFACTS/<name>.png; returns its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
