"""Parsing of `steps:`: one small parser per action, looked up in STEP_PARSERS."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from tidings.engine.journeys import ir
from tidings.engine.journeys.language.formats import check_clock, parse_instant
from tidings.engine.journeys.language.issues import Pos
from tidings.engine.journeys.language.yaml_view import ID_RE, Ctx, MessageRef, StepRef, View, check_duration, typename
from tidings.engine.journeys.language.yaml_loader import LList, LMap, plain
from tidings.engine.messaging.custom_channel import ENDPOINT_TYPES as CUSTOM_ENDPOINT_TYPES
from tidings.engine.messaging.ledger import JOURNEY_MESSAGE_EVENT_TYPES

STEP_KEYS = ("id", "next", "name", "description")
MESSAGE_EVENT_TYPES = tuple(JOURNEY_MESSAGE_EVENT_TYPES)  # sent, delivered, opened, clicked, bounced, ...
CHANNEL_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
PROPERTY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# Why `next` makes no sense on these actions, told to the user who writes it anyway.
NO_NEXT = {
    "split": "a split routes with `branches[].next` and `else`",
    "random_split": "a random split routes with `branches[].next`",
    "exit": "an exit step ends the journey",
}


@dataclass
class Step:
    """What every action parser needs to know about the step it parses."""

    ctx: Ctx
    id: str
    pos: Pos
    next: str  # explicit `next`, else the following step, else `end`
    action: str = ""

    def ref(self, target: Any, pos: Pos, key: str) -> str:
        """Record an edge to `target` (checked once all ids are known) and return it."""
        if not isinstance(target, str) or not (target == ir.END or ID_RE.match(target)):
            self.ctx.error(pos, f"`{key}` must name a step id or `end`, got {typename(target) if not isinstance(target, str) else f'`{target}`'}")
            return ir.END
        self.ctx.step_refs.append(StepRef(target, pos, self.id, key))
        return target

    def view(self, value: Any, pos: Pos, what: str | None = None) -> View | None:
        return View.of(self.ctx, value, pos, what or f"`{self.action}` of step `{self.id}`")

    def edge_from(self, view: View, key: str) -> str:
        """The step named by `key` in `view`, defaulting to this step's `next`."""
        if not view.has(key):
            return self.next
        return self.ref(view.raw(key), view.pos(key), key)


def _send(step: Step, value: Any, pos: Pos) -> ir.Node | None:
    view = step.view(value, pos)
    if view is None:
        return None
    view.keys(required=("channel", "template"), optional=("data",))
    channel = view.str("channel", pattern=CHANNEL_RE, hint="channels are upper case, like EMAIL, SMS or PUSH")
    step.ctx.check_ref("channel", channel, view.pos("channel"))
    data = view.map("data", f"`data` of step `{step.id}`")
    return ir.SendNode(id=step.id, line=step.pos.line, channel=channel or "", template=view.catalog("template", "template") or "",
                       data=plain(data.data) if data else {}, next=step.next)




def _custom_channel(step: Step, value: Any, pos: Pos) -> ir.Node | None:
    """A batch of the customer's endpoints to a custom-channel receiver, in Pinpoint's payload (ir.CustomDelivery)."""
    view = step.view(value, pos)
    if view is None:
        return None
    view.keys(required=("url",), optional=("endpoint_types", "data", "template", "campaign_treatment"))
    url = view.str("url")
    if url is not None and not url.startswith(("https://", "http://")):
        step.ctx.error(view.pos("url"), f"`url` of step `{step.id}` is the receiver's https URL, got `{url}`"
                       + (" (Tidings cannot invoke a Lambda function: put the function behind an https URL)"
                          if url.startswith("arn:") else ""))
    types: list[str] = []
    raw = view.raw("endpoint_types") if view.has("endpoint_types") else []
    if not isinstance(raw, LList) and raw != []:
        step.ctx.error(view.pos("endpoint_types"), f"`endpoint_types` of step `{step.id}` is a list like [EMAIL, SMS]")
    else:
        for item in raw:
            if item not in CUSTOM_ENDPOINT_TYPES:
                step.ctx.error(view.pos("endpoint_types"), f"`endpoint_types` of step `{step.id}`: unknown type "
                               f"`{item}` (one of {', '.join(CUSTOM_ENDPOINT_TYPES)})")
            else:
                types.append(item)
    data = view.str("data") if view.has("data") else ""
    template = view.catalog("template", "template") if view.has("template") else ""
    treatment = view.str("campaign_treatment") if view.has("campaign_treatment") else None
    return ir.SendNode(id=step.id, line=step.pos.line, channel="WEBHOOK", template=template or "",
                       custom=ir.CustomDelivery(url=url or "", endpoint_types=types, data=data or "",
                                                campaign_treatment=treatment), next=step.next)


