"""A Pinpoint campaign (WriteCampaignRequest) as a Tidings journey: a campaign is a broadcast journey.

The campaign becomes the Pinpoint journey it amounts to (a SegmentStartCondition over its SegmentId, a
Holdout activity for HoldoutPercent, a RandomSplit over the default treatment and its AdditionalTreatments
by SizePercent, then one message activity per channel of each treatment), and that journey goes through the
journey translator (to_yaml), so QuietTime, Limits and the start time read exactly as a journey's do.
Inline MessageConfiguration content has no template to name: it becomes a template of its own per campaign,
treatment and channel (`campaign-<id>-email`, `campaign-<id>-t1-sms`), returned here for the caller to store.

The request itself is kept as the first line of the journey's YAML (`# pinpoint-campaign: {...}`), so each
campaign version is the journey version of the same number and reads back as it was written.
What Tidings cannot run is refused with InvalidInput naming the member, never dropped.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from tidings.engine.journeys.pinpoint.to_yaml import custom_channel, dump, instant, journey_document, refuse
from tidings.engine.platform.errors import InvalidInput

MARKER = "# pinpoint-campaign: "
# A start time a little in the past is a client's "now" that took a moment to arrive: it starts at once.
PAST_GRACE = timedelta(minutes=15)
CHANNEL_ORDER = ("EMAIL", "SMS", "VOICE", "PUSH", "CUSTOM")
TEMPLATE_MEMBERS = {"EmailTemplate": "EMAIL", "SMSTemplate": "SMS", "VoiceTemplate": "VOICE", "PushTemplate": "PUSH"}
MESSAGE_MEMBERS = {"EmailMessage": "EMAIL", "SMSMessage": "SMS"}
UNSUPPORTED_MESSAGES = {
    "ADMMessage": "Amazon Device Messaging", "APNSMessage": "APNs push", "BaiduMessage": "Baidu push",
    "GCMMessage": "FCM push", "InAppMessage": "in-app",
}
CAMPAIGN_MEMBERS = {
    "AdditionalTreatments", "CustomDeliveryConfiguration", "Description", "HoldoutPercent", "Hook", "IsPaused",
    "Limits", "MessageConfiguration", "Name", "Schedule", "SegmentId", "SegmentVersion", "tags",
    "TemplateConfiguration", "TreatmentDescription", "TreatmentName", "Priority"}
TREATMENT_MEMBERS = {"CustomDeliveryConfiguration", "MessageConfiguration", "Schedule", "SizePercent",
                     "TemplateConfiguration", "TreatmentDescription", "TreatmentName"}
SCHEDULE_MEMBERS = {"EndTime", "EventFilter", "Frequency", "IsLocalTime", "QuietTime", "StartTime", "Timezone"}
PERIODS = {"HOURLY": timedelta(hours=1), "DAILY": timedelta(days=1), "WEEKLY": timedelta(days=7),
           "MONTHLY": timedelta(days=28)}  # the shortest month: a StartTime within it is its next occurrence
PERIOD_WORDS = {"HOURLY": "hour", "DAILY": "day", "WEEKLY": "week", "MONTHLY": "28 days"}
FREQUENCIES = ("ONCE", "EVENT", *PERIODS)


class InlineTemplate(msgspec.Struct, frozen=True, kw_only=True):
    """A template a campaign's inline message becomes: its id, channel, parts and default substitutions."""

    id: str
    channel: str
    parts: dict[str, str]
    defaults: dict[str, Any]
    field: str  # the request member it comes from, for errors about its content


class CampaignJourney(msgspec.Struct, frozen=True, kw_only=True):
    yaml: str
    templates: list[InlineTemplate]
    segment_id: str
    treatments: int  # how many treatments (the default one and the additional ones)
    frequency: str  # Schedule.Frequency


def _empty(value: Any) -> bool:
    return value in (None, "", {}, [])


def _check(body: dict[str, Any], where: str, allowed: set[str]) -> None:
    for key, value in body.items():
        if key not in allowed and not _empty(value):
            raise refuse(f"{where}{key}", "not a member Tidings reads here")


