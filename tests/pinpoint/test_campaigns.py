"""Campaigns through boto3: a campaign is a broadcast journey. CreateCampaign with Schedule ONCE IMMEDIATE mails
each segment member once (a real worker on the session's Temporal dev server, both task queues, a real SMTP
server) with the campaign's own content, the campaign reads back COMPLETED, is listed at /v1/journeys,
belongs to its workspace only, and what Tidings cannot run is refused naming the member, with nothing written."""
from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from tidings.engine.platform.db import make_engine
from tests.messaging.conftest import smtp_sink  # noqa: F401  (a real SMTP server, the default EMAIL channel)
from tests.pinpoint.conftest import client_for, make_key, temporal_settings
from tests.eventually import aeventually


@pytest.fixture
def settings(tmp_path, database_url, temporal_env, smtp_sink):  # noqa: F811  (the sink's settings come first)
    return temporal_settings(tmp_path, database_url, temporal_env)



def _error(call) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value


def _people(pinpoint, users) -> str:
    """Email endpoints for `users` (name, plan); the id of a segment of the pro plan."""
    for user, plan in users:
        pinpoint.update_endpoint(ApplicationId="acme", EndpointId=f"{user}-mail", EndpointRequest={
            "ChannelType": "EMAIL", "Address": f"{user}@example.com",
            "User": {"UserId": user, "UserAttributes": {"plan": [plan], "first": [user.title()]}}})
    return pinpoint.create_segment(ApplicationId="acme", WriteSegmentRequest={
        "Name": "Pro", "Dimensions": {"UserAttributes": {"plan": {"AttributeType": "INCLUSIVE", "Values": ["pro"]}}}}
    )["SegmentResponse"]["Id"]


def _mail_campaign(segment_id: str, **changes) -> dict:
    return {"Name": "Spring sale", "Description": "20% off for pro customers", "SegmentId": segment_id,
            "Schedule": {"StartTime": "IMMEDIATE", "Frequency": "ONCE"},
            "MessageConfiguration": {"EmailMessage": {
                "Title": "Spring sale, {{User.UserAttributes.first}}",
                "Body": "Hello {{User.UserAttributes.first}} ({{User.UserId}}), code SPRING20"}}, **changes}


