"""How many customers each step of a journey has seen, holds now, and ended at: the numbers drawn on
the journey's graph, read from journey_run (the runtime records every step a run takes); and how far a
run of the journey has got (`progress`: `tidings journeys stats --progress`)."""
from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
from sqlalchemy import Engine, Text, case, cast, func, select

from tidings.engine.journeys.tables import (journey_cohorts, journey_runs, journey_step_tallies,
                                           journey_versions, journeys)
from tidings.engine.messaging.tables import messages
from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.db import reading, writing
from tidings.engine.workspaces.service import WorkspaceRef


class StepCounts(msgspec.Struct):
    entered: int = 0  # runs that reached the step
    waiting: int = 0  # active runs on the step now
    ended: int = 0  # runs that ended on the step (completed, exited, held out, failed)
    # what a send step did for its runs: sent, or why not (opted_out, no_endpoint, frequency_cap, ...)
    outcomes: dict[str, int] = msgspec.field(default_factory=dict)


class _Taken(msgspec.Struct):
    """What step_counts reads of a step a run took (the rest of the entry is skipped by the decoder)."""
    step: Any = None
    outcome: Any = None


_steps_decoder = msgspec.json.Decoder(list[_Taken])


def _path(raw: str | bytes) -> tuple[tuple[Any, Any], ...]:
    """(step, outcome) of each step the run took, from its `steps` JSON."""
    try:
        return tuple((t.step, t.outcome) for t in _steps_decoder.decode(raw) if t.step)
    except msgspec.ValidationError:  # not a list of objects: take the objects with a step, as recorded
        return tuple((s["step"], s.get("outcome")) for s in msgspec.json.decode(raw) or []
                     if isinstance(s, dict) and s.get("step"))


def step_counts(db: Engine, workspace: WorkspaceRef, journey_id: str, version: int | None = None,
                cohorts: tuple[int, ...] | None = None) -> dict[str, StepCounts]:
    """Per step; of one version's runs, or of the runs of these cohorts (a firing: engine/journeys/firings.py)."""
    if cohorts is None:
        return _tallied_step_counts(db, workspace, journey_id, version)
    # The steps come as JSON text, decoded into (step, outcome) pairs only, and runs are counted by their
    # path (status, current step, steps taken): runs that went the same way are counted once, then added up.
    q = select(journey_runs.c.status, journey_runs.c.current_step, cast(journey_runs.c.steps, Text)).where(
        journey_runs.c.workspace_id == workspace.id, journey_runs.c.journey_id == journey_id)
    if version is not None:
        q = q.where(journey_runs.c.version == version)
    if cohorts is not None:
        q = q.where(journey_runs.c.cohort.in_(cohorts))
    paths: Counter[tuple[str, str | None, tuple[tuple[Any, Any], ...]]] = Counter()
    with reading(db) as conn:
        for status, current, raw in conn.execute(q):
            paths[(status, current, _path(raw))] += 1
    entered: Counter[str] = Counter()
    waiting: Counter[str] = Counter()
    ended: Counter[str] = Counter()
    outcomes: dict[str, Counter[str]] = {}
    for (status, current, taken), n in paths.items():
        for step in {step for step, _ in taken}:
            entered[step] += n
        for step, outcome in taken:
            if outcome:
                outcomes.setdefault(step, Counter())[outcome] += n
        if current:
            (waiting if status == "active" else ended)[current] += n
    return {step: StepCounts(entered[step], waiting[step], ended[step], dict(outcomes.get(step, {})))
            for step in entered | waiting | ended}


def _tallied_step_counts(db: Engine, workspace: WorkspaceRef, journey_id: str, version: int | None
                         ) -> dict[str, StepCounts]:
    """step_counts of a version (or every version) from journey_step_tally, which triggers on journey_run keep
    as runs are written (migration 0020_pagefast_step_tally): a few rows, not every run's steps."""
    q = select(journey_step_tallies.c.kind, journey_step_tallies.c.step, journey_step_tallies.c.outcome,
               func.sum(journey_step_tallies.c.runs)).where(
        journey_step_tallies.c.workspace_id == workspace.id, journey_step_tallies.c.journey_id == journey_id)
    if version is not None:
        q = q.where(journey_step_tallies.c.version == version)
    q = q.group_by(journey_step_tallies.c.kind, journey_step_tallies.c.step, journey_step_tallies.c.outcome)
    found: dict[str, StepCounts] = {}
    with reading(db) as conn:
        rows = [(kind, step, outcome, int(n)) for kind, step, outcome, n in conn.execute(q) if n and n > 0]
    for kind, step, outcome, n in sorted(rows):
        c = found.setdefault(step, StepCounts())
        if kind == "outcome":
            c.outcomes[outcome] = n
        elif kind in ("entered", "waiting", "ended"):
            setattr(c, kind, n)
    return found


