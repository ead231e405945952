"""Connecting to Temporal with msgspec payloads, so Structs (the journey IR, activity inputs)
cross the wire as typed JSON and decode back into the declared types."""
from __future__ import annotations

from typing import Any

import msgspec
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.converter import (
    CompositePayloadConverter, DataConverter, DefaultPayloadConverter, EncodingPayloadConverter,
    JSONPlainPayloadConverter,
)

from engine.config import Settings


class MsgspecJSONPayloadConverter(EncodingPayloadConverter):
    """json/plain via msgspec: same wire format as the SDK default, typed decoding of Structs."""

    @property
    def encoding(self) -> str:
        return "json/plain"

    def to_payload(self, value: Any) -> Payload | None:
        return Payload(metadata={"encoding": b"json/plain"}, data=msgspec.json.encode(value))

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        return msgspec.json.decode(payload.data, type=type_hint if type_hint is not None else Any)


class MsgspecPayloadConverter(CompositePayloadConverter):
    def __init__(self) -> None:
        converters = [
            MsgspecJSONPayloadConverter() if isinstance(c, JSONPlainPayloadConverter) else c
            for c in DefaultPayloadConverter.default_encoding_payload_converters
        ]
        super().__init__(*converters)


DATA_CONVERTER = DataConverter(payload_converter_class=MsgspecPayloadConverter)


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address, namespace=settings.temporal_namespace, data_converter=DATA_CONVERTER
    )
