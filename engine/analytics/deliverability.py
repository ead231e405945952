"""Deliverability: hard-bounce and complaint rates per channel and day, against the thresholds a mail
provider judges a sender's reputation by, and the addresses the feedback has marked.

The rates divide distinct messages: bounce = hard-bounced / sent, complaint = complained / sent, each
counted on the day its event was recorded (as SES's reputation dashboard counts). Soft bounces are
temporary and count for neither (metrics.py's `bounced` adds them for delivery figures).

The thresholds are SES's "under review" levels (its reputation guidance): a bounce rate of 5% and a
complaint rate of 0.1%; past them a provider may pause the account's sending.

Suppressed addresses: the engine sends to no endpoint whose `opt_out` is set (an `unsubscribed`
feedback sets it, as does `PUT /v1/users/{id}` with `opt_out: true`). Endpoints that hard-bounced or
complained are listed too, with `opt_out` as it is, so an operator sees an address still being sent to.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, distinct, func, or_, select

from tidings.engine.customers.tables import endpoints, events, users
from tidings.engine.messaging.ledger import names_of
from tidings.engine.platform.db import reading
from tidings.engine.workspaces.service import WorkspaceRef

BOUNCE_THRESHOLD = 0.05
COMPLAINT_THRESHOLD = 0.001
DAY_MS = 86_400_000
_KINDS = {"sent": ("send",), "bounced": ("hard_bounce",), "complained": ("complaint",)}
_KIND_OF_NAME = {n: kind for kind, types in _KINDS.items() for n in names_of(types)}
REASONS = names_of(["hard_bounce", "complaint", "unsubscribe"])


def _rate(part: int, sent: int) -> float | None:
    return round(part / sent, 4) if sent else None


def _day(day_number: int) -> str:
    return datetime.fromtimestamp(day_number * DAY_MS / 1000, UTC).date().isoformat()


def daily_rates(db: Engine, workspace: WorkspaceRef, *, since_ms: int, until_ms: int) -> list[dict[str, Any]]:
    """[{channel, days: [{day, sent, bounced, complained, bounce_rate, complaint_rate, over: [...]}]}],
    one row per day of [since_ms, until_ms) for each channel that sent or got feedback then."""
    day = (events.c.ts // DAY_MS).label("day")
    channel = events.c.attributes["channel"].as_string().label("channel")
    q = (select(channel, day, events.c.name, func.count(distinct(events.c.attributes["message_id"].as_string())))
         .where(events.c.workspace_id == workspace.id, events.c.name.in_(list(_KIND_OF_NAME)), events.c.ts >= since_ms,
                events.c.ts < until_ms)
         .group_by(channel, day, events.c.name))
    counts: dict[str, dict[int, dict[str, int]]] = {}
    with reading(db) as conn:
        for ch, d, name, n in conn.execute(q):
            per_day = counts.setdefault(ch or "", {})
            row = per_day.setdefault(int(d), dict.fromkeys(_KINDS, 0))
            row[_KIND_OF_NAME[name]] += n
    first, last = since_ms // DAY_MS, (until_ms - 1) // DAY_MS
    out = []
    for ch in sorted(counts):
        days = []
        for d in range(first, last + 1):
            c = counts[ch].get(d, dict.fromkeys(_KINDS, 0))
            bounce, complaint = _rate(c["bounced"], c["sent"]), _rate(c["complained"], c["sent"])
            over = [label for label, rate, limit in (("bounce", bounce, BOUNCE_THRESHOLD),
                                                     ("complaint", complaint, COMPLAINT_THRESHOLD))
                    if rate is not None and rate > limit]
            days.append({"day": _day(d), **c, "bounce_rate": bounce, "complaint_rate": complaint, "over": over})
        out.append({"channel": ch, "days": days})
    return out


def suppressed_addresses(db: Engine, workspace: WorkspaceRef, *, limit: int = 200) -> list[dict[str, Any]]:
    """Endpoints opted out or marked by a hard bounce or complaint, latest first: {user_id, endpoint_id,
    channel, address, opt_out, reason (hard_bounce | complaint | unsubscribe | opted_out), at (ms or None)}."""
    last = (select(events.c.endpoint_pk, func.max(events.c.ts).label("at"))
            .where(events.c.workspace_id == workspace.id, events.c.name.in_(REASONS), events.c.endpoint_pk.is_not(None))
            .group_by(events.c.endpoint_pk).subquery())
    q = (select(users.c.user_id, endpoints.c.id, endpoints.c.endpoint_id, endpoints.c.channel, endpoints.c.address,
                endpoints.c.opt_out, endpoints.c.updated_at, last.c.at)
         .join(users, users.c.id == endpoints.c.user_pk)
         .outerjoin(last, last.c.endpoint_pk == endpoints.c.id)
         .where(endpoints.c.workspace_id == workspace.id, or_(endpoints.c.opt_out.is_(True), last.c.at.is_not(None)))
         .order_by(func.coalesce(last.c.at, endpoints.c.updated_at).desc(), endpoints.c.id)
         .limit(limit))
    with reading(db) as conn:
        rows = conn.execute(q).all()
        marked = [r.id for r in rows if r.at is not None]
        reasons = {} if not marked else {
            pk: name for pk, name, _ in conn.execute(
                select(events.c.endpoint_pk, events.c.name, events.c.ts)
                .where(events.c.workspace_id == workspace.id, events.c.endpoint_pk.in_(marked), events.c.name.in_(REASONS))
                .order_by(events.c.ts))}  # the latest event of each endpoint wins
    return [{"user_id": r.user_id, "endpoint_id": r.endpoint_id, "channel": r.channel, "address": r.address,
             "opt_out": bool(r.opt_out), "reason": reasons[r.id].split(".", 1)[1] if r.id in reasons else "opted_out",
             "at": r.at if r.at is not None else r.updated_at} for r in rows]
