"""Alembic environment: runs on the connection `kern_tasks.db.migrate` hands over, and
notes each revision it applies in `config.attributes["applied"]` (what `migrate` returns)."""

from typing import Any

from alembic import context

from kern_tasks.db.migrate import VERSION_TABLE
from kern_tasks.db.tables import metadata

config = context.config
connection = config.attributes["connection"]
schema = config.attributes["schema"]
applied: list[str] = config.attributes.setdefault("applied", [])


def _note_applied(*, step: Any, **_: Any) -> None:
    if step.is_upgrade:
        applied.append(step.up_revision_id)


context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    version_table_schema=schema,
    include_schemas=bool(schema),
    on_version_apply=[_note_applied],
)
with context.begin_transaction():
    context.run_migrations()
