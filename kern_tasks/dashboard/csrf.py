"""CSRF for the dashboard's POSTs, and reading their forms.

Every POST carries a token (a form's `csrf` field or the X-CSRF-Token header) derived
from the credential (HMAC), so it holds on every replica and dies with the key; with
auth off it is derived from a secret of this process. A POST whose Origin (or Referer)
is not this host is refused too. SameSite=Strict on the cookie alone stops a cross-site
POST in today's browsers; the token holds where it does not.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import parse_qsl, urlsplit

from fastapi import Request

from kern_tasks.errors import ValidationError
from kern_tasks.os.auth import bearer_token, dashboard_cookie
from kern_tasks.os.errors import RequestRefused

CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
MAX_FORM_FIELDS = 100
_PROCESS_SECRET = secrets.token_bytes(32)


def credential(request: Request) -> str | None:
    """The credential this request came with (cookie or bearer header), if any."""
    return bearer_token(request.scope) or dashboard_cookie(request.scope)


def csrf_token(request: Request) -> str:
    secret = credential(request)
    key = secret.encode("utf-8", "surrogateescape") if secret else _PROCESS_SECRET
    return hmac.new(key, b"kern-dashboard-csrf/1", hashlib.sha256).hexdigest()


async def read_form(request: Request) -> dict[str, str]:
    """The url-encoded fields of a POST (a repeated field: its last value)."""
    content_type = request.headers.get("content-type", "")
    body = await request.body()
    if body and not content_type.startswith("application/x-www-form-urlencoded"):
        raise RequestRefused("send the form as application/x-www-form-urlencoded", status_code=415)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationError("form", f"cannot be read: {exc}") from exc
    return {key: value for key, value in pairs}


def same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None  # a browser's POST carries one; "null" is an opaque origin
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def checked_form(request: Request) -> dict[str, str]:
    """The POST's fields once its CSRF token and origin check out (403 otherwise)."""
    fields = await read_form(request)
    if not same_origin(request):
        raise RequestRefused("cross-origin form refused: post it from this dashboard", status_code=403)
    given = fields.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    if not hmac.compare_digest(given.encode(), csrf_token(request).encode()):
        raise RequestRefused("the form's CSRF token is missing or stale: reload the page and try again",
                             status_code=403)
    return fields
