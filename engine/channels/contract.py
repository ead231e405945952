"""Channel types shared by the engine and every channel plugin.

A *channel* is an object that knows how to deliver already-rendered messages
through one provider (an SMTP server, Twilio, FCM, an HTTP endpoint...).
Channels are contributed by plugins through the ``register_channels`` hook
(see :mod:`tidings.engine.channels.hookspecs`). A channel object is stateless with respect to
configuration: the engine passes the channel's settings to every call, so one
channel object can serve several configured senders (e.g. two SMTP relays).

Contract of :meth:`Channel.send_batch`:

* returns exactly one :class:`SendResult` per message, in the same order;
* never raises for a per-message or provider problem: it reports it as a
  ``failed`` result, with ``permanent=True`` when retrying cannot help (bad
  address, rejected recipient, 4xx from an API) and ``permanent=False`` for
  transient problems (network, timeouts, 5xx, 429);
* may raise :class:`ChannelConfigError` for invalid configuration.

Retries of transient failures are done by :func:`send_with_retry`, never by
the channels themselves. Cross-worker rate limiting is done by the caller
(Temporal task-queue activity rate limits) using the channel's
``default_rate_limit`` (messages per second) unless the operator overrides it.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import msgspec

from tidings.engine.platform import egress
from tidings.engine.platform.retry import backoff
from tidings.engine.workspaces.service import WorkspaceRef

__all__ = [
    "ChannelType",
    "ConfigField",
    "OutgoingMessage",
    "SendResult",
    "FeedbackEvent",
    "FEEDBACK_EVENT_TYPES",
    "Channel",
    "ChannelError",
    "ChannelConfigError",
    "ChannelContractError",
    "FeedbackSignatureError",
    "EventSink",
    "EventSinkFactory",
    "WorkspaceRef",
    "RetryPolicy",
    "send_with_retry",
    "resolve_config",
    "redact_config",
    "secret_keys",
    "check_destination",
]


class ChannelType(str, enum.Enum):
    """Kind of channel; used to pick template parts and endpoint addresses."""

    EMAIL = "EMAIL"
    SMS = "SMS"
    VOICE = "VOICE"
    PUSH = "PUSH"
    WEBHOOK = "WEBHOOK"
    CUSTOM = "CUSTOM"


class ChannelError(Exception):
    """Base class for channel errors."""


class ChannelConfigError(ChannelError):
    """The configuration given to a channel is invalid (missing/unknown key...)."""


async def check_destination(name: str, url: str) -> None:
    """A channel's configured destination (`name` is its config field), checked before a batch through the
    destination guard (tidings.engine.platform.egress): a refused one is a configuration error (the batch fails
    permanently, naming the field); one that does not resolve now is let through, its requests failing
    transiently like any network error."""
    try:
        await egress.check_url(url)
    except egress.DestinationRefused as exc:
        raise ChannelConfigError(f"{name}: {exc}") from None
    except OSError:
        pass


class ChannelContractError(ChannelError):
    """A channel broke the ``send_batch`` contract (wrong number of results...)."""


class FeedbackSignatureError(ChannelError):
    """A provider callback failed signature / shared-secret verification.

    The HTTP layer must answer 403 and record nothing.
    """


class ConfigField(msgspec.Struct, frozen=True, kw_only=True):
    """Description of one configuration setting of a channel.

    ``secret=True`` marks values (passwords, tokens, keys) that must never be
    logged nor returned by an API; use :func:`redact_config` before showing a
    configuration anywhere.
    """

    name: str
    description: str = ""
    required: bool = False
    secret: bool = False
    default: Any = None
    type: Literal["str", "int", "float", "bool", "json"] = "str"
    choices: tuple[str, ...] | None = None


class OutgoingMessage(msgspec.Struct, kw_only=True):
    """One rendered message ready to be delivered.

    Which content fields are used depends on ``channel_type``:

    * EMAIL: ``subject``, ``html`` and/or ``text``; ``unsubscribe_url`` adds
      ``List-Unsubscribe`` / ``List-Unsubscribe-Post`` headers.
    * SMS: ``body``.  VOICE: ``text`` (spoken).
    * PUSH: ``title``, ``body``, ``data`` (str -> str).
    * WEBHOOK / CUSTOM: ``payload`` (any JSON-serialisable value).

    ``headers`` are extra provider headers (e.g. email headers); ``metadata``
    is opaque to channels (journey id, step id, campaign...), carried along so
    results and events can be attributed.
    """

    message_id: str
    to: str
    channel_type: ChannelType
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    body: str | None = None
    title: str | None = None
    data: dict[str, str] = {}
    payload: Any = None
    headers: dict[str, str] = {}
    metadata: dict[str, Any] = {}
    idempotency_key: str | None = None
    unsubscribe_url: str | None = None

    def content(self) -> dict[str, Any]:
        """What the message says (every field but its addressing and bookkeeping), the empty ones left out."""
        return {k: v for k in CONTENT_FIELDS if (v := msgspec.to_builtins(getattr(self, k))) not in (None, {}, "")}


# The fields of OutgoingMessage that carry its content (templates render subject..data; see messaging.templates).
CONTENT_FIELDS = ("subject", "html", "text", "body", "title", "data", "payload", "headers", "unsubscribe_url")


class SendResult(msgspec.Struct, kw_only=True):
    """Outcome of delivering one message to the provider (not to the device).

    ``status`` is ``"sent"`` when the provider accepted the message, else
    ``"failed"``; ``permanent`` tells whether a failure may succeed on retry.
    ``attempts`` is filled in by :func:`send_with_retry`.
    """

    message_id: str
    status: Literal["sent", "failed"]
    provider_message_id: str | None = None
    error: str | None = None
    permanent: bool = False
    attempts: int = 1
    error_code: str | None = None  # the provider's own code of a failure (Twilio's 21211), when it gave one

    @classmethod
    def sent(cls, message_id: str, provider_message_id: str | None = None) -> "SendResult":
        return cls(message_id=message_id, status="sent", provider_message_id=provider_message_id)

    @classmethod
    def failed(cls, message_id: str, error: str, *, permanent: bool, error_code: str | None = None) -> "SendResult":
        return cls(message_id=message_id, status="failed", error=error, permanent=permanent, error_code=error_code)

    @property
    def ok(self) -> bool:
        return self.status == "sent"


FEEDBACK_EVENT_TYPES = frozenset(
    {
        "sent",  # accepted by the provider's network (e.g. Twilio "sent")
        "delivered",  # reached the device / mailbox / answered call
        "failed",  # provider gave up (undelivered, failed call...)
        "hard_bounce",  # permanent address problem: suppress the address
        "soft_bounce",  # temporary delivery problem
        "opened",  # read receipt / open tracking
        "clicked",
        "complaint",  # marked as spam
        "unsubscribed",
    }
)


class FeedbackEvent(msgspec.Struct, kw_only=True):
    """A delivery event reported by a provider callback, after verification.

    ``message_id`` is ours when the provider echoes it (e.g. in the callback
    URL); otherwise the caller maps ``provider_message_id`` back to our
    message. ``event_type`` is one of :data:`FEEDBACK_EVENT_TYPES`.
    ``timestamp`` is timezone-aware (UTC); ``details`` keeps provider fields
    such as error codes.
    """

    event_type: str
    timestamp: datetime
    channel: str
    provider_message_id: str | None = None
    message_id: str | None = None
    address: str | None = None
    permanent: bool | None = None
    details: dict[str, Any] = {}


class Channel:
    """Base class for channels (subclassing is optional; duck typing works).

    Required attributes: ``name`` (unique, ``[a-z0-9][a-z0-9._-]*``),
    ``channel_type``, ``config_fields`` and ``async send_batch``.
    Optional: ``default_rate_limit`` (messages/second the provider tolerates
    by default, ``None`` = no limit) and ``parse_feedback`` (``None`` when the
    channel has no delivery callbacks).
    """

    name: ClassVar[str] = ""
    channel_type: ClassVar[ChannelType] = ChannelType.CUSTOM
    description: ClassVar[str] = ""
    config_fields: ClassVar[tuple[ConfigField, ...]] = ()
    default_rate_limit: ClassVar[float | None] = None
    default_batch_size: ClassVar[int] = 50
    #: ``parse_feedback(headers, body, config, *, url=None) -> list[FeedbackEvent]``
    #: Subclasses that accept provider callbacks override this with a method
    #: that verifies the signature (raising :class:`FeedbackSignatureError`)
    #: and returns the events.
    parse_feedback: Callable[..., list[FeedbackEvent]] | None = None

    async def send_batch(
        self, messages: list[OutgoingMessage], config: Mapping[str, Any]
    ) -> list[SendResult]:  # pragma: no cover - interface
        raise NotImplementedError

    def resolve_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        return resolve_config(self, config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} ({self.channel_type.value})>"


@runtime_checkable
class EventSink(Protocol):
    """A destination for engine event records (used by the events work).

    ``name`` is the configured sink's name, ``kind`` the factory kind (e.g.
    ``"webhook"``, ``"s3"``). ``deliver`` receives a batch of JSON-able
    records and raises on failure (the caller retries the whole batch, so
    deliveries must tolerate duplicates).
    """

    name: str
    kind: str

    async def deliver(self, records: list[dict[str, Any]]) -> None: ...


@runtime_checkable
class EventSinkFactory(Protocol):
    """Builds configured :class:`EventSink` objects of one ``kind``. A factory whose call also takes a
    ``workspace`` keyword is given the stream's :class:`WorkspaceRef` (``id``, ``name``), for sinks that
    must keep workspaces apart."""

    kind: str
    config_fields: tuple[ConfigField, ...]

    def __call__(self, name: str, config: Mapping[str, Any]) -> EventSink: ...


# --------------------------------------------------------------------------
# Configuration helpers
# --------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _coerce(field: ConfigField, value: Any) -> Any:
    if value is None:
        return None
    try:
        if field.type == "int" and not isinstance(value, bool):
            return int(value)
        if field.type == "float" and not isinstance(value, bool):
            return float(value)
        if field.type == "bool":
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
            raise ValueError(value)
    except (TypeError, ValueError):
        raise ChannelConfigError(f"setting {field.name!r} must be of type {field.type}") from None
    if field.type == "str" and not isinstance(value, str):
        raise ChannelConfigError(f"setting {field.name!r} must be a string")
    return value


def resolve_config(channel: Any, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return ``config`` with defaults applied and values coerced.

    Raises :class:`ChannelConfigError` for unknown keys, missing required keys
    and values outside ``choices``. Error messages never include values.
    """
    config = dict(config or {})
    fields = {f.name: f for f in getattr(channel, "config_fields", ())}
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ChannelConfigError(
            f"unknown setting(s) for channel {channel.name!r}: {', '.join(unknown)}"
        )
    out: dict[str, Any] = {}
    for name, field in fields.items():
        value = config.get(name, field.default)
        if value is None or value == "":
            if field.required:
                raise ChannelConfigError(f"channel {channel.name!r} requires setting {name!r}")
            out[name] = field.default
            continue
        value = _coerce(field, value)
        if field.choices is not None and value not in field.choices:
            raise ChannelConfigError(
                f"setting {name!r} must be one of {', '.join(field.choices)}"
            )
        out[name] = value
    return out


