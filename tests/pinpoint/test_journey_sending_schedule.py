"""SendingSchedule with OpenHours and ClosedDays through boto3 (the journey's `settings.sending_hours`): a send
due outside the channel's open hours, or inside one of its closed days, waits; one due inside them goes out.
Run by a worker on the session's Temporal dev server, mailing a real SMTP sink. When a held send goes out
(the next open minute, in each customer's zone) is tested under the time-skipping server
(tests/journeys/test_runtime_timeskip.py), which does not wait real days."""
from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from tidings.engine.journeys import StaticCatalog, compile_journey
from tidings.engine.journeys.pinpoint import journey_yaml
from tests.eventually import aeventually
from tests.messaging.conftest import smtp_sink  # noqa: F401  (a real SMTP server, the default EMAIL channel)
from tests.pinpoint.conftest import temporal_settings

DAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")


@pytest.fixture
def settings(tmp_path, database_url, temporal_env, smtp_sink):  # noqa: F811  (the sink's settings come first)
    return temporal_settings(tmp_path, database_url, temporal_env)




def _journey(name: str, template: str, **schedule) -> dict:
    return {"Name": name, "State": "ACTIVE", "StartActivity": "hello", "SendingSchedule": True,
            "Schedule": {"Timezone": "UTC"},
            "StartCondition": {"EventStartCondition": {"EventFilter": {"FilterType": "ENDPOINT", "Dimensions": {
                "EventType": {"DimensionType": "INCLUSIVE", "Values": ["sign_up"]}}}}},
            "Activities": {"hello": {"EMAIL": {"TemplateName": template}}}, **schedule}


def _hhmm(dt: datetime) -> str:
    return dt.strftime("%H:%M")


