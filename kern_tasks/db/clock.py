"""The database's clock, so every replica agrees on "now" whatever its own clock says."""

from __future__ import annotations

from sqlalchemy import Connection, text

_NOW = {
    "postgresql": "SELECT CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp())) AS BIGINT)",
    "sqlite": "SELECT unixepoch()",
}


def db_now(connection: Connection) -> int:
    """Epoch seconds on the database server."""
    return int(connection.execute(text(_NOW[connection.dialect.name])).scalar_one())
