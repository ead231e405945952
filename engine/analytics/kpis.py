"""Pinpoint's standard engagement metrics (KPIs), computed from the message events of a workspace.

A KPI is named as Pinpoint names it (`email-open-rate`, `txn-emails-sent`, `journey-emails-opened`, ...) and
answers rows: a single-value KPI one row, a `-grouped-by-date` KPI a row per UTC calendar day that has data
(its GroupedBys `Date` = `2026-12-03`), a `-grouped-by-journey-activity` KPI a row per journey step that has
data (`JourneyActivityId`), a `-grouped-by-campaign` KPI a row per campaign (`CampaignId`: a campaign is a
broadcast journey of the same id), a `-grouped-by-campaign-activity` KPI a row per campaign activity
(`CampaignActivityId`, the campaign version that sent the messages, as GetCampaignActivities names it; with
its `CampaignId` too when the KPI is the application's), a transactional SMS KPI `-grouped-by-country` a row
per recipient country (`Country`, ISO 3166-1 alpha-2: the endpoint's Location.Country, else the country of its
phone number, else `ZZ`, unknown), and `txn-sms-error-distribution` a row per provider error code of the failed
messages (`ErrorCode`: Twilio's `21211`, ...; `UNKNOWN` when the provider gave none, a network error say). Each value carries the KPI's friendly name (`txn-emails-sent` -> `TxnEmailsSent`,
Pinpoint's own rule) and is a float.

Every KPI is one GROUP BY over the message events in the time range (since inclusive, until exclusive)
narrowed to its scope:
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
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime

import phonenumbers
from sqlalchemy import Engine, String, cast, distinct, func, literal_column, select

from tidings.engine.customers.tables import endpoints, events
from tidings.engine.journeys.pinpoint.campaigns import activity_id
from tidings.engine.messaging.ledger import TYPES, names_of, parse_name
from tidings.engine.platform.db import reading
from tidings.engine.platform.errors import InvalidInput
from tidings.engine.workspaces.service import WorkspaceRef


@dataclass
class Tally:
    """What the message events of one group say: per (channel, type), the events, the distinct message ids
    and the distinct endpoints. A message and an endpoint have one channel, so distinct counts add up
    across channels."""
    events: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    messages: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    endpoints: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))

    def add(self, channel: str, type_: str, events: int, messages: int, endpoints: int) -> None:
        self.events[(channel, type_)] += events
        self.messages[(channel, type_)] += messages
        self.endpoints[(channel, type_)] += endpoints

    def n_events(self, channels: tuple[str, ...], type_: str) -> int:
        return sum(self.events.get((c, type_), 0) for c in channels)

    def n_messages(self, channels: tuple[str, ...], type_: str) -> int:
        return sum(self.messages.get((c, type_), 0) for c in channels)

    def n_endpoints(self, channels: tuple[str, ...], type_: str) -> int:
        return sum(self.endpoints.get((c, type_), 0) for c in channels)


ALL = ("email", "sms", "voice", "push", "webhook", "custom")
EMAIL, SMS, PUSH = ("email",), ("sms",), ("push",)


def _rate(numerator: int, base: int) -> float | None:
    return numerator / base if base else None


def _delivered_base(t: Tally, channels: tuple[str, ...]) -> int:
    """Delivered messages, or sent ones when the channel reported no deliveries (an SMTP relay without
    feedback): the base of Tidings's own open and click rates (tidings.engine.analytics.metrics)."""
    return t.n_messages(channels, "delivered") or t.n_messages(channels, "send")


def _sent(channels: tuple[str, ...]) -> Callable[[Tally], float | None]:
    return lambda t: t.n_messages(channels, "send")


def _messages(channels: tuple[str, ...], type_: str) -> Callable[[Tally], float | None]:
    return lambda t: t.n_messages(channels, type_)


def _events(channels: tuple[str, ...], type_: str) -> Callable[[Tally], float | None]:
    return lambda t: t.n_events(channels, type_)


def _endpoints(channels: tuple[str, ...], type_: str) -> Callable[[Tally], float | None]:
    return lambda t: t.n_endpoints(channels, type_)


def _delivery_rate(channels: tuple[str, ...]) -> Callable[[Tally], float | None]:
    return lambda t: _rate(t.n_messages(channels, "delivered"), t.n_messages(channels, "send"))


def _share_of_sent(channels: tuple[str, ...], type_: str) -> Callable[[Tally], float | None]:
    return lambda t: _rate(t.n_messages(channels, type_), t.n_messages(channels, "send"))


