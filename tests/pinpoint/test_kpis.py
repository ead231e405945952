"""GetApplicationDateRangeKpi and GetJourneyDateRangeKpi through boto3: real messages (SendMessages, and a
journey run by a worker on the session's Temporal dev server) reach a real SMTP server; their recipients open
the pixel and follow the links of the mail they got (the real /t/ tracking routes) and the provider reports
deliveries and bounces through the real /feedback route; the KPIs are what one counts by hand from that."""
from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from botocore.exceptions import ClientError

from tidings.engine.analytics import kpis
from tidings.engine.messaging.tracking import peek
from tidings.engine.platform.db import make_engine
from tidings.engine.platform.errors import InvalidInput
from tidings.engine.workspaces.service import find_workspace
from tests.pinpoint.conftest import temporal_settings
from tests.messaging.conftest import smtp_sink  # noqa: F401  (a real SMTP server, the default EMAIL channel)
from tests.pinpoint.signing import signed_request
from tests.eventually import aeventually

SECRET = "kpi-feedback-s3cret-0123456789"
HTML = '<p>Hello</p><a href="https://shop.example.com/sale">Sale</a>'
MAIL = {"EmailMessage": {"SimpleEmail": {"Subject": {"Data": "Sale"}, "TextPart": {"Data": "Sale"},
                                         "HtmlPart": {"Data": HTML}}}}


@pytest.fixture
def settings(tmp_path, database_url, temporal_env, smtp_sink):  # noqa: F811  (the sink's settings come first)
    return temporal_settings(tmp_path, database_url, temporal_env)



class Recipient:
    """What a recipient's mail client does with the mail it got: loads the pixel, follows a link."""

    def __init__(self, api_url: str, mail):
        html = mail.get_body(("html",)).get_content()
        self.api_url = api_url
        self.pixel = urlsplit(re.search(r'src="([^"]+/t/o/[^"]+)"', html).group(1)).path
        self.link = urlsplit(re.search(r'href="([^"]+/t/c/[^"]+)"', html).group(1)).path
        self.message_id = peek(self.pixel.rsplit("/", 1)[1].removesuffix(".gif")).message_id

    def opens(self, times: int = 1) -> None:
        for _ in range(times):
            assert httpx.get(self.api_url + self.pixel).status_code == 200

    def clicks(self, times: int = 1) -> None:
        for _ in range(times):
            r = httpx.get(self.api_url + self.link, follow_redirects=False)
            assert r.status_code == 302 and r.headers["location"] == "https://shop.example.com/sale"


def report(running_api, native, smtp_sink, outcomes: dict[str, str]) -> None:  # noqa: F811
    """The provider reports each message's outcome (`delivered`, `hard_bounce`) to the SMTP channel's feedback URL."""
    r = native.put("/v1/channels/smtp", json={"config": {
        "host": "127.0.0.1", "port": smtp_sink.port, "security": "none", "from_address": "Acme <news@acme.example>"},
        "feedback_secret": SECRET})
    assert r.status_code == 200, r.text
    body = json.dumps({"events": [{"event_type": outcome, "message_id": message_id}
                                  for message_id, outcome in outcomes.items()]}).encode()
    r = httpx.post(running_api.url + "/feedback/acme/smtp", content=body, headers={"Authorization": f"Bearer {SECRET}"})
    assert r.status_code == 200 and r.json()["recorded"] == len(outcomes), r.text


def values(answer: dict, response: str = "ApplicationDateRangeKpiResponse") -> list[tuple]:
    """The rows as ((grouped-by values...), {value key: float})."""
    return [(tuple(g["Value"] for g in row.get("GroupedBys") or []),
             {v["Key"]: float(v["Value"]) for v in row["Values"] if v["Type"] == "Double"})
            for row in answer[response]["KpiResult"]["Rows"]]


def _error(call) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value


