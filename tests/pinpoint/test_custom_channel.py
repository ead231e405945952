"""Custom channels through boto3: Pinpoint's CUSTOM journey activity and a campaign's CustomDeliveryConfiguration
call a webhook with batches of endpoints. Created with CreateJourney / CreateCampaign, run by a real worker on
the session's Temporal dev server, they POST Pinpoint's custom-channel payload (ApplicationId, JourneyId or
CampaignId, TreatmentId, ActivityId, ScheduledTime, Data, Endpoints keyed by endpoint id with their endpoint
documents) to a real HTTP receiver on loopback, signed as the webhook channel signs; each endpoint arrives once,
also when the receiver fails for a while. A Lambda DeliveryUri is refused by name; reads give the activity back."""
from __future__ import annotations

import asyncio
import subprocess
import threading
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from tidings.engine.journeys.language.compiler import compile_journey
from tidings.engine.journeys.pinpoint import journey_yaml
from tidings.plugins.webhook import verify_signature
from tests.eventually import aeventually
from tests.pinpoint.conftest import temporal_settings
from tests.processes import TIDINGS

SECRET = "whsec-custom-channel"
DATA = '{"offer": "SPRING20", "text": "20% off"}'
PROS = 30  # each with an EMAIL and an SMS endpoint: 60 endpoints, more than one batch of 50


@pytest.fixture
def settings(tmp_path, database_url, temporal_env):
    return temporal_settings(tmp_path, database_url, temporal_env)


class Receiver:
    """A custom-channel receiver: answers `failures` requests with 500, then 200; keeps what it was sent."""

    def __init__(self, http_server, failures: int = 0):
        self.failures, self.lock = failures, threading.Lock()
        self.accepted: list = []  # the requests answered 200
        self.refused = 0
        self.server = http_server(self.respond)

    def respond(self, request):
        with self.lock:
            if self.refused < self.failures:
                self.refused += 1
                return 500, "busy"
            self.accepted.append(request)
            return 200, {"ok": True}

    @property
    def url(self) -> str:
        return self.server.url + "/pinpoint-hook"

    def endpoint_ids(self) -> list[str]:
        return [eid for r in self.accepted for eid in r.json()["Endpoints"]]


def _people(pinpoint) -> str:
    """PROS pro customers with an EMAIL and an SMS endpoint each, a free one, an opted-out pro address and a
    pro VOICE endpoint (neither sent); the id of the segment of the pro plan."""
    items = []
    for i in range(PROS):
        user = {"UserId": f"u{i:02d}", "UserAttributes": {"plan": ["pro"], "first": [f"User{i}"]}}
        items.append({"Id": f"u{i:02d}-mail", "ChannelType": "EMAIL", "Address": f"u{i:02d}@example.com",
                      "Attributes": {"interest": ["golf", "tennis"]}, "Metrics": {"visits": float(i)},
                      "Demographic": {"Platform": "ios", "Timezone": "Europe/Paris"},
                      "Location": {"Country": "FR", "City": "Paris"}, "User": user})
        items.append({"Id": f"u{i:02d}-sms", "ChannelType": "SMS", "Address": f"+1415555{i:04d}", "User": user})
    items.append({"Id": "u00-voice", "ChannelType": "VOICE", "Address": "+14155559999", "User": {"UserId": "u00"}})
    items.append({"Id": "opt-mail", "ChannelType": "EMAIL", "Address": "opt@example.com", "OptOut": "ALL",
                  "User": {"UserId": "opt", "UserAttributes": {"plan": ["pro"]}}})
    items.append({"Id": "dan-mail", "ChannelType": "EMAIL", "Address": "dan@example.com",
                  "User": {"UserId": "dan", "UserAttributes": {"plan": ["free"]}}})
    pinpoint.update_endpoints_batch(ApplicationId="acme", EndpointBatchRequest={"Item": items})
    return pinpoint.create_segment(ApplicationId="acme", WriteSegmentRequest={
        "Name": "Pro", "Dimensions": {"UserAttributes": {"plan": {"AttributeType": "INCLUSIVE", "Values": ["pro"]}}}}
    )["SegmentResponse"]["Id"]


EXPECTED = sorted([f"u{i:02d}-{kind}" for i in range(PROS) for kind in ("mail", "sms")])


def _custom_journey(segment_id: str, uri: str) -> dict:
    return {"Name": "Partner hook", "StartActivity": "Notify",
            "StartCondition": {"SegmentStartCondition": {"SegmentId": segment_id}},
            "Activities": {"Notify": {"CUSTOM": {"DeliveryUri": uri, "EndpointTypes": ["EMAIL", "SMS"],
                                                 "MessageConfig": {"Data": DATA}}}}}