async def test_a_once_immediate_campaign_mails_each_member_once_and_completes(smtp_sink, running_api, pinpoint,  # noqa: F811
                                                                               native, worker):
    call = asyncio.to_thread
    users = [(f"u{i:02d}", "pro") for i in range(12)] + [("dan", "free")]
    segment = await call(_people, pinpoint, users)
    created = (await call(pinpoint.create_campaign, ApplicationId="acme",
                          WriteCampaignRequest=_mail_campaign(segment)))["CampaignResponse"]
    campaign_id = created["Id"]
    assert len(campaign_id) == 32 and created["ApplicationId"] == "acme" and created["Version"] == 1
    assert created["Arn"].endswith(f":apps/acme/campaigns/{campaign_id}")
    assert created["Name"] == "Spring sale" and created["Description"] == "20% off for pro customers"
    assert created["SegmentId"] == segment and created["SegmentVersion"] == 1 and created["IsPaused"] is False
    assert created["State"]["CampaignStatus"] in ("SCHEDULED", "EXECUTING", "COMPLETED")
    assert created["MessageConfiguration"]["EmailMessage"]["Title"] == "Spring sale, {{User.UserAttributes.first}}"

    pro = sorted(f"{u}@example.com" for u, plan in users if plan == "pro")
    assert await aeventually(lambda: len(smtp_sink.mails) >= len(pro), 60, every=0.2, threaded=True)
    await asyncio.sleep(2)  # any mail that must not come
    assert sorted(r for _, rcpts, _ in smtp_sink.mails for r in rcpts) == pro  # one each; dan is on the free plan
    mail = smtp_sink.to("u03@example.com")[0]
    assert mail["Subject"] == "Spring sale, U03"
    assert "Hello U03 (u03), code SPRING20" in mail.get_body(("plain",)).get_content()

    def completed():
        got = pinpoint.get_campaign(ApplicationId="acme", CampaignId=campaign_id)["CampaignResponse"]
        return got if got["State"]["CampaignStatus"] == "COMPLETED" else None
    assert await aeventually(completed, 30, every=0.2, threaded=True)

    listed = native.get("/v1/journeys").json()
    assert [(j["id"], j["name"], j["status"]) for j in listed] == [(campaign_id, "Spring sale", "active")]
    assert "broadcast" in native.get(f"/v1/journeys/{campaign_id}").json()["yaml"]
    campaigns = (await call(pinpoint.get_campaigns, ApplicationId="acme"))["CampaignsResponse"]["Item"]
    assert [c["Id"] for c in campaigns] == [campaign_id]
    assert (await call(pinpoint.list_journeys, ApplicationId="acme"))["JourneysResponse"]["Item"] == []
    as_journey = _error(lambda: pinpoint.get_journey(ApplicationId="acme", JourneyId=campaign_id))
    assert as_journey.response["Error"]["Code"] == "NotFoundException"

    def kpi(name: str, campaign: str = campaign_id):
        return pinpoint.get_campaign_date_range_kpi(ApplicationId="acme", CampaignId=campaign, KpiName=name)[
            "CampaignDateRangeKpiResponse"]
    sent = await call(kpi, "attempted-deliveries")  # the campaign's KPIs are its journey's messages
    assert sent["CampaignId"] == campaign_id and sent["KpiName"] == "attempted-deliveries"
    assert [v["Value"] for row in sent["KpiResult"]["Rows"] for v in row["Values"]] == ["12.0"]
    assert _error(lambda: kpi("journey-emails-sent")).response["Error"]["Code"] == "BadRequestException"
    assert _error(lambda: kpi("attempted-deliveries", "nosuchcampaign")).response["Error"]["Code"] == \
        "NotFoundException"

    deleted = (await call(pinpoint.delete_campaign, ApplicationId="acme", CampaignId=campaign_id))["CampaignResponse"]
    assert deleted["Id"] == campaign_id and deleted["State"]["CampaignStatus"] == "DELETED"
    gone = _error(lambda: pinpoint.get_campaign(ApplicationId="acme", CampaignId=campaign_id))
    assert gone.response["Error"]["Code"] == "NotFoundException"
    assert native.get("/v1/journeys").json() == []
    assert not [t for t in native.get("/v1/templates").json()["items"] if campaign_id in t["id"]]
    assert len(smtp_sink.mails) == len(pro)  # deleting sent nothing more


def test_a_campaign_at_a_later_time_is_scheduled_and_a_paused_one_waits(running_api, pinpoint, native):
    segment = _people(pinpoint, [("ann", "pro")])
    later = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    scheduled = pinpoint.create_campaign(ApplicationId="acme", WriteCampaignRequest=_mail_campaign(
        segment, Schedule={"StartTime": later, "Frequency": "ONCE"}))["CampaignResponse"]
    assert scheduled["State"]["CampaignStatus"] == "SCHEDULED" and scheduled["Schedule"]["StartTime"] == later
    assert f"at: \"{later}\"" in native.get(f"/v1/journeys/{scheduled['Id']}").json()["yaml"] or \
        f"at: {later}" in native.get(f"/v1/journeys/{scheduled['Id']}").json()["yaml"]
    paused = pinpoint.create_campaign(ApplicationId="acme", WriteCampaignRequest=_mail_campaign(
        segment, IsPaused=True, Name="Held"))["CampaignResponse"]
    assert paused["State"]["CampaignStatus"] == "PAUSED" and paused["IsPaused"] is True
    assert native.get(f"/v1/journeys/{paused['Id']}").json()["status"] == "draft"


def test_a_template_campaign_names_a_stored_template(running_api, pinpoint, native):
    segment = _people(pinpoint, [("ann", "pro")])
    pinpoint.create_email_template(TemplateName="spring", EmailTemplateRequest={"Subject": "Hi", "TextPart": "Sale"})
    request = {"Name": "From a template", "SegmentId": segment, "IsPaused": True,
               "Schedule": {"StartTime": "IMMEDIATE"}, "TemplateConfiguration": {"EmailTemplate": {"Name": "spring"}}}
    created = pinpoint.create_campaign(ApplicationId="acme", WriteCampaignRequest=request)["CampaignResponse"]
    assert created["TemplateConfiguration"] == {"EmailTemplate": {"Name": "spring"}}
    assert "template: spring" in native.get(f"/v1/journeys/{created['Id']}").json()["yaml"]
    missing = _error(lambda: pinpoint.create_campaign(ApplicationId="acme", WriteCampaignRequest={
        **request, "TemplateConfiguration": {"SMSTemplate": {"Name": "nope"}},
        "MessageConfiguration": {"EmailMessage": {"Title": "Hi", "Body": "Sale"}}}))
    assert missing.response["Error"]["Code"] == "BadRequestException"
    assert missing.response["Error"]["Message"].startswith("TemplateConfiguration.SMSTemplate.Name: no template 'nope'")
    assert [t["id"] for t in native.get("/v1/templates").json()["items"]] == ["spring"]  # the inline one not kept
    assert len(native.get("/v1/journeys").json()) == 1