def _inline(config: dict[str, Any], channel: str, where: str, template_id: str) -> InlineTemplate:
    default = config.get("DefaultMessage") or {}  # a Message: its Title and Body stand in for missing ones
    _check(default, f"{where}.DefaultMessage.", {"Body", "Title"})
    if channel == "EMAIL":
        member = f"{where}.EmailMessage"
        email = config["EmailMessage"]
        _check(email, member + ".", {"Body", "FromAddress", "HtmlBody", "Title"})
        parts = {"subject": email.get("Title") or default.get("Title"), "text": email.get("Body") or default.get("Body"),
                 "html": email.get("HtmlBody")}
        if not parts["subject"]:
            raise refuse(f"{member}.Title", "an email campaign needs its subject (Title, or DefaultMessage.Title)")
        if not (parts["text"] or parts["html"]):
            raise refuse(f"{member}.Body", "an email campaign needs a Body or an HtmlBody (or DefaultMessage.Body)")
    else:
        member = f"{where}.SMSMessage"
        sms = config["SMSMessage"]
        _check(sms, member + ".", {"Body", "MessageType", "OriginationNumber", "SenderId", "EntityId", "TemplateId"})
        parts = {"body": sms.get("Body") or default.get("Body")}
        if not parts["body"]:
            raise refuse(f"{member}.Body", "an SMS campaign needs its Body (or DefaultMessage.Body)")
    return InlineTemplate(id=template_id, channel=channel, parts={k: v for k, v in parts.items() if v},
                          defaults={}, field=member)


def _sends(treatment: dict[str, Any], where: str, campaign_id: str, tag: str,
           templates: list[InlineTemplate]) -> list[tuple[str, dict[str, Any]]]:
    """(channel, message activity body) for each channel the treatment sends on, in CHANNEL_ORDER."""
    config = treatment.get("MessageConfiguration") or {}
    chosen = treatment.get("TemplateConfiguration") or {}
    _check(config, f"{where}MessageConfiguration.", set(MESSAGE_MEMBERS) | {"CustomMessage", "DefaultMessage"}
           | set(UNSUPPORTED_MESSAGES))
    _check(chosen, f"{where}TemplateConfiguration.", set(TEMPLATE_MEMBERS) | {"InAppTemplate"})
    for member, what in UNSUPPORTED_MESSAGES.items():
        if not _empty(config.get(member)):
            raise refuse(f"{where}MessageConfiguration.{member}", f"Tidings campaigns do not send {what} messages")
    if not _empty(chosen.get("InAppTemplate")):
        raise refuse(f"{where}TemplateConfiguration.InAppTemplate", "Tidings has no in-app channel")
    by_channel: dict[str, dict[str, Any]] = {}
    for member, channel in TEMPLATE_MEMBERS.items():
        template = chosen.get(member)
        if _empty(template):
            continue
        field = f"{where}TemplateConfiguration.{member}"
        _check(template, field + ".", {"Name", "Version"})
        if not template.get("Name"):
            raise refuse(f"{field}.Name", "names the template to send")
        if not _empty(template.get("Version")):
            raise refuse(f"{field}.Version", "a campaign sends the template's active version in Tidings "
                                             "(UpdateTemplateActiveVersion chooses it)")
        by_channel[channel] = {"TemplateName": template["Name"]}
    for member, channel in MESSAGE_MEMBERS.items():
        if _empty(config.get(member)):
            continue
        if channel in by_channel:
            raise refuse(f"{where}MessageConfiguration.{member}", f"the {channel} channel already sends the template "
                                                                  f"of TemplateConfiguration; give one of the two")
        inline = _inline(config, channel, f"{where}MessageConfiguration".rstrip("."),
                         f"campaign-{campaign_id}{tag}-{channel.lower()}")
        templates.append(inline)
        by_channel[channel] = {"TemplateName": inline.id}
    custom = _custom_delivery(treatment, config, where)
    if custom is not None:
        by_channel["CUSTOM"] = custom
    if not by_channel:
        missing = f"{where}MessageConfiguration"
        if not _empty(config.get("DefaultMessage")):
            raise refuse(f"{missing}.DefaultMessage", "Tidings sends a campaign on the channels it has an "
                                                      "EmailMessage, SMSMessage or template for; DefaultMessage only "
                                                      "fills in their Body")
        raise refuse(missing, "the campaign sends nothing: give an EmailMessage or SMSMessage, or a "
                              "TemplateConfiguration template")
    return [(c, by_channel[c]) for c in CHANNEL_ORDER if c in by_channel]


