"""Message templates: a Pinpoint template is a native template (tidings.engine.messaging.template_store) of the
same name, so one made here is sent by /v1/messages, journeys and SendMessages, and a native one reads back
here. Pinpoint's parts map onto the native ones (EMAIL Subject/HtmlPart/TextPart -> subject/html/text, SMS
Body -> body, VOICE Body -> text, PUSH Default Title/Body -> title/body and Action/Url -> data.action/url),
DefaultSubstitutions onto the template's defaults; both render Pinpoint's variables the same way
(docs/templates.md). Versions are the native template's versions, numbered 1, 2, 3 ...; the active one is what
sends render. Templates belong to the workspace of the key pair (Pinpoint's are per account)."""
from __future__ import annotations

import asyncio
import functools
import json
import re
from typing import Any


from tidings.api.pinpoint.apps import ACCOUNT, REGION
from tidings.api.pinpoint.dispatch import Context, operation
from tidings.api.pinpoint.errors import BadRequestException, NotFoundException
from tidings.engine.messaging.pinpoint_templates import BY_CHANNEL, KINDS, Kind, pinpoint_content, to_body
from tidings.engine.messaging.template_store import (
    TemplateVersion,
    create_template,
    delete_template,
    delete_template_version,
    get_template_version,
    list_active_versions,
    list_template_versions,
    save_template_version,
    set_active_version,
)
from tidings.engine.platform.clock import ms_to_iso
from tidings.engine.platform.errors import Conflict, InvalidInput, NotFound
from tidings.engine.workspaces.service import WorkspaceRef
from tidings.engine.workspaces.tags import tags_for

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
MAX_PAGE = 1000


def template_arn(name: str, template_type: str) -> str:
    return f"arn:aws:mobiletargeting:{REGION}:{ACCOUNT}:templates/{name}/{template_type}"


def tag_resource(name: str, template_type: str) -> str:
    return f"templates/{name}/{template_type}"


def _workspace(ctx: Context) -> WorkspaceRef:
    if ctx.workspace is None:
        raise BadRequestException("templates belong to a workspace: use that workspace's key pair (an admin key pair "
                                  "names no application here)")
    return ctx.workspace


def _common(kind: Kind, v: TemplateVersion) -> dict[str, Any]:
    out: dict[str, Any] = {"TemplateName": v.template_id, "TemplateType": kind.type, "Version": str(v.version)}
    if v.body.defaults:
        out["DefaultSubstitutions"] = json.dumps(v.body.defaults)
    if v.description is not None:
        out["TemplateDescription"] = v.description
    return out


def _response(kind: Kind, v: TemplateVersion, tags: dict[str, str]) -> dict[str, Any]:
    return {**_common(kind, v), **pinpoint_content(kind, v.body), "Arn": template_arn(v.template_id, kind.type),
            "CreationDate": ms_to_iso(v.template_created_at), "LastModifiedDate": ms_to_iso(v.updated_at),
            "tags": tags}


def _version_number(value: str | None, member: str = "Version") -> int | None:
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise BadRequestException(f"{member}: a version number (1, 2, 3 ...), got {value!r}")
    return int(value)


def _reraise(kind: Kind, exc: InvalidInput) -> BadRequestException:
    field = exc.field or ""
    if field == "version":
        return BadRequestException(f"Version: {exc.message}")
    if field.startswith("defaults"):
        return BadRequestException(f"{kind.request}.DefaultSubstitutions: {exc.message}")
    member = kind.parts.get(field) or kind.parts.get(field.split(".")[0])
    where = f"{kind.request}.{member}" if member else kind.request
    return BadRequestException(f"{where}: {exc.message.removeprefix(field + ': ').removeprefix(field + ', ')}")


def _found(kind: Kind, v: TemplateVersion) -> TemplateVersion:
    """`v` if its template is of `kind` (a template of another channel is not found under this type)."""
    if v.channel != kind.channel:
        raise NotFoundException(f"no {kind.type} template {v.template_id!r} (it is a {v.channel} template)")
    return v


