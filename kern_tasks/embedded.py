"""Beat, and optionally a Celery worker, on threads of another process (the web app).

`AgentOS(scheduler=True)` starts one of these: LeaseScheduler ticks on a thread (every
web replica may run one: the lease keeps them apart), and in the embedded default (no
KERN_BROKER_URL) a Celery worker consumes kern.fire on a thread pool in the same
process, so one command runs everything with no services. It runs kern.workflow.* too:
`workflows` (the AgentOS's, by id) are the ones it serves, with no KERN_APP needed; its
Celery app (`app`) is the one the AgentOS publishes workflow runs to.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

from celery import Celery
from celery.beat import Service
from celery.worker import WorkController
from celery.worker import state as worker_state

from kern_tasks.app import create_app
from kern_tasks.beat import LeaseScheduler
from kern_tasks.db import Database
from kern_tasks.runtime import bind_runtime
from kern_tasks.settings import Settings

log = logging.getLogger("kern_tasks.embedded")

STOP_TIMEOUT_S = 15.0


@dataclass
class EmbeddedScheduler:
    """Start with `start()`, stop with `stop()`; both block only briefly."""

    settings: Settings
    db: Database
    max_interval: float = 15.0
    run_worker: bool | None = None  # None: only when there is no external broker
    worker_concurrency: int = 8
    workflows: Mapping[str, Any] | None = None  # None: KERN_APP's (kern_tasks.runtime)
    app: Celery = field(init=False)
    _beat: Service | None = field(default=None, init=False)
    _threads: list[threading.Thread] = field(default_factory=list, init=False)
    _worker: WorkController | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.app = create_app(self.settings, main="kern_tasks.embedded")
        bind_runtime(self.app, self.settings, self.db, self.workflows)
        if self.run_worker is None:
            self.run_worker = self.settings.broker_url is None

    def start(self) -> None:
        self.app.finalize(auto=True)
        # Worker pool threads resolve the app through Celery's process-wide default, as
        # Celery's own in-process worker arranges it; in this process that is ours.
        self.app.set_default()
        self._beat = Service(self.app, max_interval=self.max_interval, scheduler_cls=LeaseScheduler)
        self._spawn("kern-beat", self._beat.start)
        if self.run_worker:
            self._worker = WorkController(
                app=self.app,
                pool="threads",
                concurrency=self.worker_concurrency,
                hostname=f"embedded@{socket.gethostname()}",
                without_heartbeat=True,
                without_mingle=True,
                without_gossip=True,
                loglevel=logging.INFO,
            )
            self._spawn("kern-worker", self._run_worker)
        log.info("embedded scheduler started (worker: %s)", "yes" if self.run_worker else "no")

    def stop(self) -> None:
        if self._beat is not None:
            self._beat.stop(wait=False)
        if self._worker is not None:
            # What Celery's own in-process worker does: a warm shutdown, running tasks finish.
            worker_state.should_terminate = 0
        for thread in self._threads:
            thread.join(STOP_TIMEOUT_S)
            if thread.is_alive():
                log.warning("%s did not stop within %ss", thread.name, STOP_TIMEOUT_S)
        worker_state.should_terminate = None
        self._threads.clear()

    def _run_worker(self) -> None:
        self.app.set_current()  # tasks run with this app's settings, not the default app's
        assert self._worker is not None
        self._worker.start()

    def _spawn(self, name: str, target: object) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)