_TALLY_KEY = "workspace_id, journey_id, version, kind, step, outcome"


def fold_step_tally(db: Engine) -> int:
    """Fold the step tally's shards of PostgreSQL backends that have gone into shard 0, and drop rows that
    count nothing (a deleted journey's, runs counted out), so the tally stays a few rows per step whatever
    the number of connections that ever wrote runs. Only this writes shard 0 (a backend writes the shards
    pid * 16 + 0..15, and a pid is never 0), and a live backend's shards are left alone, so it never waits
    on a writer's rows: the DELETE ... RETURNING takes each row's latest committed count. Called by the
    daily retention run; answers how many rows it wrote into shard 0 and dropped as empty."""
    with writing(db) as conn:
        folded = 0
        if conn.dialect.name == "postgresql":
            folded = conn.exec_driver_sql(
                f"WITH moved AS (DELETE FROM journey_step_tally WHERE shard <> 0 AND shard / 16 NOT IN "
                f"(SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL) RETURNING {_TALLY_KEY}, runs) "
                f"INSERT INTO journey_step_tally ({_TALLY_KEY}, shard, runs) SELECT {_TALLY_KEY}, 0, sum(runs) "
                f"FROM moved GROUP BY {_TALLY_KEY} ON CONFLICT ({_TALLY_KEY}, shard) "
                "DO UPDATE SET runs = journey_step_tally.runs + excluded.runs").rowcount or 0
        emptied = conn.execute(journey_step_tallies.delete().where(
            journey_step_tallies.c.shard == 0, journey_step_tallies.c.runs == 0)).rowcount or 0
    return folded + emptied


def run_totals(db: Engine, workspace: WorkspaceRef, journey_id: str) -> dict[str, int]:
    """How many runs the journey has, by status (active, completed, exited, held_out)."""
    q = select(journey_runs.c.status, func.count()).where(
        journey_runs.c.workspace_id == workspace.id, journey_runs.c.journey_id == journey_id).group_by(journey_runs.c.status)
    with reading(db) as conn:
        return {status: int(n) for status, n in conn.execute(q)}


# A broadcast whose runs all ended counts as admitted in full once its last cohort is this old, even when
# the segment grew past what it snapshotted (those customers are not part of this firing).
SETTLED_MS = 10_000


class Progress(msgspec.Struct, kw_only=True):
    """How far the journey's version has got: customers (runs) and messages, and the sending rate."""

    journey_id: str
    version: int | None
    broadcast: bool
    total: int  # customers it reaches: a broadcast's segment size until it has admitted them; else entered
    entered: int  # runs started
    finished: int  # runs ended (completed, exited, held out)
    # customers done: their run ended, or (a run still at or past its send step) their message is final;
    # the larger of the two counts, which is exact for the common broadcast of one send step
    done_customers: int
    pending: int  # total - done_customers: not yet sent to (or not yet admitted: a broadcast still admitting)
    sent: int  # messages sent
    failed: int  # messages failed for good
    retrying: int  # messages waiting for their next attempt
    per_second: float  # messages sent per second over the last `window_seconds` (or since the first)
    eta_seconds: float | None  # pending / per_second; None while nothing is being sent
    done: bool  # nothing left to do: every customer's run ended (a broadcast: admitted in full)
    at: int  # epoch ms of this reading


