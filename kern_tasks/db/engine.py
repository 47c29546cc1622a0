"""`Database`: one SQLAlchemy engine on Postgres (psycopg 3) or SQLite, and its migrations.

    db = Database()                                  # the embedded SQLite default
    db = Database("postgresql://localhost/app", schema="ai")   # an agno database

SQLite is set up for several processes sharing one file: WAL, a busy timeout, foreign
keys on (runs cascade with their schedule), and `BEGIN IMMEDIATE` so that a transaction
that reads and then writes never dies on a lock upgrade.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.engine import URL

from kern_tasks.db.migrate import migrate, revision_gap
from kern_tasks.errors import NotMigrated
from kern_tasks.settings import Settings

log = logging.getLogger("kern_tasks.db")

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

    Explicit arguments win, and an explicit URL is the whole configuration: with `url`
    given, nothing is read from the environment (`schema` and `auto_upgrade` come from
    the arguments, else from `settings` when one is passed, else the defaults). With
    `url=None` the database is the one `settings` names, and `settings=None` means
    `Settings.from_env()` (KERN_DATABASE_URL, KERN_DB_SCHEMA, KERN_AUTO_UPGRADE; no
    KERN_DATABASE_URL: the embedded SQLite file under `.kern/`).

    Tables on first use: the first `begin()` or `connect()` (or `ensure_ready()`, which
    the processes call at start) checks, in one query, that the tables are at this
    kern_tasks' head revision; if they are missing or behind, `auto_upgrade=True` (the
    default) migrates them under the migrations' lock, and `auto_upgrade=False` raises
    `NotMigrated` naming `kern-tasks db upgrade`. Once per Database, not per request.
    `schema` is the Postgres schema of the tables (None: the connection's search path).
    """

    def __init__(
        self,
        url: str | None = None,
        schema: str | None = None,
        *,
        settings: Settings | None = None,
        auto_upgrade: bool | None = None,
        pool_size: int = 5,
        pool_pre_ping: bool = True,
    ) -> None:
        if settings is None:
            settings = Settings.from_env() if url is None else Settings()
        self.url = normalise_url(url or settings.resolved_database_url)
        self.schema = schema if schema is not None else settings.db_schema
        self.auto_upgrade = settings.auto_upgrade if auto_upgrade is None else auto_upgrade
        if self.dialect == "sqlite":
            self.schema = None  # SQLite has no schemas; one file is one database
        self._pool_size = pool_size
        self._pool_pre_ping = pool_pre_ping
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._ready = False

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r}, schema={self.schema!r})"

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @property
    def engine(self) -> Engine:
        """The engine, created on first use (constructing a Database does no I/O). The raw
        engine: reaching it checks nothing; `begin()` and `connect()` check the tables."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self._create_engine()
        return self._engine

    def ensure_ready(self) -> None:
        """Make sure the tables are at head: one query once per Database; migrate when they
        are missing or behind and auto_upgrade is on, else raise `NotMigrated`.

        A database outage raises the driver's error and leaves the check for next time."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            if self._engine is None:  # (not self.engine: it takes the lock we hold)
                self._engine = self._create_engine()
            engine = self._engine
            gap = revision_gap(engine, self.schema)
            if gap.ahead:
                log.warning("%r is at revision %s, newer than this kern_tasks knows (%s); carrying on",
                            self, gap.current, gap.head)
            elif gap.behind:
                if not self.auto_upgrade:
                    raise NotMigrated(
                        f"{self!r} is not migrated (at revision {gap.current or 'none: no kern_tasks tables'}, "
                        f"this kern_tasks needs {gap.head}) and auto-upgrade is off: run `kern-tasks db upgrade` "
                        "with KERN_DATABASE_URL (and KERN_DB_SCHEMA) naming it, or turn KERN_AUTO_UPGRADE on"
                    )
                self._log_applied(migrate(engine, self.schema))
            self._ready = True

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
        if not self._ready:
            self.ensure_ready()
        with self.engine.begin() as connection:
            yield connection

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        if not self._ready:
            self.ensure_ready()
        with self.engine.connect() as connection:
            yield connection

    def upgrade(self, revision: str = "head") -> None:
        """Bring the tables to `revision` (idempotent; safe on a database agno created, and
        with several processes upgrading at once). Works whatever `auto_upgrade` says."""
        self._log_applied(migrate(self.engine, self.schema, revision))
        if revision == "head":
            self._ready = True

    def _log_applied(self, applied: list[str]) -> None:
        # One line per database per migration run: of replicas starting together, only
        # the one that migrated says so (the others found the work done under the lock).
        if applied:
            log.info("migrated %r: applied %s", self, ", ".join(applied))

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
