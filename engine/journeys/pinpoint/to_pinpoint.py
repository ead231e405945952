"""A stored journey (its compiled IR) -> the members of Pinpoint's JourneyResponse: StartCondition, Schedule,
LocalTime, QuietTime, WaitForQuietTime, Limits, Activities and StartActivity. The inverse of to_yaml.py for
what it writes; a native journey with a part Pinpoint has no form for (a JsonLogic split, `until_time`, a
cron broadcast, ...) is answered without that part (no Activities, or no StartCondition) rather than with a
made-up one, as segments are answered without Dimensions."""
from __future__ import annotations

from typing import Any

from tidings.engine.journeys import ir
from tidings.engine.journeys.pinpoint.to_yaml import COMPARISONS, MESSAGE_EVENTS, SEND_KINDS

_OPS = {v: k for k, v in COMPARISONS.items()}


class Unmapped(Exception):
    """A part of the journey that has no Pinpoint form."""


def iso_duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    time = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    return "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")


def event_dimensions(name: str, rule: Any) -> dict[str, Any]:
    """EventDimensions of an event name and a filter in the shape to_yaml.event_rule writes; Unmapped else."""
    dims: dict[str, Any] = {"EventType": {"DimensionType": "INCLUSIVE", "Values": [name]}}
    rules = [] if rule is None else rule["and"] if isinstance(rule, dict) and list(rule) == ["and"] else [rule]
    for r in rules:
        if not isinstance(r, dict) or len(r) != 1:
            raise Unmapped
        (op, args), = r.items()
        if op == "in" and _var(args[0], "event.attributes.") and isinstance(args[1], list):
            dims.setdefault("Attributes", {})[_var(args[0], "event.attributes.")] = {
                "AttributeType": "INCLUSIVE", "Values": args[1]}
        elif op == "!" and isinstance(args, dict) and list(args) == ["in"] and _var(args["in"][0], "event.attributes."):
            dims.setdefault("Attributes", {})[_var(args["in"][0], "event.attributes.")] = {
                "AttributeType": "EXCLUSIVE", "Values": args["in"][1]}
        elif op == "or" and args and all(isinstance(a, dict) and list(a) == ["in"] for a in args):
            names = {_var(a["in"][1], "event.attributes.") for a in args}
            if len(names) != 1 or None in names:
                raise Unmapped
            dims.setdefault("Attributes", {})[names.pop()] = {"AttributeType": "CONTAINS",
                                                               "Values": [a["in"][0] for a in args]}
        elif op in _OPS and _var(args[0], "event.metrics."):
            dims.setdefault("Metrics", {})[_var(args[0], "event.metrics.")] = {
                "ComparisonOperator": _OPS[op], "Value": float(args[1])}
        else:
            raise Unmapped
    return dims


def _var(value: Any, prefix: str) -> str | None:
    if isinstance(value, dict) and list(value) == ["var"] and isinstance(value["var"], str) \
            and value["var"].startswith(prefix):
        return value["var"][len(prefix):]
    return None


def _segment_of(rule: Any) -> tuple[str | None, Any]:
    """The EventStartCondition.SegmentId to_yaml folds into the entry filter, and the rest of the filter."""
    def member(r: Any) -> str | None:
        if isinstance(r, dict) and list(r) == ["or"] and len(r["or"]) == 2:
            a, b = r["or"]
            if a == {"in": [a.get("in", [None])[0], {"var": "customer.segments"}]} and \
                    b == {"in": [a["in"][0], {"var": "customer.imported"}]}:
                return a["in"][0]
        return None
    if (seg := member(rule)) is not None:
        return seg, None
    if isinstance(rule, dict) and list(rule) == ["and"] and rule["and"] and (seg := member(rule["and"][0])):
        rest = rule["and"][1:]
        return seg, rest[0] if len(rest) == 1 else {"and": rest}
    return None, rule


def start_of(j: ir.JourneyIR) -> dict[str, Any]:
    """StartCondition, Schedule and LocalTime (each only when it has a Pinpoint form)."""
    e = j.entry
    if isinstance(e, ir.BroadcastEntry):
        joiners = {"RefreshOnSegmentUpdate": True} if e.on_join else {}
        if e.refresh and e.every_seconds:
            return {"StartCondition": {"SegmentStartCondition": {"SegmentId": e.segment}},
                    "RefreshFrequency": iso_duration(e.every_seconds), **joiners}
        if e.cron or e.every_seconds:
            return {}
        out: dict[str, Any] = {"StartCondition": {"SegmentStartCondition": {"SegmentId": e.segment}}, **joiners}
        if e.at:
            local = e.timezone == "customer"
            out["Schedule"] = {"StartTime": e.at + ":00Z" if local else e.at.replace("+00:00", "Z")}
            out["LocalTime"] = local
        return out
    if isinstance(e, ir.EventEntry):
        segment, rule = _segment_of(e.filter)
        try:
            dims = event_dimensions(e.event, rule)
        except Unmapped:
            return {}
        cond: dict[str, Any] = {"EventFilter": {"FilterType": "ENDPOINT", "Dimensions": dims}}
        if segment:
            cond["SegmentId"] = segment
        return {"StartCondition": {"EventStartCondition": cond}}
    return {}


