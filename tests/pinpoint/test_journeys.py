"""Journeys through boto3: a journey created with CreateJourney is a native journey (GET /v1/journeys), runs on
the same interpreter (a worker on the session's Temporal dev server mails each segment member through a real
SMTP server), its states map to the native lifecycle, its metrics are the native counts, reads give the
Pinpoint journey back, and what Tidings cannot run is refused naming the activity, with nothing written."""
from __future__ import annotations

import asyncio
import copy
import json
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tidings.engine.journeys.pinpoint import journey_yaml
from tests.pinpoint.conftest import temporal_settings
from tests.messaging.conftest import smtp_sink  # noqa: F401  (a real SMTP server, the default EMAIL channel)
from tests.eventually import aeventually

EXAMPLE = Path(__file__).parents[2] / "examples" / "journey_welcome.json"
RESPONSE_ONLY = ("ApplicationId", "Id", "CreationDate", "LastModifiedDate", "tags", "State")


@pytest.fixture
def settings(tmp_path, database_url, temporal_env, smtp_sink):  # noqa: F811  (the sink's settings come first)
    return temporal_settings(tmp_path, database_url, temporal_env)



def _error(call) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value


def _template(native, template_id: str, channel: str = "EMAIL") -> None:
    parts = {"subject": "Welcome {{ user.user_id }}", "text": "Hello {{ user.user_id }}"} if channel == "EMAIL" \
        else {"title": "Hi", "body": "Hello"} if channel == "PUSH" else {"body": "Hello"}
    r = native.put(f"/v1/templates/{template_id}", json={"channel": channel, **parts})
    assert r.status_code in (200, 201), r.text


def _mail_journey(segment_id: str) -> dict:
    return {"Name": "Pro welcome", "StartActivity": "hello",
            "StartCondition": {"SegmentStartCondition": {"SegmentId": segment_id}},
            "Activities": {"hello": {"EMAIL": {"TemplateName": "pro-welcome"}}}}