def _custom_delivery(treatment: dict[str, Any], config: dict[str, Any], where: str) -> dict[str, Any] | None:
    """CustomDeliveryConfiguration and MessageConfiguration.CustomMessage as the body of a CUSTOM activity."""
    delivery = treatment.get("CustomDeliveryConfiguration")
    message = config.get("CustomMessage")
    if _empty(delivery):
        if not _empty(message):
            raise refuse(f"{where}CustomDeliveryConfiguration", "a CustomMessage is sent to the webhook its "
                                                                "CustomDeliveryConfiguration.DeliveryUri names")
        return None
    field = f"{where}CustomDeliveryConfiguration"
    _check(delivery, field + ".", {"DeliveryUri", "EndpointTypes"})
    _check(message or {}, f"{where}MessageConfiguration.CustomMessage.", {"Data"})
    data = (message or {}).get("Data")
    if data is not None and not isinstance(data, str):
        raise refuse(f"{where}MessageConfiguration.CustomMessage.Data", "a string (the payload's Data)")
    body = {"DeliveryUri": delivery.get("DeliveryUri"), "EndpointTypes": delivery.get("EndpointTypes") or [],
            **({"MessageConfig": {"Data": data}} if data else {})}
    custom_channel(body, field)  # refused here, naming the campaign's members
    return body


def _name_treatments(doc: dict[str, Any]) -> None:
    """A treatment's custom channel (step `custom`, `custom-t1`, ...) names the campaign and its treatment in
    its payload."""
    for step in doc["steps"]:
        if "custom_channel" in step:
            step["custom_channel"]["campaign_treatment"] = step["id"].partition("-t")[2] or "0"


def _when(start: Any, field: str) -> tuple[str, datetime]:
    at = instant(start, field)
    return at, datetime.fromisoformat(at.replace("Z", "+00:00"))


def _event_start(request: dict[str, Any], schedule: dict[str, Any], journey: dict[str, Any], now: datetime) -> None:
    start, local = schedule.get("StartTime"), bool(schedule.get("IsLocalTime"))
    event_filter = schedule.get("EventFilter")
    if _empty(event_filter):
        raise refuse("Schedule.EventFilter", "a campaign of Frequency EVENT is sent on the events it filters")
    if start != "IMMEDIATE" and _when(start, "Schedule.StartTime")[1] > now + PAST_GRACE:
        raise refuse("Schedule.StartTime", "an EVENT campaign listens from its creation in Tidings; give "
                                           "IMMEDIATE (or create it at that time)")
    if local:
        raise refuse("Schedule.IsLocalTime", "an EVENT campaign sends when the event arrives")
    journey["StartCondition"] = {"EventStartCondition": {"EventFilter": event_filter,
                                                         "SegmentId": request.get("SegmentId")}}
    journey.setdefault("Limits", {})["EndpointReentryCap"] = 0  # each matching event sends again


def _recurring_cron(frequency: str, schedule: dict[str, Any], journey: dict[str, Any], now: datetime) -> str:
    """The cron expression a recurring campaign's broadcast fires on: its StartTime's minute, hour, weekday or day."""
    start, local = schedule.get("StartTime"), bool(schedule.get("IsLocalTime"))
    if start == "IMMEDIATE":
        raise refuse("Schedule.StartTime", f"a {frequency} campaign needs the date-time of its first run, "
                                           "which sets the time of day (and day) it repeats at")
    text, at = _when(start, "Schedule.StartTime")
    if at > now + PERIODS[frequency]:
        raise refuse("Schedule.StartTime", f"Tidings starts a {frequency} campaign at the next occurrence "
                                           f"of its StartTime from now; give one within the coming "
                                           f"{PERIOD_WORDS[frequency]} (or create it later)")
    if at.second:
        raise refuse("Schedule.StartTime", "a recurring campaign repeats on the minute; give a StartTime "
                                           "with 0 seconds")
    wall = datetime.fromisoformat(text[:16]) if local else at.astimezone(UTC)
    cron = {"HOURLY": f"{wall.minute} * * * *", "DAILY": f"{wall.minute} {wall.hour} * * *",
            "WEEKLY": f"{wall.minute} {wall.hour} * * {wall.isoweekday() % 7}",
            "MONTHLY": f"{wall.minute} {wall.hour} {wall.day} * *"}[frequency]
    journey.setdefault("Limits", {})["EndpointReentryCap"] = 0  # every run sends to the members again
    return cron


