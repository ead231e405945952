"""Pinpoint journey JSON (a WriteJourneyRequest, or a JourneyResponse as GetJourney exported it) -> the text
of one Tidings `kind: Journey` YAML document, which then compiles through the normal compiler.

Each activity becomes the step of the same id (lower-cased: step ids are `[a-z0-9_-]+`); a split with an
EvaluationWaitTime becomes a `wait` step of the activity's id followed by the split `<id>--when`, and a
ConditionalSplit whose Operator is ALL a chain of splits `<id>--and2`, `<id>--and3`, ... (the names
engine/journeys/pinpoint/to_pinpoint.py reads back). What Tidings cannot run is refused with InvalidInput
naming the member (`Activities.a1.ContactCenter`), never dropped: nothing is written from a refused journey.
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from tidings.engine.journeys.ir import WEEKDAYS
from tidings.engine.journeys.language.durations import MAX_WAIT, format_duration
from tidings.engine.journeys.language.formats import check_timezone
from tidings.engine.journeys.language.yaml_view import ID_RE
from tidings.engine.messaging.custom_channel import ENDPOINT_TYPES as CUSTOM_ENDPOINT_TYPES
from tidings.engine.platform.errors import InvalidInput

# Pinpoint's message event types (EventCondition with MessageActivity) -> Tidings' message event types.
MESSAGE_EVENTS = {
    "EMAIL": {"_email.send": "sent", "_email.delivered": "delivered", "_email.open": "opened",
              "_email.click": "clicked", "_email.complaint": "complained", "_email.unsubscribe": "unsubscribed",
              "_email.rejected": "failed"},
    "SMS": {"_SMS.BUFFERED": "sent", "_SMS.SUCCESS": "delivered", "_SMS.FAILURE": "failed",
            "_SMS.OPTOUT": "unsubscribed"},
}
SEND_KINDS = ("EMAIL", "SMS", "PUSH", "VOICE")
# MetricDimension.ComparisonOperator -> JsonLogic
COMPARISONS = {"GREATER_THAN": ">", "LESS_THAN": "<", "GREATER_THAN_OR_EQUAL": ">=", "LESS_THAN_OR_EQUAL": "<=",
               "EQUAL": "=="}
UNSUPPORTED_JOURNEY = {
    "JourneyChannelSettings": "connect (contact center) settings; Tidings has no contact-center channel",
    "TimezoneEstimationMethods": "Tidings uses each customer's stored time zone (settings.default_timezone when none)",
}
KNOWN_MEMBERS = {
    "Activities", "CreationDate", "LastModifiedDate", "Limits", "LocalTime", "Name", "QuietTime", "RefreshFrequency",
    "Schedule", "StartActivity", "StartCondition", "State", "WaitForQuietTime", "RefreshOnSegmentUpdate",
    "JourneyChannelSettings", "SendingSchedule", "OpenHours", "ClosedDays", "TimezoneEstimationMethods",
    "ApplicationId", "Id", "tags"}  # the last three: a JourneyResponse as GetJourney exported it
_ISO_DURATION = re.compile(r"^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


def refuse(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", field=field)


def iso_seconds(text: Any, field: str) -> int:
    """An ISO 8601 duration (`PT1H`, `P1D`, `P1DT12H`, `P2W`) in seconds; months and years have no fixed length."""
    m = _ISO_DURATION.match(text) if isinstance(text, str) else None
    if not m or text in ("P", "PT") or text.endswith("T"):
        raise refuse(field, f"expected an ISO 8601 duration in weeks, days, hours, minutes or seconds such as "
                            f"PT1H or P1D, got {text!r}")
    w, d, h, mi, s = (int(x or 0) for x in m.groups())
    seconds = w * 604800 + d * 86400 + h * 3600 + mi * 60 + s
    if not 1 <= seconds <= MAX_WAIT:
        raise refuse(field, f"a duration from 1 second to 365 days, got {text!r}")
    return seconds


def instant(text: Any, field: str) -> str:
    """An ISO 8601 instant with its offset, as the YAML writes it (`Z` for UTC)."""
    try:
        parsed = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise refuse(field, f"expected an ISO 8601 date-time, got {text!r}") from None
    if parsed.tzinfo is None:
        raise refuse(field, f"the date-time needs its offset (Z or +02:00), got {text!r}")
    out = parsed.isoformat(timespec="seconds" if parsed.microsecond == 0 else "milliseconds")
    return out.replace("+00:00", "Z")


def _instant_of(text: str) -> datetime:
    """The datetime of a string instant() wrote."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


SENDING_CHANNELS = ("EMAIL", "SMS", "PUSH", "VOICE", "CUSTOM")
_UTC_OFFSET = re.compile(r"^UTC(?:([+-])(\d{2})(?::?00)?)?$")
_HHMM = re.compile(r"^(?:[01]\d|2[0-3]):[0-5]\d$|^24:00$")