def settings_of(j: ir.JourneyIR) -> dict[str, Any]:
    s = j.settings
    out: dict[str, Any] = {}
    if s.quiet_hours:
        out["QuietTime"] = {"Start": s.quiet_hours.start, "End": s.quiet_hours.end}
        out["WaitForQuietTime"] = s.quiet_hours.action == "hold"
    limits: dict[str, Any] = {"EndpointReentryCap": 0 if s.entry.max_entries is None else s.entry.max_entries}
    if s.entry.min_interval_seconds:
        limits["EndpointReentryInterval"] = iso_duration(s.entry.min_interval_seconds)
    if s.frequency_cap and s.frequency_cap.per_seconds == 86400:
        limits["DailyCap"] = s.frequency_cap.messages
    out["Limits"] = limits
    return out


def activities_of(j: ir.JourneyIR) -> dict[str, Any]:
    """Activities and StartActivity; {} when some node has no Pinpoint form."""
    try:
        return _Reader(j).read()
    except Unmapped:
        return {}


class _Reader:
    def __init__(self, j: ir.JourneyIR):
        self.j = j
        self.nodes = j.nodes

    def next_of(self, target: str) -> dict[str, Any]:
        node = self.nodes.get(target)
        return {} if node is None or isinstance(node, ir.ExitNode) else {"NextActivity": target}

    def ref(self, key: str, target: str) -> dict[str, Any]:
        node = self.nodes.get(target)
        return {} if node is None or isinstance(node, ir.ExitNode) else {key: target}

    def read(self) -> dict[str, Any]:
        acts: dict[str, Any] = {}
        for node in self.nodes.values():
            if isinstance(node, ir.ExitNode) or "--" in node.id:
                continue  # exits are the end of a path; `--` nodes belong to the activity before them
            acts[node.id] = self.activity(node)
        if isinstance(self.nodes.get(self.j.start), ir.ExitNode) or "--" in self.j.start:
            raise Unmapped
        return {"Activities": acts, "StartActivity": self.j.start}

    def activity(self, node: ir.Node) -> dict[str, Any]:
        if isinstance(node, ir.SendNode) and node.custom is not None:
            return {"CUSTOM": {**custom_activity(node, node.custom), **self.next_of(node.next)}}
        if isinstance(node, ir.SendNode):
            if node.channel not in SEND_KINDS or node.data or node.channel == "VOICE":
                raise Unmapped  # botocore's Activity has no VOICE member
            return {node.channel: {"TemplateName": node.template, **self.next_of(node.next)}}
        if isinstance(node, ir.WaitNode):
            when = self.nodes.get(f"{node.id}--when")
            if node.next == f"{node.id}--when" and isinstance(when, ir.SplitNode):
                return self.split(node.id, when, self.wait_time(node))
            return {"Wait": {"WaitTime": self.wait_time(node), **self.next_of(node.next)}}
        if isinstance(node, ir.HoldoutNode):
            if not float(node.percent).is_integer():
                raise Unmapped
            return {"Holdout": {"Percentage": int(node.percent), **self.next_of(node.next)}}
        if isinstance(node, ir.RandomSplitNode):
            if not all(float(b.weight).is_integer() for b in node.branches):
                raise Unmapped
            return {"RandomSplit": {"Branches": [{"Percentage": int(b.weight), **self.next_of(b.next)}
                                                 for b in node.branches]}}
        if isinstance(node, ir.SplitNode):
            return self.split(node.id, node, None)
        if isinstance(node, ir.WaitForNode):
            if node.event is None or node.correlate or node.message_event:
                raise Unmapped
            try:
                dims = event_dimensions(node.event, node.filter)
            except Unmapped:
                raise
            return {"ConditionalSplit": {
                "Condition": {"Conditions": [{"EventCondition": {"Dimensions": dims}}], "Operator": "ALL"},
                "EvaluationWaitTime": {"WaitFor": iso_duration(node.timeout_seconds)},
                **self.ref("TrueActivity", node.on_event), **self.ref("FalseActivity", node.on_timeout)}}
        raise Unmapped

    @staticmethod
    def wait_time(node: ir.WaitNode) -> dict[str, Any]:
        if node.seconds:
            return {"WaitFor": iso_duration(node.seconds)}
        if node.until:
            return {"WaitUntil": node.until.replace("+00:00", "Z")}
        raise Unmapped

    def condition(self, branch: ir.Branch) -> dict[str, Any]:
        if isinstance(branch, ir.SegmentBranch):
            return {"SegmentCondition": {"SegmentId": branch.segment}}
        if isinstance(branch, ir.MessageEventBranch):
            send = self.nodes.get(branch.step)
            names = {v: k for k, v in MESSAGE_EVENTS.get(getattr(send, "channel", ""), {}).items()}
            if branch.type not in names:
                raise Unmapped
            return {"EventCondition": {"Dimensions": {"EventType": {"DimensionType": "INCLUSIVE",
                                                                    "Values": [names[branch.type]]}},
                                       "MessageActivity": branch.step}}
        raise Unmapped

    def split(self, act_id: str, node: ir.SplitNode, wait: dict[str, Any] | None) -> dict[str, Any]:
        extra = {"EvaluationWaitTime": wait} if wait else {}
        chain = [node]
        while len(chain[-1].branches) == 1 and chain[-1].branches[0].next == f"{act_id}--and{len(chain) + 1}":
            following = self.nodes.get(chain[-1].branches[0].next)
            if not isinstance(following, ir.SplitNode) or following.else_next != node.else_next:
                raise Unmapped
            chain.append(following)
        if len(chain) > 1:
            if len(chain[-1].branches) != 1:
                raise Unmapped
            conds = [self.condition(n.branches[0]) for n in chain]
            return {"ConditionalSplit": {"Condition": {"Conditions": conds, "Operator": "ALL"}, **extra,
                                         **self.ref("TrueActivity", chain[-1].branches[0].next),
                                         **self.ref("FalseActivity", node.else_next)}}
        targets = {b.next for b in node.branches}
        if len(targets) == 1:
            return {"ConditionalSplit": {
                "Condition": {"Conditions": [self.condition(b) for b in node.branches],
                              "Operator": "ALL" if len(node.branches) == 1 else "ANY"}, **extra,
                **self.ref("TrueActivity", node.branches[0].next), **self.ref("FalseActivity", node.else_next)}}
        return {"MultiCondition": {"Branches": [{"Condition": self.condition(b), **self.next_of(b.next)}
                                                for b in node.branches], **extra,
                                   **self.ref("DefaultActivity", node.else_next)}}


