"""Journeys in the store and their lifecycle: put (a new version when the source changed), get, list,
and activate / pause / resume / stop, which drive the Temporal side (admission workflow, broadcast
workflow or schedule) and the ingestion triggers.

Customers already in a journey finish on the version they started: the IR travels in each cohort
workflow's input, so a new version only changes who enters next.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any, get_args

import msgspec
from sqlalchemy import Engine, and_, delete, insert, select, update
from temporalio.client import (
    Schedule, ScheduleActionStartWorkflow, ScheduleAlreadyRunningError, ScheduleIntervalSpec, ScheduleOverlapPolicy,
    SchedulePolicy, ScheduleSpec, ScheduleUpdate,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from tidings.engine.platform.clock import ms_to_iso, now_ms
from tidings.engine.platform.db import reading, writing
from tidings.engine.platform.errors import InvalidInput, NotFound
from tidings.engine.platform.installation import installation_id, scoped
from tidings.engine.journeys.runtime import audience, localtime
from tidings.engine.journeys import ir
from tidings.engine.journeys.runtime.contracts import (
    AdmissionInput, BroadcastInput, admission_workflow_id, broadcast_workflow_id, schedule_id,
)
from tidings.engine.journeys.language.compiler import compile_journey
from tidings.engine.journeys.language.issues import JourneyCompileError
from tidings.engine.journeys.tables import (
    JourneyStatus, RunStatus, journey_cohorts, journey_entries, journey_runs, journey_step_tallies, journey_triggers,
    journey_versions, journeys,
)
from tidings.engine.messaging.ledger import journey_event_names
from tidings.engine.workspaces.tags import add_tags, drop_tags
from tidings.engine.messaging.tables import messages
from tidings.engine.customers.tables import users
from tidings.engine.customers.schemas import ChannelType


class JourneyInfo(msgspec.Struct, kw_only=True):
    id: str
    name: str
    status: JourneyStatus
    version: int
    active_version: int | None
    source_hash: str
    created_at: str
    updated_at: str
    yaml: str | None = None
    ir: ir.JourneyIR | None = None


class RunInfo(msgspec.Struct, kw_only=True):
    journey_id: str
    version: int
    user_id: str
    workflow_id: str
    current_step: str | None
    status: RunStatus
    exit_reason: str | None
    entered_at: str
    updated_at: str
    converted_at: str | None
    variant: str | None
    steps: list[Any]


def _ws(workspace) -> int:
    return workspace if isinstance(workspace, int) else workspace.id


class DbCatalog:
    """What exists in the workspace: its segments (dynamic or static), its stored templates, and every
    endpoint channel type."""

    def __init__(self, db: Engine, workspace_id: int):
        self.db, self.workspace = db, workspace_id

    def has_segment(self, id: str) -> bool:
        with reading(self.db) as conn:
            return audience.segment_exists(conn, self.workspace, id)

    def has_template(self, id: str) -> bool:
        from tidings.engine.messaging.template_store import template_exists

        with reading(self.db) as conn:
            return template_exists(conn, self.workspace, id)

    def has_channel(self, name: str) -> bool:
        # Every endpoint channel type can be sent on: a configured plugin serves it, else the outbox.
        return name in get_args(ChannelType)


class ValidationIssue(msgspec.Struct):
    line: int
    column: int
    message: str


class ValidationResult(msgspec.Struct):
    valid: bool
    errors: list[ValidationIssue]
    id: str | None = None
    steps: int = 0


def validate_journey(db: Engine, workspace, yaml_text: str, *, path: str = "body") -> ValidationResult:
    """Compile without storing: every problem with its line and column, or the journey's id and size."""
    try:
        compiled = compile_journey(yaml_text, path=path, catalog=DbCatalog(db, _ws(workspace)))
    except JourneyCompileError as exc:
        return ValidationResult(valid=False, errors=[ValidationIssue(e.line, e.column, e.message) for e in exc.errors])
    return ValidationResult(valid=True, errors=[], id=compiled.id, steps=len(compiled.nodes))