async def test_a_segment_journey_mails_each_member_and_follows_its_states(smtp_sink, running_api, pinpoint,  # noqa: F811
                                                                           native, worker):
    call = asyncio.to_thread
    for user, plan in (("ann", "pro"), ("bob", "pro"), ("cat", "pro"), ("dan", "free")):
        await call(pinpoint.update_endpoint, ApplicationId="acme", EndpointId=f"{user}-mail", EndpointRequest={
            "ChannelType": "EMAIL", "Address": f"{user}@example.com",
            "User": {"UserId": user, "UserAttributes": {"plan": [plan]}}})
    segment = (await call(pinpoint.create_segment, ApplicationId="acme", WriteSegmentRequest={
        "Name": "Pro", "Dimensions": {"UserAttributes": {"plan": {"AttributeType": "INCLUSIVE", "Values": ["pro"]}}}})
    )["SegmentResponse"]["Id"]
    await call(_template, native, "pro-welcome")

    created = (await call(pinpoint.create_journey, ApplicationId="acme",
                          WriteJourneyRequest=_mail_journey(segment)))["JourneyResponse"]
    journey_id = created["Id"]
    assert created["State"] == "DRAFT" and created["Name"] == "Pro welcome"
    assert created["StartCondition"] == {"SegmentStartCondition": {"SegmentId": segment}}
    assert created["Activities"] == {"hello": {"EMAIL": {"TemplateName": "pro-welcome"}}}
    listed = native.get("/v1/journeys").json()
    assert [(j["id"], j["name"], j["status"]) for j in listed] == [(journey_id, "Pro welcome", "draft")]
    assert "template: pro-welcome" in native.get(f"/v1/journeys/{journey_id}").json()["yaml"]

    state = await call(pinpoint.update_journey_state, ApplicationId="acme", JourneyId=journey_id,
                       JourneyStateRequest={"State": "ACTIVE"})
    assert state["JourneyResponse"]["State"] == "ACTIVE"
    assert await aeventually(lambda: len(smtp_sink.mails) >= 3, 60, every=0.2, threaded=True)
    await asyncio.sleep(2)  # any mail that must not come
    assert sorted(r for _, rcpts, _ in smtp_sink.mails for r in rcpts) == [
        "ann@example.com", "bob@example.com", "cat@example.com"]  # one each; dan is not in the segment
    assert smtp_sink.to("ann@example.com")[0]["Subject"] == "Welcome ann"

    def metrics():
        m = pinpoint.get_journey_execution_metrics(ApplicationId="acme", JourneyId=journey_id)
        return m["JourneyExecutionMetricsResponse"] if \
            m["JourneyExecutionMetricsResponse"]["Metrics"]["ENDPOINT_COMPLETED"] == "3" else None
    journey_metrics = await aeventually(metrics, 60, every=0.2, threaded=True)
    assert journey_metrics and journey_metrics["Metrics"]["ENDPOINT_ENTERED"] == "3"
    assert journey_metrics["Metrics"]["ENDPOINT_ACTIVE"] == "0" and journey_metrics["JourneyId"] == journey_id
    activity = (await call(pinpoint.get_journey_execution_activity_metrics, ApplicationId="acme", JourneyId=journey_id,
                           JourneyActivityId="hello"))["JourneyExecutionActivityMetricsResponse"]
    assert activity["ActivityType"] == "MESSAGE"
    assert activity["Metrics"]["ENTERED"] == "3" and activity["Metrics"]["SUCCESS"] == "3"

    for wanted, native_status in (("PAUSED", "paused"), ("ACTIVE", "active"), ("CANCELLED", "stopped")):
        if wanted == "ACTIVE":  # updated while paused: made ACTIVE again, it runs the new version
            renamed = await call(pinpoint.update_journey, ApplicationId="acme", JourneyId=journey_id,
                                 WriteJourneyRequest={**_mail_journey(segment), "Name": "Pro welcome 2"})
            assert renamed["JourneyResponse"]["State"] == "PAUSED"
            assert native.get(f"/v1/journeys/{journey_id}").json()["active_version"] == 1
        answer = await call(pinpoint.update_journey_state, ApplicationId="acme", JourneyId=journey_id,
                            JourneyStateRequest={"State": wanted})
        assert answer["JourneyResponse"]["State"] == wanted
        assert native.get(f"/v1/journeys/{journey_id}").json()["status"] == native_status
    assert native.get(f"/v1/journeys/{journey_id}").json()["active_version"] == 2
    refused = _error(lambda: pinpoint.update_journey_state(ApplicationId="acme", JourneyId=journey_id,
                                                           JourneyStateRequest={"State": "ACTIVE"}))
    assert refused.response["Error"]["Code"] == "BadRequestException" and "CANCELLED" in str(refused)
    assert len(smtp_sink.mails) == 3  # resuming and cancelling sent nothing more

    deleted = await call(pinpoint.delete_journey, ApplicationId="acme", JourneyId=journey_id)
    assert deleted["JourneyResponse"]["Id"] == journey_id
    gone = _error(lambda: pinpoint.get_journey(ApplicationId="acme", JourneyId=journey_id))
    assert gone.response["Error"]["Code"] == "NotFoundException"
    assert native.get(f"/v1/journeys/{journey_id}").status_code == 404


def _example_request() -> dict:
    source = json.loads(EXAMPLE.read_text())["JourneyResponse"]
    return {k: v for k, v in source.items() if k not in RESPONSE_ONLY}


def _example_prerequisites(native) -> None:
    for seg in ("vip-customers", "trial-users"):
        r = native.post("/v1/segments", json={"id": seg, "name": seg, "rule": {"==": [1, 1]}})
        assert r.status_code in (200, 201), r.text
    for template, channel in (("welcome-email", "EMAIL"), ("tips-a", "EMAIL"), ("tips-b", "EMAIL"),
                              ("vip-welcome", "EMAIL"), ("welcome-sms", "SMS"), ("upgrade-push", "PUSH")):
        _template(native, template, channel)


