"""PutEvents: each endpoint of the batch is updated (when its Endpoint says anything) and its events recorded
through the native event path (tidings.engine.customers.events.ingest), so segments and journeys see them as they see
/v1 events. Results are per endpoint and per event, as Pinpoint gives them: 202 accepted or 400 with why.

An event id is the key of the Events map (idempotent: the same id again is not stored twice). Session and app
fields are kept on the event: Session.Id, StartTimestamp and StopTimestamp as the attributes `session.id`,
`session.start_timestamp`, `session.stop_timestamp`, Session.Duration as the metric `session.duration`, and
AppPackageName, AppTitle, AppVersionCode, SdkName, ClientSdkVersion as `app.package_name`, `app.title`,
`app.version_code`, `sdk.name`, `sdk.version`. An event of an endpoint that does not exist (and that the batch
does not create) belongs to the user named by User.UserId, else to the user named by the endpoint id.
"""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from tidings.api.pinpoint.dispatch import Context, operation
from tidings.api.pinpoint.endpoints import owner_of, to_native
from tidings.api.pinpoint.errors import BadRequestException, PinpointError
from tidings.engine.customers.endpoints import existing_endpoint_ids, get_endpoints, upsert_customers
from tidings.engine.customers.events import MAX_EVENT_VALUE, ingest
from tidings.engine.customers.limits import MAX_NAME
from tidings.engine.customers.schemas import EventIn
from tidings.engine.platform.errors import BatchRejected, TidingsError

MAX_ENDPOINTS = 100
MAX_EVENTS = 100
MAX_EVENT_ATTRIBUTES = 40  # Pinpoint: attributes and metrics per event, together
# Pinpoint's standard app events; other names starting with `_` are Tidings' own message events.
STANDARD_PREFIXES = ("_session.", "_monetization.", "_userauth.", "_custom.")
_ENDPOINT_FIELDS = ("ChannelType", "Address", "Attributes", "Metrics", "Demographic", "Location", "User", "OptOut",
                    "EffectiveDate", "EndpointStatus")
ACCEPTED = {"StatusCode": 202, "Message": "Accepted"}


def _refused(message: str) -> dict[str, Any]:
    return {"StatusCode": 400, "Message": message}


_APP_FIELDS = (("AppPackageName", "app.package_name"), ("AppTitle", "app.title"),
               ("AppVersionCode", "app.version_code"), ("SdkName", "sdk.name"), ("ClientSdkVersion", "sdk.version"))


