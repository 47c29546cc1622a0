"""The stack the firing test modules share: a fresh Postgres schema, migrated; a Redis
database flushed for it; a loopback `TargetServer` the schedules fire at; and `Processes`
whose KERN_* settings name all three (their base URL is the target's).

    @pytest.fixture(scope="module")
    def stack(tmp_path_factory):
        with fire_stack(tmp_path_factory.mktemp("queues"), REDIS_DB) as made:
            made.procs.worker(concurrency=4)   # the module starts what it needs
            ...
            yield made

Everything is torn down after the block (processes, target, schema, the Redis database);
the processes' logs are printed when the block raises (e.g. a worker never got ready).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from kern_tasks.db import Database
from tests.conftest import EMPTY_SETTINGS, POSTGRES_URL, broker_url_for, drop_schema, flush_broker, fresh_schema_name
from tests.processes import Processes, kern_env
from tests.targets import TargetServer


@dataclass
class FireStack:
    schema: str
    db: Database
    target: TargetServer
    procs: Processes


@contextmanager
def fire_stack(folder: Path, redis_db: int) -> Iterator[FireStack]:
    schema = fresh_schema_name()
    db = Database(POSTGRES_URL, schema=schema, settings=EMPTY_SETTINGS)
    db.upgrade()
    flush_broker(redis_db)
    target = TargetServer().start()
    procs = Processes(folder / "logs", env=kern_env(
        database_url=POSTGRES_URL, schema=schema, base_url=target.url, data_dir=folder / "kern",
        broker_url=broker_url_for(redis_db)))  # fmt: skip
    try:
        yield FireStack(schema, db, target, procs)
    except BaseException:
        print(procs.dump_logs(tail=150))
        raise
    finally:
        procs.stop_all()
        target.stop()
        db.dispose()
        drop_schema(schema)
        flush_broker(redis_db)