def test_transactional_kpis_count_sends_opens_clicks_deliveries_and_bounces(smtp_sink, running_api, pinpoint,  # noqa: F811
                                                                            native, acme_key):
    for user in ("ann", "bob", "cy"):
        pinpoint.update_endpoint(ApplicationId="acme", EndpointId=f"{user}-mail", EndpointRequest={
            "ChannelType": "EMAIL", "Address": f"{user}@example.com", "User": {"UserId": user}})
    before = datetime.now(UTC) - timedelta(seconds=1)
    sent = pinpoint.send_messages(ApplicationId="acme", MessageRequest={
        "Endpoints": {f"{u}-mail": {} for u in ("ann", "bob", "cy")}, "MessageConfiguration": MAIL})
    ids = {e: r["MessageId"] for e, r in sent["MessageResponse"]["EndpointResult"].items()}
    pinpoint.update_endpoint(ApplicationId="acme", EndpointId="ann-sms", EndpointRequest={
        "ChannelType": "SMS", "Address": "+15551230000", "User": {"UserId": "ann"}})
    sms = pinpoint.send_messages(ApplicationId="acme", MessageRequest={  # to the outbox, the SMS fallback
        "Endpoints": {"ann-sms": {}}, "MessageConfiguration": {"SMSMessage": {"Body": "Hi"}}})
    assert sms["MessageResponse"]["EndpointResult"]["ann-sms"]["DeliveryStatus"] == "SUCCESSFUL"
    ann, bob = (Recipient(running_api.url, smtp_sink.to(f"{u}@example.com")[0]) for u in ("ann", "bob"))
    assert ann.message_id == ids["ann-mail"] and bob.message_id == ids["bob-mail"]
    ann.opens(2)
    ann.clicks(2)
    bob.opens()
    bob.clicks()
    report(running_api, native, smtp_sink, {ids["ann-mail"]: "delivered", ids["bob-mail"]: "delivered",
                                            ids["cy-mail"]: "hard_bounce"})
    after = datetime.now(UTC) + timedelta(seconds=1)

    def kpi(name: str, start: datetime = before, end: datetime = after) -> list[tuple]:
        return values(pinpoint.get_application_date_range_kpi(ApplicationId="acme", KpiName=name, StartTime=start,
                                                               EndTime=end))

    # by hand: 3 mails sent, 2 delivered and 1 hard-bounced; ann and bob opened theirs (3 opens) and clicked
    # (3 clicks, 2 people); 1 SMS sent
    assert kpi("txn-emails-sent") == [((), {"TxnEmailsSent": 3.0})]
    assert kpi("txn-emails-delivered") == [((), {"TxnEmailsDelivered": 2.0})]
    assert kpi("txn-emails-delivery-rate") == [((), {"TxnEmailsDeliveryRate": 2 / 3})]
    assert kpi("txn-emails-hard-bounced") == [((), {"TxnEmailsHardBounced": 1.0})]
    assert kpi("txn-emails-opened") == [((), {"TxnEmailsOpened": 2.0})]
    assert kpi("txn-emails-unique-opens") == [((), {"TxnEmailsUniqueOpens": 2.0})]
    assert kpi("txn-emails-open-rate") == [((), {"TxnEmailsOpenRate": 1.0})]
    assert kpi("txn-emails-clicked") == [((), {"TxnEmailsClicked": 3.0})]
    assert kpi("txn-emails-unique-clicks") == [((), {"TxnEmailsUniqueClicks": 2.0})]
    assert kpi("txn-emails-soft-bounced") == [((), {"TxnEmailsSoftBounced": 0.0})]
    assert kpi("txn-sms-sent") == [((), {"TxnSmsSent": 1.0})]
    today = datetime.now(UTC).date().isoformat()
    assert kpi("txn-emails-sent-grouped-by-date") == [((today,), {"TxnEmailsSent": 3.0})]
    assert kpi("txn-emails-unique-opens-grouped-by-date") == [((today,), {"TxnEmailsUniqueOpens": 2.0})]
    # transactional messages are no campaign's: the campaign metrics have no data
    assert kpi("email-open-rate") == [] and kpi("unique-deliveries") == []

    # a range that ends before the sends: no data, so no rows
    assert kpi("txn-emails-sent", before - timedelta(days=2), before - timedelta(days=1)) == []
    assert kpi("txn-emails-sent-grouped-by-date", before - timedelta(days=2), before - timedelta(days=1)) == []
    # the answer names the range it covers
    answer = pinpoint.get_application_date_range_kpi(ApplicationId="acme", KpiName="txn-emails-sent",
                                                     StartTime=before, EndTime=after)["ApplicationDateRangeKpiResponse"]
    assert answer["ApplicationId"] == "acme" and answer["KpiName"] == "txn-emails-sent"
    assert (answer["StartTime"], answer["EndTime"]) == (before, after)
    # without a range: the last 31 days, which hold today's sends
    default = pinpoint.get_application_date_range_kpi(ApplicationId="acme", KpiName="txn-emails-sent")
    assert values(default) == [((), {"TxnEmailsSent": 3.0})]
    span = default["ApplicationDateRangeKpiResponse"]
    assert timedelta(days=30, hours=23) < span["EndTime"] - span["StartTime"] <= timedelta(days=31)

    for name, word in (("email-open-rates", "email-open-rates"), ("journey-emails-sent", "GetJourneyDateRangeKpi")):
        refused = _error(lambda n=name: pinpoint.get_application_date_range_kpi(ApplicationId="acme", KpiName=n))
        assert refused.response["Error"]["Code"] == "BadRequestException"
        assert word in refused.response["Error"]["Message"] and "KpiName" in refused.response["Error"]["Message"]
    backwards = _error(lambda: pinpoint.get_application_date_range_kpi(
        ApplicationId="acme", KpiName="txn-emails-sent", StartTime=after, EndTime=before))
    assert backwards.response["Error"]["Code"] == "BadRequestException"
    assert "StartTime" in backwards.response["Error"]["Message"]
    garbled = signed_request(running_api, acme_key, "GET",
                             "/v1/apps/acme/kpis/daterange/txn-emails-sent?start-time=yesterday", b"")
    assert garbled.status_code == 400 and garbled.headers["x-amzn-errortype"] == "BadRequestException"
    assert "StartTime" in garbled.json()["Message"]


