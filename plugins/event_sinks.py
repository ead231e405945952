"""Built-in event sinks: ``webhook`` (batched, signed POST) and ``ndjson`` (append to a file).

``webhook``: each batch is one ``POST`` of ``{"stream": <id>, "records": [...]}`` (compact JSON, UTF-8)
with ``Content-Type: application/json``, ``X-Tidings-Stream: <id>``, ``Idempotency-Key:
<stream>:<first record id>-<last record id>`` (the same batch retried keeps its key: receivers
de-duplicate on it) and, when ``secret`` is set, ``X-Tidings-Signature: t=<unix>,v1=<hex
HMAC-SHA256(secret, "<t>.<body>")>`` (check it with :func:`plugins.webhook.verify_signature`).
A 2xx answer is success; anything else (or a network error) fails the batch, which the delivery loop
retries with backoff and finally dead-letters. Loopback/private addresses are refused unless
``allow_private_addresses`` is true (same rule as the webhook channel).

``ndjson``: appends one JSON object per line to ``path``, relative to the streams folder
(``TIDINGS_STREAMS_DIR``, default ``$TIDINGS_HOME/streams``); paths leaving that folder are refused.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import msgspec

from engine.channels import ChannelConfigError, ConfigField
from engine.hookspecs import hookimpl
from plugins.webhook import SIGNATURE_HEADER, AddressRefused, check_destination, sign


class WebhookSink:
    kind = "webhook"

    def __init__(self, name: str, config: Mapping[str, Any]):
        self.name = name
        self.url = config["url"]
        self.secret = config.get("secret") or ""
        self.timeout = float(config.get("timeout") or 10.0)
        self.allow_private = bool(config.get("allow_private_addresses"))
        self.headers = dict(config.get("headers") or {})
        if not str(self.url).lower().startswith(("http://", "https://")):
            raise ChannelConfigError("url must be an http(s) URL")
        self._client: httpx.AsyncClient | None = None
        self._checked = False

    async def deliver(self, records: list[dict[str, Any]]) -> None:
        if not self._checked:
            try:
                await check_destination(self.url, allow_private=self.allow_private)
            except AddressRefused as exc:
                raise RuntimeError(str(exc)) from None
            self._checked = True
        body = msgspec.json.encode({"stream": self.name, "records": records})
        first, last = records[0].get("id", ""), records[-1].get("id", "")
        headers = {
            **self.headers, "Content-Type": "application/json", "X-Tidings-Stream": self.name,
            "Idempotency-Key": f"{self.name}:{first}-{last}",
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        resp = await self._client.post(self.url, content=body, headers=headers)
        if not 200 <= resp.status_code < 300:
            raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:200]}")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class _WebhookFactory:
    kind = "webhook"
    name = "webhook"
    config_fields = (
        ConfigField(name="url", required=True, description="Receiver URL (http or https)"),
        ConfigField(name="secret", secret=True, description="HMAC key for X-Tidings-Signature"),
        ConfigField(name="timeout", type="float", default=10.0),
        ConfigField(name="allow_private_addresses", type="bool", default=False),
        ConfigField(name="headers", type="json", default=None, description="Extra request headers"),
    )

    def __call__(self, name: str, config: Mapping[str, Any]) -> WebhookSink:
        return WebhookSink(name, config)


def streams_dir() -> Path:
    explicit = os.environ.get("TIDINGS_STREAMS_DIR")
    if explicit:
        return Path(explicit).absolute()
    return Path(os.environ.get("TIDINGS_HOME", ".tidings")).absolute() / "streams"


class NdjsonSink:
    kind = "ndjson"

    def __init__(self, name: str, config: Mapping[str, Any]):
        self.name = name
        base = streams_dir()
        path = (base / config["path"]).resolve()
        if not path.is_relative_to(base.resolve()):
            raise ChannelConfigError(f"path must stay inside the streams folder {base}")
        self.path = path
        self.fsync = bool(config.get("fsync"))

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())

    async def deliver(self, records: list[dict[str, Any]]) -> None:
        data = b"".join(msgspec.json.encode(r) + b"\n" for r in records)
        await asyncio.to_thread(self._write, data)


class _NdjsonFactory:
    kind = "ndjson"
    name = "ndjson"
    config_fields = (
        ConfigField(name="path", required=True, description="File, relative to the streams folder"),
        ConfigField(name="fsync", type="bool", default=False, description="fsync after every batch"),
    )

    def __call__(self, name: str, config: Mapping[str, Any]) -> NdjsonSink:
        return NdjsonSink(name, config)


__all__ = ["WebhookSink", "NdjsonSink", "streams_dir"]


@hookimpl
def register_event_sinks():
    return [_WebhookFactory(), _NdjsonFactory()]