def progress(db: Engine, workspace: WorkspaceRef, journey_id: str, version: int | None = None,
             window_seconds: float = 10.0) -> Progress:
    """Counts in SQL (grouped queries over the journey's runs and the workspace's messages), no per-run
    work in Python (step_counts above reads every run's steps)."""
    from tidings.engine.journeys.ir import BroadcastEntry, JourneyIR
    from tidings.engine.platform.errors import NotFound
    from tidings.engine.segments.service import segment_size

    now = now_ms()
    with reading(db) as conn:
        row = conn.execute(select(journeys.c.version, journeys.c.active_version).where(
            journeys.c.workspace_id == workspace.id, journeys.c.journey_id == journey_id)).first()
        if row is None:
            raise NotFound(f"no journey {journey_id!r}", field="journey_id")
        version = version or row.active_version or row.version
        text = conn.execute(select(journey_versions.c.ir).where(
            journey_versions.c.workspace_id == workspace.id, journey_versions.c.journey_id == journey_id,
            journey_versions.c.version == version)).scalar()
        if text is None:
            raise NotFound(f"no version {version} of journey {journey_id!r}", field="version")
        j = JourneyIR.from_json(text)
        entry = j.entry
        runs = dict(conn.execute(select(journey_runs.c.status, func.count()).where(
            journey_runs.c.workspace_id == workspace.id, journey_runs.c.journey_id == journey_id,
            journey_runs.c.version == version).group_by(journey_runs.c.status)).all())
        since = now - int(window_seconds * 1000)
        recent = case((messages.c.updated_at >= since, 1), else_=0)
        sent_rows = conn.execute(select(messages.c.status, func.count(), func.sum(recent),
                                        func.min(messages.c.created_at)).where(
            messages.c.workspace_id == workspace.id, messages.c.journey_id == journey_id,
            messages.c.journey_version == version).group_by(messages.c.status)).all()
        final_customers = conn.execute(select(func.count(func.distinct(messages.c.user_pk))).where(
            messages.c.workspace_id == workspace.id, messages.c.journey_id == journey_id,
            messages.c.journey_version == version, messages.c.status.in_(("sent", "failed")))).scalar() or 0
        last_cohort = conn.execute(select(func.max(journey_cohorts.c.created_at)).where(
            journey_cohorts.c.workspace_id == workspace.id, journey_cohorts.c.journey_id == journey_id,
            journey_cohorts.c.version == version)).scalar()
        broadcast = isinstance(entry, BroadcastEntry)
        size = segment_size(conn, workspace.id, entry.segment) if isinstance(entry, BroadcastEntry) else 0
    entered = sum(runs.values())
    finished = entered - runs.get("active", 0)
    by_status = {r[0]: r for r in sent_rows}
    sent = by_status["sent"][1] if "sent" in by_status else 0
    recent_sent = int(by_status["sent"][2] or 0) if "sent" in by_status else 0
    first = min((r[3] for r in sent_rows if r[3] is not None), default=None)
    # A broadcast whose cohorts finish promptly pages only as its cohorts end (at most 32 unfinished), so a
    # pause in new cohorts means it is done only once no run is active either
    from tidings.engine.journeys.runtime.contracts import cohorts_finish_promptly

    paced = broadcast and cohorts_finish_promptly(j) and runs.get("active", 0) > 0
    settled = last_cohort is not None and now - last_cohort >= SETTLED_MS and not paced
    total = entered if not broadcast or settled else max(entered, size)
    done_customers = min(total, max(finished, final_customers))
    pending = total - done_customers
    elapsed = (now - max(first, since)) / 1000 if first is not None else 0.0
    rate = recent_sent / elapsed if elapsed >= 0.5 else 0.0
    return Progress(journey_id=journey_id, version=version, broadcast=broadcast, total=total, entered=entered,
                    finished=finished, done_customers=done_customers, pending=pending, sent=sent,
                    failed=by_status["failed"][1] if "failed" in by_status else 0,
                    retrying=by_status["retrying"][1] if "retrying" in by_status else 0,
                    per_second=round(rate, 1), eta_seconds=round(pending / rate, 1) if rate > 0 and pending else None,
                    done=entered > 0 and finished == total and (not broadcast or settled or entered >= size), at=now)


class VersionRun(msgspec.Struct, frozen=True):
    """When a journey version admitted customers: its first and latest cohort (epoch ms)."""

    version: int
    first_cohort_at: int
    last_cohort_at: int
    last_run_update_at: int | None  # when its last run changed (its end, once every run ended)
    admitted: int  # customers its cohorts took in (0: every one was turned away, e.g. by the entry limit)


def version_runs(db: Engine, workspace: WorkspaceRef, journey_id: str) -> list[VersionRun]:
    """The versions of the journey whose admission ran (a cohort recorded, maybe empty), oldest first."""
    with reading(db) as conn:
        cohorts = conn.execute(select(journey_cohorts.c.version, func.min(journey_cohorts.c.created_at),
                                      func.max(journey_cohorts.c.created_at), func.sum(journey_cohorts.c.size)).where(
            journey_cohorts.c.workspace_id == workspace.id, journey_cohorts.c.journey_id == journey_id)
            .group_by(journey_cohorts.c.version).order_by(journey_cohorts.c.version)).all()
        updated = dict(conn.execute(select(journey_runs.c.version, func.max(journey_runs.c.updated_at)).where(
            journey_runs.c.workspace_id == workspace.id, journey_runs.c.journey_id == journey_id)
            .group_by(journey_runs.c.version)).all())
    return [VersionRun(int(v), int(first), int(last), int(updated[v]) if updated.get(v) is not None else None,
                       int(size or 0)) for v, first, last, size in cohorts]
