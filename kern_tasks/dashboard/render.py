"""The page frame: the Jinja2 templates (shipped in the package), their filters, and
`page()`, which every route answers with.

Times are epoch seconds everywhere in the store; templates show them with `at(epoch,
zone)` (in a schedule's zone, or the viewer's: the `tz` query value, else UTC, and the
browser's own zone by script, static/dashboard.js, for elements marked `data-epoch`,
which `when(epoch, zone)` writes).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from kern_tasks import __version__
from kern_tasks.dashboard import links
from kern_tasks.dashboard.csrf import csrf_token
from kern_tasks.os.auth import caller_of

# (nav key, label, URL): the pages the frame links; a page lights its own with `nav`.
NAV = (
    ("schedules", "Schedules", f"{links.BASE}/schedules"),
    ("runs", "Runs", f"{links.BASE}/runs"),
    ("health", "Health", f"{links.BASE}/health"),
)
# Status -> colour class (static/dashboard.css): one palette for every page.
STATUS_TONE = {
    "success": "ok", "running": "busy", "queued": "wait", "retrying": "warn", "failed": "bad",
    "timeout": "bad", "cancelled": "muted", "skipped": "muted", "paused": "muted",
    "COMPLETED": "ok", "RUNNING": "busy", "PENDING": "wait", "ERROR": "bad", "CANCELLED": "muted",
    # a workflow step's (workflow/tree.py)
    "succeeded": "ok", "lost": "bad", "waiting": "wait", "not run": "muted",
}


def zone_of(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def at(epoch: int | float | None, zone: str | None = "UTC", with_zone: bool = True) -> str:
    """`2026-03-08 09:00:00 EDT` (empty for None)."""
    if epoch is None:
        return ""
    when = datetime.fromtimestamp(epoch, zone_of(zone))
    return when.strftime("%Y-%m-%d %H:%M:%S") + (f" {when.tzname()}" if with_zone else "")


def when(epoch: int | float | None, zone: str | None) -> Markup:
    """`<time data-epoch>` with `at(epoch, zone)` in it: what static/dashboard.js rewrites
    into the browser's zone (every page's "your zone" times)."""
    return Markup('<time data-epoch="{}">{}</time>').format(epoch, at(epoch, zone))


def epoch_of(text: str | None) -> float | None:
    """Epoch seconds of an ISO 8601 time as agno stores trace times (None if unreadable)."""
    try:
        return datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None


def iso(epoch: int | float | None) -> str:
    return "" if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def duration(seconds: int | float | None) -> str:
    """`850 ms`, `12.4 s`, `3 min 5 s`, `2 h 10 min` (empty for None)."""
    if seconds is None:
        return ""
    if isinstance(seconds, int) and seconds == 0:
        return "< 1 s"  # whole seconds (attempt times): it ended within the second it started
    if seconds < 1:
        return f"{int(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def tone(status: str | None) -> str:
    return STATUS_TONE.get(status or "", "muted")


_env = Environment(
    loader=PackageLoader("kern_tasks.dashboard", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(at=at, when=when, iso=iso, duration=duration, tone=tone, epoch_of=epoch_of)
_env.globals.update(links=links, nav_items=NAV, version=__version__)


def render(name: str, **context: Any) -> str:
    """A template (or fragment) as text, for answers that are not whole pages."""
    return _env.get_template(name).render(**context)


def page(request: Request, template: str, nav: str | None, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A whole page: `template` in the frame, `nav` lit, the caller and CSRF token given."""
    from_session = _session_context(request)
    answer = HTMLResponse(render(template, request=request, nav=nav, **from_session, **context), status_code=status_code)
    answer.headers["cache-control"] = "no-store"  # pages show live state and a CSRF token
    answer.headers["x-frame-options"] = "DENY"
    return answer


def auth_of(request: Request) -> Any:
    """The app's BearerAuth (os/auth.py leaves it on every /dashboard request) when auth is
    on; None: auth is off, every page open."""
    auth = getattr(request.state, "auth", None)
    return auth if auth is not None and auth.enabled else None


def _session_context(request: Request) -> dict[str, Any]:
    caller = caller_of(request)
    signed_in = getattr(request.state, "caller", None) is not None
    if auth_of(request) is not None and not signed_in:  # the login page, or a page refused
        return {"csrf": csrf_token(request), "who": "", "caller": caller, "logged_in": False, "show_nav": False}
    who = {"open": "auth off", "key": "security key", "service": "service token"}.get(
        caller.kind, f"user {caller.user_id}" if caller.user_id else "admin token")
    return {"csrf": csrf_token(request), "who": who, "caller": caller, "logged_in": signed_in, "show_nav": True}
