"""Logging in with a key, logging out, and CSRF.

The login takes what the API takes as a bearer token (the security key, or a user's
JWT), checks it with the API's own rules (os/auth.py `BearerAuth.identify`, for the page
asked for), and keeps it in the `kern_dashboard` cookie: HttpOnly (no script reads it),
SameSite=Strict (no other site's request carries it), Path=/dashboard (the API never
sees it), Secure over HTTPS. It lives as long as the browser session; logging out
clears it. A JWT that expires sends the next page to the login again.
The login's own POST checks its origin (csrf.py has the rest of the CSRF rules).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kern_tasks.dashboard import links
from kern_tasks.dashboard.csrf import read_form, same_origin
from kern_tasks.dashboard.render import auth_of, page
from kern_tasks.os.auth import DASHBOARD_COOKIE, Caller
from kern_tasks.os.errors import RequestRefused

router = APIRouter()

MAX_TOKEN_CHARS = 16_384
WHY = {
    "missing": "Log in to see this page.",
    "invalid": "The key you logged in with is no longer accepted (changed, or your token expired).",
}


def _local(next_path: str | None) -> str:
    """Where to go after the login: a dashboard path only (never another site)."""
    if next_path and next_path.startswith(links.BASE) and not next_path.startswith("//") and "\\" not in next_path:
        return next_path
    return links.schedules()


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str | None = None, why: str | None = None) -> Response:
    if auth_of(request) is None:
        return RedirectResponse(_local(next), status_code=303)
    return page(request, "login.html", None, title="Log in", next=_local(next), message=WHY.get(why or ""))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    fields = await read_form(request)
    auth = auth_of(request)
    target = _local(fields.get("next"))
    if auth is None:
        return RedirectResponse(target, status_code=303)
    if not same_origin(request):
        raise RequestRefused("cross-origin login refused", status_code=403)
    token = fields.get("key", "").strip()
    if not token or len(token) > MAX_TOKEN_CHARS:
        return page(request, "login.html", None, status_code=422, title="Log in", next=target,
                    error="key: paste the security key or your JWT")
    who = auth.identify(token, "GET", urlsplit(target).path)
    if not isinstance(who, Caller):
        status, detail = who
        return page(request, "login.html", None, status_code=status, title="Log in", next=target, error=detail)
    answer = RedirectResponse(target, status_code=303)
    answer.set_cookie(DASHBOARD_COOKIE, token, httponly=True, samesite="strict", path=links.BASE,
                      secure=request.url.scheme == "https")
    return answer


@router.post("/logout")
async def logout(request: Request) -> Response:
    answer = RedirectResponse(f"{links.BASE}/login", status_code=303)
    answer.delete_cookie(DASHBOARD_COOKIE, path=links.BASE, httponly=True, samesite="strict")
    return answer
