"""PutEventStream, GetEventStream, DeleteEventStream. Kinesis is not reachable from a self-hosted install, so
DestinationStreamArn names an event stream configured in Tidings (PUT /v1/event-streams/{id}, docs/events.md)
by its id, in either of Pinpoint's ARN forms (any region and account):

    arn:aws:kinesis:REGION:ACCOUNT:stream/<native stream id>
    arn:aws:firehose:REGION:ACCOUNT:deliverystream/<native stream id>

PutEventStream enables that stream and switches it to Pinpoint's record shape (tidings.engine.analytics.
stream_records); DeleteEventStream disables it. RoleArn is kept and returned: no IAM role is assumed."""
from __future__ import annotations

import asyncio
import re
from typing import Any

from tidings.api.pinpoint.dispatch import Context, operation
from tidings.api.pinpoint.errors import BadRequestException
from tidings.engine.analytics.streams import (
    PinpointStream,
    delete_pinpoint_stream,
    get_pinpoint_stream,
    put_pinpoint_stream,
)
from tidings.engine.platform.clock import ms_to_iso
from tidings.engine.platform.errors import InvalidInput

DESTINATION = re.compile(r"arn:aws[a-z-]*:(?:kinesis:[a-z0-9-]*:[0-9A-Za-z]*:stream|"
                         r"firehose:[a-z0-9-]*:[0-9A-Za-z]*:deliverystream)/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,99})")


def _answer(ctx: Context, stream: PinpointStream) -> dict[str, Any]:
    return {"EventStream": {"ApplicationId": ctx.workspace.name, "DestinationStreamArn": stream.destination_arn,
                            "RoleArn": stream.role_arn, "LastModifiedDate": ms_to_iso(stream.updated_at)}}


@operation("PutEventStream")
async def put_event_stream(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    request = params["WriteEventStream"]
    arn = request["DestinationStreamArn"]
    m = DESTINATION.fullmatch(arn)
    if m is None:
        raise BadRequestException("WriteEventStream.DestinationStreamArn: expected "
                                  "arn:aws:kinesis:REGION:ACCOUNT:stream/<event stream id> (or firehose's "
                                  "deliverystream/<id>), naming an event stream configured in Tidings; "
                                  f"got {arn!r}")

    def put() -> PinpointStream:
        try:
            return put_pinpoint_stream(ctx.db, ctx.workspace, m.group("name"), arn, request["RoleArn"])
        except InvalidInput as exc:
            raise BadRequestException(f"WriteEventStream.DestinationStreamArn: {exc.message}") from None
    return _answer(ctx, await asyncio.to_thread(put))


@operation("GetEventStream")
async def get_event_stream(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return _answer(ctx, await asyncio.to_thread(get_pinpoint_stream, ctx.db, ctx.workspace))


@operation("DeleteEventStream")
async def delete_event_stream(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return _answer(ctx, await asyncio.to_thread(delete_pinpoint_stream, ctx.db, ctx.workspace))
