"""Workspace ids are never handed out twice (migration 0017_workspace_ids): Temporal workflow ids carry them, so a
workspace made after another was deleted must not get its number. Checked on a database migrated from before the
change with rows in it (kept, with their foreign keys), and on a new one, on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError

from tidings.engine.platform.db import make_engine, migrate, reading, writing
from tidings.engine.workspaces.service import create_key, create_workspace, delete_workspace, find_workspace
from tidings.engine.workspaces.tables import api_keys, workspaces


@pytest.fixture
def db(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def test_the_newest_workspace_deleted_its_id_is_not_given_again(db):
    migrate(db)
    create_workspace(db, "first")
    newest = create_workspace(db, "newest")
    delete_workspace(db, newest)
    again = create_workspace(db, "newest")
    assert again.id > newest.id
    after = create_workspace(db, "after")
    assert after.id > again.id


def test_an_existing_database_keeps_its_workspaces_keys_and_foreign_keys(db):
    migrate(db, "0016_pinpoint_templates")
    kept = create_workspace(db, "kept")
    _, key = create_key(db, "kept")
    newest = create_workspace(db, "newest")
    migrate(db)
    assert find_workspace(db, "kept") == kept
    with reading(db) as conn:
        assert conn.execute(select(api_keys.c.workspace_id)).scalars().all() == [kept.id]
    # the other tables still refer to the rebuilt table: a key of a workspace that does not exist is refused
    with pytest.raises(IntegrityError), writing(db) as conn:
        conn.execute(insert(api_keys).values(workspace_id=newest.id + 100, prefix="x", key_hash="x" * 64,
                                             label="", created_at=0))
    # and a workspace with keys cannot be deleted from under them
    with pytest.raises(IntegrityError), writing(db) as conn:
        conn.execute(workspaces.delete().where(workspaces.c.id == kept.id))
    delete_workspace(db, newest)
    assert create_workspace(db, "newest").id > newest.id
    delete_workspace(db, kept)
    assert create_workspace(db, "kept").id > newest.id


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # PostgreSQL sequences never reuse a number
def test_sqlite_tables_are_built_as_declared_for_ids(db):
    """AUTOINCREMENT is not a difference alembic's comparison (test_migrations_agree) sees: checked here."""
    from sqlmodel import SQLModel

    import tidings.engine.platform.migrations.env_tables  # noqa: F401  # every domain's tables on the metadata

    migrate(db)
    with reading(db) as conn:
        built = dict(conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'table'")).all())
    declared = {name for name, table in SQLModel.metadata.tables.items()
                if table.dialect_options["sqlite"]["autoincrement"]}
    assert "workspace" in declared
    assert {name for name, sql in built.items() if "AUTOINCREMENT" in sql.upper()} == declared
