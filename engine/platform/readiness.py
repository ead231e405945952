"""Whether this process's store can serve: the database answers and its schema is at the migrations' head.

Read by the API's /ready (api/routes/operations.py), which adds Temporal, and `tidings migrate --check`. A
schema behind the head means a deploy whose migration has not run (or failed): not ready. A schema at a
revision this code does not know was migrated by a newer release: ready, so that during a rolling upgrade the
old processes keep serving until they are replaced (docs/production.md says when a release forbids that).
"""
from __future__ import annotations

from functools import cache

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from tidings.engine.platform.db import MIGRATIONS


@cache
def _revisions() -> tuple[frozenset[str], frozenset[str]]:
    """(the heads, every revision) of this code's migrations."""
    script = ScriptDirectory(str(MIGRATIONS))
    return frozenset(script.get_heads()), frozenset(r.revision for r in script.walk_revisions())


def store_problems(db: Engine) -> dict[str, str]:
    """`{"database": ..., "migrations": ...}`: "ok", or what is wrong, in words an operator acts on."""
    try:
        with db.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = frozenset(MigrationContext.configure(conn).get_current_heads())
    except Exception as exc:  # unreachable, refused, authentication: say what the driver said
        return {"database": f"cannot reach the database: {type(exc).__name__}: {str(exc)[:300]}",
                "migrations": "unknown: the database is unreachable"}
    heads, known = _revisions()
    if current == heads or current - known:  # at the head, or a newer release's schema
        return {"database": "ok", "migrations": "ok"}
    return {"database": "ok", "migrations": f"the schema is at {', '.join(sorted(current)) or 'no revision'}, "
                                            f"the code expects {', '.join(sorted(heads))}: run the migrations "
                                            "(any `tidings api` start runs them)"}
