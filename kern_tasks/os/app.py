"""AgentOS: the FastAPI app that serves agents, workflows and the schedules API.

    agent_os = AgentOS(agents=[agent], db=db, scheduler=True, lifespan=lifespan)
    app = agent_os.get_app()          # uvicorn module:app

Routes: POST/GET /agents/{id}/runs[/{run_id}], POST/GET /workflows/{id}/runs[/{run_id}],
/schedules (see routers/schedules.py), agno's read side (GET /config, /agents[/{id}],
/workflows[/{id}], /sessions, /traces: see routers/), GET /health, /docs, /openapi.json,
and the dashboard's pages under /dashboard (kern_tasks/dashboard, mounted: not in the
OpenAPI document).

Settings: `settings` (None: `Settings.from_env()`) supplies the database, the security
key and the service token unless they are given here (explicit arguments win). The
process keeps no run state of its own beyond the runs it is executing: everything is in
the database.

Workflow runs execute on Celery workers, never here: the routes record a run and publish
it (kern_tasks.workflow.submit) to `celery_app`, the embedded scheduler's when
scheduler=True, else one made from the settings on first use (KERN_BROKER_URL's broker;
its workers find the workflows through KERN_APP). On the embedded default the in-process
worker runs them, serving this AgentOS's workflows.

Start-up: before it serves, the app brings the database to head (`Database.ensure_ready`:
one query when it is there already; on a database without our tables it migrates them
under the migrations' lock, so replicas starting together are safe). With auto-upgrade
off (KERN_AUTO_UPGRADE=0 or `Database(..., auto_upgrade=False)`) and the tables missing
it refuses to start, naming `kern-tasks db upgrade`: no request meets a missing table.
"""

from __future__ import annotations

import asyncio
import inspect
import secrets
import threading
from dataclasses import replace
import logging
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, AsyncIterator, Callable, Sequence

from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

from kern_tasks import __version__, metrics
from kern_tasks.alerts.watch import ALERT_INTERVAL_S, Watch, WatchThread
from kern_tasks.alerts.webhook import notifier_for
from kern_tasks.dashboard.app import dashboard_app
from kern_tasks.db import Database
from kern_tasks.errors import NotMigrated
from kern_tasks.os import errors
from kern_tasks.os.auth import BearerAuth
from kern_tasks.os.limits import MAX_BODY_BYTES, BodyLimit
from kern_tasks.os.routers import (
    READ_ROUTERS,
    agent_runs_router,
    health_router,
    metrics_router,
    schedules_router,
    workflow_runs_router,
)
from kern_tasks.os.runner import RunExecutor
from kern_tasks.os.targets import Targets, by_id
from kern_tasks.runs import RunStore
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.settings import Settings
from kern_tasks.tools.scheduler import share_endpoint_policy

log = logging.getLogger("kern_tasks.os")

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


