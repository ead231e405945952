"""Endpoints and users through boto3, read back through Pinpoint and through the native /v1 API."""
from __future__ import annotations

import pytest





def _update(pinpoint, endpoint_id, **request):
    return pinpoint.update_endpoint(ApplicationId="acme", EndpointId=endpoint_id, EndpointRequest=request)


def _get(pinpoint, endpoint_id):
    return pinpoint.get_endpoint(ApplicationId="acme", EndpointId=endpoint_id)["EndpointResponse"]


def test_update_endpoint_is_applied_before_the_202_and_reads_back_both_ways(pinpoint, native):
    answer = _update(pinpoint, "ann-mail", ChannelType="EMAIL", Address="ann@example.com",
                     Attributes={"interests": ["cats", "jazz"]}, Metrics={"score": 7.5},
                     Demographic={"Platform": "ios", "Timezone": "Europe/Paris", "ModelVersion": "15"},
                     Location={"Country": "FR", "City": "Paris", "Latitude": 48.85, "Longitude": 2.35},
                     User={"UserId": "ann", "UserAttributes": {"plan": ["trial"]}},
                     EffectiveDate="2026-12-01T10:00:00Z")
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert answer["MessageBody"]["RequestID"] == answer["ResponseMetadata"]["RequestId"]
    ep = _get(pinpoint, "ann-mail")
    assert ep["Address"] == "ann@example.com" and ep["ChannelType"] == "EMAIL" and ep["ApplicationId"] == "acme"
    assert ep["Attributes"] == {"interests": ["cats", "jazz"]} and ep["Metrics"] == {"score": 7.5}
    assert ep["Demographic"] == {"Platform": "ios", "Timezone": "Europe/Paris", "ModelVersion": "15"}
    assert ep["Location"]["Country"] == "FR" and ep["Location"]["Latitude"] == 48.85
    assert ep["User"] == {"UserId": "ann", "UserAttributes": {"plan": ["trial"]}}
    assert ep["OptOut"] == "NONE" and ep["EffectiveDate"].startswith("2026-12-01T10:00:00")
    assert 0 <= int(ep["CohortId"]) < 100
    user = native.get("/v1/users/ann").json()
    assert user["attributes"] == {"plan": "trial"}
    assert user["endpoints"][0]["endpoint_id"] == "ann-mail"
    assert user["endpoints"][0]["location"]["city"] == "Paris"


def test_update_merges_as_pinpoint_merges(pinpoint):
    _update(pinpoint, "e1", ChannelType="SMS", Address="+33612345678", Attributes={"a": ["1"], "b": ["2"]},
            Demographic={"Platform": "android", "Make": "Pixel"}, Location={"Country": "FR", "City": "Lyon"},
            User={"UserId": "u1", "UserAttributes": {"tier": ["gold"], "lang": ["fr"]}})
    _update(pinpoint, "e1", Attributes={"b": ["3"], "a": []}, Demographic={"Make": "Fairphone"},
            Location={"City": "Nantes"}, User={"UserId": "u1", "UserAttributes": {"tier": ["silver"]}},
            OptOut="ALL")
    ep = _get(pinpoint, "e1")
    assert ep["Attributes"] == {"b": ["3"]}  # b replaced, a removed by []
    assert ep["Demographic"] == {"Platform": "android", "Make": "Fairphone"}
    assert ep["Location"] == {"Country": "FR", "City": "Nantes"}
    assert ep["User"]["UserAttributes"] == {"tier": ["silver"], "lang": ["fr"]}
    assert ep["OptOut"] == "ALL" and ep["Address"] == "+33612345678"  # applied at once, address kept


def test_native_writes_read_back_through_pinpoint(pinpoint, native):
    assert native.put("/v1/endpoints/zoe-push", json={"channel": "PUSH", "address": "device-token-1",
                                                       "user_id": "zoe", "attributes": {"x": ["y"]}}).status_code == 200
    ep = _get(pinpoint, "zoe-push")
    assert ep["ChannelType"] == "PUSH" and ep["Address"] == "device-token-1" and ep["User"]["UserId"] == "zoe"


def test_push_channel_types_are_push_endpoints(pinpoint):
    _update(pinpoint, "p1", ChannelType="APNS", Address="token")
    assert _get(pinpoint, "p1")["ChannelType"] == "PUSH"
    assert "User" not in _get(pinpoint, "p1")  # sent without a user: none in Pinpoint's terms