def sending_zone(name: Any) -> str:
    """Schedule.Timezone (an IANA zone, or Pinpoint's `UTC+02` form in whole hours) as a Tidings zone name."""
    if not name:
        return "UTC"
    found = _UTC_OFFSET.match(str(name))
    if found:  # Etc/GMT zones count the other way: UTC+02 is Etc/GMT-2
        return "UTC" if not found[1] or int(found[2]) == 0 else \
            f"Etc/GMT{'-' if found[1] == '+' else '+'}{int(found[2])}"
    if check_timezone(str(name)):
        raise refuse("Schedule.Timezone", f"an IANA zone or UTC+HH, got {name!r}")
    return str(name)


def open_days(days: Any, field: str) -> dict[str, list[str]]:
    """{"MONDAY": [{"StartTime": "09:00", "EndTime": "17:00"}]} -> {monday: ["09:00-17:00"]}."""
    if not isinstance(days, dict):
        raise refuse(field, "a map of days of the week to rules")
    out: dict[str, list[str]] = {}
    for day, rules in days.items():
        if str(day).lower() not in WEEKDAYS:
            raise refuse(f"{field}.{day}", "not a day of the week (MONDAY ... SUNDAY)")
        ranges = []
        for i, rule in enumerate(rules or []):
            start, end = (rule.get(k) if isinstance(rule, dict) else None for k in ("StartTime", "EndTime"))
            for key, value in (("StartTime", start), ("EndTime", end)):
                if not isinstance(value, str) or not _HHMM.match(value):
                    raise refuse(f"{field}.{day}[{i}].{key}", f"a time of day HH:MM, got {value!r}")
            ranges.append(f"{start}-{end}")
        out[str(day).lower()] = ranges
    return out


def closed_range(rule: Any, field: str) -> dict[str, str]:
    """{"Name", "StartDateTime", "EndDateTime"} (local, without offset) -> {name, start, end} to the minute."""
    if not isinstance(rule, dict):
        raise refuse(field, "a rule with Name, StartDateTime and EndDateTime")
    out = {"name": str(rule.get("Name") or "closed")}
    for key, ours in (("StartDateTime", "start"), ("EndDateTime", "end")):
        try:
            wall = datetime.fromisoformat(str(rule.get(key)))
        except ValueError:
            raise refuse(f"{field}.{key}", f"an ISO 8601 date-time, got {rule.get(key)!r}") from None
        if wall.tzinfo is not None or wall.second or wall.microsecond:
            raise refuse(f"{field}.{key}", "a local date-time to the minute, without offset (read in the "
                                           f"journey's zone), got {rule.get(key)!r}")
        out[ours] = wall.isoformat(timespec="minutes")
    return out


def tidings_id(value: Any, field: str, what: str) -> str:
    """A Pinpoint id or name as a Tidings id: lower case; refused when it still is not `[a-z0-9_-]+`."""
    text = str(value).lower()
    if not isinstance(value, str) or not ID_RE.match(text) or len(text) > 100:
        raise refuse(field, f"{what} {value!r} cannot be a Tidings id (letters, digits, `-` and `_`, "
                            "at most 100 characters)")
    return text


def event_rule(dimensions: dict[str, Any], field: str) -> tuple[str, Any]:
    """EventDimensions -> (the one event name, the JsonLogic filter over `event` or None)."""
    known = {"EventType", "Attributes", "Metrics"}
    for key in dimensions:
        if key not in known:
            raise refuse(f"{field}.{key}", "not a member of EventDimensions")
    kind = dimensions.get("EventType") or {}
    values = kind.get("Values") or []
    if kind.get("DimensionType", "INCLUSIVE") != "INCLUSIVE" or len(values) != 1:
        raise refuse(f"{field}.EventType", "Tidings starts on (or waits for) one event name: an INCLUSIVE "
                                           "EventType with exactly one value")
    rules: list[Any] = []
    for name, dim in sorted((dimensions.get("Attributes") or {}).items()):
        var = {"var": f"event.attributes.{name}"}
        kind_ = dim.get("AttributeType", "INCLUSIVE")
        vals = list(dim.get("Values") or [])
        if kind_ == "INCLUSIVE":
            rules.append({"in": [var, vals]})
        elif kind_ == "EXCLUSIVE":
            rules.append({"!": {"in": [var, vals]}})
        elif kind_ == "CONTAINS":
            rules.append({"or": [{"in": [v, var]} for v in vals]})
        else:
            raise refuse(f"{field}.Attributes.{name}.AttributeType", f"{kind_} is not supported on event "
                                                                    "attributes (INCLUSIVE, EXCLUSIVE, CONTAINS)")
    for name, dim in sorted((dimensions.get("Metrics") or {}).items()):
        op = COMPARISONS.get(dim.get("ComparisonOperator", ""))
        if op is None:
            raise refuse(f"{field}.Metrics.{name}.ComparisonOperator",
                         f"one of {', '.join(COMPARISONS)}, got {dim.get('ComparisonOperator')!r}")
        value = dim.get("Value")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise refuse(f"{field}.Metrics.{name}.Value", f"a number, got {value!r}")
        # a double in Pinpoint's model: 0 and 0.0 (as JSON files and boto3 send it) write the same YAML
        rules.append({op: [{"var": f"event.metrics.{name}"}, int(value) if float(value).is_integer() else value]})
    rule = None if not rules else rules[0] if len(rules) == 1 else {"and": rules}
    return values[0], rule


