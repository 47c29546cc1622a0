"""The multi-process cluster the workflow test modules share: a fresh Postgres schema,
migrated; a Redis database flushed for it; a Celery app of the test process (to submit);
real `celery worker` processes and, when a module wants HTTP, a real `kern-tasks serve`,
all loading one app through KERN_APP.

    class Cluster(WorkflowCluster):          # a module's extras only (run(), pids(), ...)
        ...

    @pytest.fixture(scope="module")
    def cluster(request, tmp_path_factory):
        with running(request, Cluster(tmp_path_factory.mktemp("workflow-x"), REDIS_DB, APP)) as made:
            yield made

`running` starts the cluster (`start()`: two workers unless a module says otherwise) and
always closes it; the processes' logs are printed when a test of the module failed.
"""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, TypeVar

import httpx
import pytest

from kern_tasks.app import create_app
from kern_tasks.db import Database
from kern_tasks.settings import Settings
from kern_tasks.workflow import progress
from tests.conftest import POSTGRES_URL, broker_url_for, drop_schema, flush_broker, fresh_schema_name
from tests.processes import PYTHON, Processes, free_port, kern_env, wait_for

READY = " ready."  # what a Celery worker logs (at INFO) once it consumes


class WorkflowCluster:
    """A migrated schema, a Celery app of the test process and worker (and web) processes.

    `app_ref` is what the processes load (KERN_APP); `env` adds variables of the module's
    (gates, release files); `calls_env`, if given, names the variable under which the
    processes get `self.calls`, the file the module's executors append their calls to."""

    def __init__(self, tmp: Path, redis_db: int, app_ref: str, env: dict[str, str] | None = None,
                 calls_env: str | None = None) -> None:  # fmt: skip
        self.schema = fresh_schema_name()
        self.calls = tmp / "calls.txt"
        flush_broker(redis_db)
        self.settings = Settings(database_url=POSTGRES_URL, db_schema=self.schema,
                                 broker_url=broker_url_for(redis_db))
        self.db = Database(POSTGRES_URL, schema=self.schema, settings=self.settings)
        self.db.upgrade()
        self.app = create_app(self.settings)
        # Where `web()` serves; also the processes' base URL (nothing listens until it serves).
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = kern_env(database_url=POSTGRES_URL, schema=self.schema, base_url=self.url, data_dir=tmp / "kern",
                        broker_url=broker_url_for(redis_db))
        self.env = {**base, "KERN_APP": app_ref, **({calls_env: str(self.calls)} if calls_env else {}), **(env or {})}
        self.procs = Processes(tmp / "logs", env=self.env)

    def start_worker(self, name: str) -> subprocess.Popen:
        # One task at a time and no prefetch beyond it: a second message goes to another worker.
        return self.procs.celery(name, ["worker", "-P", "threads", "-c", "1", "--prefetch-multiplier", "1",
                                        "-l", "INFO", "-n", f"{name}@%h", "--without-gossip", "--without-mingle",
                                        "--without-heartbeat"])

    def worker(self, name: str) -> subprocess.Popen:
        """A worker, once it consumes."""
        proc = self.start_worker(name)
        self.procs.wait_for_log(name, READY)
        return proc

    def start_web(self) -> subprocess.Popen:
        """`kern-tasks serve` of the same app: the HTTP routes (runs go to the workers)."""
        return self.procs.start("web", [PYTHON, "-m", "kern_tasks", "serve", "--port", str(self.port)])

    def wait_up(self) -> None:
        wait_for(self._up, timeout=60, what="the web process to serve /health")

    def web(self) -> subprocess.Popen:
        """The web process, once it serves /health."""
        proc = self.start_web()
        self.wait_up()
        return proc

    def _up(self) -> bool:
        self.procs.check_alive()
        try:
            return httpx.get(f"{self.url}/health", timeout=5, trust_env=False).status_code == 200
        except httpx.TransportError:
            return False

    def start(self) -> None:
        """What `running` starts: two workers (a module with a web process adds it)."""
        self.worker("w1")
        self.worker("w2")

    def attempts(self, run_id: str) -> list[Any]:
        with self.db.connect() as conn:
            return progress.attempts(conn, run_id)

    def close(self, failed: bool) -> None:
        self.procs.stop_all()
        if failed:
            print(self.procs.dump_logs(tail=150))
        self.db.dispose()
        drop_schema(self.schema)


C = TypeVar("C", bound=WorkflowCluster)


@contextmanager
def running(request: pytest.FixtureRequest, made: C) -> Iterator[C]:
    """A module's cluster, started, for its tests; closed after them, its logs printed if
    any test failed meanwhile."""
    failed_before = request.session.testsfailed
    try:
        made.start()
        yield made
    finally:
        made.close(request.session.testsfailed > failed_before)
