"""Built-in channel ``fcm``: push notifications through Firebase Cloud Messaging HTTP v1.

``POST {base_url}/v1/projects/{project_id}/messages:send`` with
``{"message": {"token": <address>, "notification": {"title", "body"}, "data": {str: str}}}``
and ``Authorization: Bearer <token>``. ``base_url`` and the token URI go through
the destination guard (:mod:`tidings.engine.platform.egress`): non-public addresses are refused
unless the operator allowed them.

The token is either the ``access_token`` setting or obtained from a Google
service account (``service_account_json``: the JSON key file's content) with
the OAuth 2.0 JWT-bearer grant: an RS256-signed assertion (needs the
``cryptography`` package) is posted to the key's ``token_uri`` (overridable by
the ``token_uri`` setting). Tokens are cached until one minute before expiry.

Error mapping (from ``error.details[].errorCode`` or ``error.status``):
UNREGISTERED, INVALID_ARGUMENT, SENDER_ID_MISMATCH, NOT_FOUND,
THIRD_PARTY_AUTH_ERROR, PERMISSION_DENIED are permanent; UNAVAILABLE,
INTERNAL, QUOTA_EXCEEDED / RESOURCE_EXHAUSTED, HTTP 429 and 5xx and network
errors are transient. A 401 with a service account refreshes the token once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from tidings.engine.platform import egress
from tidings.engine.channels import (
    Channel,
    ChannelConfigError,
    ChannelType,
    ConfigField,
    OutgoingMessage,
    SendResult,
    check_destination,
)
from tidings.engine.hookspecs import hookimpl

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"

PERMANENT_ERRORS = {
    "UNREGISTERED",
    "INVALID_ARGUMENT",
    "SENDER_ID_MISMATCH",
    "NOT_FOUND",
    "THIRD_PARTY_AUTH_ERROR",
    "PERMISSION_DENIED",
}
TRANSIENT_ERRORS = {"UNAVAILABLE", "INTERNAL", "QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED"}


class TokenError(Exception):
    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent  # the token URI is refused by the destination guard: retrying cannot help


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_service_account_jwt(sa: Mapping[str, Any], token_uri: str, now: float | None = None) -> str:
    """RS256 JWT assertion for Google's OAuth JWT-bearer grant."""
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise ChannelConfigError(
            "service_account_json needs the 'cryptography' package; use access_token instead"
        ) from exc
    now = int(now if now is not None else time.time())
    header = {"alg": "RS256", "typ": "JWT"}
    if sa.get("private_key_id"):
        header["kid"] = sa["private_key_id"]
    claims = {
        "iss": sa["client_email"],
        "scope": FCM_SCOPE,
        "aud": token_uri,
        "iat": now,
        "exp": now + 3600,
    }
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    key = serialization.load_pem_private_key(sa["private_key"].encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):  # RS256 signs with RSA only
        raise ChannelConfigError("service_account_json: private_key is not an RSA key")
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64url(signature)