def _share_of_delivered(channels: tuple[str, ...], type_: str) -> Callable[[Tally], float | None]:
    return lambda t: _rate(t.n_messages(channels, type_), _delivered_base(t, channels))


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
        Kpi("txn-sms-error-distribution", "transactional", SMS, _messages(SMS, "failed"),
            "messages that failed, per provider error code (ErrorCode)"),
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
DAY_MS = 86_400_000
# Pinpoint's per-activity names: `journey-emails-opened` per activity is `emails-opened-grouped-by-journey-activity`
BY_ACTIVITY = "-grouped-by-journey-activity"
# Pinpoint's per-campaign and per-campaign-run names (a campaign's run is one of its activities)
BY_CAMPAIGN = "-grouped-by-campaign"
BY_CAMPAIGN_ACTIVITY = "-grouped-by-campaign-activity"
BY_COUNTRY = "-grouped-by-country"  # Pinpoint's, for transactional SMS
# KPIs whose rows are grouped by their nature, not by a suffix of the name
OWN_GROUPS = {"txn-sms-error-distribution": "ErrorCode"}
NULLABLE_GROUPS = ("Country", "ErrorCode")  # rows whose group column is empty still count (as ZZ, UNKNOWN)
UNKNOWN_COUNTRY = "ZZ"  # ISO 3166-1's code for an unknown region (and phonenumbers' own)
# Pinpoint's SMS price metrics: Twilio answers a send with `price: null` (a message is rated later) and its status
# callbacks carry no price, so the Twilio channel has no price to record; reading it would mean fetching every
# message again after it was rated.
NO_PRICES = {"txn-sms-average-price-grouped-by-country", "txn-sms-total-price-grouped-by-country"}


@dataclass(frozen=True)
class Row:
    grouped_by: tuple[tuple[str, str], ...]  # (key, value) pairs; () for a single-value KPI
    values: tuple[tuple[str, float], ...]  # (friendly name, value)


@dataclass(frozen=True)
class KpiQuery:
    kpi: Kpi
    group: str | None  # None, "Date", "JourneyActivityId", "CampaignId", "CampaignActivityId", "Country", "ErrorCode"


# Which scopes each operation answers: GetApplicationDateRangeKpi ("application"), GetJourneyDateRangeKpi
# ("journey") and GetCampaignDateRangeKpi ("campaign": a campaign is a broadcast journey, so its metrics are
# the campaign metrics over that journey's messages).
CONTEXTS = {"application": ("journeys", "transactional"), "journey": ("journeys", "journey"),
            "campaign": ("journeys",)}
OPERATIONS = {"application": "GetApplicationDateRangeKpi", "journey": "GetJourneyDateRangeKpi",
              "campaign": "GetCampaignDateRangeKpi"}
_ASK = {"journey": "GetJourneyDateRangeKpi", "transactional": "GetApplicationDateRangeKpi"}
# The contexts that answer the campaign groupings: per campaign across the application, per run also of one
CAMPAIGN_GROUPS = {"CampaignId": ("application",), "CampaignActivityId": ("application", "campaign")}


def resolve(name: str, context: str) -> KpiQuery:
    """The KPI a name asks for in `context` (a key of CONTEXTS); InvalidInput naming KpiName for a name this
    cannot answer there."""
    if name in NO_PRICES:
        raise InvalidInput(f"KpiName: {name!r}: Tidings records no SMS prices (Twilio answers a send before the "
                           "message is rated and its status callbacks carry no price; docs/pinpoint.md, KPIs)",
                           field="KpiName")
    base, group = name, None
    if name.endswith(BY_COUNTRY):
        base, group = name.removesuffix(BY_COUNTRY), "Country"
    elif name.endswith(BY_DATE):
        base, group = name.removesuffix(BY_DATE), "Date"
    elif name.endswith(BY_ACTIVITY):
        base, group = "journey-" + name.removesuffix(BY_ACTIVITY), "JourneyActivityId"
    elif name.endswith(BY_CAMPAIGN_ACTIVITY):
        base, group = name.removesuffix(BY_CAMPAIGN_ACTIVITY), "CampaignActivityId"
    elif name.endswith(BY_CAMPAIGN):
        base, group = name.removesuffix(BY_CAMPAIGN), "CampaignId"
    kpi = KPIS.get(base)
    if kpi is None or (group == "JourneyActivityId" and kpi.scope != "journey") or (
            group in CAMPAIGN_GROUPS and kpi.scope != "journeys") or (
            group == "Country" and (kpi.scope, kpi.channels) != ("transactional", SMS)) or (
            base in OWN_GROUPS and group is not None):
        raise InvalidInput(f"KpiName: {name!r} is not a metric Tidings computes (see docs/pinpoint.md, KPIs, "
                           f"for the supported names)", field="KpiName")
    if kpi.scope not in CONTEXTS[context]:
        raise InvalidInput(f"KpiName: {OPERATIONS[context]} does not answer {name!r}; ask {_ASK[kpi.scope]}",
                           field="KpiName")
    if group in CAMPAIGN_GROUPS and context not in CAMPAIGN_GROUPS[group]:
        raise InvalidInput(f"KpiName: {OPERATIONS[context]} does not answer {name!r}; ask "
                           f"{' or '.join(OPERATIONS[c] for c in CAMPAIGN_GROUPS[group])}", field="KpiName")
    return KpiQuery(kpi, OWN_GROUPS.get(base, group))


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1000, tz=UTC).date().isoformat()


