"""Pinpoint import and export jobs over the native import (tidings.engine.segments.imports) and export
(tidings.engine.segments.service.export_rows), run in the background as Pinpoint runs them.

A job is recorded `CREATED` and answered at once; a thread of the API process moves it to `PROCESSING`, then
to `COMPLETED` or `FAILED` (with its Failures). Jobs survive the death of that process the way native import
jobs do (tidings.engine.segments.jobs): the process holds an exclusive `flock` on `pinpoint-<id>.upload` in the
imports folder for as long as it works on the job (the file is created, locked, before the job's row, and is
the job's spool: the source is copied there), so at the next start `recover` knows a job whose file nobody
holds is abandoned and runs it again from the start, in that process.

Run again, a job is applied once: an import writes everything (customers, endpoints, the segment) in one
transaction, and that transaction also moves the job from CREATED/PROCESSING to COMPLETED, refusing (and so
rolling back) when the job is no longer pending; an import cut short therefore wrote nothing, and two runs
cannot both commit. A file with a bad row writes nothing either (the import's first pass checks every row).
An export writes `<job id>.json` under its prefix (a second run writes the same object again) and then marks
the job COMPLETED.
"""
from __future__ import annotations

import json
import logging
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.db import reading, writing
from tidings.engine.platform.errors import InvalidInput, NotFound, TidingsError
from tidings.engine.segments import imports, jobs
from tidings.engine.segments.object_store import parse_location, read_into, write_under
from tidings.engine.segments.service import export_rows, get_segment
from tidings.engine.segments.tables import pinpoint_jobs
from tidings.engine.workspaces.service import WorkspaceRef
from tidings.engine.workspaces.tables import workspaces

log = logging.getLogger("tidings.pinpoint.jobs")

MAX_FAILURES = 100
PENDING = ("CREATED", "PROCESSING")
PREFIX = "pinpoint-"  # the job's file in the imports folder: pinpoint-<job id>.upload


class NoLongerPending(Exception):
    """The job finished (another run of it) or was deleted while this run worked: its writes roll back."""


def _failures(exc: TidingsError) -> list[str]:
    rows = [f"row {d.get('row')}: {d.get('field')}: {d.get('message')}" if d.get("field") else
            f"row {d.get('row')}: {d.get('message')}" for d in (exc.details or [])]
    return ([exc.message] + rows)[:MAX_FAILURES]


def _finish(conn: Connection, job_id: str, **values: Any) -> None:
    """Move a pending job to its outcome, in `conn`'s transaction; NoLongerPending when it is not pending."""
    n = conn.execute(update(pinpoint_jobs).where(pinpoint_jobs.c.id == job_id, pinpoint_jobs.c.status.in_(PENDING))
                     .values(completed_at=now_ms(), **values)).rowcount
    if n != 1:
        raise NoLongerPending(job_id)


def _create(db: Engine, workspace: WorkspaceRef, folder: Path, job: dict[str, Any]) -> dict[str, Any]:
    """Record the job, start it, and return it as recorded (CREATED: the thread may have moved it on since)."""
    upload = jobs.Upload.new(folder)  # held from before the row exists: a live job is never seen unheld
    row = {**job, "workspace_id": workspace.id, "status": "CREATED", "failures": [], "total_failures": 0,
           "total_processed": 0, "created_at": now_ms(), "completed_at": 0}
    try:
        upload.rename(f"{PREFIX}{job['id']}")
        with writing(db) as conn:
            conn.execute(insert(pinpoint_jobs).values(**row))
    except BaseException:
        upload.discard()
        raise
    _start(db, job["id"], upload)
    return row


def import_job(db: Engine, workspace: WorkspaceRef, folder: Path, definition: dict[str, Any]) -> dict[str, Any]:
    """Record an import of the file `definition["S3Url"]` names into a new static segment named
    `definition["SegmentName"]`, and start it in the background; returns the job as created."""
    parse_location(definition["S3Url"], "ImportJobRequest.S3Url")  # refused now, not as a failed job
    return _create(db, workspace, folder, {"id": uuid.uuid4().hex, "type": "IMPORT", "segment_id": "",
                                    "definition": definition})


def export_job(db: Engine, workspace: WorkspaceRef, folder: Path, definition: dict[str, Any]) -> dict[str, Any]:
    """Record an export of the segment's endpoints, one JSON object a line, as `<job id>.json` under
    `definition["S3UrlPrefix"]`, and start it in the background; returns the job as created."""
    parse_location(definition["S3UrlPrefix"], "ExportJobRequest.S3UrlPrefix")
    segment_id = definition["SegmentId"]
    version = definition.get("SegmentVersion")
    current = get_segment(db, workspace, segment_id).version
    if version is not None and version != current:
        raise InvalidInput(f"ExportJobRequest.SegmentVersion: segment {segment_id!r} is at version {current}; "
                           "only its current version can be exported", field="ExportJobRequest.SegmentVersion")
    return _create(db, workspace, folder, {"id": uuid.uuid4().hex, "type": "EXPORT", "segment_id": segment_id,
                                    "definition": {**definition, "SegmentVersion": current}})


def _start(db: Engine, job_id: str, upload: jobs.Upload) -> None:
    name = f"{PREFIX}{job_id}"

    def work() -> None:
        try:
            _run(db, job_id, upload)
        finally:
            upload.discard()
            imports._progress.pop(job_id, None)
            jobs._running.pop(name, None)
    jobs.in_background(name, work)


