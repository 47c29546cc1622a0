"""The dashboard's app, mounted by the AgentOS at /dashboard (os/app.py).

Its own FastAPI app, so its errors are HTML pages (the API's stay JSON) and its routes
stay out of the API's OpenAPI document. What a route raises is answered here: a core
error (kern_tasks.errors) with the message and status the API gives it (os/errors.py
`answer_of`), bad query values 422 with the API's line naming the field (`request_detail`),
an unknown path 404, a database that is down 503; the rest is logged and answered 500
without detail.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from kern_tasks.dashboard import actions, agent_runs, health, links, records, runs, schedules, session
from kern_tasks.dashboard.render import page
from kern_tasks.errors import KernError
from kern_tasks.os.errors import DATABASE_DOWN, answer_of, request_detail, request_errors

log = logging.getLogger("kern_tasks.dashboard")

# Every page module's router (the module docstring of kern_tasks.dashboard: adding a page).
PAGES = (session.router, actions.router, schedules.router, runs.router, health.router,
         records.router, agent_runs.router)  # actions first: /schedules/bulk before /schedules/{id}


def dashboard_app(agent_os: Any) -> FastAPI:
    """The dashboard of `agent_os` (its manager, database and auth), to mount at /dashboard."""
    app = FastAPI(title="kern_tasks dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.agent_os = agent_os
    app.mount("/static", StaticFiles(packages=[("kern_tasks.dashboard", "static")]), name="static")

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse(links.schedules(), status_code=303)

    for router in PAGES:
        app.include_router(router)
    app.add_exception_handler(KernError, _core_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _bad_request)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    for down in DATABASE_DOWN:  # the API's rule of a database that is down
        app.add_exception_handler(down, _database_down)
    app.add_exception_handler(Exception, _internal)
    return app


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return page(request, "error.html", None, status_code=status, title=f"Error {status}", status=status,
                message=message)


async def _core_error(request: Request, exc: KernError) -> HTMLResponse:
    status, detail = answer_of(exc)
    return error_page(request, status, detail)


async def _bad_request(request: Request, exc: RequestValidationError) -> HTMLResponse:
    return error_page(request, 422, request_detail(request_errors(exc)))  # the API's detail line


async def _http_error(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
    message = "no such page" if exc.status_code == 404 else str(exc.detail)
    return error_page(request, exc.status_code, message)


async def _database_down(request: Request, exc: Exception) -> HTMLResponse:
    answer = error_page(request, 503, "the database is unavailable: try again in a moment")
    answer.headers["retry-after"] = "5"
    return answer


async def _internal(request: Request, exc: Exception) -> HTMLResponse:
    log.exception("dashboard %s %s failed", request.method, request.url.path, exc_info=exc)
    return error_page(request, 500, "internal error (logged)")
