"""Every process's connection pool fits what it runs at once (issue 10): a worker's pool
is sized from its Celery pool and concurrency, before the database is first reached, so
no connection is opened and closed per task (a threads worker with -c 16 used to open
800-1000 per 2000 fires: a pool of 5 under 16 threads). The process-level figure,
connections opened per fire, is bench/throughput.py's.

Real Celery WorkControllers (built, not started: worker_init is sent as they are built)
on real engines; nothing is mocked.
"""

from __future__ import annotations

import pytest
from celery.worker import WorkController

from kern_tasks.app import create_app
from kern_tasks.errors import ValidationError
from kern_tasks.runtime import POOL_EXTRA, runtime_for
from kern_tasks.settings import Settings
from tests.conftest import POSTGRES_URL


def _worker_runtime(pool: str, concurrency: int, **settings: object):
    app = create_app(Settings(database_url=POSTGRES_URL, broker_url="redis://127.0.0.1:6379/0", **settings))
    WorkController(app=app, pool=pool, concurrency=concurrency, without_heartbeat=True, without_mingle=True,
                   without_gossip=True)  # fmt: skip
    return runtime_for(app)


@pytest.mark.parametrize(("pool", "concurrency", "slots"), [("threads", 16, 16), ("threads", 3, 3), ("prefork", 4, 1),
                                                            ("solo", 1, 1)])  # fmt: skip
def test_a_workers_pool_holds_its_tasks_in_flight_and_its_heartbeat(pool: str, concurrency: int, slots: int) -> None:
    runtime = _worker_runtime(pool, concurrency)
    try:
        assert runtime.task_slots == slots
        assert runtime.db.engine.pool.size() == slots + POOL_EXTRA
    finally:
        runtime.close()


def test_kern_db_pool_size_wins_and_a_bad_value_names_its_field() -> None:
    runtime = _worker_runtime("threads", 16, db_pool_size=4)
    try:
        assert runtime.db.engine.pool.size() == 4
    finally:
        runtime.close()
    assert Settings.from_env({"KERN_DB_POOL_SIZE": "12"}).db_pool_size == 12
    for bad in ("0", "-1", "many"):
        with pytest.raises(ValidationError, match="KERN_DB_POOL_SIZE"):
            Settings.from_env({"KERN_DB_POOL_SIZE": bad})


def test_a_process_that_is_no_worker_keeps_the_default_pool() -> None:
    app = create_app(Settings(database_url=POSTGRES_URL, broker_url="redis://127.0.0.1:6379/0"))
    runtime = runtime_for(app)
    try:
        assert runtime.task_slots is None
        assert runtime.db.engine.pool.size() == 5
    finally:
        runtime.close()