def _schedule(request: dict[str, Any], journey: dict[str, Any], now: datetime) -> tuple[str, str | None]:
    """Schedule onto the journey's start (StartCondition, Schedule, LocalTime, QuietTime); returns the
    Frequency and, for a recurring one, the cron expression of its broadcast."""
    schedule = request.get("Schedule")
    if _empty(schedule):
        raise refuse("Schedule", "a campaign needs its Schedule (StartTime IMMEDIATE, or a date-time)")
    _check(schedule, "Schedule.", SCHEDULE_MEMBERS)
    frequency = schedule.get("Frequency") or "ONCE"
    if frequency not in FREQUENCIES:
        raise refuse("Schedule.Frequency", f"Tidings runs campaigns of Frequency {', '.join(FREQUENCIES)}; "
                                           f"got {frequency}")
    if frequency != "EVENT" and not _empty(schedule.get("EventFilter")):
        raise refuse("Schedule.EventFilter", "an event filter belongs to a campaign of Frequency EVENT")
    start = schedule.get("StartTime")
    if not start:
        raise refuse("Schedule.StartTime", "IMMEDIATE, or the ISO 8601 date-time the campaign starts")
    if not _empty(schedule.get("EndTime")):  # the journey's settings.ends_at: no run (or event) sends from then on
        end = _when(schedule["EndTime"], "Schedule.EndTime")[1]
        if end <= now:
            raise refuse("Schedule.EndTime", f"{schedule['EndTime']} has passed: the campaign would send nothing")
        if start != "IMMEDIATE" and end <= _when(start, "Schedule.StartTime")[1]:
            raise refuse("Schedule.EndTime", f"{schedule['EndTime']} is not after Schedule.StartTime {start}")
        journey["Schedule"] = {"EndTime": schedule["EndTime"]}
    local = bool(schedule.get("IsLocalTime"))
    cron = None
    if frequency == "ONCE" and start != "IMMEDIATE":
        _, at = _when(start, "Schedule.StartTime")
        if at < now - PAST_GRACE:
            raise refuse("Schedule.StartTime", f"{start} has passed; give IMMEDIATE or a time to come")
        journey["Schedule"] = {**journey.get("Schedule", {}), "StartTime": start}
        if schedule.get("Timezone"):
            journey["Schedule"]["Timezone"] = schedule["Timezone"]
        journey["LocalTime"] = local
    elif frequency == "EVENT":
        _event_start(request, schedule, journey, now)
    elif frequency in PERIODS:
        cron = _recurring_cron(frequency, schedule, journey, now)
    elif local:
        raise refuse("Schedule.IsLocalTime", "an IMMEDIATE campaign has no time to read in each customer's zone")
    quiet = schedule.get("QuietTime") or {}
    if not _empty(quiet):
        _check(quiet, "Schedule.QuietTime.", {"Start", "End"})
        # a campaign's message due in quiet time is not sent (Pinpoint's campaigns skip it)
        journey["QuietTime"] = {"Start": quiet.get("Start"), "End": quiet.get("End")}
    return frequency, cron


