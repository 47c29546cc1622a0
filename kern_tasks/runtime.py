"""What a kern_tasks process shares between ticks and tasks: settings, the database and
the HTTP client, one of each per process (rebuilt after a fork, never shared across one)."""

from __future__ import annotations

import os
import threading
from typing import Any

import httpx

from kern_tasks.db import Database
from kern_tasks.settings import Settings

_lock = threading.Lock()


class Runtime:
    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        self.settings = settings
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
            from kern_tasks.firing.http import make_client

            with _lock:
                if self._client is None:
                    self._client = make_client()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._db is not None:
            self._db.dispose()


def bind_runtime(app: Any, settings: Settings, db: Database | None = None) -> Runtime:
    """Give a Celery app this process's settings and database (an AgentOS running beat and
    a worker inside its web process shares its own Database with them)."""
    runtime = Runtime(settings, db)
    app._kern_runtime = runtime
    return runtime


def runtime_for(app: Any) -> Runtime:
    """The Runtime of a Celery app in this process (settings from `install(app, settings)`,
    else from the environment)."""
    current = getattr(app, "_kern_runtime", None)
    if current is not None and current.pid == os.getpid():
        return current
    with _lock:
        current = getattr(app, "_kern_runtime", None)
        if current is None or current.pid != os.getpid():
            settings = app.conf.get("kern_settings") or Settings.from_env()
            current = Runtime(settings)
            app._kern_runtime = current
    return current