def _wait(step: Step, value: Any, pos: Pos) -> ir.Node | None:
    base: dict[str, Any] = dict(id=step.id, line=step.pos.line, next=step.next)
    if not isinstance(value, LMap):  # `wait: 1d`
        return ir.WaitNode(seconds=check_duration(step.ctx, value, pos, f"`wait` of step `{step.id}`"), **base)
    view = View(step.ctx, value, f"`wait` of step `{step.id}`")
    view.keys(optional=("until", "until_time"))
    if view.has("until") == view.has("until_time"):
        step.ctx.error(view.data.pos, f"`wait` of step `{step.id}` needs a duration, or exactly one of `until` or `until_time`")
        return None
    if view.has("until"):
        text = view.str("until")
        try:
            epoch = int(parse_instant(text).timestamp()) if text else None
        except ValueError as exc:
            step.ctx.error(view.pos("until"), f"`until` of step `{step.id}`: {exc}")
            text = epoch = None
        return ir.WaitNode(until=text, until_epoch=epoch, **base)
    text = view.str("until_time")
    if text and (problem := check_clock(text)):
        step.ctx.error(view.pos("until_time"), f"`until_time` of step `{step.id}`: {problem}")
    return ir.WaitNode(until_time=text, **base)


def _message_event(step: Step, value: Any, pos: Pos) -> ir.MessageEventRef | None:
    view = step.view(value, pos, f"`message_event` in step `{step.id}`")
    if view is None:
        return None
    view.keys(required=("step", "type"))
    ref, kind = view.id("step"), view.str("type", choices=MESSAGE_EVENT_TYPES)
    if ref is None or kind is None:
        return None
    step.ctx.message_refs.append(MessageRef(ref, view.pos("step"), step.id))
    return ir.MessageEventRef(step=ref, type=kind)


def _wait_for(step: Step, value: Any, pos: Pos) -> ir.Node | None:
    view = step.view(value, pos)
    if view is None:
        return None
    view.keys(required=("timeout",), optional=("event", "message_event", "filter", "correlate", "on_event", "on_timeout"))
    if view.has("event") == view.has("message_event"):
        step.ctx.error(view.data.pos, f"`wait_for` of step `{step.id}` needs exactly one of `event` or `message_event`")
    for key in ("filter", "correlate"):
        if view.has(key) and not view.has("event"):
            step.ctx.error(view.key_pos(key), f"`{key}` only applies when waiting for an `event`")
    correlate = view.str("correlate", pattern=PROPERTY_RE, hint="name a property of the event, like cart_id")
    if correlate and step.ctx.entry_kind != "event":
        step.ctx.error(view.pos("correlate"), "`correlate` matches a property of the entry event, "
                       "so it needs an `event` entry")
    message = _message_event(step, view.raw("message_event"), view.pos("message_event")) if view.has("message_event") else None
    return ir.WaitForNode(id=step.id, line=step.pos.line, event=view.str("event"), filter=view.rule("filter"),
                          message_event=message, correlate=correlate, timeout_seconds=view.duration("timeout") or 0,
                          on_event=step.edge_from(view, "on_event"), on_timeout=step.edge_from(view, "on_timeout"))


