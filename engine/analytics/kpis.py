"""Pinpoint's standard engagement metrics (KPIs), computed from the message events of a workspace.

A KPI is named as Pinpoint names it (`email-open-rate`, `txn-emails-sent`, `journey-emails-opened`, ...) and
answers rows: a single-value KPI one row, a `-grouped-by-date` KPI a row per UTC calendar day that has data
(its GroupedBys `Date` = `2026-12-03`), a `-grouped-by-journey-activity` KPI a row per journey step that has
data (`JourneyActivityId`). Each value carries the KPI's friendly name (`txn-emails-sent` -> `TxnEmailsSent`,
Pinpoint's own rule) and is a float.

Every KPI is one read of the message events in the time range (since inclusive, until exclusive) narrowed
to its scope, counted in Python:
- the "campaign" KPIs (successful-delivery-rate, email-open-rate, unique-deliveries, ...) count the messages
  of journeys (Tidings's campaigns are broadcast journeys), or of one journey when a journey id is given;
- the `txn-` KPIs count transactional messages (SendMessages, /v1/messages) of their channel;
- the `journey-emails-` and `emails-...-grouped-by-journey-activity` KPIs count one journey's email.
"Messages" are distinct message ids; "endpoints" distinct endpoint ids (the customer when a message had
none); events (clicks, unsubscribes) count every occurrence. A rate is None when its base is 0, and a KPI
with no message event of its scope in the range has no rows: Pinpoint's "null" result.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from tidings.engine.customers.tables import events
from tidings.engine.messaging.ledger import TYPES, names_of, parse_name
from tidings.engine.platform.db import reading
from tidings.engine.platform.errors import InvalidInput
from tidings.engine.workspaces.service import WorkspaceRef


@dataclass
class Tally:
    """What the message events of one group say: per (channel, type), the events, the distinct message ids
    and the distinct endpoints."""
    events: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    messages: dict[tuple[str, str], set] = field(default_factory=lambda: defaultdict(set))
    endpoints: dict[tuple[str, str], set] = field(default_factory=lambda: defaultdict(set))

    def add(self, channel: str, type_: str, message_id: Any, endpoint: Any) -> None:
        self.events[(channel, type_)] += 1
        if message_id is not None:
            self.messages[(channel, type_)].add(message_id)
        self.endpoints[(channel, type_)].add(endpoint)

    def n_events(self, channels: tuple[str, ...], *types: str) -> int:
        return sum(self.events.get((c, t), 0) for c in channels for t in types)

    def n_messages(self, channels: tuple[str, ...], *types: str) -> int:
        return len(set().union(*(self.messages.get((c, t), set()) for c in channels for t in types)))

    def n_endpoints(self, channels: tuple[str, ...], *types: str) -> int:
        return len(set().union(*(self.endpoints.get((c, t), set()) for c in channels for t in types)))


ALL = ("email", "sms", "voice", "push", "webhook", "custom")
EMAIL, SMS, PUSH = ("email",), ("sms",), ("push",)
BOUNCES = ("hard_bounce", "soft_bounce")


def _rate(numerator: int, base: int) -> float | None:
    return numerator / base if base else None


def _delivered_base(t: Tally, channels: tuple[str, ...]) -> int:
    """Delivered messages, or sent ones when the channel reported no deliveries (an SMTP relay without
    feedback): the base of Tidings's own open and click rates (tidings.engine.analytics.metrics)."""
    return t.n_messages(channels, "delivered") or t.n_messages(channels, "send")


def _sent(channels: tuple[str, ...]) -> Callable[[Tally], float | None]:
    return lambda t: t.n_messages(channels, "send")


def _messages(channels: tuple[str, ...], *types: str) -> Callable[[Tally], float | None]:
    return lambda t: t.n_messages(channels, *types)


def _events(channels: tuple[str, ...], *types: str) -> Callable[[Tally], float | None]:
    return lambda t: t.n_events(channels, *types)


def _endpoints(channels: tuple[str, ...], *types: str) -> Callable[[Tally], float | None]:
    return lambda t: t.n_endpoints(channels, *types)


def _delivery_rate(channels: tuple[str, ...]) -> Callable[[Tally], float | None]:
    return lambda t: _rate(t.n_messages(channels, "delivered"), t.n_messages(channels, "send"))


def _share_of_sent(channels: tuple[str, ...], *types: str) -> Callable[[Tally], float | None]:
    return lambda t: _rate(t.n_messages(channels, *types), t.n_messages(channels, "send"))


def _share_of_delivered(channels: tuple[str, ...], *types: str) -> Callable[[Tally], float | None]:
    return lambda t: _rate(t.n_messages(channels, *types), _delivered_base(t, channels))


@dataclass(frozen=True)
class Kpi:
    name: str
    scope: str  # "journeys" (all journeys, or one), "transactional", "journey" (one journey, required)
    channels: tuple[str, ...]  # the channels whose events are read
    value: Callable[[Tally], float | None]
    description: str

    @property
    def key(self) -> str:
        """Pinpoint's friendly name of the value: the name's terms capitalised and joined."""
        return "".join(part.capitalize() for part in self.name.split("-"))


