"""Built-in channels ``twilio-sms`` and ``twilio-voice`` (Twilio REST API).

Any Twilio-compatible API works: ``base_url`` defaults to
``https://api.twilio.com`` (a non-public address is refused by the destination
guard, :mod:`tidings.engine.platform.egress`, unless the operator allowed it). Requests use HTTP basic auth ``account_sid:auth_token``
and are form-encoded:

* SMS: ``POST {base}/2010-04-01/Accounts/{sid}/Messages.json`` with ``To``,
  ``From``, ``Body`` and, when ``status_callback_url`` is set, ``StatusCallback``.
* Voice: ``POST {base}/2010-04-01/Accounts/{sid}/Calls.json`` with ``To``,
  ``From``, ``Twiml=<Response><Say>text</Say></Response>`` (XML-escaped).

Classification: 2xx sent (``sid`` = provider message id); 429 and 5xx and
network errors transient; other 4xx permanent.

Status callbacks (``parse_feedback``): the ``StatusCallback`` URL we send is
``status_callback_url`` plus ``tidings_message_id=<our id>``, so events carry
our message id. Each callback is verified with Twilio's ``X-Twilio-Signature``:
base64(HMAC-SHA1(auth_token, full URL + concatenation of sorted POST
``key + value`` pairs)). The HTTP layer must pass the exact public URL Twilio
called (scheme, host, path and query) as ``url=``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit
from xml.sax.saxutils import escape as xml_escape

import httpx

from tidings.engine.platform import egress
from tidings.engine.channels import (
    Channel,
    ChannelConfigError,
    ChannelType,
    ConfigField,
    FeedbackEvent,
    FeedbackSignatureError,
    check_destination,
    OutgoingMessage,
    SendResult,
)
from tidings.engine.hookspecs import hookimpl

_CONFIG = (
    ConfigField(name="base_url", default="https://api.twilio.com"),
    ConfigField(name="account_sid", required=True),
    ConfigField(name="auth_token", required=True, secret=True),
    ConfigField(name="from_number", required=True, description="E.164 number or sender id"),
    ConfigField(
        name="status_callback_url",
        description="Public URL of our Twilio status-callback endpoint (enables feedback)",
    ),
    ConfigField(name="timeout", type="float", default=10.0),
    ConfigField(name="concurrency", type="int", default=8, description="Parallel requests per batch"),
)

MESSAGE_STATUS_EVENTS = {
    "sent": "sent",
    "delivered": "delivered",
    "undelivered": "failed",
    "failed": "failed",
    "read": "opened",
}
CALL_STATUS_EVENTS = {
    "completed": "delivered",
    "busy": "failed",
    "no-answer": "failed",
    "failed": "failed",
    "canceled": "failed",
}
# Twilio error codes meaning the number will never work.
PERMANENT_ERROR_CODES = {"21211", "21610", "21614", "30003", "30005", "30006", "30007", "30008"}


def twilio_signature(auth_token: str, url: str, params: Mapping[str, Any] | list[tuple[str, str]]) -> str:
    """Compute Twilio's ``X-Twilio-Signature`` for a form-encoded POST."""
    items = params.items() if isinstance(params, Mapping) else params
    data = url + "".join(k + v for k, v in sorted(items))
    digest = hmac.new(auth_token.encode(), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class _TwilioChannel(Channel):
    config_fields = _CONFIG
    default_rate_limit = 1.0  # Twilio's default for a long-code number: 1 msg/s
    _resource = ""

    def _form(self, msg: OutgoingMessage, cfg: Mapping[str, Any]) -> dict[str, str]:
        raise NotImplementedError

    async def send_batch(
        self, messages: list[OutgoingMessage], config: Mapping[str, Any]
    ) -> list[SendResult]:
        cfg = self.resolve_config(config)
        base = cfg["base_url"].rstrip("/")
        url = f"{base}/2010-04-01/Accounts/{cfg['account_sid']}/{self._resource}"
        sem = asyncio.Semaphore(max(1, cfg["concurrency"]))
        await check_destination("base_url", url)
        async with egress.async_client(
            auth=(cfg["account_sid"], cfg["auth_token"]), timeout=cfg["timeout"]
        ) as client:

            async def one(msg: OutgoingMessage) -> SendResult:
                try:
                    form = self._form(msg, cfg)
                except ValueError as exc:
                    return SendResult.failed(msg.message_id, str(exc), permanent=True)
                async with sem:
                    try:
                        resp = await client.post(url, data=form, headers={"Accept": "application/json"})
                    except egress.DestinationRefused as exc:  # the name resolved elsewhere at connect time
                        return SendResult.failed(msg.message_id, str(exc), permanent=True)
                    except httpx.HTTPError as exc:
                        return SendResult.failed(
                            msg.message_id, f"{type(exc).__name__}: {exc}", permanent=False
                        )
                return _result(msg, resp)

            return list(await asyncio.gather(*(one(m) for m in messages)))

    def parse_feedback(
        self,
        headers: Mapping[str, str],
        body: bytes,
        config: Mapping[str, Any],
        *,
        url: str | None = None,
    ) -> list[FeedbackEvent]:
        cfg = self.resolve_config(config)
        url = url or cfg.get("status_callback_url")
        if not url:
            raise ChannelConfigError("the callback URL is needed to verify Twilio signatures")
        sig = {k.lower(): v for k, v in headers.items()}.get("x-twilio-signature", "")
        params = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        expected = twilio_signature(cfg["auth_token"], url, params)
        if not sig or not hmac.compare_digest(sig.encode(), expected.encode()):
            raise FeedbackSignatureError("X-Twilio-Signature does not match")
        form = dict(params)
        our_id = parse_qs(urlsplit(url).query).get("tidings_message_id", [None])[0]
        ts = datetime.now(timezone.utc)
        if form.get("Timestamp"):
            try:
                ts = parsedate_to_datetime(form["Timestamp"]).astimezone(timezone.utc)
            except (TypeError, ValueError):
                pass
        if "CallStatus" in form and "MessageStatus" not in form:
            status, sid, address = form["CallStatus"], form.get("CallSid"), form.get("To")
            event_type = CALL_STATUS_EVENTS.get(status)
        else:
            status = form.get("MessageStatus") or form.get("SmsStatus", "")
            sid = form.get("MessageSid") or form.get("SmsSid")
            address = form.get("To")
            event_type = MESSAGE_STATUS_EVENTS.get(status)
        if event_type is None:  # queued, sending, ringing, in-progress...: not an event
            return []
        code = form.get("ErrorCode") or None
        permanent = None
        if event_type == "failed":
            permanent = code in PERMANENT_ERROR_CODES if code else False
        details = {"status": status}
        if code:
            details["error_code"] = code
        return [
            FeedbackEvent(
                event_type=event_type,
                timestamp=ts,
                channel=self.name,
                provider_message_id=sid,
                message_id=our_id,
                address=address,
                permanent=permanent,
                details=details,
            )
        ]


def _callback_url(cfg: Mapping[str, Any], message_id: str) -> str | None:
    base = cfg.get("status_callback_url")
    if not base:
        return None
    sep = "&" if urlsplit(base).query else "?"
    return f"{base}{sep}{urlencode({'tidings_message_id': message_id})}"


def _result(msg: OutgoingMessage, resp: httpx.Response) -> SendResult:
    try:
        payload = resp.json()
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    if 200 <= resp.status_code < 300:
        sid = payload.get("sid")
        if not sid:
            return SendResult.failed(msg.message_id, "provider response has no sid", permanent=False)
        return SendResult.sent(msg.message_id, sid)
    detail = payload.get("message") or resp.text[:200]
    code = payload.get("code")
    err = f"HTTP {resp.status_code}" + (f" (Twilio error {code})" if code else "") + f": {detail}"
    transient = resp.status_code == 429 or resp.status_code >= 500
    return SendResult.failed(msg.message_id, err, permanent=not transient,
                             error_code=str(code) if code not in (None, "") else None)


class TwilioSmsChannel(_TwilioChannel):
    name = "twilio-sms"
    channel_type = ChannelType.SMS
    description = "SMS through the Twilio (or Twilio-compatible) Messages API."
    _resource = "Messages.json"

    def _form(self, msg: OutgoingMessage, cfg: Mapping[str, Any]) -> dict[str, str]:
        if not msg.body:
            raise ValueError("SMS body is empty")
        form = {"To": msg.to, "From": cfg["from_number"], "Body": msg.body}
        cb = _callback_url(cfg, msg.message_id)
        if cb:
            form["StatusCallback"] = cb
        return form


class TwilioVoiceChannel(_TwilioChannel):
    name = "twilio-voice"
    channel_type = ChannelType.VOICE
    description = "Voice calls reading a text (TwiML <Say>) through the Twilio Calls API."
    _resource = "Calls.json"

    def _form(self, msg: OutgoingMessage, cfg: Mapping[str, Any]) -> dict[str, str]:
        text = msg.text if msg.text is not None else msg.body
        if not text:
            raise ValueError("voice message text is empty")
        form = {
            "To": msg.to,
            "From": cfg["from_number"],
            "Twiml": f"<Response><Say>{xml_escape(text)}</Say></Response>",
        }
        cb = _callback_url(cfg, msg.message_id)
        if cb:
            form["StatusCallback"] = cb
            form["StatusCallbackEvent"] = "completed"
        return form


__all__ = ["TwilioSmsChannel", "TwilioVoiceChannel", "twilio_signature"]


@hookimpl
def register_channels() -> list[Channel]:
    return [TwilioSmsChannel(), TwilioVoiceChannel()]