def _group_columns(group: str | None, context: str) -> list:
    """The columns a KPI's rows are grouped by (none for a single-value KPI)."""
    attrs = events.c.attributes
    if group is None:
        return []
    if group == "Date":
        return [events.c.ts // DAY_MS]
    if group == "JourneyActivityId":
        return [attrs["step_id"].as_string()]
    if group == "CampaignId":
        return [attrs["journey_id"].as_string()]
    if group == "Country":  # the endpoint's country when it has one, else its address (read in _grouped_by)
        return [endpoints.c.location["country"].as_string(), endpoints.c.address]
    if group == "ErrorCode":
        return [attrs["error_code"].as_string()]
    version = attrs["journey_version"].as_integer()
    return [attrs["journey_id"].as_string(), version] if context == "application" else [version]


def _grouped_by(group: str | None, values: tuple, journey_id: str | None) -> tuple[tuple[str, str], ...]:
    """A row's GroupedBys from its group columns' values."""
    if group is None:
        return ()
    if group == "Date":
        return ((group, _day(int(values[0]) * DAY_MS)),)
    if group == "Country":
        return ((group, country_of(*values)),)
    if group == "ErrorCode":
        return ((group, str(values[0]) if values[0] not in (None, "") else "UNKNOWN"),)
    if group == "CampaignActivityId":
        campaign, version = values if len(values) == 2 else (journey_id, values[0])
        return ((group, activity_id(str(campaign), int(version))),) + (
            (("CampaignId", str(campaign)),) if len(values) == 2 else ())
    return ((group, str(values[0])),)


def country_of(location_country: str | None, address: str | None) -> str:
    """An SMS recipient's country: the endpoint's Location.Country, else its phone number's (E.164), else ZZ."""
    if location_country and location_country.strip():
        return location_country.strip().upper()
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(address or "", None))
    except phonenumbers.NumberParseException:
        region = None
    return region or UNKNOWN_COUNTRY


def compute(db: Engine, workspace: WorkspaceRef, name: str, *, since_ms: int, until_ms: int,
            journey_id: str | None = None, context: str | None = None,
            campaign_ids: Collection[str] = ()) -> list[Row]:
    """The rows of KPI `name` over the message events with since_ms <= ts < until_ms: of one journey when
    journey_id is given (the caller has checked that the journey exists), else of the whole workspace.
    `context` (CONTEXTS) defaults to "journey" with a journey id, else "application"; a campaign's KPIs are
    compute(..., journey_id=<the campaign's journey>, context="campaign"). An application KPI grouped by
    campaign (or campaign activity) has rows for `campaign_ids` only: the journeys that are campaigns."""
    context = context or ("journey" if journey_id is not None else "application")
    query = resolve(name, context)
    kpi = query.kpi
    attrs = events.c.attributes
    types = ("failed",) if query.group == "ErrorCode" else TYPES  # the errors: the other events have no code
    where = [events.c.workspace_id == workspace.id, events.c.name.in_(names_of(types, kpi.channels)),
             events.c.ts >= since_ms, events.c.ts < until_ms]
    if kpi.scope == "transactional":
        where.append(attrs["transactional"].as_boolean().is_(True))
    elif journey_id is not None:
        where.append(attrs["journey_id"].as_string() == journey_id)
    elif query.group in CAMPAIGN_GROUPS:  # the campaigns' messages, not the other journeys'
        where.append(attrs["journey_id"].as_string().in_(list(campaign_ids)))
    else:  # every journey's messages (transactional ones belong to none)
        where.append(attrs["journey_id"].as_string().is_not(None))
    grouping = [column.label(f"grp{i}") for i, column in enumerate(_group_columns(query.group, context))]
    # One GROUP BY in the database: the events never cross into Python (half the time of counting the rows
    # here, measured at 107,000 events; reading each row's JSON attributes is most of what is left:
    # tests/benchmarks/README.md, "Pinpoint KPIs")
    q = (select(events.c.name, func.count().label("n"),
                func.count(distinct(attrs["message_id"].as_string())).label("m"),
                func.count(distinct(func.coalesce(attrs["endpoint_id"].as_string(),
                                                  cast(events.c.user_pk, String)))).label("e"), *grouping)
         .where(*where).group_by(events.c.name, *[literal_column(f"grp{i}") for i in range(len(grouping))]))
    if query.group == "Country":
        q = q.select_from(events.outerjoin(endpoints, endpoints.c.id == events.c.endpoint_pk))
    tallies: dict[tuple[tuple[str, str], ...], Tally] = defaultdict(Tally)
    with reading(db) as conn:
        for event_name, n, m, e, *grp in conn.execute(q):
            parsed = parse_name(event_name)
            if parsed is None or (None in grp and query.group not in NULLABLE_GROUPS):
                continue  # a journey's message event outside any step (or version)
            tallies[_grouped_by(query.group, tuple(grp), journey_id)].add(parsed[0], parsed[1], n, m, e)
    out = []
    for key in sorted(tallies):
        value = kpi.value(tallies[key])
        if value is None:
            continue
        out.append(Row(grouped_by=key, values=((kpi.key, float(value)),)))
    return out
