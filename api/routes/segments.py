"""Segments: CRUD with versions, members, export, imports, import jobs."""
from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import Parameter
from litestar.response import Stream
from sqlalchemy import Engine

from tidings.api.params import CURSOR, LIMIT
from tidings.engine.platform.errors import InvalidInput
from tidings.engine.segments import service, uploads
from tidings.engine.segments.service import SegmentIn, SegmentOut, SegmentPatch, VersionOut
from tidings.engine.customers.schemas import Deleted
from tidings.engine.workspaces.service import WorkspaceRef



class DuplicateIn(msgspec.Struct, forbid_unknown_fields=True):
    id: str | None = None
    name: str | None = None


class SegmentController(Controller):
    path = "/segments"

    @post("/", status_code=201, sync_to_thread=True)
    def create(self, db: Engine, workspace: WorkspaceRef, data: SegmentIn) -> SegmentOut:
        return service.create_segment(db, workspace, data)

    @get("/", sync_to_thread=True)
    def list_(self, db: Engine, workspace: WorkspaceRef) -> dict[str, Any]:
        return {"items": service.list_segments(db, workspace)}

    @get("/{segment_id:str}", sync_to_thread=True)
    def get_(self, db: Engine, workspace: WorkspaceRef, segment_id: str) -> SegmentOut:
        return service.get_segment(db, workspace, segment_id)

    @put("/{segment_id:str}", sync_to_thread=True)
    def update(self, db: Engine, workspace: WorkspaceRef, segment_id: str, data: SegmentPatch) -> SegmentOut:
        return service.update_segment(db, workspace, segment_id, data)

    @get("/{segment_id:str}/versions", sync_to_thread=True)
    def versions(self, db: Engine, workspace: WorkspaceRef, segment_id: str) -> dict[str, list[VersionOut]]:
        return {"items": service.list_versions(db, workspace, segment_id)}

    @post("/{segment_id:str}/duplicate", status_code=201, sync_to_thread=True)
    def duplicate(self, db: Engine, workspace: WorkspaceRef, segment_id: str, data: DuplicateIn | None = None) -> SegmentOut:
        data = data or DuplicateIn()
        return service.duplicate_segment(db, workspace, segment_id, data.id, data.name)

    @delete("/{segment_id:str}", status_code=200, sync_to_thread=True)
    def delete_(self, db: Engine, workspace: WorkspaceRef, segment_id: str) -> Deleted:
        service.delete_segment(db, workspace, segment_id)
        return Deleted(deleted=segment_id)

    @get("/{segment_id:str}/members", sync_to_thread=True)
    def members(self, db: Engine, workspace: WorkspaceRef, segment_id: str, cursor: str | None = CURSOR,
                limit: int = LIMIT) -> dict[str, Any]:
        return service.members_page(db, workspace, segment_id, cursor, limit)

    @get("/{segment_id:str}/export", sync_to_thread=True)
    def export(self, db: Engine, workspace: WorkspaceRef, segment_id: str,
               format: str = Parameter(default="ndjson", schema_extra={"enum": ["ndjson", "csv"]})) -> Stream:
        if format not in ("csv", "ndjson"):
            raise InvalidInput("format is csv or ndjson", field="format")
        rows = service.export_rows(db, workspace, segment_id)
        first = next(rows, None)  # raises NotFound before the response starts

        def body():
            from itertools import chain
            from tidings.engine.segments.imports import csv_lines

            items = chain([first], rows) if first is not None else iter(())
            if format == "ndjson":
                for r in items:
                    yield msgspec.json.encode(r) + b"\n"
            else:
                yield from csv_lines(items)

        media = "application/x-ndjson" if format == "ndjson" else "text/csv"
        return Stream(body(), media_type=media,
                      headers={"Content-Disposition": f'attachment; filename="{segment_id}.{format}"'})


class ImportController(Controller):
    path = "/"

    @post("/segments/import", status_code=201)
    async def import_(self, request: Request, db: Engine, workspace: WorkspaceRef, name: str,
                      format: str = Parameter(default="pinpoint", schema_extra={"enum": ["pinpoint", "plain"]}),
                      id: str | None = None, async_: bool = Parameter(query="async", default=False)) -> Response:
        outcome = await uploads.import_stream(db, workspace, request.stream(), request.app.state.imports_dir, format=format,
                                              name=name, segment_id=id, run_as_job=async_)
        return Response(outcome.body, status_code=202 if outcome.queued else 201)

    @get("/import-jobs/{job_id:str}", sync_to_thread=True)
    def job(self, db: Engine, workspace: WorkspaceRef, job_id: str) -> dict[str, Any]:
        from tidings.engine.segments import imports

        return imports.get_job(db, workspace, job_id)
