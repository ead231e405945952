"""The one dispatch path: journey send steps and transactional sends both end in :func:`deliver`.

For each *unit* (a customer of a journey step, a recipient of an API request):
1. render every target's content (a failure fails that unit only, before anything is sent);
2. one write transaction: find keys handled before (idempotency), pick the channel serving the type,
   insert the message rows (status ``queued``, ``owner`` this call), reserve rate-limit tokens. The row's
   unique key (workspace, idempotency key, endpoint) is the claim: a retried activity or replayed request
   finds or loses to the earlier rows. A key whose rows are all final (``sent``/``failed``) answers
   ``duplicate`` and nothing is sent; rows still open (``queued``/``retrying``) are *resumed*: taken over
   by this call (``owner``) and sent again under their first message ids; rows of the key already final
   are not sent again (a customer with several endpoints);
3. hand each channel its batch chunk by chunk (paced by the rate limit, a transient failure retried a few
   times at once), recording each chunk's results and events as it completes: the write that records a
   chunk also checks that the next chunk's rows are still this call's (see below).

Transient failures (connection refused, timeouts, 4xx SMTP, 429/5xx HTTP) do not fail a message: it becomes
``retrying`` with its last error and a next attempt time (exponential backoff with jitter, :class:`RetryWindow`),
and fails only once the retry window (TIDINGS_DELIVERY_RETRY_HOURS) is over. A journey parks such members at
the send step until then (tidings.engine.journeys.runtime.activities); transactional rows are resent by tidings.engine.messaging.redelivery.

What a fault can cost. A send attempt records every chunk as it completes, so when it dies (worker SIGKILL)
only its chunk in flight is unrecorded: the retry resends those rows (same message ids, so a receiver can
drop the copy; channels with an idempotency key use the message id). An attempt that lost Temporal (the
server down past the heartbeat timeout) but not the provider keeps sending, and Temporal starts a retry
when it is back: the retry takes the open rows over (``owner``), and the older attempt, at its next chunk,
finds its rows taken and stops; only its chunk in flight can go twice.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import msgspec
from sqlalchemy import Connection, Engine, select

from tidings.engine.customers import on_write as changes
from tidings.engine.messaging import tracking
from tidings.engine.channels.config import Route, routes_for
from tidings.engine.channels.contract import ChannelType, OutgoingMessage, RetryPolicy, SendResult, send_with_retry
from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.metrics_registry import PROVIDER_DURATION, SENDS
from tidings.engine.platform.db import bulk_insert, bulk_update_where_in, reading, rows_where_in
from tidings.engine.customers.events import insert_new
from tidings.engine.messaging.ledger import status_event_id
from tidings.engine.messaging.outbox import outbox_store
from tidings.engine.messaging import custom_channel
from tidings.engine.messaging.custom_channel import CustomSend
from tidings.engine.workspaces.tables import workspaces
from tidings.engine.messaging.tables import messages
from tidings.engine.customers.tables import endpoints, users
from tidings.engine.channels.rate_limit import burst_of, paced, reserve_in
from tidings.engine.platform.retry import RetryWindow
from tidings.engine.messaging.templates import Template, TemplateRenderError, render, renders_quickly
from tidings.engine.messaging.template_store import load_templates
from tidings.engine.platform.write_queue import Job, write

EVENT_PREFIX = {"EMAIL": "email", "SMS": "sms", "VOICE": "voice", "PUSH": "push", "WEBHOOK": "webhook",
                "CUSTOM": "custom"}
RETRY = RetryPolicy(max_attempts=3, base_delay=0.2, max_delay=2.0)  # at once, within one send
MAX_ERROR = 1000
log = logging.getLogger("tidings.send")
OPEN = ("queued", "retrying")  # statuses of a message not yet final
# Results are recorded at least this often (a rate-limited channel records each paced chunk): what a crash
# can leave unrecorded, and resend, is one group. 100 lets the SMTP channel drive its 4 connections at once.
RECORD_GROUP = 100


class JourneySend(msgspec.Struct, frozen=True):
    user_pk: int
    idempotency_key: str  # e.g. f"{workflow_id}/{step_id}/{user_pk}": the same key never sends twice
    variant: str | None = None
    data: dict = {}  # per-customer extra template data (e.g. the entry event's attributes)


SendStatus = Literal["sent", "retrying", "failed", "opted_out", "no_endpoint", "duplicate", "render_failed"]


class SendOutcome(msgspec.Struct, frozen=True):
    user_pk: int | None
    status: SendStatus
    message_ids: list[str] = []
    error: str | None = None  # retrying: the last error
    endpoint_ids: list[str] = []
    retry_at: int | None = None  # retrying: epoch ms of the next attempt
    prior: str | None = None  # duplicate: what the earlier send came to (sent | failed)


@dataclass
class Target:
    """One address of a unit: an endpoint of a customer, or a raw address."""

    endpoint: str  # the idempotency column: endpoint id, or "to:<address>"
    address: str
    endpoint_pk: int | None = None
    endpoint_id: str | None = None
    context: dict[str, Any] = field(default_factory=dict)  # the endpoint as templates see it


@dataclass
class Unit:
    """What one outcome is about: a key, a channel type, content and the targets to send it to."""

    key: str
    channel_type: str
    template: Template | None
    template_id: str | None
    data: dict[str, Any]
    attrs: dict[str, Any]  # attribution copied into every event (journey fields or transactional)
    targets: list[Target] = field(default_factory=list)
    user_pk: int | None = None
    user: dict[str, Any] | None = None
    outcome: SendOutcome | None = None  # decided before sending (opted_out, no_endpoint...)
    custom: CustomSend | None = None  # a custom-channel send (tidings.engine.messaging.custom_channel)
    application_id: str = ""  # custom: the workspace name, the payload's ApplicationId
    # The key was made up for this call (a random one: a transactional request without an Idempotency-Key),
    # so no earlier row can hold it and it is not looked up (a round trip per request on PostgreSQL). Its
    # rows are still inserted under the unique key, like every other.
    new_key: bool = False


# --------------------------------------------------------------------------- journey steps


async def send_journey_step(db: Engine, plugins, settings, workspace_id: int, *, channel_type: str, template_id: str,
                            data: dict, sends: list[JourneySend], journey_id: str, journey_version: int,
                            step_id: str, custom: CustomSend | None = None) -> list[SendOutcome]:
    """Send one journey step to many customers; one outcome per send, in order. With `custom`, each customer's
    endpoints of its channels go to its URL in Pinpoint's custom-channel payload (through the WEBHOOK route)."""
    channel_type = ChannelType(channel_type).value
    units = await asyncio.to_thread(_journey_units, db, workspace_id, channel_type, template_id, data, sends,
                                    {"journey_id": journey_id, "journey_version": journey_version, "step_id": step_id},
                                    custom)
    return await deliver(db, plugins, workspace_id, units)