def put_journey(db: Engine, workspace, yaml_text: str, catalog=None, *, path: str = "<string>",
                expected_id: str | None = None, tags: dict[str, str] | None = None,
                tags_resource: str | None = None) -> tuple[JourneyInfo, bool]:
    """Compile and store; returns (journey, created_new_version). Same source = same version.
    Raises JourneyCompileError with every problem, InvalidInput when the document's id is not `expected_id`
    (the id a URL names). `tags` (tidings.engine.workspaces.tags) are given to a journey created by this call,
    in the same transaction, as resource `tags_resource` (default `journeys/<id>`; a Pinpoint campaign's are
    `campaigns/<id>`); InvalidInput for bad ones, with nothing written."""
    workspace_id = _ws(workspace)
    compiled = compile_journey(yaml_text, path=path, catalog=catalog if catalog is not None else DbCatalog(db, workspace_id))
    if expected_id is not None and compiled.id != expected_id:
        raise InvalidInput(f"the document's id is {compiled.id!r} but the URL names {expected_id!r}", field="id")
    now = now_ms()
    with writing(db) as conn:
        row = conn.execute(select(journeys).where(journeys.c.workspace_id == workspace_id,
                                                  journeys.c.journey_id == compiled.id)).first()
        if row is not None:
            current = conn.execute(select(journey_versions.c.source_hash).where(
                journey_versions.c.workspace_id == workspace_id, journey_versions.c.journey_id == compiled.id,
                journey_versions.c.version == row.version)).scalar()
            if current == compiled.source_hash:
                return _info(conn, workspace_id, compiled.id), False
            version = row.version + 1
        else:
            version = 1
        compiled = msgspec.structs.replace(compiled, version=version)
        conn.execute(insert(journey_versions).values(workspace_id=workspace_id, journey_id=compiled.id, version=version,
                                                     yaml=yaml_text, ir=compiled.to_json().decode(),
                                                     source_hash=compiled.source_hash, created_at=now))
        if row is None:
            conn.execute(insert(journeys).values(workspace_id=workspace_id, journey_id=compiled.id, name=compiled.name,
                                                 status="draft", version=1, active_version=None, next_cohort=1,
                                                 created_at=now, updated_at=now))
            if tags:
                add_tags(conn, workspace_id, tags_resource or f"journeys/{compiled.id}", tags)
        else:
            conn.execute(update(journeys).where(journeys.c.workspace_id == workspace_id, journeys.c.journey_id == compiled.id)
                         .values(name=compiled.name, version=version, updated_at=now))
        return _info(conn, workspace_id, compiled.id), True


def _info(conn, workspace_id: int, journey_id: str, full: bool = False) -> JourneyInfo:
    row = conn.execute(select(journeys).where(journeys.c.workspace_id == workspace_id,
                                              journeys.c.journey_id == journey_id)).first()
    if row is None:
        raise NotFound(f"no journey {journey_id!r}")
    v = conn.execute(select(journey_versions).where(
        journey_versions.c.workspace_id == workspace_id, journey_versions.c.journey_id == journey_id,
        journey_versions.c.version == row.version)).first()
    return JourneyInfo(id=journey_id, name=row.name, status=row.status, version=row.version,
                       active_version=row.active_version, source_hash=v.source_hash,
                       created_at=ms_to_iso(row.created_at), updated_at=ms_to_iso(row.updated_at),
                       yaml=v.yaml if full else None, ir=ir.JourneyIR.from_json(v.ir) if full else None)


def get_journey(db: Engine, workspace, journey_id: str) -> JourneyInfo:
    with reading(db) as conn:
        return _info(conn, _ws(workspace), journey_id, full=True)


def get_ir(db: Engine, workspace, journey_id: str, version: int | None = None) -> ir.JourneyIR:
    with reading(db) as conn:
        found = ir_of(conn, _ws(workspace), journey_id, version)
    if found is None:
        raise NotFound(f"no journey {journey_id!r}" if version is None else
                       f"no version {version} of journey {journey_id!r}")
    return found


def ir_of(conn, workspace_id: int, journey_id: str, version: int | None = None) -> ir.JourneyIR | None:
    """The compiled journey (its current version unless `version` is given), or None."""
    if version is None:
        version = conn.execute(select(journeys.c.version).where(
            journeys.c.workspace_id == workspace_id, journeys.c.journey_id == journey_id)).scalar()
        if version is None:
            return None
    text = conn.execute(select(journey_versions.c.ir).where(
        journey_versions.c.workspace_id == workspace_id, journey_versions.c.journey_id == journey_id,
        journey_versions.c.version == version)).scalar()
    return None if text is None else ir.JourneyIR.from_json(text)


