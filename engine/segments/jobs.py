"""Import jobs that survive the death of the API process that ran them.

An upload is written to the imports folder (`TIDINGS_IMPORTS_DIR`, default `$TIDINGS_HOME/imports`) as
`<name>.upload`, and the process working on it holds an exclusive `flock` on it for as long as it does.
The kernel drops that lock when the process dies, however it dies, so on the next start of the API
(`recover`) a file nobody holds is known to be abandoned:
- the upload of a job still `running` is imported again from the start, in this process. An import
  writes everything in one transaction, and the job row is marked `succeeded` inside that same
  transaction, so an import cut short wrote nothing and running it again cannot apply it twice;
- a job still `running` whose upload is gone is marked `failed` with a reason (upload it again);
- any other unheld file (a synchronous import cut short, a finished job's leftover) is deleted.
API processes that share a database must share this folder (one host, or a shared volume with flock).
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable

import msgspec
from sqlalchemy import Connection, Engine, insert, select, update

from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.errors import TidingsError
from tidings.engine.platform.db import reading, writing
from tidings.engine.segments.tables import import_jobs
from tidings.engine.workspaces.service import WorkspaceRef

log = logging.getLogger("tidings.imports")

UPLOAD = ".upload"
NEW = ".new"
PARAMS = ".json"  # beside a job's upload: what the import needs to run again (format, name, workspace)
_running: dict[str, threading.Thread] = {}


class JobParams(msgspec.Struct):
    workspace_id: int
    workspace: str
    format: str
    name: str
    segment_id: str | None


def imports_dir(home: Path | None = None) -> Path:
    """TIDINGS_IMPORTS_DIR, else `imports` in the state folder (`home`: the process's settings.home)."""
    explicit = os.environ.get("TIDINGS_IMPORTS_DIR")
    home = home if home is not None else Path(os.environ.get("TIDINGS_HOME", ".tidings"))
    base = (Path(explicit) if explicit else home / "imports").absolute()
    base.mkdir(parents=True, exist_ok=True)
    return base


def _lock(f: IO[Any]) -> bool:
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@dataclass
class Upload:
    """An uploaded file in the imports folder, locked by this process while it exists."""

    path: Path
    file: IO[bytes]  # open for writing; holds the lock

    @classmethod
    def new(cls, folder: Path) -> "Upload":
        path = folder / f"sync-{uuid.uuid4().hex}{UPLOAD}"
        # Created under a name `recover` leaves alone, locked, then renamed: never seen unheld.
        fresh = path.with_suffix(NEW)
        f = open(fresh, "xb")
        _lock(f)
        os.rename(fresh, path)
        return cls(path, f)

    def rename(self, name: str) -> None:
        """Give the upload a job's name (the lock stays with the open file)."""
        target = self.path.with_name(f"{name}{UPLOAD}")
        os.rename(self.path, target)
        self.path = target

    def discard(self) -> None:
        """Delete the file, then let go of it (in that order: no one may see it unheld)."""
        for p in (self.path, self.path.with_suffix(PARAMS)):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        self.file.close()


def start_job(db: Engine, workspace: WorkspaceRef, upload: Upload, fmt: str, name: str,
              segment_id: str | None) -> dict[str, Any]:
    """Record a job for an upload written by this process and import it in a thread."""
    from tidings.engine.segments.imports import get_job

    job_id = uuid.uuid4().hex
    upload.file.flush()
    upload.rename(job_id)
    params = JobParams(workspace_id=workspace.id, workspace=workspace.name, format=fmt, name=name, segment_id=segment_id)
    upload.path.with_suffix(PARAMS).write_bytes(msgspec.json.encode(params))
    with writing(db) as conn:
        conn.execute(insert(import_jobs).values(id=job_id, workspace_id=workspace.id, segment_id=segment_id or "",
                                                status="running", rows_done=0, errors=[], created_at=now_ms()))
    _spawn(db, job_id, upload, params)
    return get_job(db, workspace, job_id)


def _spawn(db: Engine, job_id: str, upload: Upload, params: JobParams) -> None:
    in_background(job_id, lambda: _work(db, job_id, upload, params))


def in_background(name: str, work: Callable[[], None]) -> None:
    """Run `work` in a thread that `drain` waits for and `recover` leaves alone: `name` is the stem of the
    file in the imports folder that the work holds (`<name>.upload`). `work` removes itself from `_running`."""
    thread = threading.Thread(target=work, name=f"import-{name}", daemon=True)
    _running[name] = thread
    thread.start()


def _mark_succeeded(job_id: str):
    def mark(conn: Connection, result: dict[str, Any]) -> None:
        conn.execute(update(import_jobs).where(import_jobs.c.id == job_id).values(
            status="succeeded", rows_done=result["rows"], rows_total=result["rows"],
            segment_id=result["segment_id"], finished_at=now_ms()))
    return mark


def _work(db: Engine, job_id: str, upload: Upload, params: JobParams) -> None:
    from tidings.engine.segments import imports

    workspace = WorkspaceRef(id=params.workspace_id, name=params.workspace)
    failed: dict[str, Any] | None = None
    try:
        with open(upload.path, "rb") as f:
            imports.run_import(db, workspace, f, params.format, params.name, params.segment_id, job_id,
                               before_commit=_mark_succeeded(job_id))
    except TidingsError as exc:
        failed = {"errors": exc.details, "message": exc.message, "rows_done": imports._progress.get(job_id, 0)}
    except Exception as exc:  # reported on the job, not lost in a thread
        log.exception("import job %s failed", job_id)
        failed = {"message": f"internal error: {exc}", "rows_done": 0}
    if failed is not None:
        _fail(db, job_id, **failed)
    upload.discard()
    imports._progress.pop(job_id, None)
    _running.pop(job_id, None)


def _fail(db: Engine, job_id: str, **values: Any) -> None:
    with writing(db) as conn:
        conn.execute(update(import_jobs).where(import_jobs.c.id == job_id, import_jobs.c.status == "running")
                     .values(status="failed", finished_at=now_ms(), **values))


def claim(path: Path) -> Upload | None:
    """The upload at `path` if no live process holds it (then this one does), else None."""
    try:
        f = open(path, "r+b")
    except FileNotFoundError:
        return None
    if not _lock(f):
        f.close()
        return None
    if not path.exists():  # discarded between our open and our lock
        f.close()
        return None
    return Upload(path, f)


INTERRUPTED = ("the import was interrupted (the API process stopped) and its upload was not kept; "
               "nothing was written: upload the file again")


def recover(db: Engine, folder: Path) -> dict[str, int]:
    """Run at API start: resume the jobs a dead process left `running`, fail those that cannot be,
    and delete abandoned uploads in `folder` (imports_dir()). Returns counts (resumed, failed, removed)."""
    counts = {"resumed": 0, "failed": 0, "removed": 0}
    with reading(db) as conn:
        running = list(conn.execute(select(import_jobs.c.id).where(import_jobs.c.status == "running")).scalars())
    for job_id in running:
        if job_id in _running:
            continue
        path = folder / f"{job_id}{UPLOAD}"
        upload = claim(path)
        if upload is None and path.exists():
            continue  # a live process is importing it
        params = None
        if upload is not None:
            try:
                params = msgspec.json.decode(path.with_suffix(PARAMS).read_bytes(), type=JobParams)
            except (OSError, msgspec.DecodeError):
                params = None
        if params is None:
            _fail(db, job_id, message=INTERRUPTED)
            if upload is not None:
                upload.discard()
            log.warning("import job %s was interrupted and cannot be resumed: marked failed", job_id)
            counts["failed"] += 1
            continue
        with writing(db) as conn:  # progress starts again from zero
            conn.execute(update(import_jobs).where(import_jobs.c.id == job_id).values(rows_done=0))
        log.warning("import job %s was interrupted: importing it again from the start", job_id)
        _spawn(db, job_id, upload, params)
        counts["resumed"] += 1
    for path in folder.iterdir():
        if path.suffix == NEW and path.stat().st_mtime < time.time() - 60:
            path.unlink(missing_ok=True)  # a process died within microseconds of creating it
        if path.suffix not in (UPLOAD, PARAMS):
            continue
        upload_path = path.with_suffix(UPLOAD)
        if upload_path.stem in _running:
            continue
        upload = claim(upload_path)
        if upload is not None:
            upload.discard()
            counts["removed"] += 1
        elif not upload_path.exists():  # a parameters file left without its upload
            path.unlink(missing_ok=True)
    return counts


def drain(timeout: float) -> list[str]:
    """Wait up to `timeout` seconds for this process's import jobs; returns the ids still running (their
    uploads stay, so the next start imports them again)."""
    deadline = time.monotonic() + timeout
    for thread in list(_running.values()):
        thread.join(max(0.0, deadline - time.monotonic()))
    return [j for j, t in _running.items() if t.is_alive()]
