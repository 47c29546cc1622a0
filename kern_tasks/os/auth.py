"""Who may call what: the bearer-token guard of the whole app (a pure ASGI middleware, so
/docs, /openapi.json and unknown paths are guarded too, and nothing about a route leaks
without a credential), and who the caller is, for the routes that scope by user.

Auth is on when a security key (KERN_SECURITY_KEY or AgentOS(security_key=...)) or a JWT
verification key (KERN_JWT_VERIFICATION_KEY / KERN_JWT_JWKS_FILE, os/tokens.py) is set.
Then:
- `/health` is open;
- `Authorization: Bearer <security key>` may call everything, as no user (every owner's
  rows);
- `Authorization: Bearer <service token>` (KERN_SERVICE_TOKEN: what schedules fire with)
  may only start and poll runs: POST /agents|teams|workflows/{id}/runs and
  GET .../runs/{run_id}. Anything else answers 403 (agno lets it manage schedules too);
- `Authorization: Bearer <metrics token>` (KERN_METRICS_TOKEN: what Prometheus scrapes
  with) may only GET /metrics (403 elsewhere), so a scraper never holds the security key;
- `Authorization: Bearer <JWT>` is a user's (os/tokens.py: `sub` the user, `scopes` agno's
  scope names, `aud` this OS's id). Each route needs the scopes agno's table gives it
  (os/scopes.py); /docs and /openapi.json need none; a path the table does not know needs
  `agent_os:admin`. A token without the scopes answers 403 naming them; a bad, expired or
  foreign token answers 401 saying why. A token without `sub` must hold `agent_os:admin`;
- no token, or any other token, answers 401.
Without either key every route is open, as in agno.

The dashboard (kern_tasks/dashboard, under /dashboard) is a browser's: there, and only
there, the credential may also come in the `kern_dashboard` cookie its login sets
(HttpOnly, SameSite=Strict, Path=/dashboard), checked by the same rules; its login,
logout and static files are open. A refused dashboard page asked for as HTML is sent to
the login page (401) or told why in HTML (403) instead of JSON. The cookie is never
accepted off /dashboard, so the API's cross-site surface is unchanged.

Tokens are compared with hmac.compare_digest; none is ever logged or echoed.

The middleware leaves the caller in `request.state.caller` (a `Caller`). Routes ask
`scoped_user(request, asked)` whose rows a read or change may touch: a user's own, unless
their token holds `agent_os:admin` (agno's rule); `creating_user(request)` who owns what
they create; `acting_user(request, given)` whom a run started by the request runs as (a
user token's subject wins over the form's user_id, as in agno); `check_may_schedule`
whether a user may point a schedule at a route (only at what their token may run).

The JWT settings and the OS id (the audience) are read from the AgentOS the app serves
(`app.state.agent_os`) when the server starts (its lifespan; the first request without one),
so a misconfigured key stops the start instead of refusing every token.
"""

from __future__ import annotations

import hmac
import html
import json
import re
from http.cookies import CookieError, SimpleCookie
from urllib.parse import quote
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from starlette.requests import Request

from kern_tasks.os import describe
from kern_tasks.os.errors import RequestRefused
from kern_tasks.os.scopes import ADMIN_SCOPE, allows, is_listing, listable_ids, required_scopes, schedule_refusal
from kern_tasks.os.tokens import InvalidToken, TokenVerifier
from kern_tasks.scheduler.endpoints import RUN_ENDPOINT

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health", "/health/"})
SERVICE_ONLY = "the service token may only start and poll runs (/agents|teams|workflows/{id}/runs)"
METRICS_ONLY = "the metrics token may only GET /metrics"
METRICS_PATH = "/metrics"
# What any valid credential may read: the API's own description.
DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})
DASHBOARD = "/dashboard"
DASHBOARD_COOKIE = "kern_dashboard"
DASHBOARD_LOGIN = DASHBOARD + "/login"
# What anyone may reach under /dashboard: the login itself, logging out, the CSS and JS.
DASHBOARD_OPEN = frozenset({DASHBOARD_LOGIN, DASHBOARD + "/logout"})
DASHBOARD_STATIC = DASHBOARD + "/static/"
# What the service token may do: (method, path pattern).
SERVICE_ROUTES = (
    ("POST", RUN_ENDPOINT),
    ("GET", re.compile(r"^/(agents|teams|workflows)/[^/]+/runs/[^/]+/?$")),
)


