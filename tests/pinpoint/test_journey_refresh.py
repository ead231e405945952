"""RefreshFrequency through boto3 (`broadcast: {refresh}`): a segment-start journey mails the segment's members
at activation, then, at each refresh, whoever joined since; who already entered is kept out by the entry limit.
Run by a worker on the session's Temporal dev server, mailing a real SMTP sink; the refresh is triggered on the
journey's Temporal schedule rather than waited for."""
from __future__ import annotations

import asyncio

import pytest
from temporalio.client import ScheduleOverlapPolicy

from tests.eventually import aeventually
from tests.messaging.conftest import smtp_sink  # noqa: F401  (a real SMTP server, the default EMAIL channel)
from tests.pinpoint.conftest import schedule_of, temporal_settings


@pytest.fixture
def settings(tmp_path, database_url, temporal_env, smtp_sink):  # noqa: F811  (the sink's settings come first)
    return temporal_settings(tmp_path, database_url, temporal_env)




def _pro(pinpoint, user: str) -> None:
    pinpoint.update_endpoint(ApplicationId="acme", EndpointId=f"{user}-mail", EndpointRequest={
        "ChannelType": "EMAIL", "Address": f"{user}@example.com",
        "User": {"UserId": user, "UserAttributes": {"plan": ["pro"]}}})


async def test_a_refreshing_journey_mails_the_members_now_and_the_new_ones_at_each_refresh(
        smtp_sink, running_api, pinpoint, native, worker, temporal_env):  # noqa: F811
    call = asyncio.to_thread
    await call(_pro, pinpoint, "ann")
    segment = (await call(pinpoint.create_segment, ApplicationId="acme", WriteSegmentRequest={
        "Name": "Pro", "Dimensions": {"UserAttributes": {"plan": {"AttributeType": "INCLUSIVE", "Values": ["pro"]}}}}
    ))["SegmentResponse"]["Id"]
    r = await call(native.put, "/v1/templates/news", json={"channel": "EMAIL", "subject": "News", "text": "Hi"})
    assert r.status_code in (200, 201), r.text
    created = (await call(pinpoint.create_journey, ApplicationId="acme", WriteJourneyRequest={
        "Name": "Pro news", "State": "ACTIVE", "StartActivity": "hello", "RefreshFrequency": "PT1H",
        "StartCondition": {"SegmentStartCondition": {"SegmentId": segment}},
        "Activities": {"hello": {"EMAIL": {"TemplateName": "news"}}}}))["JourneyResponse"]
    assert created["RefreshFrequency"] == "PT1H"
    assert "refresh: \"1h\"" in (await call(native.get, f"/v1/journeys/{created['Id']}")).json()["yaml"]
    assert await aeventually(lambda: smtp_sink.per_recipient() == {"ann@example.com": 1}, 60, every=0.2, threaded=True)

    await call(_pro, pinpoint, "bob")  # joins the segment after the start
    sched = schedule_of(running_api, temporal_env, created["Id"])
    # the hourly refresh, now; ALLOW_ALL: not skipped while the activation's run is still finishing. A scheduled
    # run's workflow id is its start to the second: one more in the same second would be taken for a retry of it
    await asyncio.sleep(1.1)
    await sched.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)
    assert await aeventually(lambda: smtp_sink.per_recipient()["bob@example.com"] == 1, 60, every=0.2, threaded=True)
    await asyncio.sleep(2)  # any mail that must not come: ann already entered
    assert smtp_sink.per_recipient() == {"ann@example.com": 1, "bob@example.com": 1}
    got = (await call(pinpoint.get_journey, ApplicationId="acme", JourneyId=created["Id"]))["JourneyResponse"]
    assert got["RefreshFrequency"] == "PT1H" and got["StartCondition"] == created["StartCondition"]