def test_what_a_campaign_cannot_run_is_refused_naming_the_member(running_api, pinpoint, native):
    segment = _people(pinpoint, [("ann", "pro")])
    good = _mail_campaign(segment)
    soon = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for changes, member in (
            ({"CustomDeliveryConfiguration": {"DeliveryUri": "arn:aws:lambda:us-east-1:1:function:f"}},
             "CustomDeliveryConfiguration"),
            ({"Limits": {"MaximumDuration": 60}}, "Limits.MaximumDuration"),
            ({"Limits": {"MessagesPerSecond": 50}}, "Limits.MessagesPerSecond"),
            ({"Hook": {"WebUrl": "https://example.com/hook"}}, "Hook"),
            ({"SegmentId": "no-such-segment"}, "SegmentId"),
            ({"SegmentVersion": 7}, "SegmentVersion"),
            ({"Schedule": {"StartTime": soon, "Frequency": "ONCE"}}, "Schedule.StartTime"),
            ({"Schedule": {"StartTime": "IMMEDIATE", "QuietTime": {"Start": "22:00"}}}, "Schedule.QuietTime"),
            ({"MessageConfiguration": {"GCMMessage": {"Body": "hi"}}}, "MessageConfiguration.GCMMessage"),
            ({"MessageConfiguration": {"EmailMessage": {"Body": "no subject"}}},
             "MessageConfiguration.EmailMessage.Title"),
            ({"MessageConfiguration": {"EmailMessage": {"Title": "Hi", "Body": "{% if %}"}}},
             "MessageConfiguration.EmailMessage.Body"),
            ({"TemplateConfiguration": {"EmailTemplate": {"Name": "x", "Version": "2"}}},
             "TemplateConfiguration.EmailTemplate.Version"),
            ({"MessageConfiguration": {}}, "MessageConfiguration")):
        refused = _error(lambda changes=changes: pinpoint.create_campaign(
            ApplicationId="acme", WriteCampaignRequest={**good, **changes}))
        assert refused.response["Error"]["Code"] == "BadRequestException", (member, refused)
        assert refused.response["Error"]["Message"].startswith(member), (member, refused.response["Error"]["Message"])
    assert pinpoint.get_campaigns(ApplicationId="acme")["CampaignsResponse"]["Item"] == []
    assert native.get("/v1/journeys").json() == []
    assert not [t for t in native.get("/v1/templates").json()["items"] if t["id"].startswith("campaign-")]


def test_another_workspace_cannot_see_a_campaign(running_api, pinpoint):
    segment = _people(pinpoint, [("ann", "pro")])
    created = pinpoint.create_campaign(ApplicationId="acme", WriteCampaignRequest=_mail_campaign(
        segment, IsPaused=True))["CampaignResponse"]
    globex = client_for(running_api, make_key(running_api.database_url, "globex"))
    for app in ("globex", "acme"):
        hidden = _error(lambda app=app: globex.get_campaign(ApplicationId=app, CampaignId=created["Id"]))
        assert hidden.response["Error"]["Code"] == "NotFoundException"
    assert globex.get_campaigns(ApplicationId="globex")["CampaignsResponse"]["Item"] == []
    kept = _error(lambda: globex.delete_campaign(ApplicationId="globex", CampaignId=created["Id"]))
    assert kept.response["Error"]["Code"] == "NotFoundException"
    assert pinpoint.get_campaign(ApplicationId="acme", CampaignId=created["Id"])["CampaignResponse"]["Id"] == created["Id"]