def _limits(request: dict[str, Any], journey: dict[str, Any]) -> None:
    limits = request.get("Limits") or {}
    _check(limits, "Limits.", {"Daily", "Total", "MessagesPerSecond", "MaximumDuration", "Session"})
    if not _empty(limits.get("MaximumDuration")):
        raise refuse("Limits.MaximumDuration", "Tidings does not stop a campaign after a number of seconds; a "
                                               "broadcast runs until every customer has been sent to")
    if not _empty(limits.get("Session")):
        raise refuse("Limits.Session", "in-app messages per session: Tidings has no in-app channel")
    mapped = {"Daily": "DailyCap", "Total": "TotalCap", "MessagesPerSecond": "MessagesPerSecond"}
    out = {mapped[k]: v for k, v in limits.items() if k in mapped and v}
    if out:
        journey["Limits"] = {**journey.get("Limits", {}), **out}


# the journey translator's member names -> the campaign's
JOURNEY_FIELDS = {"QuietTime": "Schedule.QuietTime", "WaitForQuietTime": "Schedule.QuietTime",
                  "LocalTime": "Schedule.IsLocalTime", "Schedule.": "Schedule.", "Limits.DailyCap": "Limits.Daily",
                  "Limits.TotalCap": "Limits.Total", "Limits.MessagesPerSecond": "Limits.MessagesPerSecond",
                  "StartCondition.SegmentStartCondition.SegmentId": "SegmentId"}


def _as_campaign_field(exc: InvalidInput, journey: dict[str, Any]) -> InvalidInput:
    """A refusal of the journey translator, naming the campaign's member instead of the journey's."""
    field = exc.field or ""
    message = exc.message.removeprefix(f"{field}: ") if field else exc.message
    for theirs, ours in JOURNEY_FIELDS.items():
        if field == theirs or theirs.endswith(".") and field.startswith(theirs):
            field = ours + field[len(theirs):] if theirs.endswith(".") else ours
            break
    else:
        if field.startswith("Activities."):  # a message activity: its template
            act = field.split(".")[1]
            body: Any = next(iter((journey["Activities"].get(act) or {}).values()), {})
            name = body.get("TemplateName") if isinstance(body, dict) else None
            field = f"TemplateConfiguration ({name})" if name and not name.startswith("campaign-") else \
                "MessageConfiguration" if name else "WriteCampaignRequest"
        elif not field:
            field = "WriteCampaignRequest"
    return InvalidInput(f"{field}: {message}", field=field)


def _treatment_shares(request: dict[str, Any]) -> list[int]:
    """The percentage of each treatment, the default one first: AdditionalTreatments' SizePercent, and the rest."""
    sizes = []
    for i, t in enumerate(request.get("AdditionalTreatments") or []):
        where = f"AdditionalTreatments[{i}]."
        if not isinstance(t, dict):
            raise refuse(where.rstrip("."), "a treatment is a JSON object")
        _check(t, where, TREATMENT_MEMBERS)
        size = t.get("SizePercent")
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 99:
            raise refuse(f"{where}SizePercent", f"a percentage from 1 to 99, got {size!r}")
        if not _empty(t.get("Schedule")) and t["Schedule"] != request.get("Schedule"):
            raise refuse(f"{where}Schedule", "every treatment runs on the campaign's Schedule in Tidings")
        sizes.append(size)
    if sum(sizes) >= 100:
        raise refuse("AdditionalTreatments", f"their SizePercent add up to {sum(sizes)}; the campaign's own "
                                             "treatment needs the rest (at least 1)")
    return [100 - sum(sizes), *sizes]


