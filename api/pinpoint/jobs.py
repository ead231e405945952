"""Import and export jobs (tidings.engine.segments.pinpoint_jobs): CreateImportJob reads a Pinpoint CSV or JSON
endpoint file from `s3://` (TIDINGS_S3_ENDPOINT_URL) or `file://` (under TIDINGS_IMPORT_ROOT) into a new
imported segment; CreateExportJob writes a segment's endpoints there. As in Pinpoint, a job is answered at
once with JobStatus CREATED and runs in the background (PROCESSING, then COMPLETED or FAILED with its
Failures), surviving a restart of the API; GetImportJob / GetExportJob show where it is. The RoleArn is kept
but not assumed (the store's credentials are the server's)."""
from __future__ import annotations

import asyncio
from typing import Any

from tidings.api.pinpoint.dispatch import Context, operation
from tidings.api.pinpoint.errors import BadRequestException
from tidings.api.pinpoint.segments import _page
from tidings.engine.platform.clock import ms_to_iso
from tidings.engine.segments.object_store import check_reachable, parse_location
from tidings.engine.segments.pinpoint_jobs import export_job, get_job, import_job, list_jobs


def _response(ctx: Context, job: dict[str, Any]) -> dict[str, Any]:
    status = job["status"]
    answer = {"ApplicationId": ctx.workspace.name, "Id": job["id"], "Type": job["type"], "JobStatus": status,
              "Definition": job["definition"], "CreationDate": ms_to_iso(job["created_at"]), "TotalPieces": 1,
              "CompletedPieces": 1 if status == "COMPLETED" else 0, "FailedPieces": 1 if status == "FAILED" else 0,
              "Failures": job["failures"], "TotalFailures": job["total_failures"],
              "TotalProcessed": job["total_processed"]}
    if job["completed_at"]:  # 0 while the job is CREATED or PROCESSING
        answer["CompletionDate"] = ms_to_iso(job["completed_at"])
    return answer


def _import_definition(request: dict[str, Any]) -> tuple[dict[str, Any], str]:
    if request["Format"] not in ("CSV", "JSON"):
        raise BadRequestException(f"ImportJobRequest.Format: CSV or JSON, got {request['Format']!r}")
    if request.get("SegmentId"):
        raise BadRequestException("ImportJobRequest.SegmentId: Tidings imports into a new segment; "
                                  "give DefineSegment and a SegmentName instead")
    if request.get("DefineSegment") is False or request.get("RegisterEndpoints") is False:
        member = "DefineSegment" if request.get("DefineSegment") is False else "RegisterEndpoints"
        raise BadRequestException(f"ImportJobRequest.{member}: Tidings registers the imported endpoints and "
                                  "defines a segment of them; it cannot do one without the other")
    name = (request.get("SegmentName") or "").strip()
    if not 1 <= len(name) <= 255:
        raise BadRequestException("ImportJobRequest.SegmentName: the new segment's name, 1-255 characters")
    definition: dict[str, Any] = {k: request[k] for k in ("ExternalId", "Format", "RoleArn", "S3Url", "SegmentName")
                  if k in request}
    return {**definition, "DefineSegment": True, "RegisterEndpoints": True}, name


@operation("CreateImportJob")
async def create_import_job_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    definition, name = _import_definition(params["ImportJobRequest"])
    await check_reachable(parse_location(definition["S3Url"], "ImportJobRequest.S3Url"))

    def run() -> dict[str, Any]:
        return _response(ctx, import_job(ctx.db, ctx.workspace, ctx.app_state.imports_dir,
                                         {**definition, "SegmentName": name}))
    return {"ImportJobResponse": await asyncio.to_thread(run)}


@operation("CreateExportJob")
async def create_export_job_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    request = params["ExportJobRequest"]
    if not request.get("SegmentId"):
        raise BadRequestException("ExportJobRequest.SegmentId: Tidings exports one segment; name it")
    await check_reachable(parse_location(request["S3UrlPrefix"], "ExportJobRequest.S3UrlPrefix"))

    def run() -> dict[str, Any]:
        return _response(ctx, export_job(ctx.db, ctx.workspace, ctx.app_state.imports_dir, dict(request)))
    return {"ExportJobResponse": await asyncio.to_thread(run)}


def _one(ctx: Context, kind: str, job_id: str) -> dict[str, Any]:
    return _response(ctx, get_job(ctx.db, ctx.workspace, kind, job_id))


def _listed(ctx: Context, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    jobs = [_response(ctx, j) for j in list_jobs(ctx.db, ctx.workspace, kind, params.get("SegmentId"))]
    return _page(jobs, "Id", params)


@operation("GetImportJob")
async def get_import_job_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"ImportJobResponse": await asyncio.to_thread(_one, ctx, "IMPORT", params["JobId"])}


@operation("GetExportJob")
async def get_export_job_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"ExportJobResponse": await asyncio.to_thread(_one, ctx, "EXPORT", params["JobId"])}


@operation("GetImportJobs")
@operation("GetSegmentImportJobs")
async def get_import_jobs_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"ImportJobsResponse": await asyncio.to_thread(_listed, ctx, "IMPORT", params)}


@operation("GetExportJobs")
@operation("GetSegmentExportJobs")
async def get_export_jobs_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"ExportJobsResponse": await asyncio.to_thread(_listed, ctx, "EXPORT", params)}