async def test_updates_are_versions_and_each_run_is_an_activity(smtp_sink, running_api, pinpoint,  # noqa: F811
                                                                native, worker):
    call = asyncio.to_thread
    users = [("ann", "pro"), ("bob", "pro"), ("cat", "pro")]
    segment = await call(_people, pinpoint, users)
    first = _mail_campaign(segment, IsPaused=True, Name="Draft sale")
    created = (await call(pinpoint.create_campaign, ApplicationId="acme", WriteCampaignRequest=first))["CampaignResponse"]
    campaign_id = created["Id"]
    assert (await call(pinpoint.get_campaign_activities, ApplicationId="acme", CampaignId=campaign_id)
            )["ActivitiesResponse"]["Item"] == []  # paused: it has not run

    updated = (await call(pinpoint.update_campaign, ApplicationId="acme", CampaignId=campaign_id,
                          WriteCampaignRequest=_mail_campaign(segment)))["CampaignResponse"]
    assert updated["Version"] == 2 and updated["Name"] == "Spring sale" and updated["IsPaused"] is False
    assert await aeventually(lambda: len(smtp_sink.mails) >= 3, 60, every=0.2, threaded=True)

    def activities(n: int):
        items = pinpoint.get_campaign_activities(ApplicationId="acme", CampaignId=campaign_id)[
            "ActivitiesResponse"]["Item"]
        return items if len(items) == n and all(a["State"] == "COMPLETED" for a in items) else None
    done = await aeventually(lambda: activities(1), 30, every=0.2, threaded=True)
    assert done, pinpoint.get_campaign_activities(ApplicationId="acme", CampaignId=campaign_id)
    assert done[0]["CampaignId"] == campaign_id and done[0]["TotalEndpointCount"] == 3
    assert done[0]["SuccessfulEndpointCount"] == 3 and done[0]["Result"] == "SUCCESS"

    versions = (await call(pinpoint.get_campaign_versions, ApplicationId="acme", CampaignId=campaign_id)
                )["CampaignsResponse"]["Item"]
    assert [(v["Version"], v["Name"], v["IsPaused"]) for v in versions] == [(1, "Draft sale", True),
                                                                             (2, "Spring sale", False)]
    old = (await call(pinpoint.get_campaign_version, ApplicationId="acme", CampaignId=campaign_id, Version="1")
           )["CampaignResponse"]
    assert old["Name"] == "Draft sale" and old["Id"] == campaign_id
    missing = _error(lambda: pinpoint.get_campaign_version(ApplicationId="acme", CampaignId=campaign_id, Version="9"))
    assert missing.response["Error"]["Code"] == "NotFoundException"

    # a ONCE campaign changed after it ran is a new version, and still sends each customer once
    again = _mail_campaign(segment)
    again["MessageConfiguration"]["EmailMessage"]["Title"] = "Last days, {{User.UserAttributes.first}}"
    third = (await call(pinpoint.update_campaign, ApplicationId="acme", CampaignId=campaign_id,
                        WriteCampaignRequest=again))["CampaignResponse"]
    assert third["Version"] == 3 and third["MessageConfiguration"] == again["MessageConfiguration"]

    def completed():
        got = pinpoint.get_campaign(ApplicationId="acme", CampaignId=campaign_id)["CampaignResponse"]
        return got["State"]["CampaignStatus"] == "COMPLETED" and got["Version"] == 3
    assert await aeventually(completed, 30, every=0.2, threaded=True)
    assert len(smtp_sink.mails) == 3
    assert len(activities(1) or []) == 1  # the third version's broadcast turned everybody away: no run
    unchanged = (await call(pinpoint.update_campaign, ApplicationId="acme", CampaignId=campaign_id,
                            WriteCampaignRequest=again))["CampaignResponse"]
    assert unchanged["Version"] == 3  # the same campaign is the same version
    await asyncio.sleep(2)
    assert len(smtp_sink.mails) == 3