def _run(db: Engine, job_id: str, upload: jobs.Upload) -> None:
    with writing(db) as conn:
        row = conn.execute(select(pinpoint_jobs, workspaces.c.name.label("workspace")).join(
            workspaces, workspaces.c.id == pinpoint_jobs.c.workspace_id).where(
            pinpoint_jobs.c.id == job_id, pinpoint_jobs.c.status.in_(PENDING))).mappings().first()
        if row is None:
            return  # finished by another run, or deleted with its workspace
        conn.execute(update(pinpoint_jobs).where(pinpoint_jobs.c.id == job_id)
                     .values(status="PROCESSING", total_processed=0))
    workspace = WorkspaceRef(row["workspace_id"], row["workspace"])
    definition = row["definition"]
    try:
        if row["type"] == "IMPORT":
            _import(db, workspace, job_id, definition, upload)
        else:
            _export(db, workspace, job_id, definition)
        return
    except NoLongerPending:
        log.info("pinpoint job %s finished elsewhere (or was deleted); this run wrote nothing", job_id)
        return
    except TidingsError as exc:
        failures, total = _failures(exc), max(len(exc.details or []), 1)
    except Exception as exc:  # reported on the job, not lost in a thread
        log.exception("pinpoint job %s failed", job_id)
        failures, total = [f"internal error: {exc}; see the server log"], 1
    try:
        with writing(db) as conn:
            _finish(conn, job_id, status="FAILED", failures=failures, total_failures=total)
    except NoLongerPending:
        pass


def _import(db: Engine, workspace: WorkspaceRef, job_id: str, definition: dict[str, Any], upload: jobs.Upload) -> None:
    source = parse_location(definition["S3Url"], "ImportJobRequest.S3Url")
    upload.file.seek(0)
    upload.file.truncate()
    read_into(source, upload.file)
    upload.file.flush()

    def completed(conn: Connection, result: dict[str, Any]) -> None:
        _finish(conn, job_id, status="COMPLETED", segment_id=result["segment_id"],
                definition={**definition, "SegmentId": result["segment_id"]}, total_processed=result["rows"])
    with open(upload.path, "rb") as f:
        imports.run_import(db, workspace, f, "pinpoint", definition["SegmentName"], job_id=job_id,
                           before_commit=completed)


def _pinpoint_endpoints(rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Members' endpoints in Pinpoint's endpoint import format (CreateImportJob reads them back)."""
    for row in rows:
        user_attributes = {k: [str(x) for x in v] if isinstance(v, list) else
                           [v if isinstance(v, str) else json.dumps(v)] for k, v in row["attributes"].items()}
        for e in row["endpoints"]:
            yield {"Id": e["endpoint_id"], "ChannelType": e["channel"], "Address": e["address"],
                   "OptOut": "ALL" if e["opt_out"] else "NONE",
                   "User": {"UserId": row["user_id"], "UserAttributes": user_attributes}}


def _export(db: Engine, workspace: WorkspaceRef, job_id: str, definition: dict[str, Any]) -> None:
    target = parse_location(definition["S3UrlPrefix"], "ExportJobRequest.S3UrlPrefix")
    count = 0
    with tempfile.TemporaryFile() as f:
        for endpoint in _pinpoint_endpoints(export_rows(db, workspace, definition["SegmentId"])):
            f.write(json.dumps(endpoint, separators=(",", ":")).encode() + b"\n")
            count += 1
            if count % 1000 == 0:
                imports._progress[job_id] = count
        f.seek(0)
        write_under(target, f"{job_id}.json", f)
    with writing(db) as conn:
        _finish(conn, job_id, status="COMPLETED", total_processed=count)


def recover(db: Engine, folder: Path) -> int:
    """Run at API start (before tidings.engine.segments.jobs.recover): start again every pending job whose file
    in `folder` no live process holds. Returns how many were started."""
    with reading(db) as conn:
        pending = list(conn.execute(select(pinpoint_jobs.c.id).where(pinpoint_jobs.c.status.in_(PENDING))).scalars())
    started = 0
    for job_id in pending:
        if f"{PREFIX}{job_id}" in jobs._running:
            continue
        path = folder / f"{PREFIX}{job_id}{jobs.UPLOAD}"
        upload = jobs.claim(path)
        if upload is None:
            if path.exists():
                continue  # a live process is running it
            upload = jobs.Upload.new(folder)
            upload.rename(f"{PREFIX}{job_id}")
        log.warning("pinpoint job %s was interrupted: running it again from the start", job_id)
        _start(db, job_id, upload)
        started += 1
    return started


def get_job(db: Engine, workspace: WorkspaceRef, kind: str, job_id: str) -> dict[str, Any]:
    with reading(db) as conn:
        row = conn.execute(select(pinpoint_jobs).where(
            pinpoint_jobs.c.workspace_id == workspace.id, pinpoint_jobs.c.type == kind,
            pinpoint_jobs.c.id == job_id)).mappings().first()
    if row is None:
        raise NotFound(f"no {kind.lower()} job {job_id!r}", field="JobId")
    return _with_progress(dict(row))


def _with_progress(job: dict[str, Any]) -> dict[str, Any]:
    if job["status"] in PENDING:  # rows checked or written so far, by this process
        job["total_processed"] = imports._progress.get(job["id"], job["total_processed"])
    return job


def list_jobs(db: Engine, workspace: WorkspaceRef, kind: str, segment_id: str | None = None) -> list[dict[str, Any]]:
    query = select(pinpoint_jobs).where(pinpoint_jobs.c.workspace_id == workspace.id, pinpoint_jobs.c.type == kind)
    if segment_id is not None:
        get_segment(db, workspace, segment_id)  # NotFound for a segment the workspace does not have
        query = query.where(pinpoint_jobs.c.segment_id == segment_id)
    with reading(db) as conn:
        return [_with_progress(dict(r)) for r in conn.execute(query).mappings()]
