"""The `-grouped-by-campaign` and `-grouped-by-campaign-activity` KPIs through boto3: two campaigns (one of them
changed, so it ran twice) and a journey mail real customers through a worker on the session's Temporal dev
server and a real SMTP server; the recipients open the pixel of the mail they got and the provider reports
deliveries and a bounce through the real /feedback route; each campaign's (and each campaign run's) row is
what one counts by hand, and the journey's mail is in no campaign's row."""
from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from tests.eventually import aeventually
from tests.messaging.conftest import smtp_sink  # noqa: F401  (a real SMTP server, the default EMAIL channel)
from tests.pinpoint.conftest import temporal_settings
from tests.pinpoint.test_kpis import HTML, Recipient, report, values

call = asyncio.to_thread


@pytest.fixture
def settings(tmp_path, database_url, temporal_env, smtp_sink):  # noqa: F811  (the sink's settings come first)
    return temporal_settings(tmp_path, database_url, temporal_env)


def _endpoint(pinpoint, user: str, plan: str) -> None:
    pinpoint.update_endpoint(ApplicationId="acme", EndpointId=f"{user}-mail", EndpointRequest={
        "ChannelType": "EMAIL", "Address": f"{user}@example.com",
        "User": {"UserId": user, "UserAttributes": {"plan": [plan]}}})


def _campaign(segment: str, title: str, **extra) -> dict:
    return {"Name": title, "SegmentId": segment, "Schedule": {"StartTime": "IMMEDIATE", "Frequency": "ONCE"},
            "MessageConfiguration": {"EmailMessage": {"Title": title, "Body": title, "HtmlBody": HTML}}, **extra}


def _mail(smtp_sink, user: str, subject: str):  # noqa: F811
    [mail] = [m for m in smtp_sink.to(f"{user}@example.com") if m["Subject"] == subject]
    return mail


