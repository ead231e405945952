"""PutEvents: per-endpoint and per-event results; events take the native path, so segments see them."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest



def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")




def _put(pinpoint, batch):
    return pinpoint.put_events(ApplicationId="acme", EventsRequest={"BatchItem": batch})


def test_events_feed_segments_and_read_back_natively(pinpoint, native):
    assert native.post("/v1/segments", json={"id": "buyers", "name": "Buyers", "rule": {
        "performed": {"event": "purchase", "within": "30d"}}}).status_code in (200, 201)
    answer = _put(pinpoint, {"ann-mail": {
        "Endpoint": {"ChannelType": "EMAIL", "Address": "ann@example.com", "User": {"UserId": "ann"}},
        "Events": {"order-1": {"EventType": "purchase", "Timestamp": _now(), "Attributes": {"sku": "A1"},
                               "Metrics": {"price": 30.0}},
                   "session-1": {"EventType": "_session.start", "Timestamp": _now(),
                                 "Session": {"Id": "s-1", "StartTimestamp": _now()}, "AppTitle": "Shop"}}}})
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    result = answer["EventsResponse"]["Results"]["ann-mail"]
    assert result["EndpointItemResponse"] == {"StatusCode": 202, "Message": "Accepted"}
    assert {k: v["StatusCode"] for k, v in result["EventsItemResponse"].items()} == {"order-1": 202, "session-1": 202}
    user = native.get("/v1/users/ann").json()
    assert "buyers" in user["segments"] and user["endpoints"][0]["address"] == "ann@example.com"
    events = {e["id"]: e for e in native.get("/v1/events", params={"user_id": "ann"}).json()["items"]}
    assert events["order-1"]["name"] == "purchase" and events["order-1"]["attributes"] == {"sku": "A1"}
    assert events["order-1"]["endpoint_id"] == "ann-mail" and events["order-1"]["metrics"] == {"price": 30.0}
    assert events["session-1"]["attributes"]["session.id"] == "s-1"
    assert events["session-1"]["attributes"]["app.title"] == "Shop"


def test_the_same_event_id_is_stored_once(pinpoint, native):
    batch = {"e1": {"Endpoint": {"ChannelType": "EMAIL", "Address": "e1@example.com"},
                    "Events": {"once": {"EventType": "click", "Timestamp": _now()}}}}
    _put(pinpoint, batch)
    _put(pinpoint, batch)
    assert [e["id"] for e in native.get("/v1/events", params={"user_id": "e1"}).json()["items"]] == ["once"]


def test_bad_events_and_endpoints_get_their_own_400_and_the_rest_is_recorded(pinpoint, native):
    answer = _put(pinpoint, {
        "good": {"Endpoint": {"ChannelType": "EMAIL", "Address": "good@example.com"},
                 "Events": {"g1": {"EventType": "view", "Timestamp": _now()},
                            "g2": {"EventType": "view", "Timestamp": "last tuesday"},
                            "g3": {"EventType": "_email.send", "Timestamp": _now()},
                            "g4": {"EventType": "view", "Timestamp": _now(), "Attributes": {"v": "x" * 1001}}}},
        "broken": {"Endpoint": {"ChannelType": "EMAIL", "Address": "not-mail"},
                   "Events": {"b1": {"EventType": "view", "Timestamp": _now()}}}})
    results = answer["EventsResponse"]["Results"]
    good = results["good"]["EventsItemResponse"]
    assert good["g1"]["StatusCode"] == 202
    assert good["g2"]["StatusCode"] == 400 and "Timestamp" in good["g2"]["Message"]
    assert good["g3"]["StatusCode"] == 400 and "EventType" in good["g3"]["Message"]
    assert good["g4"]["StatusCode"] == 400 and "Attributes.v" in good["g4"]["Message"]
    assert results["broken"]["EndpointItemResponse"]["StatusCode"] == 400
    assert "Address" in results["broken"]["EndpointItemResponse"]["Message"]
    assert results["broken"]["EventsItemResponse"]["b1"]["StatusCode"] == 400
    assert [e["id"] for e in native.get("/v1/events", params={"user_id": "good"}).json()["items"]] == ["g1"]
    assert native.get("/v1/endpoints/broken").status_code == 404


def test_events_of_an_unknown_endpoint_belong_to_its_user(pinpoint, native):
    _put(pinpoint, {"device-9": {"Endpoint": {"User": {"UserId": "lee"}},
                                 "Events": {"x1": {"EventType": "open_app", "Timestamp": _now()}}}})
    [event] = native.get("/v1/events", params={"user_id": "lee"}).json()["items"]
    assert event["id"] == "x1" and event["endpoint_id"] is None


def test_limits_100_endpoints_and_100_events_each(pinpoint):
    event = {"EventType": "view", "Timestamp": _now()}
    too_many_endpoints = {f"e{i}": {"Endpoint": {}, "Events": {"v": event}} for i in range(101)}
    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
        _put(pinpoint, too_many_endpoints)
    assert "100 endpoints" in caught.value.response["Error"]["Message"]
    too_many_events = {"e": {"Endpoint": {}, "Events": {f"v{i}": event for i in range(101)}}}
    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
        _put(pinpoint, too_many_events)
    assert "100 events" in caught.value.response["Error"]["Message"]


def test_a_full_batch_of_100_by_100_is_accepted(pinpoint, native):
    batch = {f"ep{i}": {"Endpoint": {"ChannelType": "EMAIL", "Address": f"ep{i}@example.com"},
                        "Events": {f"ep{i}-ev{j}": {"EventType": "view", "Timestamp": _now()} for j in range(100)}}
             for i in range(100)}
    results = _put(pinpoint, batch)["EventsResponse"]["Results"]
    assert len(results) == 100
    assert all(r["EndpointItemResponse"]["StatusCode"] == 202 for r in results.values())
    assert sum(len(r["EventsItemResponse"]) for r in results.values()) == 10_000
    assert len(native.get("/v1/events", params={"user_id": "ep42", "limit": 1000}).json()["items"]) == 100