@dataclass(frozen=True)
class Caller:
    """Who sent a request: "open" (auth is off), "key" (the security key), "service" (the
    service token), "metrics" (the metrics token) or "user" (a JWT: its subject and scopes)."""

    kind: str
    user_id: str | None = None
    scopes: tuple[str, ...] = ()

    @property
    def owner(self) -> str | None:
        """The one user whose rows this caller reaches; None: every owner's."""
        if self.kind == "user" and ADMIN_SCOPE not in self.scopes:
            return self.user_id
        return None


OPEN = Caller("open")


def caller_of(request: Request) -> Caller:
    """The request's caller, as BearerAuth recorded it (OPEN when auth is off)."""
    caller = getattr(request.state, "caller", None)
    return caller if isinstance(caller, Caller) else OPEN


def scoped_user(request: Request, asked: str | None = None) -> str | None:
    """The owner a read or change is limited to: a user token's subject (unless it holds
    agent_os:admin), whatever `asked` (a user_id filter of the request) says; else `asked`."""
    owner = caller_of(request).owner
    return owner if owner is not None else asked


def listable(request: Request, kind: str) -> set[str] | None:
    """The ids of `kind` (agents, teams, workflows) the caller's listing shows: None for all
    (auth off, the security key, admin or a kind-wide scope), else a user token's own."""
    caller = caller_of(request)
    return listable_ids(caller.scopes, kind) if caller.kind == "user" else None


def creating_user(request: Request) -> str | None:
    """Who owns what the request creates: the token's user (admin or not); None for the
    security key and open mode (unowned), as agno's schedules router decides."""
    caller = caller_of(request)
    return caller.user_id if caller.kind == "user" else None


def acting_user(request: Request, given: str | None) -> str | None:
    """Whom a run started by this request runs as: a user token's subject, else `given`
    (the form's user_id; what a schedule fires with is its owner)."""
    caller = caller_of(request)
    if caller.kind == "user" and caller.user_id is not None:
        return caller.user_id
    return given


def check_may_schedule(request: Request, method: str, endpoint: str) -> None:
    """Refuse (403) a user's token pointing a schedule at a route it may not run itself
    (os/scopes.py's `schedule_refusal`, agno's rule); the security key may schedule any."""
    caller = caller_of(request)
    if caller.kind != "user":
        return
    refusal = schedule_refusal(caller.scopes, method, endpoint)
    if refusal is not None:
        raise RequestRefused(refusal, status_code=403)


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def _same(given: str, secret: str | None) -> bool:
    if not secret:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), secret.encode("utf-8", "surrogateescape"))


def service_may_call(method: str, path: str) -> bool:
    return any(method == allowed and pattern.match(path) for allowed, pattern in SERVICE_ROUTES)


def user_refusal(caller: Caller, method: str, path: str) -> str | None:
    """Why a user's token may not call `method path` (None: it may)."""
    if path in DOC_PATHS:
        return None
    needed = required_scopes(method, path)
    if needed is None:
        return None if ADMIN_SCOPE in caller.scopes else f"Insufficient permissions. Required scope(s): {ADMIN_SCOPE}"
    if allows(caller.scopes, needed, path) or is_listing(method, path):
        return None  # a listing lets any token through, filtered to what it may see (`listable`)
    return f"Insufficient permissions. Required scope(s): {', '.join(needed)}"


