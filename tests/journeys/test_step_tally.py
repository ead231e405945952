"""Step counts (the journey graph's entered / waiting / ended and send outcomes) come from journey_step_tally,
which triggers on journey_run keep as runs are inserted, updated and deleted."""
from __future__ import annotations

from sqlalchemy import delete, func, select, update

from tidings.engine.journeys.counts import StepCounts, step_counts
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
