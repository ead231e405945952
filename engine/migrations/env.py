"""Alembic environment: migrations run on the connection that engine.db.migrate hands in."""
from alembic import context

from engine import models, segment_models  # noqa: F401  (tables register on SQLModel.metadata)
from sqlmodel import SQLModel

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=SQLModel.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
