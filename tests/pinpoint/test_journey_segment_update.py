"""RefreshOnSegmentUpdate through boto3 (`broadcast: {segment, on_join: true}`): a segment-start journey mails the
segment's members at activation and then each customer who joins the segment, when they join; the entry limit
keeps a member from entering twice (updated while still a member, or leaving and joining again). Run by a worker
on the session's Temporal dev server, mailing a real SMTP sink, counted per recipient."""
from __future__ import annotations

import asyncio

import pytest

from tests.eventually import aeventually
from tests.messaging.conftest import smtp_sink  # noqa: F401  (a real SMTP server, the default EMAIL channel)
from tests.pinpoint.conftest import temporal_settings


@pytest.fixture
def settings(tmp_path, database_url, temporal_env, smtp_sink):  # noqa: F811  (the sink's settings come first)
    return temporal_settings(tmp_path, database_url, temporal_env)


def _endpoint(pinpoint, user: str, plan: str) -> None:
    pinpoint.update_endpoint(ApplicationId="acme", EndpointId=f"{user}-mail", EndpointRequest={
        "ChannelType": "EMAIL", "Address": f"{user}@example.com",
        "User": {"UserId": user, "UserAttributes": {"plan": [plan]}}})


async def test_members_at_activation_and_each_newcomer_get_the_mail_once(
        smtp_sink, running_api, pinpoint, native, worker):  # noqa: F811
    call = asyncio.to_thread
    await call(_endpoint, pinpoint, "ann", "pro")
    segment = (await call(pinpoint.create_segment, ApplicationId="acme", WriteSegmentRequest={
        "Name": "Pro", "Dimensions": {"UserAttributes": {"plan": {"AttributeType": "INCLUSIVE", "Values": ["pro"]}}}}
    ))["SegmentResponse"]["Id"]
    r = await call(native.put, "/v1/templates/news", json={"channel": "EMAIL", "subject": "News", "text": "Hi"})
    assert r.status_code in (200, 201), r.text
    created = (await call(pinpoint.create_journey, ApplicationId="acme", WriteJourneyRequest={
        "Name": "Pro news", "State": "ACTIVE", "StartActivity": "hello", "RefreshOnSegmentUpdate": True,
        "StartCondition": {"SegmentStartCondition": {"SegmentId": segment}},
        "Activities": {"hello": {"EMAIL": {"TemplateName": "news"}}}}))["JourneyResponse"]
    assert created["RefreshOnSegmentUpdate"] is True
    assert "on_join: true" in (await call(native.get, f"/v1/journeys/{created['Id']}")).json()["yaml"]
    assert await aeventually(lambda: smtp_sink.per_recipient() == {"ann@example.com": 1}, 60, every=0.2, threaded=True)

    await call(_endpoint, pinpoint, "bob", "pro")  # joins the segment after the start: enters when he joins
    assert await aeventually(lambda: smtp_sink.per_recipient()["bob@example.com"] == 1, 60, every=0.2, threaded=True)
    await call(_endpoint, pinpoint, "ann", "pro")  # written again, still a member: no join
    await call(_endpoint, pinpoint, "bob", "free")  # leaves, and joins again: the entry limit (1) keeps him out
    await call(_endpoint, pinpoint, "bob", "pro")
    await call(_endpoint, pinpoint, "cat", "free")  # never a member
    await call(_endpoint, pinpoint, "dan", "pro")  # joins last: shows the queue was read after bob's second join
    assert await aeventually(lambda: smtp_sink.per_recipient()["dan@example.com"] == 1, 60, every=0.2, threaded=True)
    await asyncio.sleep(2)  # any mail that must not come
    assert smtp_sink.per_recipient() == {"ann@example.com": 1, "bob@example.com": 1, "dan@example.com": 1}
    got = (await call(pinpoint.get_journey, ApplicationId="acme", JourneyId=created["Id"]))["JourneyResponse"]
    assert got["RefreshOnSegmentUpdate"] is True and got["StartCondition"] == created["StartCondition"]
    assert "RefreshFrequency" not in got
