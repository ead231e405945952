"""Write transactions of the messaging paths, queued in-process on SQLite.

SQLite admits one writer; a second one waits in SQLite's busy handler, which sleeps in steps of up to
100 ms. Under a few hundred sends per second those sleeps, not the work, made the latency. Writers of
one process therefore queue on a lock (woken the moment it is free) and only writers of *other*
processes meet the busy handler. PostgreSQL needs no such thing.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

from sqlalchemy import Engine

_lock = threading.Lock()


@contextmanager
def writing(db: Engine):
    if db.dialect.name != "sqlite":
        with db.begin() as conn:
            yield conn
        return
    with _lock, db.begin() as conn:
        yield conn
