"""The compiled journey: a graph of nodes with ids and edges, run by one Temporal interpreter workflow.

Everything is a frozen msgspec Struct so the IR round-trips through JSON and msgpack (Temporal
payloads). Unions are tagged by a `kind` field, e.g. {"kind": "send", ...}. Durations are
whole seconds; JsonLogic rules are kept as plain JSON values.

Event names are resolved once, by the compiler: every `event` (entry, exit, wait_for, goal) carries `names`, the
stored event names it matches (`unsubscribed` -> itself and `_email.unsubscribe`, `_sms.unsubscribe`...,
tidings.engine.messaging.ledger.journey_event_names), and every `message_event` type carries the names of its
message events. IR stored before `names` existed decodes with `names == []`; the runtime then resolves
the name with the same function.

Every edge names a key of `JourneyIR.nodes`. The reserved id `end` is an ExitNode the compiler
adds when a step ends the journey implicitly (`next: end`, or falling off the last step), so the
interpreter never special-cases "no next".
"""
from __future__ import annotations

from typing import Any, Literal, NamedTuple, Union

import msgspec

END = "end"

# ---- entry ---------------------------------------------------------------------------------


class EventEntry(msgspec.Struct, frozen=True, kw_only=True, tag="event", tag_field="kind"):
    """Customers enter when `event` arrives and `filter` (JsonLogic over {"event", "customer"}) holds."""

    event: str
    filter: Any = None
    names: list[str] = msgspec.field(default_factory=list)  # stored event names `event` matches


class SegmentEntry(msgspec.Struct, frozen=True, kw_only=True, tag="segment", tag_field="kind"):
    """Customers enter when they join `segment`."""

    segment: str


class BroadcastEntry(msgspec.Struct, frozen=True, kw_only=True, tag="broadcast", tag_field="kind"):
    """Everyone in `segment` enters: now (no schedule), once `at`, on `cron`, or `every_seconds`."""

    segment: str
    at: str | None = None  # ISO 8601 with offset, as written
    at_epoch: int | None = None  # the same instant in Unix seconds
    cron: str | None = None
    every_seconds: int | None = None
    # `refresh`: every_seconds, and also at activation: the members now, then whoever is new (the entry limit
    # keeps out who already entered) at each refresh. Pinpoint's RefreshFrequency
    refresh: bool = False
    # `on_join`: also each customer who joins the segment after activation, when they join (its `_segment.enter`
    # event, queued like a segment_entry journey's); the entry limit keeps out who already entered.
    # Pinpoint's RefreshOnSegmentUpdate
    on_join: bool = False
    timezone: str = "UTC"  # "customer" = each customer's own zone; else an IANA zone


Entry = Union[EventEntry, SegmentEntry, BroadcastEntry]

# ---- settings ------------------------------------------------------------------------------


class QuietHours(msgspec.Struct, frozen=True, kw_only=True):
    start: str  # "HH:MM" in the customer's zone
    end: str
    action: Literal["hold", "skip"] = "hold"


class OpenRange(msgspec.Struct, frozen=True, kw_only=True):
    start: str  # "HH:MM", local
    end: str  # "HH:MM" after start, or "24:00"


