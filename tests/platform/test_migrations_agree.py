"""The table definitions (each domain's tables.py) and the migrations describe one schema: a database built by
the migrations has exactly the tables, columns, types, indexes and constraints the code declares (what
`alembic revision --autogenerate` would find to add or drop is nothing), on SQLite and PostgreSQL."""
from __future__ import annotations

import pprint

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import tidings.engine.platform.migrations.env_tables  # noqa: F401  # every domain's tables on SQLModel.metadata
from tidings.engine.platform.db import make_engine, migrate


def test_a_migrated_database_has_exactly_the_declared_tables(database_url):
    db = make_engine(database_url)
    try:
        migrate(db)
        with db.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            differences = compare_metadata(context, SQLModel.metadata)
    finally:
        db.dispose()
    assert differences == [], "the migrations and tables.py disagree:\n" + pprint.pformat(differences)
