"""Firings: what Pinpoint calls a journey's runs (GetJourneyRuns). Tidings records every cohort workflow it
starts in journey_cohort, with the claim key of the workflow that admitted it (`<workflow id>/<page or
batch>`). A firing is the cohorts of one journey version admitted by the same workflow:

- a broadcast's firing: one start of its broadcast workflow, i.e. the one-off broadcast of a version, or one
  firing of a recurring broadcast's schedule (Temporal appends the scheduled time to each firing's workflow
  id), with all the pages of the segment it snapshotted;
- an event- or segment-triggered journey's activation: every cohort its admission workflow started for one
  version (a new version rolled out is a new firing; pausing and resuming is the same one);
- the customers put in by hand (`store.enter`, the journey test fixture) for one version.

A firing's id is its first cohort's number (cohorts are numbered per journey), so it is stable and reads
back without a scan. Its status: RUNNING while a run of it is active (or, for an activation, while its
journey still admits on its version), CANCELLED when stopping the journey ended runs of it, else COMPLETED.
Runs are counted from journey_run, like the journey's own counts (tidings.engine.journeys.counts)."""
from __future__ import annotations

from collections import defaultdict
from typing import Literal

import msgspec
from sqlalchemy import Engine, case, func, select

from tidings.engine.journeys.tables import journey_cohorts, journey_runs, journeys
from tidings.engine.platform.db import reading
from tidings.engine.platform.errors import NotFound
from tidings.engine.workspaces.service import WorkspaceRef

FiringStatus = Literal["RUNNING", "COMPLETED", "CANCELLED"]
STOPPED = "journey stopped"  # the exit reason store.stop gives the runs it ends


class Firing(msgspec.Struct, frozen=True, kw_only=True):
    firing_id: str
    version: int
    admitted_by: str  # the claim key's workflow part: which workflow admitted the cohorts
    cohorts: tuple[int, ...]
    created_at: int  # epoch ms of its first cohort
    updated_at: int  # its last cohort, or the last change of one of its runs
    status: FiringStatus
    runs: dict[str, int]  # journey_run statuses -> how many of its runs have each


def _admitted_by(claim_key: str) -> str:
    return claim_key.rsplit("/", 1)[0]


def _continuous(admitted_by: str) -> bool:
    """An admission workflow's firing keeps admitting for as long as its version is the active one."""
    return admitted_by.endswith("/admission")


def list_firings(db: Engine, workspace: WorkspaceRef, journey_id: str) -> list[Firing]:
    """The journey's firings, oldest first (NotFound for a journey the workspace does not have)."""
    where_cohort = (journey_cohorts.c.workspace_id == workspace.id, journey_cohorts.c.journey_id == journey_id)
    where_run = (journey_runs.c.workspace_id == workspace.id, journey_runs.c.journey_id == journey_id)
    with reading(db) as conn:
        journey = conn.execute(select(journeys.c.status, journeys.c.active_version).where(
            journeys.c.workspace_id == workspace.id, journeys.c.journey_id == journey_id)).first()
        if journey is None:
            raise NotFound(f"no journey {journey_id!r}", field="journey_id")
        cohorts = conn.execute(select(journey_cohorts.c.cohort, journey_cohorts.c.version,
                                      journey_cohorts.c.claim_key, journey_cohorts.c.created_at)
                               .where(*where_cohort).order_by(journey_cohorts.c.cohort)).all()
        stopped = func.sum(case((journey_runs.c.exit_reason == STOPPED, 1), else_=0))
        by_cohort = conn.execute(select(journey_runs.c.cohort, journey_runs.c.status, func.count(),
                                        func.max(journey_runs.c.updated_at), stopped)
                                 .where(*where_run).group_by(journey_runs.c.cohort, journey_runs.c.status)).all()
    runs: dict[int, list[tuple[str, int, int, int]]] = defaultdict(list)
    for cohort, run_status, n, updated, n_stopped in by_cohort:
        runs[int(cohort)].append((run_status, int(n), int(updated or 0), int(n_stopped or 0)))
    grouped: dict[tuple[int, str], list] = {}
    for row in cohorts:
        grouped.setdefault((int(row.version), _admitted_by(row.claim_key)), []).append(row)
    out = []
    for (version, admitted_by), rows in grouped.items():
        counts: dict[str, int] = defaultdict(int)
        updated_at = max(int(r.created_at) for r in rows)
        cancelled = False
        for r in rows:
            for run_status, n, updated, n_stopped in runs.get(int(r.cohort), []):
                counts[run_status] += n
                updated_at = max(updated_at, updated)
                cancelled = cancelled or n_stopped > 0
        current = version == journey.active_version
        if counts.get("active") or (_continuous(admitted_by) and current and journey.status in ("active", "paused")):
            status: FiringStatus = "RUNNING"
        elif cancelled or (_continuous(admitted_by) and current and journey.status == "stopped"):
            status = "CANCELLED"
        else:
            status = "COMPLETED"
        out.append(Firing(firing_id=str(rows[0].cohort), version=version, admitted_by=admitted_by,
                          cohorts=tuple(int(r.cohort) for r in rows), created_at=int(rows[0].created_at),
                          updated_at=updated_at, status=status, runs=dict(counts)))
    return sorted(out, key=lambda f: f.cohorts[0])


def get_firing(db: Engine, workspace: WorkspaceRef, journey_id: str, firing_id: str) -> Firing:
    for firing in list_firings(db, workspace, journey_id):
        if firing.firing_id == firing_id:
            return firing
    raise NotFound(f"no run {firing_id!r} of journey {journey_id!r}", field="RunId")


__all__ = ["Firing", "FiringStatus", "list_firings", "get_firing"]
