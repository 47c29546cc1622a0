"""What a kern_tasks process shares between ticks and tasks: settings, the database and
the HTTP client, one of each per process (rebuilt after a fork, never shared across one),
and the workflows its workers run.

Workflows: those registered with the binding (`bind_runtime(app, settings, db, workflows=
{id: workflow})`, as an AgentOS running an embedded worker does) are the ones served; when
none were registered, workers import the ones KERN_APP holds (workflow/tasks.py).

A Celery app gets its settings one way only: `bind_runtime(app, settings)` (which
`kern_tasks.app.install` calls). The bound Runtime is what beat and the fire task read.

Start-up: binding also connects a check to Celery's `beat_init` and
`celeryd_after_setup` signals, so `celery beat` and `celery worker` find the database at
head (or migrate it, see `Database.ensure_ready`) before the first tick or task; with
auto-upgrade off and the tables missing they log why, naming `kern-tasks db upgrade`,
and exit with status 78 (EX_CONFIG).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Mapping

import httpx
from celery import signals
from sqlalchemy.exc import DBAPIError

from kern_tasks.db import Database
from kern_tasks.errors import NotMigrated
from kern_tasks.firing.http import make_client
from kern_tasks.settings import Settings

log = logging.getLogger("kern_tasks.runtime")

_lock = threading.Lock()
_ATTRIBUTE = "_kern_runtime"  # where a Celery app keeps its Runtime (the one binding)


class Runtime:
    """Settings, the Database (`db`, made from the settings on first use unless given), the
    HTTP client of one Celery app in one process, and the workflows registered to it
    (`workflows`: None when none were, then KERN_APP's are run)."""

    def __init__(
        self, settings: Settings, db: Database | None = None, workflows: Mapping[str, Any] | None = None
    ) -> None:
        self.settings = settings
        self.workflows = dict(workflows) if workflows is not None else None
        self.pid = os.getpid()
        self._db: Database | None = db
        self._client: httpx.Client | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            with _lock:
                if self._db is None:
                    # No pre-ping round trip per checkout: beat and the fire task retry
                    # a round or a write when a connection turns out dead (Postgres restart).
                    self._db = Database(settings=self.settings, pool_pre_ping=False)
        return self._db

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            with _lock:
                if self._client is None:
                    self._client = make_client()
        return self._client

    def start(self) -> None:
        """Called as a beat or worker process starts: the tables are at head afterwards
        (migrated if need be), or `NotMigrated` is raised. A database that is down now is
        not fatal: the first tick or task checks again."""
        try:
            self.db.ensure_ready()
        except DBAPIError as exc:
            log.warning("database unavailable at start (%s); its tables are checked on first use",
                        type(exc.orig).__name__)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._db is not None:
            self._db.dispose()


def bind_runtime(
    app: Any, settings: Settings, db: Database | None = None, workflows: Mapping[str, Any] | None = None
) -> Runtime:
    """Give a Celery app its settings, and optionally the Database it shares with this
    process and the workflows its workers run, by id (an AgentOS running beat and a
    worker inside its web process: its own; they win over KERN_APP's)."""
    runtime = Runtime(settings, db, workflows)
    setattr(app, _ATTRIBUTE, runtime)
    _connect_start_checks()
    return runtime


def runtime_for(app: Any) -> Runtime:
    """The Runtime of a Celery app in this process: the bound one, rebuilt from its
    settings after a fork. An app nobody bound gets `Settings.from_env()`."""
    current = getattr(app, _ATTRIBUTE, None)
    if current is not None and current.pid == os.getpid():
        return current
    with _lock:
        current = getattr(app, _ATTRIBUTE, None)
        if current is None or current.pid != os.getpid():
            # A forked child must not use its parent's connections: a Database of its own.
            current = (Runtime(current.settings, workflows=current.workflows) if current is not None
                       else Runtime(Settings.from_env()))
            setattr(app, _ATTRIBUTE, current)
    return current


def _check_at_start(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """beat_init (sender: the beat Service) and celeryd_after_setup (instance: the worker
    program, its logging set up, nothing consumed yet), for apps kern_tasks is bound to;
    other apps in the process are left alone."""
    app = getattr(instance if instance is not None else sender, "app", None)
    if app is None or getattr(app, _ATTRIBUTE, None) is None:
        return
    try:
        runtime_for(app).start()
    except NotMigrated as exc:
        log.critical("%s", exc)
        # Celery's signal dispatch logs and swallows an Exception; a SystemExit stops the
        # process (beat: out of Service.start; worker: WorkController.start's exit code).
        raise SystemExit(os.EX_CONFIG) from exc


def _connect_start_checks() -> None:
    # dispatch_uid: connected once per process however many apps are bound.
    signals.beat_init.connect(_check_at_start, weak=False, dispatch_uid="kern_tasks.runtime.beat_init")
    signals.celeryd_after_setup.connect(_check_at_start, weak=False, dispatch_uid="kern_tasks.runtime.worker")