def test_get_list_and_update_give_the_pinpoint_journey_back(running_api, pinpoint, native):
    _example_prerequisites(native)
    request = _example_request()
    created = pinpoint.create_journey(ApplicationId="acme", WriteJourneyRequest=request)["JourneyResponse"]
    # the stored journey is the YAML `tidings pinpoint convert` writes for the same JSON
    assert native.get(f"/v1/journeys/{created['Id']}").json()["yaml"] == journey_yaml(request, created["Id"])
    got = pinpoint.get_journey(ApplicationId="acme", JourneyId=created["Id"])["JourneyResponse"]
    assert got["ApplicationId"] == "acme" and got["Name"] == request["Name"] and got["State"] == "DRAFT"
    assert got["StartActivity"] == "control" and got["QuietTime"] == request["QuietTime"]
    assert got["WaitForQuietTime"] is True and got["Limits"] == {"DailyCap": 2, "EndpointReentryCap": 1}
    expected = copy.deepcopy(request["StartCondition"])
    expected.pop("Description")
    assert got["StartCondition"] == expected
    assert set(got["Activities"]) == set(request["Activities"])
    assert got["Activities"]["opened"] == request["Activities"]["opened"]
    assert got["Activities"]["route"] == {"MultiCondition": {"Branches": request["Activities"]["route"][
        "MultiCondition"]["Branches"]}}
    assert got["Activities"]["week"] == request["Activities"]["week"]

    second = pinpoint.create_journey(ApplicationId="acme", WriteJourneyRequest={**request, "Name": "Second"})
    ids = sorted([created["Id"], second["JourneyResponse"]["Id"]])
    page = pinpoint.list_journeys(ApplicationId="acme", PageSize="1")["JourneysResponse"]
    assert [j["Id"] for j in page["Item"]] == ids[:1] and page["NextToken"] == ids[0]
    rest = pinpoint.list_journeys(ApplicationId="acme", PageSize="1", Token=page["NextToken"])["JourneysResponse"]
    assert [j["Id"] for j in rest["Item"]] == ids[1:] and "NextToken" not in rest

    changed = copy.deepcopy(request)
    changed["Activities"]["week"]["Wait"]["WaitTime"]["WaitFor"] = "P14D"
    updated = pinpoint.update_journey(ApplicationId="acme", JourneyId=created["Id"],
                                      WriteJourneyRequest=changed)["JourneyResponse"]
    assert updated["Activities"]["week"]["Wait"]["WaitTime"] == {"WaitFor": "P14D"}
    assert native.get(f"/v1/journeys/{created['Id']}").json()["version"] == 2

    metrics = pinpoint.get_journey_execution_activity_metrics(
        ApplicationId="acme", JourneyId=created["Id"], JourneyActivityId="opened")
    assert metrics["JourneyExecutionActivityMetricsResponse"]["ActivityType"] == "CONDITIONAL_SPLIT"
    assert metrics["JourneyExecutionActivityMetricsResponse"]["Metrics"]["ENTERED"] == "0"
    missing = _error(lambda: pinpoint.get_journey_execution_activity_metrics(
        ApplicationId="acme", JourneyId=created["Id"], JourneyActivityId="nope"))
    assert missing.response["Error"]["Code"] == "NotFoundException"