def _branch(step: Step, value: Any, pos: Pos, index: int) -> ir.Branch | None:
    view = step.view(value, pos, f"branch {index + 1} of step `{step.id}`")
    if view is None:
        return None
    view.keys(required=("next",), optional=("when", "segment", "message_event"))
    conditions = [k for k in ("when", "segment", "message_event") if view.has(k)]
    if len(conditions) != 1:
        step.ctx.error(view.data.pos, f"branch {index + 1} of step `{step.id}` needs exactly one of `when`, `segment` "
                       f"or `message_event`; got {', '.join(conditions) or 'none'}")
    target = step.ref(view.raw("next"), view.pos("next"), "next") if view.has("next") else ir.END
    if "when" in conditions:
        return ir.RuleBranch(rule=view.rule("when"), next=target)
    if "segment" in conditions:
        return ir.SegmentBranch(segment=view.catalog("segment", "segment") or "", next=target)
    if "message_event" in conditions:
        ref = _message_event(step, view.raw("message_event"), view.pos("message_event"))
        return ir.MessageEventBranch(step=ref.step, type=ref.type, next=target) if ref else None
    return None


def _branches(step: Step, view: View) -> list[tuple[Any, Pos]]:
    """The `branches` list as (item, position) pairs; reports when it is missing, not a list or empty."""
    value = view.raw("branches")
    if not view.has("branches"):
        return []
    if not isinstance(value, LList) or not value:
        step.ctx.error(view.pos("branches"), f"`branches` of step `{step.id}` must be a non-empty list, got {typename(value)}")
        return []
    return list(zip(value, value.item_pos))


def _split(step: Step, value: Any, pos: Pos) -> ir.Node | None:
    view = step.view(value, pos)
    if view is None:
        return None
    view.keys(required=("branches",), optional=("else",))
    branches = [_branch(step, item, p, i) for i, (item, p) in enumerate(_branches(step, view))]
    return ir.SplitNode(id=step.id, line=step.pos.line, branches=[b for b in branches if b is not None],
                        else_next=step.edge_from(view, "else"))


def _random_branch(step: Step, value: Any, pos: Pos, index: int) -> ir.RandomBranch | None:
    view = step.view(value, pos, f"branch {index + 1} of step `{step.id}`")
    if view is None:
        return None
    view.keys(required=("weight", "next"), optional=("variant",))
    weight = view.number("weight", low=0, low_open=True, high=100)
    target = step.ref(view.raw("next"), view.pos("next"), "next") if view.has("next") else ir.END
    variant = view.str("variant", chr(ord("A") + index) if index < 26 else f"V{index + 1}")
    return ir.RandomBranch(weight=weight, variant=variant, next=target) if weight is not None else None


def _random_split(step: Step, value: Any, pos: Pos) -> ir.Node | None:
    view = step.view(value, pos)
    if view is None:
        return None
    view.keys(required=("branches",))
    items = _branches(step, view)
    branches = [_random_branch(step, item, p, i) for i, (item, p) in enumerate(items)]
    if items and len(items) < 2:
        step.ctx.error(view.pos("branches"), f"a random split needs at least 2 branches (step `{step.id}` has 1)")
    if items and all(branches):
        total = sum(b.weight for b in branches)
        if abs(total - 100) > 1e-9:
            step.ctx.error(view.pos("branches"), f"random split weights of step `{step.id}` must add up to 100, got {total:g}")
    seen: set[str] = set()
    for b, (_, p) in zip(branches, items):
        if b is not None and b.variant in seen:
            step.ctx.error(p, f"variant `{b.variant}` appears twice in step `{step.id}`; variants name the branches in reports")
        seen.add(b.variant if b else "")
    return ir.RandomSplitNode(id=step.id, line=step.pos.line, branches=[b for b in branches if b is not None])


def _holdout(step: Step, value: Any, pos: Pos) -> ir.Node | None:
    view = step.view(value, pos)
    if view is None:
        return None
    view.keys(required=("percent",))
    percent = view.number("percent", low=0, high=100, low_open=True, high_open=True)
    return ir.HoldoutNode(id=step.id, line=step.pos.line, percent=percent or 0, next=step.next)