def custom_activity(node: ir.SendNode, c: ir.CustomDelivery) -> dict[str, Any]:
    """A custom_channel step as Pinpoint's CustomMessageActivity (without NextActivity)."""
    body: dict[str, Any] = {"DeliveryUri": c.url}
    if c.endpoint_types:
        body["EndpointTypes"] = list(c.endpoint_types)
    if c.data:
        body["MessageConfig"] = {"Data": c.data}
    if node.template:
        body["TemplateName"] = node.template
    return body


def journey_parts(j: ir.JourneyIR) -> dict[str, Any]:
    """Every member of JourneyResponse the IR decides."""
    parts = {**start_of(j), **settings_of(j), **activities_of(j)}
    if j.settings.ends_at:  # settings.ends_at is the journey's Schedule.EndTime
        parts["Schedule"] = {**parts.get("Schedule", {}), "EndTime": j.settings.ends_at.replace("+00:00", "Z")}
    if j.settings.sending_hours:
        parts.update(sending_schedule_of(j.settings.sending_hours, parts))
    return parts


def sending_schedule_of(hours: ir.SendingHours, parts: dict[str, Any]) -> dict[str, Any]:
    """settings.sending_hours -> SendingSchedule, OpenHours, ClosedDays, and the zone they are read in
    (LocalTime, or Schedule.Timezone)."""
    out: dict[str, Any] = {"SendingSchedule": True}
    if hours.open:
        out["OpenHours"] = {ch: {day.upper(): [{"StartTime": r.start, "EndTime": r.end} for r in ranges]
                                 for day, ranges in days.items()} for ch, days in hours.open.items()}
    if hours.closed:
        out["ClosedDays"] = {ch: [{"Name": c.name, "StartDateTime": c.start, "EndDateTime": c.end} for c in rules]
                             for ch, rules in hours.closed.items()}
    if hours.timezone == "customer":
        out["LocalTime"] = True
    elif hours.timezone != "UTC":
        out["Schedule"] = {**parts.get("Schedule", {}), "Timezone": hours.timezone}
    return out
