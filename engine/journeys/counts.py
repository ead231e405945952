"""How many customers each step of a journey has seen, holds now, and ended at: the numbers drawn on
the journey's graph, read from journey_run (the runtime records every step a run takes)."""
from __future__ import annotations

from collections import Counter

import msgspec
from sqlalchemy import Engine, func, select

from tidings.engine.journeys.tables import journey_runs
from tidings.engine.platform.db import reading
from tidings.engine.workspaces.service import WorkspaceRef


class StepCounts(msgspec.Struct):
    entered: int = 0  # runs that reached the step
    waiting: int = 0  # active runs on the step now
    ended: int = 0  # runs that ended on the step (completed, exited, held out, failed)
    # what a send step did for its runs: sent, or why not (opted_out, no_endpoint, frequency_cap, ...)
    outcomes: dict[str, int] = msgspec.field(default_factory=dict)


def step_counts(db: Engine, ws: WorkspaceRef, journey_id: str, version: int | None = None) -> dict[str, StepCounts]:
    q = select(journey_runs.c.status, journey_runs.c.current_step, journey_runs.c.steps).where(
        journey_runs.c.workspace_id == ws.id, journey_runs.c.journey_id == journey_id)
    if version is not None:
        q = q.where(journey_runs.c.version == version)
    entered: Counter[str] = Counter()
    waiting: Counter[str] = Counter()
    ended: Counter[str] = Counter()
    outcomes: dict[str, Counter[str]] = {}
    with reading(db) as conn:
        for status, current, steps in conn.execute(q):
            taken = [s for s in steps or [] if isinstance(s, dict) and s.get("step")]
            entered.update({s["step"] for s in taken})
            for s in taken:
                if s.get("outcome"):
                    outcomes.setdefault(s["step"], Counter())[s["outcome"]] += 1
            if current:
                (waiting if status == "active" else ended)[current] += 1
    return {step: StepCounts(entered[step], waiting[step], ended[step], dict(outcomes.get(step, {})))
            for step in entered | waiting | ended}


def run_totals(db: Engine, ws: WorkspaceRef, journey_id: str) -> dict[str, int]:
    """How many runs the journey has, by status (active, completed, exited, held_out)."""
    q = select(journey_runs.c.status, func.count()).where(
        journey_runs.c.workspace_id == ws.id, journey_runs.c.journey_id == journey_id).group_by(journey_runs.c.status)
    with reading(db) as conn:
        return {status: int(n) for status, n in conn.execute(q)}
