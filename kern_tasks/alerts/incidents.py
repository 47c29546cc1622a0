"""Alert incidents in SQL (kern_alert_incidents, migration 0012): one open row per key.

- an incident is opened by one INSERT that the partial unique index on its key (WHERE
  resolved_at IS NULL) lets through once: the process whose insert went in announces it
  (a log warning, the webhook), every other watcher (beat replicas, web replicas, workers)
  finds it open and says nothing. So one POST per incident, not per tick or per replica;
- it is resolved by one conditional UPDATE (resolved_at IS NULL -> now) whose RETURNING
  row only one process gets: that one announces the resolution.

Keys: "overdue:<schedule id>", "failing:<schedule id>", "no_beat".
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from kern_tasks.db.tables import OPEN_INCIDENT, incidents

_i = incidents

OVERDUE, FAILING, NO_BEAT = "overdue", "failing", "no_beat"
KINDS = (OVERDUE, FAILING, NO_BEAT)
# Failed slots in a row before a failing incident, for a schedule that sets none (spec.py
# validates the field; the constant lives here so beat's alert watch needs no pydantic).
DEFAULT_ALERT_AFTER_FAILURES = 3


@dataclass(frozen=True)
class Incident:
    id: str
    key: str
    kind: str
    schedule_id: str | None
    schedule_name: str | None
    slot: int | None
    last_error: str | None
    message: str
    opened_at: int
    resolved_at: int | None = None

    @classmethod
    def of(cls, row: Any) -> "Incident":
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


def key_of(kind: str, schedule_id: str | None = None) -> str:
    return kind if schedule_id is None else f"{kind}:{schedule_id}"


# Invariant: at most one open incident per key (the partial unique index); the caller that
# gets a row back is the one that opened it, and the only one to announce it.
def open_incident(
    conn: Connection, *, kind: str, message: str, now: int, schedule_id: str | None = None,
    schedule_name: str | None = None, slot: int | None = None, last_error: str | None = None,
) -> Incident | None:
    """Open the incident of (kind, schedule); None when one is open already."""
    dialect: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    values = {
        "id": str(uuid.uuid4()), "key": key_of(kind, schedule_id), "kind": kind, "schedule_id": schedule_id,
        "schedule_name": schedule_name, "slot": slot, "last_error": last_error, "message": message, "opened_at": now,
    }  # fmt: skip
    statement = (
        dialect.insert(_i).values(**values)
        .on_conflict_do_nothing(index_elements=[_i.c.key], index_where=_i.c.resolved_at.is_(None))
        .returning(*_i.c)
    )
    row = conn.execute(statement).mappings().first()
    return Incident.of(row) if row is not None else None


def open_incidents(conn: Connection, kind: str) -> list[Incident]:
    """The open incidents of a kind (a few rows, by the partial index on open ones)."""
    rows = conn.execute(select(_i).where(_i.c.kind == kind, _i.c.resolved_at.is_(None))).mappings().all()
    return [Incident.of(row) for row in rows]


def count_open(conn: Connection) -> dict[str, int]:
    """Open incidents by kind (the partial index on open ones)."""
    counts = dict.fromkeys(KINDS, 0)
    for kind, count in conn.execute(
        select(_i.c.kind, func.count()).where(_i.c.resolved_at.is_(None)).group_by(_i.c.kind)
    ).all():
        counts[kind] = int(count)
    return counts


# Invariant: an incident is resolved once; only the caller that gets the row announces it.
def resolve(conn: Connection, incident_id: str, *, now: int) -> Incident | None:
    row = conn.execute(
        update(_i).where(_i.c.id == incident_id, _i.c.resolved_at.is_(None)).values(resolved_at=now).returning(*_i.c)
    ).mappings().first()
    return Incident.of(row) if row is not None else None


__all__ = ["FAILING", "KINDS", "NO_BEAT", "OPEN_INCIDENT", "OVERDUE", "Incident", "key_of", "open_incident",
           "open_incidents", "count_open", "resolve"]