def _journey_units(db: Engine, workspace_id: int, channel_type: str, template_id: str, data: dict,
                   sends: list[JourneySend], attribution: dict, custom: CustomSend | None = None) -> list[Unit]:
    pks = list(dict.fromkeys(s.user_pk for s in sends))
    application_id = ""
    with reading(db) as conn:
        template = load_templates(conn, workspace_id, [template_id]).get(template_id) if template_id else None
        people = load_customers(conn, workspace_id, pks, frozenset(custom.channels) if custom else channel_type)
        if custom is not None:
            application_id = workspace_name(conn, workspace_id)
    units = []
    for s in sends:
        unit = Unit(key=s.idempotency_key, channel_type=channel_type, template=template, template_id=template_id or None,
                    data={**data, **s.data}, attrs={**attribution, "variant": s.variant}, user_pk=s.user_pk,
                    custom=custom, application_id=application_id)
        user, eps = people.get(s.user_pk, (None, []))
        unit.user = user
        if user is None:
            unit.outcome = SendOutcome(user_pk=s.user_pk, status="no_endpoint", error="no such customer")
        else:
            unit.targets, unit.outcome = targets_of(s.user_pk, eps)
        units.append(unit)
    return units


USER_COLS = ["id", "user_id", "attributes", "metrics", "timezone", "locale"]
ENDPOINT_COLS = ["id", "endpoint_id", "user_pk", "channel", "address", "attributes", "metrics", "opt_out",
                 "demographic", "location"]


def load_customers(conn: Connection, workspace_id: int, user_pks: list[int],
                   channel_type: str | frozenset[str]) -> dict[int, tuple[dict, list[dict]]]:
    """{user pk: (user context, [endpoint rows of that channel type])}; a set of channel types: of any of them
    (the empty set: every endpoint)."""
    wanted = frozenset([channel_type]) if isinstance(channel_type, str) else channel_type
    # Looked up by primary key / user_pk alone, the workspace and channel checked here: with
    # `workspace_id = ?` in the WHERE clause SQLite's planner walked the workspace's whole unique index
    # (every customer, every endpoint) for each batch instead of the IN list.
    found = {r[0]: dict(zip(USER_COLS, r)) for r in
             rows_where_in(conn, users, [*USER_COLS, "workspace_id"], "id", user_pks) if r[-1] == workspace_id}
    eps: dict[int, list[dict]] = {pk: [] for pk in found}
    for r in rows_where_in(conn, endpoints, [*ENDPOINT_COLS, "workspace_id"], "user_pk", list(found)):
        if (not wanted or r[3] in wanted) and r[-1] == workspace_id:
            eps[r[2]].append(dict(zip(ENDPOINT_COLS, r)))
    return {pk: (user_context(u), sorted(eps[pk], key=lambda e: e["id"])) for pk, u in found.items()}


def workspace_name(conn: Connection, workspace_id: int) -> str:
    return conn.execute(select(workspaces.c.name).where(workspaces.c.id == workspace_id)).scalar_one()


def user_context(u: dict) -> dict:
    return {"user_id": u["user_id"], "attributes": u["attributes"], "metrics": u["metrics"],
            "timezone": u["timezone"], "locale": u["locale"]}


def endpoint_target(e: dict) -> Target:
    ctx = {"id": e["endpoint_id"], "address": e["address"], "channel": e["channel"], "attributes": e["attributes"],
           "metrics": e["metrics"], "demographic": e["demographic"], "location": e["location"]}
    return Target(endpoint=e["endpoint_id"], address=e["address"], endpoint_pk=e["id"], endpoint_id=e["endpoint_id"],
                  context=ctx)


