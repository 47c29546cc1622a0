"""The database's clock, so every replica agrees on "now" whatever its own clock says."""

from __future__ import annotations

from sqlalchemy import Connection, text

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
