"""The database of one benchmark run: a SQLite file (the default), or a fresh schema of the PostgreSQL given
by `--database-url`, created here and dropped at the end.

The PostgreSQL server may be shared with other people's schemas, so the run stays inside its own: Tidings
reaches it through `options=-csearch_path=<schema>` in the URL (every connection, subprocesses included), and
the schema's workspace ids start at a random offset. The engine's advisory locks are keyed by workspace id and
advisory locks are per database, not per schema: workspace 1 here would queue behind workspace 1 of every
other schema on the server (a segment backfill holds its lock for seconds).
"""
from __future__ import annotations

import argparse
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError


def add_database_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", default=None, metavar="URL",
                        help="postgresql://... (a fresh schema of it, dropped at the end); default: a SQLite file")


def store_name(url: str) -> str:
    return "PostgreSQL" if url.startswith("postgresql") else "SQLite"


def in_schema(url: str, schema: str) -> str:
    """`url` with every connection's search_path set to `schema` (libpq's `options`, %3D for '=')."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@contextmanager
def bench_database(url: str | None, folder: Path, filename: str = "tidings.db") -> Iterator[str]:
    """Yield the database URL for Tidings: `sqlite:///<folder>/<filename>` without `url`, else a new schema of
    the PostgreSQL at `url`, migrated (so the workspace ids can be moved off the low numbers) and dropped after."""
    if not url:
        yield f"sqlite:///{folder / filename}"
        return
    from tidings.engine.platform.db import make_engine, migrate

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        ours = in_schema(url, schema)
        db = make_engine(ours)
        try:
            migrate(db)
            with db.begin() as conn:
                sequence = conn.execute(text("SELECT pg_get_serial_sequence('workspace', 'id')")).scalar_one()
                conn.execute(text(f"ALTER SEQUENCE {sequence} RESTART WITH {random.randrange(10**6, 10**9)}"))
        finally:
            db.dispose()
        yield ours
    finally:
        _drop(admin, schema)
        admin.dispose()


def _drop(admin, schema: str) -> None:
    """DROP SCHEMA, again after a deadlock: dropping many tables while other schemas' DDL runs can meet one
    (tests/conftest.py does the same)."""
    for attempt in range(10):
        try:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            return
        except OperationalError as exc:
            if "deadlock detected" not in str(exc) or attempt == 9:
                raise
            time.sleep(0.5)
