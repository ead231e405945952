"""Transactional sends (POST /v1/messages and /v1/messages/batch): checked whole, then one deliver().

Recipients are raw addresses (anyone), endpoint ids or user ids (that user's endpoints of the
channel). A raw address that belongs to an endpoint of the workspace is treated as that endpoint:
its opt-out is respected and its events land on its customer. With an ``Idempotency-Key`` the same
key and body answer the stored answer without sending; the same key with another body is a 409.
"""
from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from sqlalchemy import Connection, Engine, select, update

from tidings.engine.platform.clock import duration_seconds, now_ms
from tidings.engine.platform.db import insert_ignoring_conflicts, reading, reading_statements, rows_where_in
from tidings.engine.platform.errors import Conflict, InvalidInput
from tidings.engine.messaging.dispatch import (
    ENDPOINT_COLS, USER_COLS, SendOutcome, SendStatus, Unit, deliver, endpoint_target, load_customers, targets_of,
    user_context,
)
from tidings.engine.messaging.tables import idempotent_requests
from tidings.engine.customers.tables import endpoints, users
from tidings.engine.messaging.template_store import PartsBody, TemplateBody, check_template, load_templates
from tidings.engine.customers.limits import check_address, check_values_depth
from tidings.engine.platform.limits import MAX_BATCH
from tidings.engine.workspaces.service import WorkspaceRef

MAX_RECIPIENTS = 1000
# A message to an address nobody owns is keyed "to:<address>" in message.endpoint, a 512-character column
# (and a unique key with the idempotency key, which PostgreSQL's B-tree bounds too).
MAX_RAW_ADDRESS = 512 - len("to:")
# A request this small is checked on the event loop on SQLite: its reads cost less than the hop to a thread
# and back (two GIL hand-offs); bigger ones, and PostgreSQL's network round trips, go to a thread.
INLINE_RECIPIENTS = 10
IN_PROGRESS_TIMEOUT_MS = 60_000  # after this, a retry may take over a claimed key (its messages stay de-duplicated)