def test_what_tidings_cannot_run_is_refused_and_nothing_is_written(running_api, pinpoint, native):
    _example_prerequisites(native)
    request = _example_request()
    contact = copy.deepcopy(request)
    contact["Activities"]["call"] = {"ContactCenter": {"NextActivity": "tipsa"}}
    unknown = copy.deepcopy(request)
    unknown["Activities"]["tipsa"]["EMAIL"]["TemplateName"] = "no-such-template"
    for bad, words in ((contact, "Activities.call.ContactCenter: Tidings cannot run a contact-center"),
                       (unknown, "no-such-template"),
                       ({**request, "JourneyChannelSettings": {"ConnectCampaignArn": "arn:aws:connect:x"}},
                        "JourneyChannelSettings"),
                       ({**request, "Limits": {"MessagesPerSecond": 5}}, "Limits.MessagesPerSecond")):
        refused = _error(lambda bad=bad: pinpoint.create_journey(ApplicationId="acme", WriteJourneyRequest=bad))
        assert refused.response["Error"]["Code"] == "BadRequestException", refused
        assert words in refused.response["Error"]["Message"]
    assert pinpoint.list_journeys(ApplicationId="acme")["JourneysResponse"]["Item"] == []
    assert native.get("/v1/journeys").json() == []

    created = pinpoint.create_journey(ApplicationId="acme", WriteJourneyRequest=request)["JourneyResponse"]
    refused = _error(lambda: pinpoint.update_journey(ApplicationId="acme", JourneyId=created["Id"],
                                                     WriteJourneyRequest=contact))
    assert "Activities.call.ContactCenter" in refused.response["Error"]["Message"]
    assert native.get(f"/v1/journeys/{created['Id']}").json()["version"] == 1  # unchanged
    for state in ("DRAFT", "PAUSED"):
        refused = _error(lambda state=state: pinpoint.update_journey_state(ApplicationId="acme", JourneyId=created["Id"],
                                                               JourneyStateRequest={"State": state}))
        assert refused.response["Error"]["Code"] == "BadRequestException"
        assert "JourneyStateRequest.State" in refused.response["Error"]["Message"]
    missing = _error(lambda: pinpoint.get_journey(ApplicationId="acme", JourneyId="0" * 32))
    assert missing.response["Error"]["Code"] == "NotFoundException"


async def test_an_event_journey_created_active_mails_whoever_sends_the_event(smtp_sink, running_api, pinpoint,  # noqa: F811
                                                                             native, worker):
    call = asyncio.to_thread
    for user in ("eve", "fay"):
        await call(pinpoint.update_endpoint, ApplicationId="acme", EndpointId=f"{user}-mail", EndpointRequest={
            "ChannelType": "EMAIL", "Address": f"{user}@example.com", "User": {"UserId": user}})
    await call(_template, native, "pro-welcome")
    request = {"Name": "Trial welcome", "State": "ACTIVE", "StartActivity": "hello",
               "StartCondition": {"EventStartCondition": {"EventFilter": {"FilterType": "ENDPOINT", "Dimensions": {
                   "EventType": {"DimensionType": "INCLUSIVE", "Values": ["sign_up"]},
                   "Attributes": {"plan": {"AttributeType": "INCLUSIVE", "Values": ["trial"]}}}}}},
               "Activities": {"hello": {"EMAIL": {"TemplateName": "pro-welcome"}}}}
    created = (await call(pinpoint.create_journey, ApplicationId="acme", WriteJourneyRequest=request))["JourneyResponse"]
    assert created["State"] == "ACTIVE"
    assert created["StartCondition"] == request["StartCondition"]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    answer = await call(pinpoint.put_events, ApplicationId="acme", EventsRequest={"BatchItem": {
        f"{user}-mail": {"Endpoint": {}, "Events": {f"{user}-signup": {
            "EventType": "sign_up", "Timestamp": now, "Attributes": {"plan": plan}}}}
        for user, plan in (("eve", "trial"), ("fay", "pro"))}})
    assert all(e["StatusCode"] == 202 for r in answer["EventsResponse"]["Results"].values()
               for e in r["EventsItemResponse"].values())
    assert await aeventually(lambda: smtp_sink.to("eve@example.com"), 60, every=0.2, threaded=True)
    await asyncio.sleep(2)  # any mail that must not come
    assert [r for _, rcpts, _ in smtp_sink.mails for r in rcpts] == ["eve@example.com"]  # fay's plan is pro