def list_journeys(db: Engine, workspace) -> list[JourneyInfo]:
    workspace_id = _ws(workspace)
    with reading(db) as conn:
        ids = conn.execute(select(journeys.c.journey_id).where(journeys.c.workspace_id == workspace_id)
                           .order_by(journeys.c.journey_id)).scalars().all()
        return [_info(conn, workspace_id, j) for j in ids]


def list_runs(db: Engine, workspace, journey_id: str, user_id: str | None = None, limit: int = 100) -> list[RunInfo]:
    workspace_id = _ws(workspace)
    q = (select(journey_runs, users.c.user_id).join(users, users.c.id == journey_runs.c.user_pk)
         .where(journey_runs.c.workspace_id == workspace_id, journey_runs.c.journey_id == journey_id)
         .order_by(journey_runs.c.id.desc()).limit(limit))
    if user_id is not None:
        q = q.where(users.c.user_id == user_id)
    with reading(db) as conn:
        rows = conn.execute(q).all()
    return [RunInfo(journey_id=r.journey_id, version=r.version, user_id=r.user_id, workflow_id=r.workflow_id,
                    current_step=r.current_step, status=r.status, exit_reason=r.exit_reason,
                    entered_at=ms_to_iso(r.entered_at), updated_at=ms_to_iso(r.updated_at),
                    converted_at=ms_to_iso(r.converted_at) if r.converted_at else None, variant=r.variant,
                    steps=r.steps) for r in rows]


# ---- lifecycle -----------------------------------------------------------------------------


def _set_triggers(conn, workspace_id: int, j: ir.JourneyIR, entries: bool) -> None:
    conn.execute(delete(journey_triggers).where(journey_triggers.c.workspace_id == workspace_id,
                                                journey_triggers.c.journey_id == j.id))
    rows: list[dict[str, Any]] = []
    if entries and isinstance(j.entry, ir.EventEntry):
        rows += [{"event_name": name, "role": "entry", "segment_id": None, "within_ms": None}
                 for name in journey_event_names(j.entry.event, j.entry.names)]
    if entries and isinstance(j.entry, ir.SegmentEntry | ir.BroadcastEntry) and (
            isinstance(j.entry, ir.SegmentEntry) or j.entry.on_join):
        rows.append({"event_name": "_segment.enter", "role": "entry", "segment_id": j.entry.segment, "within_ms": None})
    if j.settings.goal is not None:
        g = j.settings.goal  # the ingestion seam applies its filter (tidings.engine.journeys.runtime.entries)
        rows += [{"event_name": name, "role": "goal", "segment_id": None,
                  "within_ms": g.within_seconds * 1000 if g.within_seconds else None}
                 for name in journey_event_names(g.event, g.names)]
    for r in rows:
        conn.execute(insert(journey_triggers).values(workspace_id=workspace_id, journey_id=j.id, **r))


def _admits_joiners(j: ir.JourneyIR) -> bool:
    """A broadcast with `on_join`: besides its members, whoever joins the segment, through the admission queue."""
    return isinstance(j.entry, ir.BroadcastEntry) and j.entry.on_join


def _segments_of(j: ir.JourneyIR) -> set[str]:
    out = {getattr(j.entry, "segment", None)} - {None}
    out |= {c.segment for c in j.settings.exit if isinstance(c, ir.SegmentExit)}
    for n in j.nodes.values():
        if isinstance(n, ir.SplitNode):
            out |= {b.segment for b in n.branches if isinstance(b, ir.SegmentBranch)}
    return out  # type: ignore[return-value]