def _webhook_channel(native) -> None:
    r = native.put("/v1/channels/webhook", json={"config": {"secret": SECRET}})
    assert r.status_code in (200, 201), r.text


def _check_batches(receiver: Receiver, pinpoint, **ids) -> None:
    """Pinpoint's payload, signed, each expected endpoint once; its documents as GetEndpoint shows them."""
    assert sorted(receiver.endpoint_ids()) == EXPECTED  # once each: no opted-out, VOICE or free endpoint
    now = datetime.now(UTC)
    for request in receiver.accepted:
        assert verify_signature(SECRET, request.headers["x-tidings-signature"], request.body)
        body = request.json()
        assert set(body) == {"ApplicationId", "TreatmentId", "ActivityId", "ScheduledTime", "Data", "Message",
                             "Endpoints", *ids}
        assert {k: body[k] for k in ("ApplicationId", "Data", *ids)} == {"ApplicationId": "acme", "Data": DATA,
                                                                        **ids}
        scheduled = datetime.fromisoformat(body["ScheduledTime"].replace("Z", "+00:00"))
        assert now - timedelta(minutes=5) < scheduled <= now and body["ScheduledTime"].endswith("Z")
        assert 1 <= len(body["Endpoints"]) <= 50
    documents = {eid: doc for r in receiver.accepted for eid, doc in r.json()["Endpoints"].items()}
    for endpoint_id in ("u03-mail", "u07-sms"):
        shown = pinpoint.get_endpoint(ApplicationId="acme", EndpointId=endpoint_id)["EndpointResponse"]
        for member in ("Id", "ApplicationId", "CohortId", "CreationDate", "EffectiveDate", "RequestId"):
            shown.pop(member, None)
        assert documents[endpoint_id] == shown
    assert documents["u03-mail"]["Attributes"] == {"interest": ["golf", "tennis"]}
    assert documents["u03-mail"]["User"] == {"UserId": "u03", "UserAttributes": {"plan": ["pro"], "first": ["User3"]}}
    assert documents["u03-mail"]["Demographic"] == {"Platform": "ios", "Timezone": "Europe/Paris"}


async def test_a_custom_activity_posts_each_endpoint_once_in_pinpoints_payload(running_api, pinpoint, native, worker,
                                                                               http_server):
    call = asyncio.to_thread
    receiver = Receiver(http_server)
    segment = await call(_people, pinpoint)
    await call(_webhook_channel, native)
    request = _custom_journey(segment, receiver.url)
    created = (await call(pinpoint.create_journey, ApplicationId="acme", WriteJourneyRequest=request))["JourneyResponse"]
    journey_id = created["Id"]
    # read back in Pinpoint's form (activity ids are lower case in Tidings, as for every activity)
    assert created["Activities"] == {"notify": request["Activities"]["Notify"]}
    got = (await call(pinpoint.get_journey, ApplicationId="acme", JourneyId=journey_id))["JourneyResponse"]
    assert got["Activities"] == created["Activities"] and got["StartActivity"] == "notify"
    assert "custom_channel:" in native.get(f"/v1/journeys/{journey_id}").json()["yaml"]

    await call(pinpoint.update_journey_state, ApplicationId="acme", JourneyId=journey_id,
               JourneyStateRequest={"State": "ACTIVE"})
    assert await aeventually(lambda: len(receiver.endpoint_ids()) >= len(EXPECTED), 90, every=0.2)
    await asyncio.sleep(2)  # anything more that must not come
    await call(_check_batches, receiver, pinpoint, JourneyId=journey_id, ActivityId="notify", TreatmentId="0")

    def metrics():
        m = pinpoint.get_journey_execution_activity_metrics(ApplicationId="acme", JourneyId=journey_id,
                                                            JourneyActivityId="notify")
        return m["JourneyExecutionActivityMetricsResponse"]["Metrics"]
    activity = await aeventually(lambda: (m := metrics()).get("SUCCESS") == str(PROS) and m, 30, every=0.2,
                                 threaded=True)
    assert activity["ENTERED"] == str(PROS + 1), activity  # and the opted-out pro, sent nothing