def targets_of(user_pk: int | None, eps: list[dict]) -> tuple[list[Target], SendOutcome | None]:
    """The endpoints to send to, or the outcome explaining why there are none."""
    live = [e for e in eps if not e["opt_out"]]
    if live:
        return [endpoint_target(e) for e in live], None
    if eps:
        return [], SendOutcome(user_pk=user_pk, status="opted_out", endpoint_ids=[e["endpoint_id"] for e in eps])
    return [], SendOutcome(user_pk=user_pk, status="no_endpoint")


# --------------------------------------------------------------------------- the pipeline


@dataclass
class _Pending:
    unit: int  # index in units
    target: Target
    message_id: str
    out: OutgoingMessage
    row_id: int | None = None
    fresh: bool = True  # inserted by this call (not resumed)
    created_at: int = 0  # of the row: the retry window starts there
    attempts: int = 0  # of earlier calls
    final: str | None = None  # the row was already sent/failed before this call: not sent again


async def deliver(db: Engine, plugins, workspace_id: int, units: list[Unit], *, claim: Job | None = None,
                  finish: Callable[[Connection, list[SendOutcome]], None] | None = None) -> list[SendOutcome]:
    """Run units through render -> write -> send -> record; one outcome per unit, in order.

    ``claim(conn)`` runs first in the transaction that writes the message rows: what it raises rolls that
    transaction back and nothing is sent. ``finish(conn, outcomes)`` runs in the transaction that records
    the results. A transactional request's Idempotency-Key rides on them, so a send costs two write
    transactions in all (both shared with concurrent sends: tidings.engine.platform.write_queue.write)."""
    outcomes: list[SendOutcome | None] = [u.outcome for u in units]
    todo = [i for i, u in enumerate(units) if u.outcome is None]
    if not todo:
        if claim is not None or finish is not None or _unsendable_keys(units):
            await write(db, lambda conn: _claim_and_finish(conn, claim, finish, outcomes, workspace_id, units))
        return outcomes  # type: ignore[return-value]
    pending: list[_Pending] = []  # filled by _render
    failures: dict[int, TemplateRenderError] = {}
    links = None
    if any(units[i].channel_type == "EMAIL" for i in todo):
        known = tracking.cached_key(db, workspace_id) is not None  # no thread hop once the key is cached
        links = Links(db, workspace_id, public_url()) if known else await asyncio.to_thread(Links.of, db, workspace_id)
    if len(todo) > RENDER_INLINE or not all(renders_quickly(units[i].template) for i in todo):
        # a journey step's batch, or a template with loops or macros (up to TIDINGS_TEMPLATE_MAX_SECONDS):
        # render in a thread, not on the event loop
        await asyncio.to_thread(_render, workspace_id, units, todo, links, pending, failures)
    else:
        _render(workspace_id, units, todo, links, pending, failures)
    owner = uuid.uuid4().hex
    claimed = await write(db, lambda conn: _claim_and_write_queued(conn, claim, plugins, workspace_id, units, todo, pending,
                                                                  failures, owner))
    for i in todo:
        u = units[i]
        if u.key in claimed.earlier:
            outcomes[i] = _duplicate(u, claimed.earlier[u.key], claimed.prior.get(u.key))
        elif i in failures:
            outcomes[i] = SendOutcome(user_pk=u.user_pk, status="render_failed", error=str(failures[i]),
                                      endpoint_ids=[t.endpoint_id for t in u.targets if t.endpoint_id])
    for p in pending:  # a resumed claim sends under the message ids it was first given
        if p.row_id is not None and p.message_id != p.out.message_id:
            p.out = _build(workspace_id, units[p.unit], p.target, links, p.message_id)
    handled = [p for p in pending if outcomes[p.unit] is None and p.final is not None]
    pending = [p for p in pending if outcomes[p.unit] is None and p.row_id is not None]
    sending = _Sending(db, workspace_id, units, claimed.routes, owner, RetryWindow.current())
    await _send(sending, pending, units, claimed)
    by_unit: dict[int, list[tuple[_Pending, SendResult | None]]] = {}
    for p in handled:
        by_unit.setdefault(p.unit, []).append((p, None))
    for p in pending:
        by_unit.setdefault(p.unit, []).append((p, sending.results.get(p.message_id)))
    for i in todo:
        if outcomes[i] is None:
            outcomes[i] = _aggregate(units[i], by_unit.get(i, []), sending.retry_at)
    done = sending.take()
    await asyncio.shield(write(db, lambda conn: _record_and_finish(conn, sending, done, finish, outcomes)))
    return outcomes  # type: ignore[return-value]


# Rendering a journey step's few hundred messages on the event loop stalled every other send's SMTP round
# trips (the worker delivered ~250-450 mails/s during event ingest, ~1,000/s after it). Small batches
# (a transactional request) render inline: a thread hop would cost more than the rendering.
RENDER_INLINE = 25