def _define() -> dict[str, Kpi]:
    kpis = [
        # Pinpoint's application (all campaigns) and campaign metrics: here over journeys, or one journey.
        Kpi("successful-delivery-rate", "journeys", ALL, _delivery_rate(ALL),
            "messages delivered / messages sent, every channel"),
        Kpi("email-open-rate", "journeys", EMAIL, _share_of_delivered(EMAIL, "open"),
            "email messages opened / email messages delivered (sent when the channel reports no deliveries)"),
        Kpi("email-click-rate", "journeys", EMAIL, _share_of_delivered(EMAIL, "click"),
            "email messages clicked / the same base as email-open-rate (a Tidings addition)"),
        Kpi("push-open-rate", "journeys", PUSH, _share_of_delivered(PUSH, "open"),
            "push notifications opened / push notifications delivered (sent when none reported)"),
        Kpi("hard-bounce-rate", "journeys", EMAIL, _share_of_sent(EMAIL, "hard_bounce"),
            "email messages hard-bounced / email messages sent"),
        Kpi("unique-deliveries", "journeys", ALL, _endpoints(ALL, "delivered"),
            "distinct endpoints messages were delivered to"),
        Kpi("unique-opens", "journeys", ALL, _endpoints(ALL, "open"),
            "distinct endpoints that opened a message (a Tidings addition)"),
        Kpi("unique-clicks", "journeys", ALL, _endpoints(ALL, "click"),
            "distinct endpoints that clicked a link (a Tidings addition)"),
        Kpi("attempted-deliveries", "journeys", ALL, _sent(ALL), "messages sent"),
        Kpi("successful-deliveries", "journeys", ALL, _messages(ALL, "delivered"), "messages delivered"),
        Kpi("direct-email-opens", "journeys", EMAIL, _messages(EMAIL, "open"), "email messages opened"),
        Kpi("clicks", "journeys", ALL, _events(ALL, "click"), "link clicks (every click)"),
        # Transactional email
        Kpi("txn-emails-sent", "transactional", EMAIL, _sent(EMAIL), "messages sent"),
        Kpi("txn-emails-delivered", "transactional", EMAIL, _messages(EMAIL, "delivered"), "messages delivered"),
        Kpi("txn-emails-delivery-rate", "transactional", EMAIL, _delivery_rate(EMAIL),
            "messages delivered / messages sent"),
        Kpi("txn-emails-opened", "transactional", EMAIL, _messages(EMAIL, "open"), "messages opened"),
        Kpi("txn-emails-open-rate", "transactional", EMAIL, _share_of_delivered(EMAIL, "open"),
            "messages opened / messages delivered (sent when none reported)"),
        Kpi("txn-emails-unique-opens", "transactional", EMAIL, _endpoints(EMAIL, "open"),
            "distinct endpoints that opened"),
        Kpi("txn-emails-clicked", "transactional", EMAIL, _events(EMAIL, "click"), "link clicks (every click)"),
        Kpi("txn-emails-unique-clicks", "transactional", EMAIL, _endpoints(EMAIL, "click"),
            "distinct endpoints that clicked"),
        Kpi("txn-emails-hard-bounced", "transactional", EMAIL, _messages(EMAIL, "hard_bounce"),
            "messages hard-bounced"),
        Kpi("txn-emails-soft-bounced", "transactional", EMAIL, _messages(EMAIL, "soft_bounce"),
            "messages soft-bounced"),
        Kpi("txn-emails-with-complaints", "transactional", EMAIL, _messages(EMAIL, "complaint"),
            "messages reported as spam"),
        Kpi("txn-emails-complaint-rate", "transactional", EMAIL, _share_of_sent(EMAIL, "complaint"),
            "messages reported as spam / messages sent"),
        # Transactional SMS
        Kpi("txn-sms-sent", "transactional", SMS, _sent(SMS), "messages sent"),
        Kpi("txn-sms-delivered", "transactional", SMS, _messages(SMS, "delivered"), "messages delivered"),
        Kpi("txn-sms-delivery-rate", "transactional", SMS, _delivery_rate(SMS),
            "messages delivered / messages sent"),
        # Journey engagement (email of one journey)
        Kpi("journey-emails-sent", "journey", EMAIL, _sent(EMAIL), "messages sent"),
        Kpi("journey-emails-delivered", "journey", EMAIL, _messages(EMAIL, "delivered"), "messages delivered"),
        Kpi("journey-emails-opened", "journey", EMAIL, _messages(EMAIL, "open"), "messages opened"),
        Kpi("journey-emails-clicked", "journey", EMAIL, _events(EMAIL, "click"), "link clicks (every click)"),
        Kpi("journey-emails-complained", "journey", EMAIL, _messages(EMAIL, "complaint"),
            "messages reported as spam"),
        Kpi("journey-emails-hardbounced", "journey", EMAIL, _messages(EMAIL, "hard_bounce"),
            "messages hard-bounced"),
        Kpi("journey-emails-softbounced", "journey", EMAIL, _messages(EMAIL, "soft_bounce"),
            "messages soft-bounced"),
        Kpi("journey-emails-rejected", "journey", EMAIL, _messages(EMAIL, "rejected"),
            "messages refused before sending"),
        Kpi("journey-emails-unsubscribed", "journey", EMAIL, _events(EMAIL, "unsubscribe"),
            "unsubscribe clicks"),
    ]
    return {k.name: k for k in kpis}