@pytest.mark.parametrize("request_, field", [
    ({"ChannelType": "EMAIL", "Address": "a@example.com", "Attributes": {"long": ["x" * 101]}}, "Attributes.long"),
    ({"ChannelType": "EMAIL", "Address": "a@example.com", "Attributes": {"n" * 51: ["x"]}}, "Attributes."),
    ({"ChannelType": "EMAIL"}, "Address"),
    ({"Address": "a@example.com"}, "ChannelType"),
    ({"ChannelType": "EMAIL", "Address": "not-an-address"}, "Address"),
    ({"ChannelType": "IN_APP", "Address": "x"}, "ChannelType"),
    ({"ChannelType": "EMAIL", "Address": "a@example.com", "OptOut": "SOME"}, "OptOut"),
    ({"ChannelType": "EMAIL", "Address": "a@example.com", "EndpointStatus": "INACTIVE"}, "EndpointStatus"),
    ({"ChannelType": "EMAIL", "Address": "a@example.com", "Demographic": {"Timezone": "Mars/Base"}},
     "Demographic.Timezone"),
    ({"ChannelType": "EMAIL", "Address": "a@example.com", "Location": {"Latitude": 91.0}}, "Location.Latitude"),
    ({"ChannelType": "EMAIL", "Address": "a@example.com", "EffectiveDate": "yesterday"}, "EffectiveDate"),
    ({"ChannelType": "EMAIL", "Address": "a@example.com",
      "User": {"UserId": "u", "UserAttributes": {"v": ["x" * 101]}}}, "User.UserAttributes.v"),
])
def test_bad_endpoints_are_refused_naming_the_field_and_nothing_is_written(pinpoint, request_, field):
    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
        _update(pinpoint, "bad", **request_)
    assert field in caught.value.response["Error"]["Message"]
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        _get(pinpoint, "bad")


def test_a_user_has_at_most_15_endpoints(pinpoint):
    for i in range(15):
        _update(pinpoint, f"u-{i}", ChannelType="EMAIL", Address=f"u{i}@example.com", User={"UserId": "busy"})
    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
        _update(pinpoint, "u-15", ChannelType="EMAIL", Address="u15@example.com", User={"UserId": "busy"})
    assert "User.UserId" in caught.value.response["Error"]["Message"]
    assert "15" in caught.value.response["Error"]["Message"]


def test_update_endpoints_batch(pinpoint):
    items = [{"Id": f"b{i}", "ChannelType": "EMAIL", "Address": f"b{i}@example.com", "User": {"UserId": "bee"}}
             for i in range(3)]
    answer = pinpoint.update_endpoints_batch(ApplicationId="acme", EndpointBatchRequest={"Item": items})
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert {e["Id"] for e in pinpoint.get_user_endpoints(ApplicationId="acme", UserId="bee")
            ["EndpointsResponse"]["Item"]} == {"b0", "b1", "b2"}


def test_a_batch_with_a_bad_item_writes_nothing(pinpoint):
    items = [{"Id": "ok", "ChannelType": "EMAIL", "Address": "ok@example.com"},
             {"Id": "bad", "ChannelType": "EMAIL", "Address": "nope"}]
    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
        pinpoint.update_endpoints_batch(ApplicationId="acme", EndpointBatchRequest={"Item": items})
    assert "Item[1]" in caught.value.response["Error"]["Message"] and "Address" in caught.value.response["Error"]["Message"]
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        _get(pinpoint, "ok")


def test_a_batch_is_at_most_100_endpoints(pinpoint):
    items = [{"Id": f"x{i}", "ChannelType": "EMAIL", "Address": f"x{i}@example.com"} for i in range(101)]
    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
        pinpoint.update_endpoints_batch(ApplicationId="acme", EndpointBatchRequest={"Item": items})
    assert "100" in caught.value.response["Error"]["Message"]


def test_delete_endpoint_answers_what_it_deleted(pinpoint, native):
    _update(pinpoint, "gone", ChannelType="EMAIL", Address="gone@example.com", User={"UserId": "g"})
    answer = pinpoint.delete_endpoint(ApplicationId="acme", EndpointId="gone")
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert answer["EndpointResponse"]["Address"] == "gone@example.com"
    assert native.get("/v1/endpoints/gone").status_code == 404
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        pinpoint.delete_endpoint(ApplicationId="acme", EndpointId="gone")


def test_user_endpoints_read_and_delete(pinpoint, native):
    for i in range(2):
        _update(pinpoint, f"k{i}", ChannelType="EMAIL", Address=f"k{i}@example.com",
                User={"UserId": "kim", "UserAttributes": {"team": ["blue"]}})
    items = pinpoint.get_user_endpoints(ApplicationId="acme", UserId="kim")["EndpointsResponse"]["Item"]
    assert [e["Id"] for e in items] == ["k0", "k1"] and items[0]["User"]["UserAttributes"] == {"team": ["blue"]}
    deleted = pinpoint.delete_user_endpoints(ApplicationId="acme", UserId="kim")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert len(deleted["EndpointsResponse"]["Item"]) == 2
    assert native.get("/v1/users/kim").json()["endpoints"] == []
    for call in (pinpoint.get_user_endpoints, pinpoint.delete_user_endpoints):
        with pytest.raises(pinpoint.exceptions.NotFoundException):
            call(ApplicationId="acme", UserId="kim")
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        pinpoint.get_user_endpoints(ApplicationId="acme", UserId="nobody")
