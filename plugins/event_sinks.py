"""Built-in event sinks: ``webhook`` (batched, signed POST) and ``ndjson`` (append to a file).

``webhook``: each batch is one ``POST`` of ``{"stream": <id>, "records": [...]}`` (compact JSON, UTF-8)
with ``Content-Type: application/json``, ``X-Tidings-Stream: <id>``, ``Idempotency-Key:
<stream>:<first record id>-<last record id>`` (the same batch retried keeps its key: receivers
de-duplicate on it) and, when ``secret`` is set, ``X-Tidings-Signature: t=<unix>,v1=<hex
HMAC-SHA256(secret, "<t>.<body>")>`` (check it with :func:`tidings.plugins.webhook.verify_signature`).
A 2xx answer is success; anything else (or a network error) fails the batch, which the delivery loop
retries with backoff and finally dead-letters; the stream's ``last_error`` shows the status code only,
never the receiver's body. Every connection goes through the destination guard (:mod:`tidings.engine.platform.egress`, the
same rule as the webhook channel): non-public addresses are refused unless the operator allowed them with
``TIDINGS_ALLOW_PRIVATE_DESTINATIONS``.

``ndjson``: appends one JSON object per line to ``path``, relative to the workspace's own folder under the
streams folder (``TIDINGS_STREAMS_DIR``, default ``$TIDINGS_HOME/streams``): ``<streams>/<workspace>/<path>``,
so no workspace can name a file another one writes. Absolute paths and ``..`` are refused.
"""
from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import msgspec

from tidings.engine.platform import egress
from tidings.engine.channels import ChannelConfigError, ConfigField, WorkspaceRef
from tidings.engine.hookspecs import hookimpl
from tidings.plugins.webhook import ALLOW_PRIVATE_FIELD, SIGNATURE_HEADER, sign

_SAFE_FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class WebhookSink:
    kind = "webhook"

    def __init__(self, name: str, config: Mapping[str, Any]):
        self.name = name
        self.url = config["url"]
        self.secret = config.get("secret") or ""
        self.timeout = float(config.get("timeout") or 10.0)
        self.headers = dict(config.get("headers") or {})
        if not str(self.url).lower().startswith(("http://", "https://")):
            raise ChannelConfigError("url must be an http(s) URL")
        self._client: httpx.AsyncClient | None = None

    async def deliver(self, records: list[dict[str, Any]]) -> None:
        body = msgspec.json.encode({"stream": self.name, "records": records})
        first, last = records[0].get("id", ""), records[-1].get("id", "")
        headers = {
            **self.headers, "Content-Type": "application/json", "X-Tidings-Stream": self.name,
            "Idempotency-Key": f"{self.name}:{first}-{last}",
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        if self._client is None:
            # The guard checks every connection it opens (raising egress.DestinationRefused).
            self._client = egress.async_client(timeout=self.timeout, follow_redirects=False)
        resp = await self._client.post(self.url, content=body, headers=headers)
        if not 200 <= resp.status_code < 300:
            # The status only: the body of a page the workspace cannot see itself is none of its business.
            raise RuntimeError(f"HTTP {resp.status_code}")

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
        ALLOW_PRIVATE_FIELD,
        ConfigField(name="headers", type="json", default=None, description="Extra request headers"),
    )

    def __call__(self, name: str, config: Mapping[str, Any]) -> WebhookSink:
        return WebhookSink(name, config)


def streams_dir() -> Path:
    explicit = os.environ.get("TIDINGS_STREAMS_DIR")
    if explicit:
        return Path(explicit).absolute()
    return Path(os.environ.get("TIDINGS_HOME", ".tidings")).absolute() / "streams"


def workspace_folder(workspace: WorkspaceRef) -> Path:
    """The workspace's own folder under the streams folder: its name when that is a plain lower-case file
    name, else ``_ws<id>`` (plain names never start with ``_``, so the two kinds cannot meet; upper case is
    out so that "Acme" and "acme" stay apart on a case-insensitive file system)."""
    name = workspace.name
    folder = name if _SAFE_FOLDER.fullmatch(name) and name == name.lower() else f"_ws{workspace.id}"
    return streams_dir() / folder


class NdjsonSink:
    kind = "ndjson"

    def __init__(self, name: str, config: Mapping[str, Any], *, workspace: WorkspaceRef):
        self.name = name
        relative = str(config["path"])
        parts = Path(relative).parts
        if not relative or Path(relative).is_absolute() or relative.startswith("~") or ".." in parts:
            raise ChannelConfigError("path is relative to the workspace's streams folder: no absolute path, "
                                     "no '..'")
        base = workspace_folder(workspace)
        path = (base / relative).resolve()
        if not path.is_relative_to(base.resolve()) or path == base.resolve():
            raise ChannelConfigError("path must name a file inside the workspace's streams folder")
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
        ConfigField(name="path", required=True,
                    description="File, relative to the workspace's folder under the streams folder"),
        ConfigField(name="fsync", type="bool", default=False, description="fsync after every batch"),
    )

    def __call__(self, name: str, config: Mapping[str, Any], *, workspace: WorkspaceRef) -> NdjsonSink:
        return NdjsonSink(name, config, workspace=workspace)


__all__ = ["WebhookSink", "NdjsonSink", "streams_dir", "workspace_folder"]


@hookimpl
def register_event_sinks():
    return [_WebhookFactory(), _NdjsonFactory()]