def _render(workspace_id: int, units: list[Unit], todo: list[int], links: "Links | None", pending: list[_Pending],
            failures: dict[int, TemplateRenderError]) -> None:
    """Render every unit's targets into `pending`; a unit whose template fails goes to `failures`.
    Needs nothing from the database, so it runs before the one write that claims."""
    for i in todo:
        u = units[i]
        try:
            built = [_build(workspace_id, u, t, links) for t in u.targets]
        except TemplateRenderError as exc:
            failures[i] = exc
            continue
        pending += [_Pending(i, t, out.message_id, out) for t, out in zip(u.targets, built)]


def _claim_and_finish(conn: Connection, claim, finish, outcomes, workspace_id: int, units: list[Unit]) -> None:
    if claim is not None:
        claim(conn)
    keys = _unsendable_keys(units)
    if keys:
        _close_untargeted_rows(conn, _rows_of_keys(conn, workspace_id, keys), set(), [], units)
    if finish is not None:
        finish(conn, outcomes)


def _unsendable_keys(units: list[Unit]) -> list[str]:
    """The keys of customers found with no endpoint to send to: an earlier attempt may have left rows open."""
    return [u.key for u in units if u.outcome is not None and u.user_pk is not None and not u.new_key
            and u.outcome.status in ("opted_out", "no_endpoint")]


def _close_untargeted_rows(conn: Connection, rows: _KeyRows, skip: set[str], pending: list[_Pending],
                           units: list[Unit]) -> None:
    """Fail the open rows of resumed keys whose endpoint this call no longer sends to: it opted out or was
    deleted after the first attempt wrote its row. Nothing else would ever close them (a journey send is
    resumed only by its cohort, which now skips that endpoint)."""
    targeted = {(units[p.unit].key, p.target.endpoint) for p in pending}
    stale = [r[2] for key, eps in rows.items() if key not in skip for endpoint, r in eps.items()
             if r[1] in OPEN and (key, endpoint) not in targeted]
    if stale:
        conn.execute(messages.update().where(messages.c.id.in_(stale)).values(
            status="failed", permanent=True, next_attempt_at=None, content=None, updated_at=now_ms(),
            error="opted_out: the endpoint opted out or was deleted before the message could be delivered"))


def _claim_and_write_queued(conn: Connection, claim, *args) -> _Claimed:
    if claim is not None:
        claim(conn)
    return _write_queued(conn, *args)


def _record_and_finish(conn: Connection, sending: "_Sending", done: list[_Pending], finish, outcomes) -> None:
    sending.record(conn, done)
    if finish is not None:
        finish(conn, outcomes)


def _duplicate(u: Unit, rows: list[tuple[str, str]], prior: str | None) -> SendOutcome:
    return SendOutcome(user_pk=u.user_pk, status="duplicate", message_ids=[m for m, _ in rows],
                       endpoint_ids=[e for _, e in rows if not e.startswith("to:")], prior=prior)


def _aggregate(u: Unit, mine: list[tuple[_Pending, SendResult | None]], retry_at: dict[str, int]) -> SendOutcome:
    """sent when any target got it (now or before this call); retrying while any may still get it; else failed.
    A target without a result was taken over by a newer attempt of the same send (it is that one's to report)."""
    ids = [p.message_id for p, _ in mine]
    eps = [p.target.endpoint_id for p, _ in mine if p.target.endpoint_id]
    if any(p.final == "sent" or (r is not None and r.ok) for p, r in mine):
        return SendOutcome(user_pk=u.user_pk, status="sent", message_ids=ids, endpoint_ids=eps)
    error = next((r.error for _, r in mine if r is not None and r.error), None)
    later = [retry_at[p.message_id] for p, _ in mine if p.message_id in retry_at]
    if later or any(r is None and p.final is None for p, r in mine):
        return SendOutcome(user_pk=u.user_pk, status="retrying", message_ids=ids, error=error or "in flight elsewhere",
                           endpoint_ids=eps, retry_at=min(later) if later else None)
    return SendOutcome(user_pk=u.user_pk, status="failed", message_ids=ids, error=error or "not sent", endpoint_ids=eps)


def public_url() -> str:
    """Where recipients and providers reach this deployment (tracking links, unsubscribe, callbacks)."""
    return (os.environ.get("TIDINGS_PUBLIC_URL") or "http://127.0.0.1:8000").rstrip("/")


@dataclass
class Links:
    """Signed tracking URLs of one workspace's emails (tidings.engine.messaging.tracking): the key is read once per delivery."""

    db: Engine
    workspace_id: int
    base: str

    @classmethod
    def of(cls, db: Engine, workspace_id: int) -> "Links":
        tracking.workspace_key(db, workspace_id)  # made (or read) here, in a thread; cached for the calls below
        return cls(db, workspace_id, public_url())

    def html(self, html: str, message_id: str) -> str:
        return tracking.rewrite_html(html, self.workspace_id, message_id, self.base, db=self.db)

    def unsubscribe(self, message_id: str) -> str:
        return tracking.unsubscribe_url(self.db, self.workspace_id, message_id, self.base)


