"""Built-in channel ``apns``: push notifications straight to Apple Push Notification service.

Apple's provider API speaks HTTP/2 only: ``POST {base_url}/3/device/{device token}`` with token-based
authentication, ``authorization: bearer <JWT>``, where the JWT is ES256-signed with the team's ``.p8`` key
(header ``alg``/``kid`` = key id, claims ``iss`` = team id and ``iat``). Apple refuses a token older than an
hour and one renewed more often than every 20 minutes, so one token per key is kept for 50 minutes.

Headers: ``apns-topic`` (the app's bundle id), ``apns-push-type``, ``apns-priority``, ``apns-expiration``
and, when given, ``apns-collapse-id``; ``apns-id`` is our message id (a UUID) so Apple's answer and
logs carry it. Body: ``{"aps": {"alert": {"title", "body"}, "sound"?}, **data}`` from the push template
parts (``background`` pushes carry ``{"aps": {"content-available": 1}, **data}``).

Answers: 200 → sent (provider id: the ``apns-id`` header). 400 / 403 / 404 / 405 / 410 / 413 with a
``reason`` → permanent (BadDeviceToken, Unregistered, DeviceTokenNotForTopic, PayloadTooLarge...),
recorded as ``_push.failed`` with the reason, as FCM's UNREGISTERED is; ``ExpiredProviderToken`` renews
the token once. 429 and 5xx, timeouts and network errors → transient. The HTTP/2 connection of each
(base URL, event loop) is kept between batches, as Apple asks, and carries a batch's requests at once.
"""
from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import re
import time
import uuid
import weakref
from collections.abc import Mapping
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tidings.engine.platform import egress
from tidings.engine.channels import (
    Channel, ChannelConfigError, ChannelType, ConfigField, OutgoingMessage, SendResult, check_destination,
)
from tidings.engine.hookspecs import hookimpl

PRODUCTION_URL = "https://api.push.apple.com"
SANDBOX_URL = "https://api.sandbox.push.apple.com"
TOKEN_LIFETIME = 50 * 60  # Apple: older than 60 min is refused; renewed within 20 min is throttled
PUSH_TYPES = ("alert", "background", "voip", "complication", "fileprovider", "mdm", "location", "liveactivity",
              "pushtotalk", "widgets")
PERMANENT_STATUSES = {400, 403, 404, 405, 410, 413}
_DEVICE_TOKEN = re.compile(r"^[0-9A-Fa-f]{16,200}$")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@functools.lru_cache(maxsize=32)  # parsed once per key, not at every batch
def load_signing_key(pem: str) -> ec.EllipticCurvePrivateKey:
    """The ``.p8`` key (PKCS#8 PEM of a P-256 key) Apple hands out for token-based authentication."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ChannelConfigError("setting 'private_key' is not a PEM private key (the .p8 file's content)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ChannelConfigError("setting 'private_key' must be an APNs .p8 key (EC P-256)")
    return key


def make_provider_token(private_key_pem: str, key_id: str, team_id: str, now: float | None = None) -> str:
    """The ES256 JWT APNs takes as ``authorization: bearer``: raw r||s signature, as JWS asks."""
    key = load_signing_key(private_key_pem)
    header = _b64url(json.dumps({"alg": "ES256", "kid": key_id}, separators=(",", ":")).encode())
    claims = _b64url(json.dumps({"iss": team_id, "iat": int(now if now is not None else time.time())},
                                separators=(",", ":")).encode())
    r, s = decode_dss_signature(key.sign(f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{header}.{claims}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def apns_payload(msg: OutgoingMessage, push_type: str, sound: str | None) -> dict[str, Any]:
    """The JSON body: ``aps`` from the title and body parts, the ``data`` part's keys beside it."""
    if push_type == "background":
        aps: dict[str, Any] = {"content-available": 1}
    else:
        alert = {k: v for k, v in (("title", msg.title), ("body", msg.body)) if v}
        aps = {"alert": alert} if alert else {}
        if sound:
            aps["sound"] = sound
    return {**{k: v for k, v in msg.data.items() if k != "aps"}, "aps": aps}


