"""Write transactions of the messaging paths, committed in groups.

Every write transaction is `tidings.engine.platform.db.writing` (on SQLite the writers of one process queue on a
lock rather than meet SQLite's busy handler: under a few hundred sends per second its sleeps, not the
work, made the latency).

Group commit (:func:`write`). A transactional send makes two short write transactions, each of which
used to cost a thread hop, a BEGIN IMMEDIATE and a COMMIT, and a turn on the lock. Concurrent requests
now hand their write *jobs* to one committer per event loop and database: while one group is being
written, the jobs that arrive queue up and go together in the next transaction, each in a SAVEPOINT of
its own so that a job that raises is rolled back alone and the others still commit. A caller hears back
only after the group's COMMIT, so nothing is sent on the strength of rows that are not durable yet.
On PostgreSQL writers do not queue (row locks, not a database lock), so each job keeps a transaction of
its own there, and jobs of different callers never share row locks that could deadlock across processes.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, TypeVar

from sqlalchemy import Connection, Engine

from tidings.engine.platform.db import writing

T = TypeVar("T")
Job = Callable[[Connection], Any]


async def write(db: Engine, job: Callable[[Connection], T]) -> T:
    """Run ``job(conn)`` in a write transaction, in a thread; on SQLite the transaction is shared with the
    jobs other callers submitted meanwhile (see the module docstring). Returns what the job returns, or
    raises what it raised, once the transaction has committed."""
    if db.dialect.name != "sqlite":
        return await asyncio.to_thread(_alone, db, job)
    loop = asyncio.get_running_loop()
    committers = _committers(db)
    committer = committers.get(loop)
    if committer is None:
        for gone in [other for other in committers if other.is_closed()]:
            del committers[gone]
        committer = committers[loop] = _GroupCommitter(db)
    return await committer.submit(loop, job)


def _committers(db: Engine) -> dict[asyncio.AbstractEventLoop, "_GroupCommitter"]:
    # Kept on the engine, so they live and go with it; one per event loop (the API's, a worker's).
    return db.__dict__.setdefault("_tidings_group_committers", {})


def committed(db: Engine) -> tuple[int, int]:
    """(transactions, jobs) committed for ``db`` by the running loop's group committer, for tests."""
    committer = _committers(db).get(asyncio.get_running_loop())
    return (committer.groups, committer.jobs) if committer else (0, 0)


def _alone(db: Engine, job: Job) -> Any:
    with writing(db) as conn:
        return job(conn)


class _GroupCommitter:
    """The jobs of one event loop for one database, one group (one transaction) at a time."""

    def __init__(self, db: Engine):
        self.db = db
        self.waiting: list[tuple[Job, asyncio.Future]] = []
        self.task: asyncio.Task | None = None
        self.groups = 0  # transactions committed, for tests and benchmarks
        self.jobs = 0

    async def submit(self, loop: asyncio.AbstractEventLoop, job: Job) -> Any:
        done = loop.create_future()
        self.waiting.append((job, done))
        if self.task is None:
            self.task = loop.create_task(self._drain())
        return await done

    async def _drain(self) -> None:
        try:
            while self.waiting:
                group, self.waiting = self.waiting, []
                try:
                    outcomes = await asyncio.to_thread(self._commit, [job for job, _ in group])
                except _RolledBack as lone:
                    outcomes = [(False, lone.cause)]
                except Exception as exc:  # BEGIN or COMMIT failed: nothing of this group was written
                    outcomes = [(False, exc)] * len(group)
                except BaseException:  # the loop is going away: let no caller wait forever
                    for _, done in group + self.waiting:
                        done.cancel()
                    self.waiting = []
                    raise
                for (_, done), (ok, value) in zip(group, outcomes):
                    if done.done():  # the caller was cancelled; its job ran all the same, like a thread would
                        continue
                    if ok:
                        done.set_result(value)
                    else:
                        done.set_exception(value)
        finally:
            self.task = None

    def _commit(self, jobs: list[Job]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        with writing(self.db) as conn:
            if len(jobs) == 1:  # no savepoint needed: a failure rolls the whole transaction back
                try:
                    outcomes.append((True, jobs[0](conn)))
                except Exception as exc:
                    outcomes.append((False, exc))
                    raise _RolledBack(exc) from exc
            else:
                for job in jobs:
                    savepoint = conn.begin_nested()
                    try:
                        value = job(conn)
                    except Exception as exc:
                        savepoint.rollback()
                        outcomes.append((False, exc))
                    else:
                        savepoint.commit()
                        outcomes.append((True, value))
        self.groups += 1
        self.jobs += len(jobs)
        return outcomes


class _RolledBack(Exception):
    """A lone job raised: its transaction is rolled back and the job's own exception is its answer."""

    def __init__(self, cause: Exception):
        self.cause = cause

