"""Query and path values of the read routes (sessions, traces, components) checked before
any query runs: text that no stored id can match (too long, NUL, which Postgres refuses)
answers 404 for a path id and 422 for a filter, never a database error; `db_id` and `table`,
which agno's client may send, must name this OS's database and tables.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import BeforeValidator

from kern_tasks.errors import NotFound
from kern_tasks.runs.safe import has_unstorable_text

ID_MAX = 255
PAGE_MAX = 10**9
NO_NUL = r"^[^\x00]*$"


_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*\Z")


def _iso_only(value: Any) -> Any:
    # pydantic reads a bare number as epoch seconds; the document says ISO 8601 (date-time).
    if isinstance(value, (int, float)) or (isinstance(value, str) and _NUMBER.match(value)):
        raise ValueError("must be an ISO 8601 date-time, e.g. 2026-12-01T09:00:00Z, not a number")
    return value


# A time in a query: ISO 8601 only (a time without a zone is UTC where it is read).
IsoTime = Annotated[datetime, BeforeValidator(_iso_only)]


def text_filter(description: str) -> Any:
    """An optional text filter: at most ID_MAX characters, no NUL (else 422)."""
    return Query(None, max_length=ID_MAX, pattern=NO_NUL, description=description)


def known_id(value: str, what: str) -> str:
    """A path id that can exist; any other answers 404 without asking the database."""
    if len(value) > ID_MAX or has_unstorable_text(value):
        raise NotFound(f"no {what} with id {value[:80]!r}")
    return value


def check_store(served_db_id: str, db_id: str | None, tables: tuple[str, ...], table: str | None) -> None:
    """agno's `db_id` / `table` selectors: this OS has one database; naming another, or a
    table other than `tables`, answers 404 as agno does for an unknown database."""
    if db_id is not None and db_id != served_db_id:
        raise NotFound(f"no database with id {db_id[:80]!r}; this OS's is {served_db_id}")
    if table is not None and table not in tables:
        raise NotFound(f"no table {table[:80]!r} here; this OS keeps them in {', '.join(tables)}")
