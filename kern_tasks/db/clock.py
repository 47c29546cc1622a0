"""The database's clock, so every replica agrees on "now" whatever its own clock says."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Connection, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

_NOW = {
    "postgresql": "SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8",
    "sqlite": "SELECT (julianday('now') - 2440587.5) * 86400.0",
}


def db_time(connection: Connection) -> float:
    """Epoch seconds on the database server, with a fraction."""
    return float(connection.execute(text(_NOW[connection.dialect.name])).scalar_one())


def db_now(connection: Connection) -> int:
    """Whole epoch seconds on the database server (what the tables store)."""
    return int(db_time(connection))


class epoch_now(FunctionElement[int]):
    """Whole epoch seconds on the database server, as an SQL expression: statements on the
    fire path read the clock where they use it, without a round trip of their own."""

    type = BigInteger()
    inherit_cache = True


@compiles(epoch_now, "postgresql")
def _epoch_now_postgresql(element: epoch_now, compiler: Any, **kw: Any) -> str:
    return "CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp())) AS BIGINT)"


@compiles(epoch_now, "sqlite")
def _epoch_now_sqlite(element: epoch_now, compiler: Any, **kw: Any) -> str:
    return "unixepoch()"
