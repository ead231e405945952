"""Imports every domain's tables so they register on SQLModel.metadata: the migrations' environment and the
test that compares migrations with tables (tests/platform/test_migrations_agree.py) share this list."""
from tidings.engine.analytics import tables as analytics_tables  # noqa: F401
from tidings.engine.channels import tables as channels_tables  # noqa: F401
from tidings.engine.customers import tables as customers_tables  # noqa: F401
from tidings.engine.journeys import tables as journeys_tables  # noqa: F401
from tidings.engine.messaging import tables as messaging_tables  # noqa: F401
from tidings.engine.platform import installation  # noqa: F401  (the installation token)
from tidings.engine.segments import tables as segments_tables  # noqa: F401
from tidings.engine.workspaces import tables as workspaces_tables  # noqa: F401