def _get(ctx: Context, kind: Kind, name: str, version: int | None) -> TemplateVersion:
    return _found(kind, get_template_version(ctx.db, _workspace(ctx), name, version))


# ---- operations -------------------------------------------------------------------------------------------


async def _create(kind: Kind, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    workspace, name, request = _workspace(ctx), params["TemplateName"], params[kind.request]
    if not NAME.fullmatch(name):
        raise BadRequestException("TemplateName: 1-128 letters, digits, '_' or '-', starting with a letter or digit")
    body = to_body(kind, request)

    def created() -> None:
        try:
            create_template(ctx.db, workspace, name, body, request.get("TemplateDescription"),
                            tags=request.get("tags"), tag_resource=tag_resource(name, kind.type))
        except Conflict as exc:
            raise BadRequestException(f"TemplateName: {exc.message}") from None
        except InvalidInput as exc:
            if (exc.field or "").startswith("tags"):
                raise BadRequestException(f"{kind.request}.{exc.field}: {exc.message}") from None
            raise _reraise(kind, exc) from None
    await asyncio.to_thread(created)
    return {"CreateTemplateMessageBody": {"Arn": template_arn(name, kind.type), "Message": "Created",
                                          "RequestID": ctx.request_id}}


async def _get_op(kind: Kind, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    version = _version_number(params.get("Version"))

    def found() -> dict[str, Any]:
        v = _get(ctx, kind, params["TemplateName"], version)
        resource = tag_resource(v.template_id, kind.type)
        return _response(kind, v, tags_for(ctx.db, ctx.workspace.id, [resource]).get(resource, {}))
    return {kind.response: await asyncio.to_thread(found)}


async def _update(kind: Kind, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Overwrites the latest version, or adds one (CreateNewVersion) that is not active until
    UpdateTemplateActiveVersion says so. `tags` are not read (Pinpoint deprecated them on updates; use
    TagResource)."""
    workspace, name, request = _workspace(ctx), params["TemplateName"], params[kind.request]
    version = _version_number(params.get("Version"))
    body = to_body(kind, request)

    def saved() -> None:
        _get(ctx, kind, name, None)
        try:
            save_template_version(ctx.db, workspace, name, body, request.get("TemplateDescription"),
                                  new_version=bool(params.get("CreateNewVersion")), version=version)
        except InvalidInput as exc:
            raise _reraise(kind, exc) from None
    await asyncio.to_thread(saved)
    return {"MessageBody": {"Message": "Accepted", "RequestID": ctx.request_id}}


async def _delete(kind: Kind, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """The whole template (every version and its tags), or with Version one version that is not active."""
    workspace, name = _workspace(ctx), params["TemplateName"]
    version = _version_number(params.get("Version"))

    def deleted() -> None:
        _get(ctx, kind, name, version)
        try:
            if version is None:
                delete_template(ctx.db, workspace, name)
            else:
                delete_template_version(ctx.db, workspace, name, version)
        except InvalidInput as exc:
            raise _reraise(kind, exc) from None
    await asyncio.to_thread(deleted)
    return {"MessageBody": {"Message": "Accepted", "RequestID": ctx.request_id}}


for _kind in KINDS.values():
    operation(f"Create{_kind.op}Template")(functools.partial(_create, _kind))
    operation(f"Get{_kind.op}Template")(functools.partial(_get_op, _kind))
    operation(f"Update{_kind.op}Template")(functools.partial(_update, _kind))
    operation(f"Delete{_kind.op}Template")(functools.partial(_delete, _kind))


def _kind_of(template_type: str, member: str = "TemplateType") -> Kind:
    kind = KINDS.get(template_type.upper())
    if kind is None:
        raise BadRequestException(f"{member}: one of EMAIL, SMS, VOICE, PUSH (Tidings has no INAPP templates), "
                                  f"got {template_type!r}")
    return kind


def _page_size(value: str | None) -> int:
    size = value or str(MAX_PAGE)
    if not size.isdigit() or not 1 <= int(size) <= MAX_PAGE:
        raise BadRequestException(f"PageSize: a number from 1 to {MAX_PAGE}, got {size!r}")
    return int(size)


@operation("ListTemplates")
async def list_templates_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Every EMAIL, SMS, VOICE and PUSH template of the workspace at its active version, by name; TemplateType
    and Prefix filter, NextToken is the last name of the previous page."""
    workspace = _workspace(ctx)
    size = _page_size(params.get("PageSize"))
    wanted = params.get("TemplateType")
    if wanted is not None and wanted.upper() == "INAPP":
        return {"TemplatesResponse": {"Item": []}}
    kind = _kind_of(wanted) if wanted else None
    prefix, token = params.get("Prefix") or "", params.get("NextToken")

    def listed() -> dict[str, Any]:
        items = [v for v in list_active_versions(ctx.db, workspace) if v.channel in BY_CHANNEL
                 and (kind is None or v.channel == kind.channel) and v.template_id.startswith(prefix)
                 and (token is None or v.template_id > token)]
        items.sort(key=lambda v: v.template_id)
        page = items[:size]
        resources = [tag_resource(v.template_id, BY_CHANNEL[v.channel].type) for v in page]
        tags = tags_for(ctx.db, workspace.id, resources)
        out: dict[str, Any] = {"Item": [
            {**_common(BY_CHANNEL[v.channel], v), "Arn": template_arn(v.template_id, BY_CHANNEL[v.channel].type),
             "CreationDate": ms_to_iso(v.template_created_at), "LastModifiedDate": ms_to_iso(v.updated_at),
             "tags": tags.get(r, {})} for v, r in zip(page, resources)]}
        if len(items) > len(page):
            out["NextToken"] = page[-1].template_id
        return out
    return {"TemplatesResponse": await asyncio.to_thread(listed)}


@operation("ListTemplateVersions")
async def list_template_versions_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    workspace, kind = _workspace(ctx), _kind_of(params["TemplateType"])
    size = _page_size(params.get("PageSize"))
    after = _version_number(params.get("NextToken"), "NextToken") or 0

    def listed() -> dict[str, Any]:
        versions = list_template_versions(ctx.db, workspace, params["TemplateName"])
        if versions:
            _found(kind, versions[0])
        items = [v for v in versions if v.version > after]
        page = items[:size]
        out: dict[str, Any] = {"Item": [{**_common(kind, v), "CreationDate": ms_to_iso(v.created_at),
                                         "LastModifiedDate": ms_to_iso(v.updated_at)} for v in page],
                               "Message": "Success", "RequestID": ctx.request_id}
        if len(items) > len(page):
            out["NextToken"] = str(page[-1].version)
        return out
    return {"TemplateVersionsResponse": await asyncio.to_thread(listed)}


@operation("UpdateTemplateActiveVersion")
async def update_template_active_version(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """The version sends render from now on: a version number or "latest"."""
    workspace, kind = _workspace(ctx), _kind_of(params["TemplateType"])
    wanted = params["TemplateActiveVersionRequest"].get("Version")
    if not wanted:
        raise BadRequestException("TemplateActiveVersionRequest.Version: required (a version number or \"latest\")")
    version = None if wanted == "latest" else _version_number(wanted, "TemplateActiveVersionRequest.Version")

    def activated() -> None:
        _get(ctx, kind, params["TemplateName"], None)
        try:
            set_active_version(ctx.db, workspace, params["TemplateName"], version)
        except NotFound as exc:
            raise NotFoundException(f"TemplateActiveVersionRequest.Version: {exc.message}") from None
    await asyncio.to_thread(activated)
    return {"MessageBody": {"Message": "Accepted", "RequestID": ctx.request_id}}
