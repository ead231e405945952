"""Step counts (the journey graph's entered / waiting / ended and send outcomes) come from journey_step_tally,
which triggers on journey_run keep as runs are inserted, updated and deleted."""
from __future__ import annotations

import time

import pytest
import sqlalchemy
from sqlalchemy import delete, func, select, update

from tidings.engine.journeys.counts import StepCounts, fold_step_tally, step_counts
from tidings.engine.journeys.tables import journey_runs, journey_step_tallies
from tidings.engine.platform.db import bulk_insert
from tidings.engine.workspaces.service import ensure_workspace


def _run(ws: int, user_pk: int, status: str, current: str | None, steps: list) -> dict:
    return {"workspace_id": ws, "journey_id": "j", "version": 1, "user_pk": user_pk, "cohort": 1, "workflow_id": "w",
            "current_step": current, "status": status, "exit_reason": None, "entered_at": 1, "updated_at": 1,
            "converted_at": None, "steps": steps, "variant": None, "entry": {}}


def test_step_counts_follow_runs_written_updated_and_deleted(db):
    workspace = ensure_workspace(db, "acme")
    hello = {"step": "hello", "hop": 0, "at": 1, "outcome": "sent"}
    with db.begin() as conn:
        bulk_insert(conn, journey_runs, [
            _run(workspace.id, 1, "completed", "bye", [hello, {"step": "bye", "hop": 1, "at": 2}]),
            _run(workspace.id, 2, "active", "hello", [{"step": "hello", "hop": 0, "at": 1, "outcome": "quiet_hours"}]),
            # a step taken twice is entered once; its outcomes count each time
            _run(workspace.id, 3, "active", "hello", [hello, {"step": "wait", "at": 2}, hello]),
        ])
    assert step_counts(db, workspace, "j") == {
        "hello": StepCounts(entered=3, waiting=2, ended=0, outcomes={"sent": 3, "quiet_hours": 1}),
        "bye": StepCounts(entered=1, waiting=0, ended=1, outcomes={}),
        "wait": StepCounts(entered=1, waiting=0, ended=0, outcomes={}),
    }
    with db.begin() as conn:
        assert conn.execute(select(func.count()).select_from(journey_step_tallies)).scalar() > 0
        conn.execute(update(journey_runs).where(journey_runs.c.user_pk == 2).values(
            status="completed", current_step="bye",
            steps=[{"step": "hello", "hop": 0, "at": 1, "outcome": "quiet_hours"}, {"step": "bye", "at": 3}]))
        conn.execute(delete(journey_runs).where(journey_runs.c.user_pk == 3))
    expected = {
        "hello": StepCounts(entered=2, waiting=0, ended=0, outcomes={"sent": 1, "quiet_hours": 1}),
        "bye": StepCounts(entered=2, waiting=0, ended=2, outcomes={}),
    }
    assert step_counts(db, workspace, "j") == expected
    assert step_counts(db, workspace, "j", version=1) == expected and step_counts(db, workspace, "j", version=2) == {}
    assert step_counts(db, workspace, "j", cohorts=(1,)) == expected  # read from the runs: the same


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_writers_of_one_journey_never_wait_on_each_other_and_their_shards_fold(db, database_url):
    """Two transactions updating runs of one journey with different step sets (after a split) took the same
    tally rows in different orders when their backend pids shared a shard (pid % 16), and PostgreSQL aborted
    one as a deadlock. Each backend writes a shard of its own now: the second never waits on the first. The
    shards of backends that have gone then fold into one row per count, which still sums the same."""
    workspace = ensure_workspace(db, "acme")
    a = [{"step": "welcome", "at": 1}, {"step": "a_send", "at": 2, "outcome": "sent"}]
    b = [{"step": "welcome", "at": 1}, {"step": "b_wait", "at": 2}]
    with db.begin() as conn:
        bulk_insert(conn, journey_runs, [_run(workspace.id, pk, "active", steps[-1]["step"], steps)
                                         for pk, steps in enumerate((a, b, b, a), start=1)])
    raw = sqlalchemy.create_engine(db.url, poolclass=sqlalchemy.pool.NullPool)
    opened: dict[int, list] = {}
    while True:  # two connections whose pids share pid % 16: what made them deadlock
        conn = raw.connect()
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        opened.setdefault(pid % 16, []).append(conn)
        if len(opened[pid % 16]) == 2:
            first, second = opened[pid % 16]
            break
    done = update(journey_runs).values(status="completed")
    try:
        first.execute(done.where(journey_runs.c.user_pk == 1))  # not committed
        second.exec_driver_sql("SET lock_timeout = '3s'")
        second.execute(done.where(journey_runs.c.user_pk == 2))  # would wait on the first's rows here
        second.execute(done.where(journey_runs.c.user_pk == 4))
        second.commit()
        first.execute(done.where(journey_runs.c.user_pk == 3))
        first.commit()
    finally:
        for conns in opened.values():
            for conn in conns:
                conn.close()
        raw.dispose()
    expected = {"welcome": StepCounts(entered=4, waiting=0, ended=0, outcomes={}),
                "a_send": StepCounts(entered=2, waiting=0, ended=2, outcomes={"sent": 2}),
                "b_wait": StepCounts(entered=2, waiting=0, ended=2, outcomes={})}
    assert step_counts(db, workspace, "j") == expected
    with db.connect() as conn:
        shards = conn.execute(select(func.count(func.distinct(journey_step_tallies.c.shard)))).scalar()
    assert shards >= 3  # the inserting connection's and the two writers'
    db.dispose()  # the test's own pooled connections go too: every writer of the tally has gone
    for _ in range(50):  # a closed connection's backend leaves pg_stat_activity a moment after
        fold_step_tally(db)
        with db.connect() as conn:
            shards_left = set(conn.execute(select(journey_step_tallies.c.shard)).scalars())
        db.dispose()
        if shards_left == {0}:
            break
        time.sleep(0.1)
    assert shards_left == {0}
    assert step_counts(db, workspace, "j") == expected