def custom_channel(body: dict[str, Any], where: str, treatment: str | None = None) -> dict[str, Any]:
    """DeliveryUri, EndpointTypes, MessageConfig.Data and TemplateName as a `custom_channel` step's settings."""
    uri = body.get("DeliveryUri")
    if not isinstance(uri, str) or not uri:
        raise refuse(f"{where}.DeliveryUri", "names the webhook (an https URL) the endpoints are sent to")
    if not uri.startswith(("https://", "http://")):  # http: a receiver on a network the operator allowed
        lambda_like = uri.startswith("arn:") or "://" not in uri
        raise refuse(f"{where}.DeliveryUri", (
            "Tidings cannot invoke an AWS Lambda function; give the https URL of a webhook that receives the same "
            "payload (put the function behind a function URL or an API gateway)" if lambda_like else
            f"a webhook DeliveryUri is an https URL, got {uri!r}"))
    out: dict[str, Any] = {"url": uri}
    types = body.get("EndpointTypes") or []
    if not isinstance(types, list) or any(t not in CUSTOM_ENDPOINT_TYPES for t in types):
        raise refuse(f"{where}.EndpointTypes", f"a list of {', '.join(CUSTOM_ENDPOINT_TYPES)}, got {types!r}")
    if types:
        out["endpoint_types"] = list(types)
    config = body.get("MessageConfig") or {}
    for key in config:
        if key != "Data" and config[key] not in (None, ""):
            raise refuse(f"{where}.MessageConfig.{key}", "not a member of the custom message (Data)")
    if config.get("Data") not in (None, ""):
        if not isinstance(config["Data"], str):
            raise refuse(f"{where}.MessageConfig.Data", "a string (the payload's Data)")
        out["data"] = config["Data"]
    if body.get("TemplateVersion") not in (None, ""):
        raise refuse(f"{where}.TemplateVersion", "a journey sends the template's current version in Tidings")
    if body.get("TemplateName"):
        out["template"] = tidings_id(body["TemplateName"], f"{where}.TemplateName", "the template name")
    if treatment is not None:
        out["campaign_treatment"] = treatment
    return out


