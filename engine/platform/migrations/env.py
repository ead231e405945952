"""Alembic environment: migrations run on the connection that engine.platform.db.migrate hands in."""
from alembic import context

# Every domain's tables register on SQLModel.metadata (autogenerate compares them with the migrations).
from engine.analytics import tables as analytics_tables  # noqa: F401
from engine.channels import tables as channels_tables  # noqa: F401
from engine.customers import tables as customers_tables  # noqa: F401
from engine.journeys import tables as journeys_tables  # noqa: F401
from engine.platform import installation  # noqa: F401
from engine.messaging import tables as messaging_tables  # noqa: F401
from engine.segments import tables as segments_tables  # noqa: F401
from engine.workspaces import tables as workspaces_tables  # noqa: F401
from sqlmodel import SQLModel

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=SQLModel.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