KPIS = _define()
BY_DATE = "-grouped-by-date"
# Pinpoint's per-activity names: `journey-emails-opened` per activity is `emails-opened-grouped-by-journey-activity`
BY_ACTIVITY = "-grouped-by-journey-activity"


@dataclass(frozen=True)
class Row:
    grouped_by: tuple[tuple[str, str], ...]  # (key, value) pairs; () for a single-value KPI
    values: tuple[tuple[str, float], ...]  # (friendly name, value)


@dataclass(frozen=True)
class KpiQuery:
    kpi: Kpi
    group: str | None  # None, "Date" or "JourneyActivityId"


def resolve(name: str, *, journey: bool) -> KpiQuery:
    """The KPI a name asks for, in the context of one journey (GetJourneyDateRangeKpi) or of the whole
    application (GetApplicationDateRangeKpi); InvalidInput naming KpiName for a name this cannot answer."""
    base, group = name, None
    if name.endswith(BY_DATE):
        base, group = name.removesuffix(BY_DATE), "Date"
    elif name.endswith(BY_ACTIVITY):
        base, group = "journey-" + name.removesuffix(BY_ACTIVITY), "JourneyActivityId"
    kpi = KPIS.get(base)
    if kpi is None:
        raise InvalidInput(f"KpiName: {name!r} is not a metric Tidings computes (see docs/pinpoint.md for the "
                           f"supported names)", field="KpiName")
    if kpi.scope == "journey" and not journey:
        raise InvalidInput(f"KpiName: {name!r} is a journey metric; ask GetJourneyDateRangeKpi for it",
                           field="KpiName")
    if kpi.scope == "transactional" and journey:
        raise InvalidInput(f"KpiName: {name!r} counts transactional messages, which belong to no journey; "
                           f"ask GetApplicationDateRangeKpi for it", field="KpiName")
    if group == "JourneyActivityId" and kpi.scope != "journey":
        raise InvalidInput(f"KpiName: {name!r} is not a metric Tidings computes", field="KpiName")
    return KpiQuery(kpi, group)


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1000, tz=UTC).date().isoformat()


def compute(db: Engine, workspace: WorkspaceRef, name: str, *, since_ms: int, until_ms: int,
            journey_id: str | None = None) -> list[Row]:
    """The rows of KPI `name` over the message events with since_ms <= ts < until_ms: of one journey when
    journey_id is given (the caller has checked that the journey exists), else of the whole workspace."""
    query = resolve(name, journey=journey_id is not None)
    kpi = query.kpi
    where = [events.c.workspace_id == workspace.id, events.c.name.in_(names_of(TYPES, kpi.channels)),
             events.c.ts >= since_ms, events.c.ts < until_ms]
    if journey_id is not None:
        where.append(events.c.attributes["journey_id"].as_string() == journey_id)
    tallies: dict[str, Tally] = defaultdict(Tally)
    with reading(db) as conn:
        rows = conn.execute(select(events.c.name, events.c.user_pk, events.c.ts, events.c.attributes).where(*where))
        for event_name, user_pk, ts, attrs in rows:
            parsed = parse_name(event_name)
            if parsed is None:
                continue
            a = attrs or {}
            transactional = a.get("transactional") is True
            if (kpi.scope == "transactional") != transactional:
                continue  # transactional KPIs read those alone; the others read journeys' messages alone
            if kpi.scope != "transactional" and not a.get("journey_id"):
                continue
            if query.group == "Date":
                group = _day(ts)
            elif query.group == "JourneyActivityId":
                group = a.get("step_id")
                if group is None:
                    continue
            else:
                group = ""
            endpoint = a.get("endpoint_id") or f"customer:{user_pk}"
            tallies[str(group)].add(parsed[0], parsed[1], a.get("message_id"), endpoint)
    out = []
    for group in sorted(tallies):
        value = kpi.value(tallies[group])
        if value is None:
            continue
        out.append(Row(grouped_by=((query.group, group),) if query.group else (),
                       values=((kpi.key, float(value)),)))
    return out


def supported_names() -> dict[str, list[str]]:
    """Every KPI name by where it is asked: for docs and the refusal message."""
    app = [k.name for k in KPIS.values() if k.scope != "journey"]
    journey = [k.name for k in KPIS.values() if k.scope != "transactional"]
    return {"application": app + [n + BY_DATE for n in app],
            "journey": journey + [n + BY_DATE for n in journey]
            + [k.name.removeprefix("journey-") + BY_ACTIVITY for k in KPIS.values() if k.scope == "journey"]}
