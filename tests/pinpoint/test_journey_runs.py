"""Journey runs through boto3: each firing of a journey is a run (GetJourneyRuns), with its own execution
metrics and activity metrics counted from the journey runs it admitted; a broadcast journey rolled out again
is a second run; an event journey's activation is one run that stays RUNNING until the journey is cancelled;
unknown journeys, runs and activities are NotFoundException."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest
from botocore.exceptions import ClientError

from tests.eventually import aeventually
from tests.messaging.conftest import smtp_sink  # noqa: F401  (a real SMTP server, the default EMAIL channel)
from tests.pinpoint.conftest import temporal_settings

call = asyncio.to_thread


@pytest.fixture
def settings(tmp_path, database_url, temporal_env, smtp_sink):  # noqa: F811  (the sink's settings come first)
    return temporal_settings(tmp_path, database_url, temporal_env)


def _code(fn) -> str:
    with pytest.raises(ClientError) as caught:
        fn()
    return caught.value.response["Error"]["Code"]


def _endpoint(pinpoint, user: str, plan: str) -> None:
    pinpoint.update_endpoint(ApplicationId="acme", EndpointId=f"{user}-mail", EndpointRequest={
        "ChannelType": "EMAIL", "Address": f"{user}@example.com",
        "User": {"UserId": user, "UserAttributes": {"plan": [plan]}}})


def _template(native) -> None:
    r = native.put("/v1/templates/hello", json={"channel": "EMAIL", "subject": "Hi {{ user.user_id }}",
                                                "text": "Hello"})
    assert r.status_code in (200, 201), r.text


def _runs(pinpoint, journey_id: str, **kwargs) -> dict:
    return pinpoint.get_journey_runs(ApplicationId="acme", JourneyId=journey_id, **kwargs)["JourneyRunsResponse"]


def _run_metrics(pinpoint, journey_id: str, run_id: str) -> dict:
    answer = pinpoint.get_journey_run_execution_metrics(ApplicationId="acme", JourneyId=journey_id, RunId=run_id)
    return answer["JourneyRunExecutionMetricsResponse"]


def _activity_metrics(pinpoint, journey_id: str, run_id: str) -> dict:
    answer = pinpoint.get_journey_run_execution_activity_metrics(
        ApplicationId="acme", JourneyId=journey_id, RunId=run_id, JourneyActivityId="hello")
    return answer["JourneyRunExecutionActivityMetricsResponse"]


async def _completed_runs(pinpoint, journey_id: str, n: int) -> list[dict]:
    def done():
        items = _runs(pinpoint, journey_id)["Item"]
        return items if len(items) == n and all(r["Status"] == "COMPLETED" for r in items) else None
    items = await aeventually(done, 60, every=0.2, threaded=True)
    assert items, f"{n} completed runs expected"
    return items


async def test_each_broadcast_firing_is_a_run_with_its_own_counts(smtp_sink, running_api, pinpoint, native,  # noqa: F811
                                                                  worker):
    for user, plan in (("ann", "pro"), ("bob", "pro"), ("cat", "pro"), ("dan", "free")):
        await call(_endpoint, pinpoint, user, plan)
    segment = (await call(pinpoint.create_segment, ApplicationId="acme", WriteSegmentRequest={
        "Name": "Pro", "Dimensions": {"UserAttributes": {"plan": {"AttributeType": "INCLUSIVE", "Values": ["pro"]}}}})
    )["SegmentResponse"]["Id"]
    await call(_template, native)
    request = {"Name": "Pro hello", "StartActivity": "hello",
               "StartCondition": {"SegmentStartCondition": {"SegmentId": segment}},
               "Activities": {"hello": {"EMAIL": {"TemplateName": "hello"}}}}
    journey_id = (await call(pinpoint.create_journey, ApplicationId="acme", WriteJourneyRequest=request)
                  )["JourneyResponse"]["Id"]
    assert (await call(_runs, pinpoint, journey_id)) == {"Item": []}  # a draft has not run

    before = time.time()
    await call(pinpoint.update_journey_state, ApplicationId="acme", JourneyId=journey_id,
               JourneyStateRequest={"State": "ACTIVE"})
    assert await aeventually(lambda: len(smtp_sink.mails) >= 3, 60, every=0.2, threaded=True)
    [first] = await _completed_runs(pinpoint, journey_id, 1)
    created = datetime.fromisoformat(first["CreationTime"]).timestamp()
    assert before - 1 <= created <= time.time()
    assert datetime.fromisoformat(first["LastUpdateTime"]).timestamp() >= created
    metrics = await call(_run_metrics, pinpoint, journey_id, first["RunId"])
    assert metrics["RunId"] == first["RunId"] and metrics["JourneyId"] == journey_id
    assert metrics["ApplicationId"] == "acme" and metrics["LastEvaluatedTime"]
    assert {k: metrics["Metrics"][k] for k in ("ENDPOINT_ENTERED", "ENDPOINT_COMPLETED", "ENDPOINT_ACTIVE")} == {
        "ENDPOINT_ENTERED": "3", "ENDPOINT_COMPLETED": "3", "ENDPOINT_ACTIVE": "0"}  # dan is not in the segment
    activity = await call(_activity_metrics, pinpoint, journey_id, first["RunId"])
    assert activity["ActivityType"] == "MESSAGE" and activity["RunId"] == first["RunId"]
    assert activity["Metrics"]["ENTERED"] == "3" and activity["Metrics"]["SUCCESS"] == "3"

    # A new member, then the journey changed while active: its new version is broadcast again, a second run.
    # The others were reached already (one entry each), so that run admits eve alone.
    await call(_endpoint, pinpoint, "eve", "pro")
    await call(pinpoint.update_journey, ApplicationId="acme", JourneyId=journey_id,
               WriteJourneyRequest={**request, "Name": "Pro hello 2"})
    assert await aeventually(lambda: smtp_sink.to("eve@example.com"), 60, every=0.2, threaded=True)
    second, again = await _completed_runs(pinpoint, journey_id, 2)  # newest first
    assert again["RunId"] == first["RunId"] and second["RunId"] != first["RunId"]
    assert len(smtp_sink.mails) == 4
    second_metrics = (await call(_run_metrics, pinpoint, journey_id, second["RunId"]))["Metrics"]
    assert (second_metrics["ENDPOINT_ENTERED"], second_metrics["ENDPOINT_COMPLETED"]) == ("1", "1")
    second_activity = (await call(_activity_metrics, pinpoint, journey_id, second["RunId"]))["Metrics"]
    assert (second_activity["ENTERED"], second_activity["SUCCESS"]) == ("1", "1")
    assert (await call(_run_metrics, pinpoint, journey_id, first["RunId"]))["Metrics"]["ENDPOINT_ENTERED"] == "3"
    whole = await call(pinpoint.get_journey_execution_metrics, ApplicationId="acme", JourneyId=journey_id)
    assert whole["JourneyExecutionMetricsResponse"]["Metrics"]["ENDPOINT_ENTERED"] == "4"

    page = await call(_runs, pinpoint, journey_id, PageSize="1")
    assert [r["RunId"] for r in page["Item"]] == [second["RunId"]] and page["NextToken"]
    rest = await call(_runs, pinpoint, journey_id, PageSize="1", Token=page["NextToken"])
    assert [r["RunId"] for r in rest["Item"]] == [first["RunId"]] and "NextToken" not in rest

    unknown = "0" * 32
    for fn in (lambda: _runs(pinpoint, unknown),
               lambda: _run_metrics(pinpoint, unknown, first["RunId"]),
               lambda: _activity_metrics(pinpoint, unknown, first["RunId"]),
               lambda: _run_metrics(pinpoint, journey_id, "999"),
               lambda: _activity_metrics(pinpoint, journey_id, "no-such-run"),
               lambda: pinpoint.get_journey_run_execution_activity_metrics(
                   ApplicationId="acme", JourneyId=journey_id, RunId=first["RunId"], JourneyActivityId="nope")):
        assert await call(_code, fn) == "NotFoundException"


async def test_an_event_journey_activation_is_one_run_until_it_is_cancelled(smtp_sink, running_api, pinpoint,  # noqa: F811
                                                                            native, worker):
    for user in ("fay", "gus"):
        await call(_endpoint, pinpoint, user, "trial")
    await call(_template, native)
    request = {"Name": "Sign-up hello", "State": "ACTIVE", "StartActivity": "hello",
               "StartCondition": {"EventStartCondition": {"EventFilter": {"FilterType": "ENDPOINT", "Dimensions": {
                   "EventType": {"DimensionType": "INCLUSIVE", "Values": ["sign_up"]}}}}},
               "Activities": {"hello": {"EMAIL": {"TemplateName": "hello"}}}}
    journey_id = (await call(pinpoint.create_journey, ApplicationId="acme", WriteJourneyRequest=request)
                  )["JourneyResponse"]["Id"]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for user in ("fay", "gus"):  # two PutEvents calls: two cohorts of the same run
        await call(pinpoint.put_events, ApplicationId="acme", EventsRequest={"BatchItem": {f"{user}-mail": {
            "Endpoint": {}, "Events": {f"{user}-signup": {"EventType": "sign_up", "Timestamp": now}}}}})
        assert await aeventually(lambda user=user: smtp_sink.to(f"{user}@example.com"), 60, every=0.2, threaded=True)

    def both_completed():
        [run] = _runs(pinpoint, journey_id)["Item"]
        metrics = _run_metrics(pinpoint, journey_id, run["RunId"])["Metrics"]
        return (run, metrics) if metrics["ENDPOINT_COMPLETED"] == "2" else None
    found = await aeventually(both_completed, 60, every=0.2, threaded=True)
    assert found
    run, metrics = found
    assert run["Status"] == "RUNNING"  # it still admits whoever signs up next
    assert metrics["ENDPOINT_ENTERED"] == "2"
    assert (await call(_activity_metrics, pinpoint, journey_id, run["RunId"]))["Metrics"]["SUCCESS"] == "2"

    await call(pinpoint.update_journey_state, ApplicationId="acme", JourneyId=journey_id,
               JourneyStateRequest={"State": "CANCELLED"})
    [cancelled] = (await call(_runs, pinpoint, journey_id))["Item"]
    assert (cancelled["RunId"], cancelled["Status"]) == (run["RunId"], "CANCELLED")