class _Journey:
    def __init__(self, source: dict[str, Any]):
        self.src = source
        self.acts: dict[str, dict[str, Any]] = source.get("Activities") or {}
        self.ids: dict[str, str] = {}
        self.comments: list[str] = []
        self.steps: list[dict[str, Any]] = []
        self.channels: dict[str, str] = {}  # step id -> channel, for message event conditions

    # ---- ids and edges ------------------------------------------------------------------
    def map_ids(self) -> None:
        seen: dict[str, str] = {}
        for act_id in self.acts:
            step = tidings_id(act_id, f"Activities.{act_id}", "the activity id")
            if step in seen or step == "end" or "--" in step:
                raise refuse(f"Activities.{act_id}", f"the activity id is step `{step}` in Tidings, which "
                             + (f"activity {seen[step]!r} already is" if step in seen else "is reserved"))
            seen[step] = act_id
            self.ids[act_id] = step

    def target(self, value: Any, field: str) -> str:
        if value is None:
            return "end"
        if value not in self.ids:
            raise refuse(field, f"no activity {value!r} in Activities")
        return self.ids[value]

    # ---- activities ---------------------------------------------------------------------
    def activity(self, act_id: str, act: dict[str, Any]) -> None:
        field = f"Activities.{act_id}"
        kinds = [k for k in act if k != "Description"]
        if len(kinds) != 1:
            raise refuse(field, f"an activity has exactly one kind; got {', '.join(kinds) or 'none'}")
        kind = kinds[0]
        body = act[kind] or {}
        step: dict[str, Any] = {"id": self.ids[act_id]}
        if act.get("Description"):
            step["description"] = act["Description"]
        notes: list[str] = []
        where = f"{field}.{kind}"
        if kind in SEND_KINDS:
            self.send(step, kind, body, where, notes)
        elif kind == "Wait":
            self.check(body, where, {"NextActivity", "WaitTime"})
            step["wait"] = self.wait(body.get("WaitTime"), f"{where}.WaitTime")
            step["next"] = self.target(body.get("NextActivity"), f"{where}.NextActivity")
        elif kind == "Holdout":
            self.check(body, where, {"NextActivity", "Percentage"})
            pct = body.get("Percentage")
            if not isinstance(pct, int) or not 0 < pct < 100:
                raise refuse(f"{where}.Percentage", f"a percentage from 1 to 99, got {pct!r}")
            step["holdout"] = {"percent": pct}
            step["next"] = self.target(body.get("NextActivity"), f"{where}.NextActivity")
        elif kind == "RandomSplit":
            self.check(body, where, {"Branches"})
            branches = body.get("Branches") or []
            if len(branches) < 2:
                raise refuse(f"{where}.Branches", "a random split needs at least 2 branches")
            out = []
            for i, b in enumerate(branches):
                self.check(b, f"{where}.Branches[{i}]", {"NextActivity", "Percentage"})
                out.append({"weight": b.get("Percentage"), "variant": chr(ord("A") + i) if i < 26 else f"V{i}",
                            "next": self.target(b.get("NextActivity"), f"{where}.Branches[{i}].NextActivity")})
            step["random_split"] = {"branches": out}
        elif kind == "ConditionalSplit":
            self.conditional(step, body, where, notes)
            return
        elif kind == "MultiCondition":
            self.multi(step, body, where)
            return
        elif kind == "ContactCenter":
            raise refuse(where, "Tidings cannot run a contact-center (Amazon Connect) activity")
        elif kind == "CUSTOM":
            self.custom(step, body, where, notes)
        else:
            raise refuse(where, "not a journey activity Tidings knows")
        self.emit(step, notes)

    def emit(self, step: dict[str, Any], notes: list[str]) -> None:
        if notes:
            step = {"#": notes, **step}
        self.steps.append(step)

    @staticmethod
    def check(body: dict[str, Any], where: str, allowed: set[str]) -> None:
        for key, value in body.items():
            if key not in allowed and value not in (None, {}, []):
                raise refuse(f"{where}.{key}", "not supported by Tidings journeys")

    def send(self, step: dict[str, Any], kind: str, body: dict[str, Any], where: str, notes: list[str]) -> None:
        self.check(body, where, {"MessageConfig", "NextActivity", "TemplateName", "TemplateVersion"})
        if body.get("TemplateVersion") not in (None, ""):
            raise refuse(f"{where}.TemplateVersion", "a journey sends the template's current version in Tidings")
        if not body.get("TemplateName"):
            raise refuse(f"{where}.TemplateName", "a message activity needs its TemplateName")
        template = tidings_id(body["TemplateName"], f"{where}.TemplateName", "the template name")
        if template != body["TemplateName"]:
            notes.append(f"Pinpoint template {body['TemplateName']!r} is Tidings template {template!r}")
        for key, value in (body.get("MessageConfig") or {}).items():
            if value in (None, ""):
                continue
            if kind == "EMAIL" and key == "FromAddress" or kind == "SMS" and key in (
                    "OriginationNumber", "SenderId", "EntityId", "TemplateId"):
                notes.append(f"{key} {value!r}: Tidings sends from the {kind} channel's configured sender")
            elif kind == "SMS" and key == "MessageType":
                notes.append(f"MessageType {value}: the SMS channel's configuration decides the route")
            else:
                raise refuse(f"{where}.MessageConfig.{key}", "not supported by Tidings journeys")
        channel = kind
        self.channels[step["id"]] = channel
        step["send"] = {"channel": channel, "template": template}
        step["next"] = self.target(body.get("NextActivity"), f"{where}.NextActivity")

    def custom(self, step: dict[str, Any], body: dict[str, Any], where: str, notes: list[str],
               treatment: str | None = None) -> None:
        """A CUSTOM activity (or a campaign's custom channel): a `custom_channel` step to the same webhook."""
        self.check(body, where, {"DeliveryUri", "EndpointTypes", "MessageConfig", "NextActivity", "TemplateName",
                                 "TemplateVersion"})
        step["custom_channel"] = custom_channel(body, where, treatment)
        if body.get("TemplateName") and step["custom_channel"]["template"] != body["TemplateName"]:
            notes.append(f"Pinpoint template {body['TemplateName']!r} is Tidings template "
                         f"{step['custom_channel']['template']!r}")
        step["next"] = self.target(body.get("NextActivity"), f"{where}.NextActivity")

    def wait(self, wait_time: Any, where: str) -> Any:
        wait_time = wait_time or {}
        self.check(wait_time, where, {"WaitFor", "WaitUntil"})
        if bool(wait_time.get("WaitFor")) == bool(wait_time.get("WaitUntil")):
            raise refuse(where, "needs exactly one of WaitFor or WaitUntil")
        if wait_time.get("WaitFor"):
            return format_duration(iso_seconds(wait_time["WaitFor"], f"{where}.WaitFor"))
        return {"until": instant(wait_time["WaitUntil"], f"{where}.WaitUntil")}

    def condition(self, cond: dict[str, Any], where: str) -> dict[str, Any]:
        """A SimpleCondition as the condition of a split branch (segment or message event)."""
        self.check(cond, where, {"EventCondition", "SegmentCondition"})
        if len([k for k, v in cond.items() if v]) != 1:
            raise refuse(where, "a condition has exactly one of EventCondition or SegmentCondition")
        if cond.get("SegmentCondition"):
            seg = cond["SegmentCondition"].get("SegmentId")
            return {"segment": tidings_id(seg, f"{where}.SegmentCondition.SegmentId", "the segment id")}
        event = cond["EventCondition"]
        self.check(event, f"{where}.EventCondition", {"Dimensions", "MessageActivity"})
        if not event.get("MessageActivity"):
            raise refuse(f"{where}.EventCondition", "a condition on an event that is not a message event needs "
                                                    "a ConditionalSplit of that one condition and an "
                                                    "EvaluationWaitTime WaitFor")
        ref = event["MessageActivity"]
        step = self.target(ref, f"{where}.EventCondition.MessageActivity")
        kind = self.kind_of(ref)
        dims = event.get("Dimensions") or {}
        values = (dims.get("EventType") or {}).get("Values") or []
        names = MESSAGE_EVENTS.get(kind or "", {})
        if set(dims) - {"EventType"} or len(values) != 1 or values[0] not in names or \
                (dims.get("EventType") or {}).get("DimensionType", "INCLUSIVE") != "INCLUSIVE":
            raise refuse(f"{where}.EventCondition.Dimensions",
                         f"one INCLUSIVE EventType of the {kind} activity {ref!r}: "
                         + (", ".join(names) if names else f"Tidings tests no message event of a {kind} activity"))
        return {"message_event": {"step": step, "type": names[values[0]]}}

    def kind_of(self, act_id: str) -> str | None:
        act = self.acts.get(act_id) or {}
        return next((k for k in act if k in SEND_KINDS or k == "CUSTOM"), None)

    def split_steps(self, base: dict[str, Any], body: dict[str, Any], where: str, notes: list[str],
                    make) -> None:
        """The evaluation wait (when any) as a step of the activity's id, then the split steps `make` builds."""
        step_id = base["id"]
        wait_time = body.get("EvaluationWaitTime")
        if wait_time:
            wait = {**base, "wait": self.wait(wait_time, f"{where}.EvaluationWaitTime"), "next": f"{step_id}--when"}
            self.emit(wait, notes + ["EvaluationWaitTime, then the split below"])
            first = f"{step_id}--when"
            notes = []
        else:
            first = step_id
        for i, step in enumerate(make(first)):
            if i == 0 and not wait_time:
                step = {**base, **step}
            self.emit(step, notes if i == 0 else [])

    def conditional(self, base: dict[str, Any], body: dict[str, Any], where: str, notes: list[str]) -> None:
        self.check(body, where, {"Condition", "EvaluationWaitTime", "TrueActivity", "FalseActivity"})
        cond = body.get("Condition") or {}
        self.check(cond, f"{where}.Condition", {"Conditions", "Operator"})
        conditions = cond.get("Conditions") or []
        if not conditions:
            raise refuse(f"{where}.Condition.Conditions", "a conditional split needs at least one condition")
        yes = self.target(body.get("TrueActivity"), f"{where}.TrueActivity")
        no = self.target(body.get("FalseActivity"), f"{where}.FalseActivity")
        event = conditions[0].get("EventCondition") if len(conditions) == 1 else None
        if event and not event.get("MessageActivity"):  # a custom event: wait for it, at most the wait time
            wait_for = (body.get("EvaluationWaitTime") or {}).get("WaitFor")
            if not wait_for:
                raise refuse(f"{where}.EvaluationWaitTime.WaitFor", "a condition on an event needs how long to "
                                                                   "wait for it (WaitFor)")
            self.check(event, f"{where}.Condition.Conditions[0].EventCondition", {"Dimensions"})
            name, rule = event_rule(event.get("Dimensions") or {},
                                    f"{where}.Condition.Conditions[0].EventCondition.Dimensions")
            spec: dict[str, Any] = {"event": name}
            if rule is not None:
                spec["filter"] = rule
            spec.update(timeout=format_duration(iso_seconds(wait_for, f"{where}.EvaluationWaitTime.WaitFor")),
                        on_event=yes, on_timeout=no)
            self.emit({**base, "wait_for": spec}, notes + [
                "the event condition: a customer goes on as soon as the event arrives (Pinpoint waited the "
                "whole EvaluationWaitTime)"])
            return
        branches = [self.condition(c, f"{where}.Condition.Conditions[{i}]") for i, c in enumerate(conditions)]
        operator = cond.get("Operator") or "ALL"
        if operator not in ("ALL", "ANY"):
            raise refuse(f"{where}.Condition.Operator", f"ALL or ANY, got {operator!r}")

        def make(first: str) -> list[dict[str, Any]]:
            if operator == "ANY" or len(branches) == 1:
                return [{"id": first, "split": {"branches": [{**b, "next": yes} for b in branches], "else": no}}]
            ids = [first] + [f"{base['id']}--and{i + 2}" for i in range(len(branches) - 1)]
            return [{"id": ids[i], "split": {"branches": [{**b, "next": ids[i + 1] if i + 1 < len(ids) else yes}],
                                             "else": no}} for i, b in enumerate(branches)]
        self.split_steps(base, body, where, notes, make)

    def multi(self, base: dict[str, Any], body: dict[str, Any], where: str) -> None:
        self.check(body, where, {"Branches", "DefaultActivity", "EvaluationWaitTime"})
        branches = []
        for i, b in enumerate(body.get("Branches") or []):
            self.check(b, f"{where}.Branches[{i}]", {"Condition", "NextActivity"})
            branches.append({**self.condition(b.get("Condition") or {}, f"{where}.Branches[{i}].Condition"),
                             "next": self.target(b.get("NextActivity"), f"{where}.Branches[{i}].NextActivity")})
        if not branches:
            raise refuse(f"{where}.Branches", "a multivariate split needs at least one branch")
        default = self.target(body.get("DefaultActivity"), f"{where}.DefaultActivity")
        self.split_steps(base, body, where, [], lambda first: [
            {"id": first, "split": {"branches": branches, "else": default}}])

    # ---- journey level ------------------------------------------------------------------
    def entry(self) -> dict[str, Any]:
        start = self.src.get("StartCondition") or {}
        schedule = self.src.get("Schedule") or {}
        for key in schedule:
            if key not in ("StartTime", "EndTime", "Timezone"):
                raise refuse(f"Schedule.{key}", "not a member of JourneySchedule")
        self.check(start, "StartCondition", {"Description", "EventStartCondition", "SegmentStartCondition"})
        local = bool(self.src.get("LocalTime"))
        if start.get("SegmentStartCondition") and not start.get("EventStartCondition"):
            return self.segment_start(start, schedule, local)
        if start.get("EventStartCondition") and not start.get("SegmentStartCondition"):
            for key in ("RefreshFrequency", "RefreshOnSegmentUpdate"):
                if self.src.get(key):
                    raise refuse(key, "applies to a journey that starts from a segment")
            cond = start["EventStartCondition"]
            self.check(cond, "StartCondition.EventStartCondition", {"EventFilter", "SegmentId"})
            if schedule.get("StartTime"):
                raise refuse("Schedule.StartTime", "an event-started journey admits customers from its "
                                                   "activation; activate it at that time instead")
            if local and not self.src.get("SendingSchedule"):  # else it is the zone of the sending hours
                raise refuse("LocalTime", "an event-started journey has no scheduled time to read locally")
            flt = cond.get("EventFilter") or {}
            self.check(flt, "StartCondition.EventStartCondition.EventFilter", {"Dimensions", "FilterType"})
            if flt.get("FilterType", "ENDPOINT") != "ENDPOINT":
                raise refuse("StartCondition.EventStartCondition.EventFilter.FilterType",
                             "Tidings starts journeys on the events your application records (ENDPOINT)")
            name, rule = event_rule(flt.get("Dimensions") or {},
                                    "StartCondition.EventStartCondition.EventFilter.Dimensions")
            if cond.get("SegmentId"):
                seg = tidings_id(cond["SegmentId"], "StartCondition.EventStartCondition.SegmentId", "the segment id")
                member = {"or": [{"in": [seg, {"var": "customer.segments"}]},
                                 {"in": [seg, {"var": "customer.imported"}]}]}
                rule = member if rule is None else {"and": [member, *(rule["and"] if "and" in rule else [rule])]}
                self.comments.append(f"EventStartCondition.SegmentId {cond['SegmentId']}: only its members enter")
            event: dict[str, Any] = {"name": name}
            if rule is not None:
                event["filter"] = rule
            return {"event": event}
        raise refuse("StartCondition", "needs exactly one of SegmentStartCondition or EventStartCondition")

    def segment_start(self, start: dict[str, Any], schedule: dict[str, Any], local: bool) -> dict[str, Any]:
        """A SegmentStartCondition: a broadcast of the segment (now, at StartTime, or refreshing)."""
        seg = tidings_id(start["SegmentStartCondition"].get("SegmentId"),
                         "StartCondition.SegmentStartCondition.SegmentId", "the segment id")
        broadcast: dict[str, Any] = {"segment": seg}
        if self.src.get("RefreshOnSegmentUpdate"):  # the members now, and each newcomer when they join
            if schedule.get("StartTime"):
                raise refuse("RefreshOnSegmentUpdate", "a journey that admits the segment's newcomers starts at its "
                                                       "activation in Tidings; leave out Schedule.StartTime (or "
                                                       "activate it then)")
            broadcast["on_join"] = True
            self.comments.append("RefreshOnSegmentUpdate: the segment's members at activation, then each customer "
                                 "who joins it, when they join (`on_join`), within the entry limits")
        if self.src.get("RefreshFrequency"):  # the members now, then whoever is new at each refresh
            if schedule.get("StartTime"):
                raise refuse("RefreshFrequency", "a journey that refreshes its segment starts at its activation "
                                                 "in Tidings; leave out Schedule.StartTime (or activate it then)")
            if local and not self.src.get("SendingSchedule"):
                raise refuse("LocalTime", "a refresh is the same instant for everyone")
            broadcast["refresh"] = format_duration(iso_seconds(self.src["RefreshFrequency"], "RefreshFrequency"))
            return {"broadcast": broadcast}
        if schedule.get("StartTime"):
            at = instant(schedule["StartTime"], "Schedule.StartTime")
            if local:
                broadcast["at"] = at[:16]
                broadcast["timezone"] = "customer"
                self.comments.append("LocalTime: Schedule.StartTime is read as each customer's own wall clock")
            else:
                broadcast["at"] = at
        elif local and not self.src.get("SendingSchedule"):  # else it is the zone of the sending hours
            raise refuse("LocalTime", "each customer's local time needs a Schedule.StartTime")
        if schedule.get("Timezone") and not local:
            self.comments.append(f"Schedule.Timezone {schedule['Timezone']}: StartTime carries its own offset")
        return {"broadcast": broadcast}

    def ends_at(self) -> dict[str, Any]:
        """Schedule.EndTime as `settings.ends_at`: nobody enters from then on; who is inside finishes."""
        schedule = self.src.get("Schedule") or {}
        if not schedule.get("EndTime"):
            return {}
        end = instant(schedule["EndTime"], "Schedule.EndTime")
        start = schedule.get("StartTime")
        if start and start != "IMMEDIATE" and _instant_of(instant(start, "Schedule.StartTime")) >= _instant_of(end):
            raise refuse("Schedule.EndTime", f"{schedule['EndTime']} is not after Schedule.StartTime {start}")
        if self.src.get("LocalTime"):
            self.comments.append("LocalTime: Schedule.EndTime is one instant for everyone, not each customer's "
                                 "own wall clock")
        return {"ends_at": end}

    def sending_hours(self) -> dict[str, Any]:
        """SendingSchedule with OpenHours and ClosedDays as `settings.sending_hours`."""
        opened, closed = self.src.get("OpenHours") or {}, self.src.get("ClosedDays") or {}
        if not self.src.get("SendingSchedule"):
            for key, value in (("OpenHours", opened), ("ClosedDays", closed)):
                if value:
                    raise refuse(key, "applies only with SendingSchedule true (Pinpoint ignores it otherwise)")
            return {}
        if not opened and not closed:
            raise refuse("SendingSchedule", "true, but there are no OpenHours or ClosedDays")
        hours: dict[str, Any] = {"timezone": "customer" if self.src.get("LocalTime") else
                                 sending_zone((self.src.get("Schedule") or {}).get("Timezone"))}
        if opened:
            self.check(opened, "OpenHours", set(SENDING_CHANNELS))
            hours["open"] = {ch: open_days(days, f"OpenHours.{ch}") for ch, days in opened.items() if days}
        if closed:
            self.check(closed, "ClosedDays", set(SENDING_CHANNELS))
            hours["closed"] = {ch: [closed_range(r, f"ClosedDays.{ch}[{i}]") for i, r in enumerate(rules)]
                               for ch, rules in closed.items() if rules}
        return {"sending_hours": hours}

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.ends_at(), **self.sending_hours()}
        quiet = self.src.get("QuietTime") or {}
        if quiet.get("Start") or quiet.get("End"):
            if not (quiet.get("Start") and quiet.get("End")):
                raise refuse("QuietTime", "needs both Start and End (HH:MM)")
            out["quiet_hours"] = {"start": quiet["Start"], "end": quiet["End"],
                                  "action": "hold" if self.src.get("WaitForQuietTime") else "skip"}
        elif self.src.get("WaitForQuietTime"):
            raise refuse("WaitForQuietTime", "set without a QuietTime")
        limits = self.src.get("Limits") or {}
        for key, value in limits.items():
            if key not in ("DailyCap", "EndpointReentryCap", "EndpointReentryInterval", "TotalCap",
                           "MessagesPerSecond") and value not in (None, {}):
                raise refuse(f"Limits.{key}", "not supported by Tidings journeys")
        entry: dict[str, Any] = {}
        cap = limits.get("EndpointReentryCap")
        if cap is not None:
            if not isinstance(cap, int) or cap < 0:
                raise refuse("Limits.EndpointReentryCap", f"0 (unlimited) or more, got {cap!r}")
            entry["max_entries"] = "unlimited" if cap == 0 else cap
        if limits.get("EndpointReentryInterval"):
            entry["min_interval"] = format_duration(iso_seconds(limits["EndpointReentryInterval"],
                                                                "Limits.EndpointReentryInterval"))
        if entry:
            out["entry"] = entry
        if limits.get("DailyCap"):
            out["frequency_cap"] = {"messages": limits["DailyCap"], "per": "1d"}
            self.comments.append("Limits.DailyCap: Tidings' frequency cap counts the sends of every journey "
                                 "to the customer, not only this one's")
        if limits.get("MessagesPerSecond"):
            raise refuse("Limits.MessagesPerSecond", "Tidings paces sends per channel (its rate_limit in the channel "
                                                     "configuration), not per journey")
        total = limits.get("TotalCap")
        if total:
            most = self.most_sends()
            if most is None or total < most:
                raise refuse("Limits.TotalCap", f"Tidings cannot stop a run after {total} messages; this journey "
                                                f"sends up to {most if most is not None else 'any number of'} "
                                                "messages to a participant")
            self.comments.append(f"Limits.TotalCap {total}: no path of this journey sends more ({most})")
        return out

    def most_sends(self) -> int | None:
        """The most message activities one participant's path can pass (None when the graph has a cycle)."""
        memo: dict[str, int | None] = {}
        visiting: set[str] = set()

        def edges(act: dict[str, Any]) -> list[str]:
            body: dict[str, Any] = next((v for k, v in act.items() if k != "Description"), {}) or {}
            out = [body.get(k) for k in ("NextActivity", "TrueActivity", "FalseActivity", "DefaultActivity")]
            out += [b.get("NextActivity") for b in body.get("Branches") or []]
            return [o for o in out if o in self.acts]

        def walk(a: str) -> int | None:
            if a in memo:
                return memo[a]
            if a in visiting:
                return None
            visiting.add(a)
            act = self.acts[a]
            here = 1 if self.kind_of(a) else 0
            subs = [walk(n) for n in edges(act)]
            visiting.discard(a)
            memo[a] = None if any(s is None for s in subs) else here + max([s for s in subs if s is not None],
                                                                             default=0)
            return memo[a]
        start = self.src.get("StartActivity")
        return walk(start) if start in self.acts else 0

    def build(self, journey_id: str) -> dict[str, Any]:
        for key in self.src:
            if key not in KNOWN_MEMBERS:
                raise refuse(key, "not a member of a Pinpoint journey (WriteJourneyRequest or JourneyResponse)")
        for key, why in UNSUPPORTED_JOURNEY.items():
            if self.src.get(key) not in (None, "", {}, []):
                raise refuse(key, why)
        if self.src.get("RefreshOnSegmentUpdate") not in (None, True, False):
            raise refuse("RefreshOnSegmentUpdate", f"true or false, got {self.src['RefreshOnSegmentUpdate']!r}")
        if not self.acts:
            raise refuse("Activities", "a journey needs at least one activity")
        if not self.src.get("StartActivity"):
            raise refuse("StartActivity", "names the first activity")
        self.map_ids()
        start = self.target(self.src["StartActivity"], "StartActivity")
        entry = self.entry()
        settings = self.settings()
        for act_id, act in self.acts.items():
            self.activity(act_id, act or {})
        steps = self.steps
        # the start step goes first in the list, so the YAML reads in the order customers walk it
        doc: dict[str, Any] = {"apiVersion": "tidings/v1", "kind": "Journey", "id": journey_id,
                               "name": self.src.get("Name") or journey_id, "entry": entry}
        if settings:
            doc["settings"] = settings
        if steps[0]["id"] != start:
            doc["start"] = start
        doc["steps"] = [_with_defaults_removed(s, steps[i + 1]["id"] if i + 1 < len(steps) else None)
                        for i, s in enumerate(steps)]
        return doc