async def test_journey_kpis_count_the_journeys_own_mail(smtp_sink, running_api, pinpoint, native, worker):  # noqa: F811
    call = asyncio.to_thread
    for user in ("dee", "eve"):
        await call(pinpoint.update_endpoint, ApplicationId="acme", EndpointId=f"{user}-mail", EndpointRequest={
            "ChannelType": "EMAIL", "Address": f"{user}@example.com", "User": {"UserId": user}})
    r = await call(native.put, "/v1/templates/sale", json={"channel": "EMAIL", "subject": "Sale", "text": "Sale",
                                                           "html": HTML})
    assert r.status_code in (200, 201), r.text
    request = {"Name": "Sale", "State": "ACTIVE", "StartActivity": "mail",
               "StartCondition": {"EventStartCondition": {"EventFilter": {"FilterType": "ENDPOINT", "Dimensions": {
                   "EventType": {"DimensionType": "INCLUSIVE", "Values": ["browse"]}}}}},
               "Activities": {"mail": {"EMAIL": {"TemplateName": "sale"}}}}
    journey = (await call(pinpoint.create_journey, ApplicationId="acme", WriteJourneyRequest=request))["JourneyResponse"]
    before = datetime.now(UTC) - timedelta(seconds=1)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    await call(pinpoint.put_events, ApplicationId="acme", EventsRequest={"BatchItem": {
        f"{u}-mail": {"Endpoint": {}, "Events": {f"{u}-browse": {"EventType": "browse", "Timestamp": now}}}
        for u in ("dee", "eve")}})
    assert await aeventually(lambda: smtp_sink.to("dee@example.com") and smtp_sink.to("eve@example.com"), 60, every=0.2, threaded=True)
    soon = datetime.now(UTC) + timedelta(minutes=5)
    assert await aeventually(lambda: values(pinpoint.get_journey_date_range_kpi(  # the sends are recorded
        ApplicationId="acme", JourneyId=journey["Id"], KpiName="journey-emails-sent", StartTime=before, EndTime=soon),
        "JourneyDateRangeKpiResponse") == [((), {"JourneyEmailsSent": 2.0})], 60, every=0.2, threaded=True)
    dee, eve = (Recipient(running_api.url, smtp_sink.to(f"{u}@example.com")[0]) for u in ("dee", "eve"))
    await call(dee.opens, 2)
    await call(dee.clicks)
    await call(report, running_api, native, smtp_sink, {dee.message_id: "delivered", eve.message_id: "delivered"})
    after = datetime.now(UTC) + timedelta(seconds=1)

    def kpi(name: str, journey_id: str = journey["Id"], start: datetime = before, end: datetime = after):
        return values(pinpoint.get_journey_date_range_kpi(
            ApplicationId="acme", JourneyId=journey_id, KpiName=name, StartTime=start, EndTime=end),
            "JourneyDateRangeKpiResponse")

    def check() -> None:
        # by hand: 2 mails sent and delivered, dee opened hers (twice) and clicked once, eve did nothing
        assert kpi("journey-emails-sent") == [((), {"JourneyEmailsSent": 2.0})]
        assert kpi("journey-emails-delivered") == [((), {"JourneyEmailsDelivered": 2.0})]
        assert kpi("journey-emails-opened") == [((), {"JourneyEmailsOpened": 1.0})]
        assert kpi("journey-emails-clicked") == [((), {"JourneyEmailsClicked": 1.0})]
        assert kpi("emails-opened-grouped-by-journey-activity") == [(("mail",), {"JourneyEmailsOpened": 1.0})]
        assert kpi("email-open-rate") == [((), {"EmailOpenRate": 0.5})]
        assert kpi("email-click-rate") == [((), {"EmailClickRate": 0.5})]
        assert kpi("successful-delivery-rate") == [((), {"SuccessfulDeliveryRate": 1.0})]
        assert kpi("unique-deliveries") == [((), {"UniqueDeliveries": 2.0})]
        assert kpi("unique-opens") == [((), {"UniqueOpens": 1.0})]
        today = datetime.now(UTC).date().isoformat()
        assert kpi("unique-opens-grouped-by-date") == [((today,), {"UniqueOpens": 1.0})]
        assert kpi("successful-delivery-rate-grouped-by-date") == [((today,), {"SuccessfulDeliveryRate": 1.0})]
        # the application's campaign metrics count journeys' messages
        app = values(pinpoint.get_application_date_range_kpi(ApplicationId="acme", KpiName="email-open-rate",
                                                             StartTime=before, EndTime=after))
        assert app == [((), {"EmailOpenRate": 0.5})]
        # a range after the journey's mail: no rows
        assert kpi("journey-emails-sent", start=after, end=after + timedelta(days=1)) == []
        missing = _error(lambda: kpi("journey-emails-sent", journey_id="0" * 32))
        assert missing.response["Error"]["Code"] == "NotFoundException"
        for name in ("txn-emails-sent", "journey-emails-bounced"):
            refused = _error(lambda n=name: kpi(n))
            assert refused.response["Error"]["Code"] == "BadRequestException"
            assert name in refused.response["Error"]["Message"]
    await call(check)

    # a campaign (a broadcast journey) answers the campaign metrics of its journey, and only those
    db = make_engine(running_api.database_url)
    workspace = find_workspace(db, "acme")
    until_ms = int(after.timestamp() * 1000)
    since_ms = int(before.timestamp() * 1000)
    rows = kpis.compute(db, workspace, "email-open-rate", since_ms=since_ms, until_ms=until_ms,
                        journey_id=journey["Id"], context="campaign")
    assert [(r.grouped_by, r.values) for r in rows] == [((), (("EmailOpenRate", 0.5),))]
    with pytest.raises(InvalidInput) as refused:
        kpis.compute(db, workspace, "journey-emails-sent", since_ms=since_ms, until_ms=until_ms,
                     journey_id=journey["Id"], context="campaign")
    assert refused.value.field == "KpiName" and "GetJourneyDateRangeKpi" in refused.value.message
    db.dispose()
