"""Message events: the lifecycle of every message, stored as events of its customer.

Names are `_{channel}.{type}`: channel in CHANNELS (lower case), type in TYPES. Every message event
copies the identity of its message (IDENTITY_KEYS, taken from the message's `_{channel}.send` event),
so delivery and response metrics are GROUP BYs over the event table.

Status events get the deterministic id `{message_id}:{type}`: the same status reported twice for one
message is recorded once (the event table is unique on (workspace, event id)). Opens and clicks count
every occurrence; unique counts come from COUNT(DISTINCT user_pk).

The `message_ref` table (tidings.engine.messaging.tables) indexes send events by our id and the provider's id; it
is filled from `changes.events_recorded`, inside the transaction that records the send event.
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
from sqlalchemy import Connection, and_, select, update

from tidings.engine.customers import on_write as changes
from tidings.engine.platform.clock import now_ms
from tidings.engine.customers.events import insert_new
from tidings.engine.platform.db import insert_ignoring_conflicts, rows_where_in
from tidings.engine.messaging.tables import message_refs
from tidings.engine.customers.tables import endpoints, events

CHANNELS = ("email", "sms", "voice", "push", "webhook", "custom")
# Recorded at most once per message (deterministic event id).
STATUS_TYPES = (
    "send", "buffered", "delivered", "failed", "hard_bounce", "soft_bounce", "complaint", "rejected",
    "rendering_failure", "unsubscribe",
)
# Recorded at every occurrence.
REPEATABLE_TYPES = ("open", "click", "reply")
TYPES = STATUS_TYPES + REPEATABLE_TYPES

IDENTITY_KEYS = (
    "message_id", "channel", "endpoint_id", "template_id", "journey_id", "journey_version", "step_id",
    "variant", "transactional", "goal",
)

# tidings.engine.channels.contract.FEEDBACK_EVENT_TYPES -> our type.
FEEDBACK_TYPES = {
    "sent": "buffered",  # accepted by the provider's network, not yet delivered (Pinpoint's _SMS.BUFFERED)
    "delivered": "delivered",
    "failed": "failed",
    "hard_bounce": "hard_bounce",
    "soft_bounce": "soft_bounce",
    "opened": "open",
    "clicked": "click",
    "complaint": "complaint",
    "unsubscribed": "unsubscribe",
}

# The `type` a journey's `wait_for`/`split` names (tidings.engine.journeys.language.steps.MESSAGE_EVENT_TYPES) -> our types.
JOURNEY_MESSAGE_EVENT_TYPES = {
    "sent": ("send",),
    "delivered": ("delivered",),
    "opened": ("open",),
    "clicked": ("click",),
    "bounced": ("hard_bounce", "soft_bounce"),
    "complained": ("complaint",),
    "unsubscribed": ("unsubscribe",),
    "failed": ("failed", "rejected", "rendering_failure"),
    "replied": ("reply",),
}



# The message event types an `event:` name also stands for. Only the customer's own decision to opt out:
# `sent`, `delivered` or `failed` are also common names of an application's events ("order delivered"),
# and widened they would match the journey's own sends (an `entry: {event: sent}` re-entering on its own
# mail); `opened` is often an app's "app opened". Those are read per step with `message_event`, or by
# their full names (`_email.open`).
EVENT_NAME_TYPES = {"unsubscribed": JOURNEY_MESSAGE_EVENT_TYPES["unsubscribed"]}


def journey_event_names(name: str, resolved: Sequence[str] = ()) -> list[str]:
    """The stored event names a journey's `event: <name>` (entry, exit, wait_for, goal) matches: the name
    itself, and for `unsubscribed` that event of every channel, as `wait_for`/`split` `message_event`
    read it (`_email.unsubscribe`, `_sms.unsubscribe`, ...). The compiler stores the result in the IR;
    `resolved` is that stored list (empty in IR compiled before it was stored: resolved here)."""
    if resolved:
        return list(resolved)
    return [name, *names_of(EVENT_NAME_TYPES.get(name, ()))]


def journey_message_event_names(type_: str, resolved: Sequence[str] = ()) -> list[str]:
    """The stored event names of a `message_event` type (`bounced` -> `_email.hard_bounce`, ...)."""
    if resolved:
        return list(resolved)
    ours = JOURNEY_MESSAGE_EVENT_TYPES.get(type_)
    if ours is None:
        raise ValueError(f"unknown journey message event type {type_!r}")
    return names_of(ours)


_NAME = re.compile(r"^_(email|sms|voice|push|webhook|custom)\.([a-z_]+)$")


def event_name(channel: str, type_: str) -> str:
    channel = channel.lower()
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    if type_ not in TYPES:
        raise ValueError(f"unknown message event type {type_!r}")
    return f"_{channel}.{type_}"


def parse_name(name: str) -> tuple[str, str] | None:
    """(channel, type) of a message event name, or None for other events."""
    m = _NAME.match(name)
    if not m or m.group(2) not in TYPES:
        return None
    return m.group(1), m.group(2)


def names_of(types: Iterable[str], channels: Iterable[str] = CHANNELS) -> list[str]:
    return [f"_{c}.{t}" for t in types for c in channels]


SEND_NAMES = names_of(["send"])


def status_event_id(message_id: str, type_: str) -> str:
    return f"{message_id}:{type_}"


class MessageRef(msgspec.Struct, kw_only=True):
    workspace_id: int
    message_id: str
    channel: str
    user_pk: int
    endpoint_pk: int | None
    identity: dict[str, Any]
    provider_message_id: str | None = None
    sent_at: int = 0


# ---- the index of sent messages -----------------------------------------------------------------


def index_sends(conn: Connection, workspace_id: int, rows: Sequence[dict[str, Any]]) -> None:
    """Called by changes.events_recorded: remember every new `_{channel}.send` event's message."""
    refs = []
    for r in rows:
        name = r["name"]
        if name[0] != "_" or not name.endswith(".send"):
            continue
        parsed = parse_name(name)
        if not parsed:
            continue
        attrs = r.get("attributes") or {}
        message_id = attrs.get("message_id")
        if not message_id:
            continue
        refs.append({
            "workspace_id": workspace_id, "message_id": str(message_id),
            "provider_message_id": _str_or_none(attrs.get("provider_message_id")), "channel": parsed[0],
            "user_pk": r["user_pk"], "endpoint_pk": r.get("endpoint_pk"), "identity": identity_of(attrs, parsed[0]),
            "sent_at": r["ts"],
        })
    if refs:
        conn.execute(insert_ignoring_conflicts(conn, message_refs, ["workspace_id", "message_id"]), refs)


