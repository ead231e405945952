"""Schedule.EndTime through boto3 (the journey's `settings.ends_at`): from that instant nobody enters, and who
is already inside finishes. Run by a worker on the session's Temporal dev server, mailing a real SMTP sink;
the end is a few seconds after creation, so nothing waits long."""
from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.client import ScheduleOverlapPolicy
from botocore.exceptions import ClientError

from tidings.engine.journeys import StaticCatalog, compile_journey
from tidings.engine.journeys.pinpoint import journey_yaml
from tidings.engine.platform.db import make_engine
from tidings.engine.platform.errors import InvalidInput
from tests.eventually import aeventually
from tests.messaging.conftest import smtp_sink  # noqa: F401  (a real SMTP server, the default EMAIL channel)
from tests.pinpoint.conftest import schedule_of, temporal_settings


@pytest.fixture
def settings(tmp_path, database_url, temporal_env, smtp_sink):  # noqa: F811  (the sink's settings come first)
    return temporal_settings(tmp_path, database_url, temporal_env)


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")




def _event_journey(name: str, template: str, end: str | None, *, wait: str | None = None) -> dict:
    activities: dict = {"hello": {"EMAIL": {"TemplateName": template, **({"NextActivity": "pause"} if wait else {})}}}
    if wait:
        activities["pause"] = {"Wait": {"WaitTime": {"WaitFor": wait}, "NextActivity": "again"}}
        activities["again"] = {"EMAIL": {"TemplateName": template}}
    request = {"Name": name, "State": "ACTIVE", "StartActivity": "hello",
               "StartCondition": {"EventStartCondition": {"EventFilter": {"FilterType": "ENDPOINT", "Dimensions": {
                   "EventType": {"DimensionType": "INCLUSIVE", "Values": ["sign_up"]}}}}},
               "Activities": activities}
    if end:
        request["Schedule"] = {"EndTime": end}
    return request