def campaign_journey(request: dict[str, Any], campaign_id: str, *, now: datetime | None = None) -> CampaignJourney:
    """The journey YAML of a WriteCampaignRequest, and the inline templates it sends; InvalidInput (its field a
    member of the request, with a prefix of the journey translator's own names where those apply) when
    Tidings cannot run it."""
    if not isinstance(request, dict):
        raise refuse("WriteCampaignRequest", "a campaign is a JSON object")
    _check(request, "", CAMPAIGN_MEMBERS)
    if not _empty(request.get("Hook")):
        raise refuse("Hook", "Tidings runs no Lambda function or web hook on a campaign's audience")
    if request.get("Priority") is not None:
        raise refuse("Priority", "the priority of in-app messages: Tidings has no in-app channel")
    name = (request.get("Name") or "").strip()
    if len(name) > 255:
        raise refuse("Name", "at most 255 characters")
    segment = request.get("SegmentId")
    if not segment:
        raise refuse("SegmentId", "names the segment the campaign is sent to")
    journey: dict[str, Any] = {"Name": name or campaign_id,
                               "StartCondition": {"SegmentStartCondition": {"SegmentId": segment}}}
    frequency, cron = _schedule(request, journey, now or datetime.now(UTC))
    _limits(request, journey)

    templates: list[InlineTemplate] = []
    treatments = [("", "", request)] + [
        (f"AdditionalTreatments[{i}].", f"-t{i + 1}", t) for i, t in enumerate(request.get("AdditionalTreatments") or [])]
    shares = _treatment_shares(request)
    activities: dict[str, Any] = {}
    firsts: list[str] = []
    for where, tag, treatment in treatments:
        sends = _sends(treatment, where, campaign_id, tag, templates)
        ids = [f"{channel.lower()}{tag}" for channel, _ in sends]
        for i, (channel, body) in enumerate(sends):
            activities[ids[i]] = {channel: {**body, **({"NextActivity": ids[i + 1]} if i + 1 < len(ids) else {})}}
        firsts.append(ids[0])
    first = firsts[0]
    if len(firsts) > 1:  # the A/B split: the default treatment (A) gets what the others leave
        activities = {"treatments": {"RandomSplit": {"Branches": [
            {"Percentage": share, "NextActivity": firsts[i]} for i, share in enumerate(shares)]}}, **activities}
        first = "treatments"
    holdout = request.get("HoldoutPercent")
    if holdout:
        if not isinstance(holdout, int) or not 0 < holdout < 100:
            raise refuse("HoldoutPercent", f"a percentage from 1 to 99, got {holdout!r}")
        activities = {"holdout": {"Holdout": {"Percentage": holdout, "NextActivity": first}}, **activities}
        first = "holdout"
    journey["StartActivity"] = first
    journey["Activities"] = activities

    try:
        doc = journey_document(journey, campaign_id)
    except InvalidInput as exc:
        raise _as_campaign_field(exc, journey) from None
    _name_treatments(doc)
    if cron is not None:
        local = bool(request["Schedule"].get("IsLocalTime"))
        doc["entry"]["broadcast"] = {"segment": doc["entry"]["broadcast"]["segment"], "cron": cron,
                                     **({"timezone": "customer"} if local else {})}
        doc["#"].append(f"Schedule.Frequency {frequency} from {request['Schedule']['StartTime']}"
                        + (", in each customer's zone" if local else " (UTC)"))
    doc["#"] = [f"The Pinpoint campaign {campaign_id} ({name or 'no name'}), run as a journey "
                "(api/pinpoint/campaigns.py). The line above is the campaign as written; edit the campaign "
                "through the Pinpoint API."] + [
        c.replace("Limits.DailyCap", "Limits.Daily").replace("Limits.TotalCap", "Limits.Total")
        for c in doc["#"][1:] if not c.startswith("Pinpoint state")]
    # `tags` are not the campaign's definition: the API keeps them as resource tags (tidings.engine.workspaces.tags)
    written = {k: v for k, v in request.items() if k != "tags"}
    marker = MARKER + json.dumps(written, ensure_ascii=True, separators=(",", ":"), sort_keys=True)
    return CampaignJourney(yaml=marker + "\n" + dump(doc), templates=templates, segment_id=segment,
                           treatments=len(treatments), frequency=frequency)


def activity_id(campaign_id: str, version: int) -> str:
    """The id of a campaign's activity (GetCampaignActivities): one per campaign version that ran, 32 hex
    digits like Pinpoint's, the campaign's first 24 and the version's 8."""
    return f"{campaign_id[:24]}{version:08x}"


def campaign_of(yaml_text: str | None) -> dict[str, Any] | None:
    """The WriteCampaignRequest a journey version was made from, or None when the journey is not a campaign."""
    if not yaml_text or not yaml_text.startswith(MARKER):
        return None
    first = yaml_text.split("\n", 1)[0]
    try:
        found = json.loads(first[len(MARKER):])
    except ValueError:
        return None
    return found if isinstance(found, dict) else None