def _exit(step: Step, value: Any, pos: Pos) -> ir.Node | None:
    if value is None:  # a bare `exit:`
        value = LMap(pos)
    view = step.view(value, pos)
    if view is None:
        return None
    view.keys(optional=("reason",))
    return ir.ExitNode(id=step.id, line=step.pos.line, reason=view.str("reason"))


STEP_PARSERS: dict[str, Callable[[Step, Any, Pos], ir.Node | None]] = {
    "send": _send,
    "wait": _wait,
    "wait_for": _wait_for,
    "split": _split,
    "random_split": _random_split,
    "holdout": _holdout,
    "exit": _exit,
    "custom_channel": _custom_channel,
}


@dataclass
class ParsedSteps:
    """Steps in source order. `edges` covers broken steps too, so graph checks still run."""

    order: list[str] = field(default_factory=list)
    pos: dict[str, Pos] = field(default_factory=dict)
    nodes: dict[str, ir.Node] = field(default_factory=dict)
    actions: dict[str, str] = field(default_factory=dict)
    edges: dict[str, list[str]] = field(default_factory=dict)


def _step_ids(ctx: Ctx, items: list[tuple[Any, Pos]]) -> list[str]:
    """First pass: each step's id (a placeholder for a bad one), so fall-through edges can be known."""
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for index, (item, pos) in enumerate(items):
        placeholder = f"<step {index + 1}>"
        view = View(ctx, item, f"step {index + 1}") if isinstance(item, LMap) else None
        step_id = view.id("id") if view else None
        if step_id == ir.END:
            ctx.error(view.pos("id"), "`end` is reserved: `next: end` leaves the journey; name this step differently")
            step_id = None
        elif step_id in first_line:
            ctx.error(view.pos("id"), f"duplicate step id `{step_id}` (first used on line {first_line[step_id]})")
            step_id = None
        if step_id:
            first_line[step_id] = pos.line
        ids.append(step_id or placeholder)
    return ids


def parse_steps(ctx: Ctx, value: Any, pos: Pos) -> ParsedSteps:
    out = ParsedSteps()
    if not isinstance(value, LList) or not value:
        ctx.error(pos, f"`steps` must be a non-empty list of steps, got {typename(value)}")
        return out
    items = list(zip(value, value.item_pos))
    ids = _step_ids(ctx, items)
    for index, ((item, item_pos), step_id) in enumerate(zip(items, ids)):
        out.order.append(step_id)
        out.pos[step_id] = item_pos
        fallthrough = ids[index + 1] if index + 1 < len(ids) else ir.END
        _parse_step(ctx, item, item_pos, step_id, fallthrough, out)
    return out


def _parse_step(ctx: Ctx, item: Any, pos: Pos, step_id: str, fallthrough: str, out: ParsedSteps) -> None:
    label = step_id.strip("<>") if step_id.startswith("<") else f"step `{step_id}`"
    view = View.of(ctx, item, pos, label)
    out.edges[step_id] = [fallthrough]
    if view is None:
        return
    view.keys(required=("id",), optional=(*STEP_KEYS[1:], *STEP_PARSERS))
    step = Step(ctx, step_id, pos, fallthrough)
    if view.has("next"):
        step.next = step.ref(view.raw("next"), view.pos("next"), "next")
        out.edges[step_id] = [step.next]
    actions = [k for k in view.data if k in STEP_PARSERS]
    if len(actions) != 1:
        what = f"has {len(actions)} actions ({', '.join(actions)}); a step does exactly one thing, split it into " \
               "several steps" if actions else f"has no action; give it one of: {', '.join(STEP_PARSERS)}"
        ctx.error(view.data.pos, f"step `{step_id}` {what}")
        return
    step.action = out.actions[step_id] = actions[0]
    if step.action in NO_NEXT and view.has("next"):
        ctx.error(view.key_pos("next"), f"step `{step_id}` cannot have `next`: {NO_NEXT[step.action]}")
    node = STEP_PARSERS[step.action](step, view.raw(step.action), view.pos(step.action))
    if node is not None:
        out.nodes[step_id] = node
        out.edges[step_id] = node.successors()