def _with_defaults_removed(step: dict[str, Any], following: str | None) -> dict[str, Any]:
    """`next` left out where it is the following step, `next: end` kept after the last one for clarity."""
    if step.get("next") is not None and step["next"] == following:
        step = {k: v for k, v in step.items() if k != "next"}
    return step


def journey_document(source: dict[str, Any], journey_id: str) -> dict[str, Any]:
    """The YAML document (as data, with `#` comment lists) of a Pinpoint journey; InvalidInput when refused."""
    if not isinstance(source, dict):
        raise refuse("WriteJourneyRequest", "a journey is a JSON object")
    j = _Journey(source)
    doc = j.build(journey_id)
    header = [f"Converted from the Pinpoint journey {source.get('Id') or journey_id!r} "
              f"({source.get('Name') or 'no name'}) by `tidings pinpoint convert`."]
    if source.get("State") not in (None, "DRAFT"):
        header.append(f"Pinpoint state {source['State']}: activate it with `tidings apply --activate`.")
    return {"#": header + j.comments, **doc}


def journey_yaml(source: dict[str, Any], journey_id: str) -> str:
    """The YAML text of a Pinpoint journey (InvalidInput naming the member when Tidings cannot run it)."""
    return dump(journey_document(source, journey_id))


# ---- a small YAML writer: block mappings and lists, flow JSON for rules and short maps --------------

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
_RESERVED = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