def identity_of(attributes: dict[str, Any], channel: str) -> dict[str, Any]:
    ident = {k: attributes[k] for k in IDENTITY_KEYS if attributes.get(k) is not None}
    ident.setdefault("channel", channel)
    return ident


def _str_or_none(v: Any) -> str | None:
    return None if v in (None, "") else str(v)


def find_messages(conn: Connection, workspace_id: int, *, message_ids: Sequence[str] = (),
                  provider_ids: Sequence[str] = ()) -> tuple[dict[str, MessageRef], dict[str, MessageRef]]:
    """Messages by our id and by the provider's id. Falls back to the send events themselves for
    messages the index does not know (sent before this migration, or recorded without the hook)."""
    cols = ["message_id", "provider_message_id", "channel", "user_pk", "endpoint_pk", "identity", "sent_at"]
    by_id: dict[str, MessageRef] = {}
    by_provider: dict[str, MessageRef] = {}

    def keep(row: tuple) -> None:
        ref = MessageRef(workspace_id=workspace_id, **dict(zip(cols, row)))
        by_id[ref.message_id] = ref
        if ref.provider_message_id:
            by_provider[ref.provider_message_id] = ref

    ids = list(dict.fromkeys(i for i in message_ids if i))
    pids = list(dict.fromkeys(p for p in provider_ids if p))
    if ids:
        for row in rows_where_in(conn, message_refs, cols, "message_id", ids, {"workspace_id": workspace_id}):
            keep(row)
    if pids:
        for row in rows_where_in(conn, message_refs, cols, "provider_message_id", pids, {"workspace_id": workspace_id}):
            keep(row)
    missing_ids = [i for i in ids if i not in by_id]
    missing_pids = [p for p in pids if p not in by_provider]
    for key, wanted in (("message_id", missing_ids), ("provider_message_id", missing_pids)):
        if not wanted:
            continue
        q = select(events.c.name, events.c.user_pk, events.c.endpoint_pk, events.c.attributes, events.c.ts).where(
            events.c.workspace_id == workspace_id, events.c.name.in_(SEND_NAMES),
            events.c.attributes[key].as_string().in_(wanted),
        )
        for r in conn.execute(q):
            attrs = r.attributes or {}
            channel = parse_name(r.name)[0]
            keep((str(attrs.get("message_id")), _str_or_none(attrs.get("provider_message_id")), channel, r.user_pk,
                  r.endpoint_pk, identity_of(attrs, channel), r.ts))
    return by_id, by_provider