async def test_a_scheduled_campaign_moved_to_now_runs_once(smtp_sink, running_api, pinpoint, native,  # noqa: F811
                                                           worker, temporal_env):
    from tidings.engine.journeys.runtime.contracts import broadcast_workflow_id
    from tidings.engine.platform.installation import installation_id
    from tidings.engine.workspaces.service import find_workspace
    from temporalio.client import WorkflowExecutionStatus

    call = asyncio.to_thread
    segment = await call(_people, pinpoint, [("ann", "pro"), ("bob", "pro")])
    later = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    created = (await call(pinpoint.create_campaign, ApplicationId="acme", WriteCampaignRequest=_mail_campaign(
        segment, Schedule={"StartTime": later, "Frequency": "ONCE"})))["CampaignResponse"]
    moved = (await call(pinpoint.update_campaign, ApplicationId="acme", CampaignId=created["Id"],
                        WriteCampaignRequest=_mail_campaign(segment)))["CampaignResponse"]
    assert moved["Version"] == 2 and moved["Schedule"]["StartTime"] == "IMMEDIATE"
    assert await aeventually(lambda: len(smtp_sink.mails) >= 2, 60, every=0.2, threaded=True)
    db = make_engine(running_api.database_url)
    try:
        first = broadcast_workflow_id(installation_id(db), find_workspace(db, "acme").id, created["Id"], 1)
    finally:
        db.dispose()
    # the first version's broadcast, waiting for its StartTime, was withdrawn: it will not send again in 2 days
    described = await temporal_env.client.get_workflow_handle(first).describe()
    assert described.status == WorkflowExecutionStatus.TERMINATED
    await asyncio.sleep(2)
    assert sorted(r for _, rcpts, _ in smtp_sink.mails for r in rcpts) == ["ann@example.com", "bob@example.com"]


