"""Endpoints and users, mapped onto the native customer engine (tidings.engine.customers): what is written here reads
back through /v1 and the reverse.

Pinpoint -> Tidings: an endpoint is an endpoint; `User.UserId` is its owner (an endpoint without one is its
own user, named by its id, as on /v1); `User.UserAttributes` are the owner's attributes; GCM, APNS*, ADM and
BAIDU endpoints are PUSH endpoints. UpdateEndpoint merges as Pinpoint does: each attribute, metric, user
attribute, Demographic and Location field sent replaces that one field; an attribute sent as [] is removed.
"""
from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from tidings.api.pinpoint.dispatch import Context, operation
from tidings.api.pinpoint.errors import BadRequestException, NotFoundException
from tidings.engine.customers.endpoints import (
    delete_endpoint,
    delete_user_endpoints,
    get_endpoints,
    upsert_customers,
)
from tidings.engine.customers.limits import (
    MAX_VALUE,
    check_address,
    check_attributes,
    check_locale,
    check_metrics,
    check_timezone,
)
from tidings.engine.customers.schemas import (
    Demographic,
    EndpointBatchItem,
    EndpointOut,
    Location,
    UserBatchItem,
)
from tidings.engine.customers.users import get_user
from tidings.engine.platform.clock import iso_to_ms
from tidings.engine.platform.errors import BatchRejected, TidingsError

MAX_BATCH = 100  # Pinpoint's UpdateEndpointsBatch bound
PUSH_TYPES = {"GCM", "APNS", "APNS_SANDBOX", "APNS_VOIP", "APNS_VOIP_SANDBOX", "ADM", "BAIDU", "PUSH"}
NATIVE_TYPES = {"EMAIL", "SMS", "VOICE", "CUSTOM"}
DEMOGRAPHIC = {"AppVersion": "app_version", "Locale": "locale", "Make": "make", "Model": "model",
               "ModelVersion": "model_version", "Platform": "platform", "PlatformVersion": "platform_version",
               "Timezone": "timezone"}
LOCATION = {"City": "city", "Country": "country", "Latitude": "latitude", "Longitude": "longitude",
            "PostalCode": "postal_code", "Region": "region"}
# Engine field names as Pinpoint names them, for the errors the engine raises after these checks.
_FIELDS = {"user_id": "User.UserId", "channel": "ChannelType", "address": "Address", "attribute": "Attributes",
           "metric": "Metrics", "attributes": "Attributes", "metrics": "Metrics"}


def _pinpoint_field(field: str | None) -> str:
    head, _, rest = (field or "").partition(".")
    return _FIELDS.get(head, head) + (f".{rest}" if rest else "")


def _field_error(exc: TidingsError) -> BadRequestException:
    named = _pinpoint_field(exc.field)
    return BadRequestException(f"{named}: {exc.message}" if named else exc.message)


def _check_user_attributes(values: dict[str, list[str]], where: str) -> None:
    try:
        check_attributes(values, "User.UserAttributes")
    except TidingsError as exc:
        raise BadRequestException(f"{where}{exc.field}: {exc.message}") from None