class FcmChannel(Channel):
    name = "fcm"
    channel_type = ChannelType.PUSH
    description = "Push notifications through Firebase Cloud Messaging (HTTP v1 API)."
    default_rate_limit = 500.0
    config_fields = (
        ConfigField(name="base_url", default="https://fcm.googleapis.com"),
        ConfigField(name="project_id", required=True),
        ConfigField(name="access_token", secret=True, description="OAuth access token"),
        ConfigField(
            name="service_account_json",
            type="json",
            secret=True,
            description="Service-account key (JSON text or object); alternative to access_token",
        ),
        ConfigField(name="token_uri", description="Override the service account's token_uri"),
        ConfigField(name="timeout", type="float", default=10.0),
        ConfigField(name="concurrency", type="int", default=16),
    )

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._token_lock = asyncio.Lock()

    # -- auth ---------------------------------------------------------------
    def _service_account(self, cfg: Mapping[str, Any]) -> dict[str, Any] | None:
        sa = cfg.get("service_account_json")
        if sa is None:
            return None
        if isinstance(sa, str):
            try:
                sa = json.loads(sa)
            except ValueError:
                raise ChannelConfigError("service_account_json is not valid JSON") from None
        if not isinstance(sa, dict) or not sa.get("client_email") or not sa.get("private_key"):
            raise ChannelConfigError("service_account_json lacks client_email or private_key")
        return sa

    async def _token(
        self, client: httpx.AsyncClient, cfg: Mapping[str, Any], *, refresh: bool = False
    ) -> str:
        sa = self._service_account(cfg)
        if sa is None:
            if not cfg.get("access_token"):
                raise ChannelConfigError("fcm needs access_token or service_account_json")
            return cfg["access_token"]
        token_uri = cfg.get("token_uri") or sa.get("token_uri") or DEFAULT_TOKEN_URI
        key = (sa["client_email"], token_uri)
        async with self._token_lock:
            cached = self._tokens.get(key)
            if cached and not refresh and cached[1] > time.time() + 60:
                return cached[0]
            assertion = make_service_account_jwt(sa, token_uri)
            try:
                resp = await client.post(
                    token_uri,
                    data={
                        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                        "assertion": assertion,
                    },
                )
            except egress.DestinationRefused as exc:  # the name resolved elsewhere at connect time
                raise TokenError(f"token_uri: {exc}", permanent=True) from None
            except httpx.HTTPError as exc:
                raise TokenError(f"token request failed: {type(exc).__name__}: {exc}") from exc
            if resp.status_code != 200:
                raise TokenError(f"token request failed: HTTP {resp.status_code} {resp.text[:200]}")
            body = resp.json()
            token = body["access_token"]
            self._tokens[key] = (token, time.time() + float(body.get("expires_in", 3600)))
            return token

    async def _check_destinations(self, url: str, cfg: Mapping[str, Any]) -> None:
        """The destination guard (tidings.engine.platform.egress) on base_url and the token URI before the batch: a refused
        one fails it permanently. The client checks every connection it opens again."""
        sa = self._service_account(cfg)
        token_uri = (cfg.get("token_uri") or sa.get("token_uri") or DEFAULT_TOKEN_URI) if sa else None
        for name, target in (("base_url", url), ("token_uri", token_uri)):
            if target is None:
                continue
            await check_destination(name, target)

    # -- sending ------------------------------------------------------------
    async def send_batch(
        self, messages: list[OutgoingMessage], config: Mapping[str, Any]
    ) -> list[SendResult]:
        cfg = self.resolve_config(config)
        url = f"{cfg['base_url'].rstrip('/')}/v1/projects/{cfg['project_id']}/messages:send"
        uses_sa = cfg.get("service_account_json") is not None
        sem = asyncio.Semaphore(max(1, cfg["concurrency"]))
        await self._check_destinations(url, cfg)
        async with egress.async_client(timeout=cfg["timeout"]) as client:
            try:
                token = await self._token(client, cfg)
            except TokenError as exc:
                return [SendResult.failed(m.message_id, str(exc), permanent=exc.permanent) for m in messages]
            state = {"token": token}

            async def one(msg: OutgoingMessage) -> SendResult:
                body = {"message": fcm_message(msg)}
                async with sem:
                    for attempt in (1, 2):
                        try:
                            resp = await client.post(
                                url,
                                json=body,
                                headers={"Authorization": f"Bearer {state['token']}"},
                            )
                        except egress.DestinationRefused as exc:  # resolved elsewhere at connect time
                            return SendResult.failed(msg.message_id, str(exc), permanent=True)
                        except httpx.HTTPError as exc:
                            return SendResult.failed(
                                msg.message_id, f"{type(exc).__name__}: {exc}", permanent=False
                            )
                        if resp.status_code == 401 and uses_sa and attempt == 1:
                            try:
                                state["token"] = await self._token(client, cfg, refresh=True)
                            except TokenError as exc:
                                return SendResult.failed(msg.message_id, str(exc), permanent=exc.permanent)
                            continue
                        return _result(msg, resp)
                raise AssertionError("unreachable")

            return list(await asyncio.gather(*(one(m) for m in messages)))


def fcm_message(msg: OutgoingMessage) -> dict[str, Any]:
    """The ``message`` object of an FCM v1 send request."""
    out: dict[str, Any] = {"token": msg.to}
    notification = {}
    if msg.title:
        notification["title"] = msg.title
    if msg.body:
        notification["body"] = msg.body
    if notification:
        out["notification"] = notification
    if msg.data:
        out["data"] = {str(k): str(v) for k, v in msg.data.items()}
    return out


def _result(msg: OutgoingMessage, resp: httpx.Response) -> SendResult:
    try:
        payload = resp.json()
    except ValueError:
        payload = {}
    if 200 <= resp.status_code < 300:
        return SendResult.sent(msg.message_id, (payload or {}).get("name"))
    err = (payload or {}).get("error") or {}
    code = None
    for d in err.get("details") or []:
        if isinstance(d, dict) and d.get("errorCode"):
            code = d["errorCode"]
    code = code or err.get("status")
    text = f"HTTP {resp.status_code} {code or ''}: {err.get('message') or resp.text[:200]}"
    if resp.status_code == 429 or resp.status_code >= 500 or code in TRANSIENT_ERRORS:
        permanent = False
    elif code in PERMANENT_ERRORS:
        permanent = True
    else:
        permanent = 400 <= resp.status_code < 500
    return SendResult.failed(msg.message_id, text, permanent=permanent)


__all__ = ["FcmChannel", "fcm_message", "make_service_account_jwt"]


@hookimpl
def register_channels() -> list[Channel]:
    return [FcmChannel()]