def _sign_up(pinpoint, user: str) -> None:
    pinpoint.put_events(ApplicationId="acme", EventsRequest={"BatchItem": {f"{user}-mail": {"Endpoint": {}, "Events": {
        f"{user}-signup": {"EventType": "sign_up", "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}}}})


async def test_an_event_journey_admits_no_one_after_its_end_time_and_who_is_inside_finishes(
        smtp_sink, running_api, pinpoint, native, worker):  # noqa: F811
    call = asyncio.to_thread
    for user in ("ann", "bob"):
        await call(pinpoint.update_endpoint, ApplicationId="acme", EndpointId=f"{user}-mail", EndpointRequest={
            "ChannelType": "EMAIL", "Address": f"{user}@example.com", "User": {"UserId": user}})
    for template, subject in (("ending", "Ending"), ("always", "Always")):
        r = await call(native.put, f"/v1/templates/{template}", json={"channel": "EMAIL", "subject": subject,
                                                                       "text": "Hello {{ user.user_id }}"})
        assert r.status_code in (200, 201), r.text
    end = _iso(datetime.now(UTC) + timedelta(seconds=8))
    request = _event_journey("Ends soon", "ending", end, wait="PT12S")
    created = (await call(pinpoint.create_journey, ApplicationId="acme", WriteJourneyRequest=request))["JourneyResponse"]
    # botocore reads JourneySchedule.EndTime as a timestamp
    assert created["Schedule"] == {"EndTime": datetime.fromisoformat(end)}
    assert (await call(pinpoint.get_journey, ApplicationId="acme", JourneyId=created["Id"]))[
        "JourneyResponse"]["Schedule"] == {"EndTime": datetime.fromisoformat(end)}
    # the control: the same event, no end time (so bob's late event did arrive and was acted on)
    await call(pinpoint.create_journey, ApplicationId="acme", WriteJourneyRequest=_event_journey("Always", "always", None))

    await call(_sign_up, pinpoint, "ann")  # before the end: ann enters, and is mailed twice, 12 s apart
    assert await aeventually(lambda: smtp_sink.per_recipient_and_subject()[("ann@example.com", "Ending")] == 1, 60, every=0.2,
                             threaded=True)
    while datetime.now(UTC) < datetime.fromisoformat(end) + timedelta(seconds=1):
        await asyncio.sleep(0.2)
    await call(_sign_up, pinpoint, "bob")  # after the end: bob enters only the control
    assert await aeventually(lambda: smtp_sink.per_recipient_and_subject()[("bob@example.com", "Always")] == 1, 60, every=0.2,
                             threaded=True)
    # ann, inside when the journey ended, finishes it: her second mail comes after the end
    assert await aeventually(lambda: smtp_sink.per_recipient_and_subject()[("ann@example.com", "Ending")] == 2, 60, every=0.2,
                             threaded=True)
    await asyncio.sleep(2)  # any mail that must not come
    assert smtp_sink.per_recipient_and_subject() == {("ann@example.com", "Ending"): 2, ("ann@example.com", "Always"): 1,
                                 ("bob@example.com", "Always"): 1}


def test_end_time_reads_back_converts_to_ends_at_and_bad_ones_are_refused(running_api, pinpoint, native):
    r = native.put("/v1/templates/ending", json={"channel": "EMAIL", "subject": "Ending", "text": "Hi"})
    assert r.status_code in (200, 201), r.text
    request = _event_journey("Ends", "ending", "2031-01-01T00:00:00Z")
    text = journey_yaml(request, "ends")
    assert 'ends_at: "2031-01-01T00:00:00Z"' in text
    compiled = compile_journey(text, catalog=StaticCatalog(templates=["ending"], channels=["EMAIL"]))
    assert compiled.settings.ends_at_epoch == int(datetime(2031, 1, 1, tzinfo=UTC).timestamp())
    created = pinpoint.create_journey(ApplicationId="acme", WriteJourneyRequest=request)["JourneyResponse"]
    assert created["Schedule"] == {"EndTime": datetime(2031, 1, 1, tzinfo=UTC)}
    segment_start = {**request, "StartCondition": {"SegmentStartCondition": {"SegmentId": "all"}}}
    # botocore itself refuses a Schedule.EndTime that is no timestamp; `tidings pinpoint convert` reads JSON files
    for end, fragment in (("next week", "Schedule.EndTime: expected an ISO 8601"),
                          ("2031-01-01T00:00:00", "Schedule.EndTime: the date-time needs its offset")):
        with pytest.raises(InvalidInput) as refused:
            journey_yaml({**request, "Schedule": {"EndTime": end}}, "ends")
        assert refused.value.field == "Schedule.EndTime" and str(refused.value).startswith(fragment), refused.value
    for bad, fragment in (
            ({**segment_start, "Schedule": {"StartTime": "2031-01-02T00:00:00Z", "EndTime": "2031-01-01T00:00:00Z"}},
             "Schedule.EndTime: 2031-01-01T00:00:00Z is not after Schedule.StartTime"),):
        with pytest.raises(ClientError) as caught:
            pinpoint.create_journey(ApplicationId="acme", WriteJourneyRequest=bad)
        assert caught.value.response["Error"]["Code"] == "BadRequestException"
        assert caught.value.response["Error"]["Message"].startswith(fragment), caught.value.response["Error"]
    names = [j["Name"] for j in pinpoint.list_journeys(ApplicationId="acme")["JourneysResponse"]["Item"]]
    assert names == ["Ends"]  # nothing written from a refused one


def _pro_segment(pinpoint, *users: str) -> str:
    """Mail endpoints of these users on the pro plan, and the id of a segment of pro users."""
    for user in users:
        pinpoint.update_endpoint(ApplicationId="acme", EndpointId=f"{user}-mail", EndpointRequest={
            "ChannelType": "EMAIL", "Address": f"{user}@example.com",
            "User": {"UserId": user, "UserAttributes": {"plan": ["pro"]}}})
    return pinpoint.create_segment(ApplicationId="acme", WriteSegmentRequest={
        "Name": "Pro", "Dimensions": {"UserAttributes": {"plan": {"AttributeType": "INCLUSIVE", "Values": ["pro"]}}}}
    )["SegmentResponse"]["Id"]


def _campaign(segment_id: str, schedule: dict) -> dict:
    return {"Name": "Hourly news", "SegmentId": segment_id, "Schedule": schedule,
            "MessageConfiguration": {"EmailMessage": {"Title": "News", "Body": "Hello {{User.UserId}}"}}}


async def test_a_recurring_campaign_runs_no_more_after_its_end_time(smtp_sink, running_api, pinpoint, native,  # noqa: F811
                                                                    worker, temporal_env):
    call = asyncio.to_thread
    segment = await call(_pro_segment, pinpoint, "ann", "bob")
    now = datetime.now(UTC)
    # it started half an hour ago (its next hourly run is in half an hour) and ends in 10 s
    start, end = _iso((now - timedelta(minutes=30)).replace(second=0)), _iso(now + timedelta(seconds=10))
    for bad, message in ((_iso(now - timedelta(minutes=1)), "has passed"),
                         (_iso(now - timedelta(hours=1)), "has passed")):
        refused = await call(lambda bad=bad: pytest.raises(ClientError, pinpoint.create_campaign, ApplicationId="acme",
                                                           WriteCampaignRequest=_campaign(segment, {
                                                               "StartTime": start, "Frequency": "HOURLY",
                                                               "EndTime": bad})))
        assert refused.value.response["Error"]["Message"] == f"Schedule.EndTime: {bad} {message}: the campaign " \
            "would send nothing", refused.value.response
    later = _iso((now + timedelta(minutes=20)).replace(second=0))
    refused = await call(lambda: pytest.raises(ClientError, pinpoint.create_campaign, ApplicationId="acme",
                                               WriteCampaignRequest=_campaign(segment, {
                                                   "StartTime": later, "Frequency": "HOURLY",
                                                   "EndTime": _iso(now + timedelta(minutes=10))})))
    assert "is not after Schedule.StartTime" in refused.value.response["Error"]["Message"], refused.value.response
    created = (await call(pinpoint.create_campaign, ApplicationId="acme", WriteCampaignRequest=_campaign(
        segment, {"StartTime": start, "Frequency": "HOURLY", "EndTime": end})))["CampaignResponse"]
    assert created["Schedule"]["EndTime"] == end
    assert f'ends_at: "{end}"' in (await call(native.get, f"/v1/journeys/{created['Id']}")).json()["yaml"]
    sched = schedule_of(running_api, temporal_env, created["Id"])
    assert (await sched.describe()).schedule.spec.end_at == datetime.fromisoformat(end)  # Temporal stops firing

    await sched.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)  # a run before the end: everyone is mailed
    assert await aeventually(lambda: len(smtp_sink.mails) == 2, 60, every=0.2, threaded=True)
    while datetime.now(UTC) < datetime.fromisoformat(end) + timedelta(seconds=1):
        await asyncio.sleep(0.2)
    # a run after the end (Temporal fires no more; by hand, not skipped while the first finishes): nobody enters
    await sched.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)

    async def runs() -> list[str]:
        return [a.action.workflow_id for a in (await sched.describe()).info.recent_actions]  # type: ignore[attr-defined]
    for _ in range(150):
        if len(await runs()) == 2:
            break
        await asyncio.sleep(0.2)
    late = (await runs())[-1]
    assert await temporal_env.client.get_workflow_handle(late).result() == 0  # it started no cohort
    await asyncio.sleep(1)
    assert smtp_sink.per_recipient_and_subject() == {("ann@example.com", "News"): 1, ("bob@example.com", "News"): 1}


async def test_an_event_campaign_sends_nothing_for_events_after_its_end_time(smtp_sink, running_api, pinpoint,  # noqa: F811
                                                                            native, worker):
    import json

    from sqlalchemy import text

    call = asyncio.to_thread
    segment = await call(_pro_segment, pinpoint, "ann", "bob")
    end = _iso(datetime.now(UTC) + timedelta(seconds=6))
    created = (await call(pinpoint.create_campaign, ApplicationId="acme", WriteCampaignRequest=_campaign(segment, {
        "StartTime": "IMMEDIATE", "Frequency": "EVENT", "EndTime": end, "EventFilter": {
            "FilterType": "ENDPOINT", "Dimensions": {"EventType": {"DimensionType": "INCLUSIVE",
                                                                   "Values": ["purchase"]}}}})))["CampaignResponse"]
    assert created["Schedule"]["EndTime"] == end

    def buy(user: str, n: int) -> None:
        pinpoint.put_events(ApplicationId="acme", EventsRequest={"BatchItem": {f"{user}-mail": {"Endpoint": {}, "Events": {
            f"{user}-buy-{n}": {"EventType": "purchase",
                                "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}}}})
    await call(buy, "ann", 1)
    assert await aeventually(lambda: smtp_sink.per_recipient_and_subject()[("ann@example.com", "News")] == 1, 60, every=0.2, threaded=True)
    while datetime.now(UTC) < datetime.fromisoformat(end) + timedelta(seconds=1):
        await asyncio.sleep(0.2)
    await call(buy, "ann", 2)
    await call(buy, "bob", 1)
    db = make_engine(running_api.database_url)

    def refused() -> list:
        with db.connect() as conn:
            rows = [r[0] for r in conn.execute(text("select refused from journey_cohort where journey_id = :j"),
                                               {"j": created["Id"]})]
        return [x for x in (json.loads(r) if isinstance(r, str) else r for r in rows) if x]  # SQLite: JSON text
    try:  # both late events were claimed, and refused because the campaign had ended
        assert await aeventually(lambda: sum(r.get("journey_ended", 0) for r in refused()) == 2, 60, every=0.2,
                                 threaded=True)
    finally:
        db.dispose()
    await asyncio.sleep(1)
    assert smtp_sink.per_recipient_and_subject() == {("ann@example.com", "News"): 1}