def _build(workspace_id: int, u: Unit, t: Target, links: Links | None, mid: str | None = None) -> OutgoingMessage:
    if u.custom is not None:
        return _build_custom(workspace_id, u, t, mid)
    if u.template is None:
        raise TemplateRenderError("template", f"no template {u.template_id!r} in this workspace", u.template_id)
    content = render(u.template, {"user": u.user or {}, "endpoint": t.context or {"address": t.address,
                                                                                  "channel": u.channel_type},
                                  "data": u.data})
    mid = mid or uuid.uuid4().hex
    ct = ChannelType(u.channel_type)
    payload = None
    if ct in (ChannelType.WEBHOOK, ChannelType.CUSTOM):
        payload = _payload(content.body, content.data)
    html, unsubscribe = content.html, None
    if ct == ChannelType.EMAIL and links is not None:  # open pixel, click redirects, one-click unsubscribe
        html = links.html(html, mid) if html else html
        unsubscribe = links.unsubscribe(mid)
    return OutgoingMessage(
        message_id=mid, to=t.address, channel_type=ct, subject=content.subject, html=html,
        text=content.text, body=content.body, title=content.title, data=content.data, payload=payload,
        metadata={"workspace_id": workspace_id, "template_id": u.template_id, **u.attrs}, idempotency_key=mid,
        unsubscribe_url=unsubscribe,
    )


def _build_custom(workspace_id: int, u: Unit, t: Target, mid: str | None) -> OutgoingMessage:
    """One endpoint of a custom-channel send: addressed to the receiver's URL; a template's body, when the step
    names one, is the payload's Data."""
    assert u.custom is not None
    data = u.custom.data
    if u.template_id:
        if u.template is None:
            raise TemplateRenderError("template", f"no template {u.template_id!r} in this workspace", u.template_id)
        data = render(u.template, {"user": u.user or {}, "endpoint": t.context, "data": u.data}).body or ""
    mid = mid or uuid.uuid4().hex
    return OutgoingMessage(
        message_id=mid, to=u.custom.url, channel_type=ChannelType(u.channel_type),
        payload=custom_channel.payload(custom_channel.header(u.custom, u.application_id, data), t.context, u.user),
        metadata={"workspace_id": workspace_id, "template_id": u.template_id, **u.attrs, **custom_channel.METADATA},
        idempotency_key=mid)


def _payload(body: str | None, data: dict[str, str]) -> Any:
    """A webhook template whose body is JSON sends that JSON; otherwise {"body", "data"}."""
    if body:
        try:
            return json.loads(body)
        except ValueError:
            pass
    return {"body": body, "data": data}


@dataclass
class _Claimed:
    routes: dict[str, Route]
    earlier: dict[str, list[tuple[str, str]]]  # key -> (message id, endpoint) sent before, by anyone
    first_wait: dict[str, float]  # channel type -> wait for the first chunk, reserved in the same transaction
    prior: dict[str, str] = field(default_factory=dict)  # key of `earlier` -> sent | failed


def _write_queued(conn: Connection, plugins, workspace_id: int, units: list[Unit], todo: list[int], pending: list[_Pending],
                  failures: dict[int, TemplateRenderError], owner: str) -> _Claimed:
    """In the caller's write transaction: find keys handled before, insert the new message rows, take over
    the open rows of resumed keys, record rendering failures, reserve the first chunk of each rate-limited
    channel."""
    now = now_ms()
    routes = routes_for(conn, plugins, workspace_id, sorted({units[i].channel_type for i in todo}))
    unsendable = _unsendable_keys(units)
    rows = _rows_of_keys(conn, workspace_id, list(dict.fromkeys(
        [*(units[i].key for i in todo if not units[i].new_key), *unsendable])))
    earlier, prior = _handled_before(rows)
    _resume_open_rows(conn, units, pending, rows, earlier, owner)
    # a unit whose template failed keeps its rows as they were (it is reported as render_failed)
    _close_untargeted_rows(conn, rows, set(earlier) | {units[i].key for i in failures}, pending, units)
    _insert_fresh_rows(conn, workspace_id, units, [p for p in pending if units[p.unit].key not in rows], earlier,
                       routes, now, owner)
    store_events(conn, workspace_id, [_failure_event(workspace_id, units[i], exc, routes, now) for i, exc in failures.items()
                               if units[i].user_pk is not None and units[i].key not in earlier
                               and units[i].key not in rows])
    return _Claimed(routes, earlier, _reserve_first_chunks(conn, units, pending, routes, earlier), prior)


# key -> endpoint -> (message id, status, row id, attempts, created)
_KeyRows = dict[str, dict[str, tuple]]


def _rows_of_keys(conn: Connection, workspace_id: int, keys: list[str]) -> _KeyRows:
    rows: _KeyRows = {}
    for key, endpoint, mid, status, rid, attempts, created in rows_where_in(
            conn, messages, ["idempotency_key", "endpoint", "message_id", "status", "id", "attempts", "created_at"],
            "idempotency_key", keys, {"workspace_id": workspace_id}):
        rows.setdefault(key, {})[endpoint] = (mid, status, rid, attempts, created)
    return rows


def _handled_before(rows: _KeyRows) -> tuple[dict[str, list[tuple[str, str]]], dict[str, str]]:
    """The keys whose every row is final: nothing of theirs is sent again. (key -> (message id, endpoint)s,
    key -> "sent" or "failed")."""
    earlier: dict[str, list[tuple[str, str]]] = {}
    prior: dict[str, str] = {}
    for key, eps in rows.items():
        if all(r[1] not in OPEN for r in eps.values()):
            earlier[key] = [(r[0], e) for e, r in eps.items()]
            prior[key] = "sent" if any(r[1] == "sent" for r in eps.values()) else "failed"
    return earlier, prior