async def test_a_custom_channel_campaign_gets_through_a_failing_receiver_once(running_api, pinpoint, native, worker,
                                                                           http_server, monkeypatch):
    monkeypatch.setenv("TIDINGS_DELIVERY_RETRY_MIN_SECONDS", "1")  # the next round a second or two later
    monkeypatch.setenv("TIDINGS_DELIVERY_RETRY_MAX_SECONDS", "2")
    call = asyncio.to_thread
    receiver = Receiver(http_server, failures=5)  # more than one send's three attempts: a later round delivers
    segment = await call(_people, pinpoint)
    await call(_webhook_channel, native)
    campaign = {"Name": "Partner push", "SegmentId": segment,
                "Schedule": {"StartTime": "IMMEDIATE", "Frequency": "ONCE"},
                "CustomDeliveryConfiguration": {"DeliveryUri": receiver.url, "EndpointTypes": ["EMAIL", "SMS"]},
                "MessageConfiguration": {"CustomMessage": {"Data": DATA}}}
    created = (await call(pinpoint.create_campaign, ApplicationId="acme",
                          WriteCampaignRequest=campaign))["CampaignResponse"]
    campaign_id = created["Id"]
    assert created["CustomDeliveryConfiguration"] == campaign["CustomDeliveryConfiguration"]
    assert created["MessageConfiguration"] == campaign["MessageConfiguration"]

    assert await aeventually(lambda: len(receiver.endpoint_ids()) >= len(EXPECTED), 120, every=0.2)
    await asyncio.sleep(2)
    assert receiver.refused == 5
    [activity] = (await call(pinpoint.get_campaign_activities, ApplicationId="acme",
                             CampaignId=campaign_id))["ActivitiesResponse"]["Item"]
    await call(_check_batches, receiver, pinpoint, CampaignId=campaign_id, ActivityId=activity["Id"],
               TreatmentId="0")
    got = (await call(pinpoint.get_campaign, ApplicationId="acme", CampaignId=campaign_id))["CampaignResponse"]
    assert got["CustomDeliveryConfiguration"] == campaign["CustomDeliveryConfiguration"]


async def test_a_private_receiver_is_refused_by_the_destination_guard(running_api, pinpoint, native, worker,
                                                                      http_server, monkeypatch):
    monkeypatch.setenv("TIDINGS_ALLOW_PRIVATE_DESTINATIONS", "")  # the default install: loopback is private
    call = asyncio.to_thread
    receiver = Receiver(http_server)
    segment = await call(_people, pinpoint)
    await call(_webhook_channel, native)
    journey_id = (await call(pinpoint.create_journey, ApplicationId="acme",
                             WriteJourneyRequest=_custom_journey(segment, receiver.url)))["JourneyResponse"]["Id"]
    await call(pinpoint.update_journey_state, ApplicationId="acme", JourneyId=journey_id,
               JourneyStateRequest={"State": "ACTIVE"})

    def completed():
        m = pinpoint.get_journey_execution_metrics(ApplicationId="acme", JourneyId=journey_id)
        return m["JourneyExecutionMetricsResponse"]["Metrics"].get("ENDPOINT_COMPLETED") == str(PROS + 1)
    assert await aeventually(completed, 90, every=0.2, threaded=True)
    activity = (await call(pinpoint.get_journey_execution_activity_metrics, ApplicationId="acme", JourneyId=journey_id,
                           JourneyActivityId="notify"))["JourneyExecutionActivityMetricsResponse"]["Metrics"]
    assert "SUCCESS" not in activity or activity["SUCCESS"] == "0", activity
    assert receiver.server.requests == []  # refused before connecting, permanently (not retried)


def _refusal(call) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    assert caught.value.response["Error"]["Code"] == "BadRequestException"
    return str(caught.value)


LAMBDA = "arn:aws:lambda:us-east-1:123456789012:function:partner-hook"


def test_a_lambda_delivery_uri_is_refused_naming_the_field(running_api, pinpoint, native):
    segment = _people(pinpoint)
    message = _refusal(lambda: pinpoint.create_journey(ApplicationId="acme",
                                                       WriteJourneyRequest=_custom_journey(segment, LAMBDA)))
    assert "Activities.Notify.CUSTOM.DeliveryUri" in message and "https URL" in message and "Lambda" in message
    bad_types = _custom_journey(segment, "https://hooks.example.com/pp")
    bad_types["Activities"]["Notify"]["CUSTOM"]["EndpointTypes"] = ["FAX"]
    assert "Activities.Notify.CUSTOM.EndpointTypes" in _refusal(
        lambda: pinpoint.create_journey(ApplicationId="acme", WriteJourneyRequest=bad_types))
    campaign = {"Name": "Partner push", "SegmentId": segment,
                "Schedule": {"StartTime": "IMMEDIATE", "Frequency": "ONCE"},
                "CustomDeliveryConfiguration": {"DeliveryUri": LAMBDA, "EndpointTypes": ["EMAIL"]},
                "MessageConfiguration": {"CustomMessage": {"Data": DATA}}}
    message = _refusal(lambda: pinpoint.create_campaign(ApplicationId="acme", WriteCampaignRequest=campaign))
    assert "CustomDeliveryConfiguration.DeliveryUri" in message and "https URL" in message
    orphan = {**campaign, "CustomDeliveryConfiguration": None}
    del orphan["CustomDeliveryConfiguration"]
    assert "CustomDeliveryConfiguration" in _refusal(
        lambda: pinpoint.create_campaign(ApplicationId="acme", WriteCampaignRequest=orphan))
    # nothing written
    assert pinpoint.list_journeys(ApplicationId="acme")["JourneysResponse"]["Item"] == []
    assert pinpoint.get_campaigns(ApplicationId="acme")["CampaignsResponse"]["Item"] == []
    assert native.get("/v1/journeys").json() == []