def test_a_recurring_campaign_is_a_cron_broadcast(running_api, pinpoint, native):
    segment = _people(pinpoint, [("ann", "pro")])
    soon = (datetime.now(UTC) + timedelta(hours=3)).replace(second=0, microsecond=0)
    created = pinpoint.create_campaign(ApplicationId="acme", WriteCampaignRequest=_mail_campaign(
        segment, Schedule={"StartTime": soon.strftime("%Y-%m-%dT%H:%M:%SZ"), "Frequency": "WEEKLY"}))[
        "CampaignResponse"]
    assert created["State"]["CampaignStatus"] == "SCHEDULED" and created["Schedule"]["Frequency"] == "WEEKLY"
    journey = native.get(f"/v1/journeys/{created['Id']}").json()
    assert journey["status"] == "active"
    assert f'cron: "{soon.minute} {soon.hour} * * {soon.isoweekday() % 7}"' in journey["yaml"]
    assert "max_entries: unlimited" in journey["yaml"]  # every week's run sends again
    for schedule, member in (({"StartTime": "IMMEDIATE", "Frequency": "DAILY"}, "Schedule.StartTime"),
                             ({"StartTime": (soon + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                               "Frequency": "DAILY"}, "Schedule.StartTime"),
                             ({"StartTime": "IMMEDIATE", "Frequency": "EVENT"}, "Schedule.EventFilter"),
                             ({"StartTime": "IMMEDIATE", "Frequency": "IN_APP_EVENT"}, "Schedule.Frequency")):
        refused = _error(lambda schedule=schedule: pinpoint.create_campaign(
            ApplicationId="acme", WriteCampaignRequest=_mail_campaign(segment, Schedule=schedule)))
        assert refused.response["Error"]["Message"].startswith(member), refused.response["Error"]["Message"]


async def test_an_event_campaign_mails_the_members_who_send_the_event(smtp_sink, running_api, pinpoint,  # noqa: F811
                                                                     native, worker):
    call = asyncio.to_thread
    segment = await call(_people, pinpoint, [("eve", "pro"), ("fay", "free")])
    created = (await call(pinpoint.create_campaign, ApplicationId="acme", WriteCampaignRequest=_mail_campaign(
        segment, Schedule={"StartTime": "IMMEDIATE", "Frequency": "EVENT", "EventFilter": {
            "FilterType": "ENDPOINT", "Dimensions": {"EventType": {"DimensionType": "INCLUSIVE",
                                                                   "Values": ["purchase"]}}}})))["CampaignResponse"]
    assert created["State"]["CampaignStatus"] == "SCHEDULED"
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    await call(pinpoint.put_events, ApplicationId="acme", EventsRequest={"BatchItem": {
        f"{user}-mail": {"Endpoint": {}, "Events": {f"{user}-buy": {"EventType": "purchase", "Timestamp": now}}}
        for user in ("eve", "fay")}})
    assert await aeventually(lambda: smtp_sink.to("eve@example.com"), 60, every=0.2, threaded=True)
    await asyncio.sleep(2)  # any mail that must not come
    assert [r for _, rcpts, _ in smtp_sink.mails for r in rcpts] == ["eve@example.com"]  # fay is not in the segment
    assert smtp_sink.to("eve@example.com")[0]["Subject"] == "Spring sale, Eve"


async def test_treatments_split_the_audience_and_a_holdout_is_kept_out(smtp_sink, running_api, pinpoint,  # noqa: F811
                                                                       native, worker):
    call = asyncio.to_thread
    users = [(f"p{i:02d}", "pro") for i in range(30)]
    segment = await call(_people, pinpoint, users)
    request = _mail_campaign(segment, HoldoutPercent=20, AdditionalTreatments=[{
        "SizePercent": 50, "TreatmentName": "B",
        "MessageConfiguration": {"EmailMessage": {"Title": "Variant B", "Body": "Hello from B"}}}])
    created = (await call(pinpoint.create_campaign, ApplicationId="acme", WriteCampaignRequest=request)
               )["CampaignResponse"]
    assert created["AdditionalTreatments"][0]["Id"] == "1" and created["AdditionalTreatments"][0]["SizePercent"] == 50

    def finished():
        got = pinpoint.get_campaign(ApplicationId="acme", CampaignId=created["Id"])["CampaignResponse"]
        return got["State"]["CampaignStatus"] == "COMPLETED"
    assert await aeventually(finished, 60, every=0.2, threaded=True)
    await asyncio.sleep(1)
    recipients = [r for _, rcpts, _ in smtp_sink.mails for r in rcpts]
    assert len(recipients) == len(set(recipients))  # nobody gets both treatments
    subjects = {m["Subject"] for u, _ in users for m in smtp_sink.to(f"{u}@example.com")}
    assert subjects <= {"Variant B"} | {f"Spring sale, {u.title()}" for u, _ in users}
    assert 0 < len(recipients) < len(users)  # some were held out (20% of 30: none held out is 1 in 800)
    runs = native.get(f"/v1/journeys/{created['Id']}/runs").json()
    held = [r for r in (runs.get("items") if isinstance(runs, dict) else runs) if r["status"] == "held_out"]
    assert len(held) + len(recipients) == len(users)
    refused = _error(lambda: pinpoint.create_campaign(ApplicationId="acme", WriteCampaignRequest={
        **request, "AdditionalTreatments": [{"SizePercent": 100, "MessageConfiguration": {
            "EmailMessage": {"Title": "B", "Body": "B"}}}]}))
    assert refused.response["Error"]["Message"].startswith("AdditionalTreatments[0].SizePercent")


async def test_an_email_and_sms_campaign_sends_each_channel_once(smtp_sink, running_api, pinpoint,  # noqa: F811
                                                                native, worker):
    from sqlalchemy import select

    from tidings.engine.messaging.tables import outbox_messages

    call = asyncio.to_thread
    segment = await call(_people, pinpoint, [("ann", "pro"), ("bob", "pro")])
    for user, number in (("ann", "+15550100001"), ("bob", "+15550100002")):
        await call(pinpoint.update_endpoint, ApplicationId="acme", EndpointId=f"{user}-sms", EndpointRequest={
            "ChannelType": "SMS", "Address": number, "User": {"UserId": user}})
    request = _mail_campaign(segment)
    request["MessageConfiguration"]["SMSMessage"] = {"Body": "Sale on, {{User.UserAttributes.first}}!",
                                                     "MessageType": "PROMOTIONAL"}
    created = (await call(pinpoint.create_campaign, ApplicationId="acme", WriteCampaignRequest=request)
               )["CampaignResponse"]
    db = make_engine(running_api.database_url)

    def texts():
        with db.connect() as conn:
            return {r.address: r.content for r in conn.execute(select(
                outbox_messages.c.address, outbox_messages.c.content).where(outbox_messages.c.channel_type == "SMS"))}
    try:
        assert await aeventually(lambda: len(texts()) >= 2 and len(smtp_sink.mails) >= 2, 60, every=0.2, threaded=True)
        await asyncio.sleep(2)  # anything that must not come
        sent = texts()
    finally:
        db.dispose()
    assert {k: v["body"] for k, v in sent.items()} == {"+15550100001": "Sale on, Ann!", "+15550100002": "Sale on, Bob!"}
    assert sorted(r for _, rcpts, _ in smtp_sink.mails for r in rcpts) == ["ann@example.com", "bob@example.com"]
    assert f"template: campaign-{created['Id']}-sms" in native.get(f"/v1/journeys/{created['Id']}").json()["yaml"]
