"""What a kern_tasks process shares between ticks and tasks: settings, the database and
the HTTP client, one of each per process (rebuilt after a fork, never shared across one),
and the workflows its workers run.

Workflows: those registered with the binding (`bind_runtime(app, settings, db, workflows=
{id: workflow})`, as an AgentOS running an embedded worker does) are the ones served; when
none were registered, workers import the ones KERN_APP holds (workflow/tasks.py).

A Celery app gets its settings one way only: `bind_runtime(app, settings)` (which
`kern_tasks.app.install` calls). The bound Runtime is what beat and the fire task read.

Connections: each process's pool holds what it runs at once (`pool_size`), so no
connection is opened and closed per task: a worker tells its Runtime how many tasks it
runs at once in one process (`fit_to_worker`, at celeryd_after_setup / worker_init:
threads and other in-process pools run `concurrency`, a prefork child one), and the pool
is that plus one for the heartbeat and one spare. KERN_DB_POOL_SIZE overrides it.

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

from typing import TYPE_CHECKING

from celery import signals
from sqlalchemy.exc import DBAPIError

from kern_tasks.db import Database
from kern_tasks.errors import NotMigrated
from kern_tasks.settings import Settings

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("kern_tasks.runtime")

_lock = threading.Lock()
# A process that is no worker (beat, a web process, a script): its default pool.
DEFAULT_POOL_SIZE = 5
# Besides one connection per task in flight: the heartbeat's, and one spare.
POOL_EXTRA = 2
# Pools whose tasks run in child processes, one task at a time each.
_CHILD_PROCESS_POOLS = ("prefork", "processes")
_ATTRIBUTE = "_kern_runtime"  # where a Celery app keeps its Runtime (the one binding)


class Runtime:
    """Settings, the Database (`db`, made from the settings on first use unless given), the
    HTTP client of one Celery app in one process, and the workflows registered to it
    (`workflows`: None when none were, then KERN_APP's are run)."""

    def __init__(
        self, settings: Settings, db: Database | None = None, workflows: Mapping[str, Any] | None = None,
        *, task_slots: int | None = None,
    ) -> None:
        self.settings = settings
        self.workflows = dict(workflows) if workflows is not None else None
        # How many tasks this process runs at once (None: not a worker); a forked child keeps it.
        self.task_slots = task_slots
        self.pid = os.getpid()
        self._db: Database | None = db
        self._local = threading.local()
        self._clients: "list[httpx.Client]" = []

    @property
    def db(self) -> Database:
        if self._db is None:
            with _lock:
                if self._db is None:
                    # No pre-ping round trip per checkout: beat and the fire task retry
                    # a round or a write when a connection turns out dead (Postgres restart).
                    self._db = Database(settings=self.settings, pool_pre_ping=False, pool_size=self.pool_size)
        return self._db

    @property
    def pool_size(self) -> int:
        """Connections this process keeps: KERN_DB_POOL_SIZE, else its tasks in flight plus
        POOL_EXTRA (a worker), else DEFAULT_POOL_SIZE."""
        if self.settings.db_pool_size is not None:
            return self.settings.db_pool_size
        return DEFAULT_POOL_SIZE if self.task_slots is None else self.task_slots + POOL_EXTRA

    def fit_to_worker(self, worker: Any) -> None:
        """Size the pool to a Celery worker (WorkController) about to start: its pool and
        concurrency say how many tasks run at once in one process. A Database made
        before (or given by an embedding application) keeps its own size."""
        self.task_slots = task_slots(worker)

    @property
    def client(self) -> "httpx.Client":
        """The HTTP client of the calling thread. One per thread, not one per process: a
        batch fires its attempts on many threads at once, and one httpx pool shared by a
        few hundred threads lets a socket be closed under a thread reading it ("Bad file
        descriptor"). Threads are pooled (celery's, firing/batch.py's), so a client and
        its keep-alive connections live as long as their thread."""
        client: "httpx.Client | None" = getattr(self._local, "client", None)
        if client is None:
            # httpx is imported by the first call (a worker's), never by beat.
            from kern_tasks.firing.http import make_client

            client = self._local.client = make_client()
            with _lock:
                self._clients.append(client)
        return client

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
        with _lock:
            clients, self._clients = self._clients, []
            self._local = threading.local()  # a thread that fires after this makes a new client
        for client in clients:
            client.close()
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
            current = (Runtime(current.settings, workflows=current.workflows, task_slots=current.task_slots)
                       if current is not None else Runtime(Settings.from_env()))
            setattr(app, _ATTRIBUTE, current)
    return current


def task_slots(worker: Any) -> int:
    """How many tasks a worker runs at once in one process: one per prefork child, else
    its concurrency (threads, solo, gevent...; the CPU count when unset or "auto")."""
    pool = worker.pool_cls
    name = pool if isinstance(pool, str) else f"{getattr(pool, '__module__', '')}.{getattr(pool, '__name__', '')}"
    if any(kind in name for kind in _CHILD_PROCESS_POOLS) or "solo" in name:
        return 1
    concurrency = worker.concurrency
    return concurrency if isinstance(concurrency, int) and concurrency > 0 else (os.cpu_count() or 1)


def _fit_worker(sender: Any = None, **_: Any) -> None:
    """worker_init (sender: the WorkController, the embedded one too): size the pool."""
    app = getattr(sender, "app", None)
    if app is not None and getattr(app, _ATTRIBUTE, None) is not None:
        runtime_for(app).fit_to_worker(sender)


def _check_at_start(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """beat_init (sender: the beat Service) and celeryd_after_setup (instance: the worker
    program, its logging set up, nothing consumed yet), for apps kern_tasks is bound to;
    other apps in the process are left alone. A worker's pool is sized before the
    database is first reached."""
    app = getattr(instance if instance is not None else sender, "app", None)
    if app is None or getattr(app, _ATTRIBUTE, None) is None:
        return
    if instance is not None:
        runtime_for(app).fit_to_worker(instance)
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
    signals.worker_init.connect(_fit_worker, weak=False, dispatch_uid="kern_tasks.runtime.worker_init")