async def activate(client, db: Engine, workspace, journey_id: str, *, task_queue: str = "tidings",
                   admission: AdmissionInput | None = None, send_queue: str | None = None,
                   page_size: int | None = None, broadcast: dict[str, int] | None = None) -> JourneyInfo:
    """Start (or roll to the current version): triggers for event/segment entries plus the admission
    workflow; a broadcast workflow (now / at) or a Schedule (cron / every) for broadcasts. Idempotent.
    `send_queue`: the task queue of its send steps (Settings.send_task_queue; None: `task_queue`);
    `page_size`: customers per broadcast cohort (default 1,000); `broadcast`: other BroadcastInput fields
    to set (`cohorts_in_flight`, `history_bytes`)."""
    workspace_id = _ws(workspace)
    j = get_ir(db, workspace_id, journey_id)
    with writing(db) as conn:
        previous = conn.execute(select(journeys.c.active_version).where(
            journeys.c.workspace_id == workspace_id, journeys.c.journey_id == journey_id)).scalar()
        conn.execute(update(journeys).where(journeys.c.workspace_id == workspace_id, journeys.c.journey_id == journey_id)
                     .values(status="active", active_version=j.version, updated_at=now_ms()))
        _set_triggers(conn, workspace_id, j, entries=True)
        audience.set_refs(conn, workspace_id, journey_id, _segments_of(j), active=True)
    await _start_temporal_side(client, installation_id(db), workspace_id, j, task_queue, admission, send_queue,
                               page_size, broadcast, broadcast_done=_broadcast_done(db, workspace_id, j))
    if previous and previous != j.version:
        await _delete_schedule(client, schedule_id(installation_id(db), workspace_id, journey_id, previous))
    return get_journey(db, workspace_id, journey_id)


def _is_one_off(j: ir.JourneyIR) -> bool:
    b = j.entry
    return isinstance(b, ir.BroadcastEntry) and not (b.cron or b.every_seconds or localtime.local_schedule(b))


def _broadcast_done(db: Engine, workspace_id: int, j: ir.JourneyIR) -> bool:
    """A one-off broadcast of this version has admitted customers already: activating it again sends nothing
    (a second broadcast is a new version). Temporal refuses the same workflow id too while it remembers it."""
    if not _is_one_off(j):
        return False
    prefix = broadcast_workflow_id(installation_id(db), workspace_id, j.id, j.version) + "/"
    with reading(db) as conn:
        return conn.execute(select(journey_cohorts.c.cohort).where(
            journey_cohorts.c.workspace_id == workspace_id, journey_cohorts.c.journey_id == j.id,
            journey_cohorts.c.version == j.version, journey_cohorts.c.claim_key.startswith(prefix, autoescape=True))
            .limit(1)).first() is not None


async def _start_temporal_side(client, installation: str, workspace_id: int, j: ir.JourneyIR, task_queue: str,
                               admission: AdmissionInput | None, send_queue: str | None = None,
                               page_size: int | None = None, broadcast: dict[str, int] | None = None,
                               broadcast_done: bool = False) -> None:
    """What runs an active journey: the admission workflow (event and segment entries, and the joiners of an
    `on_join` broadcast), a schedule (recurring broadcasts) or one broadcast workflow (once, maybe later;
    not again when `broadcast_done`)."""
    if isinstance(j.entry, (ir.EventEntry, ir.SegmentEntry)) or _admits_joiners(j):
        inp_a = admission or AdmissionInput(workspace_id=workspace_id, journey_id=j.id)
        if send_queue and inp_a.send_queue is None:
            inp_a = msgspec.structs.replace(inp_a, send_queue=send_queue)
        await _start_admission(client, inp_a, admission_workflow_id(installation, workspace_id, j.id), task_queue)
    if not isinstance(j.entry, ir.BroadcastEntry) or broadcast_done:
        return
    b: ir.BroadcastEntry = j.entry  # type: ignore[assignment]
    inp = BroadcastInput(workspace_id=workspace_id, journey_id=j.id, version=j.version, send_queue=send_queue)
    if page_size:
        inp.page_size = page_size
    if broadcast:
        inp = msgspec.structs.replace(inp, **broadcast)
    wf_id = broadcast_workflow_id(installation, workspace_id, j.id, j.version)
    plan = _broadcast_schedule(b, inp, j.settings.ends_at_epoch)
    if plan is not None:
        schedule = Schedule(action=ScheduleActionStartWorkflow("JourneyBroadcast", inp, id=wf_id,
                                                               task_queue=task_queue), spec=plan[0], policy=plan[1])
        await _put_schedule(client, schedule_id(installation, workspace_id, j.id, j.version), schedule,
                            replace=inp.local_zones, trigger=b.refresh)
        return
    await _start_broadcast_once(client, b, inp, wf_id, task_queue)


async def _start_admission(client, inp: AdmissionInput, workflow_id: str, task_queue: str) -> None:
    try:
        await client.start_workflow("JourneyAdmission", inp, id=workflow_id, task_queue=task_queue)
    except WorkflowAlreadyStartedError:
        pass