def _resume_open_rows(conn: Connection, units: list[Unit], pending: list[_Pending], rows: _KeyRows,
                      earlier: dict[str, list[tuple[str, str]]], owner: str) -> None:
    """The rows of a key an earlier call left open: this call resumes them and owns them from now on."""
    resumed: list[int] = []
    for p in pending:
        key = units[p.unit].key
        if key not in rows or key in earlier:
            continue
        p.fresh = False
        row = rows[key].get(p.target.endpoint)
        if row is None:  # an endpoint added since: not part of that send
            p.row_id = None
            continue
        p.message_id, p.created_at, p.attempts = row[0], row[4], row[3] or 0
        if row[1] in OPEN:
            p.row_id = row[2]
            resumed.append(row[2])
        else:
            p.row_id, p.final = None, row[1]
    if resumed:  # ours now: an older attempt still sending them stops at its next chunk (_Sending.check)
        conn.execute(messages.update().where(messages.c.id.in_(resumed)).values(owner=owner))


def _insert_fresh_rows(conn: Connection, workspace_id: int, units: list[Unit], fresh: list[_Pending],
                       earlier: dict[str, list[tuple[str, str]]], routes: dict[str, Route], now: int, owner: str) -> None:
    """Insert the rows of keys never seen; a key a concurrent sender inserted first is theirs (added to
    `earlier`), and none of our rows of that key stay."""
    for p in fresh:
        p.created_at = now
    ids = dict(bulk_insert(conn, messages, [_message_row(workspace_id, units[p.unit], p, routes, now, owner) for p in fresh],
                           ignore_conflicts_on=["workspace_id", "idempotency_key", "endpoint"],
                           returning=["message_id", "id"]))  # the rows a conflict skipped return nothing
    for p in fresh:
        p.row_id = ids.get(p.message_id)
    lost = {units[p.unit].key for p in fresh if p.row_id is None}
    if not lost:
        return
    # a concurrent sender inserted these keys between our read and our insert (PostgreSQL)
    ours = [p.row_id for p in fresh if p.row_id is not None and units[p.unit].key in lost]
    if ours:
        conn.execute(messages.delete().where(messages.c.id.in_(ours)))
    for p in fresh:
        if units[p.unit].key in lost:
            p.row_id = None
    for key, endpoint, mid in rows_where_in(conn, messages, ["idempotency_key", "endpoint", "message_id"],
                                            "idempotency_key", list(lost), {"workspace_id": workspace_id}):
        earlier.setdefault(key, []).append((mid, endpoint))


def _reserve_first_chunks(conn: Connection, units: list[Unit], pending: list[_Pending], routes: dict[str, Route],
                          earlier: dict[str, list[tuple[str, str]]]) -> dict[str, float]:
    """Per rate-limited channel type, the wait before its first chunk (reserved in this transaction)."""
    first_wait = {}
    for t, route in routes.items():
        n = sum(1 for p in pending if units[p.unit].channel_type == t and units[p.unit].key not in earlier
                and p.row_id is not None)
        if n and route.rate_limit and not route.error:
            first_wait[t] = reserve_in(conn, route.bucket_workspace, route.name, route.rate_limit,
                                       min(n, burst_of(route.rate_limit)))
    return first_wait


def _message_row(workspace_id: int, u: Unit, p: _Pending, routes: dict[str, Route], now: int, owner: str) -> dict[str, Any]:
    return {
        "workspace_id": workspace_id, "message_id": p.message_id, "idempotency_key": u.key, "endpoint": p.target.endpoint,
        "user_pk": u.user_pk, "endpoint_pk": p.target.endpoint_pk, "channel": routes[u.channel_type].name,
        "channel_type": u.channel_type, "address": p.target.address, "template_id": u.template_id,
        "journey_id": u.attrs.get("journey_id"), "journey_version": u.attrs.get("journey_version"),
        "step_id": u.attrs.get("step_id"), "variant": u.attrs.get("variant"),
        "transactional": bool(u.attrs.get("transactional")), "status": "queued", "error": None,
        "permanent": None, "attempts": 0, "provider_message_id": None, "created_at": now, "updated_at": now,
        "owner": owner,
        # what redelivery sends if this call dies before recording (tidings.engine.messaging.redelivery); journey rows are
        # resent by their cohort workflow, from the template
        "content": msgspec.to_builtins(p.out) if u.attrs.get("transactional") else None,
    }


def _failure_event(workspace_id: int, u: Unit, exc: TemplateRenderError, routes: dict[str, Route], now: int) -> dict:
    attrs = {**_attribution(u, routes[u.channel_type].name), "part": exc.part, "error": exc.message[:MAX_ERROR]}
    return _event_row(workspace_id, _event_id(u.key, "rendering_failure"), u.user_pk, None,
                      f"_{EVENT_PREFIX[u.channel_type]}.rendering_failure", attrs, now)


