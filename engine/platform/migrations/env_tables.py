"""Imports every domain's tables so they register on SQLModel.metadata: the migrations' environment and the
test that compares migrations with tables (tests/platform/test_migrations_agree.py) share this list."""
from engine.analytics import tables as analytics_tables  # noqa: F401
from engine.channels import tables as channels_tables  # noqa: F401
from engine.customers import tables as customers_tables  # noqa: F401
from engine.journeys import tables as journeys_tables  # noqa: F401
from engine.messaging import tables as messaging_tables  # noqa: F401
from engine.platform import installation  # noqa: F401  (the installation token)
from engine.segments import tables as segments_tables  # noqa: F401
from engine.workspaces import tables as workspaces_tables  # noqa: F401