class ApnsChannel(Channel):
    name = "apns"
    channel_type = ChannelType.PUSH
    description = "Push notifications to Apple devices through APNs (HTTP/2, token-based authentication)."
    default_rate_limit = 500.0
    config_fields = (
        ConfigField(name="environment", default="production", choices=("production", "sandbox"),
                    description="APNs environment of the app's build (sandbox: development builds)"),
        ConfigField(name="base_url", description="Override the environment's APNs URL (tests, proxies)"),
        ConfigField(name="team_id", required=True, description="Apple developer team id (JWT iss)"),
        ConfigField(name="key_id", required=True, description="Id of the .p8 signing key (JWT kid)"),
        ConfigField(name="private_key", required=True, secret=True, description="Content of the .p8 key file"),
        ConfigField(name="topic", required=True, description="apns-topic: the app's bundle id"),
        ConfigField(name="push_type", default="alert", choices=PUSH_TYPES),
        ConfigField(name="priority", type="int", description="apns-priority: 10 now, 5 power-aware, 1 low; "
                                                             "default 10 (5 for background pushes)"),
        ConfigField(name="ttl", type="int", default=86400,
                    description="seconds APNs keeps an undelivered notification (apns-expiration); 0: try once"),
        ConfigField(name="collapse_id", description="apns-collapse-id (a message's own header wins)"),
        ConfigField(name="sound", description="aps.sound, e.g. default"),
        ConfigField(name="timeout", type="float", default=10.0),
        ConfigField(name="concurrency", type="int", default=64, description="streams in flight per batch"),
    )

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        # One HTTP/2 connection per (loop, URL, timeout): clients belong to the loop that made them.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, httpx.AsyncClient]] = (
            weakref.WeakKeyDictionary())

    def resolve_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        cfg = super().resolve_config(config)
        if cfg["priority"] is not None and cfg["priority"] not in (1, 5, 10):
            raise ChannelConfigError("setting 'priority' must be 10, 5 or 1")
        if cfg["ttl"] < 0:
            raise ChannelConfigError("setting 'ttl' must be 0 or more seconds")
        load_signing_key(cfg["private_key"])  # a bad key is refused when the channel is configured
        return cfg

    def _token(self, cfg: Mapping[str, Any], *, renew: bool = False) -> str:
        key = (cfg["team_id"], cfg["key_id"], hashlib.sha256(cfg["private_key"].encode()).hexdigest())
        cached = self._tokens.get(key)
        if cached and not renew and time.time() - cached[1] < TOKEN_LIFETIME:
            return cached[0]
        now = time.time()
        token = make_provider_token(cfg["private_key"], cfg["key_id"], cfg["team_id"], now)
        self._tokens[key] = (token, now)
        return token

    def _client(self, base_url: str, timeout: float) -> httpx.AsyncClient:
        per_loop = self._clients.setdefault(asyncio.get_running_loop(), {})
        client = per_loop.get((base_url, timeout))
        if client is None or client.is_closed:
            # HTTP/2 only (http1=False): h2 over TLS by ALPN, or prior knowledge on plain http (tests).
            # Through the destination guard (tidings.engine.platform.egress): every connection it opens is checked.
            client = per_loop[(base_url, timeout)] = egress.async_client(
                base_url=base_url, http1=False, http2=True, timeout=timeout,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
        return client

    async def send_batch(self, messages: list[OutgoingMessage], config: Mapping[str, Any]) -> list[SendResult]:
        cfg = self.resolve_config(config)
        base_url = (cfg["base_url"] or (SANDBOX_URL if cfg["environment"] == "sandbox" else PRODUCTION_URL)).rstrip("/")
        await check_destination("base_url", base_url)
        client = self._client(base_url, cfg["timeout"])
        push_type = cfg["push_type"]
        priority = cfg["priority"] or (5 if push_type == "background" else 10)
        sem = asyncio.Semaphore(max(1, cfg["concurrency"]))
        state = {"token": self._token(cfg), "renewed": False}

        async def one(msg: OutgoingMessage) -> SendResult:
            if not _DEVICE_TOKEN.match(msg.to):
                return SendResult.failed(msg.message_id, "BadDeviceToken: an APNs device token is hexadecimal",
                                         permanent=True)
            apns_id = str(uuid.UUID(msg.message_id)) if _is_uuid(msg.message_id) else str(uuid.uuid4())
            headers = {
                "apns-topic": cfg["topic"], "apns-push-type": push_type, "apns-priority": str(priority),
                "apns-expiration": str(int(time.time()) + cfg["ttl"] if cfg["ttl"] else 0), "apns-id": apns_id,
            }
            collapse_id = msg.headers.get("apns-collapse-id") or cfg["collapse_id"]
            if collapse_id:
                if len(collapse_id.encode()) > 64:
                    return SendResult.failed(msg.message_id, "BadCollapseId: apns-collapse-id is at most 64 bytes",
                                             permanent=True)
                headers["apns-collapse-id"] = collapse_id
            body = json.dumps(apns_payload(msg, push_type, cfg["sound"]), separators=(",", ":"),
                              ensure_ascii=False).encode()
            async with sem:
                for attempt in (1, 2):
                    token = state["token"]
                    try:
                        resp = await client.post(f"/3/device/{msg.to}", content=body,
                                                 headers={**headers, "authorization": f"bearer {token}"})
                    except Exception as exc:  # noqa: BLE001 - httpx, h2 or socket errors alike
                        # this message only, and transient: an exception out of gather would fail the whole
                        # batch, and its retry would push again what Apple already accepted
                        return SendResult.failed(msg.message_id, f"{type(exc).__name__}: {exc}", permanent=False)
                    if attempt == 1 and resp.status_code == 403 and _reason(resp) == "ExpiredProviderToken":
                        if state["token"] == token:  # one renewal for the whole batch
                            state["token"] = self._token(cfg, renew=True)
                        continue
                    return _result(msg, resp)
            raise AssertionError("unreachable")

        return list(await asyncio.gather(*(one(m) for m in messages)))


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except ValueError:
        return False


def _reason(resp: httpx.Response) -> str:
    try:
        return str((resp.json() or {}).get("reason") or "")
    except ValueError:
        return ""


def _result(msg: OutgoingMessage, resp: httpx.Response) -> SendResult:
    if resp.status_code == 200:
        return SendResult.sent(msg.message_id, resp.headers.get("apns-id"))
    reason = _reason(resp) or resp.reason_phrase
    text = f"HTTP {resp.status_code} {reason}"
    if resp.status_code == 410:
        try:
            stamp = (resp.json() or {}).get("timestamp")
        except ValueError:
            stamp = None
        text += f" (token invalid since {stamp} ms)" if stamp else ""
    return SendResult.failed(msg.message_id, text, permanent=resp.status_code in PERMANENT_STATUSES)


__all__ = ["ApnsChannel", "apns_payload", "make_provider_token"]


@hookimpl
def register_channels() -> list[Channel]:
    return [ApnsChannel()]
