"""The database's clock, so every replica agrees on "now" whatever its own clock says."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Connection, Float, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

# Epoch seconds with a fraction, as each database writes it.
_CLOCK = {
    "postgresql": "EXTRACT(EPOCH FROM clock_timestamp())::float8",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}
_NOW = {dialect: text(f"SELECT {clock}") for dialect, clock in _CLOCK.items()}


def db_time(connection: Connection) -> float:
    """Epoch seconds on the database server, with a fraction."""
    return float(connection.execute(_NOW[connection.dialect.name]).scalar_one())


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


class db_clock(FunctionElement[float]):
    """`db_time`'s value as an SQL expression: a statement reads the clock where it uses
    it (the workflow step's statements), without a round trip of its own."""

    type = Float()
    inherit_cache = True


@compiles(db_clock)
def _db_clock(element: db_clock, compiler: Any, **kw: Any) -> str:
    return _CLOCK[compiler.dialect.name]
