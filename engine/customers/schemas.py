"""msgspec Structs for API bodies and answers. Decoding them is the first line of validation:
wrong types and unknown enum values fail here with the JSON path of the field."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from tidings.engine.platform.limits import MAX_BATCH

ChannelType = Literal["EMAIL", "SMS", "VOICE", "PUSH", "WEBHOOK", "CUSTOM"]
AttributeValue = str | int | float | bool | list[str]
Id = Annotated[str, Meta(min_length=1, max_length=255)]
# tidings.engine.platform.limits.check_batch_size enforces it, naming the field; this says it in the OpenAPI document.
_BATCH_SIZE = Meta(extra_json_schema={"extra": {"minItems": 1, "maxItems": MAX_BATCH}})


class Body(Struct, forbid_unknown_fields=True, omit_defaults=False):
    pass


class UserFields(Body):
    attributes: dict[str, AttributeValue | None] = {}
    metrics: dict[str, int | float | None] = {}
    timezone: str | None | UnsetType = UNSET
    locale: str | None | UnsetType = UNSET


class UserBatchItem(UserFields):
    user_id: Id = ""


class UsersBatch(Body):
    items: Annotated[list[UserBatchItem], _BATCH_SIZE]


class Demographic(Body):
    platform: str | None = None
    platform_version: str | None = None
    locale: str | None = None
    timezone: str | None = None
    app_version: str | None = None
    make: str | None = None
    model: str | None = None
    model_version: str | None = None


class Location(Body):
    country: str | None = None
    region: str | None = None
    city: str | None = None
    postal_code: str | None = None
    latitude: float | None = None
    longitude: float | None = None


class EndpointFields(Body):
    channel: ChannelType | UnsetType = UNSET
    address: str | UnsetType = UNSET
    user_id: Id | None | UnsetType = UNSET
    attributes: dict[str, list[str] | None] = {}
    metrics: dict[str, int | float | None] = {}
    opt_out: bool | UnsetType = UNSET
    demographic: Demographic | UnsetType = UNSET
    location: Location | UnsetType = UNSET
    effective_date: str | None | UnsetType = UNSET


class EndpointBatchItem(EndpointFields):
    endpoint_id: Id = ""


class EndpointsBatch(Body):
    items: Annotated[list[EndpointBatchItem], _BATCH_SIZE]


class EventIn(Body):
    name: Annotated[str, Meta(min_length=1, max_length=255)]
    id: Id | None = None
    user_id: Id | None = None
    endpoint_id: Id | None = None
    timestamp: datetime | None = None  # RFC 3339; without an offset it is taken as UTC
    attributes: dict[str, Any] = {}
    metrics: dict[str, int | float] = {}


class EventsBatch(Body):
    events: Annotated[list[EventIn], _BATCH_SIZE]


class EndpointOut(Struct):
    endpoint_id: str
    user_id: str
    channel: str
    address: str
    attributes: dict[str, list[str]]
    metrics: dict[str, float]
    opt_out: bool
    demographic: dict[str, Any]
    location: dict[str, Any]
    effective_date: str | None
    created_at: str
    updated_at: str


class UserOut(Struct):
    user_id: str
    attributes: dict[str, Any]
    metrics: dict[str, float]
    timezone: str | None
    locale: str | None
    created_at: str
    updated_at: str
    endpoints: list[EndpointOut] = []
    segments: list[str] = []


class EventOut(Struct):
    id: str
    user_id: str
    endpoint_id: str | None
    name: str
    timestamp: str
    attributes: dict[str, Any]
    metrics: dict[str, float]


class Page(Struct):
    items: list[Any]
    next_cursor: str | None = None


class BatchResult(Struct):
    written: int
    created: int = 0


class EventsResult(Struct):
    stored: int
    duplicates: int
    users_created: int


class Deleted(Struct):
    deleted: str


def to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)