class ClosedDays(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    start: str  # local wall date-time "YYYY-MM-DDTHH:MM"
    end: str  # after start


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class SendingHours(msgspec.Struct, frozen=True, kw_only=True):
    """When each channel may send (Pinpoint's SendingSchedule: OpenHours, ClosedDays). A channel with `open`
    hours sends only within them (a weekday it does not list is closed); nothing is sent in its `closed`
    ranges. A send due outside waits for the next open minute, like quiet hours with `action: hold`."""

    timezone: str = "customer"  # "customer" = each customer's own zone; else an IANA zone
    open: dict[str, dict[str, list[OpenRange]]] = msgspec.field(default_factory=dict)  # channel -> weekday -> ranges
    closed: dict[str, list[ClosedDays]] = msgspec.field(default_factory=dict)  # channel -> ranges


class FrequencyCap(msgspec.Struct, frozen=True, kw_only=True):
    messages: int
    per_seconds: int


class EntryLimits(msgspec.Struct, frozen=True, kw_only=True):
    max_entries: int | None = 1  # None = unlimited re-entry
    min_interval_seconds: int | None = None


class EventExit(msgspec.Struct, frozen=True, kw_only=True, tag="event", tag_field="kind"):
    event: str
    filter: Any = None  # JsonLogic over {"event"}
    names: list[str] = msgspec.field(default_factory=list)


class SegmentExit(msgspec.Struct, frozen=True, kw_only=True, tag="left_segment", tag_field="kind"):
    segment: str


ExitCriterion = Union[EventExit, SegmentExit]


class Goal(msgspec.Struct, frozen=True, kw_only=True):
    event: str
    within_seconds: int | None = None
    filter: Any = None  # JsonLogic over {"event"}: only goal events it holds for convert
    names: list[str] = msgspec.field(default_factory=list)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    quiet_hours: QuietHours | None = None
    sending_hours: SendingHours | None = None
    frequency_cap: FrequencyCap | None = None
    entry: EntryLimits = msgspec.field(default_factory=EntryLimits)
    exit: list[ExitCriterion] = msgspec.field(default_factory=list)
    goal: Goal | None = None
    default_timezone: str = "UTC"  # for customers whose time zone is unknown
    # Nobody enters at or after this instant (ISO 8601 with offset, as written; and in Unix seconds); customers
    # already in the journey finish it. Judged by workflow time, so replays and the time-skipping server agree.
    ends_at: str | None = None
    ends_at_epoch: int | None = None

    def ended(self, now_ms: int) -> bool:
        """Whether the journey admits no one at `now_ms` (epoch milliseconds, workflow time)."""
        return self.ends_at_epoch is not None and now_ms >= self.ends_at_epoch * 1000


# ---- nodes ---------------------------------------------------------------------------------


class Edge(NamedTuple):
    source: str
    target: str
    label: str


class _Node(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    id: str
    line: int  # 1-based line of the step in its YAML file (0 for the implicit `end`)

    def labelled_edges(self) -> list[tuple[str, str]]:
        """(target, label) for each outgoing edge, in the order the interpreter considers them."""
        return []

    def successors(self) -> list[str]:
        return list(dict.fromkeys(t for t, _ in self.labelled_edges()))


class CustomDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """A send to a custom-channel receiver (Pinpoint's CUSTOM activity and campaign custom channel): the
    customer's endpoints of `endpoint_types` go to `url` in Pinpoint's custom-channel payload, batched, through
    the webhook channel (plugins/webhook.py). `data` is the payload's Data (a template's body replaces it);
    `campaign_treatment` set: the payload names CampaignId and that TreatmentId instead of JourneyId."""

    url: str
    endpoint_types: list[str] = msgspec.field(default_factory=list)  # [] = every endpoint of the customer
    data: str = ""
    campaign_treatment: str | None = None


class SendNode(_Node, frozen=True, kw_only=True, tag="send"):
    channel: str
    template: str  # "" for a custom delivery without a template
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    custom: CustomDelivery | None = None
    next: str

    def labelled_edges(self):
        return [(self.next, "next")]


class WaitNode(_Node, frozen=True, kw_only=True, tag="wait"):
    """Exactly one of `seconds`, `until` (+ `until_epoch`) and `until_time` is set."""

    seconds: int | None = None
    until: str | None = None
    until_epoch: int | None = None
    until_time: str | None = None  # "HH:MM", the next such time in the customer's zone
    next: str

    def labelled_edges(self):
        return [(self.next, "next")]


class MessageEventRef(msgspec.Struct, frozen=True, kw_only=True):
    step: str  # id of a SendNode before this node
    type: str  # delivered, opened, clicked, ...
    names: list[str] = msgspec.field(default_factory=list)  # `_email.open`, ...


class WaitForNode(_Node, frozen=True, kw_only=True, tag="wait_for"):
    """Waits for `event` (optionally matching `filter`/`correlate`) or `message_event`, up to `timeout_seconds`."""

    event: str | None = None
    filter: Any = None
    message_event: MessageEventRef | None = None
    correlate: str | None = None  # property that must equal the entry event's
    timeout_seconds: int
    on_event: str
    on_timeout: str
    names: list[str] = msgspec.field(default_factory=list)  # stored event names `event` matches

    def labelled_edges(self):
        return [(self.on_event, "event"), (self.on_timeout, "timeout")]


class RuleBranch(msgspec.Struct, frozen=True, kw_only=True, tag="rule", tag_field="kind"):
    rule: Any  # JsonLogic over {"customer", "event"}
    next: str


class SegmentBranch(msgspec.Struct, frozen=True, kw_only=True, tag="segment", tag_field="kind"):
    segment: str
    next: str


class MessageEventBranch(msgspec.Struct, frozen=True, kw_only=True, tag="message_event", tag_field="kind"):
    step: str
    type: str
    next: str
    names: list[str] = msgspec.field(default_factory=list)


Branch = Union[RuleBranch, SegmentBranch, MessageEventBranch]


def branch_label(branch: Branch) -> str:
    if isinstance(branch, SegmentBranch):
        return f"in {branch.segment}"
    if isinstance(branch, MessageEventBranch):
        return f"{branch.type} {branch.step}"
    return "when"


class SplitNode(_Node, frozen=True, kw_only=True, tag="split"):
    """The first branch whose condition holds wins; nobody matching goes to `else_next`."""

    branches: list[Branch]
    else_next: str

    def labelled_edges(self):
        return [(b.next, branch_label(b)) for b in self.branches] + [(self.else_next, "else")]


class RandomBranch(msgspec.Struct, frozen=True, kw_only=True):
    weight: int | float  # percent; the branches of a node sum to 100
    variant: str
    next: str


class RandomSplitNode(_Node, frozen=True, kw_only=True, tag="random_split"):
    branches: list[RandomBranch]

    def labelled_edges(self):
        return [(b.next, f"{b.variant} {b.weight:g}%") for b in self.branches]


class HoldoutNode(_Node, frozen=True, kw_only=True, tag="holdout"):
    """`percent` of customers leave here as the control group; the rest continue to `next`."""

    percent: int | float
    next: str

    def labelled_edges(self):
        return [(self.next, f"{100 - self.percent:g}%")]


class ExitNode(_Node, frozen=True, kw_only=True, tag="exit"):
    reason: str | None = None


Node = Union[SendNode, WaitNode, WaitForNode, SplitNode, RandomSplitNode, HoldoutNode, ExitNode]


def successors(node: Node) -> list[str]:
    """Ids of the nodes `node` can lead to, without duplicates, in edge order."""
    return node.successors()


# ---- the journey ---------------------------------------------------------------------------


class JourneyIR(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    description: str = ""
    version: int = 1
    source_hash: str  # sha256 hex of the YAML source
    entry: Entry
    settings: Settings = msgspec.field(default_factory=Settings)
    start: str
    nodes: dict[str, Node]

    def edges(self) -> list[Edge]:
        """Every (source, target, label), nodes in source order, for drawing the graph."""
        return [Edge(n.id, target, label) for n in self.nodes.values() for target, label in n.labelled_edges()]

    def successors(self, node_id: str) -> list[str]:
        return self.nodes[node_id].successors()

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> JourneyIR:
        return msgspec.json.decode(data, type=cls)