class Recipient(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    address: str | None = None
    endpoint_id: str | None = None
    user_id: str | None = None
    data: dict[str, Any] = {}  # merged over the request's data for this recipient


class Goal(msgspec.Struct, forbid_unknown_fields=True):
    """The event that counts as a conversion of this message when the recipient does it within `within`."""

    event: Annotated[str, Meta(min_length=1, max_length=255)]
    within: int | str = "7d"  # seconds, or a duration: "90m", "12h", "7d"


class MessageRequest(msgspec.Struct, forbid_unknown_fields=True):
    channel: Literal["EMAIL", "SMS", "VOICE", "PUSH", "WEBHOOK", "CUSTOM"]
    recipients: Annotated[list[Recipient], Meta(min_length=1, max_length=MAX_RECIPIENTS)]
    template_id: str | None = None
    content: PartsBody | None = None  # inline template parts, rendered like a stored template
    data: dict[str, Any] = {}
    goal: Goal | None = None  # stored on the send event; GET /v1/metrics/messages attributes conversions


class BatchRequest(msgspec.Struct, forbid_unknown_fields=True):
    messages: Annotated[list[MessageRequest], Meta(min_length=1, max_length=MAX_BATCH)]


class RecipientResult(msgspec.Struct):
    recipient: dict[str, str]
    status: SendStatus
    message_id: str | None
    message_ids: list[str]
    endpoint_ids: list[str]
    error: str | None = None


class MessageAnswer(msgspec.Struct):
    results: list[RecipientResult]


class BatchAnswer(msgspec.Struct):
    messages: list[MessageAnswer]


def body_hash(value: Any) -> str:
    return hashlib.sha256(msgspec.json.encode(msgspec.to_builtins(value), order="sorted")).hexdigest()


# --------------------------------------------------------------------------- idempotency


class Answered(Exception):
    """The Idempotency-Key was answered before: this is the stored answer, and nothing more is written."""

    def __init__(self, answer: Any):
        self.answer = answer


def check_key(key: str) -> None:
    if not 1 <= len(key) <= 255:
        raise InvalidInput("Idempotency-Key must be 1-255 characters", field="Idempotency-Key")


def claim_in(conn: Connection, workspace_id: int, key: str, digest: str) -> None:
    """Take the key for this request inside the write transaction of its message rows, so the claim and
    the messages it covers commit together. Raises Answered (same body, answered), or Conflict (another
    body; or the same body still in progress, unless that attempt is older than IN_PROGRESS_TIMEOUT_MS:
    then it died, and this request takes over, resuming its queued messages under their message ids)."""
    now = now_ms()
    mine = conn.execute(insert_ignoring_conflicts(conn, idempotent_requests, ["workspace_id", "key"]).values(
        workspace_id=workspace_id, key=key, body_hash=digest, answer=None, created_at=now)
        .returning(idempotent_requests.c.key)).first() is not None  # rowcount is -1 with psycopg here
    where = (idempotent_requests.c.workspace_id == workspace_id) & (idempotent_requests.c.key == key)
    row = conn.execute(select(idempotent_requests).where(where).with_for_update()).one()
    if row.body_hash != digest:
        raise Conflict("this Idempotency-Key was used with a different request body", field="Idempotency-Key")
    if row.answer is not None:
        raise Answered(row.answer)
    if not mine:
        if now - row.created_at < IN_PROGRESS_TIMEOUT_MS:
            raise Conflict("a request with this Idempotency-Key is in progress; retry later", field="Idempotency-Key")
        conn.execute(update(idempotent_requests).where(where).values(created_at=now))


def remember_in(conn: Connection, workspace_id: int, key: str, answer: Any) -> None:
    conn.execute(update(idempotent_requests).where(
        idempotent_requests.c.workspace_id == workspace_id, idempotent_requests.c.key == key).values(answer=answer))


def stored_answer(db: Engine, workspace_id: int, key: str, digest: str) -> Any | None:
    """For a request refused before it claimed its key: the answer this key already has (Conflict when
    the key belongs to another body), else None."""
    with reading(db) as conn:
        row = conn.execute(select(idempotent_requests.c.body_hash, idempotent_requests.c.answer).where(
            idempotent_requests.c.workspace_id == workspace_id, idempotent_requests.c.key == key)).first()
    if row is None:
        return None
    if row.body_hash != digest:
        raise Conflict("this Idempotency-Key was used with a different request body", field="Idempotency-Key")
    return row.answer


# --------------------------------------------------------------------------- preparation


def _check_shape(requests: list[MessageRequest], prefix) -> None:
    total = 0
    for j, m in enumerate(requests):
        where = prefix(j)
        if (m.template_id is None) == (m.content is None):
            raise InvalidInput("give either template_id or content", field=f"{where}template_id")
        if m.goal is not None:
            _goal_attribute(m.goal, f"{where}goal.within")
        check_values_depth(m.data, f"{where}data")
        for i, r in enumerate(m.recipients):
            given = [k for k in ("address", "endpoint_id", "user_id") if getattr(r, k) is not None]
            if len(given) != 1:
                raise InvalidInput("a recipient has exactly one of address, endpoint_id, user_id",
                                   field=f"{where}recipients[{i}]")
            check_values_depth(r.data, f"{where}recipients[{i}].data")
            if r.address is not None:
                check_address(m.channel, r.address, field=f"{where}recipients[{i}].address")
                if len(r.address) > MAX_RAW_ADDRESS:
                    raise InvalidInput(f"an address sent to directly is at most {MAX_RAW_ADDRESS} characters "
                                       "(store a longer one as an endpoint and name its endpoint_id)",
                                       field=f"{where}recipients[{i}].address")
        total += len(m.recipients)
    if total > MAX_BATCH:
        raise InvalidInput(f"at most {MAX_BATCH} recipients per request, got {total}", field="messages")


def _goal_attribute(goal: Goal | None, field: str = "goal.within") -> dict[str, Any] | None:
    """The send event's `attributes.goal`, as tidings.engine.analytics.metrics reads it."""
    if goal is None:
        return None
    try:
        return {"event": goal.event, "within_seconds": duration_seconds(goal.within)}
    except ValueError:
        raise InvalidInput(f"within is seconds or a duration like 90m, 12h, 7d; got {goal.within!r}",
                           field=field) from None


def prepare(db: Engine, workspace_id: int, requests: list[MessageRequest], key: str | None, batch: bool) -> list[list[Unit]]:
    """Every check first (400 naming the field, nothing written), then the units to deliver."""
    prefix = (lambda j: f"messages[{j}].") if batch else (lambda j: "")
    _check_shape(requests, prefix)
    inline = {j: check_template(f"inline-{j}", TemplateBody(channel=m.channel, **msgspec.structs.asdict(m.content)),
                                field_prefix=f"{prefix(j)}content.")
              for j, m in enumerate(requests) if m.content is not None}
    with reading_statements(db) as conn:  # checks, each read on its own: no BEGIN/ROLLBACK on PostgreSQL
        stored = load_templates(conn, workspace_id, [m.template_id for m in requests if m.template_id])
        for j, m in enumerate(requests):
            t = stored.get(m.template_id) if m.template_id else None
            if m.template_id and t is None:
                raise InvalidInput(f"no template {m.template_id!r} in this workspace", field=f"{prefix(j)}template_id")
            if t is not None and t.channel_type.value != m.channel:
                raise InvalidInput(f"template {m.template_id!r} is a {t.channel_type.value} template, not {m.channel}",
                                   field=f"{prefix(j)}template_id")
        lookups = _lookups(conn, workspace_id, requests, prefix)
    out = []
    for j, m in enumerate(requests):
        template = inline.get(j) or stored.get(m.template_id)
        goal = _goal_attribute(m.goal)
        attrs = {"transactional": True, **({"goal": goal} if goal else {})}
        units = []
        for i, r in enumerate(m.recipients):
            unit_key = f"tx:{key}:{j}:{i}" if key else f"tx:{uuid.uuid4().hex}"
            unit = Unit(key=unit_key, channel_type=m.channel, template=template,
                        template_id=m.template_id, data={**m.data, **r.data}, attrs=attrs, new_key=key is None)
            _target(unit, m.channel, r, lookups)
            units.append(unit)
        out.append(units)
    return out


def _lookups(conn, workspace_id: int, requests: list[MessageRequest], prefix) -> dict[str, Any]:
    """Endpoints and users the recipients name, loaded in a few queries; unknown ids are 400s."""
    eids = list({r.endpoint_id for m in requests for r in m.recipients if r.endpoint_id})
    uids = list({r.user_id for m in requests for r in m.recipients if r.user_id})
    by_channel: dict[str, set[str]] = {}
    for m in requests:
        by_channel.setdefault(m.channel, set()).update(r.address for r in m.recipients if r.address)
    eps = {r[1]: dict(zip(ENDPOINT_COLS, r)) for r in
           rows_where_in(conn, endpoints, ENDPOINT_COLS, "endpoint_id", eids, {"workspace_id": workspace_id})}
    by_address: dict[tuple[str, str], list[dict]] = {}
    for channel, addresses in by_channel.items():
        for row in rows_where_in(conn, endpoints, ENDPOINT_COLS, "address", list(addresses),
                                 {"workspace_id": workspace_id, "channel": channel}):
            by_address.setdefault((channel, row[4]), []).append(dict(zip(ENDPOINT_COLS, row)))
    for owned in by_address.values():  # the same endpoint first on every attempt of a retried request
        owned.sort(key=lambda e: e["endpoint_id"])
    upks = {uid: pk for pk, uid in rows_where_in(conn, users, ["id", "user_id"], "user_id", uids, {"workspace_id": workspace_id})}
    for j, m in enumerate(requests):
        for i, r in enumerate(m.recipients):
            if r.endpoint_id and r.endpoint_id not in eps:
                raise InvalidInput(f"no endpoint {r.endpoint_id!r}", field=f"{prefix(j)}recipients[{i}].endpoint_id")
            if r.endpoint_id and eps[r.endpoint_id]["channel"] != m.channel:
                raise InvalidInput(f"endpoint {r.endpoint_id!r} is a {eps[r.endpoint_id]['channel']} endpoint",
                                   field=f"{prefix(j)}recipients[{i}].endpoint_id")
            if r.user_id and r.user_id not in upks:
                raise InvalidInput(f"no user {r.user_id!r}", field=f"{prefix(j)}recipients[{i}].user_id")
    owners = {e["user_pk"] for e in eps.values()} | {e["user_pk"] for es in by_address.values() for e in es}
    people = {}
    for channel in {m.channel for m in requests}:  # a user recipient's endpoints of each channel
        people[channel] = load_customers(conn, workspace_id, list(upks.values()), channel)
    owner_rows = {r[0]: user_context(dict(zip(USER_COLS, r))) for r in
                  rows_where_in(conn, users, USER_COLS, "id", list(owners))}
    return {"eps": eps, "by_address": by_address, "upks": upks, "people": people, "owners": owner_rows}


def _target(unit: Unit, channel: str, r: Recipient, lk: dict[str, Any]) -> None:
    if r.user_id is not None:
        unit.user_pk = lk["upks"][r.user_id]
        unit.user, eps = lk["people"][channel][unit.user_pk]
        unit.targets, unit.outcome = targets_of(unit.user_pk, eps)
        return
    eps = [lk["eps"][r.endpoint_id]] if r.endpoint_id else lk["by_address"].get((channel, r.address), [])
    if not eps:  # an address nobody in the workspace owns
        from tidings.engine.messaging.dispatch import Target
        unit.targets = [Target(endpoint=f"to:{r.address}", address=r.address)]
        return
    unit.user_pk = eps[0]["user_pk"]
    unit.user = lk["owners"].get(unit.user_pk)
    if any(e["opt_out"] for e in eps):
        unit.outcome = SendOutcome(user_pk=unit.user_pk, status="opted_out", endpoint_ids=[e["endpoint_id"] for e in eps])
        return
    unit.targets = [endpoint_target(eps[0])]


# --------------------------------------------------------------------------- sending


def _result(r: Recipient, o: SendOutcome) -> RecipientResult:
    who = {k: v for k in ("address", "endpoint_id", "user_id") if (v := getattr(r, k)) is not None}
    return RecipientResult(recipient=who, status=o.status, message_id=o.message_ids[0] if o.message_ids else None,
                           message_ids=list(o.message_ids), endpoint_ids=list(o.endpoint_ids), error=o.error)


async def send(db: Engine, plugins, workspace: WorkspaceRef, requests: list[MessageRequest], key: str | None,
               *, batch: bool) -> list[MessageAnswer]:
    """Check, send, answer. With an Idempotency-Key the key is claimed in the transaction that writes the
    message rows and the answer stored in the one that records the results: two write transactions per
    request either way."""
    digest = None
    if key is not None:
        check_key(key)
        digest = body_hash([batch, requests])
    try:
        # Inline content is checked (and trial-rendered, tidings.engine.messaging.templates) in prepare: never on the loop.
        if (db.dialect.name == "sqlite" and sum(len(m.recipients) for m in requests) <= INLINE_RECIPIENTS
                and all(m.content is None for m in requests)):
            groups = prepare(db, workspace.id, requests, key, batch)  # a few indexed reads of a local file
        else:
            groups = await asyncio.to_thread(prepare, db, workspace.id, requests, key, batch)
    except Exception:
        if key is not None:  # an answered key answers the same, even if the request no longer checks out
            stored = await asyncio.to_thread(stored_answer, db, workspace.id, key, digest)
            if stored is not None:
                return msgspec.convert(stored, list[MessageAnswer])
        raise
    flat = [u for g in groups for u in g]
    if key is None:
        return _answers(requests, await deliver(db, plugins, workspace.id, flat))

    def finish(conn: Connection, outcomes: list[SendOutcome]) -> None:
        remember_in(conn, workspace.id, key, msgspec.to_builtins(_answers(requests, outcomes)))

    try:
        outcomes = await deliver(db, plugins, workspace.id, flat, claim=lambda conn: claim_in(conn, workspace.id, key, digest),
                                 finish=finish)
    except Answered as done:
        return msgspec.convert(done.answer, list[MessageAnswer])
    return _answers(requests, outcomes)


def _answers(requests: list[MessageRequest], outcomes: list[SendOutcome]) -> list[MessageAnswer]:
    it = iter(outcomes)
    return [MessageAnswer(results=[_result(r, next(it)) for r in m.recipients]) for m in requests]
