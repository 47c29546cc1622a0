"""Bearer-token guard for the whole app (a pure ASGI middleware, so /docs, /openapi.json and
unknown paths are guarded too, and nothing about a route leaks without a key).

With a security key set (KERN_SECURITY_KEY or AgentOS(security_key=...)):
- `/health` is open;
- `Authorization: Bearer <security key>` may call everything;
- `Authorization: Bearer <service token>` (KERN_SERVICE_TOKEN: what schedules fire with)
  may only start and poll runs: POST /agents|teams|workflows/{id}/runs and
  GET .../runs/{run_id}. Anything else answers 403 (agno lets it manage schedules too);
- no token or another token answers 401.
Without a security key every route is open, as in agno.

Tokens are compared with hmac.compare_digest; neither is ever logged or echoed.
"""

from __future__ import annotations

import hmac
import json
import re
from typing import Any, Awaitable, Callable

from kern_tasks.scheduler.endpoints import RUN_ENDPOINT

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health", "/health/"})
# What the service token may do: (method, path pattern).
SERVICE_ROUTES = (
    ("POST", RUN_ENDPOINT),
    ("GET", re.compile(r"^/(agents|teams|workflows)/[^/]+/runs/[^/]+/?$")),
)


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


class BearerAuth:
    """Let a request through, or answer 401/403 per the module docstring."""

    def __init__(self, app: ASGIApp, *, security_key: str | None, service_token: str | None) -> None:
        self.app = app
        self.security_key = security_key or None
        self.service_token = service_token or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.security_key is None or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if token is not None and _same(token, self.security_key):
            await self.app(scope, receive, send)
            return
        if token is not None and _same(token, self.service_token):
            if service_may_call(scope["method"], scope["path"]):
                await self.app(scope, receive, send)
                return
            await _deny(send, 403, "the service token may only start and poll runs (/agents|teams|workflows/{id}/runs)")
            return
        detail = "missing bearer token" if token is None else "invalid bearer token"
        await _deny(send, 401, f"{detail}: send Authorization: Bearer <security key>")


async def _deny(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