def test_convert_writes_a_custom_channel_step_that_compiles_and_reads_back(tmp_path):
    request = _custom_journey("pro", "https://hooks.example.com/pp")
    request["Activities"]["Notify"]["CUSTOM"]["TemplateName"] = "partner-body"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "partner.json").write_text(__import__("json").dumps({"JourneyResponse": {
        **request, "Id": "partner", "ApplicationId": "acme", "State": "ACTIVE"}}))
    run = subprocess.run([TIDINGS, "pinpoint", "convert", str(tmp_path / "in"), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    [written] = list((tmp_path / "out").rglob("*.yaml"))
    text = written.read_text()
    assert text == journey_yaml({**request, "Id": "partner", "State": "ACTIVE"}, "partner")
    assert "custom_channel:" in text and 'url: "https://hooks.example.com/pp"' in text
    assert "endpoint_types: [EMAIL, SMS]" in text and "template: partner-body" in text
    node = compile_journey(text).nodes["notify"]
    assert node.custom is not None and node.custom.data == DATA and node.template == "partner-body"


async def test_a_yaml_custom_channel_step_renders_its_template_as_each_endpoints_data(running_api, pinpoint, native,
                                                                                      worker, http_server):
    call = asyncio.to_thread
    receiver = Receiver(http_server)
    segment = await call(_people, pinpoint)
    await call(_webhook_channel, native)
    r = await call(native.put, "/v1/templates/partner-body",
                   json={"channel": "WEBHOOK", "body": "Hi {{ user.attributes.first }} at {{ endpoint.address }}"})
    assert r.status_code in (200, 201), r.text
    text = (f"apiVersion: tidings/v1\nkind: Journey\nid: partner\nname: Partner\n"
            f"entry:\n  broadcast: {{segment: {segment}}}\nsteps:\n  - id: notify\n    custom_channel:\n"
            f"      url: \"{receiver.url}\"\n      endpoint_types: [EMAIL, SMS]\n      template: partner-body\n")
    r = await call(native.put, "/v1/journeys/partner", content=text, headers={"Content-Type": "application/yaml"})
    assert r.status_code in (200, 201), r.text
    assert (await call(native.post, "/v1/journeys/partner/activate")).status_code == 200
    assert await aeventually(lambda: len(receiver.endpoint_ids()) >= len(EXPECTED), 90, every=0.2)
    await asyncio.sleep(2)
    assert sorted(receiver.endpoint_ids()) == EXPECTED
    for request in receiver.accepted:  # a personal Data is a batch of its own (the Data is the batch's)
        body = request.json()
        [(endpoint_id, document)] = body["Endpoints"].items()
        user = int(endpoint_id[1:3])
        assert body["Data"] == f"Hi User{user} at {document['Address']}" and body["JourneyId"] == "partner"
        assert verify_signature(SECRET, request.headers["x-tidings-signature"], request.body)


def test_each_treatment_of_a_custom_channel_campaign_names_itself(running_api, pinpoint, native):
    segment = _people(pinpoint)
    delivery = {"DeliveryUri": "https://hooks.example.com/a", "EndpointTypes": ["EMAIL"]}
    campaign = {"Name": "A/B hook", "SegmentId": segment, "Schedule": {"StartTime": "IMMEDIATE", "Frequency": "ONCE"},
                "CustomDeliveryConfiguration": delivery, "MessageConfiguration": {"CustomMessage": {"Data": "A"}},
                "AdditionalTreatments": [{"SizePercent": 40, "CustomDeliveryConfiguration": {
                    **delivery, "DeliveryUri": "https://hooks.example.com/b"},
                    "MessageConfiguration": {"CustomMessage": {"Data": "B"}}}]}
    created = pinpoint.create_campaign(ApplicationId="acme", WriteCampaignRequest=campaign)["CampaignResponse"]
    assert created["AdditionalTreatments"][0]["CustomDeliveryConfiguration"]["DeliveryUri"] == \
        "https://hooks.example.com/b"
    yaml = native.get(f"/v1/journeys/{created['Id']}").json()["yaml"]
    assert 'campaign_treatment: "0"' in yaml and 'campaign_treatment: "1"' in yaml
    assert 'url: "https://hooks.example.com/b"' in yaml and "data: B" in yaml