async def test_a_send_outside_open_hours_or_on_a_closed_day_waits_and_one_inside_goes_out(
        smtp_sink, running_api, pinpoint, native, worker):  # noqa: F811
    call = asyncio.to_thread
    await call(pinpoint.update_endpoint, ApplicationId="acme", EndpointId="ann-mail", EndpointRequest={
        "ChannelType": "EMAIL", "Address": "ann@example.com", "User": {"UserId": "ann"}})
    for template in ("open", "later", "closed", "sms-only"):
        r = await call(native.put, f"/v1/templates/{template}", json={"channel": "EMAIL", "subject": template,
                                                                       "text": "Hello {{ user.user_id }}"})
        assert r.status_code in (200, 201), r.text
    now = datetime.now(UTC)
    today, tomorrow = DAYS[now.weekday()], DAYS[(now.weekday() + 1) % 7]
    around_now = {"StartTime": _hhmm(max(now - timedelta(hours=1), now.replace(hour=0, minute=0))),
                  "EndTime": "24:00" if now.hour >= 23 else _hhmm(now + timedelta(hours=1))}
    if now.hour == 0:  # keep the range inside today
        around_now["StartTime"] = "00:00"
    journeys = {
        "open": _journey("Open now", "open", OpenHours={"EMAIL": {today: [around_now]}}),
        # open only tomorrow: the send waits for it
        "later": _journey("Open tomorrow", "later", OpenHours={"EMAIL": {tomorrow: [{"StartTime": "00:00",
                                                                                     "EndTime": "24:00"}]}}),
        # today is a closed day for EMAIL
        "closed": _journey("Closed today", "closed", ClosedDays={"EMAIL": [{
            "Name": "Stocktaking", "StartDateTime": (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
            "EndDateTime": (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")}]}),
        # the hours of another channel leave EMAIL alone
        "sms-only": _journey("SMS hours", "sms-only", OpenHours={"SMS": {tomorrow: [{"StartTime": "09:00",
                                                                                    "EndTime": "10:00"}]}}),
    }
    ids = {}
    for key, request in journeys.items():
        created = (await call(pinpoint.create_journey, ApplicationId="acme", WriteJourneyRequest=request))[
            "JourneyResponse"]
        ids[key] = created["Id"]
        for member in ("SendingSchedule", "OpenHours", "ClosedDays"):
            assert created.get(member) == request.get(member), (key, member, created.get(member))
    await call(pinpoint.put_events, ApplicationId="acme", EventsRequest={"BatchItem": {"ann-mail": {
        "Endpoint": {}, "Events": {"ann-signup": {"EventType": "sign_up",
                                                  "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}}}})
    assert await aeventually(lambda: smtp_sink.per_recipient_and_subject()[("ann@example.com", "open")] == 1, 60, every=0.2,
                             threaded=True)
    assert await aeventually(lambda: smtp_sink.per_recipient_and_subject()[("ann@example.com", "sms-only")] == 1, 60, every=0.2,
                             threaded=True)

    def active(key: str) -> str:
        return pinpoint.get_journey_execution_metrics(ApplicationId="acme", JourneyId=ids[key])[
            "JourneyExecutionMetricsResponse"]["Metrics"].get("ENDPOINT_ACTIVE")
    for key in ("later", "closed"):  # ann entered, and waits at the send
        assert await aeventually(lambda key=key: active(key) == "1", 60, every=0.2, threaded=True)
    await asyncio.sleep(2)  # any mail that must not come
    assert smtp_sink.per_recipient_and_subject() == {("ann@example.com", "open"): 1, ("ann@example.com", "sms-only"): 1}


def test_sending_schedule_converts_reads_back_and_bad_ones_are_refused(running_api, pinpoint, native):
    r = native.put("/v1/templates/open", json={"channel": "EMAIL", "subject": "Open", "text": "Hi"})
    assert r.status_code in (200, 201), r.text
    request = _journey("Hours", "open", LocalTime=True, OpenHours={"EMAIL": {"MONDAY": [
        {"StartTime": "09:00", "EndTime": "12:00"}, {"StartTime": "13:00", "EndTime": "17:00"}]}},
        ClosedDays={"SMS": [{"Name": "Christmas", "StartDateTime": "2031-12-25T00:00",
                             "EndDateTime": "2031-12-26T00:00"}]})
    del request["Schedule"]
    text = journey_yaml(request, "hours")
    assert 'monday: ["09:00-12:00", "13:00-17:00"]' in text and "timezone: customer" in text
    hours = compile_journey(text, catalog=StaticCatalog(templates=["open"], channels=["EMAIL"])).settings.sending_hours
    assert hours is not None and hours.closed["SMS"][0].name == "Christmas"
    created = pinpoint.create_journey(ApplicationId="acme", WriteJourneyRequest=request)["JourneyResponse"]
    assert created["LocalTime"] is True and created["SendingSchedule"] is True
    assert created["OpenHours"] == request["OpenHours"] and created["ClosedDays"] == request["ClosedDays"]
    monday = request["OpenHours"]["EMAIL"]["MONDAY"]
    for bad, fragment in (
            ({**request, "OpenHours": {"EMAIL": {"MONDAY": [monday[0], {"StartTime": "11:00", "EndTime": "14:00"}]}}},
             "overlaps the range ending at 12:00"),
            ({**request, "OpenHours": {"EMAIL": {"MONDAY": [{"StartTime": "17:00", "EndTime": "09:00"}]}}},
             "the end must be after the start"),
            ({**request, "OpenHours": {"EMAIL": {"MONDAY": [{"StartTime": "9am", "EndTime": "17:00"}]}}},
             "OpenHours.EMAIL.MONDAY[0].StartTime: a time of day HH:MM"),
            ({**request, "ClosedDays": {"SMS": [{"Name": "x", "StartDateTime": "2031-12-26T00:00",
                                                 "EndDateTime": "2031-12-25T00:00"}]}},
             "`end` of closed range `x` must be after its start"),
            ({**request, "SendingSchedule": False, "LocalTime": False}, "OpenHours: applies only with SendingSchedule true")):
        with pytest.raises(ClientError) as caught:
            pinpoint.create_journey(ApplicationId="acme", WriteJourneyRequest=bad)
        assert caught.value.response["Error"]["Code"] == "BadRequestException"
        assert fragment in caught.value.response["Error"]["Message"], caught.value.response["Error"]
    assert [j["Name"] for j in pinpoint.list_journeys(ApplicationId="acme")["JourneysResponse"]["Item"]] == ["Hours"]
