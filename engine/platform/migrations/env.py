"""Alembic environment: migrations run on the connection that tidings.engine.platform.db.migrate hands in."""
from alembic import context

# Every domain's tables register on SQLModel.metadata (autogenerate compares them with the migrations).
import tidings.engine.platform.migrations.env_tables  # noqa: F401
from sqlmodel import SQLModel

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=SQLModel.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