async def test_campaign_kpis_have_a_row_per_campaign_and_per_campaign_run(smtp_sink, running_api, pinpoint,  # noqa: F811
                                                                          native, worker):
    before = datetime.now(UTC) - timedelta(seconds=1)
    for user, plan in (("ann", "pro"), ("bob", "pro"), ("cy", "free")):
        await call(_endpoint, pinpoint, user, plan)
    pro = (await call(pinpoint.create_segment, ApplicationId="acme", WriteSegmentRequest={
        "Name": "Pro", "Dimensions": {"UserAttributes": {"plan": {"AttributeType": "INCLUSIVE", "Values": ["pro"]}}}})
    )["SegmentResponse"]["Id"]
    everyone = (await call(pinpoint.create_segment, ApplicationId="acme", WriteSegmentRequest={
        "Name": "All", "Dimensions": {}}))["SegmentResponse"]["Id"]
    sale = (await call(pinpoint.create_campaign, ApplicationId="acme",
                       WriteCampaignRequest=_campaign(pro, "Sale")))["CampaignResponse"]["Id"]
    news = (await call(pinpoint.create_campaign, ApplicationId="acme",
                       WriteCampaignRequest=_campaign(everyone, "News")))["CampaignResponse"]["Id"]
    assert await aeventually(lambda: len(smtp_sink.mails) >= 5, 60, every=0.2, threaded=True)
    # dan joins the pro plan and the sale is changed: its second run mails dan only (the others had it)
    await call(_endpoint, pinpoint, "dan", "pro")
    await call(pinpoint.update_campaign, ApplicationId="acme", CampaignId=sale,
               WriteCampaignRequest=_campaign(pro, "Sale", Description="now for dan too"))
    assert await aeventually(lambda: smtp_sink.to("dan@example.com"), 60, every=0.2, threaded=True)
    # a journey's mail: no campaign's
    r = await call(native.put, "/v1/templates/hello", json={"channel": "EMAIL", "subject": "Hello", "text": "Hi",
                                                            "html": HTML})
    assert r.status_code in (200, 201), r.text
    await call(_endpoint, pinpoint, "eve", "free")
    await call(pinpoint.create_journey, ApplicationId="acme", WriteJourneyRequest={
        "Name": "Hello", "State": "ACTIVE", "StartActivity": "mail",
        "StartCondition": {"EventStartCondition": {"EventFilter": {"FilterType": "ENDPOINT", "Dimensions": {
            "EventType": {"DimensionType": "INCLUSIVE", "Values": ["browse"]}}}}},
        "Activities": {"mail": {"EMAIL": {"TemplateName": "hello"}}}})
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    await call(pinpoint.put_events, ApplicationId="acme", EventsRequest={"BatchItem": {"eve-mail": {
        "Endpoint": {}, "Events": {"eve-browse": {"EventType": "browse", "Timestamp": now}}}}})
    assert await aeventually(lambda: smtp_sink.to("eve@example.com"), 60, every=0.2, threaded=True)
    await asyncio.sleep(1)  # any mail that must not come
    assert len(smtp_sink.mails) == 7

    mails = {(user, subject): Recipient(running_api.url, _mail(smtp_sink, user, subject))
             for user, subject in (("ann", "Sale"), ("bob", "Sale"), ("dan", "Sale"), ("ann", "News"),
                                   ("bob", "News"), ("cy", "News"), ("eve", "Hello"))}
    await call(mails["ann", "Sale"].opens)
    await call(mails["cy", "News"].opens, 2)
    await call(mails["eve", "Hello"].opens)
    await call(report, running_api, native, smtp_sink, {
        m.message_id: "hard_bounce" if key == ("bob", "News") else "delivered" for key, m in mails.items()})
    after = datetime.now(UTC) + timedelta(seconds=1)

    def app_kpi(name: str) -> dict:
        return {key: found for key, found in values(pinpoint.get_application_date_range_kpi(
            ApplicationId="acme", KpiName=name, StartTime=before, EndTime=after))}

    def campaign_kpi(campaign_id: str, name: str) -> dict:
        return {key: found for key, found in values(pinpoint.get_campaign_date_range_kpi(
            ApplicationId="acme", CampaignId=campaign_id, KpiName=name, StartTime=before, EndTime=after),
            "CampaignDateRangeKpiResponse")}

    activities = (await call(pinpoint.get_campaign_activities, ApplicationId="acme", CampaignId=sale)
                  )["ActivitiesResponse"]["Item"]
    first, second = sorted(activities, key=lambda a: a["Start"])
    [news_run] = (await call(pinpoint.get_campaign_activities, ApplicationId="acme", CampaignId=news)
                  )["ActivitiesResponse"]["Item"]

    def check() -> None:
        # by hand: the sale mailed ann, bob, then dan (3, all delivered, ann opened hers); the news mailed ann,
        # bob and cy (3, bob's bounced, cy opened twice); eve's journey mail is in neither
        assert app_kpi("attempted-deliveries-grouped-by-campaign") == {
            (sale,): {"AttemptedDeliveries": 3.0}, (news,): {"AttemptedDeliveries": 3.0}}
        assert app_kpi("unique-deliveries-grouped-by-campaign") == {
            (sale,): {"UniqueDeliveries": 3.0}, (news,): {"UniqueDeliveries": 2.0}}
        assert app_kpi("email-open-rate-grouped-by-campaign") == {
            (sale,): {"EmailOpenRate": 1 / 3}, (news,): {"EmailOpenRate": 1 / 2}}
        assert app_kpi("direct-email-opens-grouped-by-campaign") == {
            (sale,): {"DirectEmailOpens": 1.0}, (news,): {"DirectEmailOpens": 1.0}}
        assert app_kpi("hard-bounce-rate-grouped-by-campaign") == {
            (sale,): {"HardBounceRate": 0.0}, (news,): {"HardBounceRate": 1 / 3}}
        # per run: the activities GetCampaignActivities lists, with their campaign
        assert app_kpi("attempted-deliveries-grouped-by-campaign-activity") == {
            (first["Id"], sale): {"AttemptedDeliveries": 2.0}, (second["Id"], sale): {"AttemptedDeliveries": 1.0},
            (news_run["Id"], news): {"AttemptedDeliveries": 3.0}}
        assert app_kpi("email-open-rate-grouped-by-campaign-activity") == {
            (first["Id"], sale): {"EmailOpenRate": 1 / 2}, (second["Id"], sale): {"EmailOpenRate": 0.0},
            (news_run["Id"], news): {"EmailOpenRate": 1 / 2}}
        assert campaign_kpi(sale, "successful-deliveries-grouped-by-campaign-activity") == {
            (first["Id"],): {"SuccessfulDeliveries": 2.0}, (second["Id"],): {"SuccessfulDeliveries": 1.0}}
        # the ungrouped application metric counts every journey's mail, eve's too
        assert app_kpi("attempted-deliveries") == {(): {"AttemptedDeliveries": 7.0}}
    def settled() -> bool:  # the send events are written as the worker hands each mail over: allow it a moment
        try:
            check()
        except AssertionError:
            return False
        return True
    await aeventually(settled, 30, every=0.5, threaded=True)
    await call(check)  # and fail naming the count that differs

    answer = (await call(pinpoint.get_application_date_range_kpi, ApplicationId="acme",
                         KpiName="unique-deliveries-grouped-by-campaign", StartTime=before, EndTime=after)
              )["ApplicationDateRangeKpiResponse"]["KpiResult"]["Rows"]
    assert {"Key": "CampaignId", "Type": "String", "Value": sale} in [g for row in answer for g in row["GroupedBys"]]

    def refused(fn) -> str:
        with pytest.raises(ClientError) as caught:
            fn()
        assert caught.value.response["Error"]["Code"] == "BadRequestException"
        return caught.value.response["Error"]["Message"]
    assert "GetApplicationDateRangeKpi" in await call(refused, lambda: pinpoint.get_campaign_date_range_kpi(
        ApplicationId="acme", CampaignId=sale, KpiName="unique-deliveries-grouped-by-campaign"))
    assert "KpiName" in await call(refused, lambda: pinpoint.get_application_date_range_kpi(
        ApplicationId="acme", KpiName="txn-emails-sent-grouped-by-campaign"))
