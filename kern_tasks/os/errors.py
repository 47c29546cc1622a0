"""One place that turns exceptions into HTTP answers, each `{"detail": "<what is wrong>"}`.

    kern_tasks.errors.ValidationError   422  {"detail", "field"}
    request validation (FastAPI)         422  {"detail", "field", "errors"}
    a body FastAPI cannot read           422  (FastAPI says 400)
    kern_tasks.errors.NotFound           404
    kern_tasks.errors.Conflict           409
    RequestRefused                       415, 429 / 503 with Retry-After (pool full, shutting down)
    database unreachable                 503
    kern_tasks.errors.NotMigrated        503 (auto-upgrade off, tables missing: `kern-tasks db upgrade`)
    anything else                        500 {"detail": "internal server error"} (logged, no detail)

Bad input never reaches the last line: every route validates before it touches the store.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from sqlalchemy.exc import InterfaceError, OperationalError

from kern_tasks.errors import Conflict, KernError, NotFound, NotMigrated, ValidationError
from kern_tasks.os.schemas import ErrorBody
from kern_tasks.scheduler.spec import message_of

log = logging.getLogger("kern_tasks.os")

# The store's argument names that the HTTP API calls otherwise.
FIELD_ALIASES = {"cron": "cron_expr"}
MAX_ERRORS_IN_DETAIL = 5
# What "the database is unavailable" (503, Retry-After) is, for every app that answers it:
# the API here, the dashboard's pages (dashboard/app.py) in HTML.
DATABASE_DOWN: tuple[type[Exception], ...] = (OperationalError, InterfaceError)
NOT_MIGRATED = "database not migrated and auto-upgrade is off: run `kern-tasks db upgrade`"


# Every status a route may answer besides its success, for its `responses=` (the OpenAPI
# document lists them, so a client knows each one's body is ErrorBody).
ERROR_STATUSES: dict[int, str] = {
    401: "missing or invalid bearer token",
    403: "the credential may not call this route (a user token without its scope; the service token off the run routes)",
    404: "no such schedule, run or component",
    409: "a name is taken, or the schedule is disabled",
    413: "request body too large",
    415: "a body kind this route does not read",
    422: "invalid input, or a body that cannot be parsed: detail, field and errors say what to fix",
    429: "run pool full: retry after Retry-After",
    503: "database unavailable or shutting down: retry after Retry-After",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries of these error statuses (all of them when none are named)."""
    return {
        code: {"model": ErrorBody, "description": ERROR_STATUSES[code]} for code in (codes or tuple(ERROR_STATUSES))
    }


class RequestRefused(KernError):
    """A request refused for what it is or when it came, not for its fields: 415 (a body
    kind we do not read), 429 (run pool full), 503 (shutting down); retry after
    `retry_after_s` when given."""

    def __init__(self, message: str, *, status_code: int = 503, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after_s = retry_after_s


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie") and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts) or "body"


def answer_of(exc: KernError) -> tuple[int, str]:
    """The status and detail a core error answers (the table above): for callers that
    show it their own way (the dashboard's pages)."""
    if isinstance(exc, ValidationError):
        return 422, f"{FIELD_ALIASES.get(exc.field, exc.field)}: {exc.message}"
    if isinstance(exc, NotFound):
        return 404, str(exc)
    if isinstance(exc, Conflict):
        return 409, str(exc)
    if isinstance(exc, RequestRefused):
        return exc.status_code, str(exc)
    if isinstance(exc, NotMigrated):
        return 503, NOT_MIGRATED  # the log names the database, not the answer
    return 500, "internal server error"  # a core error this table does not know (as _internal answers)


async def _validation_error(_: Request, exc: ValidationError) -> JSONResponse:
    field = FIELD_ALIASES.get(exc.field, exc.field)
    return JSONResponse({"detail": answer_of(exc)[1], "field": field}, status_code=422)


def request_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """FastAPI's errors as the answer lists them: `loc`, `msg` (message_of: a schedule
    field's check says how to fix it in the words the manager uses) and `type`."""
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": message_of(e), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]


def request_detail(errors: list[dict[str, Any]]) -> str:
    """The one-line detail of `request_errors`: each of the first few as `field: fix`; for
    callers that show it their own way too (the dashboard's pages)."""
    messages = []
    for e in errors[:MAX_ERRORS_IN_DETAIL]:
        where = _location(tuple(e["loc"]))
        messages.append("malformed JSON body" if e["type"] == "json_invalid" else f"{where}: {e['msg']}")
    return "; ".join(messages) or "invalid request"


async def _request_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = request_errors(exc)
    if not errors:
        return JSONResponse({"detail": request_detail(errors)}, status_code=422)
    first = errors[0]["loc"]
    field = first[-1] if len(first) > 1 and errors[0]["type"] != "json_invalid" else None
    return JSONResponse({"detail": request_detail(errors), "field": field, "errors": errors}, status_code=422)


# FastAPI answers 400 with this detail when a body is not even text JSON can be read
# from (bytes that are not UTF-8, say); the document promises 422 for any unreadable body.
_UNREADABLE_BODY = "There was an error parsing the body"


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 400 and exc.detail == _UNREADABLE_BODY:
        detail = "malformed JSON body: send a UTF-8 JSON object"
        return JSONResponse({"detail": detail, "field": None}, status_code=422)
    return await http_exception_handler(request, exc)


async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
    status, detail = answer_of(exc)
    return JSONResponse({"detail": detail}, status_code=status)


async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
    status, detail = answer_of(exc)
    return JSONResponse({"detail": detail}, status_code=status)


async def _refused(_: Request, exc: RequestRefused) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s is not None else None
    return JSONResponse({"detail": str(exc)}, status_code=exc.status_code, headers=headers)


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    log.error("database unavailable during %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return JSONResponse({"detail": "database unavailable"}, status_code=503, headers={"Retry-After": "5"})


async def _not_migrated(request: Request, exc: NotMigrated) -> JSONResponse:
    # Only when the app was served without its lifespan (which refuses to start instead).
    log.error("%s %s: %s", request.method, request.url.path, exc)
    status, detail = answer_of(exc)
    return JSONResponse({"detail": detail}, status_code=status)


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _request_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(NotFound, _not_found)  # type: ignore[arg-type]
    app.add_exception_handler(Conflict, _conflict)  # type: ignore[arg-type]
    app.add_exception_handler(RequestRefused, _refused)  # type: ignore[arg-type]
    app.add_exception_handler(NotMigrated, _not_migrated)  # type: ignore[arg-type]
    for down in DATABASE_DOWN:
        app.add_exception_handler(down, _database_down)
    app.add_exception_handler(Exception, _internal)