def _checked_values(event: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The event's Attributes and Metrics (copies), within Pinpoint's limits."""
    attributes = event.get("Attributes")
    metrics = event.get("Metrics")
    attributes = dict(attributes) if attributes else {}
    metrics = dict(metrics) if metrics else {}
    if len(attributes) + len(metrics) > MAX_EVENT_ATTRIBUTES:
        raise BadRequestException(f"Attributes, Metrics: at most {MAX_EVENT_ATTRIBUTES} per event together")
    # One pass over the lengths, the message only for the first fault: most events are fine.
    if any(not 0 < len(key) <= MAX_NAME or len(value) > MAX_EVENT_VALUE for key, value in attributes.items()):
        for key, value in attributes.items():
            if not 1 <= len(key) <= MAX_NAME:
                raise BadRequestException(f"Attributes.{key}: names are 1-{MAX_NAME} characters")
            if len(value) > MAX_EVENT_VALUE:
                raise BadRequestException(f"Attributes.{key}: values are at most {MAX_EVENT_VALUE} characters")
    for key in metrics:
        if not 0 < len(key) <= MAX_NAME:
            raise BadRequestException(f"Metrics.{key}: names are 1-{MAX_NAME} characters")
    return attributes, metrics


def _timestamp(text: str, parsed: dict[str, datetime]) -> datetime:
    """An event's Timestamp as an aware datetime; `parsed` remembers those of the request (a batch's events
    mostly share a few: parsing each again was a tenth of the server's PutEvents)."""
    when = parsed.get(text)
    if when is None:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise BadRequestException(f"Timestamp: not an ISO 8601 date-time: {text!r}") from None
        when = parsed[text] = when if when.tzinfo else when.replace(tzinfo=UTC)
    return when


# The members of a plain event; any other (Session, the app fields) is looked at only when present.
_PLAIN_EVENT = frozenset(("EventType", "Timestamp", "Attributes", "Metrics"))


def _session_and_app_fields(event: dict[str, Any], attributes: dict[str, Any], metrics: dict[str, Any]) -> None:
    session = event.get("Session")
    if session:
        attributes["session.id"] = session["Id"]
        attributes["session.start_timestamp"] = session["StartTimestamp"]
        if session.get("StopTimestamp"):
            attributes["session.stop_timestamp"] = session["StopTimestamp"]
        if session.get("Duration") is not None:
            metrics["session.duration"] = session["Duration"]
    for source, target in _APP_FIELDS:
        if event.get(source):
            attributes[target] = event[source]


def _event(endpoint_id: str | None, user_id: str | None, event_id: str, event: dict[str, Any],
           parsed: dict[str, datetime]) -> EventIn:
    """A Pinpoint Event as a native one; BadRequestException names the field."""
    name = event["EventType"]
    if not 0 < len(name) <= 50:
        raise BadRequestException("EventType: 1-50 characters")
    if name[0] == "_" and not name.startswith(STANDARD_PREFIXES):
        raise BadRequestException(f"EventType: names starting with '_' are reserved, except Pinpoint's standard "
                                  f"events ({', '.join(p + '*' for p in STANDARD_PREFIXES)}); got {name!r}")
    if not 0 < len(event_id) <= 255:
        raise BadRequestException("event id: 1-255 characters")
    when = parsed.get(event["Timestamp"]) or _timestamp(event["Timestamp"], parsed)
    attributes, metrics = _checked_values(event)
    if not _PLAIN_EVENT.issuperset(event):
        _session_and_app_fields(event, attributes, metrics)
    return EventIn(name=name, id=event_id, endpoint_id=endpoint_id, user_id=user_id, timestamp=when,
                   attributes=attributes, metrics=metrics)


def _write_endpoints(ctx: Context, batch: dict[str, Any], results: dict[str, dict[str, Any]]) -> None:
    """Update the endpoints that say something; a refused one gets its 400 in `results`."""
    wanted = {eid: item["Endpoint"] for eid, item in batch.items()
              if any(item["Endpoint"].get(f) not in (None, {}, []) for f in _ENDPOINT_FIELDS)}
    if not wanted:  # events only (the common batch): no endpoint to read or write
        return
    current = get_endpoints(ctx.db, ctx.workspace, list(wanted))
    staged: dict[str, tuple[Any, Any]] = {}
    for eid, request in wanted.items():
        try:
            if eid in current or (request.get("ChannelType") and request.get("Address")):
                staged[eid] = to_native(eid, request, current.get(eid))
            else:  # an endpoint the batch only names: no endpoint to write, perhaps its user's attributes
                staged[eid] = (None, owner_of(eid, request, None))
        except PinpointError as exc:
            results[eid]["EndpointItemResponse"] = _refused(exc.message)
    while staged:
        try:
            upsert_customers(ctx.db, ctx.workspace, [u for _, u in staged.values() if u is not None],
                             [e for e, _ in staged.values() if e is not None])
            return
        except BatchRejected as exc:  # drop the endpoints refused by the engine and write the others
            named = {d.get("endpoint_id") or d.get("user_id") for d in exc.details}
            bad = [eid for eid, (e, u) in staged.items() if eid in named or (u is not None and u.user_id in named)]
            if not bad:
                raise
            for eid in bad:
                reason = next((d["message"] for d in exc.details if d.get("endpoint_id") == eid), exc.message)
                results[eid]["EndpointItemResponse"] = _refused(reason)
                del staged[eid]


def put_events(ctx: Context, batch: dict[str, Any]) -> dict[str, Any]:
    if len(batch) > MAX_ENDPOINTS:
        raise BadRequestException(f"EventsRequest.BatchItem: at most {MAX_ENDPOINTS} endpoints per request, "
                                  f"got {len(batch)}")
    for eid, item in batch.items():
        if len(item["Events"]) > MAX_EVENTS:
            raise BadRequestException(f"EventsRequest.BatchItem.{eid}.Events: at most {MAX_EVENTS} events per "
                                      f"endpoint, got {len(item['Events'])}")
    results: dict[str, dict[str, Any]] = {eid: {"EndpointItemResponse": dict(ACCEPTED), "EventsItemResponse": {}}
                                          for eid in batch}
    _write_endpoints(ctx, batch, results)
    existing = existing_endpoint_ids(ctx.db, ctx.workspace, list(batch))
    staged: list[tuple[str, str, EventIn]] = []
    parsed: dict[str, datetime] = {}
    for eid, item in batch.items():
        events_out = results[eid]["EventsItemResponse"]
        if results[eid]["EndpointItemResponse"]["StatusCode"] != 202:
            for event_id in item["Events"]:
                events_out[event_id] = _refused("not recorded: its endpoint was refused")
            continue
        endpoint_id = eid if eid in existing else None
        user_id = None if endpoint_id is not None else ((item["Endpoint"].get("User") or {}).get("UserId") or eid)
        for event_id, event in item["Events"].items():
            try:
                staged.append((eid, event_id, _event(endpoint_id, user_id, event_id, event, parsed)))
                events_out[event_id] = ACCEPTED  # one dict for every accepted event: results are replaced, never changed
            except PinpointError as exc:
                events_out[event_id] = _refused(exc.message)
    if staged:
        try:
            ingest(ctx.db, ctx.workspace, [e for _, _, e in staged], allow_reserved=True)
        except TidingsError as exc:  # a check of the engine's that ours missed: no event of the batch is stored
            for eid, event_id, _ in staged:
                results[eid]["EventsItemResponse"][event_id] = _refused(f"not recorded: {exc.message}")
    return {"EventsResponse": {"Results": results}}


@operation("PutEvents")
async def put_events_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return await asyncio.to_thread(put_events, ctx, params["EventsRequest"]["BatchItem"])