class _Sending:
    """What one deliver() call has sent and not yet recorded, recorded chunk by chunk as it goes."""

    def __init__(self, db: Engine, workspace_id: int, units: list[Unit], routes: dict[str, Route], owner: str,
                 window: RetryWindow):
        self.db, self.workspace_id, self.units, self.routes, self.owner, self.window = db, workspace_id, units, routes, owner, window
        self.results: dict[str, SendResult] = {}
        self.retry_at: dict[str, int] = {}  # message id -> next attempt (epoch ms) of a message left retrying
        self.unrecorded: list[_Pending] = []

    def take(self) -> list[_Pending]:
        """The results not yet recorded, handed to one write (taken on the event loop, not in its thread)."""
        done, self.unrecorded = self.unrecorded, []
        return done

    def record(self, conn: Connection, done: list[_Pending]) -> None:
        _record(conn, self.workspace_id, self.units, done, self.results, self.routes, self.retry_at)

    def check(self, conn: Connection, group: list[_Pending]) -> set[int]:
        """Of `group`'s rows, those still this call's to send (a retried attempt of the same send may have
        taken them over, or sent them, since)."""
        return {rid for rid, status, owner in rows_where_in(conn, messages, ["id", "status", "owner"], "id",
                                                            [p.row_id for p in group])
                if status in OPEN and owner == self.owner}

    async def send_group(self, channel, route: Route, group: list[_Pending], *, last: bool) -> str | None:
        """Send one group and record it at once (the last one is recorded by the caller's final write);
        returns the error when the provider failed the whole group transiently."""
        if not (group and group[0].fresh and not self.results):  # the first group of new rows is ours
            mine = await write(self.db, lambda conn: self.check(conn, group))
            group = [p for p in group if p.row_id in mine]
        if not group:
            return None
        now, started = now_ms(), time.perf_counter()
        sent = await send_with_retry(channel, [p.out for p in group], route.config, RETRY)
        channel_type = self.units[group[0].unit].channel_type
        PROVIDER_DURATION.labels(channel_type).observe(time.perf_counter() - started)
        for p, r in zip(group, sent):
            self.results[p.message_id] = r
            if not r.ok and not r.permanent:  # retried later, unless the window is over
                rounds = -(-(p.attempts + r.attempts) // RETRY.max_attempts)
                next_at = self.window.next_attempt(p.created_at or now, rounds, now)
                if next_at is not None:
                    self.retry_at[p.message_id] = next_at
            _account(channel_type, p.message_id, r, p.message_id in self.retry_at)
        self.unrecorded += group
        if not last:
            done = self.take()
            try:  # shielded: an attempt cancelled meanwhile still records what it handed over
                await asyncio.shield(write(self.db, lambda conn: self.record(conn, done)))
            except Exception:
                self.unrecorded = done + self.unrecorded  # not written: the final write records them
                raise
        return _provider_down([self.results[p.message_id] for p in group])

    def defer(self, rest: list[_Pending], error: str) -> None:
        """Leave `rest` retrying without trying them (the provider just failed a whole group transiently):
        a dead server costs one group's attempts, not the batch's. The round counts as one tried (its
        attempts are recorded), so the backoff keeps growing while the provider stays down."""
        now = now_ms()
        if rest:
            SENDS.labels(self.units[rest[0].unit].channel_type, "deferred").inc(len(rest))
        for p in rest:
            self.results[p.message_id] = SendResult(message_id=p.message_id, status="failed", permanent=False,
                                                    error=f"not tried, the provider is unreachable: {error}",
                                                    attempts=RETRY.max_attempts)
            rounds = -(-(p.attempts + RETRY.max_attempts) // RETRY.max_attempts)
            next_at = self.window.next_attempt(p.created_at or now, rounds, now)
            if next_at is not None:
                self.retry_at[p.message_id] = next_at
        self.unrecorded += [p for p in rest if p.row_id is not None]


def _account(channel_type: str, message_id: str, r: SendResult, retrying: bool) -> None:
    """Count one provider result (tidings.engine.platform.metrics_registry) and log it with its message id (INFO
    either way: a bounced address is ordinary, and the metrics are what alerts read)."""
    outcome = "sent" if r.ok else "retrying" if retrying else "failed"
    SENDS.labels(channel_type, outcome).inc()
    if r.ok:
        log.info("sent %s", message_id, extra={"message_id": message_id, "channel": channel_type, "outcome": outcome})
    else:
        log.info("not sent %s (%s): %s", message_id, outcome, r.error,
                    extra={"message_id": message_id, "channel": channel_type, "outcome": outcome})


def _provider_down(results: list[SendResult]) -> str | None:
    """The error of a group that failed whole and transiently (connection refused, timeouts...), else None."""
    if results and all(not r.ok and not r.permanent for r in results):
        return results[-1].error or "transient failure"
    return None


async def _send(sending: _Sending, pending: list[_Pending], units: list[Unit], claimed: _Claimed) -> None:
    by_type: dict[str, list[_Pending]] = {}
    for p in pending:
        by_type.setdefault(units[p.unit].channel_type, []).append(p)

    async def one(t: str, route: Route, batch: list[_Pending]) -> None:
        if route.error or route.channel is None:
            for p in batch:
                sending.results[p.message_id] = SendResult.failed(p.message_id, route.error or "no channel",
                                                                  permanent=True)
            sending.unrecorded += batch
            return
        # the outbox channel keeps messages in our database, through messaging's own write
        channel = route.channel.with_store(outbox_store(sending.db)) if hasattr(route.channel, "with_store") else route.channel
        done = 0
        async for chunk in paced(sending.db, route.bucket_workspace, route.name, route.rate_limit, batch,
                                 claimed.first_wait.get(t)):
            for start in range(0, len(chunk), RECORD_GROUP):
                group = chunk[start:start + RECORD_GROUP]
                done += len(group)
                down = await sending.send_group(channel, route, group, last=done == len(batch))
                if down is not None:  # the provider is down: the rest waits for the next round, untried
                    sending.defer(batch[done:], down)
                    return

    await asyncio.gather(*(one(t, claimed.routes[t], b) for t, b in by_type.items()))


def _attribution(u: Unit, channel: str) -> dict[str, Any]:
    base = {"channel": channel, "template_id": u.template_id}
    if u.attrs.get("transactional"):  # goal: {"event", "within_seconds"}, read by tidings.engine.analytics.metrics
        return {**base, "transactional": True, **({"goal": u.attrs["goal"]} if u.attrs.get("goal") else {})}
    return {**base, **{k: u.attrs.get(k) for k in ("journey_id", "journey_version", "step_id", "variant")}}


def _event_id(key: str, what: str) -> str:
    return f"{what}-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _event_row(workspace_id: int, event_id: str, user_pk: int, endpoint_pk: int | None, name: str, attrs: dict,
               now: int) -> dict[str, Any]:
    return {"workspace_id": workspace_id, "event_id": event_id, "user_pk": user_pk, "endpoint_pk": endpoint_pk,
            "name": name, "ts": now, "attributes": attrs, "metrics": {}, "received_at": now}


def _record(conn: Connection, workspace_id: int, units: list[Unit], pending: list[_Pending],
            results: dict[str, SendResult], routes: dict[str, Route], retry_at: dict[str, int]) -> None:
    """In the caller's write transaction: each message's result and, once final, its send / failed event.
    A transient failure leaves the message `retrying` (its last error and next attempt stored) until the
    retry window is over."""
    if not pending:
        return
    now = now_ms()
    updates, evs = [], []
    for p in pending:
        u, r = units[p.unit], results[p.message_id]
        attempts = p.attempts + r.attempts
        status: str = r.status
        next_at, content = retry_at.get(p.message_id), None
        if next_at is not None:  # only redelivery (transactional rows) resends from the stored content
            status = "retrying"
            content = msgspec.to_builtins(p.out) if u.attrs.get("transactional") else None
        updates.append({"status": status, "error": (r.error or None) and r.error[:MAX_ERROR],
                        "permanent": None if r.ok else r.permanent, "attempts": attempts,
                        "provider_message_id": r.provider_message_id, "updated_at": now, "next_attempt_at": next_at,
                        "content": content, "id": p.row_id})
        if u.user_pk is None or status == "retrying":
            continue
        attrs = {"message_id": p.message_id, "endpoint_id": p.target.endpoint_id,
                 **_attribution(u, routes[u.channel_type].name)}
        if r.ok:  # feedback finds the message by the provider's id (tidings.engine.messaging.ledger.index_sends)
            if r.provider_message_id:
                attrs["provider_message_id"] = str(r.provider_message_id)
        else:
            attrs |= {"error": (r.error or "")[:MAX_ERROR], "permanent": r.permanent}
            if r.error_code:  # as a provider's failure callback names it (Pinpoint's txn-sms-error-distribution)
                attrs["error_code"] = str(r.error_code)[:64]
        kind = "send" if r.ok else "failed"
        # `{message_id}:{type}`, as provider feedback names status events: a provider failure reported
        # for a message we already recorded as failed counts once.
        evs.append((p.row_id, _event_row(workspace_id, status_event_id(p.message_id, kind), u.user_pk,
                                         p.target.endpoint_pk, f"_{EVENT_PREFIX[u.channel_type]}.{kind}", attrs, now)))
    # A row another attempt of this send already finished (it took the row over, see _Sending) keeps that
    # result: this one's, recorded late, must not turn a `sent` back into `retrying`, nor add an event.
    updated = bulk_update_where_in(conn, messages, updates, "id", "status", OPEN)
    store_events(conn, workspace_id, [e for rid, e in evs if rid in updated])


def store_events(conn: Connection, workspace_id: int, rows: list[dict[str, Any]]) -> None:
    """Store message events and tell `changes`. Not tidings.engine.customers.events.record: that resolves customers by
    their public ids and re-creates a user erased meanwhile; here we hold row ids and drop events of
    customers erased while their message was on its way."""
    if not rows:
        return
    live = {pk for (pk,) in rows_where_in(conn, users, ["id"], "id", list({r["user_pk"] for r in rows}))}
    eps = {pk for (pk,) in rows_where_in(conn, endpoints, ["id"], "id",
                                         list({r["endpoint_pk"] for r in rows if r["endpoint_pk"]}))}
    fresh = [{**r, "endpoint_pk": r["endpoint_pk"] if r["endpoint_pk"] in eps else None}
             for r in rows if r["user_pk"] in live]
    changes.events_recorded(conn, workspace_id, insert_new(conn, workspace_id, fresh))