def _broadcast_schedule(b: ir.BroadcastEntry, inp: BroadcastInput,
                        ends_at_epoch: int | None = None) -> tuple[ScheduleSpec, SchedulePolicy] | None:
    """The schedule of a recurring broadcast (None for a one-off), firing no more from `ends_at_epoch` (the
    journey's `ends_at`; a run started otherwise after it, by hand, admits nobody: journey.broadcast_page);
    marks `inp` when it fires per local zone."""
    plan = _recurring_schedule(b, inp)
    if plan is None or ends_at_epoch is None:
        return plan
    spec, policy = plan
    ends = datetime.fromtimestamp(ends_at_epoch, timezone.utc)
    return dataclasses.replace(spec, end_at=min(spec.end_at, ends) if spec.end_at else ends), policy


def _recurring_schedule(b: ir.BroadcastEntry, inp: BroadcastInput) -> tuple[ScheduleSpec, SchedulePolicy] | None:
    if (local := localtime.local_schedule(b)) is not None:
        # One UTC schedule on the grid of instants at which the local time occurs in some zone; each firing
        # admits the customers whose zone is due (engine/journeys/runtime/localtime.py). Firings may overlap: a long
        # page-through for Tokyo must not make Kathmandu's firing 15 minutes later be skipped.
        inp.local_zones = True
        bounds = localtime.schedule_bounds(local)
        return (ScheduleSpec(cron_expressions=[localtime.schedule_cron(local)],
                             start_at=bounds[0] if bounds else None, end_at=bounds[1] if bounds else None),
                SchedulePolicy(overlap=ScheduleOverlapPolicy.ALLOW_ALL))
    if b.cron:
        return (ScheduleSpec(cron_expressions=[b.cron],
                             time_zone_name=None if b.timezone in ("UTC", "customer") else b.timezone), SchedulePolicy())
    if b.every_seconds:
        return ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=b.every_seconds))]), SchedulePolicy()
    return None


async def _put_schedule(client, sched_id: str, schedule: Schedule, *, replace: bool, trigger: bool = False) -> None:
    """Create the schedule (`trigger`: its first run now, a `refresh` broadcast's members at activation)."""
    try:
        await client.create_schedule(sched_id, schedule, trigger_immediately=trigger)
    except ScheduleAlreadyRunningError:
        if replace:  # made before customer zones were honoured (a daily UTC firing): replace it
            await client.get_schedule_handle(sched_id).update(lambda _: ScheduleUpdate(schedule=schedule))


