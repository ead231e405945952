"""Whether this process's store can serve: the database answers and its schema is at the migrations' head.

Read by the API's /ready (api/routes/operations.py), which adds Temporal. A schema behind the head means a
deploy whose migration has not run (or failed); one ahead means code older than the schema (a rollback).
"""
from __future__ import annotations

from functools import cache

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from engine.platform.db import MIGRATIONS


@cache
def _heads() -> frozenset[str]:
    return frozenset(ScriptDirectory(str(MIGRATIONS)).get_heads())


def store_problems(db: Engine) -> dict[str, str]:
    """`{"database": ..., "migrations": ...}`: "ok", or what is wrong, in words an operator acts on."""
    try:
        with db.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = frozenset(MigrationContext.configure(conn).get_current_heads())
    except Exception as exc:  # unreachable, refused, authentication: say what the driver said
        return {"database": f"cannot reach the database: {type(exc).__name__}: {str(exc)[:300]}",
                "migrations": "unknown: the database is unreachable"}
    heads = _heads()
    if current == heads:
        return {"database": "ok", "migrations": "ok"}
    return {"database": "ok", "migrations": f"the schema is at {', '.join(sorted(current)) or 'no revision'}, "
                                            f"the code expects {', '.join(sorted(heads))}: run the migrations "
                                            "(any `tidings api` start runs them)"}