def _merged_fields(request: dict[str, Any], current: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    merged = dict(current)
    for pinpoint_name, value in request.items():
        merged[mapping[pinpoint_name]] = value
    return {k: v for k, v in merged.items() if v is not None}


def to_native(endpoint_id: str, request: dict[str, Any], current: EndpointOut | None,
              where: str = "") -> tuple[EndpointBatchItem, UserBatchItem | None]:
    """An EndpointRequest as the native endpoint (and owner) write, checked with Pinpoint's field names."""
    fields: dict[str, Any] = {"endpoint_id": endpoint_id}
    if len(endpoint_id) > 255:
        raise BadRequestException(f"{where}EndpointId: at most 255 characters")
    channel = request.get("ChannelType")
    if channel is not None:
        fields["channel"] = _native_channel(channel, where)
    if "Address" in request:
        fields["address"] = request["Address"]
    if current is None and ("channel" not in fields or "address" not in fields):
        raise BadRequestException(f"{where}{'ChannelType' if 'channel' not in fields else 'Address'}: "
                                  "a new endpoint needs ChannelType and Address")
    try:
        address_channel = fields.get("channel") or (current.channel if current else None)
        if "address" in fields and address_channel:
            check_address(address_channel, fields["address"], "Address")
        attributes = request.get("Attributes", {})
        check_attributes(attributes, "Attributes")
        check_metrics(request.get("Metrics", {}), "Metrics")
        demographic = request.get("Demographic")
        if demographic is not None:
            check_timezone(demographic.get("Timezone"), "Demographic.Timezone")
            check_locale(demographic.get("Locale"), "Demographic.Locale")
            for name, value in demographic.items():
                if isinstance(value, str) and len(value) > MAX_VALUE:
                    raise BadRequestException(f"{where}Demographic.{name}: at most {MAX_VALUE} characters")
    except TidingsError as exc:
        raise BadRequestException(f"{where}{exc.field}: {exc.message}") from None
    fields["attributes"] = {k: (v or None) for k, v in attributes.items()}  # [] removes the attribute
    fields["metrics"] = request.get("Metrics", {})
    if demographic is not None:
        fields["demographic"] = Demographic(**_merged_fields(demographic, current.demographic if current else {},
                                                             DEMOGRAPHIC))
    fields.update(_state_fields(request, current, where))
    owner = owner_of(endpoint_id, request, current, where)
    user_id = (request.get("User") or {}).get("UserId")
    if user_id is not None:
        fields["user_id"] = user_id
    return EndpointBatchItem(**fields), owner


def _native_channel(channel: str, where: str) -> str:
    if channel == "IN_APP":
        raise BadRequestException(f"{where}ChannelType: IN_APP endpoints are not supported (Tidings has no "
                                  "in-app channel)")
    if channel not in PUSH_TYPES | NATIVE_TYPES:
        raise BadRequestException(f"{where}ChannelType: unknown channel type {channel!r}")
    return "PUSH" if channel in PUSH_TYPES else channel


def _state_fields(request: dict[str, Any], current: EndpointOut | None, where: str) -> dict[str, Any]:
    """Location, OptOut, EndpointStatus and EffectiveDate as native endpoint fields, checked."""
    fields: dict[str, Any] = {}
    location = request.get("Location")
    if location is not None:
        for name, low, high in (("Latitude", -90, 90), ("Longitude", -180, 180)):
            if location.get(name) is not None and not low <= location[name] <= high:
                raise BadRequestException(f"{where}Location.{name}: must be between {low} and {high}")
        fields["location"] = Location(**_merged_fields(location, current.location if current else {}, LOCATION))
    opt_out = request.get("OptOut")
    if opt_out is not None:
        if opt_out not in ("ALL", "NONE"):
            raise BadRequestException(f"{where}OptOut: ALL or NONE, got {opt_out!r}")
        fields["opt_out"] = opt_out == "ALL"
    if request.get("EndpointStatus") not in (None, "ACTIVE"):
        raise BadRequestException(f"{where}EndpointStatus: Tidings keeps every endpoint ACTIVE; to stop messages "
                                  "to it send OptOut ALL, or delete it")
    if request.get("EffectiveDate") is not None:
        try:
            iso_to_ms(request["EffectiveDate"])
        except ValueError:
            raise BadRequestException(f"{where}EffectiveDate: must be an ISO 8601 date-time") from None
        fields["effective_date"] = request["EffectiveDate"]
    return fields


def owner_of(endpoint_id: str, request: dict[str, Any], current: EndpointOut | None,
             where: str = "") -> UserBatchItem | None:
    """The write of the endpoint's owner its User asks for (its UserAttributes), or None."""
    user = request.get("User") or {}
    user_id = user.get("UserId")
    if user_id is not None and not 1 <= len(user_id) <= 255:
        raise BadRequestException(f"{where}User.UserId: 1-255 characters")
    user_attributes = user.get("UserAttributes")
    if not user_attributes:
        return None
    _check_user_attributes(user_attributes, where)
    # A single value is stored as a string, as a Pinpoint import stores it (segments compare strings).
    return UserBatchItem(user_id=user_id or (current.user_id if current else endpoint_id), attributes={
        k: (None if not v else v[0] if len(v) == 1 else v) for k, v in user_attributes.items()})


def _cohort(endpoint_id: str) -> str:
    """Pinpoint puts each endpoint in one of 100 stable cohorts (0-99); derived from the id, as stable."""
    return str(int(hashlib.sha256(endpoint_id.encode()).hexdigest(), 16) % 100)


def user_attributes_as_lists(attributes: dict[str, Any]) -> dict[str, list[str]]:
    def as_list(value: Any) -> list[str]:
        if isinstance(value, list):
            return [str(v) for v in value]
        return ["true" if value is True else "false" if value is False else str(value)]
    return {k: as_list(v) for k, v in attributes.items()}


def to_pinpoint(app_id: str, ep: EndpointOut, user_attributes: dict[str, Any] | None) -> dict[str, Any]:
    """A native endpoint as Pinpoint's EndpointResponse."""
    response: dict[str, Any] = {
        "Id": ep.endpoint_id, "ApplicationId": app_id, "Address": ep.address, "ChannelType": ep.channel,
        "Attributes": ep.attributes, "Metrics": ep.metrics, "OptOut": "ALL" if ep.opt_out else "NONE",
        "EndpointStatus": "ACTIVE", "CohortId": _cohort(ep.endpoint_id), "CreationDate": ep.created_at,
        "EffectiveDate": ep.effective_date or ep.updated_at,
        "Demographic": {p: ep.demographic[n] for p, n in DEMOGRAPHIC.items() if n in ep.demographic},
        "Location": {p: ep.location[n] for p, n in LOCATION.items() if n in ep.location},
    }
    if ep.user_id != ep.endpoint_id:  # an endpoint that is its own user has no User in Pinpoint's terms
        response["User"] = {"UserId": ep.user_id, "UserAttributes": user_attributes_as_lists(user_attributes or {})}
    return response


def _write(ctx: Context, requests: list[tuple[str, dict[str, Any]]], batch: bool) -> None:
    current = get_endpoints(ctx.db, ctx.workspace, [eid for eid, _ in requests])
    endpoint_items, user_items = [], []
    for index, (endpoint_id, request) in enumerate(requests):
        endpoint, owner = to_native(endpoint_id, request, current.get(endpoint_id),
                                    f"Item[{index}].{endpoint_id}: " if batch else "")
        endpoint_items.append(endpoint)
        if owner is not None:
            user_items.append(owner)
    try:
        upsert_customers(ctx.db, ctx.workspace, user_items, endpoint_items)
    except BatchRejected as exc:
        if exc.originals and not batch:
            raise _field_error(exc.originals[0]) from None
        report = "; ".join(f"{d.get('endpoint_id') or d.get('user_id')}: {_pinpoint_field(d.get('field'))}: "
                           f"{d.get('message')}" for d in exc.details[:10])
        raise BadRequestException(f"{exc.message}: {report}") from None
    except TidingsError as exc:
        raise _field_error(exc) from None


@operation("UpdateEndpoint")
async def update_endpoint(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    await asyncio.to_thread(_write, ctx, [(params["EndpointId"], params["EndpointRequest"])], False)
    return {"MessageBody": {"Message": "Accepted", "RequestID": ctx.request_id}}


@operation("UpdateEndpointsBatch")
async def update_endpoints_batch(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    items = params["EndpointBatchRequest"]["Item"]
    if not 1 <= len(items) <= MAX_BATCH:
        raise BadRequestException(f"EndpointBatchRequest.Item: 1 to {MAX_BATCH} endpoints per request, got {len(items)}")
    requests = []
    for index, item in enumerate(items):
        if not item.get("Id"):
            raise BadRequestException(f"Item[{index}].Id: each endpoint of a batch needs its Id")
        requests.append((item["Id"], {k: v for k, v in item.items() if k != "Id"}))
    await asyncio.to_thread(_write, ctx, requests, True)
    return {"MessageBody": {"Message": "Accepted", "RequestID": ctx.request_id}}


def _read(ctx: Context, endpoint_id: str) -> dict[str, Any]:
    ep = get_endpoints(ctx.db, ctx.workspace, [endpoint_id]).get(endpoint_id)
    if ep is None:
        raise NotFoundException("Resource not found")
    owner = get_user(ctx.db, ctx.workspace, ep.user_id)
    return to_pinpoint(ctx.workspace.name, ep, owner.attributes)


@operation("GetEndpoint")
async def get_endpoint(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"EndpointResponse": await asyncio.to_thread(_read, ctx, params["EndpointId"])}


def _delete(ctx: Context, endpoint_id: str) -> dict[str, Any]:
    response = _read(ctx, endpoint_id)
    delete_endpoint(ctx.db, ctx.workspace, endpoint_id)
    return response


@operation("DeleteEndpoint")
async def delete_endpoint_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"EndpointResponse": await asyncio.to_thread(_delete, ctx, params["EndpointId"])}


def _user_endpoints(ctx: Context, user_id: str) -> list[dict[str, Any]]:
    try:
        user = get_user(ctx.db, ctx.workspace, user_id)
    except TidingsError:
        raise NotFoundException("Resource not found") from None
    return [to_pinpoint(ctx.workspace.name, ep, user.attributes) for ep in user.endpoints]


@operation("GetUserEndpoints")
async def get_user_endpoints(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    items = await asyncio.to_thread(_user_endpoints, ctx, params["UserId"])
    if not items:
        raise NotFoundException("Resource not found")
    return {"EndpointsResponse": {"Item": items}}


def _delete_user_endpoints(ctx: Context, user_id: str) -> list[dict[str, Any]]:
    user = get_user(ctx.db, ctx.workspace, user_id)
    removed = delete_user_endpoints(ctx.db, ctx.workspace, user_id)
    return [to_pinpoint(ctx.workspace.name, ep, user.attributes) for ep in removed]


@operation("DeleteUserEndpoints")
async def delete_user_endpoints_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    try:
        items = await asyncio.to_thread(_delete_user_endpoints, ctx, params["UserId"])
    except TidingsError:
        raise NotFoundException("Resource not found") from None
    if not items:
        raise NotFoundException("Resource not found")
    return {"EndpointsResponse": {"Item": items}}
