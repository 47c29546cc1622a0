"""Alembic environment: runs on the connection `kern_tasks.db.migrate` hands over."""

from alembic import context

from kern_tasks.db.migrate import VERSION_TABLE
from kern_tasks.db.tables import metadata

config = context.config
connection = config.attributes["connection"]
schema = config.attributes["schema"]

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    version_table_schema=schema,
    include_schemas=bool(schema),
)
with context.begin_transaction():
    context.run_migrations()
