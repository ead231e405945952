"""A segment import arriving as a stream of bytes: spooled to the imports folder, then imported at once or
handed to a background job (large files, or when the caller asks for one).

The spool file lives in the imports folder, locked while this process works on it: if the process dies, its
next start resumes the job or deletes the file (engine/segments/jobs.py).
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
from sqlalchemy import Engine

from tidings.engine.platform.errors import InvalidInput
from tidings.engine.segments import imports, jobs
from tidings.engine.workspaces.service import WorkspaceRef

FORMATS = ("pinpoint", "plain")


class ImportOutcome(msgspec.Struct):
    """`body` is the finished import (`queued` false) or the job that will do it (`queued` true)."""

    body: dict[str, Any]
    queued: bool


async def import_stream(db: Engine, workspace: WorkspaceRef, chunks: AsyncIterator[bytes], imports_dir: Path, *,
                        format: str, name: str, segment_id: str | None, run_as_job: bool) -> ImportOutcome:
    if format not in FORMATS:
        raise InvalidInput("format is pinpoint or plain", field="format")
    upload = await anyio.to_thread.run_sync(jobs.Upload.new, imports_dir)
    lines = size = 0
    try:
        # past the body-size limit the stream raises (413) mid-way: the upload goes with it
        async for chunk in chunks:
            lines += chunk.count(b"\n")
            size += len(chunk)
            upload.file.write(chunk)
        if not size:  # refused now, as a synchronous import would be, rather than as a failed job
            raise InvalidInput("the file is empty", field="file")
        if run_as_job or lines > imports.ASYNC_ROWS:
            job = await anyio.to_thread.run_sync(jobs.start_job, db, workspace, upload, format, name, segment_id)
            return ImportOutcome(body=job, queued=True)  # the job owns the upload from here
    except BaseException:
        upload.discard()
        raise

    def run() -> dict[str, Any]:
        try:
            upload.file.flush()
            with open(upload.path, "rb") as f:
                return imports.run_import(db, workspace, f, format, name, segment_id)
        finally:
            upload.discard()

    result = await anyio.to_thread.run_sync(run)
    return ImportOutcome(body={**result, "status": "succeeded"}, queued=False)