class BearerAuth:
    """Let a request through, or answer 401/403 per the module docstring."""

    def __init__(self, app: ASGIApp, *, security_key: str | None, service_token: str | None,
                 metrics_token: str | None = None) -> None:  # fmt: skip
        self.app = app
        self.security_key = security_key or None
        self.service_token = service_token or None
        self.metrics_token = metrics_token or None
        self.verifier: TokenVerifier | None = None
        self._configured = False

    def configure(self, scope: Scope) -> None:
        """Read the JWT settings and the OS id of the AgentOS this app serves, once."""
        if self._configured:
            return
        state = getattr(scope.get("app"), "state", None)
        agent_os = getattr(state, "agent_os", None)
        settings = getattr(agent_os, "settings", None)
        if settings is not None:
            self.verifier = TokenVerifier.from_settings(settings, audience=describe.os_id(agent_os))
        self._configured = True

    @property
    def enabled(self) -> bool:
        return self.security_key is not None or self.verifier is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and not self._configured:
            try:
                self.configure(scope)
            except Exception as exc:
                # A bad key stops the start, said why (and raised, as Starlette's own lifespan does).
                await receive()  # lifespan.startup
                await send({"type": "lifespan.startup.failed", "message": f"authentication settings: {exc}"})
                raise
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.configure(scope)  # a no-op after the lifespan; an app served without one
        method, path = scope["method"], scope["path"]
        on_dashboard = is_dashboard(path)
        if on_dashboard:
            scope.setdefault("state", {})["auth"] = self  # the login checks a key with `identify`
        if not self.enabled or path in OPEN_PATHS or (
                on_dashboard and (path in DASHBOARD_OPEN or path.startswith(DASHBOARD_STATIC))):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        via_cookie = False
        if token is None and on_dashboard:
            token = dashboard_cookie(scope)
            via_cookie = token is not None
        if token is None:
            refusal: tuple[int, str] | Caller = (401, f"missing bearer token: send Authorization: Bearer <{self._wanted()}>")
        else:
            refusal = self.identify(token, method, path)
        if not isinstance(refusal, Caller):
            status, detail = refusal
            if on_dashboard and _wants_html(scope):
                await _dashboard_deny(send, path, status, detail, why="missing" if token is None else "invalid")
            else:
                await _deny(send, status, detail)
            return
        state = scope.setdefault("state", {})
        state["caller"] = refusal
        state["via_cookie"] = via_cookie
        await self.app(scope, receive, send)

    def identify(self, token: str, method: str, path: str) -> Caller | tuple[int, str]:
        """Who `token` is, when it may call `method path`; else (401 or 403, why)."""
        if _same(token, self.security_key):
            return Caller("key")
        if _same(token, self.service_token):
            return Caller("service") if service_may_call(method, path) else (403, SERVICE_ONLY)
        if _same(token, self.metrics_token):
            return Caller("metrics") if (method, path) == ("GET", METRICS_PATH) else (403, METRICS_ONLY)
        if self.verifier is None:
            return 401, f"invalid bearer token: send Authorization: Bearer <{self._wanted()}>"
        try:
            user = self.verifier.verify(token)
        except InvalidToken as exc:
            return 401, f"invalid bearer token: {exc}"
        caller = Caller("user", user.user_id, user.scopes)
        if caller.user_id is None and ADMIN_SCOPE not in caller.scopes:
            return 401, f"invalid bearer token: it names no user (sub); only {ADMIN_SCOPE} may omit it"
        refusal = user_refusal(caller, method, path)
        return (403, refusal) if refusal is not None else caller

    def _wanted(self) -> str:
        if self.verifier is None:
            return "security key"
        return "JWT" if self.security_key is None else "security key or JWT"


def is_dashboard(path: str) -> bool:
    return path == DASHBOARD or path.startswith(DASHBOARD + "/")


def dashboard_cookie(scope: Scope) -> str | None:
    """The credential in the dashboard's cookie, if the request carries one."""
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            try:
                jar = SimpleCookie(value.decode("latin-1"))
            except CookieError:
                return None
            morsel = jar.get(DASHBOARD_COOKIE)
            if morsel is not None and morsel.value.strip():
                return morsel.value.strip()
    return None


def _wants_html(scope: Scope) -> bool:
    if scope["method"] != "GET":
        return False
    return any(name == b"accept" and b"text/html" in value for name, value in scope.get("headers", ()))


async def _dashboard_deny(send: Send, path: str, status: int, detail: str, why: str) -> None:
    """A browser's refusal: 401 goes to the login page (back here after it), 403 says why."""
    if status == 401:
        location = f"{DASHBOARD_LOGIN}?why={why}&next={quote(path, safe='/')}"
        headers = [(b"location", location.encode()), (b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 303, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    body = (f"<!doctype html><title>Not allowed</title><p>{html.escape(detail)}</p>"
            f'<p><a href="{DASHBOARD_LOGIN}">Log in with another key</a></p>').encode()
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _deny(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
