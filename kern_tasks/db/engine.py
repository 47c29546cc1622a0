"""`Database`: one SQLAlchemy engine on Postgres (psycopg 3) or SQLite, and its migrations.

    db = Database()                                  # the embedded SQLite default
    db = Database("postgresql://localhost/app", schema="ai")   # an agno database

SQLite is set up for several processes sharing one file: WAL, a busy timeout, foreign
keys on (runs cascade with their schedule), and `BEGIN IMMEDIATE` so that a transaction
that reads and then writes never dies on a lock upgrade.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.engine import URL

from kern_tasks.db.migrate import migrate
from kern_tasks.settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 10


def normalise_url(url: str) -> URL:
    """Use psycopg 3 for every Postgres URL; make the SQLite file's folder."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return parsed


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """Where the agno_* tables live.

    `url=None` means the settings' default (a SQLite file under `.kern/`), which
    migrates itself on first use; any other database is migrated by `upgrade()`
    (or `kern_tasks db upgrade`). `schema` is the Postgres schema of the tables.
    """

    def __init__(
        self,
        url: str | None = None,
        schema: str | None = None,
        *,
        settings: Settings | None = None,
        pool_size: int = 5,
        pool_pre_ping: bool = True,
    ) -> None:
        settings = settings or Settings.from_env()
        self.url = normalise_url(url or settings.resolved_database_url)
        self.schema = schema if schema is not None else settings.db_schema
        self.auto_upgrade = url is None and settings.database_url is None
        if self.dialect == "sqlite":
            self.schema = None  # SQLite has no schemas; one file is one database
        self._pool_size = pool_size
        self._pool_pre_ping = pool_pre_ping
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r}, schema={self.schema!r})"

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @property
    def engine(self) -> Engine:
        """The engine, created on first use (constructing a Database does no I/O)."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    engine = self._create_engine()
                    if self.auto_upgrade:
                        migrate(engine, self.schema)
                    self._engine = engine
        return self._engine

    def _create_engine(self) -> Engine:
        options: dict[str, Any] = {"pool_pre_ping": self._pool_pre_ping}
        if self.dialect == "postgresql":
            # A database that drops packets must not hang a beat tick or a fire forever.
            options.update(pool_size=self._pool_size, max_overflow=10, pool_recycle=1800, pool_timeout=30,
                           connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
        engine = create_engine(self.url, **options)
        if self.dialect == "sqlite":
            _configure_sqlite(engine)
        if self.schema:
            engine = engine.execution_options(schema_translate_map={None: self.schema})
        return engine

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection in a transaction that commits on success, rolls back on error."""
        with self.engine.begin() as connection:
            yield connection

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            yield connection

    def upgrade(self, revision: str = "head") -> None:
        """Bring the tables to `revision` (idempotent; safe on a database agno created)."""
        migrate(self.engine, self.schema, revision)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
