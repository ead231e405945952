"""Pinpoint import and export jobs over the native import (tidings.engine.segments.imports) and export
(tidings.engine.segments.service.export_rows). A job runs to its end within the request that creates it and is
recorded once, with its outcome: an import's row is written in the transaction that imports (so a COMPLETED
job's customers and segment exist, and a FAILED one wrote nothing but its own row, listing the bad rows)."""
from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.db import reading, writing
from tidings.engine.platform.errors import InvalidInput, NotFound, TidingsError
from tidings.engine.segments.imports import run_import
from tidings.engine.segments.object_store import Location, read_into, write_under
from tidings.engine.segments.service import export_rows, get_segment
from tidings.engine.segments.tables import pinpoint_jobs
from tidings.engine.workspaces.service import WorkspaceRef

MAX_FAILURES = 100


def _record(conn: Connection, ws: WorkspaceRef, job: dict[str, Any]) -> None:
    row = {"failures": [], "total_failures": 0, "total_processed": 0, **job}
    conn.execute(insert(pinpoint_jobs).values(workspace_id=ws.id, completed_at=now_ms(), **row))


def _failures(exc: TidingsError) -> list[str]:
    rows = [f"row {d.get('row')}: {d.get('field')}: {d.get('message')}" if d.get("field") else
            f"row {d.get('row')}: {d.get('message')}" for d in (exc.details or [])]
    return ([exc.message] + rows)[:MAX_FAILURES]


def import_job(db: Engine, ws: WorkspaceRef, source: Location, definition: dict[str, Any],
               segment_name: str) -> str:
    """Import the file at `source` into a new static segment named `segment_name`; returns the job id."""
    job = {"id": uuid.uuid4().hex, "type": "IMPORT", "definition": definition, "created_at": now_ms()}
    with tempfile.TemporaryFile() as f:
        read_into(source, f)
        f.seek(0)

        def completed(conn: Connection, result: dict[str, Any]) -> None:
            _record(conn, ws, {**job, "status": "COMPLETED", "segment_id": result["segment_id"],
                               "definition": {**definition, "SegmentId": result["segment_id"]},
                               "total_processed": result["rows"]})
        try:
            run_import(db, ws, f, "pinpoint", segment_name, before_commit=completed)
        except TidingsError as exc:
            failures = _failures(exc)
            with writing(db) as conn:
                _record(conn, ws, {**job, "status": "FAILED", "segment_id": "", "failures": failures,
                                   "total_failures": max(len(exc.details or []), 1)})
    return str(job["id"])


def _pinpoint_endpoints(rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Members' endpoints in Pinpoint's endpoint import format (CreateImportJob reads them back)."""
    for row in rows:
        user_attributes = {k: [str(x) for x in v] if isinstance(v, list) else
                           [v if isinstance(v, str) else json.dumps(v)] for k, v in row["attributes"].items()}
        for e in row["endpoints"]:
            yield {"Id": e["endpoint_id"], "ChannelType": e["channel"], "Address": e["address"],
                   "OptOut": "ALL" if e["opt_out"] else "NONE",
                   "User": {"UserId": row["user_id"], "UserAttributes": user_attributes}}


def export_job(db: Engine, ws: WorkspaceRef, target: Location, definition: dict[str, Any]) -> str:
    """Write the segment's endpoints, one JSON object a line, as `<job id>.json` under `target`."""
    segment_id = definition["SegmentId"]
    version = definition.get("SegmentVersion")
    current = get_segment(db, ws, segment_id).version
    if version is not None and version != current:
        raise InvalidInput(f"ExportJobRequest.SegmentVersion: segment {segment_id!r} is at version {current}; "
                           "only its current version can be exported", field="ExportJobRequest.SegmentVersion")
    job = {"id": uuid.uuid4().hex, "type": "EXPORT", "segment_id": segment_id, "created_at": now_ms(),
           "definition": {**definition, "SegmentVersion": current}}
    count = 0
    with tempfile.TemporaryFile() as f:
        for endpoint in _pinpoint_endpoints(export_rows(db, ws, segment_id)):
            f.write(json.dumps(endpoint, separators=(",", ":")).encode() + b"\n")
            count += 1
        f.seek(0)
        write_under(target, f"{job['id']}.json", f)
    with writing(db) as conn:
        _record(conn, ws, {**job, "status": "COMPLETED", "total_processed": count})
    return job["id"]


def get_job(db: Engine, ws: WorkspaceRef, kind: str, job_id: str) -> dict[str, Any]:
    with reading(db) as conn:
        row = conn.execute(select(pinpoint_jobs).where(
            pinpoint_jobs.c.workspace_id == ws.id, pinpoint_jobs.c.type == kind,
            pinpoint_jobs.c.id == job_id)).mappings().first()
    if row is None:
        raise NotFound(f"no {kind.lower()} job {job_id!r}", field="JobId")
    return dict(row)


def list_jobs(db: Engine, ws: WorkspaceRef, kind: str, segment_id: str | None = None) -> list[dict[str, Any]]:
    query = select(pinpoint_jobs).where(pinpoint_jobs.c.workspace_id == ws.id, pinpoint_jobs.c.type == kind)
    if segment_id is not None:
        get_segment(db, ws, segment_id)  # NotFound for a segment the workspace does not have
        query = query.where(pinpoint_jobs.c.segment_id == segment_id)
    with reading(db) as conn:
        return [dict(r) for r in conn.execute(query).mappings()]
