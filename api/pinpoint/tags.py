"""TagResource, UntagResource, ListTagsForResource on applications, segments, journeys, campaigns and templates
(tidings.engine.workspaces.tags). ARNs (any region and account are accepted, so the ARNs a migrant already
keeps work; Tidings answers with region `tidings` and account 000000000000):

    arn:aws:mobiletargeting:REGION:ACCOUNT:apps/<application id>
    arn:aws:mobiletargeting:REGION:ACCOUNT:apps/<application id>/segments/<segment id>
    arn:aws:mobiletargeting:REGION:ACCOUNT:apps/<application id>/journeys/<journey id>
    arn:aws:mobiletargeting:REGION:ACCOUNT:apps/<application id>/campaigns/<campaign id>
    arn:aws:mobiletargeting:REGION:ACCOUNT:templates/<template name>/<EMAIL|SMS|VOICE|PUSH>

A campaign is a journey to Tidings (api/pinpoint/campaigns.py), but each ARN names only its own kind: a
campaign's id under `journeys/` (or a journey's under `campaigns/`) is not found.

A template ARN names a template of the key pair's workspace. An ARN of another form, of a resource that
does not exist, or of another workspace than the key's answers NotFoundException."""
from __future__ import annotations

import asyncio
import re
from typing import Any

from tidings.api.pinpoint.dispatch import Context, operation
from tidings.api.pinpoint.errors import BadRequestException, NotFoundException
from tidings.api.pinpoint.templates import BY_CHANNEL, KINDS
from tidings.engine.journeys import store
from tidings.engine.journeys.pinpoint.campaigns import campaign_of
from tidings.engine.messaging.template_store import get_template_version
from tidings.engine.platform.errors import InvalidInput, NotFound, TidingsError
from tidings.engine.segments.service import get_segment
from tidings.engine.workspaces.service import WorkspaceRef, find_workspace
from tidings.engine.workspaces.tags import get_tags, tag, untag

ARN = re.compile(r"arn:aws[a-z-]*:mobiletargeting:[a-z0-9-]*:[0-9A-Za-z]*:(?P<resource>.+)")
APP = re.compile(r"apps/(?P<app>[^/]+)(?:/(?P<kind>segments|journeys|campaigns)/(?P<id>[^/]+))?")
TEMPLATE = re.compile(r"templates/(?P<name>[^/]+)/(?P<type>[A-Za-z]+)")


def _not_found(arn: str) -> NotFoundException:
    return NotFoundException(f"ResourceArn: no resource {arn!r} (Tidings tags apps/<id>, apps/<id>/segments/<id>, "
                             "apps/<id>/journeys/<id>, apps/<id>/campaigns/<id> and templates/<name>/<TYPE> ARNs "
                             "of mobiletargeting; see docs/pinpoint.md)")


def resolve(ctx: Context, arn: str) -> tuple[WorkspaceRef, str]:
    """The workspace and the resource name (tidings.engine.workspaces.tags) an ARN names; NotFoundException for
    an ARN of another form, of a resource that does not exist or of a workspace the key does not reach."""
    m = ARN.fullmatch(arn)
    if m is None:
        raise _not_found(arn)
    resource = m.group("resource")
    if (app := APP.fullmatch(resource)) is not None:
        workspace = _app_workspace(ctx, app.group("app"), arn)
        kind, resource_id = app.group("kind"), app.group("id")
        if kind is None:
            return workspace, "app"
        try:
            if kind == "segments":
                get_segment(ctx.db, workspace, resource_id)
            else:
                is_campaign = campaign_of(store.get_journey(ctx.db, workspace, resource_id).yaml) is not None
                if is_campaign != (kind == "campaigns"):
                    raise _not_found(arn)
        except NotFound:
            raise _not_found(arn) from None
        return workspace, f"{kind}/{resource_id}"
    if (template := TEMPLATE.fullmatch(resource)) is not None:
        kind = KINDS.get(template.group("type"))
        if kind is None:
            raise _not_found(arn)
        if ctx.workspace is None:
            raise BadRequestException("ResourceArn: templates belong to a workspace: use that workspace's key pair")
        try:
            found = get_template_version(ctx.db, ctx.workspace, template.group("name"))
        except NotFound:
            raise _not_found(arn) from None
        if BY_CHANNEL.get(found.channel) is not kind:
            raise _not_found(arn)
        return ctx.workspace, f"templates/{found.template_id}/{kind.type}"
    raise _not_found(arn)


def _app_workspace(ctx: Context, app_id: str, arn: str) -> WorkspaceRef:
    if not ctx.admin:
        if ctx.workspace is None or app_id != ctx.workspace.name:
            raise _not_found(arn)
        return ctx.workspace
    try:
        return find_workspace(ctx.db, app_id)
    except TidingsError:
        raise _not_found(arn) from None


@operation("TagResource")
async def tag_resource(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    def tagged() -> None:
        workspace, resource = resolve(ctx, params["ResourceArn"])
        try:
            tag(ctx.db, workspace.id, resource, params["TagsModel"]["tags"])
        except InvalidInput as exc:
            raise BadRequestException(f"TagsModel.{exc.field}: {exc.message}") from None
    await asyncio.to_thread(tagged)
    return {}


@operation("UntagResource")
async def untag_resource(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    def untagged() -> None:
        workspace, resource = resolve(ctx, params["ResourceArn"])
        untag(ctx.db, workspace.id, resource, params["TagKeys"])
    await asyncio.to_thread(untagged)
    return {}


@operation("ListTagsForResource")
async def list_tags_for_resource(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    def listed() -> dict[str, str]:
        workspace, resource = resolve(ctx, params["ResourceArn"])
        return get_tags(ctx.db, workspace.id, resource)
    return {"TagsModel": {"tags": await asyncio.to_thread(listed)}}