def scalar(value: Any) -> str:
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _RESERVED:
            return value
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False)


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{scalar(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return scalar(value)


FLOW_KEYS = {"endpoint_types", "filter", "when", "message_event", "quiet_hours", "frequency_cap", "entry", "holdout"}


def _comment(text: str) -> str:
    """One comment line: a line break in a value from the JSON would end the comment and start YAML."""
    return " ".join(str(text).split())


def _block(value: dict[str, Any], indent: int, out: list[str], first_prefix: str | None = None) -> None:
    pad = " " * indent
    first = True
    for comment in value.get("#", []):
        out.append(f"{first_prefix if first and first_prefix else pad}# {_comment(comment)}")
        first = False
    for key, item in value.items():
        if key == "#":
            continue
        lead = first_prefix if first and first_prefix else pad
        first = False
        flow = key in FLOW_KEYS and not (key == "entry" and indent == 0)  # the journey's entry reads as a block
        if isinstance(item, dict) and item and not flow and not _short(item):
            out.append(f"{lead}{scalar(key)}:")
            _block(item, indent + 2, out)
        elif isinstance(item, list) and item and all(isinstance(i, dict) for i in item) and key != "branches":
            out.append(f"{lead}{scalar(key)}:")
            for i in item:
                out.extend(f"{' ' * (indent + 2)}# {_comment(c)}" for c in i.get("#", []))
                _block({k: v for k, v in i.items() if k != "#"}, indent + 4, out,
                       first_prefix=" " * (indent + 2) + "- ")
        elif isinstance(item, list) and key == "branches":
            out.append(f"{lead}{scalar(key)}:")
            for i in item:
                out.append(f"{' ' * (indent + 2)}- {_flow(i)}")
        else:
            out.append(f"{lead}{scalar(key)}: {_flow(item)}")


def _short(value: dict[str, Any]) -> bool:
    return len(_flow(value)) <= 60 and not any(isinstance(v, (dict, list)) and v for v in value.values()) \
        and "#" not in value


def dump(doc: dict[str, Any]) -> str:
    out: list[str] = []
    _block(doc, 0, out)
    return "\n".join(out) + "\n"