async def _start_broadcast_once(client, b: ir.BroadcastEntry, inp: BroadcastInput, wf_id: str,
                                task_queue: str) -> None:
    delay = None
    if b.at_epoch is not None:
        ahead = b.at_epoch - datetime.now(timezone.utc).timestamp()
        delay = timedelta(seconds=ahead) if ahead > 0 else None
    try:
        # REJECT_DUPLICATE: a finished broadcast is not run again under its id (which would re-run its cohorts
        # and rewrite their runs); the cohort check in activate() covers it once Temporal forgot it.
        await client.start_workflow("JourneyBroadcast", inp, id=wf_id, task_queue=task_queue, start_delay=delay,
                                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
    except WorkflowAlreadyStartedError:
        pass


RESUME_ONE_OFF_WITHIN_MS = 24 * 3600 * 1000


async def resume_activations(client, db: Engine, task_queue: str = "tidings", send_queue: str | None = None) -> int:
    """At worker start: make sure every active journey has its Temporal side. An activation commits to the
    store first; a process that died before reaching Temporal left the journey `active` with no admission
    workflow, broadcast or schedule. Starting them again is idempotent (ids are fixed; a running workflow or
    an existing schedule is kept). A one-off broadcast is resumed only while it has admitted nobody and was
    activated within the last day (Temporal's default retention: past that, an old activation must not
    fire). Returns how many journeys were checked."""
    with reading(db) as conn:
        rows = conn.execute(select(journeys.c.workspace_id, journeys.c.journey_id, journeys.c.active_version,
                                   journeys.c.updated_at).where(journeys.c.status == "active",
                                                                journeys.c.active_version.is_not(None))).all()
    for r in rows:
        j = get_ir(db, r.workspace_id, r.journey_id, r.active_version)
        done = _is_one_off(j) and (r.updated_at < now_ms() - RESUME_ONE_OFF_WITHIN_MS or
                                   _broadcast_done(db, r.workspace_id, j))
        if done and not _admits_joiners(j):
            continue
        await _start_temporal_side(client, installation_id(db), r.workspace_id, j, task_queue, None, send_queue,
                                   broadcast_done=done)
    return len(rows)


async def _delete_schedule(client, sid: str) -> None:
    try:
        await client.get_schedule_handle(sid).delete()
    except Exception:
        pass  # none to delete


async def _status(client, db: Engine, workspace, journey_id: str, status: str, *, entries: bool) -> JourneyInfo:
    workspace_id = _ws(workspace)
    j = get_ir(db, workspace_id, journey_id)
    with writing(db) as conn:
        active_version = conn.execute(select(journeys.c.active_version).where(
            journeys.c.workspace_id == workspace_id, journeys.c.journey_id == journey_id)).scalar()
        conn.execute(update(journeys).where(journeys.c.workspace_id == workspace_id, journeys.c.journey_id == journey_id)
                     .values(status=status, updated_at=now_ms()))
        if status == "stopped":
            conn.execute(delete(journey_triggers).where(journey_triggers.c.workspace_id == workspace_id,
                                                        journey_triggers.c.journey_id == journey_id))
            conn.execute(update(journey_runs).where(journey_runs.c.workspace_id == workspace_id,
                                                    journey_runs.c.journey_id == journey_id,
                                                    journey_runs.c.status == "active")
                         .values(status="exited", exit_reason="journey stopped", updated_at=now_ms()))
            # Messages still being retried: their cohort workflow is cancelled below while it sleeps on
            # the next attempt, so nothing would bring them back. Failed now, with the reason.
            conn.execute(update(messages).where(messages.c.workspace_id == workspace_id,
                                                messages.c.journey_id == journey_id, messages.c.status == "retrying")
                         .values(status="failed", error="not delivered: journey stopped", next_attempt_at=None,
                                 content=None, updated_at=now_ms()))
            audience.set_refs(conn, workspace_id, journey_id, _segments_of(j), active=False)
        else:
            _set_triggers(conn, workspace_id, get_ir(db, workspace_id, journey_id, active_version) if active_version else j, entries)
    if active_version:
        handle = client.get_schedule_handle(schedule_id(installation_id(db), workspace_id, journey_id, active_version))
        try:
            if status == "paused":
                await handle.pause()
            elif status == "active":
                await handle.unpause()
            else:
                await handle.delete()
        except Exception:
            pass  # not a scheduled journey
    return get_journey(db, workspace_id, journey_id)


async def pause(client, db: Engine, workspace, journey_id: str) -> JourneyInfo:
    """No one enters and no message is sent while paused; customers stay where they are."""
    return await _status(client, db, workspace, journey_id, "paused", entries=False)


async def resume(client, db: Engine, workspace, journey_id: str) -> JourneyInfo:
    return await _status(client, db, workspace, journey_id, "active", entries=True)


async def stop(client, db: Engine, workspace, journey_id: str) -> JourneyInfo:
    """Ends the journey: every run still in it exits (cohorts leave at their next step) and nobody enters."""
    info = await _status(client, db, workspace, journey_id, "stopped", entries=False)
    try:
        async for wf in client.list_workflows(
                f"WorkflowId STARTS_WITH '{scoped(installation_id(db), f'journey/{_ws(workspace)}/{journey_id}/')}' "
                "AND ExecutionStatus = 'Running'"):
            await client.get_workflow_handle(wf.id).cancel()
    except Exception:
        pass  # visibility may lag; cohorts still leave at their next step
    return info


async def delete_journey(client, db: Engine, workspace, journey_id: str) -> None:
    """Stops the journey when it ever ran (every active run exits, its workflows are cancelled), then removes it
    with its versions, runs, cohorts, queued entries, triggers and tags. Its messages and their events stay."""
    info = get_journey(db, workspace, journey_id)
    if info.status != "draft":
        await stop(client, db, workspace, journey_id)
    workspace_id = _ws(workspace)
    with writing(db) as conn:
        # the step tally last: deleting the runs writes their counts out of it (to zero) through its triggers
        for table in (journey_entries, journey_triggers, journey_cohorts, journey_runs, journey_versions, journeys,
                      journey_step_tallies):
            conn.execute(delete(table).where(table.c.workspace_id == workspace_id, table.c.journey_id == journey_id))
        for resource in (f"journeys/{journey_id}", f"campaigns/{journey_id}"):  # a Pinpoint campaign is a journey
            drop_tags(conn, workspace_id, resource)


async def stop_all(client, db: Engine, workspace) -> list[str]:
    """Stop every journey of the workspace that is active or paused (as `stop` does each: runs exit, nobody
    enters, schedules deleted, workflows cancelled); returns their ids. Used before a workspace is deleted."""
    workspace_id = _ws(workspace)
    with reading(db) as conn:  # by id, not through visibility (which may not list a cohort started just now)
        cohorts = conn.execute(select(journey_cohorts.c.workflow_id).distinct().join(journey_runs, and_(
            journey_runs.c.workspace_id == journey_cohorts.c.workspace_id,
            journey_runs.c.journey_id == journey_cohorts.c.journey_id,
            journey_runs.c.cohort == journey_cohorts.c.cohort)).where(
            journey_cohorts.c.workspace_id == workspace_id, journey_runs.c.status == "active")).scalars().all()
    stopped = []
    for info in list_journeys(db, workspace):
        if info.status in ("active", "paused"):
            await stop(client, db, workspace, info.id)
            stopped.append(info.id)
    for workflow_id in cohorts:
        try:
            await client.get_workflow_handle(workflow_id).cancel()
        except Exception:
            pass  # it had ended
    return stopped


async def enter(client, db: Engine, workspace, journey_id: str, user_pks: list[int], *, task_queue: str = "tidings",
                entry: dict | None = None, version: int | None = None, cohort_options: dict | None = None,
                claim_key: str | None = None):
    """Put these customers into the journey now, as one cohort (entry limits apply); returns the workflow
    handle, or None when nobody was admitted. Used by tests and the journey test fixture."""
    import uuid

    from tidings.engine.journeys.runtime.activities import JourneyActivities
    from tidings.engine.journeys.runtime.contracts import CohortInput, CohortResult, Group

    workspace_id = _ws(workspace)
    j = get_ir(db, workspace_id, journey_id, version)
    acts = JourneyActivities(db)
    with writing(db) as conn:
        adm = acts._admit_rows(conn, workspace_id, journey_id, j.version, claim_key or f"enter/{uuid.uuid4().hex}",
                               [(pk, entry or {}) for pk in user_pks])
    if not adm.members:
        return None
    inp = CohortInput(workspace_id=workspace_id, ir=adm.ir, cohort=adm.cohort,
                      groups=[Group(node=adm.ir.start, members=adm.members)], **(cohort_options or {}))
    return await client.start_workflow("JourneyCohort", inp, id=adm.workflow_id, task_queue=task_queue,
                                       result_type=CohortResult)


class VersionSource(msgspec.Struct, frozen=True):
    version: int
    yaml: str
    created_at: str


def list_versions(db: Engine, workspace, journey_id: str) -> list[VersionSource]:
    """Every stored version of the journey, oldest first, with the YAML it was put as (NotFound when none)."""
    workspace_id = _ws(workspace)
    with reading(db) as conn:
        rows = conn.execute(select(journey_versions.c.version, journey_versions.c.yaml, journey_versions.c.created_at)
                            .where(journey_versions.c.workspace_id == workspace_id,
                                   journey_versions.c.journey_id == journey_id)
                            .order_by(journey_versions.c.version)).all()
    if not rows:
        raise NotFound(f"no journey {journey_id!r}")
    return [VersionSource(r.version, r.yaml, ms_to_iso(r.created_at)) for r in rows]


async def withdraw_broadcast(client, db: Engine, workspace, journey_id: str, version: int) -> bool:
    """End a one-off broadcast of `version` that has not admitted anybody yet (one waiting for its `at`), so a
    newer version replaces it instead of running beside it. True when one was withdrawn."""
    workspace_id = _ws(workspace)
    with reading(db) as conn:
        admitted = conn.execute(select(journey_cohorts.c.cohort).where(
            journey_cohorts.c.workspace_id == workspace_id, journey_cohorts.c.journey_id == journey_id,
            journey_cohorts.c.version == version).limit(1)).first()
    if admitted is not None:
        return False
    try:
        await client.get_workflow_handle(broadcast_workflow_id(installation_id(db), workspace_id, journey_id,
                                                               version)).terminate("replaced by a newer version")
    except Exception:
        return False  # none waiting (it ran, or there was none)
    return True