class AgentOS:
    """Agents, workflows and schedules behind one HTTP app (see the module docstring).

    scheduler=True also runs the beat scheduler and an embedded fire worker inside the
    web process (`_start_scheduler` / `_stop_scheduler`). Background runs execute on a
    pool of `background_workers` threads with at most `max_queued_runs` waiting (more are
    refused with 429); at shutdown, runs still executing get `shutdown_grace_s`. While
    served, it checks the alerts every `alert_interval_s` (kern_tasks.alerts.watch).

    `settings=None` means `Settings.from_env()`; `db=None` means the database those
    settings name; `security_key`/`service_token` given here win over the settings'.
    """

    def __init__(
        self,
        agents: Sequence[Any] | None = None,
        workflows: Sequence[Any] | None = None,
        db: Database | None = None,
        scheduler: bool = False,
        scheduler_poll_interval: float = 15,
        lifespan: Lifespan | None = None,
        settings: Settings | None = None,
        security_key: str | None = None,
        service_token: str | None = None,
        *,
        title: str = "kern_tasks AgentOS",
        background_workers: int = 8,
        max_queued_runs: int = 1000,
        shutdown_grace_s: float = 30.0,
        max_body_bytes: int = MAX_BODY_BYTES,
        alert_interval_s: float = ALERT_INTERVAL_S,
    ) -> None:
        if isinstance(scheduler_poll_interval, bool) or not (
            isinstance(scheduler_poll_interval, (int, float)) and scheduler_poll_interval > 0
        ):
            raise ValueError(f"scheduler_poll_interval must be a positive number, got {scheduler_poll_interval!r}")
        self.settings = settings if settings is not None else Settings.from_env()
        self.db = db if db is not None else Database(settings=self.settings)
        self.agents = list(agents or [])
        self.workflows = list(workflows or [])
        self.targets = Targets(agents=by_id(self.agents, "agent"), workflows=by_id(self.workflows, "workflow"))
        self.scheduler = bool(scheduler)
        self.scheduler_poll_interval = float(scheduler_poll_interval)
        self.lifespan = lifespan
        self.security_key = (security_key if security_key is not None else self.settings.security_key) or None
        self.service_token = (service_token if service_token is not None else self.settings.service_token) or None
        self.title = title
        self.max_body_bytes = max_body_bytes
        # The alerts' watch runs here too: web outlives every beat, so it sees "no beat".
        self.alert_interval_s = float(alert_interval_s)
        # One endpoint policy for every way in: the API, Python callers and the agents' tools.
        self.manager = ScheduleManager(self.db, endpoint_policy=self.targets)
        share_endpoint_policy(self.agents, self.targets)
        self.store = RunStore(self.db)
        self.runner = RunExecutor(
            self.store, max_workers=background_workers, max_queued=max_queued_runs, shutdown_grace_s=shutdown_grace_s
        )
        self.instantiated_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._app: FastAPI | None = None
        self._embedded: Any = None
        self._celery: Any = None
        self._celery_lock = threading.Lock()
        if self.scheduler and self.service_token is None:
            # The embedded worker fires at this app; give it a token of its own. Workers in
            # other processes need KERN_SERVICE_TOKEN set to the same value instead.
            self.service_token = secrets.token_urlsafe(32)

    def __repr__(self) -> str:
        return (
            f"AgentOS(agents={sorted(self.targets.agents)}, workflows={len(self.workflows)}, db={self.db!r}, "
            f"scheduler={self.scheduler}, auth={'on' if self.security_key else 'off'})"
        )

    # --- the app --------------------------------------------------------------------------

    def get_app(self) -> FastAPI:
        """The FastAPI app (built once; later calls return the same app)."""
        if self._app is None:
            self._app = self._build_app()
        return self._app

    def _build_app(self) -> FastAPI:
        app = FastAPI(
            title=self.title,
            version=__version__,
            description="Agents, workflows and their schedules (agno-compatible API).",
            lifespan=self._lifespan,
            docs_url="/docs",
            openapi_url="/openapi.json",
            redoc_url=None,
        )
        app.state.agent_os = self
        metrics.enable()  # count from the start (an embedded scheduler's fires), not from the first scrape
        errors.install(app)
        app.include_router(health_router)
        app.include_router(metrics_router)
        app.include_router(agent_runs_router)
        app.include_router(workflow_runs_router)
        app.include_router(schedules_router)
        for read_router in READ_ROUTERS:  # config, agents, workflows, sessions, traces
            app.include_router(read_router)
        app.mount("/dashboard", dashboard_app(self))  # behind the same auth (os/auth.py)
        # The last added runs first: auth before anything reads a body.
        app.add_middleware(BodyLimit, max_bytes=self.max_body_bytes)
        app.add_middleware(BearerAuth, security_key=self.security_key, service_token=self.service_token,
                           metrics_token=self.settings.metrics_token)
        return app

    @asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[Any]:
        """Ours wraps the user's: tables checked, scheduler up, then theirs; theirs down,
        then ours."""
        await asyncio.to_thread(self._ensure_tables)
        await asyncio.to_thread(self._start_scheduler)
        watcher = WatchThread(lambda: self.db, Watch(notifier_for(self.settings.alert_webhook),
                                                     interval_s=self.alert_interval_s)).start()
        try:
            if self.lifespan is None:
                yield None
            else:
                async with _enter(self.lifespan, app) as state:
                    yield state
        finally:
            await asyncio.to_thread(watcher.stop)
            try:
                await asyncio.to_thread(self._stop_scheduler)
            finally:
                await asyncio.to_thread(self.runner.shutdown)
                await asyncio.to_thread(self._close_celery)

    def _ensure_tables(self) -> None:
        """The tables are at head before the first request (migrated if need be), or
        `NotMigrated` stops the start. A database that is down now does not: requests
        answer 503 until it is back, and the first to reach it checks the tables."""
        try:
            self.db.ensure_ready()
        except NotMigrated as exc:
            log.critical("AgentOS refuses to start: %s", exc)
            raise
        except DBAPIError as exc:
            log.warning("database unavailable at start (%s); its tables are checked on first use",
                        type(exc.orig).__name__)

    # --- where workflow runs go -----------------------------------------------------------

    @property
    def celery_app(self) -> Any:
        """The Celery app workflow runs are published to: the embedded scheduler's while it
        runs, else one made from the settings on first use (sharing this app's database)."""
        if self._embedded is not None:
            return self._embedded.app
        with self._celery_lock:
            if self._celery is None:
                from kern_tasks.app import create_app
                from kern_tasks.runtime import bind_runtime

                self._celery = create_app(self.settings, main="kern_tasks.os")
                bind_runtime(self._celery, self.settings, self.db)
            return self._celery

    def _close_celery(self) -> None:
        with self._celery_lock:
            if self._celery is not None:
                self._celery.close()  # its broker connections
                self._celery = None

    # --- the embedded scheduler -----------------------------------------------------------

    def _start_scheduler(self) -> None:
        """Start beat (and, on the embedded default, a Celery worker) on threads of this
        process when scheduler=True. Every web replica may: the lease keeps them apart."""
        if not self.scheduler:
            return
        from kern_tasks.embedded import EmbeddedScheduler

        # Fires from this process carry the token this app accepts on its run endpoints.
        settings = replace(self.settings, service_token=self.service_token)
        self._embedded = EmbeddedScheduler(settings, self.db, max_interval=self.scheduler_poll_interval,
                                           workflows=self.targets.workflows)
        self._embedded.start()

    def _stop_scheduler(self) -> None:
        """Stop what `_start_scheduler` started (called at shutdown, before runs are drained)."""
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None


def _enter(lifespan: Callable[..., Any], app: FastAPI) -> AbstractAsyncContextManager[Any]:
    """The user's lifespan as an async context manager (a bare async generator works too)."""
    if inspect.isasyncgenfunction(lifespan):
        return asynccontextmanager(lifespan)(app)
    return lifespan(app)