def secret_keys(channel: Any) -> frozenset[str]:
    """Names of the channel's settings that are secrets."""
    return frozenset(f.name for f in getattr(channel, "config_fields", ()) if f.secret)


def redact_config(channel: Any, config: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of ``config`` safe to log or return: secret values become ``"***"``."""
    secrets = secret_keys(channel)
    return {k: ("***" if k in secrets and v not in (None, "") else v) for k, v in config.items()}


# --------------------------------------------------------------------------
# Retries
# --------------------------------------------------------------------------


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Exponential backoff with full jitter for transient failures.

    Attempt ``n`` (1-based) is followed, if needed, by a sleep drawn uniformly
    from ``[0, min(max_delay, base_delay * 2 ** (n - 1))]`` (or exactly that
    bound when ``jitter`` is false).
    """

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: bool = True

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        return backoff(attempt, self.base_delay, self.max_delay, floor=0.0 if self.jitter else 1.0, rng=rng)


def check_results(
    channel: Any, messages: list[OutgoingMessage], results: Any
) -> list[SendResult]:
    """Validate a channel's ``send_batch`` output against the contract."""
    if not isinstance(results, list) or len(results) != len(messages):
        raise ChannelContractError(
            f"channel {getattr(channel, 'name', channel)!r} returned "
            f"{len(results) if isinstance(results, list) else type(results).__name__} "
            f"results for {len(messages)} messages"
        )
    for msg, res in zip(messages, results):
        if not isinstance(res, SendResult) or res.message_id != msg.message_id:
            raise ChannelContractError(
                f"channel {getattr(channel, 'name', channel)!r} returned results out of "
                "order or of the wrong type"
            )
        if res.status not in ("sent", "failed"):
            raise ChannelContractError(f"invalid status {res.status!r}")
    return results


DEFAULT_RETRY = RetryPolicy()


async def send_with_retry(
    channel: Any,
    messages: list[OutgoingMessage],
    config: Mapping[str, Any],
    policy: RetryPolicy = DEFAULT_RETRY,
    *,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> list[SendResult]:
    """Send ``messages`` through ``channel``, retrying transient failures.

    Only the messages whose last result was a transient failure are sent
    again; ``sent`` results and permanent failures are final. An exception
    raised by ``send_batch`` (a channel bug) counts as a transient failure of
    every pending message, except :class:`ChannelConfigError`, which is
    permanent for all. Returns one result per message in input order, each
    with ``attempts`` set.
    """
    if policy.max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")
    final: dict[int, SendResult] = {}
    pending = list(range(len(messages)))
    attempt = 0
    while pending:
        attempt += 1
        batch = [messages[i] for i in pending]
        try:
            results = check_results(channel, batch, await channel.send_batch(batch, config))
        except ChannelConfigError as exc:
            results = [
                SendResult.failed(m.message_id, f"configuration error: {exc}", permanent=True)
                for m in batch
            ]
        except ChannelContractError:
            raise
        except Exception as exc:  # a buggy plugin must not crash the caller
            results = [
                SendResult.failed(m.message_id, f"{type(exc).__name__}: {exc}", permanent=False)
                for m in batch
            ]
        still = []
        for i, res in zip(pending, results):
            res.attempts = attempt
            final[i] = res
            if res.status == "failed" and not res.permanent:
                still.append(i)
        pending = still
        if pending and attempt < policy.max_attempts:
            await sleep(policy.delay(attempt, rng))
        else:
            break
    return [final[i] for i in range(len(messages))]