# ---- recording ------------------------------------------------------------------------------------


class Occurrence(msgspec.Struct, kw_only=True):
    """One thing that happened to a message, before it becomes an event row."""

    type: str
    ts: int
    details: dict[str, Any] = {}
    event_id: str | None = None  # default: `{message_id}:{type}` for status types, random for repeatable ones


def event_row(ref: MessageRef, occ: Occurrence, received_at: int) -> dict[str, Any]:
    if occ.type not in TYPES:
        raise ValueError(f"unknown message event type {occ.type!r}")
    if occ.event_id:
        event_id = occ.event_id
    elif occ.type in STATUS_TYPES:
        event_id = status_event_id(ref.message_id, occ.type)
    else:
        event_id = f"{ref.message_id}:{occ.type}:{uuid.uuid4().hex}"
    attrs = {**{k: v for k, v in occ.details.items() if v is not None},
             **{k: v for k, v in ref.identity.items() if k != "goal"}}
    attrs["message_id"] = ref.message_id
    return {
        "workspace_id": ref.workspace_id, "event_id": event_id, "user_pk": ref.user_pk, "endpoint_pk": ref.endpoint_pk,
        "name": f"_{ref.channel}.{occ.type}", "ts": occ.ts, "attributes": attrs, "metrics": {},
        "received_at": received_at,
    }


def record_occurrences(conn: Connection, workspace_id: int,
                       items: Sequence[tuple[MessageRef, Occurrence]]) -> tuple[int, int]:
    """Store message events inside the caller's transaction; returns (stored, duplicates).
    Tells `changes.events_recorded` about the new rows, as `events.ingest` does."""
    now = now_ms()
    fresh = insert_new(conn, workspace_id, [event_row(ref, occ, now) for ref, occ in items])
    if fresh:
        changes.events_recorded(conn, workspace_id, fresh)
    return len(fresh), len(items) - len(fresh)


def opt_out(conn: Connection, ref: MessageRef) -> bool:
    """Set the message's endpoint's opt-out; True when it changed."""
    if ref.endpoint_pk is None:
        return False
    n = conn.execute(
        update(endpoints)
        .where(endpoints.c.id == ref.endpoint_pk, endpoints.c.workspace_id == ref.workspace_id,
               endpoints.c.opt_out.is_(False))
        .values(opt_out=True, updated_at=now_ms())
    ).rowcount
    if n:
        changes.customers_changed(conn, ref.workspace_id, [ref.user_pk])
    return bool(n)


# ---- what journeys read ----------------------------------------------------------------------------


def sends_since(conn: Connection, workspace_id: int, user_pks: list[int], since: int) -> dict[int, int]:
    """How many messages (send events of any channel) each customer was sent at or after `since` (ms)."""
    counts: dict[int, int] = {}
    for start in range(0, len(user_pks), 5000):
        q = select(events.c.user_pk).where(
            events.c.workspace_id == workspace_id, events.c.user_pk.in_(user_pks[start:start + 5000]),
            events.c.name.like("\\_%.send", escape="\\"), events.c.ts >= since)
        for pk in conn.execute(q).scalars():
            counts[pk] = counts.get(pk, 0) + 1
    return counts


def message_event_happened(conn: Connection, workspace_id: int, user_pk: int, *, journey_id: str, step_id: str,
                           type: str, since_ms: int = 0, journey_version: int | None = None) -> bool:
    """For `split`/`wait_for` on message events: did the customer's message from `step_id` of
    `journey_id` get `type` (a journey type: opened, clicked, delivered, bounced...) since `since_ms`?"""
    conds = [
        events.c.user_pk == user_pk, events.c.name.in_(journey_message_event_names(type)), events.c.ts >= since_ms,
        events.c.workspace_id == workspace_id, events.c.attributes["journey_id"].as_string() == journey_id,
        events.c.attributes["step_id"].as_string() == step_id,
    ]
    if journey_version is not None:
        conds.append(events.c.attributes["journey_version"].as_integer() == journey_version)
    return conn.execute(select(events.c.id).where(and_(*conds)).limit(1)).first() is not None
